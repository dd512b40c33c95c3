"""Uncertainty estimation module and the dynamic transfer weight `w`.

POI abstract: "we introduce an uncertainty estimation module to quantify and balance facial
expression confidence. This module enables a flexible approach to dealing with the uncertainties
of subjective annotations" `[abstract]`. Ours `[ours]`: `u = sigmoid(MLP(f_trn))` per sample;
`w = u * ramp(epoch)`, so TRN leans on PIN's soft label where the annotation is uncertain, and
only after PIN has had time to learn. `u` is trained through `w` in the TRN loss, whose gradient
`ramp * (KD - CE)` alone would drive every `u` to 1 whenever the soft-label term is the cheaper
one (collapse). A regulariser prevents that: `-log(1 - u)` (default; a sample then keeps
`u = 1 - lambda / (CE - KD)` where CE - KD > lambda, else 0, the price of asking PIN for help) or
SCN's rank margin between the most and least uncertain fraction of the batch `[lineage: SCN]`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ramp(epoch: int, epochs: int, start: float = 0.0, length: float = 1 / 6) -> float:
    """Sigmoid-shaped ramp-up `exp(-5 (1 - t)^2)` `[lineage: Laine & Aila 2017, temporal ensembling]`.

    `t = (epoch / epochs - start) / length` clipped to [0, 1]; 0 before `start`. `start` and
    `length` are fractions of the run (1/6 of 60 epochs = 10 epochs), so profiles of any length
    keep the same shape. `epoch` is 0-based.
    """
    progress = epoch / max(epochs, 1)
    if progress < start:
        return 0.0
    if length <= 0:
        return 1.0
    t = min(1.0, (progress - start) / length)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class UncertaintyHead(nn.Module):
    """u = sigmoid(Linear-ReLU-Linear(f)), one uncertainty per sample in (0, 1) (docs/poi.md).

    With `num_classes` > 0 the MLP also sees the annotation as a one-hot vector, `[f, e_y]`
    `[ours]`: whether an annotation is doubtful depends on the annotation, which `f` alone can
    only learn by memorising each sample. For unlabelled images (`fercore predict`, whose batches
    carry no label) the predicted class stands in for it.
    """

    def __init__(self, in_dim: int, hidden: int = 128, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mlp = nn.Sequential(nn.Linear(in_dim + num_classes, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, f: Tensor, label: Tensor | None = None) -> Tensor:
        if self.num_classes:
            f = torch.cat([f, F.one_hot(label, self.num_classes).to(f.dtype)], 1)
        return torch.sigmoid(self.mlp(f)).squeeze(1)


def log_penalty(u: Tensor, eps: float = 1e-6) -> Tensor:
    """mean(-log(1 - u)): asking for PIN's soft label has a price, so u stays low unless CE - KD is large."""
    return -torch.log1p(-u.clamp(max=1 - eps)).mean()


def rank_penalty(u: Tensor, beta: float = 0.3, margin: float = 0.15) -> Tensor:
    """max(0, margin - (mean of the top `beta` fraction of u - mean of the rest)) `[lineage: SCN]`."""
    n = u.shape[0]
    k = min(max(1, int(round(beta * n))), n - 1) if n > 1 else 0
    if k == 0:
        return u.new_zeros(())
    s = u.sort(descending=True).values
    return torch.clamp(margin - (s[:k].mean() - s[k:].mean()), min=0)
