"""What notebook 03 measures about POI, as functions a test can reach.

- `vote_kl`: per-sample KL(votes || p), how far a distribution is from the annotators' votes.
- `soften`: a distribution at temperature T from its T = 1 version.
- `flip_auroc`: AUROC (scikit-learn) of a score for flipped vs clean training labels.
- `boxes_to_pixels`: feature-map boxes in image pixels, for drawing the subregions.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score
from torch import Tensor


def vote_kl(votes: np.ndarray, prob: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-sample KL(v || p) = sum_k v_k log(v_k / p_k) with 0 log 0 = 0; `votes` rows sum to 1."""
    v, p = np.asarray(votes, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(v > 0, v * (np.log(np.maximum(v, eps)) - np.log(np.maximum(p, eps))), 0.0)
    return terms.sum(1)


def soften(prob: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) from softmax(z): p^(1/T), renormalised."""
    z = np.log(np.maximum(np.asarray(prob, dtype=np.float64), 1e-30)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def flip_auroc(score: np.ndarray, flipped: np.ndarray) -> float:
    """AUROC of `score` for flipped (positive) vs clean samples, over samples with a finite score."""
    score, flipped = np.asarray(score), np.asarray(flipped, dtype=bool)
    keep = np.isfinite(score)
    if flipped[keep].all() or not flipped[keep].any():
        raise ValueError("flip_auroc needs both flipped and clean samples with a finite score")
    return float(roc_auc_score(flipped[keep], score[keep]))


def boxes_to_pixels(boxes: Tensor, image_size: int, map_size: int) -> Tensor:
    """(..., 4) boxes in feature-map units -> pixel-edge coordinates for drawing on the image
    (matplotlib's imshow puts pixel i at [i - 0.5, i + 0.5])."""
    return boxes * (image_size / map_size) - 0.5
