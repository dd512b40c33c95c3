"""Command line: `python -m fercore train|data ...` with `--config` YAML and `key=value` overrides."""
from __future__ import annotations

import argparse
import sys

from .errors import ConfigError, DataError, NonFiniteLossError


def _train(args) -> None:
    from .config import build_config
    from .engine import fit

    cfg = build_config(args.profile, args.config, args.overrides)
    run = fit(cfg, if_exists=args.if_exists)
    s = run.summary
    print(f"{run.path}: last-epoch test acc {s['last']['test_acc']:.4f}, "
          f"best {s['best']['test_acc']:.4f} (epoch {s['best']['epoch']})")


def _data_export(args) -> None:
    from .config import build_config
    from .data.datasets import load_dataset
    from .data.synthfer.export import export_folder, export_rafdb

    cfg = build_config(args.profile, args.config, args.overrides)
    train, test = load_dataset(cfg.data)
    writer = {"rafdb": export_rafdb, "folder": export_folder}[args.layout]
    root = writer(train, test, args.out)
    print(f"wrote {len(train)} train and {len(test)} test images of {cfg.data.dataset} in the {args.layout} layout to {root}")


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

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    e = dsub.add_parser("export", help="write the configured dataset (e.g. SynthFER) in a real layout")
    common(e)
    e.add_argument("--layout", choices=["rafdb", "folder"], required=True)
    e.add_argument("--out", required=True, help="folder to write")
    e.set_defaults(func=_data_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, DataError, NonFiniteLossError, FileExistsError) as e:
        print(f"fercore: error: {e}", file=sys.stderr)
        return 2
    return 0
