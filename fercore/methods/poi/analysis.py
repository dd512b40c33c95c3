"""What notebook 03 measures about POI, as functions a test can reach.

- `soften`: a distribution at temperature T from its T = 1 version.
- `boxes_to_pixels`: feature-map boxes in image pixels, for drawing the subregions.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor


def soften(prob: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) from softmax(z): p^(1/T), renormalised."""
    z = np.log(np.maximum(np.asarray(prob, dtype=np.float64), 1e-30)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def boxes_to_pixels(boxes: Tensor, image_size: int, map_size: int) -> Tensor:
    """(..., 4) boxes in feature-map units -> pixel-edge coordinates for drawing on the image
    (matplotlib's imshow puts pixel i at [i - 0.5, i + 0.5])."""
    return boxes * (image_size / map_size) - 0.5
