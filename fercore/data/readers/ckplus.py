"""CK+ in the common CK+48 distribution (docs/datasets.md#6-ck-extended-cohn-kanade-ck48-distribution):
`CK+48/<class>/S<subject>_<sequence>_<frame>.png`,
seven class folders mapped by name (classes.CODINGS['ckplus48']), protocol ckplus7 (no neutral).

Splits are subject-independent: the subjects are shuffled with `data.fold_seed` and dealt round-
robin into `data.n_folds` folds; fold `data.fold` is the test split `[ours]` (the assignment is in
`meta['folds']`). Optional FACS codes (`data.au_file`): a CSV with header `sequence,AU<n>,...` and one
row per sequence (`S005_001`, 0/1 per AU, e.g. exported from NetFACS' `emotions_set`); every frame
of a sequence inherits its codes, frames of sequences not in the file get `au_mask` 0.
"""
from __future__ import annotations

import csv
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


def read_au_file(path: Path, problems: Problems) -> tuple[list[str], dict[str, list[float]]]:
    """AU names and sequence -> 0/1 codes from a FACS table."""
    if not path.is_file():
        problems.add(path, "AU file missing (data.au_file)")
        return [], {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if not header or header[0] != "sequence" or not all(re.fullmatch(r"AU\d+", h) for h in header[1:]):
            problems.add(f"{path}:1", f"header must be 'sequence,AU<n>,...', got {','.join(header)!r}")
            return [], {}
        table = {}
        for rec in reader:
            where = f"{path}:{reader.line_num}"
            if len(rec) != len(header) or not re.fullmatch(r"S\d{3}_\d{3}", rec[0]) or \
                    any(v not in ("0", "1") for v in rec[1:]):
                problems.add(where, f"expected 'S<subject>_<sequence>' and {len(header) - 1} values 0/1")
                continue
            table[rec[0]] = [float(v) for v in rec[1:]]
    return header[1:], table


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
    au_names, table = read_au_file(Path(cfg.au_file), problems) if cfg.au_file else (None, {})
    splits = {}
    for split, in_test in (("train", False), ("test", True)):
        mine = [r for r in records if (folds.get(r[0]) == cfg.fold) == in_test]
        s = Split(ids=[r[2] for r in mine], label=[r[3] for r in mine], sources=[r[4] for r in mine],
                  where=[str(r[4]) for r in mine])
        if au_names is not None:
            s.au = np.array([table.get(r[1], [0.0] * len(au_names)) for r in mine],
                            dtype=np.float32).reshape(-1, len(au_names))
            s.au_mask = np.array([[float(r[1] in table)] * len(au_names) for r in mine],
                                 dtype=np.float32).reshape(-1, len(au_names))
        s.extras["subject"] = np.array([int(r[0][1:]) for r in mine], dtype=np.int64)
        splits[split] = s
    files = {"au_file": Path(cfg.au_file)} if cfg.au_file else {}
    return Scan("ckplus", root, protocol, classes, "ckplus48", splits, files,
                meta={"folds": folds, "fold": cfg.fold, "n_folds": cfg.n_folds, "fold_seed": cfg.fold_seed,
                      "n_subjects": len(subjects)}, au_names=au_names)
