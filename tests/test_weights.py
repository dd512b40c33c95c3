"""Local pretrained weights: every published container/key format loads, nothing loads silently wrong."""
import argparse
import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from fercore.errors import ConfigError
from fercore.models.backbone import Backbone
from fercore.models.weights import load_backbone_weights

ARCH = "resnet10t"


@pytest.fixture(scope="module")
def source():
    """A randomly initialised backbone whose tensors the fake checkpoints carry."""
    torch.manual_seed(1)
    net = Backbone(ARCH).net
    for m in net.modules():  # make the BN statistics non-default so a skipped buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _fc():
    return {"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}


def _formats(sd):
    plain = {k: v for k, v in sd.items()}
    no_counter = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    resnet_children = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    return {
        # MS-Celeb ResNet-18 as SCN/RAN ship it: state_dict, `module.` prefix, no num_batches_tracked (2017)
        "ijba_res18_naive.pth.tar": {"state_dict": {f"module.{k}": v for k, v in {**no_counter, **_fc()}.items()}},
        # the torchvision re-save linked by RUL and DAN: state_dict, torchvision names, 1000-way fc
        "resnet18_msceleb.pth": {"state_dict": {**plain, **_fc()}},
        # timm's train script output: state_dict plus its argparse Namespace
        "timm_checkpoint.pth.tar": {"epoch": 3, "arch": ARCH, "state_dict": plain,
                                    "args": argparse.Namespace(model=ARCH, lr=0.1)},
        # a bare timm state dict with its head
        "timm_bare.pth": {**plain, **_fc()},
        # a fercore run checkpoint (Method state dict: backbone.net.*, heads)
        "fercore_run.pt": {"epoch": 2, "model": {**{f"backbone.net.{k}": v for k, v in plain.items()},
                                                 "fc.weight": torch.randn(7, 512)}},
        # SCN/RUL training output: torchvision children in nn.Sequential `features`
        "scn_trained.pth": {"model_state_dict": {
            f"features.{resnet_children[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in plain.items()}},
    }


FORMATS = ["ijba_res18_naive.pth.tar", "resnet18_msceleb.pth", "timm_checkpoint.pth.tar", "timm_bare.pth",
           "fercore_run.pt", "scn_trained.pth", "timm.safetensors"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_loads_every_backbone_tensor(name, source, tmp_path):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({**source, **_fc()}, str(path))
    else:
        torch.save(_formats(source)[name], path)
    target = Backbone(ARCH)
    report = load_backbone_weights(target, path)
    got = target.net.state_dict()
    for k, v in source.items():
        if not k.endswith("num_batches_tracked") or name != "ijba_res18_naive.pth.tar":
            assert torch.equal(got[k], v), k
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["loaded"] == len(source) - (len(report["filled_default"]))
    if name == "ijba_res18_naive.pth.tar":
        assert report["filled_default"] and all(k.endswith("num_batches_tracked") for k in report["filled_default"])
        assert report["known"]["key_format"].endswith("prefixed module.")
    if name in ("resnet18_msceleb.pth", "timm_bare.pth", "ijba_res18_naive.pth.tar", "timm.safetensors"):
        assert sorted(k.replace("module.", "") for k in report["ignored"]) == ["fc.bias", "fc.weight"]


def test_one_missing_backbone_tensor_fails_naming_it(source, tmp_path):
    sd = {k: v for k, v in source.items() if k != "layer3.0.bn2.running_var"}
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"1 backbone tensors missing: layer3\.0\.bn2\.running_var$"):
        load_backbone_weights(Backbone(ARCH), tmp_path / "w.pth")


def test_a_wrong_shape_fails_naming_it(source, tmp_path):
    sd = dict(source, **{"layer4.0.conv1.weight": torch.zeros(512, 256, 1, 1)})
    save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match=r"with a wrong shape: layer4\.0\.conv1\.weight \(512, 256, 1, 1\) != "
                                          r"\(512, 256, 3, 3\)"):
        load_backbone_weights(Backbone(ARCH), tmp_path / "w.safetensors")


class _Payload:
    """What a tampered checkpoint smuggles in: code that runs when the pickle is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_tampered_pickle_is_refused_and_runs_nothing(source, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": source, "extra": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match=r"evil.pth: refused by torch.load\(weights_only=True\): it holds the "
                                          r"non-tensor object io.open$"):
        load_backbone_weights(Backbone(ARCH), tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_file_without_weights_is_a_clear_error(tmp_path):
    torch.save({"epoch": 1, "note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(ConfigError, match="no state dict found"):
        load_backbone_weights(Backbone(ARCH), tmp_path / "empty.pth")
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone_weights(Backbone(ARCH), tmp_path / "nope.pth")


def test_fit_loads_weights_and_records_the_sha256(source, tiny_config, tmp_path):
    from fercore.engine import fit
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save({"state_dict": {**source, **_fc()}}, path)
    run = fit(tiny_config("train.epochs=1", f"model.weights={path}", "optim.lr=0.0", "optim.head_lr=0.0"))
    weights = run.env["weights"]
    assert weights["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and weights["path"] == str(path)
    assert json.loads((run.path / "config.json").read_text())["model"]["weights"] == str(path)
    ckpt = torch.load(run.path / "checkpoint.pt", weights_only=True)["model"]
    # lr 0: the weights stay what was loaded (BatchNorm statistics move in training mode)
    assert torch.equal(ckpt["backbone.net.conv1.0.weight"], source["conv1.0.weight"])
