"""The training engine: `fit` runs epochs of a Method over a Loader and writes a run directory.

Seeds everything, checkpoints every epoch atomically, resumes bit-for-bit on CPU, stops with a
clear message on a non-finite loss (keeping the last good checkpoint), and evaluates the test
split after every epoch (last- and best-epoch metrics both reported, last is the headline).
The same code runs on CPU and GPU (bf16 autocast, channels_last, fused optimizers, optional
`torch.compile`) and under torchrun with DistributedDataParallel (`fercore.distributed`).
`restore` rebuilds a trained method from its run directory alone, for `eval` and `predict`.
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

from . import distributed
from .config import OptimConfig, RunConfig, _merge, build_config, parse_overrides
from .data.datasets import load_dataset
from .data.faceset import FaceSet
from .data.loader import Augment, Loader
from .distributed import Dist
from .errors import ConfigError, NonFiniteLossError
from .methods import get_method
from .methods.base import DataFacts, Method, TrainState
from .metrics import auxiliary_report, classification_report
from .models.weights import load_backbone_weights
from .results import Run
from .rundir import RunDir, code_hash, environment


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA device")
    return dev


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """train.amp: 'auto' = bf16 autocast on CUDA and none on CPU (it changes the numerics there), 'bf16', 'none'."""
    if spec not in ("auto", "bf16", "none"):
        raise ConfigError(f"train.amp: expected auto, bf16 or none, got {spec!r}")
    return torch.bfloat16 if spec == "bf16" or (spec == "auto" and device.type == "cuda") else None


def use_channels_last(spec: str, device: torch.device) -> bool:
    """model.memory_format: 'auto' = channels_last with CUDA (tensor-core friendly), 'channels_last', 'contiguous'."""
    if spec not in ("auto", "channels_last", "contiguous"):
        raise ConfigError(f"model.memory_format: expected auto, channels_last or contiguous, got {spec!r}")
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


def build_optimizer(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    extra = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra)
    raise ConfigError(f"optim.optimizer: expected adam, adamw or sgd, got {cfg.optimizer!r}")


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int):
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, cfg.gamma)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, cfg.step_size, cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    if cfg.schedule == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ConfigError(f"optim.schedule: expected exponential, step, cosine or none, got {cfg.schedule!r}")


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
def evaluate(method: Method, data: FaceSet, cfg: RunConfig, device: torch.device, *, dist: Dist | None = None) -> dict:
    """Metrics of `method` on `data` (against its labels, and its true labels where known),
    plus the per-sample predictions ('pred', 'prob'). Distributed: each rank scores a slice."""
    d = dist or Dist()
    was_training = method.training
    method.eval()
    part = data
    if d.active:
        bounds = torch.linspace(0, len(data), d.world + 1).round().long().tolist()
        part = data.subset(list(range(bounds[d.rank], bounds[d.rank + 1])))
    loader = Loader(part, cfg.train.eval_batch_size, device, normalize=cfg.data.normalize,
                    residency=cfg.data.residency)
    channels_last, dtype = use_channels_last(cfg.model.memory_format, device), amp_dtype(cfg.train.amp, device)
    probs, aux = [], {}
    for b in loader:
        with _autocast(device, dtype):
            estimates = method.predict(_to_memory_format(b, channels_last))
        probs.append(estimates["logits"].float().softmax(1))
        for k in ("au", "va"):  # auxiliary-task estimates (MTAC), scored below where data has labels
            if k in estimates:
                aux.setdefault(k, []).append(estimates[k].float())
    probs = d.gather_rows(torch.cat(probs)).cpu()
    aux = {k: d.gather_rows(torch.cat(v)).cpu().numpy() for k, v in aux.items()}
    method.train(was_training)
    pred = probs.argmax(1).numpy()
    out = classification_report(data.label.numpy(), pred, data.num_classes)
    if data.true_label is not None:
        out["acc_true"] = float((data.true_label.numpy() == pred).mean())
    out.update(auxiliary_report(data, aux))
    out.update(pred=pred, prob=probs.numpy())
    return out


@torch.no_grad()
def predict_split(method: Method, data: FaceSet, device: str | torch.device = "cpu", batch_size: int = 256,
                  normalize: str = "imagenet") -> dict[str, np.ndarray]:
    """`method.predict` over `data` in order, in eval mode without augmentation: 'prob' (softmax of the
    logits) plus every other output (importance, uncertainty, AUs, VA, POI's region distributions)."""
    was_training = method.training
    method.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in Loader(data, batch_size, torch.device(device), normalize=normalize):
        out = method.predict(batch)
        out["prob"] = out.pop("logits").float().softmax(1)
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float().cpu())
    method.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def restore(run_dir: str | Path, device: str | torch.device = "cpu",
            overrides: list[str] | None = None) -> tuple[RunConfig, Method]:
    """Rebuild the method of a run directory from its config.json and checkpoint.pt alone (no
    training data: the checkpoint carries the DataFacts). `overrides` change the config (e.g.
    data keys for evaluating on another dataset); the model must stay the same. Returned in eval mode."""
    rd = RunDir(Path(run_dir))
    if not rd.file("config.json").is_file() or not rd.file("checkpoint.pt").is_file():
        raise ConfigError(f"{rd.path} is not a run directory (config.json and checkpoint.pt expected)")
    conf = rd.read_json("config.json")
    profile = conf.pop("profile")
    cfg = build_config(profile, overrides=_merge(conf, parse_overrides(overrides or [])))
    device = torch.device(device) if not isinstance(device, torch.device) else device
    ckpt = rd.load_checkpoint(map_location=device)
    if "facts" not in ckpt:
        raise ConfigError(f"{rd.file('checkpoint.pt')}: written by an older fercore without data facts; "
                          f"retrain the run to use eval/predict")
    facts = DataFacts(**json.loads(ckpt["facts"]))
    method = get_method(cfg.method)(cfg, facts)
    method.load_state_dict(ckpt["model"])
    method = prepare_method(method, cfg, device)
    return cfg, method.eval()


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


def fit(cfg: RunConfig, data: tuple[FaceSet, FaceSet] | None = None, *, if_exists: str = "error") -> Run:
    """Train `cfg.method` as configured and return the finished Run.

    `data` (train, test) skips `load_dataset(cfg.data)`; pass it to train on data prepared in a
    notebook. If the run directory already holds a run, `if_exists` decides: 'error' (default),
    'resume' (continue its last checkpoint), 'overwrite' (start again), or 'reuse' (return it
    unchanged if it finished with the same config, data and fercore source, else start again).
    'resume' and 'reuse' refuse a directory that holds a run of another config.
    Under torchrun every rank calls `fit` with the same arguments; rank 0 writes.
    """
    writer = _tensorboard_writer(cfg)
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
    dtype = amp_dtype(cfg.train.amp, device)
    channels_last = use_channels_last(cfg.model.memory_format, device)
    seed_everything(cfg.seed)
    if data is None:  # rank 0 first: it fills the dataset cache the other ranks then read
        if not d.main:
            d.barrier()
        data = load_dataset(cfg.data)
        if d.main:
            d.barrier()
    train, test = data

    rd = RunDir(Path(cfg.out_dir) / cfg.run_name)
    with rd.lock() if d.main else contextlib.nullcontext():
        return _fit_locked(cfg, rd, train, test, if_exists, d, device, dtype, channels_last, writer)


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


def _fit_locked(cfg: RunConfig, rd: RunDir, train: FaceSet, test: FaceSet, if_exists: str, d: Dist,
                device: torch.device, dtype, channels_last: bool, writer) -> Run:
    """`fit` once its run directory is locked: no second process can reuse, resume or delete it."""
    config_json = json.loads(cfg.to_json())
    fingerprints = (train.fingerprint(), test.fingerprint())
    if if_exists == "reuse" and rd.finished_with(config_json, code_hash(), fingerprints):
        return Run(rd.path)
    resume = if_exists == "resume"
    if if_exists in ("resume", "reuse") and rd.file("config.json").exists():
        diff = _config_diff(rd.read_json("config.json"), config_json)
        if diff:  # another experiment under the same name: never continue or delete it
            raise ConfigError(f"{rd.path} holds a run of another config (it differs in {', '.join(diff)}); "
                              f"give this run its own name=..., or overwrite that one")
    if d.main:
        rd.prepare(if_exists)
        rd.write_json("config.json", config_json)
    d.barrier()

    method = get_method(cfg.method)(cfg, train)
    env = environment(device)
    env["data"] = {"train_fingerprint": fingerprints[0], "test_fingerprint": fingerprints[1],
                   "train_size": len(train), "test_size": len(test), "noise": train.meta.get("noise")}
    env["method"] = method.describe()
    env["distributed"] = {"world_size": d.world, "backend": torch.distributed.get_backend() if d.active else None}
    env["options"] = {"amp": str(dtype).replace("torch.", "") if dtype else "none", "channels_last": channels_last,
                      "compile": cfg.model.compile}
    if cfg.model.weights:
        report = load_backbone_weights(method.backbone, cfg.model.weights)
        env["weights"] = report
        if d.main:
            print(f"{cfg.method}: loaded {report['loaded']} backbone tensors from {report['path']} "
                  f"({report['format']}, sha256 {report['sha256'][:12]}); ignored {len(report['ignored'])} "
                  f"checkpoint tensors: {report['ignored'][:8]}")
    if d.main:
        rd.write_json("env.json", env)
    method = prepare_method(method, cfg, device)
    model = distributed.wrap(method, d, device)
    opt = build_optimizer(method.param_groups(cfg.optim), cfg.optim, device)
    sched = build_scheduler(opt, cfg.optim, cfg.train.epochs)
    state = TrainState(epoch=0, epochs=cfg.train.epochs, labels=train.label.to(device).clone())
    loader = Loader(train, cfg.train.batch_size, device, labels=state.labels, augment=Augment(cfg.data.augment),
                    shuffle=True, drop_last=len(train) > cfg.train.batch_size, seed=cfg.seed,
                    normalize=cfg.data.normalize, residency=cfg.data.residency, **method.loader_options())
    if d.active:
        loader = distributed.ShardedLoader(loader, d)
    history: list[dict] = []
    diagnostics: dict[str, np.ndarray] = {"label_given": train.label.numpy()}
    for name in ("clean_label", "true_label"):
        if getattr(train, name) is not None:
            diagnostics[name] = getattr(train, name).numpy()
    start = 0
    ckpt = rd.load_checkpoint(map_location=device) if resume else None
    if ckpt is not None:
        method.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state.labels.copy_(ckpt["labels"])
        state.step, state.relabels = ckpt["step"], json.loads(ckpt["relabels"])
        history = json.loads(ckpt["history"])
        diagnostics = rd.load_diagnostics() or diagnostics
        _set_rng_state(ckpt["rng"])
        start = ckpt["epoch"]
        if d.main:
            rd.write_metrics(history)
    tb = writer(str(rd.file("tb"))) if writer is not None and d.main else None
    facts = json.dumps(method.facts.to_dict())

    t_run = time.perf_counter()
    for epoch in range(start, cfg.train.epochs):
        state.epoch = epoch
        loader.set_epoch(epoch)
        method.train()
        labels_before, n_relabels = state.labels.clone(), len(state.relabels)
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        watch = _NonFiniteWatch(device)
        kept = f"epoch {epoch} checkpoint kept" if epoch else "no checkpoint yet"

        def message(value: float, step: int) -> str:
            return (f"{cfg.method}: loss is {value} at epoch {epoch + 1}, step {step + 1}; stopped "
                    f"({kept} in {rd.path})")

        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=_progress_disabled(cfg.train.progress, d))
        def before_backward(loss: torch.Tensor) -> None:
            watch.update(loss, state.step)
            watch.check(d, state.step, False, message)

        for batch in bar:
            loss, logs, out = train_step(model, method, batch, state, opt, dtype=dtype, channels_last=channels_last,
                                         grad_clip=cfg.optim.grad_clip, before_backward=before_backward)
            n = len(batch["index"])
            seen += n
            correct += (out["logits"].argmax(1) == batch["label"]).sum()
            for k, v in {"loss": loss.detach(), **logs}.items():
                sums[k] = sums.get(k, 0) + v.float() * n
        watch.check(d, state.step, True, message)
        if d.active:
            d.merge_labels(state.labels, labels_before)
            new = [e for events in d.gather_objects(state.relabels[n_relabels:]) for e in events]
            state.relabels = state.relabels[:n_relabels] + new
        train_time = time.perf_counter() - t0
        seen_all = float(d.sum(seen).item())
        lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(opt.param_groups)}
        sched.step()
        method.on_epoch_end(state)
        ev = evaluate(method, test, cfg, device, dist=d)
        row = {"epoch": epoch + 1, **{f"train_{k}": float(d.sum(v).item()) / seen_all for k, v in sums.items()},
               "train_acc": float(d.sum(correct).item()) / seen_all, "images_per_s": seen_all / train_time,
               "epoch_time_s": train_time, **lrs, **{f"test_{k}": v for k, v in ev.items() if k not in ("pred", "prob")}}
        if train.clean_label is not None:
            row["labels_clean_frac"] = float((state.labels.cpu() == train.clean_label).float().mean())
        history.append(row)
        # copies: on CPU .cpu().numpy() would alias tensors that later epochs overwrite in place
        diagnostics[f"label@{epoch + 1}"] = state.labels.cpu().numpy().copy()
        diagnostics[f"test_pred@{epoch + 1}"] = ev["pred"]
        for k, v in method.diagnostics().items():
            diagnostics[f"{k}@{epoch + 1}"] = d.merge_samples(v.detach().float()).cpu().numpy().copy()
        if d.main:
            rd.save_diagnostics(diagnostics)
            rd.save_checkpoint({"epoch": epoch + 1, "model": method.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "labels": state.labels.cpu(), "step": state.step,
                                "relabels": json.dumps(state.relabels), "history": json.dumps(history),
                                "rng": _rng_state(), "facts": facts})
            rd.write_metrics(history)
            if tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "epoch":
                        tb.add_scalar(k, v, epoch + 1)
                tb.flush()
            if cfg.train.progress:
                tqdm.write(f"{cfg.method} epoch {epoch + 1}: loss {row['train_loss']:.3f} "
                           f"test acc {row['test_acc']:.4f}")

    if not history:
        raise ConfigError("train.epochs must be at least 1")
    if tb is not None:
        tb.close()
    best = max(history, key=lambda r: r["test_acc"])
    summary = {"method": cfg.method, "seed": cfg.seed, "noise": cfg.data.noise, "headline": "last",
               "last": history[-1], "best": best, "epochs": len(history), "n_relabels": len(state.relabels),
               "wall_time_s": time.perf_counter() - t_run, "data": env["data"]}
    if d.main:
        rd.write_json("summary.json", summary)
        rd.write_json("relabels.json", state.relabels)
    d.barrier()
    return Run(rd.path)
