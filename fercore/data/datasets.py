"""Dataset registry: a name and a data root -> (train, test) FaceSets (docs/architecture.md#the-flow-of-data).

`READERS` maps every `data.dataset` name to a function of the data config: SynthFER is generated,
the real layouts are scanned, subsampled (`n_train`/`n_test`) and decoded by `fercore.data.readers`.
Every reader merges the AU / VA side files (`data.au_file`, `data.va_file`; `fercore.data.sidefiles`,
docs/datasets.md#side-files): the real layouts on the scan, before subsampling, so a side-file key is
checked against the whole layout; SynthFER on its generated splits. `load_dataset` then injects the
configured training-label noise; test labels are never touched.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import DataError
from .faceset import FaceSet
from .noise import inject
from .readers import SCANNERS, read
from .sidefiles import apply_to_facesets
from .synthfer import load_synthfer
from .synthfer.dataset import RAFDB_SIZES


def _synthfer(cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    train, test = load_synthfer(cfg.synthfer, cfg.n_train or RAFDB_SIZES[0], cfg.n_test or RAFDB_SIZES[1],
                                cfg.image_size)
    return apply_to_facesets(train, test, cfg)  # side files (SynthFER's own exact AU / VA win under `fill`)


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
    train = inject(train, cfg.noise, cfg.noise_seed)
    if cfg.oof_folds:
        keep = oof_assignment(len(train), cfg.oof_folds, cfg.noise_seed) != cfg.oof_fold
        train = train.subset(keep.nonzero()[:, 0])
    return train, test


def oof_assignment(n: int, folds: int, seed: int) -> torch.Tensor:
    """(n,) fold index of every training sample for out-of-fold training (`data.oof_folds`): a seeded
    permutation cut into `folds` near-equal parts `[ours]`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    fold = torch.empty(n, dtype=torch.long)
    fold[order] = torch.arange(n) % folds
    return fold
