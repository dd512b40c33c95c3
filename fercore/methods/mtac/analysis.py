"""Reading MTAC runs: how well per-sample scores separate flipped from clean training labels, how
well relabeling repaired the labels, and the method's estimates on a split (for notebook 02)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from ...data.faceset import FaceSet
from ...data.loader import Loader
from ...metrics import relabel_quality


def epochs_of(diag: dict[str, np.ndarray], name: str) -> list[int]:
    """The epochs (1-based) for which `diag` holds `<name>@<epoch>`, in order."""
    return sorted(int(m.group(1)) for k in diag if (m := re.fullmatch(rf"{re.escape(name)}@(\d+)", k)))


def noise_separation(diag: dict[str, np.ndarray], name: str = "confidence", higher_is_clean: bool = True,
                     reference: str = "clean_label") -> pd.DataFrame:
    """Per epoch, AUROC (sklearn) of the per-sample score `name` for telling training samples whose
    given label equals `reference` (clean) from the others (flipped); NaN scores (samples not seen in
    that epoch) are left out. 0.5 is chance; `higher_is_clean=False` for uncertainties."""
    clean = diag["label_given"] == diag[reference]
    rows = []
    for e in epochs_of(diag, name):
        s = diag[f"{name}@{e}"].astype(float)
        s = s if higher_is_clean else -s
        seen = ~np.isnan(s)
        rows.append({"epoch": e, "auroc": float(roc_auc_score(clean[seen], s[seen])),
                     "mean_clean": float(np.nanmean(np.where(clean, s, np.nan))) * (1 if higher_is_clean else -1),
                     "mean_flipped": float(np.nanmean(np.where(~clean, s, np.nan))) * (1 if higher_is_clean else -1)})
    return pd.DataFrame(rows, columns=["epoch", "auroc", "mean_clean", "mean_flipped"])


def relabel_progress(diag: dict[str, np.ndarray], reference: str = "clean_label") -> pd.DataFrame:
    """Per epoch, `fercore.metrics.relabel_quality` of the label table at the end of that epoch
    against the labels given at the start, and the share of training labels equal to `reference`."""
    rows = []
    for e in epochs_of(diag, "label"):
        q = relabel_quality(diag["label_given"], diag[f"label@{e}"], diag[reference])
        rows.append({"epoch": e, **q, "labels_right": float((diag[f"label@{e}"] == diag[reference]).mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def estimates(run_path: str | Path, data: FaceSet, device: str = "cpu", batch_size: int = 256) -> dict[str, np.ndarray]:
    """The trained method's estimates on `data` (eval mode): 'prob' (N, K) and whatever its
    `predict` returns besides logits (MTAC: 'confidence', 'au' probabilities, 'va')."""
    from ...engine import restore

    cfg, method = restore(run_path, device)
    out: dict[str, list] = {}
    for b in Loader(data, batch_size, torch.device(device), normalize=cfg.data.normalize):
        pred = method.predict(b)
        out.setdefault("prob", []).append(pred.pop("logits").float().softmax(1).cpu())
        for k, v in pred.items():
            out.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}
