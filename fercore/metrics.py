"""Classification metrics on predictions, via scikit-learn; auxiliary-task (AU F1, VA CCC)
metrics; and, read from a run's per-sample diagnostics, how well a method's score separates
flipped from clean training labels and how well its relabeling repaired them."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, mean per-class accuracy (over classes present) and the confusion matrix (rows = truth)."""
    return {
        "acc": float((y_true == y_pred).mean()),
        "mean_class_acc": float(balanced_accuracy_score(y_true, y_pred)),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).tolist(),
    }


def au_f1(y_true: np.ndarray, y_prob: np.ndarray, mask: np.ndarray | None = None, names: list[str] | None = None,
          threshold: float = 0.5) -> dict:
    """AU detection F1 (sklearn, positive class 1) over the annotated rows of each AU.

    y_true (N, A) 0/1, y_prob (N, A) probabilities, mask (N, A) 1 where annotated. Returns
    `per_au` (every AU with an annotated row; an AU without an annotated positive scores 0, sklearn's
    zero_division), `macro_present` = `mean` (the mean over the AUs with at least one annotated
    positive: the usual AU-detection macro F1, fercore's headline), `macro_all` (the mean over every
    AU of `per_au`, which absent AUs pull down), `micro` (F1 of all annotated entries pooled), `absent`
    (the AUs left out of `macro_present`: no annotated positive, or no annotated row) and `n_absent`."""
    y_true, pred = np.asarray(y_true) > 0.5, np.asarray(y_prob) >= threshold
    mask = np.ones_like(y_true) if mask is None else np.asarray(mask) > 0.5
    names = names or [f"au{j}" for j in range(y_true.shape[1])]
    per = {n: float(f1_score(y_true[mask[:, j], j], pred[mask[:, j], j], zero_division=0))
           for j, n in enumerate(names) if mask[:, j].any()}
    present = [n for j, n in enumerate(names) if (y_true[:, j] & mask[:, j]).any()]
    tp, fp, fn = (int((a & b & mask).sum()) for a, b in ((y_true, pred), (~y_true, pred), (y_true, ~pred)))
    macro_present = float(np.mean([per[n] for n in present])) if present else float("nan")
    return {"per_au": per, "mean": macro_present, "macro_present": macro_present,
            "macro_all": float(np.mean(list(per.values()))) if per else float("nan"),
            "micro": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
            "absent": [n for n in names if n not in present], "n_absent": len(names) - len(present)}


def concordance(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cov = ((x - x.mean()) * (y - y.mean())).mean()
    return float(2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2))


def va_ccc(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """CCC of valence and arousal over the annotated samples (mask (N,)), and their mean."""
    keep = np.ones(len(y_true), bool) if mask is None else np.asarray(mask).reshape(-1) > 0.5
    v = concordance(y_true[keep, 0], y_pred[keep, 0])
    a = concordance(y_true[keep, 1], y_pred[keep, 1])
    return {"valence": v, "arousal": a, "mean": (v + a) / 2}


def relabel_quality(given: np.ndarray, final: np.ndarray, reference: np.ndarray) -> dict:
    """How well relabeling repaired the training labels, against `reference` (the clean label
    before injected noise, or the true emotion where known).

    precision: share of relabelled samples whose new label is the reference; recall: share of
    wrongly labelled samples that now carry the reference label; harmed: correctly labelled samples
    relabelled away; detect_precision / detect_recall (sklearn): relabelled vs wrongly labelled,
    whatever the new label.
    """
    given, final, reference = map(np.asarray, (given, final, reference))
    relabelled, wrong = final != given, given != reference
    fixed = final == reference
    return {"n_relabelled": int(relabelled.sum()), "n_wrong": int(wrong.sum()),
            "precision": float(fixed[relabelled].mean()) if relabelled.any() else float("nan"),
            "recall": float(fixed[wrong].mean()) if wrong.any() else float("nan"),
            "harmed": int((relabelled & ~wrong).sum()),
            "detect_precision": float(precision_score(wrong, relabelled, zero_division=0)),
            "detect_recall": float(recall_score(wrong, relabelled, zero_division=0))}


def auxiliary_report(data, estimates: dict[str, np.ndarray]) -> dict:
    """Test metrics of auxiliary estimates (`Method.predict`'s 'au' probabilities and 'va') on a
    FaceSet with such labels (`au_f1` above says what each AU number means):
    au_f1 = au_f1_macro_present (the headline: macro F1 over the AUs with a positive in the split),
    au_f1_micro, au_f1_macro_all (absent AUs counted as F1 0), au_n_absent and au_absent (the AUs
    left out of the present-AU macro), au_f1_per_au; va_ccc
    (mean of valence and arousal), va_ccc_valence, va_ccc_arousal."""
    out: dict = {}
    if "au" in estimates and data.au is not None:
        mask = None if data.au_mask is None else data.au_mask.numpy()
        if mask is None or mask.any():
            names = data.meta.get("au_names") or None
            r = au_f1(data.au.numpy(), estimates["au"], mask, list(names) if names else None)
            out.update(au_f1=r["macro_present"], au_f1_macro_all=r["macro_all"], au_f1_macro_present=r["macro_present"],
                       au_f1_micro=r["micro"], au_n_absent=r["n_absent"], au_absent=r["absent"],
                       au_f1_per_au=r["per_au"])
    if "va" in estimates and data.va is not None:
        mask = None if data.va_mask is None else data.va_mask.numpy()
        if mask is None or mask.reshape(-1).sum() >= 2:
            r = va_ccc(data.va.numpy(), estimates["va"], mask)
            out.update(va_ccc=r["mean"], va_ccc_valence=r["valence"], va_ccc_arousal=r["arousal"])
    return out


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


def calibration(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error of the top-class confidence over `bins` equal-width bins, and the
    reliability-diagram data per bin (mean confidence, accuracy, count)."""
    prob, y = np.asarray(prob, dtype=np.float64), np.asarray(y)
    conf, pred = prob.max(1), prob.argmax(1)
    hit = (pred == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        if n:
            c, a = float(conf[sel].mean()), float(hit[sel].mean())
            ece += n / len(y) * abs(c - a)
        else:
            c = a = float("nan")
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "confidence": c, "accuracy": a, "count": n})
    return {"ece": float(ece), "bins": pd.DataFrame(rows)}


def vote_kl(votes: np.ndarray, prob: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-sample KL(v || p) = sum_k v_k log(v_k / p_k) with 0 log 0 = 0; `votes` rows sum to 1
    (how far a predicted distribution is from the annotators' votes)."""
    v, p = np.asarray(votes, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(v > 0, v * (np.log(np.maximum(v, eps)) - np.log(np.maximum(p, eps))), 0.0)
    return terms.sum(1)


def flip_auroc(score: np.ndarray, flipped: np.ndarray) -> float:
    """AUROC of `score` for wrong (positive) vs right labels, over samples with a finite score."""
    score, flipped = np.asarray(score, dtype=np.float64), np.asarray(flipped, dtype=bool)
    keep = np.isfinite(score)
    if flipped[keep].all() or not flipped[keep].any():
        raise ValueError("flip_auroc needs both wrong and right labels among the samples with a finite score")
    return float(roc_auc_score(flipped[keep], score[keep]))
