"""Command line: `python -m fercore train|eval|predict|data ...` with `--config` YAML and `key=value` overrides."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .errors import ConfigError, DataError, NonFiniteLossError


def _train(args) -> None:
    from .config import build_config
    from .distributed import shutdown
    from .engine import fit

    cfg = build_config(args.profile, args.config, args.overrides)
    try:
        run = fit(cfg, if_exists=args.if_exists)
    finally:
        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary line
        s = run.summary
        print(f"{run.path}: last-epoch test acc {s['last']['test_acc']:.4f}, "
              f"best {s['best']['test_acc']:.4f} (epoch {s['best']['epoch']})")


def _eval(args) -> None:
    """Evaluate a run's last checkpoint on its test split (or the split `key=value` overrides select)."""
    from .data.datasets import load_dataset
    from .engine import evaluate, resolve_device, restore

    device = resolve_device(args.device)
    cfg, method = restore(args.run, device, args.overrides)
    _, test = load_dataset(cfg.data)
    ev = evaluate(method, test, cfg, device)
    report = {k: v for k, v in ev.items() if k not in ("pred", "prob")}
    report.update(run=str(args.run), dataset=cfg.data.dataset, n_test=len(test))
    line = f"{args.run}: test acc {report['acc']:.4f}, mean class acc {report['mean_class_acc']:.4f}"
    print(line + (f", true-emotion acc {report['acc_true']:.4f}" if "acc_true" in report else "")
          + f" ({len(test)} images of {cfg.data.dataset})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_files(paths: list[str]) -> list[Path]:
    """The image files named, and those inside the folders named (recursively, sorted)."""
    from .errors import DataError

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such image file or folder")
    if not files:
        raise DataError(f"no images found in {paths} (expected {', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: Path, size: int):
    """(3, size, size) uint8 RGB, resized like the readers do (antialiased)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    from .errors import DataError

    try:
        with Image.open(path) as im:
            img = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({str(e).splitlines()[0]})") from None
    return TF.resize(img, [size, size], antialias=True) if img.shape[-2:] != (size, size) else img


def predict_table(run: str, files: list[Path], device: str = "cpu", batch_size: int = 64):
    """A pandas table, one row per image: predicted expression, its probability distribution and
    whatever else the method estimates (importance, uncertainty, AUs, VA) from `Method.predict`."""
    import pandas as pd
    import torch

    from .data.faceset import FaceSet
    from .engine import infer, resolve_device, restore

    dev = resolve_device(device)
    cfg, method = restore(run, dev)
    facts = method.facts
    images = torch.stack([read_image(f, facts.image_size) for f in files])
    data = FaceSet(images=images, label=torch.zeros(len(files), dtype=torch.long), classes=tuple(facts.classes),
                   ids=[str(f) for f in files], meta={"unlabelled": True})
    est = infer(method, data, cfg, dev, batch_size=batch_size)
    prob = est.pop("prob")
    rows = {"expression": [facts.classes[i] for i in prob.argmax(1).tolist()]}
    rows.update({f"p_{c}": prob[:, k].tolist() for k, c in enumerate(facts.classes)})
    for name, v in est.items():
        if v.ndim == 1:
            rows[name] = v.tolist()
        elif v.ndim == 2:
            sub = {"au": facts.au_names, "va": ["valence", "arousal"]}.get(name)
            sub = sub if sub and len(sub) == v.shape[1] else [str(j) for j in range(v.shape[1])]
            rows.update({f"{name}_{s}": v[:, j].tolist() for j, s in enumerate(sub)})
    return pd.DataFrame({"file": [str(f) for f in files], **rows})


def _predict(args) -> None:
    table = predict_table(args.run, image_files(args.images), args.device, args.batch_size)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        out = Path(args.out)
        if out.suffix == ".json":
            out.write_text(table.to_json(orient="records", indent=2))
        else:
            table.to_csv(out, index=False)


def _data_export(args) -> None:
    from .config import build_config
    from .data.datasets import load_dataset
    from .data.synthfer.export import export_folder, export_rafdb

    cfg = build_config(args.profile, args.config, args.overrides)
    train, test = load_dataset(cfg.data)
    writer = {"rafdb": export_rafdb, "folder": export_folder}[args.layout]
    root = writer(train, test, args.out)
    print(f"wrote {len(train)} train and {len(test)} test images of {cfg.data.dataset} "
          f"in the {args.layout} layout to {root}")


def _data_check(args) -> int:
    """Print the data doctor's report; exit code 1 if it found problems."""
    from .config import build_config
    from .data.doctor import check

    cfg = build_config(args.profile, args.config, [*args.overrides, f"data.dataset={args.dataset}",
                                                   f"data.data_root={args.data_root}"])
    report = check(cfg.data, decode=args.decode)
    print(report.text())
    return 0 if report.ok else 1


def _sweep(args) -> int:
    """Run a grid file; exit 1 if any cell failed (each is listed with its error)."""
    from .sweep import Grid, run

    grid = Grid.from_yaml(args.grid)
    if args.profile:
        grid.profile = args.profile
    result = run(grid, workers=args.workers, backend=args.backend, out_dir=args.out_dir,
                 progress=not args.no_progress)
    print(result.summary())
    print(f"sweep summary: {result.path}")
    return 1 if result.failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fercore", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--config", help="YAML file of config keys")
        sp.add_argument("--profile", help="smoke | quick | paper (default: quick)")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.epochs=5 scn.beta=0.7")

    t = sub.add_parser("train", help="train a method and write a run directory")
    common(t)
    t.add_argument("--resume", dest="if_exists", action="store_const", const="resume", default="error",
                   help="continue the run directory's last checkpoint")
    t.add_argument("--overwrite", dest="if_exists", action="store_const", const="overwrite",
                   help="replace an existing run directory")
    t.add_argument("--reuse", dest="if_exists", action="store_const", const="reuse",
                   help="keep an existing run if it finished with the same config, data and code")
    t.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a run directory's last checkpoint")
    ev.add_argument("run", help="run directory (holds config.json and checkpoint.pt)")
    ev.add_argument("overrides", nargs="*", metavar="key=value",
                    help="change the evaluation data, e.g. data.dataset=folder data.data_root=DIR")
    ev.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    ev.add_argument("--out", help="also write the metrics (with the confusion matrix) to this JSON file")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("predict", help="expression distribution (and uncertainty, AUs, VA) of image files")
    pr.add_argument("run", help="run directory (holds config.json and checkpoint.pt)")
    pr.add_argument("images", nargs="+", help="image files and/or folders of images")
    pr.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--out", help="also write the table to this .csv or .json file")
    pr.set_defaults(func=_predict)

    sw = sub.add_parser("sweep", help="run a grid of methods x noise x seeds x variants (a YAML grid file)")
    sw.add_argument("grid", help="grid YAML file (see fercore/sweep.py)")
    sw.add_argument("--profile", help="override the grid's profile")
    sw.add_argument("--workers", type=int, default=1, help="local processes (one thread each on CPU)")
    sw.add_argument("--backend", default="local", help="local | submitit (Slurm, or submitit's local executor)")
    sw.add_argument("--out-dir", help="where the runs go (default: the grid's base out_dir)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar (one line per cell)")
    sw.set_defaults(func=_sweep)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    e = dsub.add_parser("export", help="write the configured dataset (e.g. SynthFER) in a real layout")
    common(e)
    e.add_argument("--layout", choices=["rafdb", "folder"], required=True)
    e.add_argument("--out", required=True, help="folder to write")
    e.set_defaults(func=_data_export)
    c = dsub.add_parser("check", help="validate a dataset copy: layout, counts, mapping, label-file hashes")
    common(c)
    c.add_argument("--dataset", required=True, help="reader name, e.g. rafdb, affectnet8, ferplus, ckplus")
    c.add_argument("--data-root", required=True, help="folder of the dataset in its official layout")
    c.add_argument("--decode", type=int, default=32, help="images opened per split (-1: all; default 32)")
    c.set_defaults(func=_data_check)
    return p


OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """argparse, plus `key=value` overrides anywhere on the line (`train a=1 --profile smoke b=2`)."""
    p = parser()
    args, rest = p.parse_known_args(argv)
    extra = [t for t in rest if OVERRIDE.match(t)]
    unknown = [t for t in rest if not OVERRIDE.match(t)]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        if not hasattr(args, "overrides"):
            p.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args) or 0  # a command may return a non-zero exit code (data check)
    except (ConfigError, DataError, NonFiniteLossError, FileExistsError) as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"fercore: error: {line}", file=sys.stderr)
        return 2
