import json
import math
import threading

import pytest
import torch

from fercore.engine import evaluate, fit
from fercore.errors import NonFiniteLossError
from fercore.methods import METHODS
from fercore.rundir import RunDir
from fercore.tables import summarize


def test_fit_writes_a_complete_run_directory(tiny_config):
    cfg = tiny_config("data.noise=sym:0.3")
    run = fit(cfg)
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "env.json", "metrics.jsonl", "summary.json", "diagnostics.npz", "checkpoint.pt",
            "relabels.json"} <= names
    env = run.env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and "commit" in env["git"]
    assert len(env["data"]["train_fingerprint"]) == 64 and env["data"]["noise"]["spec"] == "sym:0.3"
    m = run.metrics()
    assert list(m["epoch"]) == [1, 2] and m["test_acc"].between(0, 1).all()
    assert m["labels_clean_frac"].iloc[-1] == pytest.approx(1 - env["data"]["noise"]["rate_realised"])
    s = run.summary
    assert s["headline"] == "last" and s["last"]["epoch"] == 2 and s["best"]["test_acc"] >= s["last"]["test_acc"]
    d = run.diagnostics()
    assert {"label_given", "clean_label", "true_label", "label@1", "label@2", "test_pred@2"} <= set(d)
    assert json.loads((run.path / "config.json").read_text())["data"]["noise"] == "sym:0.3"


def test_existing_run_directory_is_not_clobbered(tiny_config):
    cfg = tiny_config("train.epochs=1")
    fit(cfg)
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit(cfg)
    first = fit(cfg, if_exists="overwrite")
    stamp = (first.path / "summary.json").stat().st_mtime_ns
    assert fit(cfg, if_exists="reuse").path == first.path
    assert (first.path / "summary.json").stat().st_mtime_ns == stamp          # reused, not retrained
    (first.path / "summary.json").unlink()                                   # as if it had been interrupted
    fit(cfg, if_exists="reuse")
    assert (first.path / "summary.json").exists()                            # unfinished: trained again


def test_a_run_in_use_is_waited_for_then_reused(tiny_config, capsys):
    """The waiting line is a notice (stderr on the CLI), not a print on stdout (issue 21, case 9)."""
    import warnings

    from fercore.errors import Notice

    cfg = tiny_config("train.epochs=1")
    first = fit(cfg)
    stamp = (first.path / "summary.json").stat().st_mtime_ns
    got = {}
    with RunDir(first.path).lock(), warnings.catch_warnings(record=True) as caught:  # another writer holds the run
        warnings.simplefilter("always", Notice)
        t = threading.Thread(target=lambda: got.setdefault("run", fit(cfg, if_exists="reuse")))
        t.start()
        t.join(timeout=3)
        assert t.is_alive() and "in use by process" not in capsys.readouterr().out
        assert any(issubclass(w.category, Notice) and "in use by process" in str(w.message) for w in caught)
    t.join(timeout=120)
    assert got["run"].path == first.path and (first.path / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_reproduces_the_uninterrupted_run(tiny_config, ema):
    """Also with `train.ema`: the moving average is checkpointed and continues where it stopped."""
    tiny = tiny_config
    tiny_config = lambda *o: tiny(*o, f"train.ema={ema}")  # noqa: E731
    full = fit(tiny_config("train.epochs=3", "name=full"))
    fit(tiny_config("train.epochs=1", "name=part"))
    # the interrupted run's config said 1 epoch; continue it to 3 under the same name
    cfgpath = full.path.parent / "part" / "config.json"
    conf = json.loads(cfgpath.read_text())
    conf["train"]["epochs"] = 3
    cfgpath.write_text(json.dumps(conf))
    resumed = fit(tiny_config("train.epochs=3", "name=part"), if_exists="resume")
    a, b = full.metrics(), resumed.metrics()
    assert list(b["epoch"]) == [1, 2, 3]
    for col in ("train_loss", "test_acc", "train_acc"):
        assert a[col].tolist() == b[col].tolist(), col
    assert full.diagnostics()["test_pred@3"].tolist() == resumed.diagnostics()["test_pred@3"].tolist()


@pytest.mark.parametrize("if_exists", ["resume", "reuse"])
def test_resume_and_reuse_refuse_another_config_and_keep_its_run(tiny_config, if_exists):
    from fercore.errors import ConfigError
    first = fit(tiny_config("train.epochs=1", "name=r"))
    stamp = (first.path / "summary.json").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"another config \(it differs in optim.lr\); give this run its own name="):
        fit(tiny_config("train.epochs=1", "name=r", "optim.lr=0.5"), if_exists=if_exists)
    assert (first.path / "summary.json").stat().st_mtime_ns == stamp


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_config, monkeypatch):
    cfg = tiny_config("train.epochs=2", "name=nan")
    ce = METHODS["ce"]
    original = ce.loss
    calls = {"n": 0}

    def poisoned(self, batch, out, state):
        loss, logs = original(self, batch, out, state)
        calls["n"] += 1
        return (loss * math.nan if state.epoch == 1 else loss), logs

    monkeypatch.setattr(ce, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 5; stopped \(epoch 1 checkpoint kept"):
        fit(cfg)
    ckpt = torch.load(cfg.out_dir + "/nan/checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1


def test_evaluate_reports_accuracy_against_labels_and_truth(tiny_config, synth_small):
    from fercore.methods import get_method
    cfg = tiny_config()
    train, test = synth_small
    method = get_method("ce")(cfg, train)
    ev = evaluate(method, test, cfg, torch.device("cpu"))
    assert ev["prob"].shape == (len(test), 7) and ev["pred"].shape == (len(test),)
    assert ev["acc"] == pytest.approx((ev["pred"] == test.label.numpy()).mean())
    assert ev["acc_true"] == pytest.approx((ev["pred"] == test.true_label.numpy()).mean())
    assert sum(map(sum, ev["confusion"])) == len(test)


def test_summarize_groups_seeds(tiny_config):
    runs = [fit(tiny_config("train.epochs=1", f"seed={s}")) for s in (0, 1)]
    table = summarize(runs, ["method", "data.noise"])
    assert len(table) == 1 and table["n_seeds"].item() == 2


def test_the_moving_average_is_what_is_evaluated_and_restored(tiny_config):
    """`train.ema`: the test split is scored with the averaged weights, and `restore` (eval, predict) rebuilds
    those weights, not the last optimiser step's; the average differs from the raw weights."""
    import torch

    from fercore.data.datasets import load_dataset
    from fercore.engine import restore

    rd = fit(tiny_config("train.epochs=2", "train.ema=0.9"))
    ckpt = rd.load_checkpoint()
    assert set(ckpt["ema"]) == set(ckpt["model"])
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["model"]
               if ckpt["model"][k].is_floating_point())
    cfg, method = restore(rd.path)
    _, test = load_dataset(cfg.data)
    ev = evaluate(method, test, cfg, torch.device("cpu"))
    assert ev["acc"] == rd.summary["last"]["test_acc"]
    assert ev["pred"].tolist() == rd.diagnostics()["test_pred@2"].tolist()
