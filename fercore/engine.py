"""The training engine: `fit` runs epochs of a Method over a Loader and writes a run directory.

Seeds everything, checkpoints every epoch atomically, resumes bit-for-bit on CPU, stops with a
clear message on a non-finite loss (keeping the last good checkpoint), and evaluates the test
split after every epoch (last- and best-epoch metrics both reported, last is the headline).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import OptimConfig, RunConfig
from .data.datasets import load_dataset
from .data.faceset import FaceSet
from .data.loader import Augment, Loader
from .errors import ConfigError, NonFiniteLossError
from .methods import get_method
from .methods.base import Method, TrainState
from .metrics import classification_report
from .results import Run
from .rundir import RunDir, code_hash, environment


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA device")
    return dev


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
    if "cuda" in state:
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


@torch.no_grad()
def evaluate(method: Method, data: FaceSet, cfg: RunConfig, device: torch.device) -> dict:
    """Metrics of `method` on `data` (against its labels, and its true labels where known),
    plus the per-sample predictions ('pred', 'prob')."""
    was_training = method.training
    method.eval()
    loader = Loader(data, cfg.train.eval_batch_size, device, normalize=cfg.data.normalize)
    probs = torch.cat([method.predict(b)["logits"].float().softmax(1).cpu() for b in loader])
    method.train(was_training)
    pred = probs.argmax(1).numpy()
    out = classification_report(data.label.numpy(), pred, data.num_classes)
    if data.true_label is not None:
        out["acc_true"] = float((data.true_label.numpy() == pred).mean())
    out.update(pred=pred, prob=probs.numpy())
    return out


def fit(cfg: RunConfig, data: tuple[FaceSet, FaceSet] | None = None, *, if_exists: str = "error") -> Run:
    """Train `cfg.method` as configured and return the finished Run.

    `data` (train, test) skips `load_dataset(cfg.data)`; pass it to train on data prepared in a
    notebook. If the run directory already holds a run, `if_exists` decides: 'error' (default),
    'resume' (continue its last checkpoint), 'overwrite' (start again), or 'reuse' (return it
    unchanged if it finished with the same config, data and fercore source, else start again).
    """
    device = resolve_device(cfg.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
    seed_everything(cfg.seed)
    train, test = data if data is not None else load_dataset(cfg.data)

    rd = RunDir(Path(cfg.out_dir) / cfg.run_name)
    config_json = json.loads(cfg.to_json())
    fingerprints = (train.fingerprint(), test.fingerprint())
    if if_exists == "reuse" and rd.finished_with(config_json, code_hash(), fingerprints):
        return Run(rd.path)
    resume = if_exists == "resume"
    rd.prepare(if_exists)
    if resume and rd.file("config.json").exists() and rd.read_json("config.json") != config_json:
        old = rd.read_json("config.json")
        diff = sorted(k for k in set(old) | set(config_json) if old.get(k) != config_json.get(k))
        raise ConfigError(f"cannot resume {rd.path}: its config differs in {diff}")
    rd.write_json("config.json", config_json)
    env = environment(device)
    env["data"] = {"train_fingerprint": fingerprints[0], "test_fingerprint": fingerprints[1],
                   "train_size": len(train), "test_size": len(test), "noise": train.meta.get("noise")}
    rd.write_json("env.json", env)

    method = get_method(cfg.method)(cfg, train).to(device)
    opt = build_optimizer(method.param_groups(cfg.optim), cfg.optim, device)
    sched = build_scheduler(opt, cfg.optim, cfg.train.epochs)
    state = TrainState(epoch=0, epochs=cfg.train.epochs, labels=train.label.to(device).clone())
    loader = Loader(train, cfg.train.batch_size, device, labels=state.labels, augment=Augment(cfg.data.augment),
                    shuffle=True, drop_last=len(train) > cfg.train.batch_size, seed=cfg.seed,
                    normalize=cfg.data.normalize)
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
        rd.write_metrics(history)

    t_run = time.perf_counter()
    for epoch in range(start, cfg.train.epochs):
        state.epoch = epoch
        loader.set_epoch(epoch)
        method.train()
        sums: dict[str, torch.Tensor] = {}
        seen = correct = 0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=not cfg.train.progress)
        for batch in bar:
            out = method(batch)
            loss, logs = method.loss(batch, out, state)
            if not torch.isfinite(loss):
                kept = f"epoch {start or epoch} checkpoint kept" if (start or epoch) else "no checkpoint yet"
                raise NonFiniteLossError(f"{cfg.method}: loss is {loss.item()} at epoch {epoch + 1}, step "
                                         f"{state.step + 1}; stopped ({kept} in {rd.path})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.optim.grad_clip)
            opt.step()
            state.step += 1
            method.after_step(batch, out, state)
            n = len(batch["index"])
            seen += n
            correct += (out["logits"].argmax(1) == batch["label"]).sum()
            for k, v in {"loss": loss.detach(), **logs}.items():
                sums[k] = sums.get(k, 0) + v * n
        train_time = time.perf_counter() - t0
        lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(opt.param_groups)}
        sched.step()
        method.on_epoch_end(state)
        ev = evaluate(method, test, cfg, device)
        row = {"epoch": epoch + 1, **{f"train_{k}": float(v) / seen for k, v in sums.items()},
               "train_acc": float(correct) / seen, "images_per_s": seen / train_time, "epoch_time_s": train_time,
               **lrs, **{f"test_{k}": v for k, v in ev.items() if k not in ("pred", "prob")}}
        if train.clean_label is not None:
            row["labels_clean_frac"] = float((state.labels.cpu() == train.clean_label).float().mean())
        history.append(row)
        diagnostics[f"label@{epoch + 1}"] = state.labels.cpu().numpy()
        diagnostics[f"test_pred@{epoch + 1}"] = ev["pred"]
        for k, v in method.diagnostics().items():
            diagnostics[f"{k}@{epoch + 1}"] = v.detach().float().cpu().numpy()
        rd.save_diagnostics(diagnostics)
        rd.save_checkpoint({"epoch": epoch + 1, "model": method.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "labels": state.labels.cpu(), "step": state.step,
                            "relabels": json.dumps(state.relabels), "history": json.dumps(history),
                            "rng": _rng_state()})
        rd.write_metrics(history)
        if cfg.train.progress:
            tqdm.write(f"{cfg.method} epoch {epoch + 1}: loss {row['train_loss']:.3f} test acc {row['test_acc']:.4f}")

    if not history:
        raise ConfigError("train.epochs must be at least 1")
    best = max(history, key=lambda r: r["test_acc"])
    summary = {"method": cfg.method, "seed": cfg.seed, "noise": cfg.data.noise, "headline": "last",
               "last": history[-1], "best": best, "epochs": len(history), "n_relabels": len(state.relabels),
               "wall_time_s": time.perf_counter() - t_run, "data": env["data"]}
    rd.write_json("summary.json", summary)
    rd.write_json("relabels.json", state.relabels)
    return Run(rd.path)

