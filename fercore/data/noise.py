"""Label-noise protocols: synthetic flips of training labels only (methods.md, Protocols).

`symmetric` follows SCN's generator `[lineage: SCN generate.py]`: each sample is flipped with
probability `rate` (a Bernoulli draw per sample, as in EAC's files), to a class drawn uniformly
from the other classes, so a flipped label never equals its original. Seeded, unlike SCN's.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .faceset import FaceSet


def symmetric(labels: Tensor, rate: float, num_classes: int, seed: int) -> Tensor:
    """Flip each label with probability `rate` to a uniformly drawn different class."""
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    gen = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(labels), generator=gen) < rate
    shift = torch.randint(1, num_classes, (len(labels),), generator=gen)
    return torch.where(flip, (labels + shift) % num_classes, labels)


def confusion(before: Tensor, after: Tensor, num_classes: int) -> Tensor:
    """(K, K) counts: row = label before injection, column = label after."""
    m = torch.zeros(num_classes, num_classes, dtype=torch.long)
    m.index_put_((before, after), torch.ones_like(before), accumulate=True)
    return m


def parse_spec(spec: str) -> tuple[str, float]:
    """'none' -> ('none', 0); 'sym:0.3' -> ('sym', 0.3)."""
    if spec == "none":
        return "none", 0.0
    kind, _, rate = spec.partition(":")
    if kind != "sym" or not rate:
        raise ValueError(f"data.noise: expected 'none' or 'sym:<rate>', got {spec!r}")
    try:
        return kind, float(rate)
    except ValueError:
        raise ValueError(f"data.noise: rate in {spec!r} is not a number") from None


def inject(train: FaceSet, spec: str, seed: int) -> FaceSet:
    """Return `train` with noisy labels; `clean_label` keeps the labels before injection and
    `meta['noise']` the realised rate and injected confusion matrix. Test sets are never passed here."""
    kind, rate = parse_spec(spec)
    before = train.label
    after = before.clone() if kind == "none" else symmetric(before, rate, train.num_classes, seed)
    flipped = after != before
    report = {"spec": spec, "seed": seed, "rate_asked": rate, "rate_realised": flipped.float().mean().item(),
              "n_flipped": int(flipped.sum()), "confusion": confusion(before, after, train.num_classes).tolist()}
    return train.replace(label=after, clean_label=before.clone(), extras={**train.extras, "flipped": flipped},
                         meta={**train.meta, "noise": report})
