"""Loader throughput against a conventional torch DataLoader on the same images, as a ratio in one run.

    python benchmarks/loader_speed.py [--n 2000] [--size 112] [--epochs 2] [--workers 2] [--threads 0] [--device auto]

Both read the same RAF-DB-layout JPEGs (SynthFER faces at 100 px, RAF-DB's aligned size, written to
a temporary folder) and apply the same kind of training augmentation: flip, random resized crop,
rotation, colour jitter, grayscale, normalisation, RandomErasing. fercore's Loader decodes once
(timed separately) and augments whole batches on the device; the DataLoader decodes every image
from disk with Pillow and applies torchvision v2 transforms per sample in `--workers` processes.
Prints batches/s of each (warm-up epoch excluded) and their ratio. On a CPU shared with other
jobs, compare with `--threads 1` too: OpenMP threads stall when another process takes a core
(docs/notebooks.md#10-pitfalls-and-how-fercore-avoids-them), which hits the Loader's batched ops and not the
DataLoader's worker processes.
"""
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from fercore.config import AugmentConfig, build_config  # noqa: E402
from fercore.data.augment import Augment  # noqa: E402
from fercore.data.datasets import load_dataset  # noqa: E402
from fercore.data.loader import NORMALIZE, Loader  # noqa: E402
from fercore.data.synthfer import SynthFERConfig, load_synthfer  # noqa: E402
from fercore.data.synthfer.export import export_rafdb  # noqa: E402

AUG = dict(flip=0.5, erasing=0.5, crop_scale=(0.8, 1.0), rotate=10.0, brightness=0.2, contrast=0.2,
           saturation=0.2, grayscale=0.2)


class RafFiles(Dataset):
    """The conventional path: one JPEG decoded from disk and transformed on the CPU per sample."""

    def __init__(self, root: Path, size: int) -> None:
        lines = (root / "EmoLabel" / "list_patition_label.txt").read_text().split("\n")
        self.items = [(root / "Image" / "aligned" / f"{n[:-4]}_aligned.jpg", int(c) - 1)
                      for n, c in (ln.split(" ") for ln in lines) if n.startswith("train_")]
        mean, std = NORMALIZE["imagenet"]
        self.tf = v2.Compose([
            v2.ToImage(), v2.Resize(size, antialias=True), v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(size, scale=AUG["crop_scale"], antialias=True), v2.RandomRotation(AUG["rotate"]),
            v2.ColorJitter(AUG["brightness"], AUG["contrast"], AUG["saturation"]), v2.RandomGrayscale(AUG["grayscale"]),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.RandomErasing(AUG["erasing"])])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        with Image.open(path) as im:
            return self.tf(im.convert("RGB")), label, i


def rate(batches, epochs: int, device: torch.device) -> float:
    """Batches per second over `epochs` epochs after one warm-up epoch; each batch is summed on the device."""
    def run() -> int:
        n = 0
        for b in batches():
            x = b["image"] if isinstance(b, dict) else b[0].to(device, non_blocking=True)
            x.sum().item()
            n += 1
        return n
    run()
    t0, n = time.perf_counter(), sum(run() for _ in range(epochs))
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="training images")
    p.add_argument("--size", type=int, default=112, help="model input size")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the main process (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, "
          f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    with tempfile.TemporaryDirectory() as tmp:
        train, test = load_synthfer(SynthFERConfig(), args.n, 8, 100, cache=False)
        export_rafdb(train, test, tmp)
        os.environ["FERCORE_CACHE"] = str(Path(tmp) / "cache")
        cfg = build_config("quick", overrides=["data.dataset=rafdb", f"data.data_root={tmp}",
                                               f"data.image_size={args.size}",
                                               "data.n_train=0", "data.n_test=0", "data.cache=false"])
        t0 = time.perf_counter()
        data, _ = load_dataset(cfg.data)
        decode = time.perf_counter() - t0
        loader = Loader(data, args.batch, device, augment=Augment(AugmentConfig(**AUG)), shuffle=True, drop_last=True)
        ours = rate(lambda: loader, args.epochs, device)
        dl = DataLoader(RafFiles(Path(tmp), args.size), batch_size=args.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
        theirs = rate(lambda: dl, args.epochs, device)
    print(f"{len(data)} JPEGs (100 px) -> {args.size} px, batch {args.batch}, {args.epochs} timed epochs")
    print(f"fercore Loader:   {ours:8.1f} batches/s  ({ours * args.batch:8.0f} img/s; one-time decode {decode:.1f} s)")
    print(f"torch DataLoader: {theirs:8.1f} batches/s  ({theirs * args.batch:8.0f} img/s; {args.workers} workers, "
          "Pillow decode + torchvision v2 per sample)")
    print(f"ratio Loader / DataLoader: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
