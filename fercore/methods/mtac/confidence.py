"""Confidence estimation block (CEB).

MTAC abstract: "a confidence estimation block and a weighted regularization module are applied to
highlight solid samples and suppress uncertain samples in every batch" `[abstract]`.
Reconstruction: one confidence `c = sigmoid(MLP(f))` per sample `[lineage: SCN importance
branch, sigmoid(Linear(f))]`; `hidden=0` gives SCN's single linear layer. `c` weighs the
expression loss in one of two ways (`mtac.confidence`):
* `logit`: SCN-style logit scaling, `CE(c * z, y)` `[lineage: SCN]` (default): a small `c`
  flattens the softmax, so an uncertain sample pushes the classifier less;
* `loss`: per-sample loss weights normalised over the batch, `sum_i c_i l_i / sum_i c_i` `[ours]`:
  the gradient on `c_i` is `(l_i - L) / sum c`, so samples with a loss above the batch's weighted
  mean lose confidence.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...models.backbone import init_linear


class ConfidenceBlock(nn.Module):
    """c = sigmoid(MLP(f)) in (0, 1), one scalar per sample."""

    def __init__(self, in_dim: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                     init_linear(nn.Linear(hidden, 1)))
        else:
            self.mlp = init_linear(nn.Linear(in_dim, 1))

    def forward(self, f: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(f)).squeeze(1)


def confidence_weighted_mean(per_sample: Tensor, c: Tensor) -> Tensor:
    """sum_i c_i l_i / sum_i c_i: the `loss` mode's batch loss (gradients reach c)."""
    return (c * per_sample).sum() / c.sum().clamp(min=1e-8)
