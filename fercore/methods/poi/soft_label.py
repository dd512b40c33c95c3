"""Objective soft label `q`: the PIN regions' aggregated emotion distribution.

POI abstract: "A potential solution is the evaluation of relatively objective emotional
distributions to help mitigate the ambiguity of subjective annotations" and TRN uses "objective
inference soft labels provided by the PIN" `[abstract]`. How the regions are aggregated is ours:
`q = softmax(mean_k s_k / T)` over the region logits `s_k` `[ours]`; adding the `global` region
to `poi.regions` mixes in a whole-face PIN head.
"""
from __future__ import annotations

from torch import Tensor


def objective_soft_label(region_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """(B, R, K) region logits -> (B, K) distribution `softmax(mean_r logits / T)`."""
    return (region_logits.mean(1) / temperature).softmax(1)
