"""FaceSet: images plus every label fercore knows about them, as tensors (docs/architecture.md#core-types)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..files import atomic_path

_PER_SAMPLE = ("images", "label", "clean_label", "true_label", "soft_label", "au", "au_mask",
               "va", "va_mask", "landmarks")


@dataclass
class FaceSet:
    """One split of a dataset.

    `images` is (N, C, H, W) uint8. `label` is the label used for training (possibly noisy);
    `clean_label` the label before injected noise (None when unknown); `true_label` the true
    emotion where it is known (synthetic data only). `soft_label` is a (N, K) vote distribution,
    `au`/`au_mask` (N, A) AU occurrence and which entries are annotated, `va`/`va_mask` (N, 2)
    valence-arousal and (N,) mask, `landmarks` (N, 5, 2) pixel (x, y) of left eye, right eye, nose,
    left and right mouth corner (image left first). `extras` holds further per-sample tensors,
    `meta` JSON-able facts (names, provenance, noise report).
    """

    images: Tensor
    label: Tensor
    classes: tuple[str, ...]
    ids: list[str]
    clean_label: Tensor | None = None
    true_label: Tensor | None = None
    soft_label: Tensor | None = None
    au: Tensor | None = None
    au_mask: Tensor | None = None
    va: Tensor | None = None
    va_mask: Tensor | None = None
    landmarks: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"FaceSet.images must be (N,C,H,W) uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        for name in _PER_SAMPLE[1:]:
            t = getattr(self, name)
            if t is not None and len(t) != n:
                raise ValueError(f"FaceSet.{name} has {len(t)} rows, images have {n}")
        for name, t in self.extras.items():
            if len(t) != n:
                raise ValueError(f"FaceSet.extras[{name!r}] has {len(t)} rows, images have {n}")
        if len(self.ids) != n:
            raise ValueError(f"FaceSet.ids has {len(self.ids)} entries, images have {n}")
        if n and (int(self.label.min()) < 0 or int(self.label.max()) >= len(self.classes)):
            raise ValueError(f"FaceSet.label outside 0..{len(self.classes) - 1}")
        self.meta = json.loads(json.dumps(self.meta))  # JSON-normal, so it survives save/load unchanged

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, index: Tensor | list[int]) -> FaceSet:
        """The samples at `index`, every per-sample field sliced the same way."""
        index = torch.as_tensor(index, dtype=torch.long)
        fields = {name: (None if getattr(self, name) is None else getattr(self, name)[index])
                  for name in _PER_SAMPLE}
        return FaceSet(**fields, classes=self.classes, ids=[self.ids[i] for i in index.tolist()],
                       extras={k: v[index] for k, v in self.extras.items()}, meta=dict(self.meta))

    def replace(self, **changes) -> FaceSet:
        return dataclasses.replace(self, **changes)

    def class_counts(self, which: str = "label") -> list[int]:
        return torch.bincount(getattr(self, which), minlength=self.num_classes).tolist()

    def fingerprint(self) -> str:
        """sha256 over image bytes, training labels and class names: what a run was trained on; with
        AU / VA side files (`meta['side_files']`) also their sha256 and the merge rule."""
        h = hashlib.sha256()
        h.update(json.dumps(list(self.classes)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.label.to(torch.int64).numpy().tobytes())
        side = self.meta.get("side_files")
        if side:
            h.update(json.dumps([side["rule"], {k: f["sha256"] for k, f in side["files"].items()}],
                                sort_keys=True).encode())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write to one tensor file (atomic), loadable with `weights_only=True`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {name: getattr(self, name) for name in _PER_SAMPLE}
        blob.update(classes=list(self.classes), ids=self.ids, extras=self.extras,
                    meta=json.dumps(self.meta))
        with atomic_path(path) as tmp:  # a killed writer leaves no half file, and no stray .tmp for long
            torch.save(blob, tmp)

    @classmethod
    def load(cls, path: str | Path) -> FaceSet:
        blob = torch.load(path, weights_only=True)
        return cls(**{name: blob[name] for name in _PER_SAMPLE}, classes=tuple(blob["classes"]),
                   ids=list(blob["ids"]), extras=dict(blob["extras"]), meta=json.loads(blob["meta"]))
