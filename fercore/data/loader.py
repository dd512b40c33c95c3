"""Loader: a split as a uint8 tensor on the device, batched and augmented there (design.md, Compute).

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
import torch.nn.functional as F
from torch import Tensor

from ..config import AugmentConfig
from ..errors import ConfigError
from .faceset import FaceSet

NORMALIZE = {  # mean, std (datasets.md 8.1)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "msceleb": ((0.5412, 0.4324, 0.3795), (0.2485, 0.2182, 0.2066)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
FLIP_LANDMARKS = [1, 0, 2, 4, 3]  # a mirror swaps the eyes and the mouth corners
GRAY = (0.2989, 0.587, 0.114)     # torchvision's rgb_to_grayscale weights
RESIDENCY = ("auto", "device", "host")
DEVICE_SHARE = 0.5                # residency 'auto': on the device while the split takes <= this share of free memory [ours]


def epoch_generator(seed: int, epoch: int, device: torch.device, salt: str = "") -> torch.Generator:
    """A generator on `device` whose state depends only on (seed, epoch, salt)."""
    key = int(hashlib.sha256(f"{seed}/{epoch}/{salt}".encode()).hexdigest()[:15], 16)
    return torch.Generator(device=device).manual_seed(key)


def _uniform(lo: float, hi: float, b: int, dev, gen) -> Tensor:
    return lo + (hi - lo) * torch.rand(b, device=dev, generator=gen)


def grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma, as torchvision's rgb_to_grayscale."""
    return (x[:, 0:1] * GRAY[0]).add_(x[:, 1:2], alpha=GRAY[1]).add_(x[:, 2:3], alpha=GRAY[2])


def rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    c = v - x.min(1).values
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    cc = c.clamp_min(1e-12)
    h = torch.where(v == r, (g - b) / cc, torch.where(v == g, 2 + (b - r) / cc, 4 + (r - g) / cc))
    h = torch.where(c > 0, (h / 6) % 1, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], 1)  # for r, g, b
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def color_jitter(x: Tensor, brightness: Tensor | None = None, contrast: Tensor | None = None,
                 saturation: Tensor | None = None, hue: Tensor | None = None) -> Tensor:
    """torchvision's adjust_brightness/contrast/saturation/hue with one factor per image (B,),
    applied in this fixed order `[ours]` (torchvision permutes the order per call). x in [0, 1]."""
    view = (-1, 1, 1, 1)
    x = x.clone()  # the blends below work in place
    if brightness is not None:
        x.mul_(brightness.view(view)).clamp_(0, 1)
    if contrast is not None:
        mean = grayscale(x).mean((1, 2, 3), keepdim=True)
        x.mul_(contrast.view(view)).add_((1 - contrast.view(view)) * mean).clamp_(0, 1)
    if saturation is not None:
        gray = grayscale(x)
        x.mul_(saturation.view(view)).add_((1 - saturation.view(view)) * gray).clamp_(0, 1)
    if hue is not None:
        hsv = rgb_to_hsv(x)
        hsv = torch.stack([(hsv[:, 0] + hue.view(-1, 1, 1)) % 1, hsv[:, 1], hsv[:, 2]], 1)
        x = hsv_to_rgb(hsv)
    return x


def _check(cfg: AugmentConfig) -> None:
    def bad(key: str, why: str):
        raise ConfigError(f"data.augment.{key}: {why}, got {getattr(cfg, key)!r}")
    for key in ("flip", "erasing", "grayscale"):
        if not 0 <= getattr(cfg, key) <= 1:
            bad(key, "a probability in [0, 1]")
    for key in ("shift", "rotate", "brightness", "contrast", "saturation"):
        if getattr(cfg, key) < 0:
            bad(key, "must be >= 0")
    if not 0 <= cfg.hue <= 0.5:
        bad("hue", "must be in [0, 0.5]")
    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        bad("crop_scale", "needs 0 < low <= high <= 1")
    for key in ("crop_ratio", "scale"):
        lo, hi = getattr(cfg, key)
        if not 0 < lo <= hi:
            bad(key, "needs 0 < low <= high")


class Augment:
    """Batched on-device augmentation, every op a parameter (AugmentConfig), applied in this order:
    horizontal flip and RandomErasing `[lineage: SCN/RUL/EAC recipe]`; random resized crop
    `[lineage: torchvision RandomResizedCrop]`, rotation, zoom and translation as one affine warp
    (one resampling, border padding `[ours]`), colour jitter and random grayscale `[lineage:
    AMP-Net/DUML recipe for POI]`. Landmarks follow the flip and the affine warp exactly."""

    def __init__(self, cfg: AugmentConfig) -> None:
        _check(cfg)
        self.cfg = cfg
        self.crop = tuple(cfg.crop_scale) != (1.0, 1.0)
        self.zoom = cfg.rotate > 0 or tuple(cfg.scale) != (1.0, 1.0)
        self.geometric = self.crop or self.zoom or cfg.shift > 0
        self.jitter = any(getattr(cfg, k) > 0 for k in ("brightness", "contrast", "saturation", "hue"))

    def affine(self, b: int, h: int, w: int, dev: torch.device, gen: torch.Generator) -> Tensor:
        """(B, 3, 3) forward maps in continuous pixel coordinates (pixel i spans [i, i+1]):
        crop box -> full frame, then rotation and zoom about the centre, then translation."""
        cfg = self.cfg
        m = torch.eye(3, device=dev).repeat(b, 1, 1)
        centre = torch.tensor([w / 2, h / 2], device=dev)
        if self.crop:
            area = _uniform(*cfg.crop_scale, b, dev, gen) * h * w
            r = torch.exp(_uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), b, dev, gen))
            cw, ch = torch.sqrt(area * r).clamp(max=w), torch.sqrt(area / r).clamp(max=h)
            cx = cw / 2 + torch.rand(b, device=dev, generator=gen) * (w - cw)
            cy = ch / 2 + torch.rand(b, device=dev, generator=gen) * (h - ch)
            crop = torch.eye(3, device=dev).repeat(b, 1, 1)
            crop[:, 0, 0], crop[:, 1, 1] = w / cw, h / ch
            crop[:, 0, 2], crop[:, 1, 2] = w / 2 - cx * w / cw, h / 2 - cy * h / ch
            m = crop @ m
        if self.zoom:
            angle = torch.deg2rad(_uniform(-cfg.rotate, cfg.rotate, b, dev, gen))
            s = _uniform(*cfg.scale, b, dev, gen)
            rot = torch.eye(3, device=dev).repeat(b, 1, 1)
            rot[:, 0, 0], rot[:, 0, 1] = s * torch.cos(angle), -s * torch.sin(angle)
            rot[:, 1, 0], rot[:, 1, 1] = s * torch.sin(angle), s * torch.cos(angle)
            rot[:, :2, 2] = centre - (rot[:, :2, :2] @ centre)
            m = rot @ m
        if cfg.shift > 0:
            t = (torch.rand(b, 2, device=dev, generator=gen) * 2 - 1) * cfg.shift * 2  # normalised units
            move = torch.eye(3, device=dev).repeat(b, 1, 1)
            move[:, :2, 2] = t * centre
            m = move @ m
        return m

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
        if self.geometric:
            m = self.affine(b, h, w, dev, gen)
            to_unit = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]], device=dev)
            theta = to_unit @ torch.linalg.inv(m) @ torch.linalg.inv(to_unit)  # output -> input, [-1, 1] units
            grid = F.affine_grid(theta[:, :2], list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
            if landmarks is not None:
                c = landmarks + 0.5
                landmarks = (c @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]) - 0.5
        return x, landmarks, flip

    def photometric(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Colour jitter, then random grayscale, each with per-image draws."""
        cfg, b, dev = self.cfg, len(x), x.device
        if self.jitter:
            f = {k: _uniform(max(0.0, 1 - getattr(cfg, k)), 1 + getattr(cfg, k), b, dev, gen)
                 for k in ("brightness", "contrast", "saturation") if getattr(cfg, k) > 0}
            if cfg.hue > 0:
                f["hue"] = _uniform(-cfg.hue, cfg.hue, b, dev, gen)
            x = color_jitter(x, **f)
        if cfg.grayscale > 0:
            on = torch.rand(b, device=dev, generator=gen) < cfg.grayscale
            x = torch.where(on.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
        return x

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
    rows = (ys >= top.view(-1, 1, 1)) & (ys < (top + eh).view(-1, 1, 1)) & on.view(-1, 1, 1)   # (B, H, 1)
    cols = (xs >= left.view(-1, 1, 1)) & (xs < (left + ew).view(-1, 1, 1))                      # (B, 1, W)
    box = rows & cols
    return x.masked_fill(box.unsqueeze(1), 0.0)


def choose_residency(spec: str, images: Tensor, device: torch.device) -> str:
    """'device' or 'host' for `spec` ('auto': device while the split fits in DEVICE_SHARE of free memory)."""
    if spec not in RESIDENCY:
        raise ConfigError(f"data.residency: expected one of {RESIDENCY}, got {spec!r}")
    if spec != "auto":
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
        if normalize not in NORMALIZE:
            raise ValueError(f"data.normalize: expected one of {sorted(NORMALIZE)}, got {normalize!r}")
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
