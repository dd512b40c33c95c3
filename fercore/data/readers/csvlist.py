"""Generic CSV list: `<root>/train.csv` and `<root>/test.csv`, a header with at least `path,label`
(`path` relative to the root, `label` a class name or synonym) and optionally `valence,arousal`
(both in [-1, 1]; empty = unannotated). Head indices follow `data.protocol` when given, else the
canonical order of the training labels `[ours]`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..classes import CLASSES, canonical_name, protocol_classes, resolve_protocol
from .toolkit import Problems, Scan, Split, check_images_exist, inside_root, read_csv

FILES = {"train": "train.csv", "test": "test.csv"}


def _rows(path: Path, problems: Problems) -> list[dict]:
    header, records = read_csv(path, problems, required=("path", "label"))
    if records is None:
        return []
    if ("valence" in header) != ("arousal" in header):
        problems.add(f"{path}:1", f"header {','.join(header)!r} has one of valence, arousal without the other")
        return []
    rows = []
    for where, rec in records:
        if rec is None:
            continue
        row = dict(zip(header, rec), where=where)
        row["source"] = inside_root(path.parent, row["path"], where, problems)
        if row["source"] is None:
            continue
        try:
            row["label"] = canonical_name(row["label"])
        except KeyError:
            problems.add(where, f"label {row['label']!r} is not an expression; expected one of {CLASSES}")
            continue
        if "valence" in row:
            try:
                va = [float(row[k]) if row[k] else np.nan for k in ("valence", "arousal")]
            except ValueError:
                problems.add(where, "valence/arousal is not a number")
                continue
            if any(abs(v) > 1 for v in va if not np.isnan(v)):
                problems.add(where, f"valence/arousal {va} outside [-1, 1]")
                continue
            row["va"] = va
        rows.append(row)
    if not rows and not records:
        problems.add(path, "no rows: the split is empty")
    return rows


def scan(cfg: DataConfig, problems: Problems) -> Scan:
    root = Path(cfg.data_root)
    rows = {s: _rows(root / f, problems) for s, f in FILES.items()}
    classes = protocol_classes(cfg.protocol) if resolve_protocol("csv", cfg.protocol) else \
        tuple(c for c in CLASSES if c in {r["label"] for r in rows["train"]})
    splits = {}
    for s, mine in rows.items():
        keep = []
        for r in mine:
            if r["label"] not in classes:
                problems.add(r["where"], f"label {r['label']!r} is not in the classes {classes}")
            else:
                keep.append(r)
        split = Split(ids=[r["path"] for r in keep], label=[classes.index(r["label"]) for r in keep],
                      sources=[r["source"] for r in keep], where=[r["where"] for r in keep])
        if keep and "va" in keep[0]:
            va = np.array([r["va"] for r in keep], dtype=np.float32)
            split.va_mask = (~np.isnan(va).any(1)).astype(np.float32)
            split.va = np.nan_to_num(va)
        splits[s] = check_images_exist(split, problems)
    return Scan("csv", root, cfg.protocol or "csv", classes, "class names", splits,
                {f: root / f for f in FILES.values()})
