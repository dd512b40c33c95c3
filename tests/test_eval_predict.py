"""`fercore eval` and `fercore predict`: a run directory alone rebuilds its method."""
import json

import pandas as pd
import pytest
from PIL import Image

from fercore.cli import main
from fercore.engine import fit, restore
from fercore.errors import ConfigError


@pytest.fixture(scope="module")
def scn_run(tmp_path_factory):
    from fercore.config import build_config
    out = tmp_path_factory.mktemp("runs")
    cfg = build_config("smoke", overrides=[f"out_dir={out}", "method=scn", "data.n_train=128", "data.n_test=64",
                                           "data.image_size=32", "train.batch_size=32", "train.epochs=1"])
    return fit(cfg)


def test_eval_reproduces_the_runs_last_epoch(scn_run, tmp_path, capsys):
    assert main(["eval", str(scn_run.path), "--out", str(tmp_path / "eval.json")]) == 0
    line = capsys.readouterr().out
    last = scn_run.summary["last"]
    assert f"test acc {last['test_acc']:.4f}, mean class acc {last['test_mean_class_acc']:.4f}" in line
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["confusion"] == last["test_confusion"] and report["n_test"] == 64


def test_predict_folder_matches_the_runs_predictions(scn_run, tmp_path, capsys):
    from fercore.data.datasets import load_dataset
    cfg, _ = restore(scn_run.path)
    _, test = load_dataset(cfg.data)
    pred = scn_run.diagnostics()["test_pred@1"]
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(folder / f"face{i}.png")
    assert main(["predict", str(scn_run.path), str(folder), "--out", str(tmp_path / "p.csv")]) == 0
    assert "expression" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["file"].tolist() == [str(folder / f"face{i}.png") for i in range(5)]
    assert table["expression"].tolist() == [test.classes[k] for k in pred[:5]]
    probs = table[[f"p_{c}" for c in test.classes]]
    assert probs.sum(axis=1).round(5).eq(1).all()
    assert table["importance"].between(0, 1).all()                       # SCN's per-image estimate


def test_restore_and_predict_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="is not a run directory"):
        restore(tmp_path)
    assert main(["predict", str(tmp_path), str(tmp_path / "missing.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
