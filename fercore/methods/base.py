"""The Method interface: a model plus its loss for one batch, with optional epoch hooks.

A method builds its model from a RunConfig, defines `loss(batch, out, state)`, and may define
`after_step` / `on_epoch_end` (e.g. relabeling) and `diagnostics` (per-sample scores the
analysis notebooks read). Adding a method is one new file in this package (design.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import OptimConfig, RunConfig
from ..data.faceset import FaceSet
from ..models.backbone import Backbone


@dataclass
class NoParams:
    """A method without parameters of its own."""


@dataclass
class TrainState:
    """What the engine shares with a method during training."""

    epoch: int                      # 0-based epoch being trained
    epochs: int                     # total epochs of the run
    labels: Tensor                  # live training labels (N,), on the device; relabeling writes here
    step: int = 0                   # optimiser steps so far
    relabels: list[dict] = field(default_factory=list)  # relabel events: epoch, index, old, new, score

    def relabel(self, index: Tensor, new: Tensor, score: Tensor) -> None:
        """Write new labels for `index` and log one event per sample whose label changed."""
        old = self.labels[index]
        changed = old != new
        if not bool(changed.any()):
            return
        index, old, new, score = index[changed], old[changed], new[changed], score[changed]
        self.labels[index] = new
        for i, o, n, s in zip(index.tolist(), old.tolist(), new.tolist(), score.tolist()):
            self.relabels.append({"epoch": self.epoch, "index": i, "old": o, "new": n, "score": s})


class Method(nn.Module):
    """Base class. Subclasses set `name` and `Params` and implement `forward` and `loss`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, cfg: RunConfig, train: FaceSet) -> None:
        super().__init__()
        self.cfg, self.params = cfg, cfg.params
        self.num_classes = train.num_classes
        self.num_train = len(train)
        self.backbone = Backbone(cfg.model.backbone, cfg.model.drop_rate)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Training-mode outputs for a batch; must contain 'logits'."""
        raise NotImplementedError

    def loss(self, batch: dict, out: dict[str, Tensor], state: TrainState) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss to minimise and detached scalar terms to log (averaged per epoch)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, Tensor]:
        """Evaluation outputs: 'logits' plus whatever else the method estimates."""
        return {"logits": self(batch)["logits"]}

    def after_step(self, batch: dict, out: dict[str, Tensor], state: TrainState) -> None:
        """Called after each optimiser step (SCN relabels here)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """Called after each training epoch, before evaluation."""

    def diagnostics(self) -> dict[str, Tensor]:
        """Per-training-sample scores (N,) to save with the run."""
        return {}

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """Backbone at `optim.lr`, everything else (heads) at `optim.head_lr` (or lr if 0)."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        heads = [p for p in self.parameters() if id(p) not in ids]
        groups = [{"params": backbone, "lr": optim.lr, "name": "backbone"}]
        if heads:
            groups.append({"params": heads, "lr": optim.head_lr or optim.lr, "name": "heads"})
        return groups
