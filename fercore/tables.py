"""Tables: run directories -> pandas tables -> Markdown, LaTeX and CSV (docs/architecture.md#the-flow-of-data).

`run_table(runs)` reads one row per finished run (unfinished ones are listed, never silently
mixed in): method, noise, seed, variant, last- and best-epoch test accuracy (last is the headline),
mean per-class accuracy, the AUROC of the method's own per-sample score and of the small-loss
reference for finding the wrong training labels, and relabel precision and recall. `paper_table`
shapes it like the papers' tables (rows = methods, columns = noise settings, "mean ± std" over
seeds); `write_table` writes Markdown, LaTeX (booktabs) and CSV side by side. Published numbers, where
a table shows any (`published_rows`), sit in their own labelled rows with their source.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from .errors import notice
from .files import write_atomic
from .metrics import noise_separation, relabel_quality
from .rundir import RunDir

PUBLISHED = Path(__file__).with_name("published.yaml")


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def run_row(rd: RunDir, variant: str = "", noise_score: tuple[str, bool] | None = None) -> dict:
    """One finished run as a flat dict (see the module docstring)."""
    cfg, s = rd.config, rd.summary
    last, best = s["last"], s["best"]
    row = {"method": cfg["method"], "noise": cfg["data"]["noise"], "seed": cfg["seed"],
           "noise_seed": cfg["data"].get("noise_seed"), "variant": variant or "default",
           "dataset": cfg["data"]["dataset"], "recipe": cfg.get("recipe") or "-", "epochs": s["epochs"],
           "last_acc": last.get("test_acc"),
           "best_acc": best.get("test_acc"), "best_epoch": best.get("epoch"),
           "last_mean_class_acc": last.get("test_mean_class_acc"), "last_acc_true": last.get("test_acc_true"),
           "run_dir": str(rd.path)}
    d = rd.diagnostics()
    reference = "clean_label" if "clean_label" in d else None
    if reference is not None and (d["label_given"] != d[reference]).any():
        e = s["epochs"]
        if noise_score is not None and f"{noise_score[0]}@{e}" in d:
            sep = noise_separation(d, noise_score[0], noise_score[1])
            row["score_auroc"] = float(sep["auroc"].iloc[-1])
        if f"loss@{e}" in d:
            row["small_loss_auroc"] = float(noise_separation(d, "loss", False)["auroc"].iloc[-1])
        q = relabel_quality(d["label_given"], d[f"label@{e}"], d[reference])
        row.update(n_relabelled=q["n_relabelled"], relabel_precision=q["precision"], relabel_recall=q["recall"],
                   labels_right_at_end=float((d[f"label@{e}"] == d[reference]).mean()))
    elif reference is not None:  # clean labels: relabeling can only harm
        e = s["epochs"]
        row.update(n_relabelled=int((d[f"label@{e}"] != d["label_given"]).sum()))
    return row


def data_text(rd: RunDir) -> str:
    """What a run trained and tested on, for a caption: the dataset (and FERPlus' label source), the training
    faces used of the split (a subset said as such) and the image size, and the test faces (env.json)."""
    data, env = rd.config["data"], rd.env["data"]  # the engine writes every run's sizes (and a real split's rows)
    n, rows = env["train_size"], env.get("train_rows", env["train_size"])
    faces = f"{n:,} of its {rows:,} training faces (a seeded subset)" if rows > n else f"{n:,} training faces"
    source = f" ({data['label_source']} labels)" if data["dataset"] == "ferplus" else ""
    return f"{data['dataset']}{source}, {faces} at {data['image_size']} px, tested on {env['test_size']:,}"


def run_table(runs, variants: list[str] | None = None) -> pd.DataFrame:
    """One row per finished run of `runs` (RunDirs, paths, or (cell, RunDir) pairs from a sweep).
    Runs that did not finish are left out and listed in `df.attrs['unfinished']`."""
    from .methods import METHODS  # the methods' declared noise scores (a lazy import: layers)

    rows, unfinished = [], []
    for i, item in enumerate(runs):
        variant = ""
        if isinstance(item, tuple):
            cell, item = item
            variant = cell.variant
        rd = item if isinstance(item, RunDir) else RunDir(item)
        if variants is not None:
            variant = variants[i]
        if not rd.finished:
            unfinished.append(f"{rd.path} ({rd.status()})")
            continue
        method = rd.config["method"]
        cls = METHODS.get(method)
        rows.append(run_row(rd, variant, cls.noise_score if cls is not None else None))
    df = pd.DataFrame(rows)
    df.attrs["unfinished"] = unfinished
    if unfinished:  # said where the table is made, not only in attrs
        notice(f"run_table: {len(unfinished)} run(s) did not finish and are not in the table: "
               f"{'; '.join(unfinished[:3])}{' ...' if len(unfinished) > 3 else ''}")
    return df


def aggregate(df: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of `values`, grouped by `by` (order of first appearance)."""
    g = df.groupby(by, sort=False)
    out = g[values].agg(["mean", "std"])
    out.columns = [f"{v}_{stat}" for v, stat in out.columns]
    out.insert(0, "n_seeds", g.size())
    return out.reset_index()


def mean_std(mean: float, std: float, digits: int = 3, n: int | None = None) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "-"
    if std is None or np.isnan(std) or n == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paper_table(df: pd.DataFrame, value: str = "last_acc", rows: str = "method", columns: str = "noise",
                digits: int = 3, row_order: list[str] | None = None, column_order: list[str] | None = None
                ) -> pd.DataFrame:
    """The papers' shape: one row per `rows` value, one column per `columns` value, cells
    "mean ± std" of `value` over seeds (a plain number for one seed)."""
    agg = aggregate(df, [rows, columns], [value])
    cell = {(r[rows], r[columns]): mean_std(r[f"{value}_mean"], r[f"{value}_std"], digits, r["n_seeds"])
            for _, r in agg.iterrows()}
    row_keys = row_order or list(dict.fromkeys(agg[rows]))
    col_keys = column_order or list(dict.fromkeys(agg[columns]))
    table = pd.DataFrame([[cell.get((r, c), "-") for c in col_keys] for r in row_keys], index=row_keys,
                         columns=col_keys)
    table.index.name = rows
    return table.reset_index()


def paired_interval(differences, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of paired differences: the mean and its two-sided Student-t interval
    (`scipy.stats.t`, n - 1 degrees of freedom); low and high are NaN with fewer than 2 pairs."""
    d = np.asarray(differences, dtype=float)
    mean = float(d.mean()) if len(d) else float("nan")
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def verdict(low: float, high: float, n: int, words: tuple[str, str] = ("beats", "loses")) -> str:
    """The rule every comparison uses: `words[0]` when the interval of the paired difference lies above
    0, `words[1]` when it lies below, "within noise" when it contains 0, "one seed" without an interval."""
    if n < 2 or np.isnan(low):
        return "one seed"
    return words[0] if low > 0 else words[1] if high < 0 else "within noise"


def paired_differences(df: pd.DataFrame, baseline: str = "ce", value: str = "last_acc", by: str = "noise",
                       group: str = "method") -> pd.DataFrame:
    """One row per (`group` value, `by` setting, seed) that the baseline has too: both values and
    their difference. The runs of one seed share the noise draw, the data order and the
    initialisation, so the difference is taken seed by seed (the rows anyone can recompute a
    verdict from; notebook 05 writes them as `noise_sweep_per_seed`)."""
    keys = ["seed", *(["noise_seed"] if "noise_seed" in df else [])]
    rows = []
    for setting, part in df.groupby(by, sort=False):
        base = part[part[group] == baseline].set_index("seed")[value]
        for name, runs in part[part[group] != baseline].groupby(group, sort=False):
            for _, r in runs[runs["seed"].isin(base.index)].sort_values("seed").iterrows():
                a, b = float(r[value]), float(base[r["seed"]])
                rows.append({group: name, by: setting, **{k: r[k] for k in keys}, value: a,
                             f"{baseline}_{value}": b, "difference": a - b})
    return pd.DataFrame(rows, columns=[group, by, *keys, value, f"{baseline}_{value}", "difference"])


def versus(df: pd.DataFrame, baseline: str = "ce", value: str = "last_acc", by: str = "noise",
           group: str = "method", confidence: float = 0.95, words: tuple[str, str] = ("beats", "loses")
           ) -> pd.DataFrame:
    """Every `group` value against `baseline`, per `by` setting, **paired by seed**
    (`paired_differences`, over the seeds both have): the mean difference with its `confidence`
    Student-t interval, and the verdict (`verdict`): "beats" / "loses" only when the interval
    excludes 0 `[ours]`."""
    pairs = paired_differences(df, baseline, value, by, group)
    rows = []
    for (name, setting), p in pairs.groupby([group, by], sort=False):
        mean, low, high = paired_interval(p["difference"], confidence)
        rows.append({group: name, by: setting, "difference": mean, "ci_low": low, "ci_high": high,
                     "verdict": verdict(low, high, len(p), words), "n_seeds": len(p),
                     "seeds": " ".join(map(str, p["seed"]))})
    return pd.DataFrame(rows, columns=[group, by, "difference", "ci_low", "ci_high", "verdict", "n_seeds", "seeds"])


def interval_text(row, digits: int = 3) -> str:
    """'+0.031 [+0.012, +0.050]' for a `versus` row (no interval with one seed)."""
    if np.isnan(row["ci_low"]):
        return f"{row['difference']:+.{digits}f}"
    return f"{row['difference']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"


def verdict_lines(vs: pd.DataFrame, baseline: str = "ce", group: str = "method", by: str = "noise") -> list[str]:
    """Markdown bullets, one per `by` setting, stating every `versus` row by its verdict with its
    difference and interval: the only form in which fercore's prose states a verdict (the README's
    findings block is written from `noise_sweep_vs_ce.csv` by this function)."""
    lines = []
    for setting, part in vs.groupby(by, sort=False):
        n = sorted(set(part["n_seeds"]))
        seeds = f"{n[0]} seeds" if len(n) == 1 else f"{n[0]}-{n[-1]} seeds"
        said = []
        for word in ("beats", "within noise", "loses", "one seed"):
            rows = part[part["verdict"] == word].sort_values("difference", ascending=False)
            if len(rows):
                head = {"beats": f"beat {baseline}", "loses": f"lose to {baseline}",
                        "within noise": "within noise", "one seed": "one seed, no verdict"}[word]
                said.append(f"{head}: " + ", ".join(f"{r[group]} {interval_text(r)}" for _, r in rows.iterrows()))
        lines.append(f"- `{setting}` ({seeds}): " + "; ".join(said) + ".")
    return lines


def ambiguity_lines(df: pd.DataFrame) -> list[str]:
    """Markdown bullets stating notebook 07's ambiguity table (`uncertainty_ambiguity`) row by row: how
    each score (higher = more doubt) follows the annotators' disagreement, in the table's own reading
    (every seed's rho of one sign with p < 0.01, else no consistent relation) and numbers."""
    says = {"rises": "rises with", "falls": "falls with", "not consistent": "has no consistent relation to"}
    lines = []
    for _, r in df.iterrows():
        seeds = int(r["seeds"])
        per = f"; rho per seed {r['rho per seed']}" if seeds > 1 else ""
        n = f"{seeds} seed{'s' if seeds > 1 else ''}"
        lines.append(f"- {r['score']}: its doubt {says[r['reading']]} the disagreement (rho {r['rho']:+.2f}{per}; "
                     f"AUROC {r['AUROC ambiguous']:.2f} for the ambiguous images; {n}).")
    return lines


def reference_lines(vs: pd.DataFrame, reference: str, trained_on: str) -> list[str]:
    """Markdown bullets stating a `versus` table against a reference run that is not a method of the
    comparison (notebook 04's clean reference: ce on FERPlus's majority labels), one per method: its
    paired difference, interval and verdict ("above" / "below" the reference, or within noise)."""
    lines = []
    for _, r in vs.iterrows():
        n = int(r["n_seeds"])
        lines.append(f"- {r['method']} trained on {trained_on}: {interval_text(r)} vs {reference} ({r['verdict']}, "
                     f"{n} seed{'s' if n > 1 else ''}).")
    return lines


def regime_lines(df: pd.DataFrame, flipped: str = "flipped training labels") -> list[str]:
    """Markdown bullets stating notebook 04's per-run regime table (`comparison_*_regime`) method by
    method: the range over seeds of the peak (and its epochs) and of the last-epoch accuracy, the share
    of `flipped` (wrong) training labels fitted at the first and the last epoch, how far the accuracy
    moved over the last 3 epochs, and how many runs still rise by more than 1 point over them."""
    def span(values, fmt="{:.3f}") -> str:
        lo, hi = min(values), max(values)
        return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"

    lines = []
    for method, g in df.groupby("method", sort=False):
        n = len(g)
        rising = int(g["still rising (> 1 point)"].astype(str).str.lower().eq("true").sum())
        fit = ""
        if "flipped labels fitted, last" in g and g["flipped labels fitted, last"].notna().all():
            fit = (f"; {flipped} fitted {span(g['flipped labels fitted, first'], '{:.2f}')} after "
                   f"epoch 1, {span(g['flipped labels fitted, last'], '{:.2f}')} at the last")
        swing = ""
        if "swing over last 3 epochs" in g:
            swing = f"; moved {span(100 * g['swing over last 3 epochs'], '{:.1f}')} points over the last 3 epochs"
        epochs = span(g["peak epoch"], "{:d}")
        lines.append(f"- {method} ({n} seed{'s' if n > 1 else ''}): peak {span(g['peak acc'])} (epoch"
                     f"{'s' if '-' in epochs else ''} {epochs}), last {span(g['last acc'])}{fit}{swing}; {rising} of "
                     f"{n} runs still rising by more than 1 point over the last 3 epochs.")
    return lines


def published_rows(dataset: str, columns: list[str]) -> pd.DataFrame:
    """Published numbers (fercore/published.yaml) for `dataset` and the noise `columns` this table has,
    each row labelled 'published: <method> (<source>)'; empty when none apply (e.g. SynthFER)."""
    table = yaml.safe_load(PUBLISHED.read_text())
    rows = []
    for entry in table.get(dataset, []):
        values = {c: entry["results"].get(c) for c in columns}
        if any(v is not None for v in values.values()):
            rows.append({"method": f"published: {entry['method']} ({entry['source']})",
                         **{c: "-" if v is None else f"{v:.2f}" for c, v in values.items()}})
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of `df` (floats rounded to `digits`; a `|` in a name or cell escaped so it
    does not split the column, a `<` so that `<image>` is text and not a tag), for tables written to figures/."""
    def cell(v):
        return (f"{v:.{digits}f}" if isinstance(v, float) else str(v)).replace("|", r"\|").replace("<", "&lt;")
    rows = [[cell(c) for c in df.columns]] + [[cell(v) for v in r] for r in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("---" for _ in df.columns) + "|")
    return "\n".join(lines) + "\n"


def latex_table(df: pd.DataFrame, caption: str, label: str, digits: int = 3) -> str:
    """A booktabs LaTeX table of `df` (floats rounded; ± and % escaped), with caption and label."""
    def tex(v) -> str:
        text = f"{v:.{digits}f}" if isinstance(v, float) else str(v)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$")):
            text = text.replace(a, b)
        return text
    cols = "l" + "c" * (len(df.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(tex(c) for c in df.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(tex(v) for v in r) + r" \\" for r in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, caption: str, digits: int = 3) -> list[Path]:
    """`<stem>.md` (caption + table), `<stem>.tex` (booktabs) and `<stem>.csv`; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # appended, not with_suffix: a stem like "comparison_sym0.3" must not lose its ".3"
    paths = [stem.with_name(stem.name + ext) for ext in (".md", ".tex", ".csv")]
    write_atomic(paths[0], f"{caption}\n\n{markdown_table(df, digits)}")
    write_atomic(paths[1], latex_table(df, caption, f"tab:{stem.name}", digits))
    write_atomic(paths[2], df.to_csv(index=False))
    return paths


def summarize(runs: list[RunDir], by: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of last- and best-epoch test accuracy, grouped by `by`
    (keys of config.json, dotted for sections, e.g. 'data.noise')."""
    rows = []
    for r in runs:
        cfg, s = r.config, r.summary
        row = {key: _get(cfg, key) for key in by}
        row.update(seed=cfg["seed"], last_acc=s["last"]["test_acc"], best_acc=s["best"]["test_acc"],
                   last_mean_class_acc=s["last"]["test_mean_class_acc"])
        rows.append(row)
    df = pd.DataFrame(rows)
    agg = df.groupby(by).agg(n_seeds=("seed", "count"), last_acc_mean=("last_acc", "mean"),
                             last_acc_std=("last_acc", "std"), best_acc_mean=("best_acc", "mean"),
                             best_acc_std=("best_acc", "std"),
                             last_mean_class_acc=("last_mean_class_acc", "mean"))
    return agg.reset_index()
