"""Facial subregions: boxes from the 5 landmarks on a stride-8 feature map, cropped with RoIAlign.

POI abstract: "PIN aggregates inferential knowledge from various key facial subregions"
`[abstract]`. Which regions and how they are cut is `[lineage: AMP-Net]`: patches of
10x10 cells on the 28x28 stride-8 map of a 224 px face (so the side is `patch = 10/28` of the
map, which keeps the layout at any input size), centred on the left eye, the right eye, the eye
midpoint (brows and glabella), the left and the right mouth corner; optionally the 4 quadrants
of the map, and (our option) the whole map as a `global` region.

Coordinates: landmarks are pixel (x, y) with pixel centres at integers (fercore's FaceSet
convention), so pixel i spans [i - 0.5, i + 0.5]; boxes are in continuous feature-map units
where cell j spans [j, j + 1) (RoIAlign with `aligned=True`). A box is shifted, never shrunk,
to stay inside the map.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from ...errors import ConfigError

# region -> the landmarks (0 left eye, 1 right eye, 2 nose, 3 left and 4 right mouth corner, image
# left first) whose mean is its centre
LANDMARK_REGIONS: dict[str, tuple[int, ...]] = {
    "left_eye": (0,), "right_eye": (1,), "glabella": (0, 1), "mouth_left": (3,), "mouth_right": (4,)}
QUADRANTS: dict[str, tuple[int, int]] = {  # region -> (column, row) of the map's 2x2 grid
    "top_left": (0, 0), "top_right": (1, 0), "bottom_left": (0, 1), "bottom_right": (1, 1)}
REGIONS = (*LANDMARK_REGIONS, *QUADRANTS, "global")
DEFAULT_REGIONS = tuple(LANDMARK_REGIONS)
MIRROR = {"left_eye": "right_eye", "right_eye": "left_eye", "mouth_left": "mouth_right",
          "mouth_right": "mouth_left", "top_left": "top_right", "top_right": "top_left",
          "bottom_left": "bottom_right", "bottom_right": "bottom_left"}

_UPPER = (1, 2, 4, 5, 6, 7, 9)
_LOWER = (9, 10, 11, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26)
# AUs anatomically inside each region `[ours]`, after FACS's upper/lower face split: the eye patches
# (which at 10/28 of the map also cover the brow and the upper cheek) see the brows, lids and cheek
# raiser; the glabella patch the inner brows and the nose wrinkle; the mouth corners the lower face.
REGION_AUS: dict[str, tuple[int, ...]] = {
    "left_eye": (1, 2, 4, 5, 6, 7), "right_eye": (1, 2, 4, 5, 6, 7), "glabella": (1, 2, 4, 9),
    "mouth_left": _LOWER, "mouth_right": _LOWER,
    "top_left": _UPPER, "top_right": _UPPER, "bottom_left": _LOWER, "bottom_right": _LOWER,
    "global": _UPPER + _LOWER[1:]}


def check_regions(regions: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [r for r in regions if r not in REGIONS]
    if unknown or not regions:
        raise ConfigError(f"poi.regions: unknown {unknown}; expected a non-empty list of {list(REGIONS)}")
    if len(set(regions)) != len(regions):
        raise ConfigError(f"poi.regions: {list(regions)} names a region twice")
    return tuple(regions)


def region_boxes(landmarks: Tensor, image_size: tuple[int, int], map_size: tuple[int, int],
                 regions: tuple[str, ...], patch: float) -> Tensor:
    """(B, R, 4) boxes (x0, y0, x1, y1) in feature-map units for `regions`.

    landmarks: (B, 5, 2) pixel (x, y); image_size and map_size: (H, W) and (h, w).
    `patch`: side of a landmark patch as a fraction of the map side (10/28 in AMP-Net).
    """
    (big_h, big_w), (h, w) = image_size, map_size
    b = landmarks.shape[0]
    scale = landmarks.new_tensor([w / big_w, h / big_h])
    points = (landmarks + 0.5) * scale                                 # (B, 5, 2) map units
    side = landmarks.new_tensor([w, h])
    half = side * patch / 2
    boxes = []
    for name in regions:
        if name in LANDMARK_REGIONS:
            c = points[:, list(LANDMARK_REGIONS[name])].mean(1)
            c = torch.minimum(torch.maximum(c, half), side - half)     # shift inside the map
            boxes.append(torch.cat([c - half, c + half], 1))
        elif name in QUADRANTS:
            col, row = QUADRANTS[name]
            box = landmarks.new_tensor([col * w / 2, row * h / 2, (col + 1) * w / 2, (row + 1) * h / 2])
            boxes.append(box.expand(b, 4))
        else:
            boxes.append(landmarks.new_tensor([0.0, 0.0, w, h]).expand(b, 4))
    return torch.stack(boxes, 1)


def crop_size(name: str, map_size: tuple[int, int], patch: float) -> tuple[int, int]:
    """Output cells of a region's crop: its box side rounded, at least 2."""
    h, w = map_size
    frac = patch if name in LANDMARK_REGIONS else 0.5 if name in QUADRANTS else 1.0
    return max(2, round(frac * h)), max(2, round(frac * w))


def crop_regions(fmap: Tensor, boxes: Tensor, regions: tuple[str, ...], patch: float) -> list[Tensor]:
    """One (B, C, s, s) RoIAlign crop of `fmap` (B, C, h, w) per region; `global` is the map itself."""
    b = fmap.shape[0]
    index = torch.arange(b, device=fmap.device, dtype=torch.float32).view(b, 1)
    crops = []
    for r, name in enumerate(regions):
        if name == "global":
            crops.append(fmap)
            continue
        rois = torch.cat([index, boxes[:, r].float()], 1)  # float32: bf16 would move a box by up to 1/8 cell
        crop = roi_align(fmap.float(), rois, crop_size(name, fmap.shape[-2:], patch), spatial_scale=1.0,
                         sampling_ratio=2, aligned=True)
        crops.append(crop.to(fmap.dtype))
    return crops
