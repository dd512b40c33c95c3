"""AU and valence-arousal pseudo-labels from a finished run: side files for datasets without them
(`python -m fercore pseudo-label RUN --dataset X --data-root R --out FILE`).

MTAC "can flexibly combine with existing frameworks in a fully-supervised or weakly-supervised
manner" `[abstract]`; its auxiliary tasks need AU and VA targets that RAF-DB, FERPlus and FER2013
lack. The usual practice in this literature is pseudo-labels from a model trained where the
labels exist (AU detectors trained on DISFA/BP4D/AffWild2, VA regressors on AffectNet/AffWild2),
kept with a per-sample mask `[lineage: weak supervision practice]`. Here the model is any fercore
run whose method predicts AUs or VA (`Method.predict` returns 'au' and/or 'va': MTAC trained on
SynthFER, CK+ with FACS codes, AffWild2 or AffectNet), restored from its directory and run through
`engine.infer`, the one inference path (the run's normalisation, precision, image size). The
dataset is read with its reader's defaults at the run's image size (`target_data`); `key=value`
data overrides set anything else (e.g. `data.protocol=ferplus8`).

What is written `[ours]`, one CSV in the side-file format (docs/datasets.md#side-files), usable as
`data.au_file=FILE data.va_file=FILE`:

* one row per image of the chosen splits (`splits`, default the training split only: a test split
  labelled by a model would make test AU/VA metrics measure agreement with that model), keyed by
  the reader's id;
* AU cells 0/1 from the probability `p` (averaged with the horizontally mirrored face's, `tta=flip`),
  left empty (mask 0) where the confidence `|2p - 1|` is below `au_threshold` (0.5: p <= 0.25 or
  p >= 0.75); `au_confidence` = that confidence averaged over the row's AUs;
* `valence`, `arousal` (mean of the two views), left empty where `va_confidence` = 1 - (mean
  |difference between the two views|) / 2 is below `va_threshold` (0.9); without `tta` every VA
  row is kept with confidence 1;
* AU columns named by `au_map`: `RUN_AU[:FILE_AU],...` selects the run's AUs and names them in the
  file (default: every AU under the run's own names); every name is checked (a run AU that does not
  exist, a file name that is no `AU<n>`, a name used twice), so AU sets never mix silently;
* `FILE.json`: what was written and from what (run, its config hash, thresholds, mapping) and the
  summary that is also printed: coverage, AU base rates among the kept entries, VA range.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig, build_config
from .data.datasets import load_dataset
from .data.faceset import FaceSet
from .data.landmarks import FLIP_LANDMARKS
from .data.sidefiles import canonical_au
from .engine import infer, resolve_device, restore
from .errors import ConfigError, RunError
from .files import sha256_file, sha256_text, write_atomic
from .rundir import RunDir

SPLITS = ("train", "test")
RUN_AU = re.compile(r"AU[1-9]\d*")
TASKS = ("au", "va")


def parse_au_map(spec: str, run_aus: list[str]) -> list[tuple[str, str]]:
    """(run AU, file AU) pairs from `RUN_AU[:FILE_AU],...` (empty: every run AU under its own name),
    every name checked: the run has the AU, the file name is `AU<n>`, no name is used twice."""
    items = [s.strip() for s in spec.split(",") if s.strip()] if spec else list(run_aus)
    pairs, problems = [], []
    for item in items:
        src, _, dst = item.partition(":")
        src, dst = src.strip(), dst.strip()
        if src not in run_aus:
            problems.append(f"--au-map: the run has no AU {src!r}; its AUs are {run_aus}")
            continue
        # a run column is named by itself only when it is an `AU<n>` name (unnamed columns are `au<index>`)
        name = canonical_au(dst) if dst else (src if RUN_AU.fullmatch(src) else None)
        if name is None:
            dst = dst or src
            problems.append(f"--au-map: {dst!r} (for the run's {src}) is not an AU name AU<n>; "
                            f"map it explicitly, e.g. {src}:AU12")
            continue
        pairs.append((src, name))
    for i, which in ((0, "run AU"), (1, "file AU")):
        names = [p[i] for p in pairs]
        twice = sorted({n for n in names if names.count(n) > 1})
        problems += [f"--au-map: {which} {n!r} is given twice" for n in twice]
    if not pairs and not problems:
        problems.append("--au-map selects no AU")
    if problems:
        raise ConfigError("\n".join(problems))
    return pairs


def target_data(run_config: dict, dataset: str, data_root: str, overrides: list[str] = ()) -> DataConfig:
    """The data config of the dataset to label: its reader's defaults under the run's profile, at the
    run's image size, whole splits, no noise, no side files, then `overrides` (data keys only). None of
    the run's own data keys (its SynthFER draw, protocol, folds, out-of-fold split, side files) is
    carried over: they described the data the run trained on, not the data it labels."""
    bad = [o for o in overrides if not o.strip().startswith("data.")]
    if bad:
        raise ConfigError(f"pseudo-label: only data.<key>=<value> overrides describe the dataset to label, got {bad}")
    size = run_config.get("data", {}).get("image_size")
    return build_config(run_config.get("profile") or "quick", overrides=[
        f"data.dataset={dataset}", f"data.data_root={data_root}", "data.n_train=0", "data.n_test=0",
        *([f"data.image_size={size}"] if size else []), *overrides]).data


def mirrored(fs: FaceSet) -> FaceSet:
    """The horizontally mirrored faces: images flipped, landmarks mirrored (eyes and mouth corners swapped)."""
    lmk = None
    if fs.landmarks is not None:
        lmk = fs.landmarks[:, FLIP_LANDMARKS].clone()
        lmk[..., 0] = fs.image_size - 1 - lmk[..., 0]
    return fs.replace(images=fs.images.flip(-1).contiguous(), landmarks=lmk)


def _predicts(method, cfg, device) -> set[str]:
    """The auxiliary tasks a restored method estimates: its `predict` on one blank image."""
    facts = method.facts
    probe = FaceSet(images=torch.zeros(1, facts.channels, facts.image_size, facts.image_size, dtype=torch.uint8),
                    label=torch.zeros(1, dtype=torch.long), classes=tuple(facts.classes), ids=["probe"],
                    meta={"unlabelled": True})
    return set(infer(method, probe, cfg, device)) & set(TASKS)


def _estimates(method, cfg, fs: FaceSet, device, tta: str, batch_size: int | None) -> dict[str, np.ndarray]:
    """AU probabilities and VA of every face, with the mirrored view where `tta == 'flip'`."""
    fs = fs.replace(meta={**fs.meta, "unlabelled": True})   # no label is read: the run's classes may differ
    views = [infer(method, fs, cfg, device, batch_size=batch_size)]
    if tta == "flip":
        views.append(infer(method, mirrored(fs), cfg, device, batch_size=batch_size))
    out = {}
    if "au" in views[0]:
        out["au"] = np.mean([v["au"] for v in views], 0)
    if "va" in views[0]:
        out["va"] = np.mean([v["va"] for v in views], 0)
        out["va_confidence"] = (1 - np.abs(views[0]["va"] - views[1]["va"]).mean(1) / 2) if len(views) == 2 \
            else np.ones(len(fs))
    return out


def _rate(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def pseudo_label(run: str | Path, dataset: str, data_root: str, out: str | Path, *, overrides: list[str] = (),
                 splits: tuple[str, ...] = ("train",), tasks: tuple[str, ...] | None = None,
                 au_threshold: float = 0.5, va_threshold: float = 0.9, au_map: str = "", tta: str = "flip",
                 device: str = "cpu", batch_size: int | None = None) -> dict:
    """Write the side file `out` for `dataset` at `data_root` from the finished run `run` (module
    docstring) and its JSON record `out.json`; returns the summary (see `summary_lines`)."""
    problems = []
    bad_splits = [s for s in splits if s not in SPLITS]
    if bad_splits or not splits:
        problems.append(f"--splits: expected train, test or train,test, got {','.join(splits)!r}")
    for name, v in (("--au-threshold", au_threshold), ("--va-threshold", va_threshold)):
        if not 0 <= v <= 1:
            problems.append(f"{name} must be in [0, 1], got {v}")
    if tta not in ("flip", "none"):
        problems.append(f"--tta: expected flip or none, got {tta!r}")
    if tasks is not None and (not tasks or set(tasks) - set(TASKS)):
        problems.append(f"--tasks: expected au, va or au,va, got {','.join(tasks)!r}")
    if problems:
        raise ConfigError("\n".join(problems))
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise RunError(f"{rd.path}: no such run directory")
    rd.require_finished("pseudo-label")
    dev = resolve_device(device)
    cfg, method = restore(rd.path, dev)
    can = _predicts(method, cfg, dev)
    want = set(tasks) if tasks is not None else can
    if not can:
        raise RunError(f"{rd.path}: method {cfg.method!r} predicts no AUs or valence-arousal (a run of MTAC "
                       f"trained with mtac.au / mtac.va on data that has them does)")
    if want - can:
        raise RunError(f"{rd.path}: the run does not predict {sorted(want - can)} (it predicts {sorted(can)})")
    pairs = parse_au_map(au_map, list(method.facts.au_names or [])) if "au" in want else []
    run_aus = list(method.facts.au_names or [])
    cols = [run_aus.index(src) for src, _ in pairs]

    train, test = load_dataset(target_data(rd.config, dataset, data_root, overrides))
    data = dict(zip(SPLITS, (train, test)))
    if train.image_size != method.facts.image_size:
        raise RunError(f"{rd.path}: trained at {method.facts.image_size} px, the data is at {train.image_size} px; "
                       f"drop the data.image_size override")

    header = ["id"] + [dst for _, dst in pairs] + (["au_confidence"] if pairs else []) + \
        (["valence", "arousal", "va_confidence"] if "va" in want else [])
    rows, per_split = [], {}
    au_vals, au_keep, va_vals = [], [], []
    for split in splits:
        fs = data[split]
        est = _estimates(method, cfg, fs, dev, tta, batch_size)
        n = len(fs)
        cells = [[i] for i in fs.ids]
        info = {"images": n}
        if pairs:
            p = est["au"][:, cols]
            conf = np.abs(2 * p - 1)
            keep = conf >= au_threshold
            for i in range(n):
                cells[i] += [("1" if p[i, j] >= 0.5 else "0") if keep[i, j] else "" for j in range(len(pairs))]
                cells[i].append(f"{conf[i].mean():.4f}")
            au_vals.append(p >= 0.5)
            au_keep.append(keep)
            info["images_with_au"] = int(keep.any(1).sum())
            info["au_entries_kept"] = float(keep.mean())
        if "va" in want:
            va, vconf = est["va"], est["va_confidence"]
            vkeep = vconf >= va_threshold
            for i in range(n):
                cells[i] += ([f"{va[i, 0]:.4f}", f"{va[i, 1]:.4f}"] if vkeep[i] else ["", ""]) + [f"{vconf[i]:.4f}"]
            va_vals.append(va[vkeep])
            info["images_with_va"] = int(vkeep.sum())
        rows += cells
        per_split[split] = info
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buf.getvalue())

    summary = {"file": str(out), "sha256": sha256_file(out), "run": str(rd.path), "method": cfg.method,
               "run_config_sha256": sha256_text(json.dumps(rd.config, sort_keys=True)),
               "dataset": dataset, "data_root": str(data_root), "splits": per_split, "tta": tta,
               "use": " ".join(([f"data.au_file={out}"] if pairs else []) + ([f"data.va_file={out}"] if "va" in want
                                                                                else []))}
    if pairs:
        vals, keep = np.concatenate(au_vals), np.concatenate(au_keep)
        summary["au"] = {"threshold": au_threshold, "mapping": {src: dst for src, dst in pairs},
                         "kept": {dst: _rate(keep[:, j]) for j, (_, dst) in enumerate(pairs)},
                         "base_rate": {dst: _rate(vals[keep[:, j], j]) for j, (_, dst) in enumerate(pairs)},
                         "dataset_own_aus": list(train.meta.get("au_names") or []) if train.au is not None else []}
    if "va" in want:
        v = np.concatenate(va_vals) if va_vals else np.zeros((0, 2))
        summary["va"] = {"threshold": va_threshold, "kept": int(len(v)),
                         **{name: ({"min": float(v[:, k].min()), "mean": float(v[:, k].mean()),
                                    "max": float(v[:, k].max())} if len(v) else None)
                            for k, name in enumerate(("valence", "arousal"))},
                         "dataset_has_va": train.va is not None}
    write_atomic(out.with_name(out.name + ".json"), json.dumps(summary, indent=2))
    return summary


def summary_lines(s: dict) -> list[str]:
    """The printed summary of `pseudo_label`: what was written, coverage, AU base rates, VA range."""
    lines = [f"pseudo-labels for {s['dataset']} from {s['run']} ({s['method']}) -> {s['file']} "
             f"(sha256 {s['sha256'][:12]}, tta {s['tta']})"]
    for split, c in s["splits"].items():
        parts = [f"{c['images']} images"]
        if "images_with_au" in c:
            parts.append(f"{c['images_with_au']} with an AU target ({c['au_entries_kept']:.1%} of AU entries kept)")
        if "images_with_va" in c:
            parts.append(f"{c['images_with_va']} with a VA target")
        lines.append(f"  {split}: " + ", ".join(parts))
    if "au" in s:
        a = s["au"]
        renamed = {k: v for k, v in a["mapping"].items() if k != v}
        lines.append(f"  AU (confidence |2p-1| >= {a['threshold']}): " + ", ".join(
            f"{name} {'-' if a['base_rate'][name] is None else format(a['base_rate'][name], '.2f')}"
            for name in a["base_rate"]) + " (share positive among kept entries)"
            + (f"; renamed {renamed}" if renamed else ""))
        if a["dataset_own_aus"]:
            lines.append(f"  the dataset has its own labels for {a['dataset_own_aus']}: under data.side_merge=fill "
                         f"they win where annotated")
    if "va" in s:
        v = s["va"]
        rng = ", ".join(f"{k} [{v[k]['min']:.2f}, {v[k]['max']:.2f}] mean {v[k]['mean']:.2f}"
                        for k in ("valence", "arousal") if v[k]) or "none kept"
        lines.append(f"  VA (flip agreement >= {v['threshold']}): {v['kept']} rows kept; {rng}")
    lines.append(f"  use with: {s['use']}")
    return lines
