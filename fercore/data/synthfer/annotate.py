"""Simulated annotators for SynthFER `[ours]`.

An annotator perceives the face's AU intensities with noise, fits each emotion's prototype at
its best scale, paying `expression_evidence` for calling any expression (neutral is the empty
prototype, so weak expressions are confused with it, and near prototypes such as fear/surprise or disgust/anger with
each other), adds a fixed personal
class preference, and votes by sampling from a sharp softmax over the negative residuals.
"""
from __future__ import annotations

import torch

from .facs import prototype_matrix


def annotate(au: torch.Tensor, classes: tuple[str, ...], cfg, gen: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (votes (N, K) counts, majority label (N,)); ties are broken at random by `gen`."""
    n, k = au.shape[0], len(classes)
    proto = prototype_matrix(classes)                               # (K, A)
    pool = 3 * cfg.n_annotators                                      # annotators to draw from
    bias = cfg.annotator_bias * torch.randn(pool, k, generator=gen)
    skill = 0.6 + 0.8 * torch.rand(pool, generator=gen)              # per-annotator noise scale
    votes = torch.zeros(n, k)
    norm2 = (proto ** 2).sum(1).clamp(min=1e-9)                      # (K,)
    for _ in range(cfg.n_annotators):
        who = torch.randint(0, pool, (n,), generator=gen)
        seen = au + cfg.perception_noise * skill[who, None] * torch.randn(au.shape, generator=gen)
        scale = ((seen @ proto.T) / norm2).clamp(min=0)              # best scale per prototype
        fit = seen[:, None, :] - scale[:, :, None] * proto[None]     # (N, K, A)
        residual = (fit ** 2).sum(2) + cfg.expression_evidence * (norm2 > 1e-6)
        logits = -residual / cfg.vote_temperature + bias[who]
        choice = torch.multinomial(torch.softmax(logits, 1), 1, generator=gen).squeeze(1)
        votes[torch.arange(n), choice] += 1
    jitter = torch.rand(n, k, generator=gen) * 0.5                   # breaks ties only
    majority = (votes + jitter).argmax(1)
    return votes, majority
