"""Run directories: config, environment, per-epoch metrics, diagnostics and checkpoints.

Layout (design.md): `config.json` (resolved), `env.json` (versions, device, git commit, data
fingerprints), `metrics.jsonl` (one line per epoch), `summary.json`, `diagnostics.npz`
(per-sample scores by epoch), `checkpoint.pt` (written atomically, loaded with weights_only=True).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file and rename it over `path`: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


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
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".csv", ".json", ".yaml") and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def environment(device: torch.device) -> dict:
    """Versions, platform and device of this process."""
    import timm
    import torchvision

    import fercore

    env = {
        "fercore": fercore.__version__, "python": platform.python_version(), "torch": torch.__version__,
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
    """One run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on this run (file `.<name>.lock` beside it) while the block runs.
        A second process asking for the same run waits for the first, then sees its finished run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                print(f"{self.path} is in use by process {f.read().strip() or '?'}; waiting for it", flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def prepare(self, if_exists: str) -> None:
        """Create the folder. An existing run is an error unless `if_exists` is 'resume' or
        'overwrite' (and, for 'reuse', the caller has already decided it cannot be reused)."""
        if if_exists not in ("error", "resume", "overwrite", "reuse"):
            raise ValueError(f"if_exists: expected error, resume, overwrite or reuse, got {if_exists!r}")
        if self.path.exists() and any(self.path.iterdir()):
            if if_exists in ("overwrite", "reuse"):
                shutil.rmtree(self.path)
            elif if_exists == "error":
                raise FileExistsError(f"run directory {self.path} already holds a run; resume it or "
                                      f"overwrite it")
        self.path.mkdir(parents=True, exist_ok=True)

    def finished_with(self, config: dict, code: str, fingerprints: tuple[str, str]) -> bool:
        """True if this folder holds a finished run of exactly this config, code and data."""
        try:
            env = self.read_json("env.json")
            return (self.file("summary.json").exists() and self.read_json("config.json") == config
                    and env["code_hash"] == code
                    and (env["data"]["train_fingerprint"], env["data"]["test_fingerprint"]) == fingerprints)
        except (OSError, KeyError, ValueError):
            return False

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj) -> None:
        write_atomic(self.file(name), json.dumps(obj, indent=2, sort_keys=True, default=str))

    def read_json(self, name: str):
        return json.loads(self.file(name).read_text())

    def write_metrics(self, history: list[dict]) -> None:
        write_atomic(self.file("metrics.jsonl"), "".join(json.dumps(m, sort_keys=True) + "\n" for m in history))

    def save_checkpoint(self, blob: dict) -> None:
        tmp = self.file("checkpoint.pt.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.file("checkpoint.pt"))

    def load_checkpoint(self, map_location=None) -> dict | None:
        path = self.file("checkpoint.pt")
        return torch.load(path, map_location=map_location, weights_only=True) if path.exists() else None

    def save_diagnostics(self, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.file("diagnostics.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self.file("diagnostics.npz"))

    def load_diagnostics(self) -> dict[str, np.ndarray]:
        path = self.file("diagnostics.npz")
        if not path.exists():
            return {}
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
