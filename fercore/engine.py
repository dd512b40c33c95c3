"""The engine: `fit` trains a Method over a Loader into a run directory; `infer` is the one
inference path (`evaluate`, `predict_run`, the predict CLI and the notebooks all go through it).

`fit` reads top to bottom like a short training loop (docs/architecture.md#the-training-loop):
set up the process, load the data, build the method, open the run directory (reuse, resume or
start), then one `train_epoch` + `evaluate` + `save_epoch` per epoch and a summary. Everything a
run could refuse (config, data, method, weights) is checked before its folder is created.
It seeds everything, checkpoints every epoch atomically, resumes bit-for-bit on CPU, stops with a
clear message on a non-finite loss (keeping the last good checkpoint), and records per-sample
diagnostics (id, loss and probability of the given label, prediction, method scores) every epoch.
The same code runs on CPU and GPU (bf16 autocast, channels_last, fused optimizers, optional
`torch.compile`) and under torchrun with DistributedDataParallel (`fercore.distributed`).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, pretrain
from .config import Amp, MemoryFormat, OptimConfig, RunConfig, check_choice, from_run_config, identity_of
from .data.augment import Augment
from .data.datasets import load_dataset
from .data.faceset import FaceSet
from .data.loader import Loader
from .data.noise import missing_file as missing_noise_file
from .distributed import Dist
from .errors import ConfigError, NonFiniteLossError, RunError, notice
from .methods import get_method
from .methods.base import DataFacts, Method, SampleRecord, TrainState
from .metrics import auxiliary_report, classification_report
from .models.backbone import native_bf16, unknown_model
from .models.weights import load_backbone_weights
from .rundir import RunDir, code_hash, environment


def resolve_device(spec: str) -> torch.device:
    """`device`: 'auto' = CUDA when torch sees it, else CPU; an explicit CUDA device must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .config import DEVICE_PATTERN

    if not DEVICE_PATTERN.fullmatch(str(spec)):
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    dev = torch.device(spec)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"config key 'device' is {spec!r}, but torch sees "
                          f"{torch.cuda.device_count()} CUDA device(s); use device=cpu or device=auto")
    return dev


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """train.amp: 'auto' = bf16 autocast on CUDA and none on CPU (it changes the numerics there); 'fast' =
    bf16 wherever the device computes it natively (`native_bf16`), else none; 'bf16'; 'none'."""
    check_choice("train.amp", spec, Amp)
    if spec == "fast":
        return torch.bfloat16 if native_bf16(device) else None
    return torch.bfloat16 if spec == "bf16" or (spec == "auto" and device.type == "cuda") else None


def use_channels_last(spec: str, device: torch.device) -> bool:
    """model.memory_format: 'auto' = channels_last with CUDA (tensor-core friendly), 'channels_last', 'contiguous'."""
    check_choice("model.memory_format", spec, MemoryFormat)
    return spec == "channels_last" or (spec == "auto" and device.type == "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    npst = np.random.get_state(legacy=False)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
                       "pos": npst["state"]["pos"], "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                         "pos": n["pos"]}, "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}  # optim.optimizer


def build_optimizer(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    extra = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        extra["momentum"] = cfg.momentum
    return OPTIMIZERS[cfg.optimizer](groups, weight_decay=cfg.weight_decay, **extra)


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int):
    """optim.schedule, stepped once per epoch."""
    sched = torch.optim.lr_scheduler
    return {"exponential": lambda: sched.ExponentialLR(opt, cfg.gamma),
            "step": lambda: sched.StepLR(opt, cfg.step_size, cfg.gamma),
            "cosine": lambda: sched.CosineAnnealingLR(opt, max(epochs, 1)),
            "none": lambda: sched.LambdaLR(opt, lambda _: 1.0)}[cfg.schedule]()


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _to_memory_format(batch: dict, channels_last: bool) -> dict:
    if channels_last:
        for k in ("image", "image2"):
            if k in batch:
                batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
    return batch


def prepare_method(method: Method, cfg: RunConfig, device: torch.device) -> Method:
    """Move to `device` and apply the model options: channels_last, torch.compile of the backbone."""
    method = method.to(device)
    if use_channels_last(cfg.model.memory_format, device):
        method = method.to(memory_format=torch.channels_last)
    if cfg.model.compile:
        method.backbone.net.compile()  # in place: state_dict keys stay unprefixed
    return method


@torch.no_grad()
# --- inference: the one path ------------------------------------------------------------------

@torch.no_grad()
def infer(method: Method, data: FaceSet, cfg: RunConfig, device: torch.device | str, *,
          dist: Dist | None = None, batch_size: int | None = None, features: bool = False) -> dict[str, np.ndarray]:
    """`method.predict` over `data` in order, in eval mode, without augmentation, with the run's
    own normalisation, precision and memory format: 'prob' (softmax of the logits) plus every other
    estimate (importance, uncertainty, confidence, AUs, VA, POI's region distributions); with
    `features`, also 'feature', the backbone's pooled feature (POI: TRN's).
    Distributed: each rank scores a slice, the rows are gathered in order."""
    d = dist or Dist()
    device = torch.device(device)
    was_training = method.training
    method.eval()
    part = data
    if d.active:
        bounds = torch.linspace(0, len(data), d.world + 1).round().long().tolist()
        part = data.subset(list(range(bounds[d.rank], bounds[d.rank + 1])))
    loader = Loader(part, batch_size or cfg.train.eval_batch_size, device, normalize=cfg.data.normalize,
                    residency=cfg.data.residency)
    channels_last, dtype = use_channels_last(cfg.model.memory_format, device), amp_dtype(cfg.train.amp, device)
    parts: dict[str, list[torch.Tensor]] = {}
    unlabelled = bool(data.meta.get("unlabelled"))  # images without annotation (fercore predict)
    for batch in loader:
        if unlabelled:
            batch.pop("label")
        with _autocast(device, dtype):
            out = method.predict(_to_memory_format(batch, channels_last))
            if features:
                out["feature"] = method.backbone(batch["image"])
        out["prob"] = out.pop("logits").float().softmax(1)
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float())
    method.train(was_training)
    return {k: d.gather_rows(torch.cat(v)).cpu().numpy() for k, v in parts.items()}


def evaluate(method: Method, data: FaceSet, cfg: RunConfig, device: torch.device, *, dist: Dist | None = None) -> dict:
    """Metrics of `method` on `data` (against its labels, and its true labels where known),
    plus the per-sample predictions ('pred', 'prob'). `data` must match what the method was trained
    on (image size, classes: `check_compatible`), so no class it cannot predict is counted."""
    check_compatible(method.facts, data)
    est = infer(method, data, cfg, device, dist=dist)
    pred = est["prob"].argmax(1)
    out = classification_report(data.label.numpy(), pred, data.num_classes)
    if data.true_label is not None:
        out["acc_true"] = float((data.true_label.numpy() == pred).mean())
    out.update(auxiliary_report(data, est))
    out.update(pred=pred, prob=est["prob"])
    return out


def restore(run_dir: str | Path, device: str | torch.device = "cpu",
            overrides: list[str] | None = None) -> tuple[RunConfig, Method]:
    """Rebuild the method of a run directory from its config.json and checkpoint.pt alone (no
    training data: the checkpoint carries the DataFacts). `overrides` change the config (e.g.
    data keys for evaluating on another dataset); the model must stay the same. Returned in eval
    mode. Every damaged or missing file is a RunError naming it; a run that did not finish is
    restored from its last checkpoint with a notice saying so."""
    rd = RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise RunError(f"{rd.path}: no such run directory")
    if not rd.file("config.json").is_file() or not rd.started:
        raise RunError(f"{rd.path} is not a run directory with a checkpoint ({rd.status()}; "
                       f"config.json and checkpoint.pt expected)")
    stored = rd.config
    try:
        from_run_config(stored)
    except ConfigError as e:  # the file's own values, before the caller's overrides
        raise RunError("\n".join(f"{rd.file('config.json')}: {line}" for line in str(e).splitlines())) from None
    cfg = from_run_config(stored, overrides)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    ckpt = rd.load_checkpoint(map_location=device)
    if "facts" not in ckpt:
        raise RunError(f"{rd.file('checkpoint.pt')}: written by an older fercore without data facts; "
                       f"retrain the run to use eval/predict")
    try:
        facts = DataFacts(**json.loads(ckpt["facts"]))
        method = get_method(cfg.method)(cfg, facts)
        method.load_state_dict(ckpt.get("ema") or ckpt["model"])  # with train.ema: the weights evaluated
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise RunError(f"{rd.file('checkpoint.pt')}: does not fit the run's model "
                       f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    if not rd.finished:
        notice(f"{rd.path}: the run did not finish ({rd.status()}); using its last checkpoint "
               f"(epoch {ckpt['epoch']}): `fercore train ... --resume` completes it")
    method = prepare_method(method, cfg, device)
    return cfg, method.eval()


def predict_run(run_dir: str | Path, data: FaceSet, device: str | torch.device = "cpu",
                batch_size: int | None = None, features: bool = False) -> dict[str, np.ndarray]:
    """`infer` of a run directory's trained method on `data`, with the run's own normalisation."""
    device = torch.device(device)
    cfg, method = restore(run_dir, device)
    check_compatible(method.facts, data, run_dir)
    return infer(method, data, cfg, device, batch_size=batch_size, features=features)


def check_compatible(facts: DataFacts, data: FaceSet, run_dir: str | Path = "the run") -> None:
    """A RunError unless `data` matches what the run was trained on: image size and classes."""
    if data.image_size != facts.image_size:
        raise RunError(f"{run_dir}: trained at {facts.image_size} px, the data is at {data.image_size} px; "
                       f"evaluate at data.image_size={facts.image_size}")
    if tuple(data.classes) != tuple(facts.classes):
        raise RunError(f"{run_dir}: trained on the classes {list(facts.classes)}, the data has "
                       f"{list(data.classes)}; choose the matching label protocol (data.protocol=...)")


def train_step(model: torch.nn.Module, method: Method, batch: dict, state: TrainState, opt: torch.optim.Optimizer,
               *, dtype: torch.dtype | None, channels_last: bool, grad_clip: float = 0.0,
               before_backward=None) -> tuple[torch.Tensor, dict, dict]:
    """One optimiser step of `method` on `batch` (`model` is the method or its DDP wrapper):
    forward and loss under autocast, `before_backward(loss)` (the NaN watch), backward, clip,
    step, then the method's `after_step`. Returns (loss, logged terms, forward outputs)."""
    batch = _to_memory_format(batch, channels_last)
    with _autocast(batch["image"].device, dtype):
        out = model(batch)
        loss, logs = method.loss(batch, out, state)
    if before_backward is not None:
        before_backward(loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    opt.step()
    state.step += 1
    method.after_step(batch, out, state)
    return loss, logs, out


class _NonFiniteWatch:
    """Remembers the first step whose loss was NaN/inf without a device sync per step; `check`
    (every step on CPU, every `every` steps on CUDA, and at epoch end) raises on all ranks together."""

    def __init__(self, device: torch.device, every: int = 25) -> None:
        self.every = 1 if device.type == "cpu" else every
        self.step = torch.tensor(-1, device=device)
        self.value = torch.tensor(0.0, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.step < 0)
        self.step = torch.where(bad, torch.tensor(step, device=self.step.device), self.step)
        self.value = torch.where(bad, loss.detach().float(), self.value)

    def check(self, d: Dist, step: int, force: bool, message) -> None:
        if not force and step % self.every:
            return
        if d.any(self.step >= 0):
            mine = (int(self.step.item()), self.value.item())
            first = min(s for s in d.gather_objects(mine) if s[0] >= 0)
            raise NonFiniteLossError(message(first[1], first[0]))


def _progress_disabled(enabled: bool, d: Dist) -> bool:
    """Bars only on rank 0, in a terminal or a notebook; logs get one line per epoch instead."""
    return not enabled or not d.main or not (sys.stderr.isatty() or "ipykernel" in sys.modules)


def _tensorboard_writer(cfg: RunConfig):
    """SummaryWriter if train.tensorboard is on (and the optional package is installed), else None."""
    if not cfg.train.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: "
                          "pip install 'fercore[tensorboard]'") from None
    return SummaryWriter


# --- training ----------------------------------------------------------------------------------

def _setup_process(cfg: RunConfig) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (if any), pick the device, set threads and determinism."""
    d, dist_device = distributed.setup(cfg.device)
    device = dist_device or resolve_device(cfg.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not cfg.train.deterministic
    return d, device


def _load_data(cfg: RunConfig, d: Dist) -> tuple[FaceSet, FaceSet]:
    """The configured dataset with its training-label noise; rank 0 first (it fills the cache)."""
    if not d.main:
        d.barrier()
    data = load_dataset(cfg.data)
    if d.main:
        d.barrier()
    return data


def fit(cfg: RunConfig, data: tuple[FaceSet, FaceSet] | None = None, *, if_exists: str = "error") -> RunDir:
    """Train `cfg.method` as configured and return its finished run directory.

    `data` (train, test) skips `load_dataset(cfg.data)`; pass it to train on data prepared in a
    notebook. If the run directory already holds a run, `if_exists` decides: 'error' (default),
    'resume' (continue its last checkpoint), 'overwrite' (start again), or 'reuse' (return it
    unchanged if it finished with the same config, data and fercore source, else start again).
    'resume' and 'reuse' refuse a directory that holds a run of another config; no mode deletes a
    folder fercore did not make. Under torchrun every rank calls `fit` with the same arguments;
    rank 0 writes.
    """
    writer = _tensorboard_writer(cfg)
    backbone_problem = unknown_model(cfg.model.backbone, "model.backbone")
    if backbone_problem is not None:  # before the data is generated or decoded into the cache
        raise backbone_problem
    noise_problem = missing_noise_file(cfg.data.noise, cfg.data.data_root)
    if noise_problem is not None and data is None:  # so is a noise file that is not there
        raise noise_problem
    d, device = _setup_process(cfg)
    seed_everything(cfg.seed)
    train, test = data if data is not None else _load_data(cfg, d)
    rd = RunDir(Path(cfg.out_dir) / cfg.run_name)
    with rd.lock() if d.main else contextlib.nullcontext():
        return _fit_locked(cfg, rd, train, test, if_exists, d, device, writer)


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(prefix + k)
    return out


def _check_existing(rd: RunDir, config_json: dict, if_exists: str) -> None:
    """'resume' and 'reuse' never continue or delete a run of another config (keys that do not
    change a result, such as the thread count, may differ: `config.identity_of`)."""
    if if_exists in ("resume", "reuse") and rd.started and rd.file("config.json").is_file():
        diff = _config_diff(identity_of(rd.config), identity_of(config_json))
        if diff:
            raise ConfigError(f"{rd.path} holds a run of another config (it differs in {', '.join(diff)}); "
                              f"give this run its own name=..., or overwrite that one")


def _environment(cfg: RunConfig, method: Method, train: FaceSet, test: FaceSet, d: Dist, device: torch.device,
                 weights: dict | None) -> dict:
    """env.json: versions, device, git commit, code hash, data fingerprints, realised noise, options."""
    env = environment(device)
    env["data"] = {"train_fingerprint": train.fingerprint(), "test_fingerprint": test.fingerprint(),
                   "train_size": len(train), "test_size": len(test), "image_size": cfg.data.image_size,
                   # a real split's size before data.n_train / n_test subsampling (a subset is said and kept here)
                   **({"train_rows": train.meta["n_rows"], "test_rows": test.meta["n_rows"]}
                      if "n_rows" in train.meta and "n_rows" in test.meta else {}),
                   "noise": train.meta.get("noise"),
                   **{k: train.meta[k] for k in ("layout", "label_source", "vote_seed", "votes") if k in train.meta}}
    env["method"] = method.describe()
    env["distributed"] = {"world_size": d.world, "backend": torch.distributed.get_backend() if d.active else None}
    dtype = amp_dtype(cfg.train.amp, device)
    env["options"] = {"amp": str(dtype).replace("torch.", "") if dtype else "none",
                      "channels_last": use_channels_last(cfg.model.memory_format, device),
                      "compile": cfg.model.compile}
    if weights is not None:
        env["weights"] = weights
    return env


class SampleLog:
    """What the engine records for every training sample, whatever the method (docs/architecture.md#
    run-directories): the loss and the probability of the label *given* (before any relabeling)
    and the prediction, from the batch's own forward pass; with the ids and labels once, so every
    analysis (small-loss reference, cleanlab, AUROC of a method's score) joins on the same rows."""

    def __init__(self, train: FaceSet, device: torch.device) -> None:
        n = len(train)
        self.given = train.label.to(device)
        self.loss, self.p_label, self.pred = SampleRecord(n), SampleRecord(n), SampleRecord(n)
        self.flipped = train.extras.get("flipped")

    def write(self, method: Method, batch: dict, out: dict, epoch: int) -> None:
        logits = method.sample_logits(out).detach().float()
        idx = batch["index"]
        y = self.given[idx]
        logp = logits.log_softmax(1)
        self.loss.write(idx, -logp.gather(1, y[:, None]).squeeze(1), epoch)
        self.p_label.write(idx, logp.gather(1, y[:, None]).squeeze(1).exp(), epoch)
        self.pred.write(idx, logits.argmax(1).float(), epoch)

    def arrays(self, d: Dist, epoch: int) -> dict[str, np.ndarray]:
        return {f"{k}@{epoch}": d.merge_samples(getattr(self, k).values).cpu().numpy().copy()
                for k in ("loss", "p_label", "pred")}

    def fit_rates(self, pred: np.ndarray) -> dict[str, float]:
        """Train accuracy on the given labels, split by injected flips: how far the model memorises."""
        seen = ~np.isnan(pred)
        hit = pred == self.given.cpu().numpy()
        out = {}
        if self.flipped is not None and bool(self.flipped.any()):
            flipped = self.flipped.numpy()
            out["train_fit_flipped"] = float(hit[seen & flipped].mean()) if (seen & flipped).any() else float("nan")
            out["train_fit_clean"] = float(hit[seen & ~flipped].mean()) if (seen & ~flipped).any() else float("nan")
        return out


def _initial_diagnostics(train: FaceSet) -> dict[str, np.ndarray]:
    out = {"id": np.array(train.ids, dtype=str), "label_given": train.label.numpy()}
    for name in ("clean_label", "true_label"):
        if getattr(train, name) is not None:
            out[name] = getattr(train, name).numpy()
    if "flipped" in train.extras:
        out["flipped"] = train.extras["flipped"].numpy()
    return out


RESUME_KEYS = ("epoch", "model", "optimizer", "scheduler", "labels", "step", "relabels", "history", "rng")


def _resumable_checkpoint(rd: RunDir, method: Method, cfg: RunConfig, device: torch.device) -> dict | None:
    """The run's last checkpoint, read back and checked against the method before any file is written:
    every state `_resume` loads is there and the weights fit the model; else a RunError naming the file.
    None: no checkpoint (the run starts afresh)."""
    ckpt = rd.load_checkpoint(map_location=device)
    if ckpt is None:
        return None
    path = rd.file("checkpoint.pt")
    missing = [k for k in (*RESUME_KEYS, *(("ema",) if cfg.train.ema else ())) if k not in ckpt]
    own = method.state_dict()
    weights = ckpt["model"] if isinstance(ckpt["model"], dict) else {}
    unfit = [k for k, v in own.items() if k not in weights or getattr(weights[k], "shape", None) != v.shape]
    unfit += [k for k in weights if k not in own]
    if missing or unfit:
        why = (f"it lacks {', '.join(missing)}" if missing else
               f"its weights do not fit the model ({len(unfit)} tensors differ, e.g. {unfit[0]})")
        raise RunError(f"{path}: cannot be resumed ({why}); the file is damaged: start the run again with "
                       f"--overwrite")
    return ckpt


def _resume(rd: RunDir, ckpt: dict | None, method: Method, opt, sched, state: TrainState, d: Dist,
            ema=None) -> tuple[int, list[dict], dict[str, np.ndarray] | None]:
    """Load the last checkpoint (read and checked by `_resumable_checkpoint`) into the method (and its
    moving average), optimiser, scheduler, labels and RNGs; returns the epoch to start from, the history
    so far and the diagnostics so far (None: start afresh)."""
    if ckpt is None:
        return 0, [], None
    try:
        method.load_state_dict(ckpt["model"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state.labels.copy_(ckpt["labels"])
        state.step, state.relabels = ckpt["step"], json.loads(ckpt["relabels"])
        history = json.loads(ckpt["history"])
        _set_rng_state(ckpt["rng"])
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError) as e:
        raise RunError(f"{rd.file('checkpoint.pt')}: cannot be resumed ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:160] if str(e) else 'incomplete'}); the file is damaged: "
                       f"start the run again with --overwrite") from None
    if d.main:
        rd.write_metrics(history)
    return ckpt["epoch"], history, rd.load_diagnostics() or None


def moving_average(method: Method, cfg: RunConfig):
    """`train.ema`: the exponential moving average of `method`'s weights that is evaluated, or None."""
    if not cfg.train.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(method, decay=cfg.train.ema, use_warmup=True)


def train_epoch(model, method: Method, loader, state: TrainState, opt, cfg: RunConfig, d: Dist,
                device: torch.device, log: SampleLog, where: Path, ema=None) -> dict:
    """One epoch of optimiser steps (each followed by the moving average's update, if any); returns the
    epoch's averaged training terms."""
    dtype, channels_last = amp_dtype(cfg.train.amp, device), use_channels_last(cfg.model.memory_format, device)
    epoch = state.epoch
    sums: dict[str, torch.Tensor] = {}
    seen = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    watch = _NonFiniteWatch(device)
    kept = f"epoch {epoch} checkpoint kept" if epoch else "no checkpoint yet"

    def message(value: float, step: int) -> str:
        return f"{cfg.method}: loss is {value} at epoch {epoch + 1}, step {step + 1}; stopped ({kept} in {where})"

    def before_backward(loss: torch.Tensor) -> None:
        watch.update(loss, state.step)
        watch.check(d, state.step, False, message)

    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
               disable=_progress_disabled(cfg.train.progress, d))
    for batch in bar:
        loss, logs, out = train_step(model, method, batch, state, opt, dtype=dtype, channels_last=channels_last,
                                     grad_clip=cfg.optim.grad_clip, before_backward=before_backward)
        if ema is not None:
            ema.update(method, state.step)
        log.write(method, batch, out, epoch)
        n = len(batch["index"])
        seen += n
        correct += (out["logits"].argmax(1) == batch["label"]).sum()
        for k, v in {"loss": loss.detach(), **logs}.items():
            sums[k] = sums.get(k, 0) + v.float() * n
    watch.check(d, state.step, True, message)
    train_time = time.perf_counter() - t0
    seen_all = float(d.sum(seen).item())
    return {**{f"train_{k}": float(d.sum(v).item()) / seen_all for k, v in sums.items()},
            "train_acc": float(d.sum(correct).item()) / seen_all, "images_per_s": seen_all / train_time,
            "epoch_time_s": train_time}


def _merge_relabels(state: TrainState, labels_before: torch.Tensor, n_before: int, d: Dist) -> None:
    """Every rank's relabels of this epoch, in every rank's label table and event list."""
    if d.active:
        d.merge_labels(state.labels, labels_before)
        new = [e for events in d.gather_objects(state.relabels[n_before:]) for e in events]
        state.relabels = state.relabels[:n_before] + new


def _eval_due(cfg: RunConfig, epoch: int) -> bool:
    """Evaluate after every `train.eval_every`-th epoch, after each of the last `train.eval_last` epochs
    and after the last one."""
    return (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 > cfg.train.epochs - max(cfg.train.eval_last, 1)


def _load_weights(method: Method, cfg: RunConfig, d: Dist) -> dict:
    """`model.weights` into the backbone (and the method's other backbone-shaped modules, e.g. POI's
    PIN stem), strictly; `pretrain:<preset>` is fercore's own pretraining, trained on first use."""
    path = pretrain.resolve(cfg.model.weights, cfg.model.backbone, verbose=d.main and cfg.train.progress)
    report = load_backbone_weights(method.backbone, path)
    for name, module in method.extra_weight_targets().items():
        report.setdefault("also_loaded", {})[name] = load_backbone_weights(module, path)["loaded"]
    if cfg.model.weights.startswith(pretrain.PREFIX):
        report["pretrain"] = {"preset": cfg.model.weights,
                              "key": pretrain.preset(cfg.model.weights, cfg.model.backbone).key()}
    if d.main and cfg.train.progress:
        print(f"{cfg.method}: loaded {report['loaded']} backbone tensors from {report['path']} "
              f"({report['format']}, sha256 {report['sha256'][:12]}); ignored {len(report['ignored'])} "
              f"checkpoint tensors: {report['ignored'][:8]}" + (f"; also into {report['also_loaded']}"
                                                                 if "also_loaded" in report else ""))
    return report


def _fit_locked(cfg: RunConfig, rd: RunDir, train: FaceSet, test: FaceSet, if_exists: str, d: Dist,
                device: torch.device, writer) -> RunDir:
    """`fit` once its run directory is locked: no second process can reuse, resume or delete it."""
    # --- open the run: reuse it, or check everything, then (re)start or resume it ---
    config_json = json.loads(cfg.to_json())
    why = None  # why an existing run is not reused (said before it is replaced)
    if if_exists == "reuse" and rd.path.is_dir() and rd.is_fercore_run and (rd.started or rd.finished):
        why = rd.why_not_reusable(config_json, code_hash(), (train.fingerprint(), test.fingerprint()))
        if why is None:
            return rd
    _check_existing(rd, config_json, if_exists)
    method = get_method(cfg.method)(cfg, train)      # data-dependent checks happen here, before any file
    weights = _load_weights(method, cfg, d) if cfg.model.weights else None
    resume = if_exists == "resume" and rd.started
    # a checkpoint that cannot be resumed is refused before config.json and env.json are rewritten
    ckpt = _resumable_checkpoint(rd, method, cfg, device) if resume else None
    if d.main:
        if why is not None:
            hint = " (--resume would continue it)" if not rd.finished else ""
            notice(f"{rd.path}: not reused: {why}; training it again{hint}")
        rd.prepare("resume" if resume else if_exists)
        rd.write_config(config_json)
        rd.write_env(_environment(cfg, method, train, test, d, device, weights))
    d.barrier()

    # --- the model, the optimiser, the data on the device ---
    method = prepare_method(method, cfg, device)
    ema = moving_average(method, cfg)
    model = distributed.wrap(method, d, device)
    opt = build_optimizer(method.param_groups(cfg.optim), cfg.optim, device)
    sched = build_scheduler(opt, cfg.optim, cfg.train.epochs)
    state = TrainState(epoch=0, epochs=cfg.train.epochs, labels=train.label.to(device).clone())
    loader = Loader(train, cfg.train.batch_size, device, labels=state.labels, augment=Augment(cfg.data.augment),
                    shuffle=True, drop_last=len(train) > cfg.train.batch_size, seed=cfg.seed,
                    normalize=cfg.data.normalize, residency=cfg.data.residency, **method.loader_options())
    if d.active:
        loader = distributed.ShardedLoader(loader, d)
    log = SampleLog(train, device)
    start, history, diagnostics = (_resume(rd, ckpt, method, opt, sched, state, d, ema) if resume
                                   else (0, [], None))
    diagnostics = diagnostics or _initial_diagnostics(train)
    tb = writer(str(rd.tensorboard_dir())) if writer is not None and d.main else None
    facts = json.dumps(method.facts.to_dict())

    # --- the epochs ---
    t_run = time.perf_counter()
    for epoch in range(start, cfg.train.epochs):
        state.epoch = epoch
        loader.set_epoch(epoch)
        method.train()
        labels_before, n_before = state.labels.clone(), len(state.relabels)
        row = {"epoch": epoch + 1, **train_epoch(model, method, loader, state, opt, cfg, d, device, log, rd.path,
                                                 ema)}
        _merge_relabels(state, labels_before, n_before, d)
        row.update({f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(opt.param_groups)})
        sched.step()
        method.on_epoch_end(state)
        samples = log.arrays(d, epoch + 1)
        row.update(log.fit_rates(samples[f"pred@{epoch + 1}"]))
        if train.clean_label is not None:
            row["labels_clean_frac"] = float((state.labels.cpu() == train.clean_label).float().mean())
        if _eval_due(cfg, epoch):
            t0 = time.perf_counter()
            ev = evaluate(method if ema is None else ema.module, test, cfg, device, dist=d)
            row.update({f"test_{k}": v for k, v in ev.items() if k not in ("pred", "prob")},
                       eval_time_s=time.perf_counter() - t0)
            diagnostics[f"test_pred@{epoch + 1}"] = ev["pred"]
        history.append(row)
        # copies: on CPU .cpu().numpy() would alias tensors that later epochs overwrite in place
        diagnostics[f"label@{epoch + 1}"] = state.labels.cpu().numpy().copy()
        diagnostics.update(samples)
        for k, v in method.diagnostics().items():
            diagnostics[f"{k}@{epoch + 1}"] = d.merge_samples(v.detach().float()).cpu().numpy().copy()
        if d.main:
            rd.save_diagnostics(diagnostics)
            rd.save_checkpoint({"epoch": epoch + 1, "model": method.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "labels": state.labels.cpu(), "step": state.step,
                                "relabels": json.dumps(state.relabels), "history": json.dumps(history),
                                "rng": _rng_state(), "facts": facts,
                                **({"ema": ema.module.state_dict()} if ema is not None else {})})
            rd.write_metrics(history)
            _log_epoch(tb, row, cfg)

    # --- the summary: last epoch is the headline ---
    if tb is not None:
        tb.close()
    scored = [r for r in history if "test_acc" in r]
    best = max(scored, key=lambda r: r["test_acc"])
    summary = {"method": cfg.method, "seed": cfg.seed, "noise": cfg.data.noise, "headline": "last",
               "last": history[-1], "best": best, "epochs": len(history), "n_relabels": len(state.relabels),
               "wall_time_s": time.perf_counter() - t_run,
               "data": {"train_size": len(train), "test_size": len(test), "noise": train.meta.get("noise")}}
    if d.main:
        rd.write_summary(summary, state.relabels)
    d.barrier()
    return rd


def _log_epoch(tb, row: dict, cfg: RunConfig) -> None:
    """TensorBoard scalars and the one progress line of an epoch."""
    if tb is not None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                tb.add_scalar(k, v, row["epoch"])
        tb.flush()
    if cfg.train.progress:
        acc = f"test acc {row['test_acc']:.4f}" if "test_acc" in row else "(not evaluated)"
        tqdm.write(f"{cfg.method} epoch {row['epoch']}: loss {row['train_loss']:.3f} {acc}")
