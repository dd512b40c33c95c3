"""EAC, Erasing Attention Consistency (Zhang et al., ECCV 2022)
`[lineage: zyh-uaiaaaa/Erasing-Attention-Consistency, src/model.py, src/loss.py, src/main.py]`.

Class activation maps M_k = sum_c W[k, c] F_c (classifier weights W taken without gradient) of
an erased view and of its horizontally flipped second view must agree once the second is
mirrored back: loss = CE(view 1) + lam * MSE(M(view 1), mirror(M(view 2))). Random erasing plus
flip-consistent attention keep the network looking at the whole face
(docs/baselines.md#5-eac-erasing-attention-consistency).

View 1 is the shared training batch (the loader's flip, shift and erasing, identical for every
baseline) where EAC's own view 1 has Gaussian noise and no flip `[ours]`; the mirror relation
between the views is EAC's either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import NonNeg
from ..models.backbone import init_linear
from . import register
from .base import Method, SampleRecord


@dataclass
class EACParams:
    """EAC's published defaults."""

    lam: NonNeg = 5.0           # weight of the attention consistency loss `[lineage: EAC]`
    # shared: the flip of the erased first view (EAC with the clean label file) |
    second_view: Literal["auto", "shared", "independent"] = "auto"
                                # independent: the same geometry flipped, its own erase box (EAC with
                                # noise files) | auto: EAC's rule, independent iff data.noise != none `[lineage: EAC]`


def class_activation_maps(fmap: Tensor, weight: Tensor) -> Tensor:
    """M[b, k] = sum_c weight[k, c] * fmap[b, c]: (B, C, h, w) x (K, C) -> (B, K, h, w)."""
    return torch.einsum("bchw,kc->bkhw", fmap, weight)


def mirror(maps: Tensor) -> Tensor:
    """EAC's grid_sample with the x coordinate negated (bilinear, border, align_corners=True) is an
    exact left-right mirror: a flip of the last axis."""
    return maps.flip(-1)


def consistency(cam1: Tensor, cam2: Tensor) -> Tensor:
    """Per-sample mean squared difference between M(view 1) and mirror(M(view 2)); its batch mean
    is EAC's `F.mse_loss(att_map1, att_map2_flip)`."""
    return (cam1 - mirror(cam2)).pow(2).flatten(1).mean(1)


@register
class EAC(Method):
    """CAM flip consistency under random erasing `[lineage: EAC]`."""

    name = "eac"
    Params = EACParams
    noise_score = ("consistency", False)

    def __init__(self, cfg, train) -> None:
        super().__init__(cfg, train)
        view = self.params.second_view
        self.second_view = view if view != "auto" else ("shared" if cfg.data.noise == "none" else "independent")
        self.fc = init_linear(nn.Linear(self.backbone.num_features, self.num_classes))
        self.record = SampleRecord(self.num_train)

    def _view(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.backbone.forward_features(x)
        return self.fc(self.backbone.pool(fmap)), class_activation_maps(fmap, self.fc.weight.detach())

    def forward(self, batch):
        x = batch["image"]
        if not self.training:
            return {"logits": self.fc(self.backbone(x))}
        logits, cam1 = self._view(x)
        _, cam2 = self._view(batch["image2"] if self.second_view == "independent" else x.flip(3))
        return {"logits": logits, "cam1": cam1, "cam2": cam2}

    def loss(self, batch, out, state):
        ce = F.cross_entropy(out["logits"], batch["label"])
        per_sample = consistency(out["cam1"].float(), out["cam2"].float())
        self.record.write(batch["index"], per_sample, state.epoch)
        flip = per_sample.mean()
        return ce + self.params.lam * flip, {"ce": ce.detach(), "consistency": flip.detach()}

    def diagnostics(self):
        return {"consistency": self.record.values}

    def loader_options(self) -> dict:
        return {"second_view": self.second_view == "independent"}

    def describe(self) -> dict:
        return {"second_view": self.second_view}
