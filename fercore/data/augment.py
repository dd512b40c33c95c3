"""Augment: batched training-time augmentation on the device (docs/architecture.md#compute).

Every op is a parameter of `AugmentConfig` (checked by the config layer) and draws from the
generator the Loader passes, seeded by (seed, epoch), so an epoch replays exactly after a resume.
Landmarks follow every spatial op, so POI's regions stay on the face they were cut from.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AugmentConfig, check, raise_problems
from .landmarks import FLIP_LANDMARKS

GRAY = (0.2989, 0.587, 0.114)     # torchvision's rgb_to_grayscale weights


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


class Augment:
    """Batched on-device augmentation, every op a parameter (AugmentConfig), applied in this order:
    horizontal flip and RandomErasing `[lineage: SCN/RUL/EAC recipe]`; random resized crop
    `[lineage: torchvision RandomResizedCrop]`, rotation, zoom and translation as one affine warp
    (one resampling, border padding `[ours]`), colour jitter and random grayscale `[lineage:
    AMP-Net/DUML recipe for POI]`. Landmarks follow the flip and the affine warp exactly."""

    def __init__(self, cfg: AugmentConfig) -> None:
        raise_problems(check(cfg, "data.augment."))  # a config built by hand is checked like any other
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
