"""Decoding: a split's image records -> one (N, 3, size, size) uint8 tensor, kept in a disk cache.

`decode_split` reads every source once (threads over images; nvJPEG on the GPU for JPEG-only
splits) and caches the result under `$FERCORE_CACHE`, keyed by the source files' paths, sizes and
mtimes (docs/architecture.md#caches). `decode` is the one place an image file becomes RGB uint8.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from ...errors import DataError
from ...files import atomic_path, cache_dir
from .toolkit import PixelRow, Split

CACHE_VERSION = 1  # bump when decoding changes, so decode caches are not reused across versions


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
        with atomic_path(path) as tmp:
            torch.save({"images": out[0], "sizes": out[1]}, tmp)
    return out
