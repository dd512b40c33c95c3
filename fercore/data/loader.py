"""Loader: a split as a uint8 tensor on the device, batched and augmented there (docs/architecture.md#compute).

Each epoch draws an index permutation and every augmentation from generators seeded by
(seed, epoch), so an epoch replays exactly after a resume. Every batch carries the sample
indices (relabeling writes back through them) and landmarks moved with every spatial
augmentation. Splits larger than device memory stay in (pinned) host memory and stream to the
device batch by batch (`residency='host'`) through the same interface; CPU and CUDA run the same code.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from ..config import Normalize, Residency, check_choice
from .augment import Augment
from .faceset import FaceSet

NORMALIZE = {  # mean, std (docs/datasets.md#81-the-ms-celeb-1m-resnet-18-used-across-the-noisy-label-fer-line)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "msceleb": ((0.5412, 0.4324, 0.3795), (0.2485, 0.2182, 0.2066)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
# residency 'auto': on the device while the split takes <= this share of free memory [ours]
DEVICE_SHARE = 0.5


def epoch_generator(seed: int, epoch: int, device: torch.device, salt: str = "") -> torch.Generator:
    """A generator on `device` whose state depends only on (seed, epoch, salt)."""
    key = int(hashlib.sha256(f"{seed}/{epoch}/{salt}".encode()).hexdigest()[:15], 16)
    return torch.Generator(device=device).manual_seed(key)


def choose_residency(spec: str, images: Tensor, device: torch.device) -> str:
    """'device' or 'host' for `spec` ('auto': device while the split fits in DEVICE_SHARE of free memory)."""
    if check_choice("data.residency", spec, Residency) != "auto":
        return spec
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if images.numel() <= DEVICE_SHARE * free else "host"


class _HostImages:
    """Images in (pinned, with CUDA) host memory; each batch is gathered into one of two pinned
    staging buffers and copied to the device with `non_blocking=True` (double buffering: a buffer
    is refilled only after its previous copy has finished)."""

    def __init__(self, images: Tensor, batch_size: int, device: torch.device) -> None:
        pin = device.type == "cuda"
        self.images = images.pin_memory() if pin else images
        self.device = device
        self.buffers = [torch.empty((batch_size, *images.shape[1:]), dtype=images.dtype, pin_memory=pin)
                        for _ in range(2)]
        self.events: list = [None, None]
        self.k = 0

    def __getitem__(self, index: Tensor) -> Tensor:
        k, self.k = self.k, self.k ^ 1
        if self.events[k] is not None:
            self.events[k].synchronize()
        buf = self.buffers[k][:len(index)]
        torch.index_select(self.images, 0, index, out=buf)
        out = buf.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self.events[k] = torch.cuda.Event()
            self.events[k].record()
        elif out.data_ptr() == buf.data_ptr():
            out = out.clone()  # CPU: `to` returned the staging buffer itself
        return out


class Loader:
    """Batches of one split on `device`.

    `labels` is the live training-label tensor (on `device`); relabeling methods write into it.
    `residency`: 'device' keeps the uint8 split on the device, 'host' streams it from (pinned)
    host memory per batch, 'auto' picks device when it fits. With `second_view`, batches also
    carry 'image2': the mirrored first view with its own erase box (EAC).
    """

    def __init__(self, data: FaceSet, batch_size: int, device: torch.device, *, labels: Tensor | None = None,
                 augment: Augment | None = None, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, normalize: str = "imagenet", second_view: bool = False,
                 residency: str = "device") -> None:
        check_choice("data.normalize", normalize, Normalize)
        self.data, self.batch_size, self.device = data, batch_size, torch.device(device)
        self.residency = choose_residency(residency, data.images, self.device)
        if self.residency == "device":
            self.images = data.images.to(self.device)
        else:
            self.images = _HostImages(data.images, batch_size, self.device)
        self.labels = labels if labels is not None else data.label.to(self.device)
        self.landmarks = None if data.landmarks is None else data.landmarks.to(self.device)
        self.targets = {k: getattr(data, k).to(self.device) for k in ("au", "au_mask", "va", "va_mask")
                        if getattr(data, k) is not None}
        self.augment, self.shuffle, self.drop_last, self.seed = augment, shuffle, drop_last, seed
        self.second_view = second_view  # also yield 'image2', see __iter__
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
        return x.sub(self.mean).div_(self.std)

    def __iter__(self):
        n = len(self.data)
        gen = epoch_generator(self.seed, self.epoch, self.device)
        # streaming from host memory: draw the order on the host so gathering needs no device sync
        stream = self.residency == "host" and self.device.type != "cpu"
        where = torch.device("cpu") if stream else self.device
        order_gen = epoch_generator(self.seed, self.epoch, where, salt="order") if stream else gen
        order = torch.randperm(n, device=where, generator=order_gen) if self.shuffle else torch.arange(n, device=where)
        for i in range(len(self)):
            sel = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[sel].float().div_(255)
            idx = sel.to(self.device, non_blocking=True)
            lmk = None if self.landmarks is None else self.landmarks[idx]
            batch = {"index": idx, "label": self.labels[idx]}
            if self.augment is not None:
                x, lmk, batch["flipped"] = self.augment.spatial(x, lmk, gen)
                x = self.augment.photometric(x, gen)
            x = self.normalize(x)
            batch["image"] = self.augment.erase(x, gen) if self.augment is not None else x
            if self.second_view:  # EAC's independent second view: the same geometry mirrored, its own erase box
                batch["image2"] = self.augment.erase(x.flip(3), gen) if self.augment is not None else x.flip(3)
            if lmk is not None:
                batch["landmarks"] = lmk
            batch.update({k: v[idx] for k, v in self.targets.items()})
            yield batch
