"""Tables: run directories -> pandas tables -> Markdown, LaTeX and CSV (docs/architecture.md#the-flow-of-data)."""
from __future__ import annotations

import pandas as pd

from .rundir import RunDir


def summarize(runs: list[RunDir], by: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of last- and best-epoch test accuracy, grouped by `by`
    (keys of config.json, dotted for sections, e.g. 'data.noise')."""
    rows = []
    for r in runs:
        cfg, s = r.config, r.summary
        row = {}
        for key in by:
            node = cfg
            for part in key.split("."):
                node = node[part]
            row[key] = node
        row.update(seed=cfg["seed"], last_acc=s["last"]["test_acc"], best_acc=s["best"]["test_acc"],
                   last_mean_class_acc=s["last"]["test_mean_class_acc"])
        rows.append(row)
    df = pd.DataFrame(rows)
    agg = df.groupby(by).agg(n_seeds=("seed", "count"), last_acc_mean=("last_acc", "mean"),
                             last_acc_std=("last_acc", "std"), best_acc_mean=("best_acc", "mean"),
                             best_acc_std=("best_acc", "std"),
                             last_mean_class_acc=("last_mean_class_acc", "mean"))
    return agg.reset_index()


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of `df` (floats rounded to `digits`), for tables written to figures/."""
    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    rows = [list(map(str, df.columns))] + [[cell(v) for v in r] for r in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("---" for _ in df.columns) + "|")
    return "\n".join(lines) + "\n"
