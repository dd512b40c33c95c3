"""FER2013 and FERPlus (docs/datasets.md#4-fer2013, docs/datasets.md#5-ferplus): `fer2013.csv` (header
`emotion,pixels,Usage`, 48x48 grey
pixels as text) and, for FERPlus, Microsoft's `fer2013new.csv` votes paired **by row**, never by name.

Splits: Training -> train, PrivateTest -> test, PublicTest -> val (scanned and reported, not used).

Real label noise (`data.label_source=fer2013`): training images carry FER2013's own label, the
test split keeps the FERPlus majority, and `clean_label` holds the FERPlus majority of every image,
so "FER2013 label != FERPlus majority" is the wrong-label ground truth every analysis reads
(`extras['flipped']`) `[ours]`. Training images whose FER2013 label is outside the protocol are
dropped (counted in `meta['excluded']['fer2013_outside_protocol']`).

FERPlus labels: the votes over the protocol's emotions, renormalised, are the soft label
`[lineage: FERPlus paper]`. The hard label follows `data.ferplus_tie` (docs/datasets.md#53-deriving-labels):
* `exclude` (default): the maximum over all 10 vote columns; an image whose maximum is reached by
  more than one column, or belongs to unknown/NF, gets no hard label;
* `first`: among the emotion columns reaching the maximum, the first in canonical order; no hard
  label if only unknown/NF reach it `[ours, for comparison]`.
The hard label of a class outside the protocol (contempt under ferplus7) is dropped too `[lineage: EAC]`.
FaceSets hold the hard-labelled images; FER2013's own label is kept in `extras['fer2013_label']`
(the difference between the two is real annotation noise) and the raw votes in `extras['votes']`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..classes import CLASSES, CODINGS, FERPLUS_COLUMNS, protocol_classes, resolve_protocol
from .toolkit import PixelRow, Problems, Scan, Split, read_csv

FER_FILE = "fer2013.csv"
VOTE_FILE = "fer2013new.csv"
FER_HEADER = ("emotion", "pixels", "Usage")
VOTE_HEADER = ("Usage", "Image name") + FERPLUS_COLUMNS
USAGE = {"Training": "train", "PrivateTest": "test", "PublicTest": "val"}


def _rows(path: Path, header: tuple, problems: Problems) -> list[tuple[str, list[str] | None]]:
    """(where, fields) of a CSV file whose header must equal `header` (fields None: a bad row)."""
    return read_csv(path, problems, header=header, what="file")[1] or []


def scan_fer2013(root: Path, problems: Problems) -> list[tuple[str, int, str, str]]:
    """(where, emotion code, pixel text, Usage) per row; a bad row is reported and given code -1."""
    out = []
    valid = CODINGS["fer2013"].codes
    for where, rec in _rows(root / FER_FILE, FER_HEADER, problems):
        if rec is None:
            out.append((where, -1, "", ""))
            continue
        emotion, pixels, usage = rec
        if not emotion.isdigit() or int(emotion) not in valid:
            problems.add(where, f"emotion {emotion!r} out of range 0..6")
            emotion = "-1"
        elif usage not in USAGE:
            problems.add(where, f"Usage {usage!r} is not one of {sorted(USAGE)}")
            emotion = "-1"
        elif pixels.count(" ") != 48 * 48 - 1:
            problems.add(where, f"pixels field has {len(pixels.split())} values, expected 2304")
            emotion = "-1"
        out.append((where, int(emotion), pixels, usage))
    return out


def hard_label(votes: np.ndarray, rule: str) -> str | None:
    """The hard label (a FERPLUS_COLUMNS name) of one row of 10 votes under `rule`, or None."""
    top = np.flatnonzero(votes == votes.max())
    if rule == "exclude":
        col = FERPLUS_COLUMNS[top[0]]
        return col if len(top) == 1 and col in CODINGS["ferplus"].codes else None
    emotions = [FERPLUS_COLUMNS[i] for i in top if FERPLUS_COLUMNS[i] in CODINGS["ferplus"].codes]
    if not emotions:
        return None
    return min(emotions, key=lambda c: CLASSES.index(CODINGS["ferplus"].codes[c]))


def _splits_from(items: list[dict], label_source: str = "ferplus") -> dict[str, Split]:
    splits = {}
    for split in USAGE.values():
        mine = [it for it in items if it["split"] == split]
        real_noise = label_source == "fer2013" and split == "train"
        s = Split(ids=[it["id"] for it in mine],
                  label=[it["fer2013_label"] if real_noise else it["label"] for it in mine],
                  sources=[PixelRow(it["pixels"]) for it in mine], where=[it["where"] for it in mine],
                  extras={k: np.array([it[k] for it in mine], dtype=np.int64).reshape(len(mine), *shape)
                          for k, shape in (("fer2013_label", ()), ("votes", (len(FERPLUS_COLUMNS),)))
                          if not mine or k in mine[0]})
        if mine and "soft" in mine[0]:
            s.soft_label = np.array([it["soft"] for it in mine], dtype=np.float32)
        if real_noise:  # the reference label of every training image (noise.inject marks where the two disagree)
            s.extras["reference_label"] = np.array([it["label"] for it in mine], dtype=np.int64)
        splits[split] = s
    return splits


def scan_fer(cfg: DataConfig, problems: Problems) -> Scan:
    """FER2013 with its own `emotion` labels (protocol fer2013)."""
    root = Path(cfg.data_root)
    protocol = resolve_protocol("fer2013", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["fer2013"].to_index(classes)
    items = [{"id": f"fer2013_{r:05d}", "label": to_index[code], "pixels": px, "where": where, "split": USAGE[usage]}
             for r, (where, code, px, usage) in enumerate(scan_fer2013(root, problems)) if code >= 0]
    return Scan("fer2013", root, protocol, classes, "fer2013", _splits_from(items), {FER_FILE: root / FER_FILE},
                meta={"val_split": "PublicTest (not used)"})


def scan_plus(cfg: DataConfig, problems: Problems) -> Scan:
    """FERPlus: FER2013 pixels with the votes of `fer2013new.csv`, row by row."""
    root = Path(cfg.data_root)
    protocol = resolve_protocol("ferplus", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["ferplus"].to_index(classes)
    fer2013_index = CODINGS["fer2013"].to_index(classes)
    emotion_cols = [FERPLUS_COLUMNS.index(c) for c in sorted(to_index, key=to_index.get)]  # in head order
    fer = scan_fer2013(root, problems)
    votes = _rows(root / VOTE_FILE, VOTE_HEADER, problems)
    if fer and votes and len(fer) != len(votes):
        shorter = min((fer, FER_FILE), (votes, VOTE_FILE), key=lambda t: len(t[0]))
        problems.add(f"{root / shorter[1]}:{len(shorter[0]) + 2}", f"missing line: {VOTE_FILE} has {len(votes)} rows, "
                     f"{FER_FILE} {len(fer)}; the files pair row by row "
                     "(docs/datasets.md#52-pairing-with-fer2013-by-row-never-by-name)")
    items, counts = [], {"no_image": 0, "no_emotion_votes": 0, "soft_only": 0}
    if cfg.label_source == "fer2013":
        counts["fer2013_outside_protocol"] = 0
    for r, ((fwhere, code, px, usage), (where, rec)) in enumerate(zip(fer, votes)):
        if rec is None or code < 0:
            continue
        if rec[0] != usage:
            problems.add(where, f"Usage {rec[0]!r} differs from {usage!r} at {fwhere}: the files are not paired")
            continue
        if not rec[1]:
            counts["no_image"] += 1
            continue
        try:
            v = np.array([float(x) for x in rec[2:]])
        except ValueError:
            problems.add(where, "a vote is not a number")
            continue
        if (v < 0).any():
            problems.add(where, "negative vote")
            continue
        emo = v[emotion_cols]
        if emo.sum() == 0:
            counts["no_emotion_votes"] += 1
            continue
        label = hard_label(v, cfg.ferplus_tie)
        if label is None or label not in to_index:
            counts["soft_only"] += 1
            continue
        fer_label = fer2013_index.get(code, -1)
        if cfg.label_source == "fer2013" and USAGE[usage] == "train" and fer_label < 0:
            counts["fer2013_outside_protocol"] += 1
            continue
        items.append({"id": f"{rec[1]}#{r}", "label": to_index[label], "pixels": px, "where": where,
                      "split": USAGE[usage], "fer2013_label": fer_label,
                      "votes": v.astype(np.int64), "soft": emo / emo.sum()})
    derived = "".join(f"{it['id']},{it['label']}\n" for it in items)
    rows = {split: sum(1 for rec in votes if rec[1] is not None and USAGE.get(rec[1][0]) == split)
            for split in USAGE.values()}
    train = [it for it in items if it["split"] == "train"]
    disagree = sum(it["fer2013_label"] != it["label"] for it in train)
    return Scan("ferplus", root, protocol, classes, "ferplus", _splits_from(items, cfg.label_source),
                {FER_FILE: root / FER_FILE, VOTE_FILE: root / VOTE_FILE},
                meta={"tie_rule": cfg.ferplus_tie, "label_source": cfg.label_source, "excluded": counts,
                      "vote_rows_per_split": rows,
                      "val_split": "PublicTest (not used)",
                      "derived_labels_sha256": hashlib.sha256(derived.encode()).hexdigest(),
                      "train_fer2013_disagrees": {"images": disagree, "of": len(train),
                                                  "share": round(disagree / max(len(train), 1), 4)}})
