"""The reader toolkit: what every layout's `scan` uses to parse its label files into records.

A reader is a `scan(cfg, problems) -> Scan` function (docs/contributing.md#add-a-reader): it checks
the layout and parses the label files into per-split `Split` records without decoding an image.
Strict `Problems` (training) raise the first problem as a DataError naming the file and line; the
data doctor passes a collecting one, so it lists every problem.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError, notice
from ...files import BOM, lf_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class Problems:
    """Bad-input reports `where: message`. Strict (readers): the first one raises a DataError.
    Collecting (doctor): every one is kept in `items`."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.items: list[str] = []

    def add(self, where: str | Path, message: str) -> None:
        text = f"{where}: {message}"
        if self.strict:
            raise DataError(text)
        self.items.append(text)

    def __bool__(self) -> bool:
        return bool(self.items)


def read_lines(path: Path, problems: Problems, allow_crlf: bool = False) -> list[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 text file; one final newline is allowed. A file saved
    on Windows (CRLF line endings, a UTF-8 byte-order mark) is read as its LF-normalised text with one
    notice (none for CRLF where the format's own writer uses it: `allow_crlf`); the published-hash
    check is on that normalised text (`files.normalised_sha256`). A lone CR, undecodable bytes and
    empty lines are problems naming the line."""
    if not path.is_file():
        problems.add(path, "label file missing")
        return []
    raw = path.read_bytes()
    saved_on_windows = (["a UTF-8 byte-order mark"] if raw.startswith(BOM) else []) + (
        ["CRLF line endings"] if b"\r\n" in raw and not allow_crlf else [])
    raw = lf_text(raw)
    if saved_on_windows:
        notice(f"{path}: read with {' and '.join(saved_on_windows)} (a file saved on Windows) as its LF text")
    if b"\r" in raw:
        line = raw[:raw.index(b"\r")].count(b"\n") + 1
        problems.add(f"{path}:{line}", "a CR without LF (a classic Mac line ending); fercore reads LF or CRLF "
                     "files: convert with `sed -i 's/\\r/\\n/g' FILE`")
        raw = raw.replace(b"\r", b"")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        problems.add(f"{path}:{line}", "not UTF-8 text")
        return []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            problems.add(f"{path}:{i}", "empty line (missing label line)")
            continue
        out.append((i, line))
    return out


def say_bom(path: Path) -> None:
    """One notice if a CSV file (read with encoding utf-8-sig) starts with a byte-order mark."""
    with open(path, "rb") as f:
        if f.read(len(BOM)) == BOM:
            notice(f"{path}: read with a UTF-8 byte-order mark (a file saved on Windows); the mark is ignored")


def read_csv(path: Path, problems: Problems, *, header: tuple[str, ...] | None = None,
             required: tuple[str, ...] = (),
             what: str = "label file") -> tuple[list[str], list[tuple[str, list[str] | None]] | None]:
    """A UTF-8 CSV file as (header, [(where, fields)]): the header must equal `header` when given,
    else hold every `required` column; a row with the wrong column count is reported and kept as
    (where, None), so readers that pair files by row stay aligned. Problems name the file and line;
    the rows are None when the file is missing or unreadable or its header is wrong."""
    if not path.is_file():
        problems.add(path, f"{what} missing")
        return [], None
    rows: list[tuple[str, list[str] | None]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # CSV: LF or CRLF rows both valid
            reader = csv.reader(f)
            got = next(reader, [])
            say_bom(path)
            if header is not None and tuple(got) != tuple(header):
                problems.add(f"{path}:1", f"header {','.join(got)!r} differs from {','.join(header)!r}")
                return got, None
            missing = [c for c in required if c not in got]
            if missing:
                problems.add(f"{path}:1", f"header {','.join(got)!r} lacks the column(s) {','.join(missing)}")
                return got, None
            for rec in reader:
                where = f"{path}:{reader.line_num}"
                if len(rec) != len(got):
                    problems.add(where, f"expected {len(got)} columns, got {len(rec)}")
                    rows.append((where, None))
                    continue
                rows.append((where, rec))
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        problems.add(f"{path}:{line}", "not UTF-8 text")
        return [], None
    except csv.Error as e:
        problems.add(path, f"not a readable CSV file ({e})")
        return [], None
    return got, rows


def inside_root(root: Path, rel: str, where: str, problems: Problems) -> Path | None:
    """`root / rel` if `rel` is a relative path that stays inside `root` (no absolute path, no `..`
    leaving it), else a problem naming the line. The check is on the path as written: a symbolic
    link the user placed inside the root is followed, as a layout built of links to a store needs."""
    if not rel.strip():
        problems.add(where, "empty image path")
        return None
    text = rel.replace("\\", "/")  # a Windows-written `..\\x` leaves the root just the same
    if Path(text).is_absolute() or re.match(r"^[A-Za-z]:", text) or Path(os.path.normpath(text)).parts[0] == "..":
        problems.add(where, f"path {rel!r} leaves the data root {root}; paths must be relative to it, inside it")
        return None
    return root / rel


@dataclass
class PixelRow:
    """An image stored as text (FER2013 `pixels`: 2,304 space-separated grey values)."""

    text: str
    size: int = 48


@dataclass
class Split:
    """One split's records before decoding: per-sample source, label and known targets."""

    ids: list[str]
    label: list[int]
    sources: list                        # Path per sample, or PixelRow
    where: list[str]                     # the "file:line" that introduced each sample
    boxes: list | None = None            # (x, y, w, h) face box in source pixels, or None
    landmarks: np.ndarray | None = None  # (N, 5, 2) source pixel (x, y) (after the face box crop)
    soft_label: np.ndarray | None = None
    au: np.ndarray | None = None
    au_mask: np.ndarray | None = None
    va: np.ndarray | None = None
    va_mask: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: list[int]) -> Split:
        def take(v):
            if v is None:
                return None
            if isinstance(v, np.ndarray):
                return v[index]
            return [v[i] for i in index]
        changes = {f.name: take(getattr(self, f.name)) for f in fields(self) if f.name != "extras"}
        return replace(self, **changes, extras={k: v[index] for k, v in self.extras.items()})


@dataclass
class Scan:
    """A parsed layout: per-split records plus what the doctor reports about it."""

    dataset: str
    root: Path
    protocol: str
    classes: tuple[str, ...]
    coding: str
    splits: dict[str, Split]
    files: dict[str, Path]                      # label files: display name -> path (hashed)
    meta: dict = field(default_factory=dict)    # JSON-able facts: drop counts, rules, folds
    au_names: list[str] | None = None


def require_dir(path: Path, problems: Problems, what: str) -> bool:
    if not path.is_dir():
        problems.add(path, f"folder missing ({what})")
        return False
    return True


def check_images_exist(split: Split, problems: Problems) -> Split:
    """Drop (collecting) or refuse (strict) records whose image file is absent."""
    keep = []
    for i, (src, where) in enumerate(zip(split.sources, split.where)):
        if isinstance(src, Path) and not src.is_file():
            problems.add(where, f"image {src} referenced but absent")
        else:
            keep.append(i)
    return split if len(keep) == len(split) else split.subset(keep)


def subsample_index(n_total: int, n: int, seed: int) -> list[int]:
    """A seeded subset of `n` of `n_total` rows, in file order; all rows if `n` is 0 or too big."""
    if not n or n >= n_total:
        return list(range(n_total))
    idx = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]
    return idx.sort().values.tolist()
