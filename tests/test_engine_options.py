"""Engine options: bf16 autocast and channels_last on CPU, option validation, optional TensorBoard."""
import builtins

import pytest
import torch

from fercore.config import build_config
from fercore.engine import _eval_due, amp_dtype, fit, use_channels_last
from fercore.errors import ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_options_follow_the_device():
    assert amp_dtype("auto", CPU) is None and amp_dtype("auto", CUDA) is torch.bfloat16
    assert amp_dtype("bf16", CPU) is torch.bfloat16 and amp_dtype("none", CUDA) is None
    assert not use_channels_last("auto", CPU) and use_channels_last("auto", CUDA)
    assert use_channels_last("channels_last", CPU) and not use_channels_last("contiguous", CUDA)
    with pytest.raises(ConfigError, match="train.amp: expected auto, fast, bf16 or none, got 'fp8'"):
        amp_dtype("fp8", CPU)
    with pytest.raises(ConfigError, match="model.memory_format: expected auto, channels_last or contiguous"):
        use_channels_last("nhwc", CPU)


@pytest.mark.parametrize("native", [True, False])
def test_fast_means_bf16_only_where_the_device_computes_it_natively(monkeypatch, native):
    import fercore.engine as engine
    import fercore.models.backbone as backbone
    from fercore.pretrain import PretrainConfig

    assert backbone.native_bf16(CUDA)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native, raising=False)
    assert backbone.native_bf16(CPU) is native
    assert engine.amp_dtype("fast", CPU) is (torch.bfloat16 if native else None)
    assert engine.amp_dtype("fast", CUDA) is torch.bfloat16
    assert PretrainConfig().resolved_amp() == ("bf16" if native else "none")
    keys = {PretrainConfig().key(), PretrainConfig(amp="bf16").key(), PretrainConfig(amp="none").key()}
    assert len(keys) == 2  # fast shares its cache with what it resolved to, never with the other


def test_bf16_channels_last_run_on_cpu(tiny_config):
    run = fit(tiny_config("train.epochs=1", "train.amp=bf16", "model.memory_format=channels_last", method="eac"))
    assert run.env["options"] == {"amp": "bfloat16", "channels_last": True, "compile": False}
    m = run.metrics()
    assert m["train_loss"].notna().all() and m["test_acc"].between(0, 1).all()


def test_tensorboard_without_the_package_is_a_config_error(tiny_config, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match=r"train.tensorboard=true needs the tensorboard package: "
                                          r"pip install 'fercore\[tensorboard\]'"):
        fit(tiny_config("train.epochs=1", "train.tensorboard=true"))


@pytest.mark.parametrize("every, last, evaluated", [(1, 0, [1, 2, 3, 4, 5, 6]), (4, 0, [4, 6]), (4, 3, [4, 5, 6]),
                                                    (100, 3, [4, 5, 6]), (2, 1, [2, 4, 6]), (5, 2, [5, 6])])
def test_the_test_split_is_evaluated_every_nth_epoch_and_in_the_last_ones(every, last, evaluated):
    """`train.eval_every` and `train.eval_last`: evaluation only where it is read (the real profile reads the
    last three epochs' swing), and always after the last epoch."""
    cfg = build_config("smoke", overrides=["train.epochs=6", f"train.eval_every={every}", f"train.eval_last={last}"])
    assert [e + 1 for e in range(6) if _eval_due(cfg, e)] == evaluated
