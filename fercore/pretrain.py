"""fercore's own backbone pretraining, cached: the local stand-in for the face-pretrained backbones
the papers start from `[ours]` (docs/architecture.md#pretraining).

The methods' recipes fine-tune a ResNet pretrained on faces (MS-Celeb-1M face recognition for SCN,
RUL, DAN; VGGFace2 for EAC). fercore downloads nothing, so this module trains the backbone itself on a
SynthFER set *disjoint* from the one a run trains on (its own `synthfer.seed`), with one of three
objectives, each `[ours]`:

- `au` (the quick profile's start, `PRESETS["au32"]`): regression of the 16 AU intensities (binary
  cross-entropy on soft targets), like a backbone trained on an AU-coded face corpus: its features
  encode facial muscle actions, never the expression labels a run is scored on;
- `identity`: cross-entropy over `synthfer.identities` persons told apart by facial **geometry**
  only (colour, hair, glasses, pose, light and background drawn per render, expressions random): the
  papers' face-recognition pretraining in miniature;
- `expression`: cross-entropy on the faces' **true** emotions (clean labels, another draw of
  faces): like a backbone trained on a large clean FER set; it already solves the task.

Which one the profiles use, and why, is measured in docs/architecture.md#pretraining (fine-tuning
curves from each, same seeds, against a random start).

`pretrain(cfg)` trains (seeded) and saves the backbone's `state_dict` to `backbone.pt`, which
`model.weights=FILE` loads strictly (`fercore.models.weights`), with a `record.json` (config,
per-epoch metrics, timing) under `$FERCORE_CACHE/pretrain/<key>/`, `<key>` a hash of the config. A
second call returns the cached file without training; concurrent calls wait on a lock and then read
it. `model.weights=pretrain:<preset>` names one of `PRESETS`; the engine resolves it (training it on
first use) and records the file's sha256 in env.json like any other weights file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import AugmentConfig, NonNeg, NonNegInt, PosInt, Positive, SynthFERConfig, check, raise_problems
from .data.augment import Augment
from .data.loader import Loader
from .data.synthfer import load_synthfer
from .errors import ConfigError, RunError
from .files import atomic_path, cache_dir, sha256_text
from .models.backbone import Backbone, init_linear, native_bf16

VERSION = 1  # bump when training changes, so cached backbones are not reused across versions
PREFIX = "pretrain:"


@dataclass(frozen=True)
class PretrainConfig:
    """Every choice of a pretraining run, each `[ours]`; all but `num_threads` key the cache."""

    objective: Literal["au", "identity", "expression"] = "au"  # module docstring
    backbone: str = "fercore_resnet10t_os8"  # the quick profile's; `model.weights=pretrain:<preset>` sets the run's
    image_size: PosInt = 32         # the fine-tuning runs' data.image_size
    n_train: PosInt = 12000         # pretraining faces (RAF-DB's training set has 12,271)
    n_val: PosInt = 1000            # held-out faces of the same draw, for the per-epoch metric
    # disjoint from the runs' data (another seed); `identities` > 0 for objective=identity
    synthfer: SynthFERConfig = field(default_factory=lambda: SynthFERConfig(seed=1))
    epochs: PosInt = 4
    batch_size: PosInt = 128
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # sgd: momentum 0.9
    lr: Positive = 2e-3             # backbone and head
    weight_decay: NonNeg = 1e-4
    schedule: Literal["cosine", "none"] = "cosine"  # cosine to 0 over the run, per step
    warmup_steps: NonNegInt = 0     # linear warm-up steps before the schedule
    # bf16 autocast; fast: bf16 where the CPU computes it natively (AVX-512 BF16 / AMX), else fp32;
    # the cache key holds what `fast` resolved to, so bf16 and fp32 backbones are cached apart
    amp: Literal["fast", "bf16", "none"] = "fast"
    memory_format: Literal["channels_last", "contiguous"] = "channels_last"
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the runs' default: flip + erasing
    normalize: Literal["imagenet", "msceleb", "half"] = "imagenet"  # the runs' data.normalize
    seed: NonNegInt = 0             # initialisation, batch order and augmentation
    num_threads: NonNegInt = 0      # CPU threads (0: torch's default); not part of the cache key

    def problems(self, key: str) -> list[str]:
        if self.objective == "identity" and self.synthfer.identities < 2:
            return [f"pretrain objective 'identity' needs {key}synthfer.identities >= 2"]
        return []

    def resolved_amp(self) -> str:
        """'bf16' or 'none': what `amp` means on this machine (pretraining runs on the CPU)."""
        if self.amp == "fast":
            return "bf16" if native_bf16(torch.device("cpu")) else "none"
        return self.amp

    def key(self) -> str:
        d = asdict(self)
        d.pop("num_threads")
        d["amp"] = self.resolved_amp()
        return sha256_text(json.dumps({"version": VERSION, **d}, sort_keys=True, default=list), 16)


# Named configurations for `model.weights=pretrain:<name>` [ours]. The quick and smoke profiles use au32.
PRESETS: dict[str, PretrainConfig] = {
    "au32": PretrainConfig(),
    "identity32": PretrainConfig(objective="identity", synthfer=SynthFERConfig(seed=1, identities=200), epochs=16,
                                 n_train=3200, n_val=400),
    "expression32": PretrainConfig(objective="expression"),
    "au32-smoke": PretrainConfig(n_train=512, n_val=128, epochs=1),  # the smoke profile: the code path only
}


def _targets(fs, objective: str):
    """(FaceSet whose `label` / `au` the Loader hands out as targets, output size of the head)."""
    if objective == "expression":
        return fs.replace(label=fs.true_label.clone()), fs.num_classes
    if objective == "identity":
        k = int(fs.meta["synthfer"]["identities"])
        return fs.replace(label=fs.extras["identity"].clone(), classes=tuple(f"id{i}" for i in range(k))), k
    return fs.replace(au=fs.extras["au_intensity"].clone()), fs.extras["au_intensity"].shape[1]


def _loss(objective: str, out: torch.Tensor, batch: dict) -> torch.Tensor:
    if objective == "au":
        return F.binary_cross_entropy_with_logits(out.float(), batch["au"].float())
    return F.cross_entropy(out.float(), batch["label"])


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def _validate(net: nn.Module, head: nn.Module, data, cfg: PretrainConfig, dtype) -> dict:
    net.eval()
    outs, ys = [], []
    for b in Loader(data, 256, torch.device("cpu"), normalize=cfg.normalize):
        with _autocast(dtype):
            outs.append(head(net(b["image"])).float())
        ys.append(b["au"] if cfg.objective == "au" else b["label"])
    net.train()
    out, y = torch.cat(outs), torch.cat(ys)
    if cfg.objective == "au":
        p = out.sigmoid()
        return {"val_bce": float(F.binary_cross_entropy(p, y)), "val_mae": float((p - y).abs().mean())}
    return {"val_acc": float((out.argmax(1) == y).float().mean())}


def train_backbone(cfg: PretrainConfig, verbose: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Train as configured (no cache); returns (the backbone's state_dict, the record)."""
    raise_problems(check(cfg, "pretrain."))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    t_start = time.perf_counter()
    train, val = load_synthfer(cfg.synthfer, cfg.n_train, cfg.n_val, cfg.image_size)
    t_data = time.perf_counter() - t_start
    train, k = _targets(train, cfg.objective)
    val, _ = _targets(val, cfg.objective)
    torch.manual_seed(cfg.seed)
    backbone = Backbone(cfg.backbone)
    head = init_linear(nn.Linear(backbone.num_features, k))
    channels_last = cfg.memory_format == "channels_last"
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    params = list(backbone.parameters()) + list(head.parameters())
    make = {"adam": lambda: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
            "adamw": lambda: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
            "sgd": lambda: torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)}
    opt = make[cfg.optimizer]()
    loader = Loader(train, cfg.batch_size, torch.device("cpu"), augment=Augment(cfg.augment), shuffle=True,
                    drop_last=len(train) > cfg.batch_size, seed=cfg.seed, normalize=cfg.normalize)
    total = cfg.epochs * len(loader)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "none":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    dtype = torch.bfloat16 if cfg.resolved_amp() == "bf16" else None
    history = []
    backbone.train()
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for b in loader:
            x = b["image"].contiguous(memory_format=torch.channels_last) if channels_last else b["image"]
            with _autocast(dtype):
                out = head(backbone(x))
            loss = _loss(cfg.objective, out, b)
            if not torch.isfinite(loss):
                raise RunError(f"pretrain: loss {loss.item()} at epoch {epoch + 1}; nothing was cached")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(b["index"])
            loss_sum += float(loss.detach()) * len(b["index"])
            if cfg.objective != "au":
                correct += int((out.argmax(1) == b["label"]).sum())
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "epoch_time_s": time.perf_counter() - t0,
               **({"train_acc": correct / seen} if cfg.objective != "au" else {}),
               **_validate(backbone, head, val, cfg, dtype)}
        history.append(row)
        if verbose:
            print(f"pretrain {cfg.objective} epoch {epoch + 1}/{cfg.epochs}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"), flush=True)
    record = {"config": json.loads(json.dumps(asdict(cfg), default=list)), "key": cfg.key(), "version": VERSION,
              "history": history, "data_s": t_data, "train_s": time.perf_counter() - t_start - t_data,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "amp": cfg.resolved_amp()}
    return {k: v.detach().contiguous().clone() for k, v in backbone.net.state_dict().items()}, record


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def folder_of(cfg: PretrainConfig) -> Path:
    return cache_dir() / "pretrain" / cfg.key()


def pretrain(cfg: PretrainConfig = PretrainConfig(), verbose: bool = False) -> Path:
    """The cached backbone file of `cfg`, training it first if it is not cached (or does not read back)."""
    raise_problems(check(cfg, "pretrain."))
    folder = folder_of(cfg)
    weights = folder / "backbone.pt"
    with _locked(folder.parent / f".{cfg.key()}.lock"):
        if weights.is_file() and (folder / "record.json").is_file():
            try:
                torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
                return weights
            except Exception:  # noqa: BLE001 - a damaged cache entry is trained again
                print(f"{weights}: cached backbone does not read back; training it again", flush=True)
        state, record = train_backbone(cfg, verbose=verbose)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(weights) as tmp:
            torch.save({"state_dict": state, "pretrain": json.dumps(record)}, tmp)
        with atomic_path(folder / "record.json") as tmp:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    return weights


def record_of(weights: str | Path) -> dict:
    """The record.json beside a cached backbone file."""
    return json.loads((Path(weights).parent / "record.json").read_text())


def preset(spec: str, backbone: str = "") -> PretrainConfig:
    """`pretrain:<name>` -> its PretrainConfig, for `backbone` when given (a run's `model.backbone`: a
    preset names the objective and the data, the backbone is the run's); a one-line ConfigError for an
    unknown name."""
    name = spec[len(PREFIX):]
    if name not in PRESETS:
        raise ConfigError(f"model.weights: unknown pretraining preset {name!r}; expected one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], backbone=backbone) if backbone else PRESETS[name]


def resolve(spec: str, backbone: str = "", verbose: bool = False) -> Path:
    """A `model.weights` value -> a weights file: `pretrain:<preset>` (for `backbone`, see `preset`) is
    trained on first use and cached."""
    return pretrain(preset(spec, backbone), verbose=verbose) if spec.startswith(PREFIX) else Path(spec)


def with_changes(cfg: PretrainConfig, **changes) -> PretrainConfig:
    """A copy of `cfg` with `changes`; `synthfer_<field>` keys change the SynthFER config."""
    syn = {k[len("synthfer_"):]: changes.pop(k) for k in list(changes) if k.startswith("synthfer_")}
    if syn:
        changes["synthfer"] = dataclasses.replace(cfg.synthfer, **syn)
    return dataclasses.replace(cfg, **changes)
