"""Cross-entropy baseline: backbone, linear classifier, CE on the (possibly noisy) labels."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..models.backbone import init_linear
from . import register
from .base import Method


@register
class CE(Method):
    """The plain baseline every table starts from `[lineage: SCN/RUL/EAC baseline rows]`."""

    name = "ce"

    def __init__(self, cfg, train) -> None:
        super().__init__(cfg, train)
        self.fc = init_linear(nn.Linear(self.backbone.num_features, self.num_classes))

    def forward(self, batch):
        f = self.backbone(batch["image"])
        return {"logits": self.fc(f), "feature": f}

    def loss(self, batch, out, state):
        loss = F.cross_entropy(out["logits"], batch["label"])
        return loss, {"ce": loss.detach()}
