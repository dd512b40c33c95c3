import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# every test process (each pytest-xdist worker too) caches into a folder of its own, removed when its
# session ends (pytest_unconfigure), so a test run leaves nothing in the temporary folder
_CACHE = tempfile.mkdtemp(prefix="fercore-test-cache-")
os.environ["FERCORE_CACHE"] = _CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def synth_small():
    """A small SynthFER draw shared by tests (train 256, test 96, 48 px)."""
    from fercore.data.synthfer import SynthFERConfig, load_synthfer

    return load_synthfer(SynthFERConfig(), n_train=256, n_test=96, image_size=48)


@pytest.fixture(scope="module")
def faces(synth_small):
    """The first 24 train and 12 test faces of `synth_small`: what the reader fixtures write to disk."""
    train, test = synth_small
    return train.subset(range(24)), test.subset(range(12))


@pytest.fixture
def tiny_config(tmp_path):
    """A config that trains in a few seconds on CPU."""
    from fercore.config import build_config

    def make(*overrides, method="ce"):
        return build_config("smoke", overrides=[f"out_dir={tmp_path / 'runs'}", f"method={method}",
                                                "data.n_train=128", "data.n_test=64", "data.image_size=32",
                                                "model.backbone=resnet10t", "train.batch_size=32",
                                                *overrides])
    return make
