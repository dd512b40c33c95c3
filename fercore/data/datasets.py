"""Dataset registry: a name and a data root -> (train, test) FaceSets (docs/architecture.md#the-flow-of-data).

`READERS` maps every `data.dataset` name to a function of the data config: SynthFER is generated,
the real layouts are scanned, subsampled (`n_train`/`n_test`) and decoded by `fercore.data.readers`.
`load_dataset` then injects the configured training-label noise; test labels are never touched.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from .faceset import FaceSet
from .noise import inject
from .readers import SCANNERS, read
from .synthfer import load_synthfer
from .synthfer.dataset import RAFDB_SIZES


def _synthfer(cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    return load_synthfer(cfg.synthfer, cfg.n_train or RAFDB_SIZES[0], cfg.n_test or RAFDB_SIZES[1],
                         cfg.image_size)


READERS: dict[str, Callable[[DataConfig], tuple[FaceSet, FaceSet]]] = {
    "synthfer": _synthfer,
    **{name: partial(read, scan) for name, scan in SCANNERS.items()},
}


def load_dataset(cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    """Read the configured dataset (subsampled if asked) and inject training-label noise."""
    if cfg.dataset not in READERS:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; expected one of {sorted(READERS)}")
    if cfg.dataset != "synthfer":
        if not cfg.data_root:
            raise DataError(f"data.data_root is required for dataset {cfg.dataset!r}")
        if not Path(cfg.data_root).is_dir():
            raise DataError(f"data root {cfg.data_root} does not exist (dataset {cfg.dataset!r})")
    train, test = READERS[cfg.dataset](cfg)
    return inject(train, cfg.noise, cfg.noise_seed), test
