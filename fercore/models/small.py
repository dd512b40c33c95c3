"""Small ResNets for faces of 32 px whose last map keeps a spatial layout, registered with timm `[ours]`.

Every timm ResNet reduces its input by 32, so a 32 px face leaves a 1x1 last map: EAC's attention
consistency (docs/baselines.md#5-eac-erasing-attention-consistency) then compares two numbers, and
POI's facial subregions share the few cells of a stride-8 map. `fercore_resnet8t` keeps resnet10t's
design where it is cheap and drops what destroys the layout:
* resnet10t's tiered 3-conv stem (stride 2) `[lineage: timm resnet10t]`, without the max pool that
  follows it (stride 4 -> 2);
* three basic-block stages of one block each at 32 / 64 / 128 channels (strides 1, 2, 2) instead of
  four at 64 / 128 / 256 / 512, with average-pool shortcuts `[lineage: timm resnet10t, avg_down]`.
Output stride 8: a 32 px face gives a 128 x 4 x 4 last map (EAC's CAM) and a 64 x 8 x 8 map at stride
4 (POI's PIN stem, `poi.stride=4`). `fercore_resnet8t_w2` doubles every width (64 / 128 / 256).
`fercore_resnet10t_os8` keeps resnet10t's stem with its max pool and its first three stages
(64 / 128 / 256), the third at stride 1 (dilated), and drops the fourth: the same output stride 8;
`_w075` and `_w050` are it at 3/4 and 1/2 of the width. BENCHMARKS.md measures their cost and accuracy
against resnet10t (the profiles use `fercore_resnet10t_os8`; the others are the measured alternatives).
"""
from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

# timm's registry wants a config per model; there are no pretrained weights (fercore.pretrain makes its own)
default_cfgs = generate_default_cfgs({name: {"num_classes": 0, "input_size": (3, 32, 32), "pool_size": (4, 4),
                                             "first_conv": "conv1.0", "classifier": "fc"}
                                      for name in ("fercore_resnet8t", "fercore_resnet8t_w2",
                                                   "fercore_resnet10t_os8", "fercore_resnet10t_os8_w075",
                                                   "fercore_resnet10t_os8_w050")})


class ThreeStageResNet(ResNet):
    """timm's ResNet with as many stages as `channels` (3 here): timm's `forward_features` calls `layer4`,
    so a 3-stage net gets an identity there."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not hasattr(self, "layer4"):
            self.layer4 = nn.Identity()


class NoPoolResNet(ThreeStageResNet):
    """... without the stem's max pool; the feature info's reductions are halved after the stem, so
    `features_only` (POI's PIN stem) finds the strides the net really has."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.maxpool = nn.Identity()
        for info in self.feature_info[1:]:
            info["reduction"] //= 2


def _create(variant: str, widths: tuple[int, ...], stem_width: int, pretrained: bool = False,
            cls: type = NoPoolResNet, **kwargs) -> ResNet:
    args = dict(block=BasicBlock, layers=(1,) * len(widths), channels=widths, stem_width=stem_width,
                stem_type="deep_tiered", avg_down=True)
    # features_only: one feature per entry of feature_info (the stem and each stage), read by timm's list wrapper
    return build_model_with_cfg(cls, variant, pretrained,
                                feature_cfg={"out_indices": tuple(range(len(widths) + 1))}, **dict(args, **kwargs))


@register_model
def fercore_resnet8t(pretrained: bool = False, **kwargs) -> ResNet:
    """Tiered stem without max pool + 3 basic blocks at 32/64/128 channels: output stride 8."""
    return _create("fercore_resnet8t", (32, 64, 128), 16, pretrained, **kwargs)


@register_model
def fercore_resnet8t_w2(pretrained: bool = False, **kwargs) -> ResNet:
    """`fercore_resnet8t` at twice the width (64/128/256 channels)."""
    return _create("fercore_resnet8t_w2", (64, 128, 256), 32, pretrained, **kwargs)


@register_model
def fercore_resnet10t_os8(pretrained: bool = False, **kwargs) -> ResNet:
    """resnet10t's stem (with its max pool) and first three stages (64/128/256 channels), the third at
    stride 1 (dilated, timm's `output_stride=8`), without the fourth: output stride 8."""
    return _create("fercore_resnet10t_os8", (64, 128, 256), 32, pretrained, cls=ThreeStageResNet,
                   **dict({"output_stride": 8}, **kwargs))


@register_model
def fercore_resnet10t_os8_w075(pretrained: bool = False, **kwargs) -> ResNet:
    """`fercore_resnet10t_os8` at three quarters of the width (stem 24, stages 48/96/192 channels)."""
    return _create("fercore_resnet10t_os8_w075", (48, 96, 192), 24, pretrained, cls=ThreeStageResNet,
                   **dict({"output_stride": 8}, **kwargs))


@register_model
def fercore_resnet10t_os8_w050(pretrained: bool = False, **kwargs) -> ResNet:
    """`fercore_resnet10t_os8` at half the width (stem 16, stages 32/64/128 channels)."""
    return _create("fercore_resnet10t_os8_w050", (32, 64, 128), 16, pretrained, cls=ThreeStageResNet,
                   **dict({"output_stride": 8}, **kwargs))
