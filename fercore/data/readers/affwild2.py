"""AffWild2, ABAW challenge release (docs/datasets.md#7-affwild2-abaw-challenge-release): frame-level EXPR, 12 AUs
and VA per video.

`[ours, reconstruction]` The exact ABAW file layout, headers, codes and markers are not in our
docs; this reader encodes the commonly used ones explicitly and **fails on any other header**,
so a real copy that differs is caught, not silently permuted (verify on a real copy):
* frames `cropped_aligned/<video>/<frame:05d>.jpg` (1-based frame numbers);
* annotations `annotations/<TASK_DIR>/{Train_Set,Validation_Set}/<video>.txt`, a header line, then
  line k (k >= 1) is frame k;
* EXPR header `EXPR_HEADER`, codes 0..7 (classes.CODINGS['affwild2_expr']), -1 = unannotated;
* AU header `AU_HEADER` (the 12 ABAW AUs), values 0/1, -1 = unannotated (masked per AU);
* VA header `valence,arousal`, values in [-1, 1], -5 = unannotated (masked).
Samples are the frames with an EXPR label and a cropped image (frames without a face crop are
normal in ABAW and only counted); AU and VA are attached where annotated. Train = Train_Set,
test = Validation_Set (test labels are hidden, papers report validation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import DataConfig
from ..classes import CODINGS, protocol_classes, resolve_protocol
from .toolkit import Problems, Scan, Split, read_lines, require_dir

IMAGE_DIR = "cropped_aligned"
ANNOTATION_DIR = "annotations"
TASK_DIRS = {"expr": "EXPR_Classification_Challenge", "au": "AU_Detection_Challenge", "va": "VA_Estimation_Challenge"}
SPLIT_DIRS = {"train": "Train_Set", "test": "Validation_Set"}
EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
AU_HEADER = ",".join(AU_NAMES)
VA_HEADER = "valence,arousal"
EXPR_INVALID, AU_INVALID, VA_INVALID = -1, -1, -5.0


def _task_file(path: Path, header: str, problems: Problems) -> list[tuple[str, list[str]]]:
    """(where, comma-separated fields) of frames 1..n of one annotation file."""
    lines = read_lines(path, problems, allow_crlf=True)
    if not lines:
        return []
    if lines[0][0] != 1 or lines[0][1].strip() != header:
        problems.add(f"{path}:1", f"header {lines[0][1]!r} differs from the expected {header!r} "
                     "(fercore's ABAW mapping is a reconstruction: check the release's documentation)")
        return []
    return [(f"{path}:{i}", text.split(",")) for i, text in lines[1:]]


def _read_au(path: Path, problems: Problems) -> dict[int, tuple[list[float], list[float]]]:
    out = {}
    for frame, (where, vals) in enumerate(_task_file(path, AU_HEADER, problems), 1):
        if len(vals) != len(AU_NAMES) or any(v.strip() not in ("0", "1", "-1") for v in vals):
            problems.add(where, f"expected {len(AU_NAMES)} values in {{0, 1, -1}}, got {','.join(vals)!r}")
            continue
        codes = [int(v) for v in vals]
        out[frame] = ([float(c == 1) for c in codes], [float(c != AU_INVALID) for c in codes])
    return out


def _read_va(path: Path, problems: Problems) -> dict[int, tuple[float, float]]:
    out = {}
    for frame, (where, vals) in enumerate(_task_file(path, VA_HEADER, problems), 1):
        try:
            v, a = (float(x) for x in vals)
        except ValueError:
            problems.add(where, f"expected 'valence,arousal' numbers, got {','.join(vals)!r}")
            continue
        if v == VA_INVALID or a == VA_INVALID:
            continue
        if not (-1 <= v <= 1 and -1 <= a <= 1):
            problems.add(where, f"valence/arousal ({v}, {a}) outside [-1, 1] and not the -5 marker")
            continue
        out[frame] = (v, a)
    return out


def scan(cfg: DataConfig, problems: Problems) -> Scan:
    root = Path(cfg.data_root)
    protocol = resolve_protocol("affwild2", cfg.protocol)
    classes = protocol_classes(protocol)
    to_index = CODINGS["affwild2_expr"].to_index(classes)
    require_dir(root / IMAGE_DIR, problems, "ABAW cropped-aligned frames")
    splits, files, counts = {}, {}, {}
    for split, sdir in SPLIT_DIRS.items():
        expr_dir = root / ANNOTATION_DIR / TASK_DIRS["expr"] / sdir
        cols = {k: [] for k in ("ids", "label", "sources", "where", "au", "au_mask", "va", "va_mask")}
        n = {"unannotated": 0, "no_image": 0}
        if require_dir(expr_dir, problems, f"EXPR annotations, {sdir}"):
            for ann in sorted(expr_dir.glob("*.txt")):
                video = ann.stem
                files[f"{TASK_DIRS['expr']}/{sdir}/{ann.name}"] = ann
                au_path = root / ANNOTATION_DIR / TASK_DIRS["au"] / sdir / ann.name
                au = _read_au(au_path, problems) if au_path.is_file() else {}
                va_path = root / ANNOTATION_DIR / TASK_DIRS["va"] / sdir / ann.name
                va = _read_va(va_path, problems) if va_path.is_file() else {}
                for frame, (where, vals) in enumerate(_task_file(ann, EXPR_HEADER, problems), 1):
                    code = vals[0].strip() if len(vals) == 1 else ""
                    if not code.lstrip("-").isdigit() or int(code) not in to_index and int(code) != EXPR_INVALID:
                        problems.add(where, f"EXPR code {','.join(vals)!r} out of range; expected -1..7")
                        continue
                    if int(code) == EXPR_INVALID:
                        n["unannotated"] += 1
                        continue
                    img = root / IMAGE_DIR / video / f"{frame:05d}.jpg"
                    if not img.is_file():
                        n["no_image"] += 1
                        continue
                    a, am = au.get(frame, ([0.0] * len(AU_NAMES), [0.0] * len(AU_NAMES)))
                    for k, v in (("ids", f"{video}/{frame:05d}"), ("label", to_index[int(code)]), ("sources", img),
                                 ("where", where), ("au", a), ("au_mask", am), ("va", va.get(frame, (0.0, 0.0))),
                                 ("va_mask", float(frame in va))):
                        cols[k].append(v)
        f32 = lambda k, shape, cols=cols: np.array(cols[k], dtype=np.float32).reshape(-1, *shape)  # noqa: E731
        splits[split] = Split(ids=cols["ids"], label=cols["label"], sources=cols["sources"], where=cols["where"],
                              au=f32("au", (len(AU_NAMES),)), au_mask=f32("au_mask", (len(AU_NAMES),)),
                              va=f32("va", (2,)), va_mask=f32("va_mask", ()))
        counts[split] = n
    return Scan("affwild2", root, protocol, classes, "affwild2_expr", splits, files,
                meta={"frames_skipped": counts}, au_names=list(AU_NAMES))
