"""Sentences in the notebooks and docs that state a profile's size, map size, epoch count, learning rate
or seed count say what `PROFILES` (and the grids, the pretraining presets) hold. Each claim is found by
its wording and its numbers are compared with the config; a claim whose wording changed is reported
too, so a rewrite cannot drop it silently. (A number a run measured is formatted from the run by the
notebook itself, or checked against the committed tables: test_notebook_helpers.)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fercore.config import build_config

ROOT = Path(__file__).resolve().parents[1]


def text(rel: str) -> str:
    """A Markdown file, or a notebook's markdown cells, as one string with single spaces."""
    path = ROOT / rel
    if path.suffix == ".ipynb":
        raw = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                        if c["cell_type"] == "markdown")
    else:
        raw = path.read_text()
    return re.sub(r"\s+", " ", raw)


def cfg(profile: str, method: str = "ce"):
    return build_config(profile, overrides=[f"method={method}"])


def num(s: str) -> float:
    return float(s.replace(",", ""))


def pretrain(preset: str) -> dict:
    from fercore.pretrain import PRESETS

    p = PRESETS[preset]
    return p if isinstance(p, dict) else vars(p)


def noise_seeds() -> tuple[int, int]:
    """(seeds at 30 % symmetric, seeds elsewhere) of the quick profile's noise sweep."""
    import dataclasses

    from fercore.sweep import GRIDS, Grid

    grid = dataclasses.replace(Grid.from_yaml(GRIDS / "noise_sweep.yaml"), profile="quick")
    return len(grid.seeds_for("sym:0.3")), len(grid.resolved("seeds"))


# (file, wording with the numbers as groups, the values the groups must equal)
CLAIMS = [
    ("README.md", r"SynthFER ([\d,]+) train / ([\d,]+) test at (\d+) px, `fercore_resnet10t_os8` from a 1-epoch",
     lambda: (cfg("smoke").data.n_train, cfg("smoke").data.n_test, cfg("smoke").data.image_size)),
    ("README.md", r"`pretrain:au32-smoke`\), (\d+) epochs, POI's PIN cut at stride (\d+) \((\d+)x\d+ map\)",
     lambda: (cfg("smoke").train.epochs, cfg("smoke", "poi").params.stride,
              cfg("smoke").data.image_size // cfg("smoke", "poi").params.stride)),
    ("README.md", r"SynthFER ([\d,]+) train / ([\d,]+) test at (\d+) px, `fercore_resnet10t_os8` \(resnet10t",
     lambda: (cfg("quick").data.n_train, cfg("quick").data.n_test, cfg("quick").data.image_size)),
    ("README.md", r"\(`pretrain:au32`\), (\d+) epochs, batch (\d+), Adam (\S+) decayed x([\d.]+) per epoch",
     lambda: (cfg("quick").train.epochs, cfg("quick").train.batch_size, cfg("quick").optim.lr,
              cfg("quick").optim.gamma)),
    ("README.md", r"a seeded subset of ([\d,]+) training faces .{0,120}? at (\d+) px, the quick profile's backbone and "
                  r"AU-pretrained start, (\d+) epochs, batch (\d+), Adam (\S+) under a cosine",
     lambda: (cfg("real").data.n_train, cfg("real").data.image_size, cfg("real").train.epochs,
              cfg("real").train.batch_size, cfg("real").optim.lr)),
    ("README.md", r"\| (\d+) px, (\d+) epochs, batch (\d+), Adam (\S+) backbone / (\S+) heads",
     lambda: (cfg("paper").data.image_size, cfg("paper").train.epochs, cfg("paper").train.batch_size,
              cfg("paper").optim.lr, cfg("paper").optim.head_lr)),
    ("docs/architecture.md", r"The quick profile on a real dataset trains on ([\d,]+) faces at (\d+) px",
     lambda: (cfg("quick").data.n_train, cfg("quick").data.image_size)),
    ("docs/architecture.md", r"The real profile trains on a seeded subset of ([\d,]+) faces",
     lambda: (cfg("real").data.n_train,)),
    ("docs/notebooks.md", r"subset of ([\d,]+) training faces at (\d+) px and a test curve flat",
     lambda: (cfg("real").data.n_train, cfg("real").data.image_size)),
    ("docs/baselines.md", r"`quick` profile (\S+), `paper` profile (\S+) / (\S+) \(RUL's\)",
     lambda: (cfg("quick").optim.lr, cfg("paper").optim.lr, cfg("paper").optim.head_lr)),
    ("docs/baselines.md", r"the `quick` profile sets (\d+), `smoke` (\d+)",
     lambda: (cfg("quick", "scn").params.relabel_epoch, cfg("smoke", "scn").params.relabel_epoch)),
    ("docs/mtac.md", r"The `quick` profile sets epoch (\d+), the `smoke` profile epoch (\d+)",
     lambda: (cfg("quick", "mtac").params.relabel_start, cfg("smoke", "mtac").params.relabel_start)),
    ("docs/poi.md", r"at the smoke and quick profiles' (\d+) px a stride-(\d+) map would be (\d+)x",
     lambda: (cfg("quick").data.image_size, 8, cfg("quick").data.image_size // 8)),
    ("notebooks/02_mtac.ipynb", r"fine-tunes fercore's AU-pretrained backbone for (\d+) epochs",
     lambda: (cfg("quick").train.epochs,)),
    ("notebooks/02_mtac.ipynb", r"relabelling starts at epoch (\d+), SCN's quick start too",
     lambda: (cfg("quick", "mtac").params.relabel_start,)),
    ("notebooks/02_mtac.ipynb", r"profile: epoch (\d+) of (\d+), so the code path runs",
     lambda: (cfg("smoke", "mtac").params.relabel_start, cfg("smoke").train.epochs)),
    ("notebooks/03_poi.ipynb",
     r"smoke and quick profiles, whose (\d+) px faces would leave a (\d+)x\d+ map at stride (\d+)",
     lambda: (cfg("quick").data.image_size, cfg("quick").data.image_size // 8, 8)),
    ("notebooks/08_weak_supervision.ipynb", r"in the smoke profile \((\d+) epochs\)",
     lambda: (cfg("smoke").train.epochs,)),
    ("notebooks/00_quickstart.ipynb", r"a ResNet trained on ([\d,]+) faces of a \*disjoint\* SynthFER",
     lambda: (pretrain("au32")["n_train"],)),
    ("notebooks/05_noise_sweep.ipynb", r"over (\d+) seeds at 30 % symmetric .{0,80}? and (\d+) seeds elsewhere",
     noise_seeds),
]


def test_the_smoke_and_quick_profiles_share_the_sizes_the_prose_names_once():
    """Claims that name both profiles at once hold only while they agree."""
    assert cfg("smoke").data.image_size == cfg("quick").data.image_size


@pytest.mark.parametrize("claim", CLAIMS, ids=[f"{c[0]}:{c[1][:40]}" for c in CLAIMS])
def test_no_sentence_contradicts_the_profiles(claim):
    rel, wording, expected = claim
    m = re.search(wording, text(rel))
    assert m, f"{rel}: the sentence {wording!r} is gone or reworded: update it here (and keep its numbers true)"
    got = tuple(num(g) for g in m.groups())
    want = tuple(float(v) for v in expected())
    assert got == pytest.approx(want), f"{rel}: {m.group(0)!r} says {got}, the config holds {want}"
