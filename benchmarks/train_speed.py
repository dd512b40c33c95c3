"""Training step time per method and option (fp32, channels_last, bf16 autocast, torch.compile).

    python benchmarks/train_speed.py [--methods ce scn rul eac mtac poi] [--size 48] [--backbone resnet10t]
                                     [--batch 64] [--steps 5] [--rounds 3] [--device auto]
                                     [--variants fp32 channels_last bf16 bf16+channels_last bf16+channels_last+compile]

One step = the engine's `train_step` (forward + loss + backward + optimiser step + the method's
after_step) on a batch from the device-resident Loader with augmentation, on SynthFER faces
(which carry the AU, VA and landmark labels that MTAC and POI need).
Every (method, variant) is warmed up first (compilation excluded), then timed for `--steps` steps
in each of `--rounds` interleaved rounds, so that load from other processes spreads over all
variants alike; the median round is reported, with the speed relative to fp32 of the same method.
"""
import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from fercore.config import build_config  # noqa: E402
from fercore.data.augment import Augment  # noqa: E402
from fercore.data.loader import Loader  # noqa: E402
from fercore.data.synthfer import SynthFERConfig, load_synthfer  # noqa: E402
from fercore.engine import amp_dtype, build_optimizer, prepare_method, resolve_device, train_step, use_channels_last  # noqa: E402
from fercore.methods import METHODS, get_method  # noqa: E402
from fercore.methods.base import TrainState  # noqa: E402

VARIANTS = {  # name -> config overrides
    "fp32": ["model.memory_format=contiguous", "train.amp=none", "model.compile=false"],
    "channels_last": ["model.memory_format=channels_last", "train.amp=none", "model.compile=false"],
    "bf16": ["model.memory_format=contiguous", "train.amp=bf16", "model.compile=false"],
    "bf16+channels_last": ["model.memory_format=channels_last", "train.amp=bf16", "model.compile=false"],
    "bf16+channels_last+compile": ["model.memory_format=channels_last", "train.amp=bf16", "model.compile=true"],
}


class Bench:
    """One (method, variant): a method, its optimiser and an endless batch stream on the device."""

    def __init__(self, method: str, variant: str, args, device: torch.device) -> None:
        cfg = build_config("quick", overrides=[f"method={method}", f"data.image_size={args.size}",
                                               f"model.backbone={args.backbone}", f"train.batch_size={args.batch}",
                                               "data.noise=sym:0.3", *VARIANTS[variant]])
        data = load_synthfer(SynthFERConfig(), args.batch * 4, args.batch, args.size)[0]  # AUs, VA, landmarks too
        self.method = prepare_method(get_method(method)(cfg, data), cfg, device).train()
        self.opt = build_optimizer(self.method.param_groups(cfg.optim), cfg.optim, device)
        self.state = TrainState(epoch=0, epochs=1, labels=data.label.to(device).clone())
        self.loader = Loader(data, args.batch, device, labels=self.state.labels, augment=Augment(cfg.data.augment),
                             shuffle=True, drop_last=True, normalize=cfg.data.normalize, **self.method.loader_options())
        self.dtype, self.channels_last = (amp_dtype(cfg.train.amp, device),
                                          use_channels_last(cfg.model.memory_format, device))
        self.device, self.batches, self.times = device, iter(()), []

    def _batch(self) -> dict:
        try:
            return next(self.batches)
        except StopIteration:
            self.loader.set_epoch(self.loader.epoch + 1)
            self.batches = iter(self.loader)
            return next(self.batches)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, steps: int) -> float:
        """Seconds per step over `steps` steps."""
        self._sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(self.method, self.method, self._batch(), self.state, self.opt, dtype=self.dtype,
                       channels_last=self.channels_last)
        self._sync()
        return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--backbone", default="resnet10t")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); {args.backbone} at "
          f"{args.size} px, batch {args.batch}; median of {args.rounds} rounds x {args.steps} steps after "
          f"{args.warmup} warm-up steps")
    benches = {}
    for m in args.methods:
        for v in args.variants:
            t0 = time.perf_counter()
            b = Bench(m, v, args, device)
            b.run(args.warmup)
            benches[m, v] = b
            print(f"  warmed up {m} {v} in {time.perf_counter() - t0:.1f} s", flush=True)
    for _ in range(args.rounds):
        for b in benches.values():
            b.times.append(b.run(args.steps))
    print("\n| method | variant | step (ms) | images/s | vs fp32 |\n|---|---|---|---|---|")
    for (m, v), b in benches.items():
        t = statistics.median(b.times)
        base = statistics.median(benches[m, "fp32"].times) if (m, "fp32") in benches else float("nan")
        print(f"| {m} | {v} | {t * 1e3:.1f} | {args.batch / t:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
