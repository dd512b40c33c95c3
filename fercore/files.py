"""Files: hashing, atomic writes and the cache location, for every layer (docs/architecture.md#layers).

Nothing here knows about faces, methods or runs; readers, weights, SynthFER, run directories and
the pretraining cache all take their hashes, their temporary files and their cache folder from here.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Where fercore keeps what it can rebuild (SynthFER splits, decoded images, pretrained
    backbones): `$FERCORE_CACHE`, else `~/.cache/fercore`. A path that is, or lies under, a file is
    refused naming the variable, before any work starts."""
    from .errors import ConfigError

    given = os.environ.get("FERCORE_CACHE")
    path = Path(given or Path.home() / ".cache" / "fercore")
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = f"FERCORE_CACHE={given}" if given else f"the default cache folder {path}"
                raise ConfigError(f"{where}: {p} is a file, not a folder; point FERCORE_CACHE at a folder "
                                  "(fercore creates it) or unset it to use ~/.cache/fercore")
            break
    return path


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some Windows editors write first


def lf_text(raw: bytes) -> bytes:
    """A text file's bytes as saved on Linux: without a UTF-8 byte-order mark, CRLF converted to LF."""
    return raw.removeprefix(BOM).replace(b"\r\n", b"\n")


def lf_sha256(path: str | Path) -> str:
    """sha256 of `lf_text` of a file: a copy saved on Windows hashes as the published LF file does."""
    return hashlib.sha256(lf_text(Path(path).read_bytes())).hexdigest()


def normalised_sha256(path: str | Path) -> str:
    """sha256 after `lf_text` and dropping final newlines (docs/datasets.md#21-layout)."""
    return hashlib.sha256(lf_text(Path(path).read_bytes()).rstrip(b"\n")).hexdigest()


def sha256_text(text: str, length: int = 64) -> str:
    """sha256 hex digest of a string, cut to `length` characters (cache keys, run-name hashes)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, a file where a folder should be);
    its message names the file, the reason and the free space, and nothing was left half-written."""


def _tmp_name(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_tmp(path: str | Path) -> list[Path]:
    """Delete the temporary files that `atomic_path(path)` left behind in processes that were killed
    before they could clean up (their pid is gone); returns what was deleted. Only fercore's own
    pattern `.<name>.<pid>.tmp` is touched."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name[len(path.name) + 2:-4]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def read_cache_entry(path: str | Path, load):
    """(`load(path)`, None) for a cache entry, or (None, why) when it does not read back (damaged,
    truncated, of another shape: `load` raises); such an entry is removed, so the caller rebuilds it
    and says why. Stale temporary files of killed writers beside it go first. Every cache uses this."""
    path = Path(path)
    remove_stale_tmp(path)
    try:
        return load(path), None
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, KeyError, ...
        with contextlib.suppress(OSError):
            path.unlink()
        return None, (str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__)


def write_failure(path: Path, error: BaseException, written: int = 0) -> WriteError | None:
    """A WriteError naming `path` if `error` means the file could not be written (any OSError, or
    torch's serialiser failing on a short write), else None (a bug or bad data: let it through)."""
    if isinstance(error, OSError):
        why = error.strerror or str(error) or type(error).__name__
        code = error.errno
    elif isinstance(error, RuntimeError) and any(t in str(error) for t in (
            "PytorchStreamWriter", "inline_container", "file write failed", "unexpected pos")):
        why, code = "the write stopped short", errno.ENOSPC
    else:
        return None
    try:
        free = f"{shutil.disk_usage(_existing_parent(path)).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    if written:
        free += f", {written / 2**20:.1f} MiB written when it stopped"
    hint = {errno.ENOTDIR: "a file stands where a folder should be: choose another folder",
            errno.EACCES: "the folder is not writable: choose a writable one",
            errno.EROFS: "the file system is read-only: choose a writable folder",
            errno.EPERM: "the folder is not writable: choose a writable one",
            # not a full disk: the file met a size limit (the process's `ulimit -f`, or the file system's own,
            # e.g. 4 GiB on FAT32), or the user's quota is used up
            errno.EFBIG: "the file is over a size limit (the process's `ulimit -f`, or the file system's own, "
                         "e.g. 4 GiB per file on FAT32): raise the limit or choose another file system",
            errno.EDQUOT: "your disk quota there is used up: free some of your files or choose another folder"}.get(
        code, "free some space (or choose another folder)")
    return WriteError(f"{path}: cannot be written ({why}; {free}); nothing was left half-written: "
                      f"{hint}, then run the command again")


def _existing_parent(path: Path) -> Path:
    for p in path.parents:
        if p.is_dir():
            return p
    return Path("/")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error the temporary file
    replaces `path` in one rename, so a reader never sees half a file. On any error the temporary
    file is removed and `path` is left as it was; a failed write (a full disk, a read-only folder,
    torch's serialiser stopping short) is a `WriteError` naming `path` and the free space.
    Temporary files of killed processes for the same `path` are removed first."""
    path = Path(path)
    tmp = _tmp_name(path, os.getpid())
    remove_stale_tmp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        try:
            written = tmp.stat().st_size
        except OSError:
            written = 0
        with contextlib.suppress(OSError):
            tmp.unlink()  # first, so the message counts the space it took as free
        failure = write_failure(path, e, written)
        if failure is not None:
            raise failure from e
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
