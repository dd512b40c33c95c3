"""The sweep runner: cells named by their config, reuse, failures recorded, interrupted sweeps resumed,
the submitit backend; and the tables made from its runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fercore import tables
from fercore.errors import ConfigError
from fercore.rundir import RunDir
from fercore.sweep import GRIDS, Grid, cell_run_dir, plan, plan_text, run

TINY = {"data": {"n_train": 96, "n_test": 48, "image_size": 32}, "model": {"backbone": "resnet10t"},
        "train": {"epochs": 2, "batch_size": 32}}


def grid(tmp_path, **kw) -> Grid:
    base = {**TINY, "out_dir": str(tmp_path / "runs")}
    return Grid(**{"profile": "smoke", "methods": ["ce", "scn"], "noise": ["sym:0.3"], "seeds": [0, 1],
                   "base": base, "name": "t", **kw})


def test_cells_are_named_by_their_whole_config(tmp_path):
    g = grid(tmp_path, variants={"default": {}, "lr": {"optim.lr": 3e-4}, "scn-low": {"scn.relabel_group": "low"}})
    cells = g.cells()
    # a variant that sets scn.* runs for scn only: 2 methods x 2 seeds x 2 + 1 method x 2 seeds
    assert len(cells) == 10 and sum(c.variant == "scn-low" for c in cells) == 2
    names = {cell_run_dir(c).path.name for c in cells}
    assert len(names) == len(cells)                                     # no two variants share a directory
    assert all(n.startswith(("synthfer-ce-sym0.3-s", "synthfer-scn-sym0.3-s")) for n in names)
    variants = {"default": {}, "lr": {"optim.lr": 3e-4}, "scn-low": {"scn.relabel_group": "low"}}
    again = {cell_run_dir(c).path.name for c in grid(tmp_path, variants=variants).cells()}
    assert again == names                                               # deterministic


def test_bad_grids_report_every_problem(tmp_path):
    with pytest.raises(ConfigError) as e:
        grid(tmp_path, methods=["ce", "dmue"]).cells()
    assert "dmue" in str(e.value)
    with pytest.raises(ConfigError) as e:
        grid(tmp_path, variants={"a": {"train.epochs": 0}, "b": {"optim.lr": -1}}).cells()
    text = str(e.value)
    assert "train.epochs" in text and "optim.lr" in text and len(text.splitlines()) == 8  # every cell, one line each
    f = tmp_path / "g.yaml"
    f.write_text("profile: smoke\nmethodz: [ce]\n")
    with pytest.raises(ConfigError, match="unknown grid key"):
        Grid.from_yaml(f)


def test_fercores_own_grids_resolve_per_profile():
    for name in ("noise_sweep", "ablations"):
        g = Grid.from_yaml(name)
        assert (GRIDS / f"{name}.yaml").is_file()
        for profile in ("smoke", "quick", "paper"):
            g.profile = profile
            assert g.cells()
    g = Grid.from_yaml("noise_sweep")
    g.profile = "quick"
    assert g.resolved("noise") == ["none", "sym:0.3", "asym:0.3"]
    # the headline setting over 5 seeds, the others over 3: 6 methods x (3 + 5 + 3)
    assert len(g.cells()) == 66 and sorted({c.seed for c in g.cells() if c.noise == "sym:0.3"}) == [0, 1, 2, 3, 4]
    g.profile = "smoke"
    assert {(c.noise, c.seed) for c in g.cells()} == {("sym:0.3", 0)}


def test_seeds_at_gives_a_setting_its_own_seeds(tmp_path):
    g = grid(tmp_path, noise=["none", "sym:0.3"], seeds_at={"sym:0.3": [0, 1, 2]})
    cells = g.cells()
    per = {(m, n): sorted(c.seed for c in cells if (c.method, c.noise) == (m, n))
           for m in ("ce", "scn") for n in ("none", "sym:0.3")}
    assert per[("ce", "none")] == [0, 1] and per[("scn", "sym:0.3")] == [0, 1, 2]
    # per profile, like the other keys
    g = grid(tmp_path, seeds_at={"smoke": {}, "default": {"sym:0.3": [0, 1, 2]}})
    assert len(g.cells()) == 4
    with pytest.raises(ConfigError) as e:
        grid(tmp_path, seeds_at={"sym:0.5": [0, 1], "sym:0.3": [0, "one"]}).cells()
    assert "'sym:0.5' is not one of the grid's noise settings" in str(e.value) and "seeds_at['sym:0.3']" in str(e.value)


def test_each_seed_draws_its_own_flips_unless_the_draw_is_fixed(tmp_path):
    draws = {c.seed: c.config().data.noise_seed for c in grid(tmp_path).cells()}
    assert draws == {0: 0, 1: 1}
    fixed = grid(tmp_path, noise_draw="fixed", base={**TINY, "data": {**TINY["data"], "noise_seed": 7}})
    assert {c.config().data.noise_seed for c in fixed.cells()} == {7}
    with pytest.raises(ConfigError, match="noise_draw: fixed"):
        grid(tmp_path, base={**TINY, "data": {**TINY["data"], "noise_seed": 7}}).cells()
    with pytest.raises(ConfigError, match="'noise_draw' must be one of"):
        grid(tmp_path, noise_draw="sometimes").cells()
    # the runs of one seed share their flips across methods (the pairing of tables.versus), seeds differ
    from fercore.data.datasets import load_dataset
    labels = {(c.method, c.seed): load_dataset(c.config().data)[0].label for c in grid(tmp_path).cells()}
    assert (labels["ce", 0] == labels["scn", 0]).all() and (labels["ce", 1] == labels["scn", 1]).all()
    assert not (labels["ce", 0] == labels["ce", 1]).all()


def test_sweep_runs_reuses_and_records_failures(tmp_path):
    g = grid(tmp_path, variants={"default": {}, "bad": {"model.backbone": "resnet_does_not_exist"}})
    first = run(g, workers=2, progress=False)
    status = {(r.cell.method, r.cell.seed, r.cell.variant): r.status for r in first.results}
    assert [s for k, s in status.items() if k[2] == "default"] == ["trained"] * 4
    failed = [r for r in first.results if r.cell.variant == "bad"]
    assert len(failed) == 4 and all(r.status == "failed" and "resnet_does_not_exist" in r.error for r in failed)
    summary = json.loads(first.path.read_text())
    assert len(summary["cells"]) == 8 and sum(c["status"] == "failed" for c in summary["cells"]) == 4
    assert "failed" in first.summary() and "resnet_does_not_exist" in first.summary()
    second = run(g, workers=1, progress=False)
    assert [r.status for r in second.results if r.cell.variant == "default"] == ["reused"] * 4
    df = tables.run_table(second.runs())
    assert len(df) == 4 and set(df["variant"]) == {"default"} and df["last_acc"].between(0, 1).all()
    # the plan (sweep --dry-run): finished cells, one seed more to train at the measured cost, refused cells
    rows = {r["cell"]: r for r in plan(grid(tmp_path, seeds=[0, 1, 2], variants=g.variants))}
    assert {c: r["status"] for c, r in rows.items() if "/default" in c} == {
        f"{m}/sym:0.3/s{s}/default": "finished" if s < 2 else "to train" for m in ("ce", "scn") for s in (0, 1, 2)}
    assert all(r["status"] == "refused" and "resnet_does_not_exist" in r["error"] for c, r in rows.items()
               if c.endswith("/bad"))
    for m in ("ce", "scn"):
        took = sorted(json.loads((Path(r.run_dir) / "summary.json").read_text())["wall_time_s"]
                      for r in second.results if r.cell.method == m and r.cell.variant == "default")
        assert rows[f"{m}/sym:0.3/s2/default"]["seconds"] == pytest.approx(sum(took) / 2)  # the median of two
    text = plan_text(list(rows.values()), workers=2)
    assert "12 runs: 4 finished (reused), 2 to train or resume, 6 refused" in text, text


def test_interrupted_sweep_resumes_without_retraining_finished_cells(tmp_path):
    """Kill a sweep process mid-run; the rerun reuses the finished cells and resumes the started one."""
    g = grid(tmp_path, methods=["ce"], seeds=[0, 1, 2], base={**TINY, "train": {**TINY["train"], "epochs": 6},
                                                           "out_dir": str(tmp_path / "runs")})
    f = tmp_path / "g.yaml"
    import yaml
    f.write_text(yaml.safe_dump({k: v for k, v in g.__dict__.items()}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fercore", "sweep", str(f), "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cells = g.cells()
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until the first cell finished and the second has a checkpoint
        if cell_run_dir(cells[0]).finished and cell_run_dir(cells[1]).started:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cell_run_dir(cells[0]).finished and not cell_run_dir(cells[2]).finished
    first_summary = cell_run_dir(cells[0]).file("summary.json").stat().st_mtime_ns
    result = run(g, progress=False)
    got = [r.status for r in result.results]
    assert got[0] == "reused" and got[2] == "trained" and got[1] in ("resumed", "reused")
    assert cell_run_dir(cells[0]).file("summary.json").stat().st_mtime_ns == first_summary
    assert not list(Path(tmp_path / "runs").rglob("*.tmp"))


def test_submitit_backend_runs_the_same_cells(tmp_path):
    pytest.importorskip("submitit")
    g = grid(tmp_path, methods=["ce"], seeds=[0])
    local = run(g, progress=False)
    sub = run(g, backend="submitit", progress=False, submitit_folder=str(tmp_path / "sub"),
              slurm={"timeout_min": 10})
    assert [r.status for r in sub.results] == ["reused"] and sub.results[0].run_dir == local.results[0].run_dir


def test_tables_have_the_papers_shape(tmp_path):
    g = grid(tmp_path, methods=["ce", "scn"], noise=["none", "sym:0.3"], seeds=[0, 1])
    df = tables.run_table(run(g, workers=2, progress=False).runs())
    assert len(df) == 8
    assert df.loc[df["noise"] == "sym:0.3", "small_loss_auroc"].between(0, 1).all()
    assert df.loc[(df["noise"] == "sym:0.3") & (df["method"] == "scn"), "score_auroc"].between(0, 1).all()
    assert (df.loc[df["noise"] == "none", "n_relabelled"] >= 0).all()
    t = tables.paper_table(df, "last_acc", row_order=["ce", "scn"], column_order=["none", "sym:0.3"])
    assert list(t.columns) == ["method", "none", "sym:0.3"] and list(t["method"]) == ["ce", "scn"]
    m = df[(df.method == "ce") & (df.noise == "none")]["last_acc"]
    assert t.iloc[0, 1] == f"{m.mean():.3f} ± {m.std():.3f}"
    v = tables.versus(df)
    assert set(v["verdict"]) <= {"beats", "loses", "within noise"} and len(v) == 2
    assert (v["n_seeds"] == 2).all() and (v["ci_low"] <= v["difference"]).all()
    paths = tables.write_table(t, tmp_path / "tables" / "acc", "Accuracy, last epoch")
    tex = paths[1].read_text()
    assert r"\toprule" in tex and r"$\pm$" in tex and "sym:0.3" in tex
    assert pd.read_csv(paths[2]).shape == (2, 3) and paths[0].read_text().startswith("Accuracy")


def test_published_rows_only_where_they_apply():
    assert tables.published_rows("synthfer", ["none", "sym:0.3"]).empty
    raf = tables.published_rows("rafdb", ["none", "eac10", "eac30"])
    assert len(raf) >= 3 and raf["method"].str.startswith("published: ").all()
    eac = raf[raf["method"].str.contains("EAC, ResNet-50")].iloc[0]
    assert eac["eac30"] == "85.27" and eac["none"] == "90.35"


def test_unfinished_runs_are_listed_not_mixed_in(tmp_path):
    g = grid(tmp_path, methods=["ce"], seeds=[0])
    res = run(g, progress=False)
    rd = res.runs()[0][1]
    rd.file("summary.json").unlink()
    df = tables.run_table([rd])
    assert df.empty and df.attrs["unfinished"] and "interrupted" in df.attrs["unfinished"][0]
    assert np.isnan(np.nan)


def test_a_notebooks_single_run_trains_on_one_thread_as_a_sweep_worker_does(tmp_path):
    """`sweep.train` (notebooks 00, 02, 03) and a sweep worker train the same named run with the same thread
    count, so the run does not depend on which of them trained it first; the caller's threads are restored."""
    import torch

    from fercore.sweep import run_cell, train

    overrides = ["data.n_train=96", "data.n_test=48", "train.epochs=1", "method=ce", "data.noise=sym:0.3", "seed=0"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rd = train("smoke", [*overrides, f"out_dir={tmp_path / 'a'}"])
        assert torch.get_num_threads() == 2 and rd.env["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
    g = Grid(profile="smoke", methods=["ce"], noise=["sym:0.3"], seeds=[0], noise_draw="fixed",
             base={"data.n_train": 96, "data.n_test": 48, "train.epochs": 1, "out_dir": str(tmp_path / "b")})
    other = RunDir(run_cell(g.cells()[0], threads=1).run_dir)
    assert other.path.name == rd.path.name
    assert other.metrics()["train_loss"].tolist() == rd.metrics()["train_loss"].tolist()
    assert other.summary["last"]["test_acc"] == rd.summary["last"]["test_acc"]


def test_worker_notices_are_the_clis_one_line_once(tmp_path, synth_small, capfd):
    """Issue 21, case 7: a notice raised in a worker (or while the data is prepared) is printed as the
    CLI prints it, `fercore: notice: ...`, once, not as a Python warning with its source line echoed;
    each cell's own notices are kept in the sweep's summary JSON."""
    import fixtures as fx

    fx.write_rafdb(tmp_path / "raf", synth_small[0].subset(range(24)), synth_small[1].subset(range(12)))
    base = {**TINY, "data": {**TINY["data"], "dataset": "rafdb", "data_root": str(tmp_path / "raf"), "n_train": 500,
                             "n_test": 0}, "train": {**TINY["train"], "epochs": 1}, "out_dir": str(tmp_path / "runs")}
    g = Grid(profile="smoke", methods=["ce"], noise=["none"], seeds=[0, 1], base=base, name="t")
    result = run(g, workers=2, progress=False)
    assert [r.status for r in result.results] == ["trained", "trained"], result.summary()
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "asks for more than the 24 images" in line]
    assert len(said) == 1 and said[0].startswith("fercore: notice: data.n_train=500"), err
    assert "Notice:" not in err and "notice(f" not in err, err
    cells = json.loads(result.path.read_text())["cells"]
    assert all(any("asks for more than the 24 images" in n for n in c["notices"]) for c in cells), cells


def test_a_notice_reads_as_the_cli_prints_it_wherever_python_shows_it():
    """A notebook (or a worker, or a script) shows a notice as the CLI's one line, not file:line and
    the source line; other warnings keep Python's format."""
    import warnings

    from fercore.errors import Notice

    assert warnings.formatwarning("using all 24", Notice, "assemble.py", 54) == "fercore: notice: using all 24\n"
    assert warnings.formatwarning("odd", UserWarning, "x.py", 3).startswith("x.py:3: UserWarning: odd")
