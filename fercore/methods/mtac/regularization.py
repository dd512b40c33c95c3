"""Weighted regularization module (WRM).

MTAC abstract: the confidence estimation block and "a weighted regularization module are applied
to highlight solid samples and suppress uncertain samples in every batch" `[abstract]`; the
conference precursor ULC-AG says the module also suppresses category imbalance.
Reconstruction: SCN's rank regularisation over each batch's confidences,
`L_wr = max(0, m1 - (mean c_high - mean c_low))` with the top `beta` fraction as the high group
`[lineage: SCN]` (the function is SCN's, `fercore.methods.scn.rank_regularization`), plus
optional class weights for the expression loss (`none | inverse | sqrt`) computed from the
training labels `[ours]`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..scn import high_group_mask, rank_regularization

__all__ = ["class_weights", "high_group_mask", "rank_regularization"]


def class_weights(labels: Tensor, num_classes: int, mode: str = "inverse") -> Tensor:
    """Per-class weights of the expression loss, normalised so the mean weight over `labels` is 1.

    inverse: w_k proportional to 1 / n_k; sqrt: to 1 / sqrt(n_k); none: all ones. Empty classes
    count as one sample (a sample relabelled into them later still gets a finite weight).
    """
    if mode == "none":
        return torch.ones(num_classes)
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    n = counts.clamp(min=1)
    w = 1 / n if mode == "inverse" else n.rsqrt()
    return w * len(labels) / (w * counts).sum()
