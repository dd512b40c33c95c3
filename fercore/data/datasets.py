"""Dataset registry: a name and a data root -> (train, test) FaceSets (design.md, flow of data)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import DataConfig
from ..errors import DataError
from .faceset import FaceSet
from .folder import read_folder
from .noise import inject
from .synthfer import load_synthfer
from .synthfer.dataset import RAFDB_SIZES


def _synthfer(cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    return load_synthfer(cfg.synthfer, cfg.n_train or RAFDB_SIZES[0], cfg.n_test or RAFDB_SIZES[1],
                         cfg.image_size)


def _folder(cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    root = Path(cfg.data_root)
    train = read_folder(root / "train", cfg.image_size)
    return train, read_folder(root / "test", cfg.image_size, classes=train.classes)


READERS: dict[str, Callable[[DataConfig], tuple[FaceSet, FaceSet]]] = {
    "synthfer": _synthfer,
    "folder": _folder,
}


def _subsample(fs: FaceSet, n: int, seed: int) -> FaceSet:
    if not n or n >= len(fs):
        return fs
    idx = torch.randperm(len(fs), generator=torch.Generator().manual_seed(seed))[:n]
    return fs.subset(idx.sort().values)


def load_dataset(cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    """Read the configured dataset, subsample it if asked, and inject training-label noise."""
    if cfg.dataset not in READERS:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; expected one of {sorted(READERS)}")
    if cfg.dataset != "synthfer":
        if not cfg.data_root:
            raise DataError(f"data.data_root is required for dataset {cfg.dataset!r}")
        if not Path(cfg.data_root).is_dir():
            raise DataError(f"data root {cfg.data_root} does not exist (dataset {cfg.dataset!r})")
    train, test = READERS[cfg.dataset](cfg)
    if cfg.dataset != "synthfer":
        train, test = _subsample(train, cfg.n_train, 0), _subsample(test, cfg.n_test, 1)
    return inject(train, cfg.noise, cfg.noise_seed), test
