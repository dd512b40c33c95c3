"""Prior Inference Network (PIN): shared stem, one light branch per facial subregion, region AUs,
emotion logits through the AU-to-emotion prior.

POI abstract: "the Prior Inference Network (PIN) utilizes the prior knowledge of AUs and emotions
to capture intricate motion details. [...] PIN aggregates inferential knowledge from various key
facial subregions" `[abstract]`. The architecture is ours `[ours]`: a backbone cut at stride 8
(the stem), RoIAlign crops of the subregions (`regions.py`), per region two 3x3 conv-BN-ReLU
layers and global pooling (feature `h_k`), sigmoid activations of the AUs anatomically in that
region, and emotion logits `s_k` from those AUs through the prior matrix (`prior.py`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...models.backbone import FeatureStem
from .prior import AUPrior
from .regions import REGION_AUS, crop_regions, region_boxes


def light_branch(in_channels: int, width: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers and global average pooling: (B, C, s, s) -> (B, width)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


class PIN(nn.Module):
    """(images, landmarks) -> per-region emotion logits (B, R, K) and per-region AU logits.

    `aus` is the AU vocabulary; region r predicts `region_aus[r]`, the vocabulary AUs inside it.
    `prior` is the (K, len(aus)) matrix, or None to learn it without prior knowledge.
    """

    def __init__(self, backbone: str, stride: int, regions: tuple[str, ...], patch: float,
                 aus: tuple[int, ...], prior: Tensor | None, num_classes: int, residual: str = "matrix",
                 width: int = 256, scale: float = 8.0) -> None:
        super().__init__()
        self.stem = FeatureStem(backbone, stride)
        self.regions, self.patch, self.aus = regions, patch, aus
        self.region_aus = [tuple(a for a in aus if a in REGION_AUS[name]) for name in regions]
        for name, ra in zip(regions, self.region_aus):
            if not ra:
                raise ValueError(f"PIN region {name!r} holds none of the AUs {aus}")
        c = self.stem.num_features
        self.branches = nn.ModuleList(light_branch(c, width) for _ in regions)
        self.au_heads = nn.ModuleList(nn.Linear(width, len(ra)) for ra in self.region_aus)
        self.priors = nn.ModuleList(
            AUPrior(None if prior is None else prior[:, [aus.index(a) for a in ra]], num_classes, len(ra),
                    width, residual, scale) for ra in self.region_aus)
        # (R, A) 1 where region r predicts vocabulary AU a: averages AU probabilities over regions
        assign = torch.zeros(len(regions), len(aus))
        for r, ra in enumerate(self.region_aus):
            assign[r, [aus.index(a) for a in ra]] = 1
        self.register_buffer("assign", assign, persistent=False)

    def forward(self, x: Tensor, landmarks: Tensor) -> dict[str, Tensor | list[Tensor]]:
        fmap = self.stem(x)
        boxes = region_boxes(landmarks, x.shape[-2:], fmap.shape[-2:], self.regions, self.patch)
        logits, au_logits = [], []
        for crop, branch, au_head, prior in zip(crop_regions(fmap, boxes, self.regions, self.patch),
                                                self.branches, self.au_heads, self.priors):
            h = branch(crop)
            a = au_head(h)
            au_logits.append(a)
            logits.append(prior(torch.sigmoid(a), h))
        return {"region_logits": torch.stack(logits, 1), "au_logits": au_logits, "boxes": boxes}

    def au_prob(self, au_logits: list[Tensor]) -> Tensor:
        """(B, A) probability of each vocabulary AU, averaged over the regions that predict it."""
        b = au_logits[0].shape[0]
        total = au_logits[0].new_zeros(b, len(self.aus))
        for r, a in enumerate(au_logits):
            total[:, self.assign[r].bool()] += torch.sigmoid(a)
        return total / self.assign.sum(0).clamp(min=1)
