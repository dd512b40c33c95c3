"""Two CPU ranks (torchrun, gloo) reproduce a single-process run within float tolerance.

The backbone uses GroupNorm (timm's `test_efficientnet_gn`), whose per-sample statistics do not
depend on how a batch is split, and SCN without its batch-level rank loss: every remaining term is
per sample, so a rank's shard gradient, averaged by DDP, is the single-process gradient. SCN's
relabelling (margin 0: every disagreement) exercises the label and diagnostics merges."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fercore.engine import fit

ARGS = ["method=scn", "scn.rr_weight=0", "scn.relabel_epoch=1", "scn.margin2=0.0", "data.noise=sym:0.3",
        "model.backbone=test_efficientnet_gn", "model.weights=", "train.epochs=2", "optim.lr=0.01"]


def test_two_gloo_ranks_match_one_process(tiny_config, tmp_path):
    single = fit(tiny_config(*ARGS, "name=single"))
    cfg = tiny_config(*ARGS, "name=ddp")
    cli = ["--profile", "smoke", f"out_dir={cfg.out_dir}", "data.n_train=128", "data.n_test=64",
           "data.image_size=32", "train.batch_size=32", *ARGS, "name=ddp"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fercore", "train", *cli], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("last-epoch test acc") == 1                   # rank 0 reports
    ddp = type(single)(single.path.parent / "ddp")
    assert ddp.env["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert single.env["distributed"] == {"world_size": 1, "backend": None}

    a, b = single.metrics(), ddp.metrics()
    assert list(b["epoch"]) == [1, 2]
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(b["train_acc"], a["train_acc"], atol=1 / 128)
    np.testing.assert_allclose(b["test_acc"], a["test_acc"], atol=1 / 64)

    ra, rb = single.relabels(), ddp.relabels()
    assert len(ra) > 10                                                     # the merge had work to do
    key = ["epoch", "index", "old", "new"]
    assert ra[key].sort_values(key).values.tolist() == rb[key].sort_values(key).values.tolist()
    da, db = single.diagnostics(), ddp.diagnostics()
    assert np.array_equal(da["label@2"], db["label@2"])
    np.testing.assert_allclose(db["importance@2"], da["importance@2"], atol=1e-4)   # NaN where unseen, in both

    wa = torch.load(single.path / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(ddp.path / "checkpoint.pt", weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3, msg=k)


def test_shard_splits_every_per_sample_entry():
    from fercore.distributed import Dist, shard
    batch = {"index": torch.arange(6), "image": torch.zeros(6, 3, 2, 2), "label": torch.arange(6) % 2}
    parts = [shard(batch, Dist(rank=r, world=2)) for r in (0, 1)]
    assert [p["index"].tolist() for p in parts] == [[0, 1, 2], [3, 4, 5]]
    assert parts[1]["image"].shape == (3, 3, 2, 2) and parts[1]["label"].tolist() == [1, 0, 1]
    assert json.dumps(Dist().gather_objects({"a": 1})) == '[{"a": 1}]'       # one process: itself


@pytest.mark.parametrize("size", [30, 64])
def test_sharded_loader_needs_a_divisible_batch(size, synth_small):
    from fercore.data.loader import Loader
    from fercore.distributed import Dist, ShardedLoader
    from fercore.errors import ConfigError
    loader = Loader(synth_small[0], size, torch.device("cpu"))
    if size % 4:
        with pytest.raises(ConfigError, match=r"train.batch_size=30 must be a multiple of the 4 processes"):
            ShardedLoader(loader, Dist(rank=0, world=4))
    else:
        first = next(iter(ShardedLoader(loader, Dist(rank=3, world=4))))
        assert first["index"].tolist() == list(range(48, 64))
