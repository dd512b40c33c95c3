"""What every reader shares: strict line parsing with `file:line` errors, a scan of a layout into
records, decoding with a disk cache, and the conversion of records into FaceSets.

A reader is a `scan(cfg, problems) -> Scan` function: it checks the layout and parses the label
files into per-split records without decoding an image. `read(scan, cfg)` decodes the (possibly
subsampled) records into FaceSets; the data doctor runs the same scan with a collecting `Problems`
so it can list every problem instead of stopping at the first.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from ...config import DataConfig
from ...errors import ConfigError, DataError
from ..faceset import FaceSet
from ..synthfer.dataset import cache_dir

CACHE_VERSION = 1  # bump when decoding changes, so decode caches are not reused across versions
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalised_sha256(path: Path) -> str:
    """sha256 after converting CRLF to LF and dropping final newlines (datasets.md 2.1)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n").rstrip(b"\n")).hexdigest()


def read_lines(path: Path, problems: Problems, allow_crlf: bool = False) -> list[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 text file with LF endings; one final newline is
    allowed. CR characters (unless `allow_crlf`), undecodable bytes and empty lines are problems
    naming the line."""
    if not path.is_file():
        problems.add(path, "label file missing")
        return []
    raw = path.read_bytes()
    if allow_crlf:
        raw = raw.replace(b"\r\n", b"\n")
    if b"\r" in raw:
        line = raw[:raw.index(b"\r")].count(b"\n") + 1
        problems.add(f"{path}:{line}", "CRLF line ending; fercore reads LF files (the published hashes are of "
                     "LF files): convert with `sed -i 's/\\r$//' FILE`")
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


# --- decoding ---------------------------------------------------------------------------------

def _crop(img: Image.Image, box) -> Image.Image:
    x, y, w, h = box
    return img.crop((x, y, x + w, y + h))


def decode(path: Path, size: int, box=None) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image as (3, size, size) uint8 RGB and its (width, height) before resizing (after the
    optional face-box crop), or a DataError naming the file."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if box is not None:
                im = _crop(im, box)
            wh = im.size
            img = torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({str(e).splitlines()[0]})") from None
    if img.shape[-2:] != (size, size):
        img = TF.resize(img, [size, size], antialias=True)
    return img, wh


def decode_pixels(row: PixelRow, size: int, where: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """A FER2013 `pixels` field as (3, size, size) uint8 (grey replicated to RGB)."""
    values = row.text.split()
    if len(values) != row.size * row.size:
        raise DataError(f"{where}: pixels field has {len(values)} values, expected {row.size * row.size}")
    try:
        arr = np.array(values, dtype=np.int64)
    except ValueError:
        raise DataError(f"{where}: pixels field holds a value that is not an integer") from None
    if arr.min() < 0 or arr.max() > 255:
        raise DataError(f"{where}: pixel value outside 0..255")
    img = torch.from_numpy(arr.astype(np.uint8).reshape(1, row.size, row.size)).expand(3, -1, -1).contiguous()
    if size != row.size:
        img = TF.resize(img, [size, size], antialias=True)
    return img, (row.size, row.size)


def _decode_cuda(split: Split, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """nvJPEG batch decode on the GPU (torchvision.io, deprecated since 0.29 in favour of TorchCodec)
    for splits that are all JPEG files without face boxes; None when that does not apply."""
    if not torch.cuda.is_available() or split.boxes is not None or not all(
            isinstance(s, Path) and s.suffix.lower() in (".jpg", ".jpeg") for s in split.sources):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg
        images, sizes = [], []
        for start in range(0, len(split), 256):
            data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
                    for p in split.sources[start:start + 256]]
            for img in decode_jpeg(data, mode=ImageReadMode.RGB, device=device):
                sizes.append((img.shape[2], img.shape[1]))
                images.append(TF.resize(img, [size, size], antialias=True).cpu())
    return torch.stack(images), torch.tensor(sizes)


def _fingerprint(split: Split, size: int) -> str:
    """Key of a split's decoded tensor: source paths with their size and mtime, boxes and pixel
    rows' content, the output size and the cache version `[ours]` (stat, not content: re-hashing
    300 k JPEGs would cost what the cache saves)."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, size, split.boxes]).encode())
    for src in split.sources:
        if isinstance(src, Path):
            st = src.stat()
            h.update(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        else:
            h.update(hashlib.sha256(src.text.encode()).digest())
    return h.hexdigest()[:24]


def decode_split(split: Split, size: int, *, cache: bool = True, device: str = "cpu",
                 workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, size, size) uint8 images and (N, 2) source (width, height) of a split.

    With `cache`, the result is kept in `$FERCORE_CACHE/decoded-<fingerprint>.pt` and reloaded
    (weights_only) while the source files are unchanged. `device='cuda'` decodes JPEGs with nvJPEG.
    """
    path = cache_dir() / f"decoded-{_fingerprint(split, size)}.pt"
    if cache and path.is_file():
        blob = torch.load(path, weights_only=True)
        return blob["images"], blob["sizes"]
    out = _decode_cuda(split, size, device) if device.startswith("cuda") else None
    if out is None:
        boxes = split.boxes or [None] * len(split)
        images = torch.empty(len(split), 3, size, size, dtype=torch.uint8)
        sizes = torch.empty(len(split), 2, dtype=torch.long)

        def one(i: int) -> None:  # each worker writes its own rows: no stack of N small tensors at the end
            src = split.sources[i]
            img, wh = decode_pixels(src, size, split.where[i]) if isinstance(src, PixelRow) else \
                decode(src, size, boxes[i])
            images[i].copy_(img)
            sizes[i] = torch.tensor(wh)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # parallel over images; intra-op threads of small ops only contend
        try:
            with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
                list(pool.map(one, range(len(split))))
        finally:
            torch.set_num_threads(threads)
        out = (images, sizes)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"images": out[0], "sizes": out[1]}, tmp)
        tmp.replace(path)
    return out


def to_faceset(scan: Scan, name: str, split: Split, cfg: DataConfig) -> FaceSet:
    """Decode a split's records and build its FaceSet (landmarks rescaled to the output size)."""
    images, sizes = decode_split(split, cfg.image_size, cache=cfg.cache, device=cfg.decode_device)
    landmarks = None
    if split.landmarks is not None:
        scale = torch.tensor(cfg.image_size, dtype=torch.float) / sizes.float()      # (N, 2) x and y
        lm = torch.as_tensor(split.landmarks, dtype=torch.float)
        landmarks = (lm + 0.5) * scale[:, None, :] - 0.5   # pixel centres at integer coordinates
    t = lambda v, dt=torch.float: None if v is None else torch.as_tensor(v, dtype=dt)  # noqa: E731
    meta = {"dataset": scan.dataset, "split": name, "root": str(scan.root), "protocol": scan.protocol,
            "coding": scan.coding, "label_files": {k: sha256_file(p) for k, p in scan.files.items() if p.is_file()},
            **scan.meta}
    if scan.au_names is not None:
        meta["au_names"] = scan.au_names
    return FaceSet(images=images, label=torch.tensor(split.label, dtype=torch.long), classes=scan.classes,
                   ids=list(split.ids), soft_label=t(split.soft_label), au=t(split.au), au_mask=t(split.au_mask),
                   va=t(split.va), va_mask=t(split.va_mask), landmarks=landmarks,
                   extras={k: torch.as_tensor(v) for k, v in split.extras.items()}, meta=meta)


def read(scan_fn: Callable[[DataConfig, Problems], Scan], cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    """Scan strictly, subsample (`n_train`/`n_test`, seeds 0/1) before decoding, decode, build FaceSets."""
    if cfg.decode_device != "cpu" and not cfg.decode_device.startswith("cuda"):
        raise ConfigError(f"data.decode_device: expected cpu or cuda[:N], got {cfg.decode_device!r}")
    scan = scan_fn(cfg, Problems(strict=True))
    out = []
    for name, n, seed in (("train", cfg.n_train, 0), ("test", cfg.n_test, 1)):
        split = scan.splits[name]
        if not len(split):
            raise DataError(f"{scan.root}: the {name} split is empty (layout of {scan.dataset!r})")
        full = len(split)
        fs = to_faceset(scan, name, split.subset(subsample_index(full, n, seed)), cfg)
        fs.meta["n_rows"] = full
        out.append(fs)
    return out[0], out[1]


def five_point(lm68: np.ndarray) -> np.ndarray:
    """68-point (iBUG order) landmarks (..., 68, 2) -> fercore's 5 points: eye centres (image-left
    eye first: points 36-41 are the subject's right eye), nose tip 30, mouth corners 48 and 54."""
    return np.stack([lm68[..., 36:42, :].mean(-2), lm68[..., 42:48, :].mean(-2), lm68[..., 30, :],
                     lm68[..., 48, :], lm68[..., 54, :]], -2)
