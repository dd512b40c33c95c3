"""Run directories: the one owner of their format (docs/architecture.md#run-directories).

The engine writes a run through `RunDir`; the tables, the plots, the notebooks, `eval`, `predict`
and the sweep runner read it through the same class, so every file name lives here (`FILES`):

| file | what | written |
|---|---|---|
| `.fercore-run` | marker: this folder was made by fercore (`--overwrite` refuses folders without it) | at start |
| `config.json` | the resolved config | at start |
| `env.json` | versions, platform, device, git commit, code hash, data fingerprints, noise, weights | at start |
| `metrics.jsonl` | one line per finished epoch | every epoch |
| `diagnostics.npz` | per-training-sample records by epoch (ids, labels, losses, method scores) | every epoch |
| `checkpoint.pt` | model, optimiser, scheduler, live labels, RNG, history (loaded with weights_only) | every epoch |
| `summary.json` | last- and best-epoch metrics: its presence means the run finished | at the end |
| `relabels.json` | every relabel event | at the end |

Every write is atomic (`fercore.files.atomic_path`); every read error names the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .config import identity_of
from .errors import RunError, notice
from .files import atomic_path, sha256_file, write_atomic, write_failure

FILES = SimpleNamespace(marker=".fercore-run", config="config.json", env="env.json", metrics="metrics.jsonl",
                        diagnostics="diagnostics.npz", checkpoint="checkpoint.pt", summary="summary.json",
                        relabels="relabels.json", tensorboard="tb")
IF_EXISTS = ("error", "resume", "overwrite", "reuse")
_KNOWN = tuple(vars(FILES).values())
_TMP = re.compile(r"\..+\.\d+\.tmp")  # fercore.files.atomic_path's temporary files


def git_commit() -> dict:
    """Commit of the fercore source tree and whether it had uncommitted changes."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src.parent, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def code_hash() -> str:
    """sha256 over fercore's own source files: a finished run is reused only under the same code."""
    import hashlib

    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".csv", ".json", ".yaml") and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def environment(device: torch.device) -> dict:
    """Versions, platform and device of this process."""
    from importlib.metadata import PackageNotFoundError, version

    import timm
    import torchvision

    try:
        fercore_version = version("fercore")
    except PackageNotFoundError:  # run from a source tree that was never installed
        fercore_version = "unknown"
    env = {
        "fercore": fercore_version, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__,
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(device), "git": git_commit(), "code_hash": code_hash(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


class RunDir:
    """One run's folder: written by the engine, read by everything downstream."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # --- state ----------------------------------------------------------------------------------
    @property
    def is_fercore_run(self) -> bool:
        """True if fercore made this folder: its marker, or (runs older than the marker) a config.json
        and an env.json beside nothing but fercore's own files."""
        if self.file(FILES.marker).is_file():
            return True
        return self.file(FILES.config).is_file() and self.file(FILES.env).is_file() and not self.foreign_files()

    def foreign_files(self) -> list[str]:
        """The entries of this folder that fercore did not write (not in FILES, not its temporary files)."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        return sorted(n for n in names if n not in _KNOWN and not _TMP.fullmatch(n))

    def remove_temporary(self) -> list[str]:
        """Delete the temporary files (`.<file>.<pid>.tmp`) of writes that a killed process left in
        this run directory; the caller holds the run's lock, so no live writer owns them."""
        removed = []
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                if _TMP.fullmatch(name) and name.split(".")[-2] != str(os.getpid()):
                    with contextlib.suppress(OSError):
                        (self.path / name).unlink()
                        removed.append(name)
        return removed

    @property
    def finished(self) -> bool:
        return self.file(FILES.summary).is_file()

    @property
    def started(self) -> bool:
        """True once an epoch has been checkpointed: there is something to resume or lose."""
        return self.file(FILES.checkpoint).is_file()

    def status(self) -> str:
        """'finished', 'interrupted after epoch E of N', 'not started' or 'empty' (for messages)."""
        if self.finished:
            return "finished"
        if self.file(FILES.metrics).is_file() or self.started:
            try:
                done = len(self.history()) if self.file(FILES.metrics).is_file() else "?"
                total = self.config.get("train", {}).get("epochs", "?") if self.file(FILES.config).is_file() else "?"
            except (RunError, AttributeError):
                return "damaged: a file of it does not read back"
            if done == total:
                return f"all {total} epochs trained, interrupted before its summary"
            return f"interrupted after epoch {done} of {total}"
        return "not started" if self.is_fercore_run else "empty"

    def require_finished(self, what: str) -> None:
        """A RunError naming the run if it did not finish (for `eval`, `predict`, tables)."""
        if not self.finished:
            raise RunError(f"{self.path}: the run did not finish ({self.status()}); {what} needs a finished "
                           f"run: resume it with `fercore train ... --resume` or pass allow_unfinished")

    # --- writing (the engine) -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on this run (file `.<name>.lock` beside it) while the block runs.
        A second process asking for the same run waits for the first, then sees its finished run.
        The lock file is removed on release, and so are the folders above the run that this call
        created if no run directory came of it (a start refused before any file was written)."""
        parent = self.path.parent
        created = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
        try:
            f = self._acquire(parent / f".{self.path.name}.lock")
            try:
                yield self
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(f.name)
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
        finally:
            if not self.path.exists():
                for p in created:
                    try:
                        p.rmdir()
                    except OSError:
                        break

    def _acquire(self, path: Path):
        """The open, exclusively locked lock file at `path` (see `lock`)."""
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                f = open(path, "a+")
            except OSError as e:
                raise write_failure(path.parent, e) or e from None
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                notice(f"{self.path} is in use by process {f.read().strip() or '?'}; waiting for it")  # on stderr
                fcntl.flock(f, fcntl.LOCK_EX)
            try:  # the holder before us removed the file on release: lock the one that is there now
                same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                f.seek(0)
                f.truncate()
                f.write(str(os.getpid()))
                f.flush()
                return f
            f.close()

    def prepare(self, if_exists: str) -> None:
        """Create the folder and its marker. A folder holding a started run is an error unless
        `if_exists` is 'resume' or 'overwrite' ('reuse': the caller decided it cannot be reused).
        A folder of fercore's that never finished an epoch is replaced without asking; a folder that
        fercore did not make is never deleted."""
        if if_exists not in IF_EXISTS:
            raise ValueError(f"if_exists: expected one of {IF_EXISTS}, got {if_exists!r}")
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder; give another name= or out_dir=")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not self.is_fercore_run:
                found = sorted(p.name for p in self.path.iterdir())[:5]
                raise RunError(f"{self.path} holds files fercore did not write ({', '.join(found)}...); "
                               f"fercore deletes only run directories it made: give another name= or out_dir=")
            if if_exists == "error" and self.started:
                raise FileExistsError(f"run directory {self.path} already holds a run ({self.status()}); "
                                      f"resume it (--resume), reuse it (--reuse) or overwrite it (--overwrite)")
            if if_exists in ("overwrite", "reuse") or not self.started:
                self.clear()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_failure(self.path, e) or e from None
        self.remove_temporary()
        write_atomic(self.file(FILES.marker), "written by fercore; --overwrite may delete this folder\n")

    def clear(self) -> None:
        """Delete what fercore wrote in this run directory (its FILES, the TensorBoard folder, its
        temporary files), then the folder itself if nothing else is left; an entry fercore did not
        write is kept, and said so. Only ever a folder fercore made (see `prepare`)."""
        if not self.is_fercore_run:
            raise RunError(f"{self.path}: refusing to delete a folder fercore did not make")
        for name in [n for n in _KNOWN if n != FILES.marker] + [FILES.marker]:  # the marker last
            path = self.file(name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.remove_temporary()
        left = self.foreign_files()
        if left:
            notice(f"{self.path}: kept {', '.join(left[:5])}{' ...' if len(left) > 5 else ''} "
                   f"(not written by fercore) while replacing the run")
        else:
            self.path.rmdir()

    def finished_with(self, config: dict, code: str, fingerprints: tuple[str, str]) -> bool:
        """True if this folder holds a finished, readable run of this config (up to the keys that do
        not change a result, `config.identity_of`), code and data."""
        return self.why_not_reusable(config, code, fingerprints) is None

    def why_not_reusable(self, config: dict, code: str, fingerprints: tuple[str, str]) -> str | None:
        """None if `finished_with` holds, else why not, for the notice `--reuse` prints: unfinished,
        another config, code or data, or a file that does not read back whole (summary, metrics with
        one line per epoch, relabels, diagnostics, checkpoint)."""
        if not self.finished:
            return f"it did not finish ({self.status()})"
        try:
            env = self.env
            if identity_of(self.config) != identity_of(config):
                return "it is a run of another config"
            if env.get("code_hash") != code:
                return "fercore's source code changed since it ran"
            if (env["data"]["train_fingerprint"], env["data"]["test_fingerprint"]) != tuple(fingerprints):
                return "its training or test data differ from today's"
            summary = self.summary  # every file the run owns must read back whole, not only the summary
            epochs = len(self.history())
            if epochs != summary.get("epochs", epochs):
                return f"{self.file(FILES.metrics)}: {epochs} epochs, the summary says {summary['epochs']}"
            self.read_json(FILES.relabels)
            if not self.file(FILES.diagnostics).is_file():
                return f"{self.file(FILES.diagnostics)}: missing"
            self.load_diagnostics()
            if self.load_checkpoint() is None:
                return f"{self.file(FILES.checkpoint)}: missing"
        except RunError as e:
            return str(e)
        except (OSError, KeyError, TypeError, ValueError) as e:
            return f"{self.file(FILES.env)}: incomplete ({type(e).__name__}: {e})"
        return None

    def write_json(self, name: str, obj) -> None:
        write_atomic(self.file(name), json.dumps(obj, indent=2, sort_keys=True, default=str))

    def write_config(self, config: dict) -> None:
        self.write_json(FILES.config, config)

    def write_env(self, env: dict) -> None:
        self.write_json(FILES.env, env)

    def write_summary(self, summary: dict, relabels: list[dict]) -> None:
        self.write_json(FILES.relabels, relabels)
        self.write_json(FILES.summary, summary)  # last: its presence means the run finished

    def write_metrics(self, history: list[dict]) -> None:
        write_atomic(self.file(FILES.metrics), "".join(json.dumps(m, sort_keys=True) + "\n" for m in history))

    def save_checkpoint(self, blob: dict) -> None:
        with atomic_path(self.file(FILES.checkpoint)) as tmp:
            torch.save(blob, tmp)

    def save_diagnostics(self, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.file(FILES.diagnostics)) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    def tensorboard_dir(self) -> Path:
        return self.file(FILES.tensorboard)

    # --- reading (tables, plots, notebooks, eval, predict) --------------------------------------
    def read_json(self, name: str, expect: type | None = None):
        """A JSON file of the run; every problem (missing, unreadable, not JSON, not an `expect`)
        is a RunError naming the file."""
        path = self.file(name)
        try:
            obj = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{path}: missing ({self.status()} run)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(f"{path}: not valid JSON ({str(e).splitlines()[0]}); the file is damaged") from None
        except OSError as e:
            raise RunError(f"{path}: unreadable ({e.strerror or e})") from None
        if expect is not None and not isinstance(obj, expect):
            raise RunError(f"{path}: expected a JSON {'object' if expect is dict else expect.__name__}, "
                           f"got {type(obj).__name__}; the file is damaged")
        return obj

    @property
    def config(self) -> dict:
        return self.read_json(FILES.config, dict)

    @property
    def env(self) -> dict:
        return self.read_json(FILES.env, dict)

    @property
    def summary(self) -> dict:
        summary = self.read_json(FILES.summary, dict)
        if not all(isinstance(summary.get(k), dict) for k in ("last", "best")):
            raise RunError(f"{self.file(FILES.summary)}: lacks its 'last' and 'best' epochs; the file is damaged")
        return summary

    def history(self) -> list[dict]:
        """The per-epoch metrics as a list of dicts (one per finished epoch)."""
        path = self.file(FILES.metrics)
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise RunError(f"{path}: missing (a run without finished epochs)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"{path}: unreadable ({e}); the file is damaged") from None
        out = []
        for i, line in enumerate(lines, 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{path}:{i}: not valid JSON; the file is damaged") from None
            if not isinstance(out[-1], dict):
                raise RunError(f"{path}:{i}: expected a JSON object per epoch; the file is damaged")
        return out

    def metrics(self):
        """The per-epoch metrics as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.history())

    def load_checkpoint(self, map_location=None) -> dict | None:
        """The checkpoint, None if there is none; a damaged file is a RunError naming it."""
        path = self.file(FILES.checkpoint)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunError(f"{path}: unreadable checkpoint ({why[:160]}); the file is damaged or truncated "
                           f"(size {path.stat().st_size} bytes)") from None
        if not isinstance(blob, dict) or not {"epoch", "model"} <= set(blob):
            raise RunError(f"{path}: not a fercore checkpoint (expected a dict with epoch and model)")
        return blob

    def load_diagnostics(self) -> dict[str, np.ndarray]:
        path = self.file(FILES.diagnostics)
        if not path.exists():
            return {}
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - numpy raises BadZipFile, ValueError, EOFError, ...
            raise RunError(f"{path}: unreadable ({type(e).__name__}: {e}); the file is damaged") from None

    def diagnostics(self) -> dict[str, np.ndarray]:
        return self.load_diagnostics()

    def relabels(self):
        """Relabel events as a DataFrame (epoch 0-based, index, old, new, score)."""
        import pandas as pd

        return pd.DataFrame(self.read_json(FILES.relabels), columns=["epoch", "index", "old", "new", "score"])

    def checkpoint_sha256(self) -> str:
        return sha256_file(self.file(FILES.checkpoint))


Run = RunDir  # what `fit` returns and the tables read: the same class, one owner of the format
