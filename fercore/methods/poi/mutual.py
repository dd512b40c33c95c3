"""Mutual learning among facial subregions.

POI abstract: "To reduce over-reliance on priors and facilitate objective emotional inference,
PIN aggregates inferential knowledge from various key facial subregions, encouraging mutual
learning" `[abstract]`. Each region's distribution at temperature T is pulled towards the
detached ensemble `q` by `T^2 KL(q || p_k)` (default), or, as in deep mutual learning, towards
every other region, `T^2 KL(sg(p_j) || p_k)` averaged over j != k. T = 4 `[lineage: DUML]`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .soft_label import objective_soft_label


def kl_div(target: Tensor, log_pred: Tensor) -> Tensor:
    """Per-sample KL(target || pred) = sum_k t_k (log t_k - log p_k), with 0 log 0 = 0."""
    return (torch.xlogy(target, target) - target * log_pred).sum(-1)


def ensemble_mutual_loss(region_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """sum_k T^2 KL(sg(q_T) || softmax(s_k / T)), averaged over the batch."""
    q = objective_soft_label(region_logits.detach(), temperature).unsqueeze(1)   # (B, 1, K)
    log_p = (region_logits / temperature).log_softmax(-1)                         # (B, R, K)
    return temperature ** 2 * kl_div(q.expand_as(log_p), log_p).sum(1).mean()


def pairwise_mutual_loss(region_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """sum_k mean_{j != k} T^2 KL(sg(p_j,T) || p_k,T), averaged over the batch."""
    r = region_logits.shape[1]
    if r < 2:
        return region_logits.new_zeros(())
    log_p = (region_logits / temperature).log_softmax(-1)            # (B, R, K)
    p = log_p.detach().exp()
    # pair[b, j, k] = KL(p_j || p_k)
    pair = (torch.xlogy(p, p).sum(-1).unsqueeze(2) - torch.einsum("bjc,bkc->bjk", p, log_p))
    return temperature ** 2 * pair.sum((1, 2)).mean() / (r - 1)
