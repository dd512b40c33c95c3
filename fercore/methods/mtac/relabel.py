"""Re-labeling guided by feature-level similarity.

MTAC abstract: "a re-labeling strategy guided by feature-level similarity constraint further
generates new labels for identified uncertain samples to promote model learning" `[abstract]`;
ULC-AG speaks of feature similarity to semantic templates. Reconstruction `[ours, after SCN's
relabel rule]`: class templates are an exponential moving average (momentum 0.9) of the
L2-normalised features of each batch's high-confidence samples per (current) label. Features are
centred first by an EMA of the batch mean feature (`center`, default on): pooled post-ReLU features
all lie in the positive orthant, where the cosines of a face to all class templates differ by a few
hundredths, so a margin of 0.2 would never be met (measured on SynthFER: 99th percentile 0.12). A
low-confidence sample with label y is relabelled to k* = argmax_k cos(f, t_k) when

    cos(f, t_k*) - cos(f, t_y) > m2 (0.2)   and   argmax of the classifier == k*,

never before the start epoch (`first_relabel_epoch`). Candidates are the batch's low-confidence
group (`relabel_group=low`; every sample without a confidence block); `relabel_votes` > 1 asks for
that many consecutive visits pointing to the same k*. With `base=scn`, SCN's own rule
(p_max - p_label > scn_margin2, every sample, as SCN's code) also relabels; where both fire, the
similarity rule's k* is kept `[ours]`. The whole rule is `relabel_step`; MTAC calls it after each
optimiser step. New labels are written into the engine's per-sample label table
(`TrainState.relabel`, checkpointed every epoch) with the similarity margin as the event's score;
the templates are buffers, so they are checkpointed with the model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def first_relabel_epoch(start: float, epochs: int) -> int:
    """The 1-based first epoch that relabels. `start >= 1`: that epoch; `0 < start < 1`: that
    fraction of the run, rounded (1/6 of 60 epochs = epoch 10, SCN's start) and at least 1."""
    if start >= 1:
        return int(start)
    if start <= 0:
        raise ValueError(f"relabel start must be > 0, got {start}")
    return max(1, int(math.floor(start * epochs + 0.5)))


class ClassTemplates(nn.Module):
    """EMA class templates t_k (K, D) of normalised (optionally centred) features; `count[k]`
    updates so far (0: unset); `mean` the EMA of the batch mean feature used for centring."""

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.9, center: bool = True) -> None:
        super().__init__()
        self.momentum, self.center = momentum, center
        self.register_buffer("templates", torch.zeros(num_classes, dim))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def embed(self, f: Tensor) -> Tensor:
        """The normalised feature the templates and similarities use: (f - mean) / |f - mean|."""
        f = f.detach().float()
        return F.normalize(f - self.mean if self.center else f, dim=1)

    @torch.no_grad()
    def update(self, f: Tensor, labels: Tensor, select: Tensor) -> None:
        """mean <- m mean + (1 - m) batch mean of f (all samples); t_k <- m t_k + (1 - m) mean of
        the selected embedded features labelled k (a first update sets the value instead)."""
        if self.center:
            batch_mean = f.detach().float().mean(0)
            self.mean.copy_(batch_mean if self.steps == 0
                            else self.momentum * self.mean + (1 - self.momentum) * batch_mean)
        self.steps += 1
        z = self.embed(f)[select]
        y = labels[select]
        if len(y) == 0:
            return
        k = self.templates.shape[0]
        sums = torch.zeros_like(self.templates).index_add_(0, y, z)
        n = torch.bincount(y, minlength=k)
        present = n > 0
        means = sums[present] / n[present, None].float()
        old = self.templates[present]
        fresh = (self.count[present] == 0)[:, None]
        self.templates[present] = torch.where(fresh, means, self.momentum * old + (1 - self.momentum) * means)
        self.count += present.long()

    def similarity(self, f: Tensor) -> Tensor:
        """cos(f, t_k) (B, K); NaN for classes without a template yet."""
        cos = self.embed(f) @ F.normalize(self.templates, dim=1).T
        return cos.masked_fill((self.count == 0)[None, :], math.nan)


def similarity_margin(cos: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """(k*, cos(f, t_k*) - cos(f, t_y)) with k* the most similar class with a template; the
    margin is NaN where the labelled class has no template."""
    best = cos.nan_to_num(-math.inf).argmax(1)
    margin = cos.gather(1, best[:, None]).squeeze(1) - cos.gather(1, label[:, None]).squeeze(1)
    return best, margin


def relabel_decision(cos: Tensor, logits: Tensor, label: Tensor, candidate: Tensor,
                     margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """Which samples to relabel: candidates whose similarity margin exceeds `margin` and whose
    classifier argmax is the most similar class k*. Returns (mask, k*, similarity margin)."""
    best, gap = similarity_margin(cos, label)
    mask = candidate & (gap > margin) & (logits.argmax(1) == best) & (best != label)
    return mask, best, gap


def relabel_step(p, *, epoch: int, epochs: int, cos: Tensor | None, logits: Tensor, label: Tensor,
                 low: Tensor | None, index: Tensor, streak: Tensor, target: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor] | None:
    """MTAC's relabel decision for one batch (module docstring), or None before the start epoch.

    `p`: MTAC's parameters; `cos`: similarities to the class templates (None: relabel=none);
    `logits`: the classifier's (un-mixed) logits; `low`: the batch's low-confidence group (None:
    no confidence block); `streak`/`target`: the per-sample vote buffers (updated in place).
    Returns (mask, new label, score) over the batch."""
    from ..scn import relabel_rule

    if epoch + 1 < first_relabel_epoch(p.relabel_start, epochs):
        return None
    mask = torch.zeros_like(label, dtype=torch.bool)
    new, score = label.clone(), torch.zeros(len(label), device=label.device)
    if cos is not None:
        candidate = low if p.relabel_group == "low" and low is not None else torch.ones_like(mask)
        mask, new, score = relabel_decision(cos, logits, label, candidate, p.margin2)
        if p.relabel_votes > 1:
            run = torch.where(mask, torch.where(target[index] == new, streak[index] + 1, 1), 0)
            streak[index] = run
            target[index] = torch.where(mask, new, -1)
            mask = mask & (run >= p.relabel_votes)
    if p.base == "scn":
        flagged, pred, scn_score = relabel_rule(logits.softmax(1), label, p.scn_margin2)
        only_scn = flagged & ~mask
        new = torch.where(only_scn, pred, new)
        score = torch.where(only_scn, scn_score, score)
        mask = mask | flagged
    return mask, new, score
