"""Loader: a split as a uint8 tensor on the device, batched and augmented there (design.md, Compute).

Each epoch draws an index permutation and every augmentation from generators seeded by
(seed, epoch), so an epoch replays exactly after a resume. Every batch carries the sample
indices (relabeling writes back through them) and landmarks moved with the augmentation.
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AugmentConfig
from .faceset import FaceSet

NORMALIZE = {  # mean, std (datasets.md 8.1)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "msceleb": ((0.5412, 0.4324, 0.3795), (0.2485, 0.2182, 0.2066)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
FLIP_LANDMARKS = [1, 0, 2, 4, 3]  # a mirror swaps the eyes and the mouth corners


def epoch_generator(seed: int, epoch: int, device: torch.device, salt: str = "") -> torch.Generator:
    """A generator on `device` whose state depends only on (seed, epoch, salt)."""
    key = int(hashlib.sha256(f"{seed}/{epoch}/{salt}".encode()).hexdigest()[:15], 16)
    return torch.Generator(device=device).manual_seed(key)


class Augment:
    """Flip, translation and RandomErasing as batched tensor ops `[lineage: SCN/RUL/EAC recipe]`."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def spatial(self, x: Tensor, landmarks: Tensor | None, gen: torch.Generator
                ) -> tuple[Tensor, Tensor | None, Tensor]:
        """x: (B, C, H, W) float in [0, 1]. Returns images, landmarks and the flip mask."""
        b, _, h, w = x.shape
        dev = x.device
        flip = torch.rand(b, device=dev, generator=gen) < self.cfg.flip
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if landmarks is not None:
            mirrored = landmarks[:, FLIP_LANDMARKS].clone()
            mirrored[..., 0] = w - 1 - mirrored[..., 0]
            landmarks = torch.where(flip.view(-1, 1, 1), mirrored, landmarks)
        if self.cfg.shift > 0:
            t = (torch.rand(b, 2, device=dev, generator=gen) * 2 - 1) * self.cfg.shift * 2
            theta = torch.zeros(b, 2, 3, device=dev)
            theta[:, 0, 0] = theta[:, 1, 1] = 1
            theta[:, :, 2] = -t
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
            if landmarks is not None:
                landmarks = landmarks + t.view(b, 1, 2) * torch.tensor([w / 2, h / 2], device=dev)
        return x, landmarks, flip

    def erase(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Applied after normalisation, like torchvision's RandomErasing after Normalize."""
        return random_erasing(x, self.cfg.erasing, gen) if self.cfg.erasing > 0 else x


def random_erasing(x: Tensor, p: float, gen: torch.Generator, scale=(0.02, 0.25),
                   ratio=(0.3, 3.3)) -> Tensor:
    """torchvision's RandomErasing(p, scale, ratio, value=0), one box per image, batched."""
    b, _, h, w = x.shape
    dev = x.device
    area = (scale[0] + (scale[1] - scale[0]) * torch.rand(b, device=dev, generator=gen)) * h * w
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(b, device=dev, generator=gen)
    r = torch.exp(logr)
    eh = torch.sqrt(area * r).clamp(1, h).floor()
    ew = torch.sqrt(area / r).clamp(1, w).floor()
    top = (torch.rand(b, device=dev, generator=gen) * (h - eh + 1)).floor()
    left = (torch.rand(b, device=dev, generator=gen) * (w - ew + 1)).floor()
    on = torch.rand(b, device=dev, generator=gen) < p
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = ((ys >= top.view(-1, 1, 1)) & (ys < (top + eh).view(-1, 1, 1)) &
           (xs >= left.view(-1, 1, 1)) & (xs < (left + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))
    return x.masked_fill(box.unsqueeze(1), 0.0)


class Loader:
    """Batches of one split, resident on `device`.

    `labels` is the live training-label tensor (on `device`); relabeling methods write into it.
    """

    def __init__(self, data: FaceSet, batch_size: int, device: torch.device, *, labels: Tensor | None = None,
                 augment: Augment | None = None, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, normalize: str = "imagenet") -> None:
        if normalize not in NORMALIZE:
            raise ValueError(f"data.normalize: expected one of {sorted(NORMALIZE)}, got {normalize!r}")
        self.data, self.batch_size, self.device = data, batch_size, torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = labels if labels is not None else data.label.to(self.device)
        self.landmarks = None if data.landmarks is None else data.landmarks.to(self.device)
        self.targets = {k: getattr(data, k).to(self.device) for k in ("au", "au_mask", "va", "va_mask")
                        if getattr(data, k) is not None}
        self.augment, self.shuffle, self.drop_last, self.seed = augment, shuffle, drop_last, seed
        mean, std = NORMALIZE[normalize]
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def __iter__(self):
        n = len(self.data)
        gen = epoch_generator(self.seed, self.epoch, self.device)
        order = torch.randperm(n, device=self.device, generator=gen) if self.shuffle else torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx].float().div_(255)
            lmk = None if self.landmarks is None else self.landmarks[idx]
            batch = {"index": idx, "label": self.labels[idx]}
            if self.augment is not None:
                x, lmk, batch["flipped"] = self.augment.spatial(x, lmk, gen)
            x = self.normalize(x)
            batch["image"] = self.augment.erase(x, gen) if self.augment is not None else x
            if lmk is not None:
                batch["landmarks"] = lmk
            batch.update({k: v[idx] for k, v in self.targets.items()})
            yield batch
