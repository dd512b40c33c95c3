"""Files: hashing, atomic writes and the cache location, for every layer (docs/architecture.md#layers).

Nothing here knows about faces, methods or runs; readers, weights, SynthFER, run directories and
the pretraining cache all take their hashes, their temporary files and their cache folder from here.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Where fercore keeps what it can rebuild (SynthFER splits, decoded images, pretrained
    backbones): `$FERCORE_CACHE`, else `~/.cache/fercore`."""
    return Path(os.environ.get("FERCORE_CACHE") or Path.home() / ".cache" / "fercore")


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalised_sha256(path: str | Path) -> str:
    """sha256 after converting CRLF to LF and dropping final newlines (docs/datasets.md#21-layout)."""
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n").rstrip(b"\n")).hexdigest()


def sha256_text(text: str, length: int = 64) -> str:
    """sha256 hex digest of a string, cut to `length` characters (cache keys, run-name hashes)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error the temporary file
    replaces `path` in one rename, so a reader never sees half a file. On any error (a full disk
    included) the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
