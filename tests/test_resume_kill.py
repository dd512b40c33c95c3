"""Every method trains, evaluates, checkpoints and resumes; a run killed mid-epoch resumes to the
same final metrics as the uninterrupted run (CPU, bit for bit)."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fercore.config import build_config
from fercore.engine import fit
from fercore.methods import METHODS

TINY = ["data.n_train=128", "data.n_test=64", "data.image_size=32", "model.backbone=resnet10t",
        "train.batch_size=32", "data.noise=sym:0.3", "train.num_threads=1"]


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _same_runs(a, b, scores: tuple[str, ...]) -> None:
    ma, mb = a.metrics(), b.metrics()
    assert list(ma["epoch"]) == list(mb["epoch"])
    for col in ("train_loss", "train_acc", "test_acc", "labels_clean_frac"):
        assert ma[col].tolist() == mb[col].tolist(), col
    assert a.relabels().values.tolist() == b.relabels().values.tolist()
    da, db = a.diagnostics(), b.diagnostics()
    last = ma["epoch"].iloc[-1]
    for k in (f"label@{last}", f"test_pred@{last}", *(f"{s}@{last}" for s in scores)):
        assert np.array_equal(da[k], db[k], equal_nan=True), k
    wa = torch.load(a.path / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(b.path / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# every registered method, with its declared per-sample score (the engine's own loss record for ce)
SCORES = {name: (cls.noise_score[0] if cls.noise_score else "loss",) for name, cls in sorted(METHODS.items())}


@pytest.mark.parametrize("method", list(SCORES))
def test_every_method_resumes_to_the_uninterrupted_run(method, tmp_path, keep_threads):
    def cfg(epochs, name):
        return build_config("smoke", overrides=[*TINY, f"method={method}", f"train.epochs={epochs}",
                                                f"out_dir={tmp_path}", f"name={name}"])
    full = fit(cfg(2, "full"))
    assert full.summary["last"]["test_acc"] == full.metrics()["test_acc"].iloc[-1]
    (score,) = SCORES[method]
    assert np.isfinite(full.diagnostics()[f"{score}@2"]).all()            # every sample scored (4 full batches)
    fit(cfg(1, "part"))
    conf = json.loads((tmp_path / "part" / "config.json").read_text())
    conf["train"]["epochs"] = 2                                          # as if it had been stopped after 1
    (tmp_path / "part" / "config.json").write_text(json.dumps(conf))
    _same_runs(full, fit(cfg(2, "part"), if_exists="resume"), SCORES[method])


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, keep_threads):
    args = [*TINY, "data.n_train=256", "method=scn", "scn.relabel_epoch=1", "train.epochs=3"]
    full = fit(build_config("smoke", overrides=[*args, f"out_dir={tmp_path / 'full'}"]))
    assert full.summary["n_relabels"] > 0                                 # the label table must survive too
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fercore", "train", "--profile", "smoke", *args, f"out_dir={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = out / full.path.name / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    first = json.loads(metrics.read_text().splitlines()[0])
    time.sleep(first["epoch_time_s"] / 2)                                 # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(out / full.path.name / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] < 3 and not (out / full.path.name / "summary.json").exists(), "killed too late"
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_runs(full, type(full)(out / full.path.name), ("importance",))
