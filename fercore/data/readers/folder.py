"""Generic folder layout: `<split>/<class name>/<image>`, class names resolved to the canonical tuple.

Indices follow `CLASSES` order, never folder sorting (datasets.md, 1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .classes import CLASSES, canonical_name
from .faceset import FaceSet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def decode(path: Path, size: int) -> torch.Tensor:
    """Read one image as (3, size, size) uint8 RGB, or raise a DataError naming the file."""
    try:
        with Image.open(path) as im:
            img = torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({str(e).splitlines()[0]})") from None
    if img.shape[-2:] != (size, size):
        img = TF.resize(img, [size, size], antialias=True)
    return img


def read_folder(split_dir: Path, image_size: int, classes: tuple[str, ...] | None = None) -> FaceSet:
    """Read `split_dir/<class>/*`; `classes` fixes the head order (default: canonical order of the folders)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder missing (expected <split>/<class name>/<image>)")
    folders = {}
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        try:
            folders[canonical_name(d.name)] = d
        except KeyError:
            raise DataError(f"{d}: folder name is not an expression; expected one of {CLASSES}") from None
    if classes is None:
        classes = tuple(c for c in CLASSES if c in folders)
    extra = set(folders) - set(classes)
    if extra:
        raise DataError(f"{split_dir}: class folders {sorted(extra)} are not in the training classes {classes}")
    images, labels, ids = [], [], []
    for k, name in enumerate(classes):
        if name not in folders:
            continue
        for f in sorted(folders[name].iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(decode(f, image_size))
                labels.append(k)
                ids.append(f"{name}/{f.name}")
    if not images:
        raise DataError(f"{split_dir}: no images found (expected <class name>/*.jpg|png)")
    return FaceSet(images=torch.stack(images), label=torch.tensor(labels), classes=classes, ids=ids,
                   meta={"dataset": "folder", "root": str(split_dir)})
