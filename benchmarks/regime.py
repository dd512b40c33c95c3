"""One run per method and regime, timed as the suite runs them: fp32 where bf16 is not native, one
thread per run, two runs side by side (BENCHMARKS.md, "A regime fair to EAC and POI", "A regime for real
faces").

For each regime (a name and its config overrides on `--profile`, quick by default, plus `--set` overrides
for every run, e.g. a real dataset) it trains `--methods` at `--noise`, seed `--seed`, in pairs of
processes, and prints per run: the maps EAC's and POI's
mechanisms see (`fercore.bench.spatial_maps`), the last-epoch test accuracy and the spread of the last
3, ce's fit of the flipped labels at the last epoch, and where the wall time went: start-up (process
start, imports, data, model, weights), training, evaluation, and the rest of the epoch loop
(diagnostics, checkpoints). A regime's `pretrain:` backbone is trained first, alone, and timed.

    python benchmarks/regime.py --out /tmp/regime [--regimes before after] [--methods ce eac poi]
    python benchmarks/regime.py --out /tmp/real --profile real --regimes real --noise none --methods ce poi \
        --set data.dataset=ferplus data.data_root=DIR data.label_source=one_vote
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from fercore.bench import spatial_maps
from fercore.models.backbone import native_bf16

REGIMES = {
    "before": ["model.backbone=resnet10t", "poi.stride=8"],
    "after": ["model.backbone=fercore_resnet8t", "poi.stride=4"],
    "after_w2": ["model.backbone=fercore_resnet8t_w2", "poi.stride=4"],
    "poi_stride4": ["model.backbone=resnet10t", "poi.stride=4"],
    "os8": ["model.backbone=fercore_resnet10t_os8", "poi.stride=4"],
    "os8_w075": ["model.backbone=fercore_resnet10t_os8_w075", "poi.stride=4"],
    "os8_w050": ["model.backbone=fercore_resnet10t_os8_w050", "poi.stride=4"],
    # fewer epochs, the learning rate decayed to the same last value (2e-3 x 0.75^9 = 1.5e-4)
    "os8_e8": ["model.backbone=fercore_resnet10t_os8", "poi.stride=4", "train.epochs=8", "optim.gamma=0.69"],
    "os8_e7": ["model.backbone=fercore_resnet10t_os8", "poi.stride=4", "train.epochs=7", "optim.gamma=0.65"],
    # on the real profile (--profile real): the profile as it is, with the test split evaluated every epoch
    # (the profile evaluates only where it is read), and the candidates measured before it
    "real": ["train.eval_every=1"],
    "real_6k_e8": ["train.eval_every=1", "data.n_train=6000", "train.epochs=8"],
    "real_3k_e16": ["train.eval_every=1", "data.n_train=3000", "train.epochs=16"],
    "real_no_ema": ["train.eval_every=1", "train.ema=0"],
    "real_6k_e8_no_ema": ["train.eval_every=1", "data.n_train=6000", "train.epochs=8", "train.ema=0"],
}


def capability() -> str:
    """The CPU named by what matters for timings: native bf16 (the profiles use it) or not (fp32)."""
    kind = "native bf16" if native_bf16(torch.device("cpu")) else "no native bf16 (fp32; AVX2 on x86)"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {kind}; torch {torch.__version__}"


def pretrain(regime: list[str], args) -> float:
    """Seconds to train (or find cached) the regime's pretrain:au32 backbone, alone."""
    from fercore.config import build_config

    backbone = build_config(args.profile, overrides=[o for o in regime if o.startswith("model.")]).model.backbone
    t = time.perf_counter()
    code = f"from fercore.pretrain import resolve; resolve('pretrain:au32', {backbone!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return time.perf_counter() - t


def train(name: str, method: str, regime: list[str], args) -> dict:
    overrides = [o for o in regime if not o.startswith(("eac.", "poi.")) or o.startswith(f"{method}.")]
    run = f"{name}-{method}"
    cmd = [sys.executable, "-m", "fercore", "train", "--profile", args.profile, f"method={method}",
           f"data.noise={args.noise}", f"seed={args.seed}", f"data.noise_seed={args.seed}", "train.num_threads=1",
           "train.progress=false", f"out_dir={args.out}", f"name={run}", "--overwrite", *args.set, *overrides]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    rd = args.out / run
    summary = json.loads((rd / "summary.json").read_text())
    rows = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines() if line.strip()]
    acc = [r["test_acc"] for r in rows if "test_acc" in r]
    train_s = sum(r["epoch_time_s"] for r in rows)
    eval_s = sum(r.get("eval_time_s", 0.0) for r in rows)
    env = json.loads((rd / "env.json").read_text())["data"]
    return {"regime": name, "method": method, "last_acc": acc[-1], "last3_spread": max(acc[-3:]) - min(acc[-3:]),
            "faces": f"{env['train_size']} of {env.get('train_rows', env['train_size'])} at {env['image_size']} px",
            "fit_flipped": rows[-1].get("train_fit_flipped"), "wall_s": wall,
            "startup_s": wall - summary["wall_time_s"], "train_s": train_s, "eval_s": eval_s,
            "loop_rest_s": summary["wall_time_s"] - train_s - eval_s, "test_acc": acc,
            "fit_flipped_curve": [r.get("train_fit_flipped") for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs (reused runs are retrained)")
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--methods", nargs="+", default=["ce", "eac", "poi"])
    ap.add_argument("--noise", default="sym:0.3")
    ap.add_argument("--profile", default="quick", help="the profile the regimes' overrides apply to")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run (a dataset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    print(f"CPU: {capability()}")
    report = {"cpu": capability(), "maps": {}, "pretrain_s": {}, "runs": []}
    for name in args.regimes:
        report["maps"][name] = maps = spatial_maps(args.profile, REGIMES[name])
        print(f"{name}: {maps['backbone']} at {maps['image_size']} px: EAC's CAM {maps['eac_cam']}, POI's map "
              f"{maps['poi_map']} (stride {maps['poi_stride']}), region cells {maps['poi_regions']}")
        report["pretrain_s"][name] = pretrain(REGIMES[name], args)
        print(f"{name}: pretrain:au32 for {maps['backbone']}: {report['pretrain_s'][name]:.0f} s (2 threads, alone; "
              "0 s when cached)")
    jobs = [(name, m) for name in args.regimes for m in args.methods]
    with ThreadPoolExecutor(2) as pool:  # two runs side by side, one thread each, as the suite runs them
        for r in pool.map(lambda job: train(*job, REGIMES[job[0]], args), jobs):
            report["runs"].append(r)
            fit = "-" if r["fit_flipped"] is None else f"{r['fit_flipped']:.3f}"  # None: no flipped label
            print(f"{r['regime']:>7} {r['method']:>4}: {r['faces']}; last acc {r['last_acc']:.3f} (last-3 spread "
                  f"{r['last3_spread']:.3f}), fit of flipped {fit}; test acc per epoch "
                  f"{' '.join(f'{a:.3f}' for a in r['test_acc'])}; wall {r['wall_s']:.0f} s = "
                  f"start-up {r['startup_s']:.0f} + training {r['train_s']:.0f} + evaluation {r['eval_s']:.1f} + "
                  f"diagnostics/checkpoints {r['loop_rest_s']:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
