"""The suite's plan (`python -m fercore plan`): every notebook's runs, each trained once (by the first
notebook that asks for it), which are finished, and the estimated cost of the rest."""
import json

import pytest

from fercore import suite
from fercore.cli import main
from fercore.sweep import train


def names(p: suite.Plan, notebook: str) -> set[str]:
    return {r.run_dir.name for r in p.runs if r.notebook == notebook}


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_each_run_is_trained_once_by_the_first_notebook_that_asks(profile):
    p = suite.plan(profile)
    distinct = [r for r in p.runs if r.status != "shared"]
    assert len({r.run_dir.name for r in distinct}) == len(distinct)
    first = {r.run_dir.name: r.notebook for r in distinct}
    for r in p.runs:
        if r.status == "shared":
            assert first[r.run_dir.name] == r.by and suite.SUITE.index(r.by) < suite.SUITE.index(r.notebook)
    # the sharing the notebooks promise: 04's runs are 05's column at sym:0.3, 07's methods are 04's runs,
    # the ablations of 02 and 03 are cells of 06 (smoke runs three of 06's variants), and 06's full methods
    # are the noise sweep's cells
    assert names(p, "04_comparison") <= names(p, "05_noise_sweep")
    methods07 = {r.run_dir.name for r in p.runs if r.notebook == "07_uncertainty" and r.grid == "uncertainty"}
    assert methods07 <= names(p, "04_comparison")
    ablated = {r.run_dir.name for r in p.runs if r.notebook in ("02_mtac", "03_poi") and "=" in r.cell}
    assert len(ablated & names(p, "06_ablations")) == (3 if profile == "quick" else 2)
    assert {r.run_dir.name for r in p.runs if r.notebook == "06_ablations" and r.cell.endswith("/default")} \
        <= names(p, "05_noise_sweep")
    assert not names(p, "01_data_and_noise")
    text = suite.plan_text(p, workers=2)
    print(text)
    assert f"suite: {len(distinct)} distinct runs" in text


def test_the_notebooks_build_their_grids_from_the_suite_and_check_the_plan():
    """Notebooks 04-08 get their grids from fercore.suite; 00, 02 and 03 call sweep.train as the suite
    describes; every notebook that trains ends by checking that the runs it used are the plan's
    (`suite.check_plan`, run under nbval in the smoke profile)."""
    for nb in suite.SUITE:
        source = "".join("".join(c["source"]) for c in json.loads(
            (suite.NOTEBOOKS / f"{nb}.ipynb").read_text())["cells"])
        trains = nb != "01_data_and_noise"
        assert ("suite.check_plan(nb, " in source) == trains, nb
        if nb >= "04":
            assert "Grid(" not in source and "Grid.from_yaml" not in source, nb


def test_check_plan_names_the_runs_it_did_not_expect(tmp_path):
    from fercore.notebook import Notebook

    params = {**suite.defaults("02_mtac"), "PROFILE": "smoke"}
    nb = Notebook("02_mtac", params)
    planned = [r.run_dir for r in suite.plan("smoke", ("02_mtac",), params).runs]
    suite.check_plan(nb, planned)
    with pytest.raises(AssertionError, match="runs used but not in the plan \\['elsewhere'\\]"):
        suite.check_plan(nb, [*planned, tmp_path / "elsewhere"])
    with pytest.raises(AssertionError, match="planned but not used"):
        suite.check_plan(nb, planned[1:])


def test_the_estimate_counts_only_what_is_left_from_measured_seconds_per_epoch(tmp_path):
    out = tmp_path / "runs"
    params = {"OUT_DIR": str(out)}
    before = suite.plan("smoke", ("00_quickstart",), params)
    assert [r.status for r in before.runs] == ["to train"] * 3
    table = suite.load_yaml(suite.COSTS)["quick"]["seconds_per_epoch"]
    per_epoch, source = suite.epoch_seconds(out, "quick")
    assert per_epoch == table and "costs.yaml" in source
    # train notebook 00's clean ce run: the plan finds it finished and prices ce by its measured time
    overrides = [f"{k}={v}" for k, v in {"data.dataset": "synthfer", "data.data_root": "", "device": "cpu",
                                        "out_dir": out, "seed": 0, "method": "ce", "data.noise": "none"}.items()]
    rd = train("smoke", overrides)
    after = suite.plan("smoke", ("00_quickstart",), params | {"DEVICE": "cpu"})
    status = {r.cell: r.status for r in after.runs}
    assert status == {"ce/none/s0/default": "finished", "ce/sym:0.3/s0/default": "to train",
                      "ce/sym:0.3/s0/random-init": "to train"}
    measured = rd.summary["wall_time_s"] / rd.summary["epochs"]
    left = [r for r in after.runs if r.status == "to train"]
    assert all(r.seconds == pytest.approx(measured * 2) for r in left)  # smoke: 2 epochs
    assert "this checkout's finished runs (ce)" in after.cost_source
    text = suite.plan_text(after, workers=2)
    assert "00_quickstart: 3 runs: 2 to train or resume" in text and "1 finished" in text, text


def test_plan_command(capsys):
    assert main(["plan", "--profile", "quick", "--notebook", "05"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("05_noise_sweep: 66 runs") and "suite: 66 distinct runs" in out, out


def test_the_readme_states_the_plan_it_prints(tmp_path):
    """The README's sentence on the quick plan is the plan's own numbers on a checkout without runs."""
    import re

    readme = (suite.NOTEBOOKS.parent / "README.md").read_text()
    m = re.search(r"for the quick profile, (\d+) distinct\s+runs and about (\d+) min of training on 2 workers", readme)
    assert m, "README: the sentence on the quick plan is missing"
    p = suite.plan("quick", params={"OUT_DIR": str(tmp_path)})
    distinct = [r for r in p.runs if r.status != "shared"]
    total = sum(r.seconds for r in distinct)
    assert (int(m[1]), int(m[2])) == (len(distinct), round(total / 2 / 60)), suite.plan_text(p)


def test_prose_on_the_relabel_start_matches_the_profiles():
    """Notebook 02 and docs/mtac.md state the quick and smoke profiles' relabel start and epochs."""
    import re

    from fercore.config import build_config

    quick, smoke = (build_config(p, overrides=["method=mtac"]) for p in ("quick", "smoke"))
    nb = "".join("".join(c["source"]) for c in json.loads((suite.NOTEBOOKS / "02_mtac.ipynb").read_text())["cells"])
    m = re.search(r"backbone for (\d+) epochs.*?relabelling starts at epoch (\d+).*?epoch (\d+) of (\d+)", nb, re.S)
    assert m and tuple(map(int, m.groups())) == (quick.train.epochs, quick.params.relabel_start,
                                                 smoke.params.relabel_start, smoke.train.epochs), m and m.groups()
    # "SCN's quick start too"
    assert quick.params.relabel_start == build_config("quick", overrides=["method=scn"]).params.relabel_epoch
    doc = (suite.NOTEBOOKS.parent / "docs" / "mtac.md").read_text()
    assert f"profiles: `quick` {quick.params.relabel_start:g}, `smoke` {smoke.params.relabel_start:g} |" in doc
    q, s = quick.params.relabel_start, smoke.params.relabel_start
    assert f"profile sets epoch {q:g}, the `smoke` profile epoch {s:g}" in " ".join(doc.split())


def test_prose_on_the_real_profile_matches_the_profile():
    """The README's profile table, docs/notebooks.md and docs/architecture.md state the real profile's
    faces, size, epochs, moving average and evaluation cadence as `PROFILES` sets them."""
    from fercore.config import build_config

    real = build_config("real")
    root = suite.NOTEBOOKS.parent
    row = next(line for line in (root / "README.md").read_text().splitlines() if line.startswith("| `real` |"))
    for said in (f"{real.data.n_train:,} training faces", f"at {real.data.image_size} px",
                 f"{real.train.epochs} epochs", f"batch {real.train.batch_size}",
                 f"Adam {real.optim.lr:.0e}".replace("e-0", "e-"), f"`train.ema={real.train.ema:g}`",
                 f"every {real.train.eval_every}nd epoch", f"each of the last {real.train.eval_last}"):
        assert said in row, said
    assert real.data.n_test == 0 and "the whole test split" in row
    notebooks = " ".join((root / "docs" / "notebooks.md").read_text().split())
    assert f"{real.data.n_train:,} training faces at {real.data.image_size} px" in notebooks
    arch = " ".join((root / "docs" / "architecture.md").read_text().split())
    assert (f"seeded subset of {real.data.n_train:,} faces (`data.n_train`;" in arch
            and f"at {real.data.image_size} px, for {real.train.epochs} epochs under a cosine schedule" in arch)


def test_the_readme_states_the_real_plan_it_prints(tmp_path):
    """The README's sentence on notebook 04's plan on FERPlus (real profile, one vote per face) is the plan's
    own numbers, and its clean reference is 3 ce runs at the plan's price."""
    import re

    readme = " ".join((suite.NOTEBOOKS.parent / "README.md").read_text().split())
    m = re.search(r"--notebook 04` prints (\d+) distinct runs and about (\d+) min of training on 2 workers.*?"
                  r"the clean reference notebook 04 trains on real label noise\) are about (\d+) min", readme)
    assert m, "README: the sentence on the real plan is missing"
    params = {"OUT_DIR": str(tmp_path), "DATASET": "ferplus", "DATA_ROOT": str(tmp_path), "LABEL_SOURCE": "one_vote",
              "NOISE": "none"}
    p = suite.plan("real", ("04_comparison",), params)
    total = sum(r.seconds for r in p.runs)
    clean = [r for r in p.runs if r.grid == "clean_reference"]
    assert len(clean) == 3 and {r.method for r in clean} == {"ce"}
    assert (int(m[1]), int(m[2]), int(m[3])) == (len(p.runs), round(total / 2 / 60),
                                                 round(sum(r.seconds for r in clean) / 2 / 60))


@pytest.mark.parametrize("source", ["", "ferplus", "fer2013", "one_vote"])
def test_notebook_04_trains_a_clean_reference_only_on_real_label_noise(tmp_path, source):
    """On FERPlus's one_vote or fer2013 labels notebook 04 adds ce on the majority labels over the same seeds
    (the clean reference); on the majority labels themselves, or without a label source, it adds nothing."""
    params = {"OUT_DIR": str(tmp_path), "DATASET": "ferplus", "DATA_ROOT": str(tmp_path), "LABEL_SOURCE": source,
              "NOISE": "none" if source in suite.REAL_NOISE else "sym:0.3"}
    grids = suite.notebook_grids("04_comparison", "real", params)
    assert [g.name for g in grids] == ["comparison"] + (["clean_reference"] if source in suite.REAL_NOISE else [])
    if len(grids) == 2:
        seeds = grids[0].resolved("seeds")
        cells = grids[1].cells()
        assert [c.seed for c in cells] == seeds and {c.method for c in cells} == {"ce"}
        for c in cells:
            cfg = c.config()
            assert cfg.data.label_source == "ferplus" and cfg.data.noise == "none"
        trained = {c.config().data.label_source for c in grids[0].cells()}
        assert trained == {source}
