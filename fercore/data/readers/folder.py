"""Generic folder layout: `<root>/{train,test}/<class name>/<image>`, class names (or synonyms such as
`happiness`) resolved to the canonical tuple.

Head indices follow `data.protocol` when given, else the canonical order of the training folders,
never folder sorting (docs/datasets.md#1-one-canonical-label-space).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...config import DataConfig
from ..classes import CLASSES, canonical_name, protocol_classes, resolve_protocol
from ..faceset import FaceSet
from .decode import decode_split
from .toolkit import IMAGE_SUFFIXES, Problems, Scan, Split


def class_folders(split_dir: Path, problems: Problems) -> dict[str, Path]:
    """Canonical class name -> folder of one split."""
    if not split_dir.is_dir():
        problems.add(split_dir, "split folder missing (expected <split>/<class name>/<image>)")
        return {}
    folders = {}
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        try:
            folders[canonical_name(d.name)] = d
        except KeyError:
            problems.add(d, f"folder name is not an expression; expected one of {CLASSES}")
    return folders


def scan_split(split_dir: Path, classes: tuple[str, ...], problems: Problems) -> Split:
    folders = class_folders(split_dir, problems)
    extra = set(folders) - set(classes)
    if extra:
        problems.add(split_dir, f"class folders {sorted(extra)} are not in the classes {classes}")
    ids, label, sources = [], [], []
    for k, name in enumerate(classes):
        if name in folders:
            for f in sorted(folders[name].iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    ids.append(f"{name}/{f.name}")
                    label.append(k)
                    sources.append(f)
    if split_dir.is_dir() and not ids:
        problems.add(split_dir, "no images found (expected <class name>/*.jpg|png): the split is empty")
    return Split(ids=ids, label=label, sources=sources, where=[str(s) for s in sources])


def _classes(train_dir: Path, protocol: str, problems: Problems) -> tuple[str, ...]:
    if resolve_protocol("folder", protocol):
        return protocol_classes(protocol)
    present = Problems(strict=False)  # folder problems are reported by scan_split
    folders = class_folders(train_dir, present)
    return tuple(c for c in CLASSES if c in folders)


def scan(cfg: DataConfig, problems: Problems) -> Scan:
    root = Path(cfg.data_root)
    classes = _classes(root / "train", cfg.protocol, problems)
    splits = {s: scan_split(root / s, classes, problems) for s in ("train", "test")}
    return Scan("folder", root, cfg.protocol or "folder", classes, "class names", splits, {})


def read_folder(split_dir: Path, image_size: int, classes: tuple[str, ...] | None = None) -> FaceSet:
    """One split folder as a FaceSet; `classes` fixes the head order (default: canonical order of its folders)."""
    split_dir = Path(split_dir)
    problems = Problems(strict=True)
    classes = classes or _classes(split_dir, "", problems)
    split = scan_split(split_dir, classes, problems)
    images, _ = decode_split(split, image_size, cache=False)
    return FaceSet(images=images, label=torch.tensor(split.label), classes=classes, ids=split.ids,
                   meta={"dataset": "folder", "root": str(split_dir)})
