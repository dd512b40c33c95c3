"""CK+ in the common CK+48 distribution (docs/datasets.md#6-ck-extended-cohn-kanade-ck48-distribution):
`CK+48/<class>/S<subject>_<sequence>_<frame>.png`,
seven class folders mapped by name (classes.CODINGS['ckplus48']), protocol ckplus7 (no neutral).

Splits are subject-independent: the subjects are shuffled with `data.fold_seed` and dealt round-
robin into `data.n_folds` folds; fold `data.fold` is the test split `[ours]` (the assignment is in
`meta['folds']`). Optional FACS codes (`data.au_file`) are a side file (`fercore/data/sidefiles.py`,
docs/datasets.md#side-files) keyed by sequence: a CSV with a `sequence` column (`S005_001`, or
`subject` + `sequence` columns), AU columns `AU<n>` with 0/1 and any other columns (emotion, ...)
ignored, e.g. exported from NetFACS' `emotions_set`; every frame of a sequence inherits its codes
(`sequence_of`), frames of sequences not in the file get `au_mask` 0.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ...config import DataConfig
from ..classes import CODINGS, protocol_classes, resolve_protocol
from .toolkit import IMAGE_SUFFIXES, Problems, Scan, Split

NAME = re.compile(r"S(\d{3})_(\d{3})_(\d{8})\.png")


def fold_of_subjects(subjects: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Subject -> fold: a seeded shuffle of the sorted subjects dealt round-robin into folds."""
    order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(seed)).tolist()
    return {sorted(subjects)[j]: k % n_folds for k, j in enumerate(order)}


def sequence_of(sample_id: str) -> str:
    """The CK+ sequence `S<subject>_<sequence>` of a sample id `<class>/S005_001_00000011.png` (FACS
    codes are given per sequence)."""
    return sample_id.rsplit("/", 1)[-1][:8]


def scan(cfg: DataConfig, problems: Problems) -> Scan:
    root = Path(cfg.data_root)
    base = root / "CK+48" if (root / "CK+48").is_dir() else root
    protocol = resolve_protocol("ckplus", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["ckplus48"].to_index(classes)
    records = []  # (subject, sequence, name, label, path)
    for d in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        if d.name not in to_index:
            problems.add(d, f"folder name is not a CK+48 class; expected one of {sorted(to_index)}")
            continue
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            m = NAME.fullmatch(f.name)
            if m is None:
                problems.add(f, "file name does not match S<subject>_<sequence>_<frame>.png")
                continue
            records.append((f"S{m[1]}", f"S{m[1]}_{m[2]}", f"{d.name}/{f.name}", to_index[d.name], f))
    if not records:
        problems.add(base, "no CK+48 images found (expected <class>/S<subject>_<sequence>_<frame>.png)")
    subjects = sorted({r[0] for r in records})
    if not 0 <= cfg.fold < cfg.n_folds or (subjects and cfg.n_folds > len(subjects)):
        problems.add("data.fold", f"fold {cfg.fold} of n_folds {cfg.n_folds} with {len(subjects)} subjects")
    folds = fold_of_subjects(subjects, cfg.n_folds, cfg.fold_seed) if subjects else {}
    splits = {}
    for split, in_test in (("train", False), ("test", True)):
        mine = [r for r in records if (folds.get(r[0]) == cfg.fold) == in_test]
        s = Split(ids=[r[2] for r in mine], label=[r[3] for r in mine], sources=[r[4] for r in mine],
                  where=[str(r[4]) for r in mine])
        s.extras["subject"] = np.array([int(r[0][1:]) for r in mine], dtype=np.int64)
        splits[split] = s
    return Scan("ckplus", root, protocol, classes, "ckplus48", splits, {},
                meta={"folds": folds, "fold": cfg.fold, "n_folds": cfg.n_folds, "fold_seed": cfg.fold_seed,
                      "n_subjects": len(subjects)})
