"""Command line: `python -m fercore train|eval|predict|data ...` with `--config` YAML and `key=value` overrides."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from pathlib import Path

from .errors import ConfigError, DataError, NonFiniteLossError, Notice, notice


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
    from .engine import check_compatible, evaluate, resolve_device, restore

    device = resolve_device(args.device)
    cfg, method = restore(args.run, device, args.overrides)
    _, test = load_dataset(cfg.data)
    check_compatible(method.facts, test, args.run)  # before scoring: no class the model cannot predict
    ev = evaluate(method, test, cfg, device)
    report = {k: v for k, v in ev.items() if k not in ("pred", "prob")}
    report.update(run=str(args.run), dataset=cfg.data.dataset, n_test=len(test))
    line = f"{args.run}: test acc {report['acc']:.4f}, mean class acc {report['mean_class_acc']:.4f}"
    print(line + (f", true-emotion acc {report['acc_true']:.4f}" if "acc_true" in report else "")
          + f" ({len(test)} images of {cfg.data.dataset})")
    if args.out:
        from .files import write_atomic

        write_atomic(args.out, json.dumps(report, indent=2))


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
    """(3, size, size) uint8 RGB, decoded and resized exactly as the readers do (`decode`: modes,
    16-bit, transparency, the size limits)."""
    from .data.readers.decode import decode

    return decode(path, size)[0]


def predict_table(run: str, files: list[Path], device: str = "cpu", batch_size: int = 64, strict: bool = False):
    """A pandas table, one row per image: predicted expression, its probability distribution and
    whatever else the method estimates (importance, uncertainty, AUs, VA) from `Method.predict`.
    An image that cannot be read (damaged, too small, too large) gets a row with its reason in
    `error` and one notice, and the others are predicted; `strict` (or no readable image at all)
    raises the first such problem instead."""
    import pandas as pd
    import torch

    from .data.faceset import FaceSet
    from .engine import infer, resolve_device, restore
    from .errors import DataError

    dev = resolve_device(device)
    cfg, method = restore(run, dev)
    facts = method.facts
    decoded, errors = {}, {}
    for f in files:
        try:
            decoded[f] = read_image(f, facts.image_size)
        except DataError as e:
            if strict:
                raise
            errors[f] = str(e)
    if not decoded:
        raise DataError(next(iter(errors.values())) if len(errors) == 1 else
                        f"none of the {len(errors)} images could be read: " + "; ".join(errors.values()))
    for reason in errors.values():
        notice(f"not predicted: {reason}")
    good = list(decoded)
    data = FaceSet(images=torch.stack(list(decoded.values())), label=torch.zeros(len(good), dtype=torch.long),
                   classes=tuple(facts.classes), ids=[str(f) for f in good], meta={"unlabelled": True})
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
    table = pd.DataFrame({"file": [str(f) for f in good], **rows})
    if errors:  # the unreadable images in their place among the files, expression empty, the reason said
        table["error"] = ""
        bad = pd.DataFrame({"file": [str(f) for f in errors], "error": list(errors.values())})
        order = {str(f): i for i, f in enumerate(files)}
        table = pd.concat([table, bad], ignore_index=True)
        table = table.iloc[table["file"].map(order).argsort(kind="stable")].reset_index(drop=True)
    return table


def _predict(args) -> int:
    from .files import write_atomic

    if args.batch_size < 1:
        raise ConfigError(f"predict --batch-size must be >= 1, got {args.batch_size}")
    table = predict_table(args.run, image_files(args.images), args.device, args.batch_size, strict=args.strict)
    print(table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.3f}"))
    if args.out:
        out = Path(args.out)
        write_atomic(out, table.to_json(orient="records", indent=2) if out.suffix == ".json"
                     else table.to_csv(index=False))
    if "error" in table:
        n = int((table["error"] != "").sum())
        print(f"fercore: {n} of {len(table)} images could not be read and were not predicted (listed with their "
              f"reason in the table's 'error' column); exit code 1", file=sys.stderr)
        return 1
    return 0


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

    if args.decode < -1:
        raise ConfigError(f"data check --decode must be a count >= 0 (or -1: every image), got {args.decode}")
    cfg = build_config(args.profile, args.config, [*args.overrides, f"data.dataset={args.dataset}",
                                                   f"data.data_root={args.data_root}"])
    report = check(cfg.data, decode=args.decode)
    print(report.text())
    return 0 if report.ok else 1


def _bench(args) -> int:
    from .bench import VARIANTS, main
    from .methods import METHODS

    bad = [m for m in args.methods or [] if m not in METHODS] + [v for v in args.variants or [] if v not in VARIANTS]
    if bad:
        raise ConfigError(f"bench: unknown method(s) or variant(s) {bad}; methods {sorted(METHODS)}, "
                          f"variants {list(VARIANTS)}")
    for key in ("size", "batch", "n_images", "steps", "workers"):
        if getattr(args, key) < (0 if key == "workers" else 1):
            raise ConfigError(f"bench --{key.replace('_', '-')} must be >= {0 if key == 'workers' else 1}, "
                              f"got {getattr(args, key)}")
    return main(args)


def _pretrain(args) -> int:
    """Train (or find in the cache) a backbone: a preset, changed by key=value overrides."""
    from .config import apply, parse_overrides
    from .pretrain import PREFIX, PRESETS, preset, pretrain, record_of

    cfg = apply(preset(PREFIX + args.preset), parse_overrides(args.overrides), "pretrain.")
    path = pretrain(cfg, verbose=True)
    rec = record_of(path)
    last = rec["history"][-1]
    print(f"{path}: {cfg.objective} pretraining of {cfg.backbone} on {cfg.n_train} SynthFER faces (seed "
          f"{cfg.synthfer.seed}), {cfg.epochs} epochs in {rec['train_s']:.0f} s; last epoch: "
          + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch"))
    if cfg == PRESETS.get(args.preset):
        print(f"use it with model.weights={PREFIX}{args.preset} (or model.weights={path})")
    else:
        print(f"use it with model.weights={path}")
    return 0


def _sweep(args) -> int:
    """Run a grid file; exit 1 if any cell failed (each is listed with its error)."""
    from .sweep import Grid, run

    grid = Grid.from_yaml(args.grid)
    if args.profile:
        grid.profile = args.profile
    for item in args.overrides:  # key=value for every cell, on top of the grid's base
        key, _, value = item.partition("=")
        grid.base[key] = value
    if args.dry_run:
        from .sweep import plan, plan_text

        print(plan_text(plan(grid, out_dir=args.out_dir), args.workers))
        return 0
    result = run(grid, workers=args.workers, backend=args.backend, out_dir=args.out_dir,
                 progress=not args.no_progress)
    print(result.summary())
    print(f"sweep summary: {result.path}")
    return 1 if result.failed else 0


def _plan(args) -> int:
    """The suite's runs, notebook by notebook: what `./reproduce.sh` would train and what it costs."""
    from .config import PROFILES
    from .suite import SUITE, plan, plan_text

    profile = args.profile or ("quick" if args.dataset == "synthfer" else "real")  # as ./reproduce.sh picks it
    if profile not in PROFILES:
        raise ConfigError(f"--profile: unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    prefixes = (args.notebook or "").split(",")  # as ./reproduce.sh --notebook: 04,05,07 for several
    chosen = tuple(n for n in SUITE if any(n.startswith(p) for p in prefixes))
    if not chosen:
        raise ConfigError(f"--notebook: no notebook starts with {args.notebook!r}; expected a prefix of {list(SUITE)}")
    params = {"DATASET": args.dataset, "DATA_ROOT": args.data_root}
    if args.label_source:  # as ./reproduce.sh passes it: real label noise replaces the injected one
        params["LABEL_SOURCE"] = args.label_source
        if args.label_source != "ferplus":
            params["NOISE"] = "none"
    print(plan_text(plan(profile, chosen, params), args.workers, verbose=args.verbose))
    return 0


def _pseudo_label(args) -> None:
    """AU / VA side files for a dataset from a finished run that predicts them (fercore/pseudo_label.py)."""
    from .pseudo_label import pseudo_label, summary_lines

    s = pseudo_label(args.run, args.dataset, args.data_root, args.out, overrides=args.overrides,
                     splits=tuple(x.strip() for x in args.splits.split(",") if x.strip()),
                     tasks=tuple(x.strip() for x in args.tasks.split(",") if x.strip()) if args.tasks else None,
                     au_threshold=args.au_threshold, va_threshold=args.va_threshold, au_map=args.au_map,
                     tta=args.tta, device=args.device, batch_size=args.batch_size or None)
    print("\n".join(summary_lines(s)))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fercore", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--config", help="YAML file of config keys")
        sp.add_argument("--profile", help="smoke | quick | real | paper (default: quick)")
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
    pr.add_argument("--strict", action="store_true", help="stop at the first image that cannot be read "
                                                          "(default: predict the others, list it, exit 1)")
    pr.set_defaults(func=_predict)

    pt = sub.add_parser("pretrain", help="fercore's own backbone pretraining on SynthFER (cached by its config)")
    pt.add_argument("--preset", default="au32", help="au32 (the quick profile's start) | identity32 | "
                                                     "expression32 | au32-smoke")
    pt.add_argument("overrides", nargs="*", metavar="key=value", help="change the preset, e.g. epochs=8 "
                                                                       "objective=identity synthfer.identities=200")
    pt.set_defaults(func=_pretrain)

    sw = sub.add_parser("sweep", help="run a grid of methods x noise x seeds x variants (a YAML grid file)")
    sw.add_argument("grid", help="grid YAML file, or the name of one of fercore/grids/ (noise_sweep, ablations)")
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="set for every cell, e.g. device=cuda")
    sw.add_argument("--profile", help="override the grid's profile")
    sw.add_argument("--workers", type=int, default=1, help="local processes (one thread each on CPU)")
    sw.add_argument("--backend", default="local", help="local | submitit (Slurm, or submitit's local executor)")
    sw.add_argument("--out-dir", help="where the runs go (default: the grid's base out_dir)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar (one line per cell)")
    sw.add_argument("--dry-run", action="store_true", help="train nothing: list the cells, which runs are finished, "
                                                           "and the estimated time of the rest")
    sw.set_defaults(func=_sweep)

    pl = sub.add_parser("plan", help="the runs ./reproduce.sh would train, notebook by notebook, which are finished, "
                                     "and the estimated time of the rest (trains nothing)")
    pl.add_argument("--profile", default=None, help="smoke | quick | real | paper (default: quick on SynthFER, "
                                                    "real with a real --dataset, as ./reproduce.sh)")
    pl.add_argument("--dataset", default="synthfer", help="as ./reproduce.sh --dataset (default: synthfer)")
    pl.add_argument("--data-root", default="", help="as ./reproduce.sh --data-root")
    pl.add_argument("--label-source", default="", choices=["", "ferplus", "fer2013", "one_vote"],
                    help="as ./reproduce.sh --label-source (ferplus only)")
    pl.add_argument("--notebook", default="",
                    help="only notebooks whose name starts with this (e.g. 05; 04,05,07 for several)")
    pl.add_argument("--workers", type=int, default=2, help="processes the estimate divides by (default 2)")
    pl.add_argument("--verbose", "-v", action="store_true", help="list every run")
    pl.set_defaults(func=_plan)

    b = sub.add_parser("bench", help="fercore's pipeline vs the peers' way; every method's step time vs ce")
    b.add_argument("--size", type=int, default=64, help="image size (default 64; the GPU check uses 112 and 224)")
    b.add_argument("--backbone", default="resnet18")
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--n-images", type=int, default=1024, help="SynthFER faces exported to the RAF-DB layout")
    b.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    b.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    b.add_argument("--workers", type=int, default=2, help="DataLoader workers of the peers' pipeline")
    b.add_argument("--device", default="auto")
    b.add_argument("--methods", nargs="+", help="default: every registered method")
    b.add_argument("--variants", nargs="+", help="fp32 channels_last bf16 bf16+channels_last bf16+channels_last+compile"
                                                 " (default: all on CUDA, fp32 on CPU)")
    b.add_argument("--json", help="also write every figure to this JSON file")
    b.set_defaults(func=_bench)

    pl = sub.add_parser("pseudo-label", help="AU / valence-arousal side files for a dataset, from a finished run "
                                             "that predicts them (docs/datasets.md#side-files)")
    pl.add_argument("run", help="run directory of a method that predicts AUs and/or VA (e.g. MTAC)")
    pl.add_argument("--dataset", required=True, help="reader name of the dataset to label, e.g. rafdb, fer2013")
    pl.add_argument("--data-root", default="", help="its folder in the official layout (empty for synthfer)")
    pl.add_argument("--out", required=True, help="side file to write (CSV; a FILE.json record beside it)")
    pl.add_argument("--splits", default="train", help="train | test | train,test (default: train)")
    pl.add_argument("--tasks", default="", help="au | va | au,va (default: every task the run predicts)")
    pl.add_argument("--au-threshold", type=float, default=0.5,
                    help="keep an AU entry when |2p - 1| >= this (default 0.5: p <= 0.25 or p >= 0.75)")
    pl.add_argument("--va-threshold", type=float, default=0.9,
                    help="keep a VA row when its mirrored-view agreement >= this (default 0.9)")
    pl.add_argument("--au-map", default="", help="RUN_AU[:FILE_AU],... : which of the run's AUs to write, and "
                                                 "their names in the file (default: all, own names)")
    pl.add_argument("--tta", choices=["flip", "none"], default="flip", help="average with the mirrored face")
    pl.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    pl.add_argument("--batch-size", type=int, default=0, help="0: the run's eval batch size")
    pl.add_argument("overrides", nargs="*", metavar="key=value", help="data keys of the labelled dataset, "
                                                                       "e.g. data.protocol=ferplus7")
    pl.set_defaults(func=_pseudo_label)

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
    c.add_argument("--decode", type=int, default=-1, metavar="N",
                   help="decode only N evenly spaced images per split, a sample (default: every image)")
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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each on stderr: fercore's notices, and any library's warning."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    kind = "notice" if issubclass(category, Notice) else f"warning: {category.__name__}"
    print(f"fercore: {kind}: {text}", file=sys.stderr)


def _error_lines(e: BaseException) -> list[str]:
    if isinstance(e, OSError) and e.filename is not None and not str(e).startswith(str(e.filename)):
        return [f"{e.filename}: {e.strerror or e}"]
    return str(e).splitlines() or [type(e).__name__]


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a check found problems (data check, failed sweep cells) or an internal
    error, 2 bad input (one `fercore: error:` line per problem), 130 interrupted. No traceback is
    printed unless FERCORE_TRACEBACK=1 is set."""
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", Notice)
        warnings.showwarning = _show_warning
        try:
            return args.func(args) or 0  # a command may return a non-zero exit code (data check)
        except (ConfigError, DataError, NonFiniteLossError, FileExistsError, OSError) as e:
            for line in _error_lines(e):
                print(f"fercore: error: {line}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("fercore: interrupted; every file written so far is complete (train --resume continues a run)",
                  file=sys.stderr)
            return 130
        except Exception as e:  # a bug in fercore: one line, the traceback on request
            if os.environ.get("FERCORE_TRACEBACK"):
                raise
            print(f"fercore: internal error: {type(e).__name__}: {_error_lines(e)[0]} (a bug in fercore: "
                  f"please report it; FERCORE_TRACEBACK=1 shows the traceback)", file=sys.stderr)
            return 1
