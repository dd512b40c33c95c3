"""RUL, Relative Uncertainty Learning (Zhang et al., NeurIPS 2021)
`[lineage: zyh-uaiaaaa/Relative-Uncertainty-Learning, src/rul.py, src/utils.py]`.

Two heads on the backbone's feature map give a feature mu and a log-variance; the per-sample
uncertainty u = mean(exp(log-variance)) weighs a mixup of each sample's feature with a random
partner's, w = u / (u + u_partner), and the "add-up" loss 0.5 CE(mix, y) + 0.5 CE(mix, y_partner)
trains both. Inference uses mu alone (docs/baselines.md#4-rul-relative-uncertainty-learning).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import OptimConfig, PosInt, Prob
from ..models.backbone import Backbone, init_linear
from . import register
from .base import Method, SampleRecord


@dataclass
class RULParams:
    """RUL's published defaults."""

    feature_dim: PosInt = 64      # size of mu and of the log-variance `[lineage: RUL]`
    dropout: Prob = 0.4       # dropout inside both heads `[lineage: RUL]`


def feature_map_shape(backbone: Backbone, channels: int, image_size: int) -> tuple[int, int, int]:
    """(C, h, w) of `backbone.forward_features` at `image_size`, from one dry forward in eval mode."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        fmap = backbone.forward_features(torch.zeros(1, channels, image_size, image_size))
    backbone.train(was_training)
    return tuple(fmap.shape[1:])


def rul_head(shape: tuple[int, int, int], dim: int, dropout: float) -> nn.Sequential:
    """BatchNorm2d(C, eps=2e-5, affine=False) -> Dropout -> flatten -> Linear(C*h*w -> dim) ->
    BatchNorm1d(dim, eps=2e-5), as RUL's `res18feature.mu` / `log_var` `[lineage: RUL src/rul.py]`."""
    c, h, w = shape
    return nn.Sequential(nn.BatchNorm2d(c, eps=2e-5, affine=False), nn.Dropout(dropout), nn.Flatten(),
                         nn.Linear(c * h * w, dim), nn.BatchNorm1d(dim, eps=2e-5))


def uncertainty_mixup(mu: Tensor, logvar: Tensor, perm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mix each feature with its partner `perm`: returns (mixed, u, w) with u = mean(exp(logvar)),
    w = u / (u + u[perm]) the weight of the sample's own feature (RUL's `mixup_data`)."""
    u = logvar.exp().mean(1, keepdim=True)
    w = u / (u + u[perm])
    return w * mu + (1 - w) * mu[perm], u.squeeze(1), w.squeeze(1)


def add_up_loss(logits: Tensor, label: Tensor, perm: Tensor, reduction: str = "mean",
                weight: Tensor | None = None) -> Tensor:
    """0.5 CE(logits, y) + 0.5 CE(logits, y[perm]): the uncertainty acts only through the mix.
    `reduction="none"` gives the per-sample terms and `weight` class weights (MTAC with base=rul)."""
    return (0.5 * F.cross_entropy(logits, label, weight=weight, reduction=reduction)
            + 0.5 * F.cross_entropy(logits, label[perm], weight=weight, reduction=reduction))


@register
class RUL(Method):
    """Uncertainty-weighted feature mixup with the add-up loss `[lineage: RUL]`."""

    name = "rul"
    Params = RULParams
    noise_score = ("uncertainty", False)

    def __init__(self, cfg, train) -> None:
        super().__init__(cfg, train)
        p = self.params
        shape = feature_map_shape(self.backbone, self.facts.channels, self.facts.image_size)
        self.mu = rul_head(shape, p.feature_dim, p.dropout)
        self.logvar = rul_head(shape, p.feature_dim, p.dropout)
        self.fc = init_linear(nn.Linear(p.feature_dim, self.num_classes))
        self.record = SampleRecord(self.num_train)

    def forward(self, batch):
        fmap = self.backbone.forward_features(batch["image"])
        mu, logvar = self.mu(fmap), self.logvar(fmap)
        if not self.training:
            return {"logits": self.fc(mu), "uncertainty": logvar.exp().mean(1)}
        perm = torch.randperm(len(mu), device=mu.device)
        mixed, u, w = uncertainty_mixup(mu, logvar, perm)
        return {"logits": self.fc(mixed), "plain_logits": self.fc(mu), "uncertainty": u, "mix_weight": w,
                "perm": perm}

    def loss(self, batch, out, state):
        loss = add_up_loss(out["logits"], batch["label"], out["perm"])
        self.record.write(batch["index"], out["uncertainty"], state.epoch)
        return loss, {"add_up": loss.detach(), "uncertainty": out["uncertainty"].detach().mean()}

    def predict(self, batch):
        out = self(batch)
        return {"logits": out["logits"], "uncertainty": out["uncertainty"]}

    def diagnostics(self):
        return {"uncertainty": self.record.values}

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """Backbone and both heads at `optim.lr`, the final classifier at `head_lr` `[lineage: RUL]`."""
        fc = list(self.fc.parameters())
        ids = {id(p) for p in fc}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr": optim.lr, "name": "backbone"},
                {"params": fc, "lr": optim.head_lr or optim.lr, "name": "heads"}]
