"""Reading MTAC runs: the method's estimates on a split (for notebook 02)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.faceset import FaceSet


def estimates(run_path: str | Path, data: FaceSet, device: str = "cpu", batch_size: int = 256) -> dict[str, np.ndarray]:
    """The trained method's estimates on `data` (eval mode): 'prob' (N, K) and whatever its
    `predict` returns besides logits (MTAC: 'confidence', 'au' probabilities, 'va')."""
    from ...engine import predict_split, restore

    cfg, method = restore(run_path, device)
    return predict_split(method, data, device, batch_size, cfg.data.normalize)
