"""A timm backbone by name, exposing the feature map and the pooled feature `f`.

Built with `pretrained=False`: fercore never downloads weights (timm needs HF_HUB_OFFLINE=1 set
before import, which `fercore` does on import). Default `resnet18`, 512-d `f` `[lineage: SCN/RUL]`.
"""
from __future__ import annotations

import timm
from torch import Tensor, nn


class Backbone(nn.Module):
    """`forward_features(x)` -> (B, C, h, w) map; `pool(map)` -> (B, C) pooled feature `f`."""

    def __init__(self, name: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        try:
            self.net = timm.create_model(name, pretrained=False, num_classes=0, drop_rate=drop_rate)
        except RuntimeError as e:
            raise ValueError(f"model.backbone: timm cannot build {name!r} ({e})") from None
        self.name = name
        self.num_features: int = self.net.num_features

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x)

    def pool(self, fmap: Tensor) -> Tensor:
        return self.net.forward_head(fmap, pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x))


def init_linear(layer: nn.Linear) -> nn.Linear:
    """timm's default head init, used for every method head so baselines start alike."""
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer
