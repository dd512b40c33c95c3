"""SynthFER generation speed on one CPU core (target: 10,000 faces at 64 px in at most 15 s).

    python benchmarks/synthfer_speed.py [--n 10000] [--size 64]

Prints the time to generate (sample, annotate, render) without the disk cache.
"""
import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from fercore.data.synthfer import SynthFERConfig, generate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--size", type=int, nargs="+", default=[64])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    for size in args.size:
        t0 = time.perf_counter()
        train, _ = generate(SynthFERConfig(), n_train=args.n, n_test=1, image_size=size)
        dt = time.perf_counter() - t0
        print(f"{len(train)} faces at {size} px: {dt:.1f} s ({len(train) / dt:.0f} faces/s)")


if __name__ == "__main__":
    main()
