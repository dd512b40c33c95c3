"""Bad input, family by family (the reliability issue): nothing lost, no traceback, no silently
wrong answer.

Every case of `CASES` runs `fercore.cli.main` in-process and asserts the exit code (2 for bad
input; 1 where `data check` reports problems; 0 where the input is usable and a notice says
what is odd about it), that the message names the key, file or line, that each error is one line,
that no traceback is printed, and that nothing in the case's scratch tree changed (the user's
files, other runs, and the run itself unless the case is about writing it); no `*.tmp` is left
anywhere. `test_no_traceback_through_a_real_process` runs a few through `python -m fercore`.

Training happens in a few tiny session-scoped runs only (48 faces at 32 px, 1 epoch, resnet10t).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fixtures as fx
import numpy as np
import pytest
import torch
from PIL import Image

from fercore.cli import main, parse_args
from fercore.config import build_config
from fercore.errors import Notice

CSV = ["data.dataset=csv", "data.data_root={s}/csv", "data.n_train=0", "data.n_test=0"]
# model.weights= : from scratch, whatever the smoke profile's weights (fercore's own pretraining) are
SIZES = ["data.n_train=48", "data.n_test=24", "data.image_size=32", "train.epochs=1", "model.backbone=resnet10t",
         "model.weights="]
TRAIN = ["train", "--profile", "smoke", *SIZES]


# --- the world every case starts from -----------------------------------------------------------

@dataclass
class World:
    run: Path                 # a finished run of TRAIN (name=run)
    raf: Path                 # a RAF-DB copy of 24 + 12 SynthFER faces
    faces: tuple              # those faces (train, test)
    image: Path               # a valid 40x40 PNG


def run_cli(argv: list[str]) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        return int(e.code)


@pytest.fixture(scope="session")
def world(tmp_path_factory, synth_small) -> World:
    root = tmp_path_factory.mktemp("world")
    assert run_cli([*TRAIN, f"out_dir={root}", "name=run"]) == 0
    train, test = synth_small
    faces = (train.subset(range(24)), test.subset(range(12)))
    fx.write_rafdb(root / "raf", *faces)
    Image.new("RGB", (40, 40), (120, 80, 60)).save(root / "face.png")
    return World(root / "run", root / "raf", faces, root / "face.png")


def clone_run(world: World, scratch: Path, name: str = "run") -> Path:
    """The world's run in the scratch tree, as hard links (damage files with `damage`, never in place)."""
    dst = scratch / name
    shutil.copytree(world.run, dst, copy_function=os.link)
    return dst


def damage(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            st = p.stat()
            digest = hashlib.sha1(p.read_bytes()).hexdigest() if st.st_size < 1 << 20 else ""
            out[rel] = ("file", st.st_size, st.st_mtime_ns, digest)
    return out


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares `width` x `height` grey pixels (no pixel data: a bomb costs nothing to make)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit greyscale (2-D `arr`) or RGB (3-D) PNG, written by hand (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


# --- the cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    argv: Callable[[Path, World], list]
    names: tuple[str, ...]                 # what the messages must name
    code: int = 2
    setup: Callable | None = None          # (scratch, world, monkeypatch) -> None, before the snapshot
    lines: int | None = 1                  # `fercore: error:` lines expected (None: any number)
    may_change: str | None = None          # the one path under scratch the command may write (its run)


def train(*extra):
    return lambda s, w: [*TRAIN, f"out_dir={s / 'runs'}", *extra]


def yaml_case(id, text: bytes, names, lines=1):
    def setup(s, w, mp):
        (s / "c.yaml").write_bytes(text)
    return Case(id, train("--config", "{s}/c.yaml"), names, setup=setup, lines=lines)


def grid_case(id, text: str, names):
    """`fercore sweep` on a grid file: refused before any cell runs (nothing written)."""
    def setup(s, w, mp):
        (s / "g.yaml").write_text(f"profile: smoke\nbase: {{out_dir: {s / 'runs'}}}\n{text}")
    return Case(id, lambda s, w: ["sweep", "{s}/g.yaml", *SIZES], names, setup=setup)


def on_run(files: dict[str, bytes | Callable], unfinished: bool = False):
    """Setup: clone the world's run to scratch/run and replace some of its files."""
    def setup(s, w, mp):
        rd = clone_run(w, s)
        for name, data in files.items():
            damage(rd / name, data(rd) if callable(data) else data)
        if unfinished:
            (rd / "summary.json").unlink()
    return setup


def checkpoint_with(change: Callable[[dict], object]):
    def make(rd: Path) -> bytes:
        blob = torch.load(rd / "checkpoint.pt", weights_only=True)
        path = rd.parent / "tampered.pt"
        torch.save(change(blob), path)
        data = path.read_bytes()
        path.unlink()
        return data
    return make


def config_with(change: Callable[[dict], object]):
    return lambda rd: json.dumps(change(json.loads((rd / "config.json").read_text()))).encode()


def image_setup(make: Callable[[Path], None]):
    def setup(s, w, mp):
        make(s / "img.png")
    return setup


def raf_setup(corrupt: int | None = None):
    def setup(s, w, mp):
        shutil.copytree(w.raf, s / "raf")
        if corrupt is not None:
            damage(s / "raf" / "Image" / "aligned" / f"train_{corrupt:05d}_aligned.jpg", b"not a jpeg")
    return setup


RAF = ["data.dataset=rafdb", "data.data_root={s}/raf", "data.n_train=0", "data.n_test=0"]


def raf_saved(change: Callable[[bytes], bytes]):
    """The world's RAF-DB copy with its label file's bytes changed (as an editor on another system saves it)."""
    def setup(s, w, mp):
        raf_setup()(s, w, mp)
        f = s / "raf" / "EmoLabel" / "list_patition_label.txt"
        damage(f, change(f.read_bytes()))
    return setup


def csv_bom(s, w, mp):
    fx.write_csvlist(s / "csv", *w.faces)
    f = s / "csv" / "train.csv"
    damage(f, b"\xef\xbb\xbf" + f.read_bytes())


def csv_setup(bad_path: str):
    def setup(s, w, mp):
        fx.write_csvlist(s / "csv", *w.faces)
        Image.new("RGB", (32, 32)).save(s / "outside.png")  # the file exists: the path is refused, not missing
        lines = (s / "csv" / "train.csv").read_text().splitlines()
        lines[2] = bad_path + lines[2][lines[2].index(","):]
        (s / "csv" / "train.csv").write_text("\n".join(lines) + "\n")
    return setup


def photo_folder(*damaged: str):
    """scratch/dir holding a.png, b.png and c.png (40x40 faces); the `damaged` ones are not images."""
    def setup(s, w, mp):
        (s / "dir").mkdir()
        for name in ("a.png", "b.png", "c.png"):
            if name in damaged:
                (s / "dir" / name).write_text("not a photo")
            else:
                shutil.copy(w.image, s / "dir" / name)
    return setup


def ferplus_setup(change: Callable[[Path], None] | None = None):
    """FERPlus in the layout its generator writes (scratch/fp: FER2013{Train,Valid,Test}/*.png + label.csv),
    then `change(fp)` damages it."""
    def setup(s, w, mp):
        fx.write_fer(s / "csv", *w.faces)
        fx.generate_ferplus_pngs(s / "csv", s / "fp")
        shutil.rmtree(s / "csv")
        if change is not None:
            change(s / "fp")
    return setup


def first_vote(text: str):
    """An edit of a label.csv line: its 10 votes replaced by `text` (from the first vote on)."""
    return lambda line: line[:line.index('",') + 2] + text


def label_line(line: int, edit: Callable[[str], str]):
    """Damage: FER2013Train/label.csv's line `line` (1-based) replaced by `edit(line)`."""
    def change(fp: Path):
        f = fp / "FER2013Train" / "label.csv"
        lines = f.read_text().splitlines()
        lines[line - 1] = edit(lines[line - 1])
        f.write_text("\n".join(lines) + "\n")
    return change


def ferplus_check(s, w):
    return ["data", "check", "--dataset", "ferplus", "--data-root", s / "fp"]


FERPLUS = ["data.dataset=ferplus", "data.data_root={s}/fp", "data.n_train=0", "data.n_test=0"]


def affectnet_setup(s, w, mp):
    fx.write_affectnet_csv(s / "an", *w.faces)
    f = s / "an" / "Manually_Annotated_file_lists" / "training.csv"
    lines = f.read_text().splitlines()
    lines[1] = "../../secret.jpg" + lines[1][lines[1].index(","):]
    f.write_text("\n".join(lines) + "\n")


def no_data_built(s, w, mp):
    """Building the data fails the case: its problem must be found before (an internal error, exit 1)."""
    def built(*a, **k):
        raise AssertionError("the data was built before the bad input was found")
    mp.setattr("fercore.engine.load_dataset", built)


def readonly_setup(s, w, mp):
    (s / "ro").mkdir()
    os.chmod(s / "ro", 0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the file system say no as it would to a user
        real = pathlib.Path.mkdir

        def mkdir(self, *a, **k):
            if str(self).startswith(str(s / "ro") + os.sep):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *a, **k)
        mp.setattr(pathlib.Path, "mkdir", mkdir)


def write_fails_setup(code: int):
    """The checkpoint's write fails after 4 KiB with `code` (ENOSPC: a full disk; EFBIG: a file-size limit)."""
    def setup(s, w, mp):
        (s / "runs").mkdir()
        real = torch.save

        def save(obj, f, *a, **k):
            if ".checkpoint.pt." not in str(f):
                return real(obj, f, *a, **k)
            Path(f).write_bytes(b"\0" * 4096)
            raise OSError(code, os.strerror(code))
        mp.setattr(torch, "save", save)
    return setup


disk_full_setup = write_fails_setup(errno.ENOSPC)


def user_folder(s, w, mp):
    (s / "runs" / "mine").mkdir(parents=True)
    (s / "runs" / "mine" / "notes.txt").write_text("my own notes\n")


def lookalike_folder(s, w, mp):
    d = s / "runs" / "mine"
    d.mkdir(parents=True)
    for name in ("config.json", "env.json", "thesis.tex"):
        (d / name).write_text("{}\n")


CASES = [
    # --- config: ranges, closed sets, all problems at once, before anything exists on disk ---
    Case("batch-size-0", train("train.batch_size=0"), ("train.batch_size", ">= 1", "0")),
    Case("batch-size-negative", train("train.batch_size=-3"), ("train.batch_size", "-3")),
    Case("eval-batch-size-0", train("train.eval_batch_size=0"), ("train.eval_batch_size",)),
    Case("image-size-0", train("data.image_size=0"), ("data.image_size", "[8, 1024]")),
    Case("n-train-negative", train("data.n_train=-5"), ("data.n_train", ">= 0")),
    Case("unknown-backbone", train("model.backbone=resnet_nope"), ("model.backbone", "resnet_nope", "did you mean"),
         setup=lambda s, w, mp: mp.setenv("FERCORE_CACHE", str(s / "cache"))),  # refused before the data is cached
    Case("unknown-device", train("device=tpu"), ("'device'", "tpu")),
    Case("unknown-normalize", train("data.normalize=foo"), ("data.normalize", "imagenet")),
    Case("seed-negative", train("seed=-1"), ("'seed'", ">= 0")),
    Case("threads-negative", train("train.num_threads=-2"), ("train.num_threads",)),
    Case("lr-negative", train("optim.lr=-0.1"), ("optim.lr", ">= 0", "-0.1")),
    Case("epochs-0", train("train.epochs=0"), ("train.epochs", ">= 1")),
    Case("every-problem-at-once", train("train.batch_size=0", "seed=-1", "optim.lr=-1", "data.normalize=x"),
         ("train.batch_size", "'seed'", "optim.lr", "data.normalize"), lines=4),
    Case("unknown-key", train("train.epoch=3"), ("train.epoch", "did you mean 'epochs'")),
    Case("wrong-type", train("train.epochs=ten"), ("train.epochs", "int", "ten")),
    Case("float-not-a-number", train("optim.lr=fast"), ("optim.lr", "float", "fast")),
    Case("unknown-noise", train("data.noise=bogus"), ("data.noise", "bogus")),
    Case("noise-rate-out-of-range", train("data.noise=sym:1.5"), ("data.noise", "1.5")),
    # a noise setting is checked with the config, before any data is generated or decoded (issue 21, case 9)
    Case("noise-pairs-checked-before-the-data", train("data.noise=asym:0.3:happy>nope"),
         ("data.noise", "unknown expression name 'nope'"), setup=no_data_built),
    Case("noise-file-missing-said-before-the-data", train("data.noise=file:{s}/nope.txt"),
         ("data.noise=file:", "nope.txt not found"), setup=no_data_built),
    Case("name-dot-dot", train("name=.."), ("'name'", "one path component")),
    Case("overwrite-name-dot-dot", train("name=..", "--overwrite"), ("'name'", "one path component"),
         setup=lambda s, w, mp: ((s / "runs").mkdir(), (s / "mine.txt").write_text("the parent of out_dir\n"))),
    Case("name-escapes-out-dir", train("name=../../x"), ("'name'", "../../x")),
    Case("name-with-slash", train("name=a/b"), ("'name'",)),
    Case("unknown-profile", lambda s, w: ["train", "--profile", "fast"], ("unknown profile 'fast'",)),
    Case("unknown-method", train("method=xyz"), ("unknown method 'xyz'",)),
    Case("unknown-dataset", train("data.dataset=imagenet"), ("data.dataset", "imagenet")),
    Case("dataset-without-root", train("data.dataset=rafdb"), ("data.data_root",)),
    Case("data-root-missing", train("data.dataset=rafdb", "data.data_root={s}/nope"), ("nope", "does not exist")),
    Case("stray-argument", train("epochs5"), ("'epochs5'", "key=value")),
    Case("unknown-option", train("--frobnicate"), ("unrecognized arguments: --frobnicate",), lines=None),
    # --- YAML files: the line, tabs, duplicate keys, encodings, values ---
    yaml_case("yaml-tab", b"optim:\n\tlr: 1e-3\n", ("c.yaml:2", "tabs")),
    yaml_case("yaml-duplicate-key", b"optim:\n  lr: 0.1\n  lr: 0.2\n", ("c.yaml:3", "'lr' given twice", "line 2")),
    yaml_case("yaml-not-utf8", b"optim:\n  lr: 0.1 # caf\xe9\n", ("c.yaml:2", "UTF-8")),
    yaml_case("yaml-not-a-mapping", b"- a\n- b\n", ("c.yaml", "mapping")),
    yaml_case("yaml-bad-value", b"train:\n  batch_size: 0\n", ("train.batch_size", ">= 1")),
    Case("yaml-missing", train("--config", "{s}/none.yaml"), ("none.yaml", "does not exist")),
    Case("cache-is-a-file", train(), ("FERCORE_CACHE=", "is a file, not a folder"),
         setup=lambda s, w, mp: ((s / "afile").write_text("mine"), mp.setenv("FERCORE_CACHE", str(s / "afile")))),
    Case("cache-under-a-file", train(), ("FERCORE_CACHE=", "afile is a file"),
         setup=lambda s, w, mp: ((s / "afile").write_text("mine"),
                                 mp.setenv("FERCORE_CACHE", str(s / "afile" / "sub")))),
    # --- grids: an empty axis or a repeated value is refused, naming the key (no 0-cell sweep that exits 0) ---
    grid_case("grid-empty-methods", "methods: []\nnoise: [none]\nseeds: [0]\n", ("grid 'g'", "'methods' is empty")),
    grid_case("grid-repeated-seed", "methods: [ce]\nnoise: [none]\nseeds: [0, 0]\n", ("'seeds' repeats 0",)),
    grid_case("grid-repeated-noise", "methods: [ce]\nnoise: [sym:0.3, sym:0.3]\nseeds: [0]\n",
              ("'noise' repeats sym:0.3",)),
    grid_case("grid-empty-variants", "methods: [ce]\nnoise: [none]\nseeds: [0]\nvariants: {}\n",
              ("'variants' is empty",)),
    # --- run directories: fercore deletes only what it made, and says what it found ---
    Case("overwrite-a-users-folder", train("name=mine", "--overwrite"), ("runs/mine", "notes.txt", "did not write"),
         setup=user_folder),
    Case("overwrite-a-lookalike-folder", train("name=mine", "--overwrite"), ("runs/mine", "thesis.tex"),
         setup=lookalike_folder),
    Case("run-path-is-a-file", train("name=taken"), ("taken", "not a folder"),
         setup=lambda s, w, mp: ((s / "runs").mkdir(), (s / "runs" / "taken").write_text("x"))),
    Case("out-dir-under-a-file", lambda s, w: [*TRAIN, f"out_dir={s}/afile/runs"], ("afile", "Not a directory"),
         setup=lambda s, w, mp: (s / "afile").write_text("x")),
    Case("out-dir-read-only", lambda s, w: [*TRAIN, f"out_dir={s}/ro/runs"], ("ro/runs", "Permission denied"),
         setup=readonly_setup),
    Case("run-exists-no-flag", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run"],
         ("already holds a run", "--resume", "--overwrite"), setup=on_run({})),
    # a reused run must read back whole: a damaged metrics.jsonl is retrained, saying which file (issue 21, case 1)
    Case("reuse-damaged-metrics", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--reuse"],
         ("not reused", "run/metrics.jsonl:2", "not valid JSON", "training it again"), code=0, lines=0,
         setup=on_run({"metrics.jsonl": lambda rd: (rd / "metrics.jsonl").read_bytes() + b"{bad\n"}), may_change="run"),
    Case("reuse-metrics-short-of-the-summary", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--reuse"],
         ("not reused", "run/metrics.jsonl: 0 epochs, the summary says 1"), code=0, lines=0,
         setup=on_run({"metrics.jsonl": b""}), may_change="run"),
    # an AU side file without rows: MTAC names the file, not "add them with data.au_file" (issue 21, case 4)
    Case("au-side-file-without-rows", train("method=mtac", "data.dataset=rafdb", "data.data_root={s}/raf",
                                            "data.n_train=0", "data.n_test=0", "data.au_file={s}/au.csv"),
         ("data.au_file=", "au.csv gave AU targets to none of the 24 training images"), code=0, lines=0,
         setup=lambda s, w, mp: (raf_setup()(s, w, mp), (s / "au.csv").write_text("id,AU1,AU2\n")),
         may_change="runs"),
    Case("resume-another-config", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "train.batch_size=16", "--resume"],
         ("another config", "train.batch_size"), setup=on_run({})),
    Case("disk-full-at-checkpoint", lambda s, w: [*TRAIN, f"out_dir={s / 'runs'}", "name=df"],
         ("runs/df/checkpoint.pt", "No space left on device", "MiB free"), setup=disk_full_setup,
         may_change="runs/df"),
    # a file-size limit is not a full disk: EFBIG says so (issue 21, case 9)
    Case("file-too-large-at-checkpoint", lambda s, w: [*TRAIN, f"out_dir={s / 'runs'}", "name=df"],
         ("runs/df/checkpoint.pt", "File too large", "size limit", "ulimit -f"), setup=write_fails_setup(errno.EFBIG),
         may_change="runs/df"),
    # --- every file read back: checkpoint, config.json (eval, predict, --resume) ---
    Case("eval-truncated-checkpoint", lambda s, w: ["eval", s / "run"], ("run/checkpoint.pt", "truncated"),
         setup=on_run({"checkpoint.pt": lambda rd: (rd / "checkpoint.pt").read_bytes()[:5000]})),
    Case("eval-empty-checkpoint", lambda s, w: ["eval", s / "run"], ("run/checkpoint.pt", "0 bytes"),
         setup=on_run({"checkpoint.pt": b""})),
    Case("eval-garbage-checkpoint", lambda s, w: ["eval", s / "run"], ("run/checkpoint.pt", "damaged"),
         setup=on_run({"checkpoint.pt": os.urandom(4096)})),
    Case("eval-checkpoint-not-fercores", lambda s, w: ["eval", s / "run"], ("run/checkpoint.pt", "not a fercore"),
         setup=on_run({"checkpoint.pt": checkpoint_with(lambda b: [1, 2, 3])})),
    Case("eval-checkpoint-of-another-model", lambda s, w: ["eval", s / "run"], ("run/checkpoint.pt", "does not fit"),
         setup=on_run({"checkpoint.pt": checkpoint_with(lambda b: {**b, "model": {"w": torch.zeros(3)}})})),
    Case("eval-config-not-json", lambda s, w: ["eval", s / "run"], ("run/config.json", "not valid JSON"),
         setup=on_run({"config.json": b"{not json"})),
    Case("eval-config-a-list", lambda s, w: ["eval", s / "run"], ("run/config.json", "JSON object"),
         setup=on_run({"config.json": b"[1, 2]"})),
    Case("eval-config-bad-value", lambda s, w: ["eval", s / "run"], ("run/config.json", "train.batch_size"),
         setup=on_run({"config.json": config_with(lambda c: {**c, "train": {**c["train"], "batch_size": 0}})})),
    Case("eval-not-a-run", lambda s, w: ["eval", s / "empty"], ("empty", "not a run directory"),
         setup=lambda s, w, mp: (s / "empty").mkdir()),
    Case("eval-missing-run", lambda s, w: ["eval", s / "nowhere"], ("nowhere", "no such run directory")),
    Case("predict-truncated-checkpoint", lambda s, w: ["predict", s / "run", w.image], ("run/checkpoint.pt",),
         setup=on_run({"checkpoint.pt": lambda rd: (rd / "checkpoint.pt").read_bytes()[:5000]})),
    Case("predict-config-not-json", lambda s, w: ["predict", s / "run", w.image], ("run/config.json",),
         setup=on_run({"config.json": b"\xff\xfe"})),
    # --resume on a damaged checkpoint fails before config.json/env.json are rewritten (issue 21, case 9):
    # nothing in the run changes
    Case("resume-truncated-checkpoint", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--resume"],
         ("run/checkpoint.pt", "truncated"),
         setup=on_run({"checkpoint.pt": lambda rd: (rd / "checkpoint.pt").read_bytes()[:5000]}, unfinished=True)),
    Case("resume-checkpoint-of-another-model", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--resume"],
         ("run/checkpoint.pt", "cannot be resumed", "weights do not fit the model"),
         setup=on_run({"checkpoint.pt": checkpoint_with(lambda b: {**b, "model": {"w": torch.zeros(3)}})},
                      unfinished=True)),
    Case("resume-config-not-json", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--resume"],
         ("run/config.json", "not valid JSON"), setup=on_run({"config.json": b"{oops"}, unfinished=True)),
    Case("reuse-config-not-json", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--reuse"],
         ("run/config.json", "not valid JSON"), setup=on_run({"config.json": b"{oops"})),
    Case("resume-checkpoint-missing-state", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--resume"],
         ("run/checkpoint.pt", "cannot be resumed", "it lacks optimizer"),
         setup=on_run({"checkpoint.pt": checkpoint_with(lambda b: {k: v for k, v in b.items() if k != "optimizer"})},
                      unfinished=True)),
    # --- a run used on data it was not trained for ---
    Case("eval-other-image-size", lambda s, w: ["eval", w.run, "data.image_size=48"],
         ("trained at 32 px", "data.image_size=32")),
    Case("eval-other-classes", lambda s, w: ["eval", w.run, "data.synthfer.protocol=synth8"],
         ("classes", "contempt", "data.protocol")),
    Case("eval-unknown-device", lambda s, w: ["eval", w.run, "--device", "tpu"], ("device", "tpu")),
    # --- a run that did not finish says so wherever it is used ---
    Case("eval-unfinished-run", lambda s, w: ["eval", s / "run"], ("did not finish", "--resume"), code=0,
         setup=on_run({}, unfinished=True), lines=0),
    Case("predict-unfinished-run", lambda s, w: ["predict", s / "run", w.image], ("did not finish",), code=0,
         setup=on_run({}, unfinished=True), lines=0),
    Case("reuse-a-damaged-run", lambda s, w: [*TRAIN, f"out_dir={s}", "name=run", "--reuse"],
         ("not reused", "run/checkpoint.pt", "training it again"), code=0, lines=0, may_change="run",
         setup=on_run({"checkpoint.pt": lambda rd: (rd / "checkpoint.pt").read_bytes()[:5000]})),
    # --- images: tiny, huge, broken, odd modes ---
    Case("plan-unknown-profile", lambda s, w: ["plan", "--profile", "quik"], ("--profile", "'quik'", "quick")),
    Case("plan-unknown-notebook", lambda s, w: ["plan", "--notebook", "09"], ("--notebook", "'09'")),
    Case("predict-batch-size-0", lambda s, w: ["predict", w.run, w.image, "--batch-size", "0"], ("--batch-size",)),
    Case("predict-1x1-image", lambda s, w: ["predict", w.run, s / "img.png"], ("img.png", "1x1", "at least 8"),
         setup=image_setup(lambda p: Image.new("RGB", (1, 1)).save(p))),
    Case("predict-decompression-bomb", lambda s, w: ["predict", w.run, s / "img.png"],
         ("img.png", "100,000,000 pixels", "limit"), setup=image_setup(lambda p: png_header(p, 10000, 10000))),
    Case("predict-bigger-bomb", lambda s, w: ["predict", w.run, s / "img.png"],
         ("img.png", "400,000,000 pixels", "limit"), setup=image_setup(lambda p: png_header(p, 20000, 20000))),
    Case("predict-not-an-image", lambda s, w: ["predict", w.run, s / "img.png"], ("img.png", "cannot decode"),
         setup=image_setup(lambda p: p.write_text("hello"))),
    Case("predict-truncated-png", lambda s, w: ["predict", w.run, s / "img.png"], ("img.png", "cannot decode"),
         setup=image_setup(lambda p: (Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
                                      .save(p), p.write_bytes(p.read_bytes()[:300])))),
    Case("predict-float-image", lambda s, w: ["predict", w.run, s / "img.tif"], ("img.tif", "floating-point"),
         setup=lambda s, w, mp: Image.new("F", (16, 16), 0.5).save(s / "img.tif")),
    Case("predict-missing-file", lambda s, w: ["predict", w.run, s / "gone.png"], ("gone.png", "no such image")),
    Case("predict-folder-without-images", lambda s, w: ["predict", w.run, s / "dir"], ("no images found",),
         setup=lambda s, w, mp: (s / "dir").mkdir()),
    # a folder with one damaged photo: the others are predicted, the damaged one listed (issue 21, case 6)
    Case("predict-folder-with-one-damaged-photo", lambda s, w: ["predict", w.run, s / "dir", "--out", s / "p.csv"],
         ("not predicted", "dir/b.png", "cannot decode", "1 of 3 images could not be read"), code=1, lines=0,
         setup=photo_folder("b.png"), may_change="p.csv"),
    Case("predict-strict-stops-at-a-damaged-photo", lambda s, w: ["predict", w.run, s / "dir", "--strict"],
         ("dir/b.png", "cannot decode"), setup=photo_folder("b.png")),
    Case("predict-every-photo-damaged", lambda s, w: ["predict", w.run, s / "dir"],
         ("none of the 3 images could be read", "a.png", "b.png", "c.png"),
         setup=photo_folder("a.png", "b.png", "c.png")),
    Case("predict-out-under-a-file", lambda s, w: ["predict", w.run, w.image, "--out", s / "afile" / "p.csv"],
         ("afile/p.csv", "cannot be written"), setup=lambda s, w, mp: (s / "afile").write_text("x")),
    # --- data: every image decoded, paths inside the root, the label line named ---
    Case("data-check-corrupt-jpeg", lambda s, w: ["data", "check", "--dataset", "rafdb", "--data-root", s / "raf"],
         ("train_00005_aligned.jpg", "list_patition_label.txt:5", "result: 1 problem"), code=1, lines=0,
         setup=raf_setup(corrupt=5)),
    Case("data-check-sample-says-so",
         lambda s, w: ["data", "check", "--dataset", "rafdb", "--data-root", s / "raf", "--decode", "2"],
         ("decoded 2 of 24 images (a sample: --decode 2)", "omit --decode to check all"), code=0, lines=0,
         setup=raf_setup(corrupt=5)),
    Case("data-check-bad-decode-count",
         lambda s, w: ["data", "check", "--dataset", "rafdb", "--data-root", s / "raf", "--decode", "-5"],
         ("--decode",), setup=raf_setup()),
    Case("train-corrupt-jpeg", train("data.dataset=rafdb", "data.data_root={s}/raf", "data.n_train=0", "data.n_test=0"),
         ("train_00005_aligned.jpg", "list_patition_label.txt:5"), setup=raf_setup(corrupt=5)),
    # a label file saved on Windows (CRLF, a byte-order mark) is read as its LF text, said once (issue 21, case 8)
    Case("rafdb-label-file-saved-on-windows", train(*RAF), ("list_patition_label.txt", "CRLF line endings",
                                                            "byte-order mark", "saved on Windows"),
         code=0, lines=0, setup=raf_saved(lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n")), may_change="runs"),
    Case("csv-list-saved-with-a-bom", train(*CSV), ("train.csv", "byte-order mark"), code=0, lines=0,
         setup=csv_bom, may_change="runs"),
    Case("rafdb-label-file-lone-cr", train(*RAF), ("list_patition_label.txt:1", "a CR without LF"),
         setup=raf_saved(lambda b: b.replace(b"\n", b"\r", 1))),
    Case("csv-path-with-dot-dot", train(*CSV), ("train.csv:3", "../outside.png", "leaves the data root"),
         setup=csv_setup("../outside.png")),
    Case("csv-absolute-path", train(*CSV),
         ("train.csv:3", "leaves the data root"), setup=lambda s, w, mp: csv_setup(str(s / "outside.png"))(s, w, mp)),
    Case("data-check-csv-outside", lambda s, w: ["data", "check", "--dataset", "csv", "--data-root", s / "csv"],
         ("train.csv:3", "leaves the data root", "result: 1 problem"), code=1, lines=0,
         setup=csv_setup("sub/../../outside.png")),
    # --- FERPlus in its generator's PNG layout: every problem named with its file and line ---
    Case("data-check-ferplus-png-absent", ferplus_check, ("FER2013Train/label.csv:5", "fer0000005.png",
                                                          "listed but absent", "result: 1 problem"), code=1, lines=0,
         setup=ferplus_setup(lambda fp: (fp / "FER2013Train" / "fer0000005.png").unlink())),
    Case("data-check-ferplus-png-not-listed", ferplus_check,
         ("FER2013Train/fer0999999.png", "PNG not listed in FER2013Train/label.csv", "result: 1 problem"),
         code=1, lines=0,
         setup=ferplus_setup(lambda fp: Image.new("L", (48, 48)).save(fp / "FER2013Train" / "fer0999999.png"))),
    Case("data-check-ferplus-name-twice", ferplus_check, ("FER2013Train/label.csv:7", "fer0000006.png listed twice",
                                                          "first at", "label.csv:6"), code=1, lines=0,
         setup=ferplus_setup(label_line(7, lambda line: "fer0000006.png" + line[line.index(","):]))),
    Case("data-check-ferplus-unreadable-png", ferplus_check, ("FER2013Train/fer0000007.png", "cannot decode",
                                                              "listed at", "label.csv:7"), code=1, lines=0,
         setup=ferplus_setup(lambda fp: damage(fp / "FER2013Train" / "fer0000007.png", b"not a png"))),
    Case("data-check-ferplus-votes-all-zero", ferplus_check, ("FER2013Train/label.csv:5", "all 10 votes are zero"),
         code=1, lines=0, setup=ferplus_setup(label_line(5, first_vote(",".join("0" * 10))))),
    Case("data-check-ferplus-vote-not-a-count", ferplus_check, ("FER2013Train/label.csv:5", "'2.5'", "column neutral",
                                                                "not a count"), code=1, lines=0,
         setup=ferplus_setup(label_line(5, first_vote("2.5,1,1,1,1,1,1,1,1,0")))),
    Case("data-check-ferplus-no-layout", ferplus_check, ("no FERPlus layout found", "fer2013.csv", "FER2013Train/"),
         code=1, lines=0, setup=lambda s, w, mp: (s / "fp").mkdir()),
    Case("train-ferplus-png-absent", train(*FERPLUS), ("FER2013Train/label.csv:5", "listed but absent"),
         setup=ferplus_setup(lambda fp: (fp / "FER2013Train" / "fer0000005.png").unlink())),
    Case("train-ferplus-fer2013-labels-without-csv", train(*FERPLUS, "data.label_source=fer2013"),
         ("data.label_source=fer2013", "fer2013.csv", "PNG layout"), setup=ferplus_setup()),
    Case("train-ferplus-2016-vote-file", train(*FERPLUS), ("fer2013new.csv:1", "2016 fer2013new.csv", "Image name"),
         setup=ferplus_setup(lambda fp: (fp / "fer2013new.csv").write_text(
             "Usage,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"))),
    Case("one-vote-not-ferplus", train("data.label_source=one_vote"), ("data.label_source", "ferplus only")),
    Case("affectnet-path-outside", train("data.dataset=affectnet8", "data.data_root={s}/an", "data.n_train=0",
                                         "data.n_test=0"), ("training.csv:2", "../../secret.jpg", "leaves"),
         setup=affectnet_setup),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path: Path, capsys, monkeypatch):
    scratch = tmp_path
    if case.setup is not None:
        case.setup(scratch, world, monkeypatch)
    before = snapshot(scratch)
    argv = [str(a).replace("{s}", str(scratch)) for a in case.argv(scratch, world)]
    capsys.readouterr()
    code = run_cli(argv)
    out, err = capsys.readouterr()
    monkeypatch.undo()
    assert code == case.code, f"exit {code}, expected {case.code}\n{err}"
    for name in case.names:
        assert name in out + err, f"{name!r} not named in:\n{err}{out[-2000:]}"
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("fercore: error:")]
    if case.lines is not None:
        assert len(errors) == case.lines, err
        stray = [line for line in err.splitlines() if line and not line.startswith("fercore: ")]
        assert not stray, f"stderr lines that are not fercore's one-line messages: {stray}"
    after = snapshot(scratch)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                     and not (case.may_change and (k == case.may_change or k.startswith(case.may_change + os.sep))))
    assert not changed, f"outside the run directory, these changed: {changed}"
    assert not list(scratch.rglob("*.tmp")), "a temporary file was left behind"
    if os.path.isdir(scratch / "ro"):
        os.chmod(scratch / "ro", 0o755)


def test_the_bad_input_cases_cover_every_family():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


def test_no_traceback_through_a_real_process(world, tmp_path):
    """Three cases through `python -m fercore`, started together (each spends its time importing
    torch): what a user's terminal shows."""
    clone = clone_run(world, tmp_path)
    damage(clone / "checkpoint.pt", (world.run / "checkpoint.pt").read_bytes()[:5000])
    png_header(tmp_path / "bomb.png", 20000, 20000)
    import fercore

    source = str(Path(fercore.__file__).resolve().parents[1])  # the fercore under test, wherever it is installed
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))}
    env.pop("FERCORE_TRACEBACK", None)
    cases = ((["train", "--profile", "smoke", "model.backbone=resnet_nope", f"out_dir={tmp_path}/r"],
              "model.backbone"),
             (["eval", str(clone)], "checkpoint.pt"),
             (["predict", str(world.run), str(tmp_path / "bomb.png")], "bomb.png"))
    procs = [subprocess.Popen([sys.executable, "-m", "fercore", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path) for argv, _ in cases]
    try:
        for p, (_, name) in zip(procs, cases):
            out, err = p.communicate(timeout=300)
            assert p.returncode == 2, err
            assert "Traceback" not in err + out
            assert err.startswith("fercore: error:") and err.count("\n") == 1 and name in err, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not (tmp_path / "r").exists()


# --- what is accepted, and what happens instead of a silent wrong answer ---------------------------

def test_conventional_input_is_accepted(tmp_path):
    cfg = build_config("smoke", overrides=["optim.lr=1e-3", "optim.weight_decay=5E-4"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 5e-4
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n")   # PyYAML reads 1e-3 as a string
    assert build_config("smoke", f).optim.lr == 1e-3
    args = parse_args(["train", "train.epochs=1", "--profile", "smoke", "seed=2", "--resume", "name=x"])
    assert args.profile == "smoke" and args.if_exists == "resume"
    assert args.overrides == ["train.epochs=1", "seed=2", "name=x"]


def test_a_failed_start_does_not_block_the_fix(tmp_path, capsys):
    """A folder left by a start that stopped before its first epoch (marker, config.json, env.json of
    another config) is replaced by the corrected command, without a flag; so with --resume."""
    for flag in ((), ("--resume",)):
        d = tmp_path / "runs" / "x"
        d.mkdir(parents=True, exist_ok=True)
        (d / ".fercore-run").write_text("written by fercore\n")
        (d / "config.json").write_text(json.dumps({"profile": "smoke", "train": {"epochs": 0}}))
        (d / "env.json").write_text("{}")
        assert run_cli([*TRAIN, f"out_dir={tmp_path / 'runs'}", "name=x", *flag]) == 0, capsys.readouterr().err
        assert (d / "summary.json").is_file() and json.loads((d / "config.json").read_text())["train"]["epochs"] == 1
        shutil.rmtree(d)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == []  # no lock file left beside the runs


def test_overwrite_keeps_what_fercore_did_not_write(world, tmp_path, capsys):
    rd = clone_run(world, tmp_path / "runs")
    (rd / "notes.txt").write_text("mine\n")
    assert run_cli([*TRAIN, f"out_dir={tmp_path / 'runs'}", "name=run", "--overwrite"]) == 0
    assert "kept notes.txt" in capsys.readouterr().err
    assert (rd / "notes.txt").read_text() == "mine\n" and (rd / "summary.json").is_file()


def test_disk_full_mid_run_then_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    two = [*TRAIN, "train.epochs=2"]
    assert run_cli([*two, f"out_dir={tmp_path / 'ref'}", "name=r"]) == 0
    real, calls = torch.save, []

    def save(obj, f, *a, **k):  # the second epoch's checkpoint meets a full disk halfway
        calls.append(".checkpoint.pt." in str(f))
        if sum(calls) == 2 and calls[-1]:
            Path(f).write_bytes(b"\0" * 10_000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    capsys.readouterr()
    assert run_cli([*two, f"out_dir={tmp_path / 'runs'}", "name=r"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt: cannot be written (No space left on device" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()  # space is back
    assert run_cli([*two, f"out_dir={tmp_path / 'runs'}", "name=r", "--resume"]) == 0
    ref, got = (json.loads((tmp_path / d / "r" / "summary.json").read_text()) for d in ("ref", "runs"))
    assert got["last"]["test_acc"] == ref["last"]["test_acc"] and got["last"]["train_loss"] == ref["last"]["train_loss"]
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.lock"))


def test_image_modes_convert_correctly_or_are_refused(tmp_path):
    from fercore.data.readers.decode import decode
    from fercore.errors import DataError

    grey = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)  # 16-bit, up to 65520
    png16(tmp_path / "g16.png", grey)
    img, wh = decode(tmp_path / "g16.png", 64)
    assert wh == (64, 64) and torch.equal(img[0], torch.from_numpy(np.round(grey / 257).astype(np.uint8)))
    assert (img == 255).float().mean() < 0.01                     # not saturated (it was 97.6 %)
    rgb16 = np.zeros((16, 16, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 10280
    png16(tmp_path / "rgb16.png", rgb16)
    assert decode(tmp_path / "rgb16.png", 16)[0][:, 0, 0].tolist() == [255, 128, 40]
    Image.new("RGBA", (16, 16), (10, 200, 10, 0)).save(tmp_path / "clear.png")   # fully transparent
    assert decode(tmp_path / "clear.png", 16)[0][:, 0, 0].tolist() == [255, 255, 255]
    Image.new("LA", (16, 16), (0, 128)).save(tmp_path / "la.png")                 # half-transparent black
    assert decode(tmp_path / "la.png", 16)[0][:, 0, 0].tolist() == [127, 127, 127]
    Image.new("CMYK", (16, 16), (0, 100, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert decode(tmp_path / "cmyk.jpg", 16)[0][:, 0, 0].tolist() == pytest.approx([255, 155, 255], abs=2)
    pal = Image.new("P", (16, 16))
    pal.putpalette([10, 20, 30] * 256)
    pal.save(tmp_path / "pal.png")
    assert decode(tmp_path / "pal.png", 16)[0][:, 0, 0].tolist() == [10, 20, 30]
    Image.new("L", (16, 16), 77).save(tmp_path / "grey.png")
    assert decode(tmp_path / "grey.png", 16)[0][:, 0, 0].tolist() == [77, 77, 77]
    Image.new("1", (16, 16), 1).save(tmp_path / "bw.png")
    assert decode(tmp_path / "bw.png", 16)[0][:, 0, 0].tolist() == [255, 255, 255]
    Image.new("RGB", (7, 40)).save(tmp_path / "thin.png")
    with pytest.raises(DataError, match="thin.png: image is 7x40 pixels; fercore needs at least 8"):
        decode(tmp_path / "thin.png", 16)
    with pytest.raises(DataError, match="face box crop is 4x4"):
        decode(tmp_path / "grey.png", 16, box=(0, 0, 4, 4))


def test_damaged_cache_entries_are_rebuilt_and_said(tmp_path, monkeypatch, synth_small):
    from fercore.data.datasets import load_dataset
    from fercore.files import cache_dir

    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    fx.write_rafdb(tmp_path / "raf", synth_small[0].subset(range(24)), synth_small[1].subset(range(12)))
    for dataset in ("synthfer", "rafdb"):
        cfg = build_config("smoke", overrides=[f"data.dataset={dataset}", f"data.data_root={tmp_path / 'raf'}"
                                               if dataset == "rafdb" else "data.data_root=", "data.n_train=24",
                                               "data.n_test=12", "data.image_size=32"]).data
        train, test = load_dataset(cfg)
        entries = sorted(cache_dir().glob("synthfer-*.pt" if dataset == "synthfer" else "decoded-*.pt"))
        assert len(entries) == 2
        damage(entries[0], entries[0].read_bytes()[:1000])        # truncated
        damage(entries[1], b"")                                     # emptied
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = load_dataset(cfg)
        said = [str(w.message) for w in caught if issubclass(w.category, Notice)]
        assert len(said) == 2 and all("cache entry does not read back" in m for m in said), said
        assert torch.equal(again[0].images, train.images) and torch.equal(again[1].images, test.images)
        assert all(e.stat().st_size > 1000 for e in entries)       # rewritten, whole
    assert not list(cache_dir().glob("*.tmp"))


def test_n_train_beyond_the_split_is_said_not_silent(world):
    from fercore.data.datasets import load_dataset

    cfg = build_config("smoke", overrides=["data.dataset=rafdb", f"data.data_root={world.raf}", "data.n_train=500",
                                           "data.n_test=0", "data.image_size=32"]).data
    with pytest.warns(Notice, match="data.n_train=500 asks for more than the 24 images of the train split"):
        train, _ = load_dataset(cfg)
    assert len(train) == 24


def test_a_table_says_which_runs_did_not_finish(world, tmp_path):
    from fercore.tables import run_table

    unfinished = clone_run(world, tmp_path)
    (unfinished / "summary.json").unlink()
    with pytest.warns(Notice, match="1 run\\(s\\) did not finish"):
        df = run_table([world.run, unfinished])
    assert len(df) == 1 and df.attrs["unfinished"] == [f"{unfinished} (all 1 epochs trained, interrupted before "
                                                       f"its summary)"]


def test_predict_writes_the_readable_photos_and_lists_the_damaged_one(world, tmp_path, capsys):
    """Issue 21, case 6: predicting a folder is the normal use; one damaged photo costs only its own row."""
    import pandas as pd

    photo_folder("b.png")(tmp_path, world, None)
    assert run_cli(["predict", world.run, tmp_path / "dir", "--out", tmp_path / "p.csv"]) == 1
    err = capsys.readouterr().err
    assert err.count("fercore: notice: not predicted:") == 1 and "b.png" in err
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert [Path(f).name for f in table["file"]] == ["a.png", "b.png", "c.png"]  # the files' order
    assert (table["error"] == "").tolist() == [True, False, True] and "cannot decode" in table["error"][1]
    assert table["expression"][0] != "" and table["expression"][1] == ""
    assert table.loc[0, "expression"] == table.loc[2, "expression"]  # the same photo twice, the same answer
    p = table.filter(like="p_")
    assert abs(float(p.iloc[0].astype(float).sum()) - 1) < 1e-4 and (p.iloc[1] == "").all()
