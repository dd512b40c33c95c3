"""Contracts every registered thing must meet, parametrised over the registries (timm's habit):
a new method, noise protocol, dataset reader or config choice gets these tests without an edit."""
import dataclasses
import json
import math
import typing

import pytest
import torch

from fercore import config as config_module
from fercore.config import METHOD_PARAMS, build_config
from fercore.data.datasets import READERS
from fercore.data.loader import Loader
from fercore.data.noise import PROTOCOLS, inject, parse_spec
from fercore.errors import ConfigError, DataError
from fercore.methods import METHODS, get_method
from fercore.methods.base import TrainState

EXAMPLES = {"none": "none", "sym": "sym:0.3", "asym": "asym:0.3", "file": "eac30"}  # one valid spec per protocol


def test_every_method_registers_its_params_with_the_config_layer():
    assert set(METHOD_PARAMS) == set(METHODS)
    assert all(METHOD_PARAMS[n] is cls.Params for n, cls in METHODS.items())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, tiny_config, synth_small):
    """Build, forward, loss, backward, step hooks, predict, diagnostics, param groups, describe."""
    train, _ = synth_small
    cfg = tiny_config(method=name, **{})
    torch.manual_seed(0)
    method = get_method(name)(cfg, train)
    assert method.name == name and method.num_classes == train.num_classes
    loader = Loader(train, 16, torch.device("cpu"), shuffle=True, **method.loader_options())
    batch = next(iter(loader))
    state = TrainState(epoch=0, epochs=2, labels=train.label.clone())
    out = method.train()(batch)
    assert out["logits"].shape == (16, train.num_classes)
    assert method.sample_logits(out).shape == (16, train.num_classes)
    loss, logs = method.loss(batch, out, state)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(v.ndim == 0 for v in logs.values())
    loss.backward()
    assert any(p.grad is not None for p in method.backbone.parameters())
    method.after_step(batch, out, state)
    method.on_epoch_end(state)
    pred = method.eval().predict(batch)
    assert pred["logits"].shape == (16, train.num_classes)
    assert all(len(v) == 16 for v in pred.values())
    diags = method.diagnostics()
    assert all(len(v) == len(train) for v in diags.values())
    if method.noise_score is not None:
        score, higher_is_clean = method.noise_score
        assert score in diags and isinstance(higher_is_clean, bool)
        assert torch.isfinite(diags[score][batch["index"]]).all()        # every visited sample scored
    groups = method.param_groups(cfg.optim)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(method.parameters()))   # every parameter exactly once
    json.dumps(method.describe())                                        # env.json can hold it


def _literal_fields(obj, prefix=""):
    """(dotted key, choices) of every Literal field of a config dataclass, recursively."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _literal_fields(value, f"{prefix}{f.name}.")
            continue
        base = config_module._unwrap(hints[f.name])[0]
        if typing.get_origin(base) is typing.Literal:
            yield f"{prefix}{f.name}", typing.get_args(base)


CHOICES = [(None, key, opts) for key, opts in _literal_fields(config_module.RunConfig())] + [
    (name, f"{name}.{key}", opts) for name, params in sorted(METHOD_PARAMS.items())
    for key, opts in _literal_fields(params())]


# choices that are only valid together with other keys
FERPLUS = ["data.dataset=ferplus", "data.data_root=/nonexistent"]
CONTEXT = {"data.label_source": FERPLUS, "data.layout": FERPLUS}
VALUE_CONTEXT = {("data.layout", "npy"): ["data.dataset=affectnet8"]}  # a layout of another reader


@pytest.mark.parametrize("method, key, options", CHOICES, ids=[c[1] for c in CHOICES])
def test_every_choice_is_checked_by_the_config_layer(method, key, options):
    extra = ([f"method={method}"] if method else []) + CONTEXT.get(key, [])
    for value in options:
        build_config("smoke", overrides=[*extra, *VALUE_CONTEXT.get((key, value), []), f"{key}={value}"])
    with pytest.raises(ConfigError) as e:
        build_config("smoke", overrides=[*extra, f"{key}=__bogus__"])
    text = str(e.value)
    assert key in text and "__bogus__" in text and all(str(o) in text for o in options) and "\n" not in text


def test_all_config_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as e:
        build_config("smoke", overrides=["train.epochs=0", "optim.lr=-1", "train.amp=fp8", "data.augment.flip=2",
                                         "optim.lr=1e-3x", "name=../x", "train.batch_size=0"])
    lines = str(e.value).splitlines()
    assert len(lines) == 6 and all(k in str(e.value) for k in ("train.epochs", "optim.lr", "train.amp", "batch_size",
                                                                "data.augment.flip", "name"))


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("2E-4", 2e-4), ("5", 5.0), (".5", 0.5)])
def test_floats_accept_scientific_notation(text, value, tmp_path):
    assert build_config("smoke", overrides=[f"optim.lr={text}"]).optim.lr == value
    f = tmp_path / "c.yaml"
    f.write_text(f"optim:\n  lr: {text}\n")
    assert build_config("smoke", f).optim.lr == value


@pytest.mark.parametrize("kind", sorted(PROTOCOLS))
def test_noise_protocol_contract(kind, synth_small):
    """Every protocol parses its example, and what it injects is reported and leaves test labels alone."""
    assert kind in EXAMPLES, f"add an example spec for the new noise protocol {kind!r}"
    spec = parse_spec(EXAMPLES[kind])
    assert spec.kind == kind
    train, _ = synth_small
    if kind == "file":  # EAC's files belong to RAF-DB: any other dataset is a one-line error
        with pytest.raises(DataError, match="RAF-DB"):
            inject(train, EXAMPLES[kind], 0)
        return
    noisy = inject(train, EXAMPLES[kind], 0)
    report = noisy.meta["noise"]
    assert report["kind"] == kind
    assert math.isclose(report["rate_realised"], float((noisy.label != train.label).float().mean()))
    assert torch.equal(noisy.clean_label, train.label)
    assert torch.equal(noisy.extras["flipped"], noisy.label != train.label)


def test_unknown_noise_kind_lists_every_protocol():
    with pytest.raises(ValueError) as e:
        parse_spec("flip:0.3")
    assert all(PROTOCOLS[k].grammar in str(e.value) for k in PROTOCOLS)


def test_every_reader_refuses_a_missing_data_root(tmp_path):
    for name in sorted(set(READERS) - {"synthfer"}):
        cfg = build_config("smoke", overrides=[f"data.dataset={name}", f"data.data_root={tmp_path / 'nope'}"])
        from fercore.data.datasets import load_dataset
        with pytest.raises(DataError, match="does not exist"):
            load_dataset(cfg.data)
