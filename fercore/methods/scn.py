"""SCN, Self-Cure Network (Wang et al., CVPR 2020) `[lineage: kaiwang960112/Self-Cure-Network, src/train.py]`.

Three parts (docs/baselines.md#3-scn-self-cure-network): a self-attention importance weight alpha = sigmoid(Linear(f))
that scales the logits, a rank regularisation that keeps the high-importance group of each batch
`margin1` above the low group, and a relabel rule that, from `relabel_epoch` on, writes the
prediction into the label table when p_max - p_label > `margin2`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Fraction, NonNeg, PosInt, Prob
from ..models.backbone import init_linear
from . import register
from .base import Method, SampleRecord, TrainState


@dataclass
class SCNParams:
    """SCN's published defaults; each one a parameter."""

    beta: Fraction = 0.7        # high-importance fraction of a batch `[lineage: SCN code]`
    margin1: NonNeg = 0.07      # rank margin: SCN README for batch 64 (paper: 0.15 at batch 1024) `[lineage: SCN]`
    margin2: Prob = 0.2         # relabel margin on p_max - p_label `[lineage: SCN code]`
    # 1-based first relabelling epoch (SCN: 10 of 70); quick/smoke profiles shorten it `[ours]`
    relabel_epoch: PosInt = 10
    # all: every sample, as SCN's code does | low: only the low-importance group,
    relabel_group: Literal["all", "low"] = "all"
                                # as the paper describes (SCN #12) `[lineage: SCN]`
    rr_weight: NonNeg = 1.0     # weight of the rank regularisation `[lineage: SCN code]`


def rank_regularization(alpha: Tensor, beta: float, margin: float) -> Tensor:
    """L_RR = max(0, margin - (mean alpha_high - mean alpha_low)); the high group is the top
    int(beta * B) importance weights of the batch. Zero when a group would be empty."""
    a = alpha.reshape(-1)
    k = int(beta * a.numel())
    if k == 0 or k == a.numel():
        return a.sum() * 0
    ranked = a.sort(descending=True).values
    return (margin - (ranked[:k].mean() - ranked[k:].mean())).clamp(min=0)


def high_group_mask(alpha: Tensor, beta: float) -> Tensor:
    """True for the top int(beta * B) importance weights of the batch."""
    a = alpha.reshape(-1)
    mask = torch.zeros_like(a, dtype=torch.bool)
    mask[a.topk(int(beta * a.numel())).indices] = True
    return mask


def relabel_rule(prob: Tensor, label: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """SCN's relabel rule on softmax probabilities: (mask p_max - p_label > margin, argmax, p_max - p_label)."""
    pmax, pred = prob.max(1)
    score = pmax - prob.gather(1, label.view(-1, 1)).squeeze(1)
    return score > margin, pred, score


@register
class SCN(Method):
    """Importance weighting, rank regularisation and relabelling `[lineage: SCN]`."""

    name = "scn"
    Params = SCNParams
    noise_score = ("importance", True)

    def __init__(self, cfg, train) -> None:
        super().__init__(cfg, train)
        self.importance = init_linear(nn.Linear(self.backbone.num_features, 1))
        self.fc = init_linear(nn.Linear(self.backbone.num_features, self.num_classes))
        self.record = SampleRecord(self.num_train)

    def forward(self, batch):
        f = self.backbone(batch["image"])
        alpha = torch.sigmoid(self.importance(f))
        return {"logits": alpha * self.fc(f), "importance": alpha.squeeze(1), "feature": f}

    def loss(self, batch, out, state):
        ce = F.cross_entropy(out["logits"], batch["label"])
        rr = rank_regularization(out["importance"], self.params.beta, self.params.margin1)
        return ce + self.params.rr_weight * rr, {"ce": ce.detach(), "rr": rr.detach(),
                                                 "importance": out["importance"].detach().mean()}

    def predict(self, batch):
        out = self(batch)
        return {"logits": out["logits"], "importance": out["importance"]}

    @torch.no_grad()
    def after_step(self, batch, out, state: TrainState) -> None:
        """Record importance; from `relabel_epoch` relabel with the same batch's softmax (SCN's order)."""
        alpha = out["importance"].detach()
        self.record.write(batch["index"], alpha, state.epoch)
        if state.epoch + 1 < self.params.relabel_epoch:
            return
        mask, pred, score = relabel_rule(out["logits"].detach().float().softmax(1), batch["label"],
                                         self.params.margin2)
        if self.params.relabel_group == "low":
            mask &= ~high_group_mask(alpha, self.params.beta)
        state.relabel(batch["index"][mask], pred[mask], score[mask])

    def diagnostics(self):
        return {"importance": self.record.values}
