"""Decoding: a split's image records -> one (N, 3, size, size) uint8 tensor, kept in a disk cache.

`decode_split` reads every source once (threads over images; nvJPEG on the GPU for JPEG-only
splits) and caches the result under `$FERCORE_CACHE`, keyed by the source files' paths, sizes and
mtimes (docs/architecture.md#caches). `decode` is the one place an image file becomes RGB uint8,
for the readers, the data doctor and `fercore predict` alike: 16-bit grey is scaled (not clipped)
to 8 bits, palette, CMYK, grey and bilevel images are converted, transparency is composited over
white `[ours]`; images above `MAX_PIXELS` or below `MIN_SIDE` pixels a side are refused with the
reason. A cache entry that does not read back is decoded again, with a notice.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from ...errors import DataError, notice
from ...files import atomic_path, cache_dir, read_cache_entry
from .toolkit import PixelRow, Split

CACHE_VERSION = 2  # bump when decoding changes, so decode caches are not reused across versions
MAX_PIXELS = 89_478_485  # [ours] PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): ~9459 px square
MIN_SIDE = 8             # [ours] the smallest side an image may have (data.image_size's own lower bound)
BACKGROUND = (255, 255, 255)  # [ours] transparent pixels are composited over white, as a viewer shows them
GREY16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def _crop(img: Image.Image, box) -> Image.Image:
    x, y, w, h = box
    return img.crop((x, y, x + w, y + h))


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB: 16-bit (and 32-bit integer) grey scaled to 0..255, transparency
    composited over `BACKGROUND`, every other mode through PIL's conversion. A ValueError says why an
    image cannot be converted (float pixels, integers beyond 16 bits, an unsupported mode)."""
    if im.mode in GREY16:
        arr = np.asarray(im).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{im.mode} pixels outside 0..65535; fercore reads 8- and 16-bit images")
        return Image.fromarray(np.round(arr / 257).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        raise ValueError("32-bit floating-point pixels; save it as an 8- or 16-bit image")
    if im.mode in ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    if im.mode != "RGB":
        try:
            return im.convert("RGB")
        except ValueError:
            raise ValueError(f"images of mode {im.mode} cannot be converted to RGB") from None
    im.load()
    return im


def open_rgb(path: Path, box=None) -> tuple[Image.Image, str]:
    """An image file as a loaded 8-bit RGB image (after the optional face-box crop) and its mode on
    disk, or a DataError naming the file and the reason (not an image, truncated, too large, too
    small, a mode that does not convert)."""
    limit = (f"fercore's limit is {MAX_PIXELS:,} pixels (a decompression bomb, or not a face image): "
             f"shrink it first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked here, in our words
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise DataError(f"{path}: image of {w}x{h} = {w * h:,} pixels; {limit}")
                mode = im.mode
                rgb = to_rgb(im)
    except Image.DecompressionBombError as e:  # PIL's own refusal, above twice its threshold
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise DataError(f"{path}: image of {int(pixels[1]) if pixels else 'too many':,} pixels; {limit}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot decode image ({why})") from None
    if box is not None:
        rgb = _crop(rgb, box)
    if min(rgb.size) < MIN_SIDE:
        what = "face box crop" if box is not None else "image"
        raise DataError(f"{path}: {what} is {rgb.size[0]}x{rgb.size[1]} pixels; fercore needs at least "
                        f"{MIN_SIDE} on each side (a face image, not a placeholder or thumbnail)")
    return rgb, mode


def decode(path: Path, size: int, box=None) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image as (3, size, size) uint8 RGB and its (width, height) before resizing (after the
    optional face-box crop), or a DataError naming the file (`open_rgb`)."""
    im, _ = open_rgb(Path(path), box)
    wh = im.size
    img = torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()
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
        got = _load_cached(path, len(split), size)
        if got is not None:
            return got
    out = _decode_cuda(split, size, device) if device.startswith("cuda") else None
    if out is None:
        boxes = split.boxes or [None] * len(split)
        images = torch.empty(len(split), 3, size, size, dtype=torch.uint8)
        sizes = torch.empty(len(split), 2, dtype=torch.long)

        def one(i: int) -> None:  # each worker writes its own rows: no stack of N small tensors at the end
            src = split.sources[i]
            try:
                img, wh = decode_pixels(src, size, split.where[i]) if isinstance(src, PixelRow) else \
                    decode(src, size, boxes[i])
            except DataError as e:  # name the label line that listed the image, too
                if split.where[i] in str(e) or split.where[i] == str(src):
                    raise
                raise DataError(f"{e}, listed at {split.where[i]}") from None
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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save({"images": out[0], "sizes": out[1]}, tmp)
        except OSError as e:  # the cache only saves time: go on without it
            notice(f"decode cache not written ({e}); continuing without it")
    return out


def _load_cached(path: Path, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A decode cache entry, or None (with a notice, the entry removed) when it does not read back as
    the (n, 3, size, size) uint8 images and (n, 2) sizes it should hold: the split is decoded again."""
    def load(p):
        blob = torch.load(p, weights_only=True)
        images, sizes = blob["images"], blob["sizes"]
        if tuple(images.shape) != (n, 3, size, size) or images.dtype != torch.uint8 or tuple(sizes.shape) != (n, 2):
            raise ValueError(f"holds {tuple(images.shape)} images, expected {(n, 3, size, size)}")
        return images, sizes
    out, why = read_cache_entry(path, load)
    if why:
        notice(f"{path}: decode cache entry does not read back ({why}); decoding the split again")
    return out
