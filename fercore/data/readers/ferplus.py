"""FER2013 and FERPlus (docs/datasets.md#4-fer2013, docs/datasets.md#5-ferplus).

Two FERPlus layouts, detected from what the data root holds (or `data.layout=csv|png`):
* csv: `fer2013.csv` (header `emotion,pixels,Usage`, 48x48 grey pixels as text) and Microsoft's
  `fer2013new.csv` votes, paired **by row**, never by name;
* png: the folders `FER2013Train/`, `FER2013Valid/`, `FER2013Test/` that FERPlus's
  `src/generate_training_data.py` writes (`fer<7 digits>.png`), with the votes of `fer2013new.csv`
  in the root (or `data.ferplus_votes=FILE`), else of each folder's 2016 `label.csv`.
Ids are the image names in both layouts, so runs on the two compare image by image (the csv
layout's four rows whose PNG the generator overwrote keep `<name>#<row>`). Splits: Training ->
train, PrivateTest -> test, PublicTest -> val (scanned and reported, not used).

Real label noise `[ours]`, where the test split keeps the FERPlus majority and `clean_label` holds
the majority of every training image, so "training label != FERPlus majority" is the wrong-label
ground truth every analysis reads (`extras['flipped']`):
* `data.label_source=fer2013` (csv layout): FER2013's own label; images whose FER2013 label is
  outside the protocol are dropped (`meta['excluded']['fer2013_outside_protocol']`);
* `data.label_source=one_vote`: one annotator's vote per image, drawn in proportion to its votes
  over the protocol's emotions (`data.vote_seed`, `drawn_vote`): the crowd's own disagreement.

FERPlus labels: the votes over the protocol's emotions, renormalised, are the soft label
`[lineage: FERPlus paper]`. The hard label follows `data.ferplus_tie` (docs/datasets.md#53-deriving-labels):
* `exclude` (default): the maximum over all 10 vote columns; an image whose maximum is reached by
  more than one column, or belongs to unknown/NF, gets no hard label;
* `first`: among the emotion columns reaching the maximum, the first in canonical order; no hard
  label if only unknown/NF reach it `[ours, for comparison]`.
The hard label of a class outside the protocol (contempt under ferplus7) is dropped too `[lineage: EAC]`.
FaceSets hold the hard-labelled images; FER2013's own label is kept in `extras['fer2013_label']`
(csv layout) and the raw votes in `extras['votes']`.
"""
from __future__ import annotations

import csv
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import DataConfig
from ...files import lf_sha256, sha256_file
from ..classes import CLASSES, CODINGS, FERPLUS_COLUMNS, protocol_classes, resolve_protocol
from .toolkit import PixelRow, Problems, Scan, Split, read_csv, read_lines, require_dir

FER_FILE = "fer2013.csv"
VOTE_FILE = "fer2013new.csv"
FER_HEADER = ("emotion", "pixels", "Usage")
VOTE_HEADER = ("Usage", "Image name") + FERPLUS_COLUMNS
USAGE = {"Training": "train", "PrivateTest": "test", "PublicTest": "val"}
USAGE_OF = {split: usage for usage, split in USAGE.items()}
OLD_VOTE_HEADER = ("Usage",) + FERPLUS_COLUMNS   # the 2016 fer2013new.csv, before image names were added
# The generator's layout (FERPlus src/generate_training_data.py): split -> folder of fer<7 digits>.png + label.csv
PNG_DIRS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
LABEL_FILE = "label.csv"
# The published vote files, by sha256 (docs/datasets.md#51-vote-file): which version a copy holds.
VOTE_VERSIONS = {
    "9206e20d62f56475939f516847d61753e4860caeac9718b560129541b776fc2c":
        ("fer2013new.csv", "the March 2017 votes (microsoft/FERPlus commit 8ad5426), the current ones"),
    "a82c40c825505cd30e139195c246bc38f8ac39de0e8968cbf15e1dab7837658c":
        ("FER2013Train/label.csv", "the November 2016 votes (microsoft/FERPlus commit f1a8cb2), the older ones"),
    "aad6298bed23cad816550362c2c00ae49b99513c7cae7d49651f347afd9ab860":
        ("FER2013Valid/label.csv", "the November 2016 votes (microsoft/FERPlus commit f1a8cb2), the older ones"),
    "425142295cc23872651271be9f45a99dac11af426f948d1b60967c8845b7bdf2":
        ("FER2013Test/label.csv", "the November 2016 votes (microsoft/FERPlus commit f1a8cb2), the older ones"),
}


@dataclass
class Row:
    """One vote row: where it is, its 0-based data row (fer2013new.csv) or -1, split, image name, the
    10 vote fields (None: a row already reported) and, in label.csv, its face box."""

    where: str
    row: int
    split: str
    name: str
    votes: list[str] | None
    box: tuple[int, int, int, int] | None = None


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
    """Per-split records; under `label_source` fer2013 or one_vote the training label is that source's
    and the FERPlus majority becomes the reference label every wrong-label analysis reads."""
    splits = {}
    for split in USAGE.values():
        mine = [it for it in items if it["split"] == split]
        noisy = {"fer2013": "fer2013_label", "one_vote": "one_vote"}.get(label_source) if split == "train" else None
        s = Split(ids=[it["id"] for it in mine],
                  label=[it[noisy] if noisy else it["label"] for it in mine],
                  sources=[it["source"] for it in mine], where=[it["where"] for it in mine],
                  boxes=[it["box"] for it in mine] if mine and mine[0].get("box") else None,
                  extras={k: np.array([it[k] for it in mine], dtype=np.int64).reshape(len(mine), *shape)
                          for k, shape in (("fer2013_label", ()), ("votes", (len(FERPLUS_COLUMNS),)))
                          if not mine or k in mine[0]})
        if mine and "soft" in mine[0]:
            s.soft_label = np.array([it["soft"] for it in mine], dtype=np.float32)
        if noisy:  # the reference label of every training image (noise.inject marks where the two disagree)
            s.extras["reference_label"] = np.array([it["label"] for it in mine], dtype=np.int64)
        splits[split] = s
    return splits


def scan_fer(cfg: DataConfig, problems: Problems) -> Scan:
    """FER2013 with its own `emotion` labels (protocol fer2013)."""
    root = Path(cfg.data_root)
    protocol = resolve_protocol("fer2013", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["fer2013"].to_index(classes)
    items = [{"id": f"fer2013_{r:05d}", "label": to_index[code], "source": PixelRow(px), "where": where,
              "split": USAGE[usage]}
             for r, (where, code, px, usage) in enumerate(scan_fer2013(root, problems)) if code >= 0]
    return Scan("fer2013", root, protocol, classes, "fer2013", _splits_from(items), {FER_FILE: root / FER_FILE},
                meta={"val_split": "PublicTest (not used)"})


def _layout(root: Path, cfg: DataConfig, problems: Problems) -> str:
    """`csv` (fer2013.csv's pixels) or `png` (the generator's folders), from `data.layout` or what is on disk."""
    if cfg.layout in ("csv", "png"):
        return cfg.layout
    if (root / FER_FILE).is_file():
        return "csv"
    if (root / PNG_DIRS["train"]).is_dir():
        return "png"
    problems.add(root, f"no FERPlus layout found: expected {FER_FILE} (+ {VOTE_FILE}, paired by row) or the folders "
                 f"{', '.join(d + '/' for d in PNG_DIRS.values())} that FERPlus's src/generate_training_data.py "
                 "writes (docs/datasets.md#54-the-generators-png-layout)")
    return ""


def _vote_path(root: Path, cfg: DataConfig) -> Path:
    """`data.ferplus_votes` (absolute, or relative to the working folder, else to the data root), or
    `fer2013new.csv` in the root."""
    if not cfg.ferplus_votes:
        return root / VOTE_FILE
    path = Path(cfg.ferplus_votes)
    return path if path.is_absolute() or path.exists() else root / path


def version_of(path: Path) -> tuple[str, str]:
    """(sha256, which published vote file it is) of a vote file."""
    digest = sha256_file(path)
    known = VOTE_VERSIONS.get(digest) or VOTE_VERSIONS.get(lf_sha256(path))  # a copy saved on Windows too
    return digest, (known or ("", "not a published version (edited, a subset, or a fixture)"))[1]


def _new_rows(path: Path, problems: Problems) -> list[Row]:
    """The rows of a fer2013new.csv-style vote file (a refused file gives none)."""
    if path.is_file():
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            if tuple(next(csv.reader(f), [])) == OLD_VOTE_HEADER:
                problems.add(f"{path}:1", "this is the 2016 fer2013new.csv without the 'Image name' column; fercore "
                             "reads the March 2017 file (docs/datasets.md#51-vote-file)")
                return []
    out = []
    for r, (where, rec) in enumerate(_rows(path, VOTE_HEADER, problems)):
        usage = None if rec is None else rec[0]
        if rec is not None and usage not in USAGE:
            problems.add(where, f"Usage {usage!r} is not one of {sorted(USAGE)}")
            rec = None
        out.append(Row(where, r, USAGE[usage] if rec else "", rec[1].strip() if rec else "",
                       rec[2:] if rec else None))
    return out


def _label_rows(root: Path, problems: Problems) -> list[Row]:
    """The rows of the generator layout's three `label.csv` files (no header: name, face box, 10 votes);
    the face box is kept in `Row.box`."""
    out = []
    for split, folder in PNG_DIRS.items():
        path = root / folder / LABEL_FILE
        if not path.is_file():
            problems.add(path, f"label file missing (and no {VOTE_FILE} in the data root: the votes come from one "
                         "or the other)")
            continue
        for line, text in read_lines(path, problems, allow_crlf=True):
            where = f"{path}:{line}"
            rec = next(csv.reader([text]))
            if len(rec) != 2 + len(FERPLUS_COLUMNS):
                problems.add(where, f"expected {2 + len(FERPLUS_COLUMNS)} columns (name, \"(x, y, w, h)\", "
                             f"{len(FERPLUS_COLUMNS)} votes), got {len(rec)}")
                out.append(Row(where, -1, split, rec[0].strip(), None))
                continue
            box = re.fullmatch(r"\(\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\s*\)", rec[1].strip())
            if box is None:
                problems.add(where, f"face box {rec[1]!r} is not \"(x, y, w, h)\"")
                out.append(Row(where, -1, split, rec[0].strip(), None))
                continue
            out.append(Row(where, -1, split, rec[0].strip(), rec[2:], tuple(int(b) for b in box.groups())))
    return out


def _counts(row: Row, problems: Problems) -> np.ndarray | None:
    """A row's 10 votes as counts, or None after naming the problem."""
    bad = [(c, x) for c, x in zip(FERPLUS_COLUMNS, row.votes) if not x.strip().isdigit()]
    if bad:
        problems.add(row.where, f"vote {bad[0][1]!r} in column {bad[0][0]} is not a count (a whole number >= 0)")
        return None
    v = np.array([int(x) for x in row.votes], dtype=np.int64)
    if not v.any():
        problems.add(row.where, f"all {len(v)} votes are zero")
        return None
    return v


def drawn_vote(emotion_votes: np.ndarray, seed: int, image_id: str) -> int:
    """One annotator's vote (an index into `emotion_votes`) drawn in proportion to the votes, from a
    generator seeded by `data.vote_seed` and the image id, so the draw does not depend on the layout,
    the row order or `data.n_train` `[ours]`."""
    rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
    return int(rng.choice(len(emotion_votes), p=emotion_votes / emotion_votes.sum()))


def _png_sources(root: Path, rows: list[Row], vote_file: Path | None, counts: dict,
                 problems: Problems) -> dict[int, Path]:
    """Row index -> PNG path in the generator layout, the rows coming from `vote_file` (a fer2013new.csv)
    or, when None, from the label.csv files. A listed PNG that is absent, a PNG no row lists and a name
    listed twice are problems; in fer2013new.csv a repeated name is the generator's own overwrite (the
    later row's pixels are in the file), so the earlier row is dropped and counted `overwritten`."""
    repeats_ok = vote_file is not None
    last = {}
    for i, row in enumerate(rows):
        if row.votes is None or not row.name:
            continue
        if row.name in last and not repeats_ok:
            problems.add(row.where, f"image {row.name} listed twice (first at {rows[last[row.name]].where})")
            continue
        last[row.name] = i
    listed = {split: {row.name for row in rows if row.name and row.split == split} for split in PNG_DIRS}
    out = {}
    for name, i in last.items():
        row = rows[i]
        path = root / PNG_DIRS[row.split] / name
        if not path.is_file():
            problems.add(row.where, f"image {path} listed but absent")
            continue
        out[i] = path
    if repeats_ok:
        counts["overwritten"] = sum(1 for i, row in enumerate(rows)
                                    if row.votes is not None and row.name and last[row.name] != i)
    for split, folder in PNG_DIRS.items():
        if require_dir(root / folder, problems, f"the generator's {folder}/"):
            for path in sorted((root / folder).glob("*.png")):
                if path.name not in listed[split]:
                    problems.add(path, f"PNG not listed in {folder}/{LABEL_FILE}" if vote_file is None else
                                 f"PNG not listed in {vote_file} (no row of Usage {USAGE_OF[split]} names it)")
    return out


def scan_plus(cfg: DataConfig, problems: Problems) -> Scan:
    """FERPlus in either layout (docs/datasets.md#5-ferplus): `fer2013.csv` pixels with the votes of
    `fer2013new.csv` paired row by row, or the PNG folders FERPlus's generator writes with the votes of
    `fer2013new.csv` (in the root, or `data.ferplus_votes`) else each folder's `label.csv`."""
    root = Path(cfg.data_root)
    protocol = resolve_protocol("ferplus", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["ferplus"].to_index(classes)
    fer2013_index = CODINGS["fer2013"].to_index(classes)
    head_cols = sorted(to_index, key=to_index.get)                 # the protocol's vote columns in head order
    emotion_cols = [FERPLUS_COLUMNS.index(c) for c in head_cols]
    layout = _layout(root, cfg, problems)
    vote_path = _vote_path(root, cfg)
    label_source = cfg.label_source
    if layout == "png" and label_source == "fer2013":
        problems.add(root, f"data.label_source=fer2013 needs FER2013's own labels, which are in {FER_FILE}; the PNG "
                     "layout has none (use the csv layout, or label_source ferplus or one_vote)")
        label_source = "ferplus"
    from_labels = layout == "png" and not vote_path.is_file() and not cfg.ferplus_votes
    rows = _label_rows(root, problems) if from_labels else _new_rows(vote_path, problems) if layout else []
    vote_files = ({f"{d}/{LABEL_FILE}": root / d / LABEL_FILE for d in PNG_DIRS.values()} if from_labels
                  else {vote_path.name: vote_path})
    sources: dict[int, object] = {}
    fer_codes: dict[int, int] = {}
    counts = {"no_image": 0, "no_emotion_votes": 0, "soft_only": 0}
    if layout == "csv":
        fer = scan_fer2013(root, problems)
        if fer and rows and len(fer) != len(rows):
            shorter = min((fer, FER_FILE), (rows, vote_path.name), key=lambda t: len(t[0]))
            problems.add(f"{root / shorter[1]}:{len(shorter[0]) + 2}", f"missing line: {vote_path.name} has "
                         f"{len(rows)} rows, {FER_FILE} {len(fer)}; the files pair row by row "
                         "(docs/datasets.md#52-pairing-with-fer2013-by-row-never-by-name)")
        for i, ((fwhere, code, px, usage), row) in enumerate(zip(fer, rows)):
            if row.votes is None or code < 0:
                continue
            if row.split != USAGE[usage]:
                problems.add(row.where, f"Usage of {row.split!r} differs from {usage!r} at {fwhere}: the files are "
                             "not paired")
                continue
            sources[i], fer_codes[i] = PixelRow(px), code
    elif layout == "png":
        sources = _png_sources(root, rows, None if from_labels else vote_path, counts, problems)
    if label_source == "fer2013":
        counts["fer2013_outside_protocol"] = 0
    last = {row.name: i for i, row in enumerate(rows) if row.votes is not None and row.name}
    items = []
    for i, row in enumerate(rows):
        if row.votes is None:
            continue
        if not row.name:
            counts["no_image"] += 1
            continue
        v = _counts(row, problems)
        if v is None or i not in sources:
            continue
        emo = v[emotion_cols].astype(float)
        if emo.sum() == 0:
            counts["no_emotion_votes"] += 1
            continue
        label = hard_label(v, cfg.ferplus_tie)
        if label is None or label not in to_index:
            counts["soft_only"] += 1
            continue
        unique = layout == "png" or last[row.name] == i  # csv: a name the generator overwrote keeps its row
        item = {"id": row.name if unique else f"{row.name}#{row.row}", "label": to_index[label],
                "source": sources[i], "where": row.where, "split": row.split, "votes": v, "soft": emo / emo.sum(),
                "box": row.box}
        if i in fer_codes:
            item["fer2013_label"] = fer2013_index.get(fer_codes[i], -1)
            if label_source == "fer2013" and row.split == "train" and item["fer2013_label"] < 0:
                counts["fer2013_outside_protocol"] += 1
                continue
        if cfg.label_source == "one_vote" and row.split == "train":
            item["one_vote"] = to_index[head_cols[drawn_vote(emo, cfg.vote_seed, item["id"])]]
        items.append(item)
    derived = "".join(f"{it['id']},{it['label']}\n" for it in items)
    per_split = {split: sum(1 for row in rows if row.votes is not None and row.split == split)
                 if layout == "csv" else len({row.name for row in rows if row.votes is not None and row.name
                                              and row.split == split}) for split in USAGE.values()}
    meta = {"layout": layout, "tie_rule": cfg.ferplus_tie, "label_source": cfg.label_source, "excluded": counts,
            ("vote_rows_per_split" if layout == "csv" else "png_rows_per_split"): per_split,
            "val_split": "PublicTest (not used)",
            "votes": {name: {"path": str(p), **dict(zip(("sha256", "version"), version_of(p)))}
                      for name, p in vote_files.items() if p.is_file()},
            "derived_labels_sha256": hashlib.sha256(derived.encode()).hexdigest()}
    train = [it for it in items if it["split"] == "train"]
    if cfg.label_source == "one_vote":
        meta["vote_seed"] = cfg.vote_seed
        meta["train_one_vote_differs"] = _share(sum(it["one_vote"] != it["label"] for it in train), len(train))
    if layout == "csv":
        meta["train_fer2013_disagrees"] = _share(sum(it["fer2013_label"] != it["label"] for it in train), len(train))
    files = {FER_FILE: root / FER_FILE} if layout == "csv" else {}
    return Scan("ferplus", root, protocol, classes, "ferplus", _splits_from(items, label_source),
                {**files, **vote_files}, meta=meta)


def _share(k: int, n: int) -> dict:
    return {"images": k, "of": n, "share": round(k / max(n, 1), 4)}
