"""Target Recognition Network (TRN): learns from the annotation and from PIN's soft label.

POI abstract: "the Target Recognition Network (TRN) integrates subjective emotion annotations and
objective inference soft labels provided by the PIN, fostering an understanding of inherent
facial expression diversity" and "tackles the issue of subjective annotation ambiguity through
dynamic knowledge transfer" `[abstract]`. TRN is a separate backbone with a linear classifier;
its loss is `(1 - w) CE(p, y) + w T^2 KL(q_T || p_T)` per sample, with the dynamic weight `w`
from the uncertainty module `[ours]`.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .mutual import kl_div


def transfer_loss(logits: Tensor, labels: Tensor, q: Tensor, w: Tensor, temperature: float) -> tuple[Tensor, dict]:
    """Mean over the batch of `(1 - w) CE(logits, y) + w T^2 KL(q || softmax(logits / T))`.

    `q` is PIN's soft label at temperature T (detached); `w` (B,) in [0, 1]. Returns the loss and
    the batch means of the two terms.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    kd = temperature ** 2 * kl_div(q, (logits / temperature).log_softmax(1))
    loss = ((1 - w) * ce + w * kd).mean()
    return loss, {"trn_ce": ce.detach().mean(), "trn_kd": kd.detach().mean()}
