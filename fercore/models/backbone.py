"""A timm backbone by name, exposing the feature map and the pooled feature `f`.

Built with `pretrained=False`: fercore never downloads weights (timm needs HF_HUB_OFFLINE=1 set
before import, which `fercore` does on import). Default `resnet18`, 512-d `f` `[lineage: SCN/RUL]`.
"""
from __future__ import annotations

import difflib

import timm
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from . import small  # noqa: F401  (registers fercore's small ResNets with timm)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: any CUDA device, or a CPU whose oneDNN has bf16 kernels
    (AVX-512 BF16 or AMX). On other CPUs (AVX2) torch emulates bf16 and autocast slows training several
    times (BENCHMARKS.md), so `train.amp=fast` and the pretraining's `amp=fast` leave it off there."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def unknown_model(name: str, key: str) -> ConfigError | None:
    """A ConfigError naming `key` if timm has no model `name` (with the closest names), else None."""
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else " (see timm.list_models())"
    return ConfigError(f"config key '{key}': timm has no model {name!r}{hint}")


class Backbone(nn.Module):
    """`forward_features(x)` -> (B, C, h, w) map; `pool(map)` -> (B, C) pooled feature `f`."""

    def __init__(self, name: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        error = unknown_model(name, "model.backbone")
        if error is not None:
            raise error
        try:
            self.net = timm.create_model(name, pretrained=False, num_classes=0, drop_rate=drop_rate)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"config key 'model.backbone': timm cannot build {name!r} ({e})") from None
        self.name = name
        self.num_features: int = self.net.num_features

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x)

    def pool(self, fmap: Tensor) -> Tensor:
        return self.net.forward_head(fmap, pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x))


class FeatureStem(nn.Module):
    """The layers of timm model `name` up to output stride `stride`: (B, 3, H, W) -> (B, C, H/s, W/s).

    Built with timm's `features_only` (only the stages up to that stride are kept), e.g. POI's
    PIN stem, a backbone cut at stride 8 (28x28 at 224 px).
    """

    def __init__(self, name: str, stride: int, key: str = "model.backbone") -> None:
        super().__init__()
        error = unknown_model(name, key)
        if error is not None:
            raise error
        try:
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"config key '{key}': timm cannot build {name!r} with features_only ({e})") from None
        strides = probe.feature_info.reduction()
        if stride not in strides:
            raise ConfigError(f"config key '{key}': {name} has feature maps at strides {strides}, not {stride}")
        index = strides.index(stride)
        self.net = timm.create_model(name, pretrained=False, features_only=True, out_indices=(index,))
        self.name, self.stride = name, stride
        self.num_features: int = self.net.feature_info.channels()[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[0]


def init_linear(layer: nn.Linear) -> nn.Linear:
    """timm's default head init, used for every method head so baselines start alike."""
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer
