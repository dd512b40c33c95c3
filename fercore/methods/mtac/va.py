"""Valence-arousal measurement.

MTAC abstract: the second auxiliary task, "valence-arousal measurement", is introduced to
"mitigate category imbalance based on latent dependencies between discrete and continuous
emotions" `[abstract]`. Reconstruction `[ours]`: `va = tanh(Linear(f -> 2))` and the loss
`(1 - CCC_v) + (1 - CCC_a)` over the annotated samples of the batch (the usual AffWild2/ABAW
objective), falling back to the mean squared error when fewer than `min_samples` are annotated
(a batch concordance needs a spread to be meaningful); `kind="mse"` uses the MSE throughout.
"""
from __future__ import annotations

from torch import Tensor, nn


class VAHead(nn.Module):
    """(valence, arousal) in [-1, 1]^2 from the pooled feature."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, 2)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(f).tanh()


def ccc(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Concordance correlation 2 cov(x, y) / (var x + var y + (mean x - mean y)^2) along dim 0
    (population moments, as in the AVEC/ABAW evaluation code); x, y: (N,) or (N, D)."""
    mx, my = x.mean(0), y.mean(0)
    vx, vy = (x - mx).pow(2).mean(0), (y - my).pow(2).mean(0)
    cov = ((x - mx) * (y - my)).mean(0)
    return 2 * cov / (vx + vy + (mx - my).pow(2) + eps)


def va_loss(pred: Tensor, target: Tensor, mask: Tensor, kind: str = "ccc", min_samples: int = 8) -> Tensor:
    """(1 - CCC_v) + (1 - CCC_a) over samples with mask 1 (mask: (N,)); MSE (summed over v and a)
    when `kind == "mse"` or fewer than `min_samples` are annotated; 0 when none is."""
    keep = mask.reshape(-1) > 0.5
    n = int(keep.sum())
    if n == 0:
        return pred.sum() * 0
    p, t = pred[keep].float(), target[keep].float()
    if kind == "mse" or n < max(min_samples, 2):
        return (p - t).pow(2).sum(1).mean()
    return (1 - ccc(p, t)).sum()
