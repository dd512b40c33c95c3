"""Side files: action-unit and valence-arousal targets for any dataset, keyed by the reader's sample
id (docs/datasets.md#side-files).

MTAC's auxiliary tasks and POI's optional AU supervision need AU / VA targets that RAF-DB, FERPlus,
FER2013 and most AffectNet copies do not have. The usual practice is pseudo-labels from a model
trained where such labels exist, kept with a per-sample mask; `data.au_file` and `data.va_file`
bring them (or any other AU / VA table: CK+ FACS codes, DISFA intensities, OpenFace output) to
every reader. `fercore pseudo-label` writes such files from a run.

Format `[ours]`: a UTF-8 CSV with a header row, read with the reader toolkit (`read_csv`), so every
problem is one line naming the file and line.

* key: a column `id` holding the reader's sample id (the table in the docs page above); for
  `ckplus` also `sequence` (`S005_001`: every frame of the sequence), or `subject` + `sequence`
  columns (`S005` or `5`, and `001` or `1`), as FACS tables are kept per sequence;
* AU columns (AU file): `AU<n>` in any case and with any leading zeros (`AU1`, `au01`), holding 0/1
  or an occurrence probability in [0, 1] (a soft BCE target); OpenFace's `AU<n>_c` (0/1) and
  `AU<n>_r` (FACS intensity 0-5, present when >= `INTENSITY_PRESENT`), `_c` winning over `_r`;
* VA columns (VA file): `valence` and `arousal`, each in [-1, 1];
* confidence: `au_confidence` / `va_confidence` (or `confidence`, for either) in [0, 1]; a row below
  `data.side_min_confidence` gets mask 0;
* an empty cell is an unannotated entry (mask 0); a sample without a row gets mask 0;
* any other column (subject, emotion, frame, ...) is ignored and listed in the coverage;
* refused, naming the file and line: a key that is no sample of the dataset (checked against the
  whole layout, before `data.n_train`/`n_test` subsampling), a key given twice, a row with another
  number of columns than the header, a value that is not a number or is out of range, a header
  without a key column or without AU (VA) columns, an AU given by two columns.

Merge rule (`data.side_merge`) `[ours]`: the AU columns are the reader's own followed by the side
file's new names. `fill` (default): a reader's own annotated entry always wins, the side file fills
entries the reader has no target for, and side entries that were not used are counted
(`ignored_own`), never dropped silently; `replace`: a side-file entry replaces the reader's. The
result's `coverage` (per split: images with AU / VA targets before and after, entries filled,
ignored or replaced) is kept in `meta['side_files']`, with each file's sha256 (part of the data
fingerprint, so a changed side file is never mistaken for the data an earlier run used).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..files import sha256_file
from .faceset import FaceSet
from .readers.ckplus import sequence_of
from .readers.toolkit import Problems, Scan, read_csv

# FACS intensity from which an `AU<n>_r` column counts as present [lineage: DISFA occurrence protocol of
# DRML / JAA-Net: intensity >= 2 (B) is an occurrence]
INTENSITY_PRESENT = 2.0
AU_COLUMN = re.compile(r"au0*(\d+)(_c|_r)?", re.IGNORECASE)
KINDS = {"au": ("data.au_file", "AU side file"), "va": ("data.va_file", "VA side file")}
SEQUENCE = re.compile(r"S\d{3}_\d{3}")


def au_column(name: str) -> tuple[str, str] | None:
    """(canonical AU name `AU<n>`, kind '' | '_c' | '_r') of an AU column name, or None."""
    m = AU_COLUMN.fullmatch(name.strip())
    return (f"AU{int(m[1])}", (m[2] or "").lower()) if m else None


def canonical_au(name: str) -> str | None:
    """`AU<n>` for any spelling of an AU name (`au01`, `AU1_c`), or None if it names no AU."""
    got = au_column(name)
    return got[0] if got else None


@dataclass
class SideTable:
    """One parsed side file: per key, the values and which of them are annotated."""

    kind: str                               # au | va
    path: Path
    key: str                                # id | sequence
    names: list[str]                        # AU names (au), ["valence", "arousal"] (va)
    rows: dict[str, tuple[np.ndarray, np.ndarray, str]] = field(default_factory=dict)  # key -> values, mask, where
    ignored_columns: list[str] = field(default_factory=list)
    below_confidence: int = 0
    sha256: str = ""


def _number(text: str, where: str, column: str, lo: float, hi: float, problems: Problems,
            hint: str = "") -> float | None:
    try:
        v = float(text)
    except ValueError:
        problems.add(where, f"{column} value {text!r} is not a number")
        return None
    if not (lo <= v <= hi):  # NaN fails too
        problems.add(where, f"{column} value {text!r} is outside [{lo:g}, {hi:g}]{hint}")
        return None
    return v


def _range_hint(column: str, sub: str, text: str) -> str:
    """What to do with an AU occurrence column holding a FACS intensity (CK+ codes 1-5, DISFA 0-5)."""
    try:
        intensity = sub == "" and 1 < float(text) <= 5
    except ValueError:
        return ""
    return (f" (a FACS intensity 0-5? name the column {canonical_au(column)}_r: present from "
            f"{INTENSITY_PRESENT:g} on)") if intensity else ""


def _key_columns(header: list[str], dataset: str) -> tuple[str, list[int]] | None:
    """(key kind, column indices) of a header: `id`, or for CK+ `sequence` or `subject` + `sequence`."""
    low = [h.lower() for h in header]
    if "id" in low:
        return "id", [low.index("id")]
    if dataset == "ckplus" and "sequence" in low:
        return "sequence", ([low.index("subject"), low.index("sequence")] if "subject" in low
                            else [low.index("sequence")])
    return None


def _sequence_key(fields: list[str]) -> str | None:
    """`S005_001` from one field (`S005_001`) or from subject and sequence (`S005`/`5`, `001`/`1`)."""
    full = [f for f in fields if SEQUENCE.fullmatch(f)]
    if full or len(fields) == 1:
        return full[-1] if full else None
    subject, seq = (f.strip() for f in fields)
    subject = subject[1:] if subject[:1] in ("S", "s") else subject
    if not (subject.isdigit() and seq.isdigit()):
        return None
    return f"S{int(subject):03d}_{int(seq):03d}"


def read_side_file(path: str | Path, kind: str, dataset: str, problems: Problems,
                   min_confidence: float = 0.0) -> SideTable | None:
    """Parse an AU (`kind='au'`) or VA (`kind='va'`) side file; None when it is unusable."""
    key_name, what = KINDS[kind]
    path = Path(path)
    header, records = read_csv(path, problems, what=f"{what} ({key_name})")
    if records is None:
        return None
    header = [h.replace("\ufeff", "").strip() for h in header]
    key = _key_columns(header, dataset)
    if key is None:
        expected = "'id'" + (", 'sequence' or 'subject' + 'sequence'" if dataset == "ckplus" else "")
        problems.add(f"{path}:1", f"header {','.join(header)!r} has no key column; expected {expected} "
                     f"(docs/datasets.md#side-files)")
        return None
    key_kind, key_cols = key
    low = [h.lower() for h in header]
    conf_name = f"{kind}_confidence" if f"{kind}_confidence" in low else "confidence"
    conf_col = low.index(conf_name) if conf_name in low else None
    columns: dict[str, tuple[int, str]] = {}    # AU name -> (column, kind) | valence/arousal -> (column, '')
    if kind == "au":
        for j, h in enumerate(header):
            got = au_column(h)
            if got is None:
                continue
            name, sub = got
            if name in columns:
                prev_j, prev_sub = columns[name]
                if {prev_sub, sub} == {"_c", "_r"}:          # OpenFace: presence wins over intensity
                    if sub == "_c":
                        columns[name] = (j, sub)
                    continue
                problems.add(f"{path}:1", f"columns {header[prev_j]!r} and {h!r} both give {name}")
                return None
            columns[name] = (j, sub)
        if not columns:
            problems.add(f"{path}:1", f"header {','.join(header)!r} has no AU column (AU<n>, AU<n>_c or AU<n>_r)")
            return None
    else:
        missing = [c for c in ("valence", "arousal") if c not in low]
        if missing:
            problems.add(f"{path}:1", f"header {','.join(header)!r} lacks the column(s) {','.join(missing)}")
            return None
        columns = {c: (low.index(c), "") for c in ("valence", "arousal")}
    used = set(key_cols) | {j for j, _ in columns.values()} | ({conf_col} if conf_col is not None else set())

    def other_task(h: str) -> bool:  # one file may serve as both (`fercore pseudo-label` writes AU and VA together)
        if kind == "au":
            return h.lower() in ("valence", "arousal", "va_confidence")
        return au_column(h) is not None or h.lower() == "au_confidence"

    table = SideTable(kind, path, key_kind, list(columns), sha256=sha256_file(path),
                      ignored_columns=[h for j, h in enumerate(header) if j not in used and not other_task(h)])
    seen: dict[str, str] = {}
    for where, rec in records:
        if rec is None:                      # wrong column count: reported by read_csv
            continue
        fields = [rec[j].strip() for j in key_cols]
        k = fields[0] if key_kind == "id" else _sequence_key(fields)
        if not k:
            problems.add(where, f"key {','.join(fields)!r} is empty or not a CK+ sequence (S<subject>_<sequence>)"
                         if key_kind == "sequence" else "empty id")
            continue
        if k in seen:
            problems.add(where, f"{k} given twice (first at line {seen[k].rsplit(':', 1)[1]})")
            continue
        seen[k] = where
        values, mask, ok = np.zeros(len(columns), np.float32), np.zeros(len(columns), np.float32), True
        for c, (j, sub) in enumerate(columns.values()):
            text = rec[j].strip()
            if not text:
                continue
            lo, hi = (-1.0, 1.0) if kind == "va" else ((0.0, 5.0) if sub == "_r" else (0.0, 1.0))
            v = _number(text, where, header[j], lo, hi, problems,
                        _range_hint(header[j], sub, text) if kind == "au" else "")
            if v is None:
                ok = False
                break
            values[c] = float(v >= INTENSITY_PRESENT) if sub == "_r" else v
            mask[c] = 1.0
        if not ok:
            continue
        if kind == "va" and mask.sum() == 1:
            problems.add(where, "valence and arousal must be given together (or both left empty)")
            continue
        if conf_col is not None and rec[conf_col].strip():
            conf = _number(rec[conf_col].strip(), where, header[conf_col], 0.0, 1.0, problems)
            if conf is None:
                continue
            if conf < min_confidence:
                mask[:] = 0
                table.below_confidence += 1
        table.rows[k] = (values, mask, where)
    return table


def read_side_files(cfg: DataConfig, problems: Problems) -> list[SideTable]:
    """The configured side files (`data.au_file`, `data.va_file`), parsed."""
    out = []
    for kind, path in (("au", cfg.au_file), ("va", cfg.va_file)):
        if path:
            t = read_side_file(path, kind, cfg.dataset, problems, cfg.side_min_confidence)
            if t is not None:
                out.append(t)
    return out


def _keys(ids: list[str], table: SideTable) -> list[str]:
    return [sequence_of(i) for i in ids] if table.key == "sequence" else list(ids)


def check_keys(tables: list[SideTable], all_ids: list[str], dataset: str, problems: Problems) -> None:
    """Every key of every table must name a sample (or, for CK+, a sequence) of the whole layout."""
    for t in tables:
        keys = _keys(all_ids, t)
        known, example = set(keys), (keys[0] if keys else "")
        what = "sequence" if t.key == "sequence" else "image id"
        for k, (_, _, where) in t.rows.items():
            if k not in known:
                problems.add(where, f"{what} {k!r} is no sample of dataset {dataset!r} (its ids look like "
                             f"{example!r}; docs/datasets.md#side-files)")


@dataclass
class Targets:
    """One split's AU and VA targets as arrays (what a Split or a FaceSet holds)."""

    ids: list[str]
    au: np.ndarray | None = None        # (N, A)
    au_mask: np.ndarray | None = None   # (N, A)
    au_names: list[str] | None = None
    va: np.ndarray | None = None        # (N, 2)
    va_mask: np.ndarray | None = None   # (N,)


def _count(target: np.ndarray | None, mask: np.ndarray | None, n: int) -> int:
    """Images with at least one annotated entry (a target without a mask: every image)."""
    if target is None or n == 0:
        return 0
    if mask is None:
        return n
    return int((np.asarray(mask).reshape(n, -1) > 0.5).any(1).sum())


def merge(t: Targets, tables: list[SideTable], rule: str) -> tuple[Targets, dict]:
    """The split's targets with the side files merged in by `rule` (module docstring), and its coverage."""
    n = len(t.ids)
    stats: dict = {"images": n}
    au, au_mask, names, va, va_mask = t.au, t.au_mask, t.au_names, t.va, t.va_mask
    stats["au_before"], stats["va_before"] = _count(au, au_mask, n), _count(va, va_mask, n)
    for table in tables:
        keys = _keys(t.ids, table)
        rows = [table.rows.get(k) for k in keys]
        matched = sum(r is not None for r in rows)
        side_v = np.zeros((n, len(table.names)), np.float32)
        side_m = np.zeros((n, len(table.names)), np.float32)
        for i, r in enumerate(rows):
            if r is not None:
                side_v[i], side_m[i] = r[0], r[1]
        if table.kind == "au":
            own = list(names or [])
            new = own + [a for a in table.names if a not in own]
            out_v, out_m = np.zeros((n, len(new)), np.float32), np.zeros((n, len(new)), np.float32)
            if au is not None:
                m = np.ones_like(au) if au_mask is None else np.asarray(au_mask)
                out_v[:, :len(own)], out_m[:, :len(own)] = np.asarray(au), m
            cols = [new.index(a) for a in table.names]
            own_has, side_has = out_m[:, cols] > 0.5, side_m > 0.5
            take = side_has & ~own_has if rule == "fill" else side_has
            sub_v, sub_m = out_v[:, cols], out_m[:, cols]
            sub_v[take], sub_m[take] = side_v[take], 1.0
            out_v[:, cols], out_m[:, cols] = sub_v, sub_m
            au, au_mask, names = out_v, out_m, new
        else:
            out_v = np.zeros((n, 2), np.float32) if va is None else np.asarray(va, np.float32).copy()
            out_m = np.zeros(n, np.float32) if va is None else (
                np.ones(n, np.float32) if va_mask is None else np.asarray(va_mask, np.float32).reshape(n).copy())
            own_has, side_has = out_m > 0.5, side_m[:, 0] > 0.5
            take = side_has & ~own_has if rule == "fill" else side_has
            out_v[take], out_m[take] = side_v[take], 1.0
            va, va_mask = out_v, out_m
        entries = {"rows_matched": matched, "entries_used": int(take.sum()),
                   ("ignored_own" if rule == "fill" else "replaced_own"): int((side_has & own_has).sum())}
        stats[f"{table.kind}_file"] = entries
    stats["au_after"], stats["va_after"] = _count(au, au_mask, n), _count(va, va_mask, n)
    return Targets(t.ids, au, au_mask, names, va, va_mask), stats


def describe(tables: list[SideTable], rule: str, coverage: dict) -> dict:
    """What `meta['side_files']` records: each file's path, sha256, key, columns; the rule; the coverage."""
    return {"rule": rule, "coverage": coverage,
            "files": {t.kind: {"path": str(t.path), "sha256": t.sha256, "key": t.key, "columns": t.names,
                               "rows": len(t.rows), "ignored_columns": t.ignored_columns,
                               "rows_below_confidence": t.below_confidence} for t in tables}}


def apply_to_scan(scan: Scan, cfg: DataConfig, problems: Problems) -> dict | None:
    """Merge the configured side files into a scanned layout's splits (before subsampling and
    decoding); returns what was merged (also in `scan.meta['side_files']`), None without side files."""
    tables = read_side_files(cfg, problems)
    if not tables:
        return None
    check_keys(tables, [i for s in scan.splits.values() for i in s.ids], scan.dataset, problems)
    coverage = {}
    for name, split in scan.splits.items():
        merged, coverage[name] = merge(Targets(list(split.ids), split.au, split.au_mask, scan.au_names,
                                               split.va, split.va_mask), tables, cfg.side_merge)
        split.au, split.au_mask, split.va, split.va_mask = merged.au, merged.au_mask, merged.va, merged.va_mask
        names = merged.au_names
    scan.au_names = names if any(t.kind == "au" for t in tables) else scan.au_names
    for t in tables:
        scan.files[f"{t.kind}_file"] = t.path
    scan.meta["side_files"] = describe(tables, cfg.side_merge, coverage)
    return scan.meta["side_files"]


def apply_to_facesets(train: FaceSet, test: FaceSet, cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    """Merge the configured side files into generated splits (SynthFER); strict (DataError)."""
    problems = Problems(strict=True)
    tables = read_side_files(cfg, problems)
    if not tables:
        return train, test
    check_keys(tables, train.ids + test.ids, cfg.dataset, problems)
    out, coverage = [], {}
    for name, fs in (("train", train), ("test", test)):
        t = lambda v: None if v is None else v.numpy()  # noqa: E731
        merged, coverage[name] = merge(Targets(list(fs.ids), t(fs.au), t(fs.au_mask), fs.meta.get("au_names"),
                                               t(fs.va), t(fs.va_mask)), tables, cfg.side_merge)
        f = lambda v: None if v is None else torch.as_tensor(v, dtype=torch.float)  # noqa: E731
        meta = dict(fs.meta)
        if merged.au_names is not None:
            meta["au_names"] = merged.au_names
        out.append(fs.replace(au=f(merged.au), au_mask=f(merged.au_mask), va=f(merged.va), va_mask=f(merged.va_mask),
                              meta=meta))
    info = describe(tables, cfg.side_merge, coverage)
    for fs in out:
        fs.meta["side_files"] = info
    return out[0], out[1]


def coverage_lines(info: dict) -> list[str]:
    """The coverage of `meta['side_files']` as text lines (the doctor and the notebooks print them)."""
    lines = [f"side files (rule {info['rule']}): " + ", ".join(
        f"{k}={f['path']} ({f['rows']} rows, key {f['key']}, sha256 {f['sha256'][:12]}"
        + (f", ignored columns {f['ignored_columns']}" if f["ignored_columns"] else "")
        + (f", {f['rows_below_confidence']} rows below data.side_min_confidence" if f["rows_below_confidence"] else "")
        + ")" for k, f in info["files"].items())]
    for split, c in info["coverage"].items():
        parts = [f"{split}: {c['images']} images", f"AU targets {c['au_before']} -> {c['au_after']}",
                 f"VA targets {c['va_before']} -> {c['va_after']}"]
        for kind in ("au", "va"):
            if f"{kind}_file" in c:
                e = c[f"{kind}_file"]
                own = e.get("ignored_own", e.get("replaced_own", 0))
                verb = "ignored (the reader has its own)" if "ignored_own" in e else "replaced the reader's"
                parts.append(f"{kind} file: {e['rows_matched']} rows matched, {e['entries_used']} entries used"
                             + (f", {own} {verb}" if own else ""))
        lines.append("  " + "; ".join(parts))
    return lines
