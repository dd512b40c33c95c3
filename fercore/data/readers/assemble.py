"""Assembly: scanned, subsampled and decoded records -> the (train, test) FaceSets of a reader."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...config import DataConfig
from ...errors import DataError, notice
from ...files import sha256_file
from ..faceset import FaceSet
from .decode import decode_split
from .toolkit import Problems, Scan, Split, subsample_index


def to_faceset(scan: Scan, name: str, split: Split, cfg: DataConfig, label_files: dict[str, str]) -> FaceSet:
    """Decode a split's records and build its FaceSet (landmarks rescaled to the output size);
    `label_files` maps each of the scan's label files to its sha256."""
    images, sizes = decode_split(split, cfg.image_size, cache=cfg.cache, device=cfg.decode_device)
    landmarks = None
    if split.landmarks is not None:
        scale = torch.tensor(cfg.image_size, dtype=torch.float) / sizes.float()      # (N, 2) x and y
        lm = torch.as_tensor(split.landmarks, dtype=torch.float)
        landmarks = (lm + 0.5) * scale[:, None, :] - 0.5   # pixel centres at integer coordinates
    t = lambda v, dt=torch.float: None if v is None else torch.as_tensor(v, dtype=dt)  # noqa: E731
    meta = {"dataset": scan.dataset, "split": name, "root": str(scan.root), "protocol": scan.protocol,
            "coding": scan.coding, "label_files": dict(label_files),
            **scan.meta}
    if scan.au_names is not None:
        meta["au_names"] = scan.au_names
    extras = {k: torch.as_tensor(v) for k, v in split.extras.items()}
    reference = extras.pop("reference_label", None)  # a reader's own wrong-label ground truth (FERPlus vs FER2013)
    return FaceSet(images=images, label=torch.tensor(split.label, dtype=torch.long), classes=scan.classes,
                   clean_label=reference,
                   ids=list(split.ids), soft_label=t(split.soft_label), au=t(split.au), au_mask=t(split.au_mask),
                   va=t(split.va), va_mask=t(split.va_mask), landmarks=landmarks,
                   extras=extras, meta=meta)


def read(scan_fn: Callable[[DataConfig, Problems], Scan], cfg: DataConfig) -> tuple[FaceSet, FaceSet]:
    """Scan strictly, merge the AU / VA side files (`data.au_file`, `data.va_file`: keys checked against
    the whole layout), subsample (`n_train`/`n_test`, seeds 0/1) before decoding, decode, build FaceSets."""
    from ..sidefiles import apply_to_scan  # the side-file layer reads through this package's toolkit

    problems = Problems(strict=True)
    scan = scan_fn(cfg, problems)
    apply_to_scan(scan, cfg, problems)
    wanted = (("train", cfg.n_train, 0), ("test", cfg.n_test, 1))
    for name, n, _ in wanted:  # both splits checked before either is decoded
        split = scan.splits[name]
        if not len(split):
            raise DataError(f"{scan.root}: the {name} split is empty (layout of {scan.dataset!r})")
        if n > len(split):  # a profile's size is a cap (smoke: 384), so not an error; but never silent
            notice(f"data.n_{name}={n} asks for more than the {len(split)} images of the {name} split of "
                   f"{scan.dataset} at {scan.root}: using all {len(split)}, at {cfg.image_size} px (env.json "
                   "records the sizes used)")
        elif 0 < n < len(split):  # a real dataset never shrinks silently (the quick profile's 1,200 on FERPlus)
            notice(f"data.n_{name}={n}: using a seeded subset of {n:,} of the {len(split):,} images of the {name} "
                   f"split of {scan.dataset}, at {cfg.image_size} px (data.n_{name}=0 uses all; env.json records "
                   "the sizes used)")
    label_files = {k: sha256_file(p) for k, p in scan.files.items() if p.is_file()}  # once: fer2013.csv is 301 MB
    out = []
    for name, n, seed in wanted:
        split = scan.splits[name]
        full = len(split)
        fs = to_faceset(scan, name, split.subset(subsample_index(full, n, seed)), cfg, label_files)
        fs.meta["n_rows"] = full
        out.append(fs)
    return out[0], out[1]
