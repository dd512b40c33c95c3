"""Reading MTAC runs: the method's estimates on a split (for notebook 02)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.faceset import FaceSet
from ...data.loader import Loader


@torch.no_grad()
def estimates(run_path: str | Path, data: FaceSet, device: str = "cpu", batch_size: int = 256) -> dict[str, np.ndarray]:
    """The trained method's estimates on `data` (eval mode): 'prob' (N, K) and whatever its
    `predict` returns besides logits (MTAC: 'confidence', 'au' probabilities, 'va')."""
    from ...engine import restore

    cfg, method = restore(run_path, device)
    out: dict[str, list] = {}
    for b in Loader(data, batch_size, torch.device(device), normalize=cfg.data.normalize):
        pred = method.predict(b)
        out.setdefault("prob", []).append(pred.pop("logits").float().softmax(1).cpu())
        for k, v in pred.items():
            out.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}
