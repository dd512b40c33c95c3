"""The data doctor (docs/datasets.md#10-the-data-doctors-checklist, docs/baselines.md#r3-a-data-doctor): validate a
dataset copy on disk and report,
without stopping at the first problem, what fercore will read from it.

`check(cfg)` runs the reader's own scan with a collecting `Problems`, then reports: every problem
with its file and line; per-class counts per split against the published counts; the label
mapping of the active protocol; label-file sha256 (raw and LF-normalised) against the published
hashes; RAF-DB's EAC noise files; image sizes and modes of a decoded sample; and dataset facts
(FERPlus tie rule and derived-label hash, CK+ folds, dropped AffectNet codes, skipped frames); and
the auxiliary targets: per split, how many images have AU and valence-arousal targets, the reader's
own and after the side files (`data.au_file`, `data.va_file`, docs/datasets.md#side-files), whose
problems are listed with the others.
`python -m fercore data check --dataset NAME --data-root PATH` prints it and exits 1 on problems.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..files import lf_sha256, normalised_sha256, sha256_file
from .classes import CODINGS, PROTOCOL_CODING, mapping_table
from .noise import EAC_NOISE
from .readers import SCANNERS
from .readers.decode import open_rgb
from .readers.ferplus import VOTE_VERSIONS
from .readers.rafdb import parse_name_code
from .readers.toolkit import PixelRow, Problems, Scan
from .sidefiles import Targets, apply_to_scan, coverage_lines, merge

# Published per-class counts by raw code (docs/datasets.md#22-class-counts, docs/datasets.md#4-fer2013,
# docs/datasets.md#33-protocols-and-sizes).
PUBLISHED_COUNTS = {
    "rafdb": {"train": {1: 1290, 2: 281, 3: 717, 4: 4772, 5: 1982, 6: 705, 7: 2524},
              "test": {1: 329, 2: 74, 3: 160, 4: 1185, 5: 478, 6: 162, 7: 680}},
    "fer2013": {"train": {0: 3995, 1: 436, 2: 4097, 3: 7215, 4: 4830, 5: 3171, 6: 4965},
                "val": {0: 467, 1: 56, 2: 496, 3: 895, 4: 653, 5: 415, 6: 607},
                "test": {0: 491, 1: 55, 2: 528, 3: 879, 4: 594, 5: 416, 6: 626}},
}
PUBLISHED_SIZES = {"affectnet7": {"train": 283901, "test": 3500}, "affectnet8": {"train": 287651, "test": 3999}}
# FERPlus pairs FER2013 row by row: its vote file has FER2013's published rows per Usage
# (docs/datasets.md#4-fer2013); the hard-labelled images are fewer (docs/datasets.md#53-deriving-labels).
PUBLISHED_ROWS = {"ferplus": {"train": 28709, "val": 3589, "test": 3589}}
# The generator's PNG layout holds one PNG per distinct image name (docs/datasets.md#54-the-generators-png-layout).
PUBLISHED_PNG_ROWS = {"ferplus": {"train": 28558, "val": 3579, "test": 3573}}
# Published label-file hashes (docs/datasets.md#21-layout,
# docs/datasets.md#23-synthetic-noise-label-files-in-circulation, docs/datasets.md#51-vote-file), by file name.
KNOWN_SHA256 = {
    "list_patition_label.txt": "3890ab2daf1f2cf8b642197be016e643895faa8295dd83620d0a6a535fa0c1c3",
    **{name: sha for sha, (name, _) in VOTE_VERSIONS.items()},  # fer2013new.csv and the 2016 label.csv files
    **{Path(f).name: sha for f, sha in EAC_NOISE.values()},
}


def published_counts(dataset: str, protocol: str) -> dict[str, dict[str, int]]:
    """split -> canonical class name -> published count, mapped through the dataset's coding."""
    coding = CODINGS[PROTOCOL_CODING[protocol]] if protocol in PROTOCOL_CODING else None
    table = PUBLISHED_COUNTS.get(dataset, {})
    return {split: {coding.codes[raw]: n for raw, n in counts.items()} for split, counts in table.items()} \
        if coding is not None else {}


@dataclass
class Report:
    """What the doctor found; `text()` is what the CLI prints."""

    dataset: str
    root: str
    protocol: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: pd.DataFrame | None = None
    mapping: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    images: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)     # split -> images with AU / VA targets (and side-file use)
    side_files: dict | None = None                   # what the side files were and what they added

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        out = [f"fercore data check: {self.dataset} at {self.root} (protocol {self.protocol or '?'})"]
        if self.mapping:
            out.append("label mapping (raw code -> canonical class -> head index):")
            out += [f"  {r['raw']!s:>10} -> {r['canonical']:<22} -> {'-' if r['head'] is None else r['head']}"
                    for r in self.mapping]
        if self.counts is not None:
            out.append("images per class and split (published counts in parentheses where known):")
            out += ["  " + line for line in self.counts.to_string().splitlines()]
        if self.files:
            out.append("label files (sha256 raw / LF-normalised without final newline):")
            for f in self.files:
                out.append(f"  {f['name']}: {f['sha256'][:16]} / {f['sha256_lf'][:16]}  {f['verdict']}")
        for split, stats in self.images.items():
            out.append(f"images ({split}): " + ", ".join(f"{k}: {v}" for k, v in stats.items()))
        for k, v in self.facts.items():
            out.append(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
        if self.side_files:
            out += coverage_lines(self.side_files)
        elif self.coverage:
            out.append("auxiliary targets (no side files): " + "; ".join(
                f"{split}: AU {c['au_after']} / VA {c['va_after']} of {c['images']} images"
                for split, c in self.coverage.items()))
        for w in self.warnings:
            out.append(f"warning: {w}")
        out.append(f"problems ({len(self.problems)}):" if self.problems else "problems: none")
        out += [f"  {p}" for p in self.problems]
        out.append("result: OK" if self.ok else f"result: {len(self.problems)} problem(s)")
        return "\n".join(out)


def _file_verdict(name: str, path: Path) -> dict:
    raw, lf = sha256_file(path), normalised_sha256(path)
    known = KNOWN_SHA256.get(name)
    if known is None:
        verdict = "(no published hash)"
    elif raw == known:
        verdict = "matches the published file"
    elif known in (lf, lf_sha256(path)):
        verdict = "matches the published file after normalising line endings"
    else:
        verdict = "DIFFERS from the published file"
    return {"name": name, "path": str(path), "sha256": raw, "sha256_lf": lf, "verdict": verdict}


def _counts(scan: Scan, report: Report) -> pd.DataFrame:
    published = published_counts(scan.dataset, scan.protocol)
    rows = {}
    for split, s in scan.splits.items():
        got = Counter(scan.classes[k] for k in s.label)
        pub = published.get(split, {})
        row = {c: f"{got.get(c, 0)}" + (f" ({pub[c]})" if c in pub else "") for c in scan.classes}
        total_pub = sum(pub.values()) if pub else PUBLISHED_SIZES.get(scan.dataset, {}).get(split)
        row["total"] = f"{len(s)}" + (f" ({total_pub})" if total_pub else "")
        rows[split] = row
        if pub and any(got.get(c, 0) != pub.get(c, 0) for c in scan.classes) or total_pub and total_pub != len(s):
            report.warnings.append(f"{split}: counts differ from the published counts (a subset, a fixture, "
                                   "or a damaged copy)")
    return pd.DataFrame.from_dict(rows, orient="index")


def _noise_files(scan: Scan, report: Report) -> None:
    """EAC's RAF-DB noise files next to the clean label file: hash, rows and realised rate."""
    train = scan.splits["train"]
    clean = dict(zip(train.ids, train.label))
    to_index = CODINGS["rafdb"].to_index(scan.classes)
    facts = {}
    for spec, (rel, _) in EAC_NOISE.items():
        path = scan.root / rel
        if not path.is_file():
            facts[spec] = "absent"
            continue
        report.files.append(_file_verdict(path.name, path))
        problems = Problems(strict=False)
        rows = parse_name_code(path, problems, to_index)
        report.problems += problems.items
        if len(rows) != len(train):
            report.problems.append(f"{path}: {len(rows)} label lines, the clean file has {len(train)} training rows")
        flipped = sum(1 for _, name, raw in rows if name in clean and to_index[raw] != clean[name])
        facts[spec] = f"{len(rows)} rows, {flipped} flipped ({flipped / max(len(rows), 1):.2%})"
    report.facts["EAC noise files"] = facts


def _images(scan: Scan, report: Report, n: int) -> None:
    """Decode every image of every split as training does (`decode.open_rgb`: the face-box crop,
    16-bit, palette and transparency, the size limits), with a progress bar; an image that fails is
    a problem naming the file and the line that listed it. With `n >= 0`, only `n` evenly spaced
    images per split, and a warning says that the rest were not checked. Counts sizes and modes."""
    jobs, picked_of = [], {}
    for split, s in scan.splits.items():
        boxes = s.boxes or [None] * len(s)
        files = [(src, where, box) for src, where, box in zip(s.sources, s.where, boxes) if isinstance(src, Path)]
        if not files:
            if s.sources and isinstance(s.sources[0], PixelRow):
                report.images[split] = {"48x48 L (pixels in the csv)": len(s)}
            continue
        step = 1 if n < 0 or n >= len(files) else len(files) / max(n, 1)
        picked = [files[int(i * step)] for i in range(len(files) if step == 1 else n)]
        picked_of[split] = (len(picked), len(files))
        jobs += [(split, *f) for f in picked]

    def one(job):
        split, src, where, box = job
        try:
            im, mode = open_rgb(src, box)
            return split, f"{im.width}x{im.height} {mode}", None
        except DataError as e:
            return split, None, f"{e}, listed at {where}" if where != str(src) else str(e)

    stats: dict[str, Counter] = {split: Counter() for split in picked_of}
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for split, key, problem in tqdm(pool.map(one, jobs), total=len(jobs), desc="data check: decoding images",
                                        unit="img", leave=False, disable=None):
            if problem is not None:
                report.problems.append(problem)
            else:
                stats[split][key] += 1
    for split, (k, total) in picked_of.items():
        report.images[split] = dict(stats[split].most_common())
        if k < total:
            report.warnings.append(f"{split}: decoded {k} of {total} images (a sample: --decode {n}); training "
                                   f"decodes every one and stops at the first that fails: omit --decode to check all")


def _coverage(scan: Scan, cfg: DataConfig, report: Report) -> None:
    """Images with AU / VA targets per split, the reader's own and after the side files; the side
    files' problems (unknown ids, bad values, ...) join the report's."""
    problems = Problems(strict=False)
    before = {name: merge(Targets(list(s.ids), s.au, s.au_mask, scan.au_names, s.va, s.va_mask), [], cfg.side_merge)[1]
              for name, s in scan.splits.items()}
    info = apply_to_scan(scan, cfg, problems)
    report.problems += problems.items
    report.coverage = info["coverage"] if info else before
    report.side_files = info
    if info:
        report.files += [_file_verdict(f"{kind}_file {Path(f['path']).name}", Path(f["path"]))
                         for kind, f in info["files"].items()]


def check(cfg: DataConfig, decode: int = -1) -> Report:
    """Validate `cfg.dataset` at `cfg.data_root`, decoding every image (`decode` >= 0: that many per
    split, a sample the report says is one)."""
    report = Report(cfg.dataset, cfg.data_root)
    if cfg.dataset not in SCANNERS:
        report.problems.append(f"data.dataset: {cfg.dataset!r} has no reader; expected one of {sorted(SCANNERS)}")
        return report
    root = Path(cfg.data_root)
    if not root.is_dir():
        report.problems.append(f"{root}: data root folder missing")
        return report
    problems = Problems(strict=False)
    try:
        scan = SCANNERS[cfg.dataset](cfg, problems)
    except (ConfigError, DataError) as e:
        report.problems.append(str(e))
        return report
    report.problems += problems.items
    report.protocol = scan.protocol
    if scan.protocol in PROTOCOL_CODING:
        report.mapping = mapping_table(scan.protocol)
    report.counts = _counts(scan, report)
    report.files += [_file_verdict(name, p) for name, p in scan.files.items() if p.is_file()]
    if scan.dataset == "rafdb":
        _noise_files(scan, report)
    _images(scan, report, decode)
    _coverage(scan, cfg, report)
    report.facts.update({k: v for k, v in scan.meta.items()
                         if k not in ("folds", "vote_rows_per_split", "png_rows_per_split", "side_files", "votes")})
    for name, vote in scan.meta.get("votes", {}).items():
        report.facts[f"votes read from {name}"] = f"{vote['version']}; sha256 {vote['sha256']}"
    for key, what, table in (("vote_rows_per_split", "vote rows", PUBLISHED_ROWS),
                             ("png_rows_per_split", "PNG rows", PUBLISHED_PNG_ROWS)):
        if key in scan.meta and scan.dataset in table:
            got, pub = scan.meta[key], table[scan.dataset]
            report.facts[f"{what} per split (published)"] = {k: f"{got.get(k, 0)} ({n})" for k, n in pub.items()}
            if any(got.get(k, 0) != n for k, n in pub.items()):
                report.warnings.append(f"{what} per split differ from the published sizes (a subset, a fixture, or "
                                       "a damaged copy)")
    if "folds" in scan.meta:
        folds = Counter(scan.meta["folds"].values())
        report.facts["subjects per fold"] = {str(k): folds[k] for k in sorted(folds)}
        overlap = {str(x) for x in scan.splits["train"].extras["subject"]} & \
            {str(x) for x in scan.splits["test"].extras["subject"]}
        report.facts["subjects in both splits"] = len(overlap)
        if overlap:
            report.problems.append(f"subjects {sorted(overlap)} are in both the train and the test split")
    return report
