"""Local pretrained backbone weights (docs/datasets.md#83-how-fercore-loads-local-weights,
docs/baselines.md#r2-explicit-weight-provenance-and-a-strict-load): never downloaded, never silent.

Reads a file (`torch.load(weights_only=True)` for pickles, safetensors by suffix), unwraps the
container (`state_dict`, `model_state_dict`, `model`, or a bare state dict), maps the keys onto the
timm backbone (`module.` prefix stripped; torchvision names are timm's ResNet names; fercore run
checkpoints, and SCN/RUL-style `features.N` Sequentials), and refuses to continue unless every
backbone tensor was matched with the right shape. Classifier and other extra tensors are ignored
and listed. The report (sha256, format, counts, ignored keys, known provenance) goes to env.json.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..files import sha256_file

# Known files and what the issue threads say about them
# (docs/datasets.md#81-the-ms-celeb-1m-resnet-18-used-across-the-noisy-label-fer-line); sha256 is recorded per run.
KNOWN_FILES = {
    "ijba_res18_naive.pth.tar": {
        "model": "ResNet-18 trained on MS-Celeb-1M for IJB-A (penincillin/DREAM), redistributed with SCN and RAN",
        "key_format": "dict with state_dict, keys prefixed module.", "normalize": "imagenet (as SCN/RUL use it)"},
    "resnet18_msceleb.pth": {
        "model": "torchvision-format re-save of the MS-Celeb-1M ResNet-18 (amirhfarzaneh/dacl; linked by RUL, DAN)",
        "key_format": "dict with state_dict, torchvision names, fc 1000-way",
        "normalize": "imagenet or msceleb (RUL #10)"},
}
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
# SCN and RUL wrap torchvision's ResNet children in nn.Sequential: features.<i> -> timm/torchvision names
RESNET_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
PREFIXES = ("backbone.net.", "net.", "backbone.", "model.", "encoder.")
OPTIONAL = ("num_batches_tracked",)  # absent from pre-2018 checkpoints such as the MS-Celeb file


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """The tensors of a local weights file and a description of its container."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.weights: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path), "safetensors"
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"model.weights: {path}: not a valid safetensors file ({e})") from None
    try:  # timm's train script stores its argparse.Namespace beside the weights; plain data, allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError or EOFError here
        detail = re.search(r"GLOBAL (\S+)", str(e))
        why = f"it holds the non-tensor object {detail.group(1)}" if detail else str(e).strip().splitlines()[0]
        raise ConfigError(f"model.weights: {path}: refused by torch.load(weights_only=True): {why}") from None
    return unwrap(obj, path)


def unwrap(obj, path: Path) -> tuple[dict[str, Tensor], str]:
    """Find the state dict inside a checkpoint container."""
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return obj, "state dict"
    if isinstance(obj, dict):
        for key in CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
                return inner, f"dict with {key!r}"
    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ConfigError(f"model.weights: {path}: no state dict found (expected a dict of tensors or one under "
                      f"{list(CONTAINER_KEYS)}; got {keys})")


def _candidates(key: str) -> list[str]:
    """Ways to read a checkpoint key as a backbone key, after stripping `module.` prefixes."""
    while key.startswith("module."):
        key = key[len("module."):]
    out = [key] + [key[len(p):] for p in PREFIXES if key.startswith(p)]
    m = re.match(r"(?:.*\.)?features\.(\d+)\.(.*)", key)
    if m and m.group(1) in RESNET_SEQUENTIAL:
        out.append(f"{RESNET_SEQUENTIAL[m.group(1)]}.{m.group(2)}")
    return out


def map_keys(source: dict[str, Tensor], target: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename `source` keys onto `target`'s names; returns (mapped tensors, unused source keys).
    Each key reading (as is, prefix stripped, Sequential index) is tried; the first that names a
    target tensor wins, and a target tensor claimed twice is an error."""
    mapped, owner, unused = {}, {}, []
    for key, tensor in source.items():
        name = next((c for c in _candidates(key) if c in target), None)
        if name is None:
            unused.append(key)
            continue
        if name in mapped:
            raise ConfigError(f"model.weights: checkpoint tensors {owner[name]!r} and {key!r} both map to {name!r}")
        mapped[name], owner[name] = tensor, key
    return mapped, unused


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict:
    """Load a local file into `backbone` (a fercore Backbone or any module with a `net` or itself);
    raise a ConfigError naming every missing or mismatched backbone tensor; return the report."""
    path = Path(path)
    net = getattr(backbone, "net", backbone)
    source, fmt = read_checkpoint(path)
    target = net.state_dict()
    mapped, unused = map_keys(source, target)
    missing = [k for k in target if k not in mapped and not k.endswith(OPTIONAL)]
    wrong = [f"{k} {tuple(mapped[k].shape)} != {tuple(target[k].shape)}" for k in target
             if k in mapped and mapped[k].shape != target[k].shape]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} backbone tensors missing: {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
        if wrong:
            parts.append(f"{len(wrong)} with a wrong shape: {', '.join(wrong[:10])}")
        raise ConfigError(f"model.weights: {path} does not fit backbone {getattr(backbone, 'name', type(net).__name__)}"
                          f": {'; '.join(parts)}")
    result = net.load_state_dict({k: v.to(target[k].dtype) for k, v in mapped.items()}, strict=False)
    assert all(k.endswith(OPTIONAL) for k in result.missing_keys) and not result.unexpected_keys
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "format": fmt, "loaded": len(mapped),
            "filled_default": [k for k in target if k not in mapped], "ignored": unused,
            "known": KNOWN_FILES.get(path.name)}
