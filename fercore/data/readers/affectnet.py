"""AffectNet (docs/datasets.md#3-affectnet), both distributions; the dataset name picks the protocol (affectnet7 keeps
codes 0..6, affectnet8 0..7); codes 8-10 (None, Uncertain, No-Face) are dropped and counted.

* `csv`: the original release, `Manually_Annotated_file_lists/{training,validation}.csv` with header
  `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal`,
  images under `Manually_Annotated_Images/`. With `crop_face` the face box is cut out before resizing
  `[lineage: peers crop with the CSV face box]`; the 68 `x;y` landmarks become fercore's 5 points.
* `npy`: the re-packaged release of DAN/POSTER, `{train_set,val_set}/images/<id>.jpg` with
  `annotations/<id>_{exp,val,aro,lnd}.npy`.

Valence/arousal -2 is the non-face sentinel: such samples keep their expression but `va_mask` 0.
Train = training / train_set, test = validation / val_set (the official evaluation set).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..classes import CODINGS, protocol_classes
from ..landmarks import five_point
from .toolkit import Problems, Scan, Split, check_images_exist, inside_root, require_dir, say_bom

CSV_DIR = "Manually_Annotated_file_lists"
CSV_IMAGES = "Manually_Annotated_Images"
CSV_FILES = {"train": "training.csv", "test": "validation.csv"}
HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal")
NPY_DIRS = {"train": "train_set", "test": "val_set"}
VA_SENTINEL = -2.0


def _landmarks(text: str) -> np.ndarray | None:
    try:
        values = [float(v) for v in text.replace(",", ";").split(";") if v.strip()]
    except ValueError:
        return None
    return five_point(np.array(values).reshape(68, 2)) if len(values) == 136 else None


class _Rows:
    """Accumulates kept samples and counts the dropped ones."""

    def __init__(self, to_index: dict) -> None:
        self.to_index = to_index
        self.cols: dict[str, list] = {k: [] for k in ("ids", "label", "sources", "where", "boxes", "lm", "va",
                                                      "va_mask")}
        self.dropped: dict[str, int] = {}

    def add(self, code: int, **values) -> None:
        if code not in self.to_index:
            coding = CODINGS["affectnet"]
            why = coding.excluded[code] if code in coding.excluded else f"{coding.codes[code]} (not in protocol)"
            self.dropped[why] = self.dropped.get(why, 0) + 1
            return
        values["label"] = self.to_index[code]
        for k, v in values.items():
            self.cols[k].append(v)

    def split(self, with_boxes: bool) -> Split:
        c = self.cols
        va = np.array(c["va"], dtype=np.float32).reshape(-1, 2)
        return Split(ids=c["ids"], label=c["label"], sources=c["sources"], where=c["where"],
                     boxes=c["boxes"] if with_boxes else None,
                     landmarks=np.array(c["lm"], dtype=np.float32).reshape(-1, 5, 2), va=va,
                     va_mask=np.array(c["va_mask"], dtype=np.float32))


def _code(text: str) -> int | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return (int(v) if v.is_integer()
            and int(v) in CODINGS["affectnet"].codes.keys() | CODINGS["affectnet"].excluded.keys() else None)


def scan_csv(root: Path, to_index: dict, crop: bool, problems: Problems) -> tuple[dict, dict, dict]:
    splits, files, dropped = {}, {}, {}
    require_dir(root / CSV_IMAGES, problems, "AffectNet images")
    for split, fname in CSV_FILES.items():
        path = root / CSV_DIR / fname
        files[fname] = path
        rows = _Rows(to_index)
        if not path.is_file():
            problems.add(path, "label file missing")
            splits[split] = rows.split(crop)
            continue
        with open(path, newline="", encoding="utf-8-sig") as f:  # CSV: LF or CRLF rows both valid
            reader = csv.reader(f)
            header = tuple(next(reader, ()))
            say_bom(path)
            if header != HEADER:
                problems.add(f"{path}:1", f"header {','.join(header)!r} differs from {','.join(HEADER)!r}")
                splits[split] = rows.split(crop)
                continue
            for rec in reader:
                where = f"{path}:{reader.line_num}"
                if len(rec) != len(HEADER):
                    problems.add(where, f"expected {len(HEADER)} columns, got {len(rec)}")
                    continue
                rel, bx, by, bw, bh, lm_text, code, val, aro = rec
                source = inside_root(root / CSV_IMAGES, rel, where, problems)
                if source is None:
                    continue
                c = _code(code)
                if c is None:
                    problems.add(where, f"expression {code!r} out of range 0..10")
                    continue
                try:
                    box = tuple(int(float(v)) for v in (bx, by, bw, bh))
                    v, a = float(val), float(aro)
                except ValueError:
                    problems.add(where, "face box, valence or arousal is not a number")
                    continue
                lm = _landmarks(lm_text)
                if lm is None:
                    problems.add(where, "facial_landmarks must hold 68 'x;y' pairs")
                    continue
                if crop:
                    lm = lm - np.array(box[:2], dtype=np.float64)
                masked = v == VA_SENTINEL or a == VA_SENTINEL
                if not masked and not (-1 <= v <= 1 and -1 <= a <= 1):
                    problems.add(where, f"valence/arousal ({v}, {a}) outside [-1, 1] and not the -2 sentinel")
                    continue
                rows.add(c, ids=rel, sources=source, where=where, boxes=box, lm=lm,
                         va=(0.0, 0.0) if masked else (v, a), va_mask=0.0 if masked else 1.0)
        splits[split] = rows.split(crop)
        dropped[split] = rows.dropped
    return splits, files, dropped


def _npy_value(path: Path, problems: Problems):
    if not path.is_file():
        problems.add(path, "annotation file missing")
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        problems.add(path, f"not a readable .npy file ({str(e).splitlines()[0]})")
        return None
    return arr


def scan_npy(root: Path, to_index: dict, problems: Problems) -> tuple[dict, dict, dict]:
    splits, dropped = {}, {}
    for split, d in NPY_DIRS.items():
        rows = _Rows(to_index)
        img_dir, ann = root / d / "images", root / d / "annotations"
        if require_dir(img_dir, problems, "AffectNet npy images") and require_dir(ann, problems, "annotations"):
            images = sorted((p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                            key=lambda p: (len(p.stem), p.stem))
            for img in images:
                vals = {k: _npy_value(ann / f"{img.stem}_{k}.npy", problems) for k in ("exp", "val", "aro", "lnd")}
                if any(v is None for v in vals.values()):
                    continue
                where = str(ann / f"{img.stem}_exp.npy")
                c = _code(str(vals["exp"].reshape(-1)[0]))
                if c is None:
                    problems.add(where, f"expression {vals['exp']!r} out of range 0..10")
                    continue
                try:
                    v, a = float(vals["val"].reshape(-1)[0]), float(vals["aro"].reshape(-1)[0])
                    lnd = vals["lnd"].reshape(-1)
                    lm = _landmarks(str(lnd[0])) if lnd.dtype.kind in "US" else five_point(
                        lnd.astype(np.float64).reshape(68, 2))
                except ValueError:
                    lm = None
                if lm is None:
                    problems.add(ann / f"{img.stem}_lnd.npy", "landmarks must be 68 (x, y) pairs; val/aro numbers")
                    continue
                masked = v == VA_SENTINEL or a == VA_SENTINEL
                rows.add(c, ids=f"{d}/{img.name}", sources=img, where=where, boxes=None, lm=lm,
                         va=(0.0, 0.0) if masked else (v, a), va_mask=0.0 if masked else 1.0)
        splits[split] = rows.split(False)
        dropped[split] = rows.dropped
    return splits, {}, dropped


def scan(cfg: DataConfig, problems: Problems, protocol: str) -> Scan:
    root = Path(cfg.data_root)
    if cfg.protocol and cfg.protocol != protocol:
        problems.add("data.protocol", f"dataset {cfg.dataset!r} implies protocol {protocol!r}, got {cfg.protocol!r}")
    classes = protocol_classes(protocol)
    to_index = CODINGS["affectnet"].to_index(classes)
    layout = cfg.layout
    if layout == "auto":
        layout = "csv" if (root / CSV_DIR).is_dir() else "npy" if (root / NPY_DIRS["train"]).is_dir() else ""
    if layout == "csv":
        splits, files, dropped = scan_csv(root, to_index, cfg.crop_face, problems)
    elif layout == "npy":
        splits, files, dropped = scan_npy(root, to_index, problems)
    else:
        problems.add(root, f"no AffectNet layout found (expected {CSV_DIR}/ or {NPY_DIRS['train']}/), "
                     f"data.layout={cfg.layout!r}")
        splits, files, dropped = {"train": _Rows(to_index).split(False), "test": _Rows(to_index).split(False)}, {}, {}
    splits = {k: check_images_exist(s, problems) for k, s in splits.items()}
    return Scan(cfg.dataset, root, protocol, classes, "affectnet", splits, files,
                meta={"layout": layout, "dropped": dropped, "crop_face": cfg.crop_face and layout == "csv"})
