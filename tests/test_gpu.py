"""The CUDA path: every method trains with the GPU defaults (bf16 autocast, channels_last, data on
the device). Skipped without a GPU; run on a GPU machine with `pytest tests/test_gpu.py`."""
import numpy as np
import pytest
import torch

from fercore.engine import fit
from fercore.methods import METHODS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_the_gpu(method, tiny_config):
    run = fit(tiny_config("device=cuda", "train.amp=auto", "model.memory_format=auto", "train.epochs=2",
                          "data.noise=sym:0.3", method=method))
    assert run.env["device"].startswith("cuda") and run.env["options"]["amp"] == "bfloat16"
    assert run.env["options"]["channels_last"] is True
    m = run.metrics()
    assert len(m) == 2 and np.isfinite(m["train_loss"]).all() and m["test_acc"].between(0, 1).all()

