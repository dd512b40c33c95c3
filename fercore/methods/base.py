"""The Method interface: a model plus its loss for one batch, with optional epoch hooks.

A method builds its model from a RunConfig, defines `loss(batch, out, state)`, and may define
`after_step` / `on_epoch_end` (e.g. relabeling) and `diagnostics` (per-sample scores the
analysis notebooks read). Adding a method is one new file in this package (docs/contributing.md#add-a-method).

Rebuilding a trained method without its training data (`fercore eval|predict`): the engine
stores `DataFacts` (classes, train size, image size, AU names, ...) in every checkpoint and
rebuilds with `Method(cfg, facts)`. So a method reads only `DataFacts` fields from `train`,
except for statistics it computes from the training data (e.g. an AU co-occurrence graph): those
must be registered buffers, allocated from the facts' shapes when `train` is a `DataFacts`,
and filled by `load_state_dict` from the checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
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


def annotated(target: Tensor | None, mask: Tensor | None) -> bool:
    """Whether a split has a target at all: the tensor exists and at least one entry is annotated
    (a side file that matched no training image, or a mask of zeros, gives no targets)."""
    return target is not None and (mask is None or bool((mask > 0.5).any()))


def annotated_images(target: Tensor | None, mask: Tensor | None) -> int:
    """How many samples have at least one annotated entry of `target`."""
    if target is None:
        return 0
    if mask is None:
        return len(target)
    return int((mask.reshape(len(mask), -1) > 0.5).any(1).sum())


@dataclass
class DataFacts:
    """What a method may know about its training split without its samples (saved in checkpoints)."""

    classes: list[str]
    num_train: int
    image_size: int
    channels: int = 3
    au_names: list[str] | None = None    # names of the AU columns when the split has AU labels (>= 1 annotated)
    has_va: bool = False                 # the split has valence-arousal labels (>= 1 annotated)
    has_landmarks: bool = False

    @classmethod
    def of(cls, data: FaceSet | DataFacts) -> DataFacts:
        if isinstance(data, DataFacts):
            return data
        au_names = None
        if annotated(data.au, data.au_mask):
            au_names = list(data.meta.get("au_names") or [f"au{i}" for i in range(data.au.shape[1])])
        return cls(classes=list(data.classes), num_train=len(data), image_size=data.image_size,
                   channels=data.images.shape[1], au_names=au_names, has_va=annotated(data.va, data.va_mask),
                   has_landmarks=data.landmarks is not None)

    def __len__(self) -> int:
        return self.num_train

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return asdict(self)


class SampleRecord:
    """A per-training-sample score written as batches pass; NaN for samples not seen in the epoch
    of the latest write (so ranks of a distributed run can merge their shards). `width` > 0 records
    a row of that many values per sample (e.g. AU probabilities), shape (n, width)."""

    def __init__(self, n: int, width: int = 0) -> None:
        self.values = torch.full((n, width) if width else (n,), math.nan)
        self.epoch = -1

    def write(self, index: Tensor, values: Tensor, epoch: int) -> None:
        if self.values.device != index.device:
            self.values = self.values.to(index.device)
        if epoch != self.epoch:
            self.values.fill_(math.nan)
            self.epoch = epoch
        self.values[index] = values.detach().float().reshape(len(index), *self.values.shape[1:])


class Method(nn.Module):
    """Base class. Subclasses set `name` and `Params` and implement `forward` and `loss`.

    Everything a loss needs must come out of `forward` (so DistributedDataParallel sees every
    parameter used); `loss` only combines `forward`'s outputs with the batch.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # the method's own per-sample score of a training label's trustworthiness, as saved in
    # diagnostics.npz (`<name>@<epoch>`), and whether a higher value means "clean"; None: no score
    noise_score: ClassVar[tuple[str, bool] | None] = None

    def __init__(self, cfg: RunConfig, train: FaceSet | DataFacts) -> None:
        super().__init__()
        self.cfg, self.params = cfg, cfg.params
        self.facts = DataFacts.of(train)
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

    def sample_logits(self, out: dict[str, Tensor]) -> Tensor:
        """The training forward's per-sample prediction the engine scores against each sample's
        given label (its loss and probability in diagnostics.npz): 'plain_logits' where a method
        mixes samples (RUL), else 'logits'."""
        return out.get("plain_logits", out["logits"])

    def after_step(self, batch: dict, out: dict[str, Tensor], state: TrainState) -> None:
        """Called after each optimiser step (SCN relabels here)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """Called after each training epoch, before evaluation."""

    def diagnostics(self) -> dict[str, Tensor]:
        """Per-training-sample scores (N,) to save with the run."""
        return {}

    def extra_weight_targets(self) -> dict[str, nn.Module]:
        """Modules besides `backbone` that `model.weights` is loaded into as well (strictly), by name."""
        return {}

    def loader_options(self) -> dict:
        """Extra keyword arguments for the training Loader (e.g. EAC's second view)."""
        return {}

    def describe(self) -> dict:
        """Resolved choices worth recording in env.json (e.g. EAC's second view)."""
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
