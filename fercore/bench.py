"""`python -m fercore bench`: fercore's training pipeline against one written the way the peers write
theirs, in one process, on the same device, model, batch and images (docs/architecture.md#compute).

(a) the peers' way (SCN/RUL/EAC's `main.py`): a Dataset over the RAF-DB-layout JPEG files, PIL
decode, per-sample torchvision transforms (resize, horizontal flip, to tensor, normalise,
RandomErasing), a DataLoader with `--workers` worker processes, fp32, NCHW;
(b) fercore's: the split decoded once into a uint8 tensor on the device, augmented per batch there
(`Loader` + `Augment`), the engine's `train_step`.
Both train `ce` on SynthFER faces exported to the RAF-DB layout. It prints images/s of each and
their ratio, the step time of every method relative to ce (fercore's pipeline), peak memory, and
on CUDA the bf16 / channels_last / compile variants with the achieved TFLOP/s against a matmul peak
measured in the same run. `--json FILE` writes every figure. Nothing is downloaded.
"""
from __future__ import annotations

import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import build_config
from .data.augment import Augment
from .data.datasets import load_dataset
from .data.loader import NORMALIZE, Loader
from .engine import amp_dtype, build_optimizer, prepare_method, resolve_device, train_step, use_channels_last
from .methods import METHODS, get_method
from .methods.base import TrainState

VARIANTS = {  # name -> config overrides (fercore's pipeline)
    "fp32": ["model.memory_format=contiguous", "train.amp=none", "model.compile=false"],
    "channels_last": ["model.memory_format=channels_last", "train.amp=none", "model.compile=false"],
    "bf16": ["model.memory_format=contiguous", "train.amp=bf16", "model.compile=false"],
    "bf16+channels_last": ["model.memory_format=channels_last", "train.amp=bf16", "model.compile=false"],
    "bf16+channels_last+compile": ["model.memory_format=channels_last", "train.amp=bf16", "model.compile=true"],
}


def spatial_maps(profile: str, overrides: list[str] = ()) -> dict:
    """What EAC's and POI's mechanisms see under a profile: EAC's class-activation map (the backbone's
    last map, h x w), POI's PIN map (the stem cut at `poi.stride`, h x w) and the map cells its
    landmark regions are centred on, for the mean landmarks of 16 SynthFER faces at the profile's size."""
    from .methods.poi.regions import region_boxes

    out = {}
    for name in ("eac", "poi"):
        mine = [o for o in overrides if not o.startswith(("eac.", "poi.")) or o.startswith(f"{name}.")]
        cfg = build_config(profile, overrides=[f"method={name}", "data.n_train=16", "data.n_test=16",
                                               "model.weights=", *mine])
        train, _ = load_dataset(cfg.data)
        method = get_method(name)(cfg, train).eval()
        x = torch.zeros(1, 3, cfg.data.image_size, cfg.data.image_size)
        with torch.no_grad():
            if name == "eac":
                out["eac_cam"] = tuple(method.backbone.forward_features(x).shape[-2:])
                continue
            fmap = method.pin.stem(x)
        boxes = region_boxes(train.landmarks.mean(0, keepdim=True), x.shape[-2:], fmap.shape[-2:],
                             method.regions, method.params.patch)[0]
        centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).floor().long().tolist()
        out.update(poi_map=tuple(fmap.shape[-2:]), poi_regions=dict(zip(method.regions, map(tuple, centres))),
                   backbone=cfg.model.backbone, image_size=cfg.data.image_size, poi_stride=method.params.stride)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the process's peak so far


class PeerDataset(torch.utils.data.Dataset):
    """RAF-DB layout, one JPEG decoded with PIL and transformed per sample (the peers' `RafDataset`)."""

    def __init__(self, root: Path, size: int) -> None:
        from torchvision import transforms

        lines = (root / "EmoLabel" / "list_patition_label.txt").read_text().split("\n")
        self.items = [(root / "Image" / "aligned" / f"{n[:-4]}_aligned.jpg", int(c) - 1)
                      for n, c in (ln.split(" ") for ln in lines if ln) if n.startswith("train_")]
        mean, std = NORMALIZE["imagenet"]
        self.tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(mean, std),
                                      transforms.RandomErasing(scale=(0.02, 0.25))])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            return self.tf(im.convert("RGB")), label


def _cycle(make):
    while True:
        yield from make()


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step over `steps` calls of `step()` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def peer_pipeline(root: Path, cfg, train, device: torch.device, workers: int, steps: int, warmup: int) -> dict:
    """(a): DataLoader over JPEG files, per-sample transforms, fp32 NCHW, ce."""
    ds = PeerDataset(root, cfg.data.image_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    torch.manual_seed(0)
    method = get_method("ce")(cfg, train).to(device).train()
    opt = build_optimizer(method.param_groups(cfg.optim), cfg.optim, device)
    batches = _cycle(lambda: iter(loader))

    def step():
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(method({"image": x, "label": y})["logits"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _peak_reset(device)
    t = time_steps(step, steps, warmup, device)
    return {"step_s": t, "images_per_s": cfg.train.batch_size / t, "peak_mb": _peak_mb(device)}


class FercoreStep:
    """(b): the engine's train_step on a device-resident, on-device-augmented Loader."""

    def __init__(self, method_name: str, cfg, train, device: torch.device) -> None:
        torch.manual_seed(0)
        self.method = prepare_method(get_method(method_name)(cfg, train), cfg, device).train()
        self.opt = build_optimizer(self.method.param_groups(cfg.optim), cfg.optim, device)
        self.state = TrainState(epoch=0, epochs=1, labels=train.label.to(device).clone())
        self.loader = Loader(train, cfg.train.batch_size, device, labels=self.state.labels,
                             augment=Augment(cfg.data.augment), shuffle=True, drop_last=True,
                             normalize=cfg.data.normalize, **self.method.loader_options())
        self.dtype, self.cl = amp_dtype(cfg.train.amp, device), use_channels_last(cfg.model.memory_format, device)
        self.batches = _cycle(lambda: iter(self.loader))

    def __call__(self) -> None:
        train_step(self.method, self.method, next(self.batches), self.state, self.opt, dtype=self.dtype,
                   channels_last=self.cl)

    def flops(self) -> float:
        """FLOPs of one training step (forward + backward), counted by torch's FlopCounterMode."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self()
        return float(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """TFLOP/s of an n x n matmul in `dtype` on `device`, measured now (the roof the model is held to)."""
    if device.type != "cuda":
        n, reps = 1024, 10
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_steps(lambda: a @ b, reps, 3, device)
    return 2 * n**3 / t / 1e12


def run(size: int = 64, backbone: str = "resnet18", batch: int = 64, n_images: int = 1024, steps: int = 10,
        warmup: int = 3, workers: int = 2, device: str = "auto", methods: list[str] | None = None,
        variants: list[str] | None = None, profile: str = "quick") -> dict:
    """Every figure of the benchmark as a dict (see the module docstring)."""
    dev = resolve_device(device)
    methods = methods or list(METHODS)
    variants = variants or (list(VARIANTS) if dev.type == "cuda" else ["fp32"])
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    out = {"device": str(dev), "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "size": size, "backbone": backbone, "batch": batch, "steps": steps, "warmup": warmup, "workers": workers,
           "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="fercore-bench-") as tmp:
        from .data.synthfer.export import export_rafdb

        synth = build_config(profile, overrides=[f"data.n_train={n_images}", "data.n_test=64", "data.image_size=100"])
        export_rafdb(*load_dataset(synth.data), tmp)  # RAF-DB's aligned crops are 100 px
        common = [f"data.image_size={size}", f"model.backbone={backbone}", f"train.batch_size={batch}",
                  "model.weights=", f"device={dev}"]
        base = ["data.dataset=rafdb", f"data.data_root={tmp}", "data.cache=false", *common]

        def cfg_for(method: str, variant: str, data=base):
            return build_config(profile, overrides=[*data, f"method={method}", *VARIANTS[variant]])

        cfg = cfg_for("ce", "fp32")
        t0 = time.perf_counter()
        train, _ = load_dataset(cfg.data)
        out["fercore_decode_s"] = time.perf_counter() - t0
        out["peer"] = peer_pipeline(Path(tmp), cfg, train, dev, workers, steps, warmup)
        _peak_reset(dev)
        ce = FercoreStep("ce", cfg, train, dev)
        t = time_steps(ce, steps, warmup, dev)
        out["fercore"] = {"step_s": t, "images_per_s": batch / t, "peak_mb": _peak_mb(dev)}
        out["ratio"] = out["fercore"]["images_per_s"] / out["peer"]["images_per_s"]
        # every method on SynthFER faces of the same size: they carry the AU, VA and landmark labels
        # MTAC and POI train on (the exported RAF-DB layout has none)
        synth_base = [f"data.n_train={n_images}", "data.n_test=64", *common]
        synth_train, _ = load_dataset(cfg_for("ce", "fp32", synth_base).data)
        out["methods"] = {}
        for m in methods:
            _peak_reset(dev)
            step = FercoreStep(m, cfg_for(m, "fp32", synth_base), synth_train, dev)
            t = time_steps(step, steps, warmup, dev)
            out["methods"][m] = {"step_s": t, "peak_mb": _peak_mb(dev)}
        ref = out["methods"].get("ce", {}).get("step_s") or out["fercore"]["step_s"]
        for v in out["methods"].values():
            v["vs_ce"] = v["step_s"] / ref
        out["variants"] = {}
        peak = {"fp32": matmul_peak(dev, torch.float32), "bf16": matmul_peak(dev, torch.bfloat16)} \
            if dev.type == "cuda" else {"fp32": matmul_peak(dev, torch.float32)}
        out["matmul_peak_tflops"] = peak
        for v in variants:
            t0 = time.perf_counter()
            step = FercoreStep("ce", cfg_for("ce", v), train, dev)
            step()  # compilation, if any, happens here
            compile_s = time.perf_counter() - t0
            _peak_reset(dev)
            t = time_steps(step, steps, warmup, dev)
            flops = step.flops()
            roof = peak["bf16" if "bf16" in v and "bf16" in peak else "fp32"]
            out["variants"][v] = {"step_s": t, "images_per_s": batch / t, "first_step_s": compile_s,
                                  "tflops": flops / t / 1e12, "of_matmul_peak": flops / t / 1e12 / roof,
                                  "peak_mb": _peak_mb(dev)}
    return out


def table(r: dict) -> str:
    """The benchmark as Markdown (what the CLI prints)."""
    lines = [f"fercore bench: {r['device_name']} ({r['device']}), torch {r['torch']}, {r['threads']} CPU thread(s); "
             f"{r['backbone']} at {r['size']} px, batch {r['batch']}, {r['steps']} timed steps after {r['warmup']}",
             "", "| pipeline | images/s | step (ms) | peak memory (MB) |", "|---|---|---|---|",
             f"| peers' (DataLoader, {r['workers']} workers, PIL + per-sample transforms, fp32 NCHW) | "
             f"{r['peer']['images_per_s']:.0f} | {r['peer']['step_s'] * 1e3:.1f} | {r['peer']['peak_mb']:.0f} |",
             f"| fercore (device-resident Loader, batched augmentation) | {r['fercore']['images_per_s']:.0f} | "
             f"{r['fercore']['step_s'] * 1e3:.1f} | {r['fercore']['peak_mb']:.0f} |",
             "", f"ratio fercore / peers: **{r['ratio']:.2f}x** (fercore decodes once: {r['fercore_decode_s']:.1f} s)",
             "", "| method | step (ms) | vs ce | peak memory (MB) |", "|---|---|---|---|"]
    lines += [f"| {m} | {v['step_s'] * 1e3:.1f} | {v['vs_ce']:.2f}x | {v['peak_mb']:.0f} |"
              for m, v in r["methods"].items()]
    peaks = ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in r["matmul_peak_tflops"].items())
    lines += ["", f"matmul peak measured now: {peaks}", "",
              "| ce variant | images/s | step (ms) | first step (s) | TFLOP/s | of matmul peak |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['images_per_s']:.0f} | {v['step_s'] * 1e3:.1f} | {v['first_step_s']:.1f} | "
              f"{v['tflops']:.3f} | {v['of_matmul_peak']:.1%} |" for k, v in r["variants"].items()]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    r = run(args.size, args.backbone, args.batch, args.n_images, args.steps, args.warmup, args.workers, args.device,
            args.methods, args.variants)
    print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
        print(f"written: {args.json}")
    medians = statistics.median([v["vs_ce"] for v in r["methods"].values()])
    print(f"median step time vs ce over the methods: {medians:.2f}x")
    return 0
