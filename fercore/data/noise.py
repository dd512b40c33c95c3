"""Label-noise protocols: flips of training labels only (docs/protocols.md#1-the-datanoise-grammar).

Every protocol is one `Protocol` in the `PROTOCOLS` registry: its grammar, a parser of the text
after `<kind>:` into a `NoiseSpec`, and a function that draws the noisy labels. Adding a protocol
is one `register(Protocol(...))` (docs/contributing.md#add-a-noise-protocol). `data.noise` grammar:
* `none`;
* `sym:<rate>`: each sample flips with probability `rate` (a Bernoulli draw per sample, as in EAC's
  files) to a class drawn uniformly from the other classes, so a flipped label never equals its
  original `[lineage: SCN generate.py]`, seeded (SCN's is not);
* `asym:<rate>[:<from>><to>,...]`: class-dependent flips, each sample of a mapped class flips with
  probability `rate` to its class's partner. Default pairs `ASYM_PAIRS` `[lineage: LA-Net's
  commented-out map]`, contempt -> disgust `[ours]`; classes without a partner (e.g. AffWild2's
  `other`) never flip;
* `eac10`, `eac20`, `eac30`: RAF-DB only, EAC's `EmoLabel/noise0{1,2,3}.txt`, accepted only if the
  sha256 matches (`EAC_NOISE`) `[lineage: EAC]`;
* `file:<path>`: any `name code` file in the dataset's coding (RAF-DB: codes 1..7; others: head
  index), one line per training row of the full split, as `write_label_file` writes it.

`inject` returns the realised flip rate and the injected confusion matrix in `meta['noise']`
(the engine logs it in env.json). Test labels are never passed here.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..config import VALUE_CHECKS
from ..errors import DataError
from .classes import CODINGS, canonical_name
from .faceset import FaceSet

# EAC's RAF-DB noise files (docs/datasets.md#23-synthetic-noise-label-files-in-circulation): spec -> (file under the
# data root, sha256, rows).
EAC_NOISE = {
    "eac10": ("EmoLabel/noise01.txt", "b452aca82ca7d2b9e62306e4513cca92aa32766ed47ed4137d61dd737155449a"),
    "eac20": ("EmoLabel/noise02.txt", "04d8c16247bd1dacdad9e5de880dca53f6b79e71aa919ed749b93a489e3cf8ac"),
    "eac30": ("EmoLabel/noise03.txt", "bb2f536c87af0b20d16b8e48945c3d6220fad0b4d4ee39b8b99f2007745dbe58"),
}
ASYM_PAIRS = {"anger": "disgust", "disgust": "anger", "fear": "surprise", "happy": "neutral", "sad": "neutral",
              "surprise": "anger", "neutral": "sad", "contempt": "disgust"}


class NoiseSpec(NamedTuple):
    kind: str                     # none | sym | asym | file
    rate: float = 0.0             # asked flip rate (sym, asym)
    pairs: tuple = ()             # asym: ((from, to), ...) canonical names
    path: str = ""                # file: the label file; eac: its path under the data root
    sha256: str = ""              # eac: the required hash


@dataclass(frozen=True)
class Protocol:
    """One label-noise protocol: `kind` (the text before ':'), its `grammar` for messages and docs,
    `parse(text, rest)` -> NoiseSpec (ValueError naming data.noise on bad text), `flip(train, spec,
    seed, text)` -> (noisy labels, extra report entries), and optional whole-spec `aliases` (eac10)."""

    kind: str
    grammar: str
    parse: Callable[[str, str], NoiseSpec]
    flip: Callable[[FaceSet, NoiseSpec, int, str], tuple[Tensor, dict]]
    aliases: tuple[str, ...] = ()
    seeded: bool = False


PROTOCOLS: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    if protocol.kind in PROTOCOLS:
        raise ValueError(f"noise protocol {protocol.kind!r} registered twice")
    PROTOCOLS[protocol.kind] = protocol
    return protocol


def _grammar() -> str:
    g = [p.grammar for p in PROTOCOLS.values()]
    return ", ".join(g[:-1]) + " or " + g[-1]


def parse_spec(spec: str) -> NoiseSpec:
    """Parse a `data.noise` string (module docstring); errors name the key and the spec."""
    for p in PROTOCOLS.values():
        if spec in p.aliases:
            return p.parse(spec, spec)
    kind, _, rest = spec.partition(":")
    p = PROTOCOLS.get(kind)
    if p is None or (kind != "none" and not rest) or (kind == "none" and rest):
        raise ValueError(f"data.noise: expected {_grammar()}, got {spec!r}")
    return p.parse(spec, rest)


def _rate(spec: str, text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"data.noise: rate in {spec!r} is not a number") from None
    if not 0 <= rate <= 1:
        raise ValueError(f"data.noise: rate in {spec!r} must be in [0, 1]")
    return rate


def _parse_sym(spec: str, rest: str) -> NoiseSpec:
    rate_text, _, pair_text = rest.partition(":")
    if pair_text:
        raise ValueError(f"data.noise: sym takes no class pairs, got {spec!r}")
    return NoiseSpec("sym", _rate(spec, rate_text))


def _parse_asym(spec: str, rest: str) -> NoiseSpec:
    rate_text, _, pair_text = rest.partition(":")
    rate = _rate(spec, rate_text)
    pairs = ASYM_PAIRS.items()
    if pair_text:
        try:
            pairs = [tuple(canonical_name(c) for c in p.split(">")) for p in pair_text.split(",")]
        except KeyError as e:
            raise ValueError(f"data.noise: {e.args[0]} in {spec!r}") from None
        if any(len(p) != 2 or p[0] == p[1] for p in pairs):
            raise ValueError(f"data.noise: pairs in {spec!r} must read <from>><to> with two different classes")
    return NoiseSpec("asym", rate, tuple(pairs))


def _parse_file(spec: str, rest: str) -> NoiseSpec:
    if spec in EAC_NOISE:
        return NoiseSpec("file", path=EAC_NOISE[spec][0], sha256=EAC_NOISE[spec][1])
    return NoiseSpec("file", path=rest)


def symmetric(labels: Tensor, rate: float, num_classes: int, seed: int) -> Tensor:
    """Flip each label with probability `rate` to a uniformly drawn different class."""
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    gen = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(labels), generator=gen) < rate
    shift = torch.randint(1, num_classes, (len(labels),), generator=gen)
    return torch.where(flip, (labels + shift) % num_classes, labels)


def asym_targets(pairs, classes: tuple[str, ...]) -> Tensor:
    """(K,) partner index per class (-1: never flips). A pair leaving the classes is an error,
    a pair whose source class is absent is ignored (e.g. neutral under ckplus7)."""
    target = torch.full((len(classes),), -1, dtype=torch.long)
    for src, dst in pairs:
        if src not in classes:
            continue
        if dst not in classes:
            raise ValueError(f"data.noise: asym pair {src}>{dst} leaves the classes {classes}; give pairs "
                             f"explicitly, e.g. asym:0.3:{src}>{next(c for c in classes if c != src)}")
        target[classes.index(src)] = classes.index(dst)
    return target


def asymmetric(labels: Tensor, rate: float, target: Tensor, seed: int) -> Tensor:
    """Flip each label of a class with a partner (`target[k] >= 0`) to it with probability `rate`."""
    gen = torch.Generator().manual_seed(seed)
    flip = (torch.rand(len(labels), generator=gen) < rate) & (target[labels] >= 0)
    return torch.where(flip, target[labels], labels)


def confusion(before: Tensor, after: Tensor, num_classes: int) -> Tensor:
    """(K, K) counts: row = label before injection, column = label after."""
    m = torch.zeros(num_classes, num_classes, dtype=torch.long)
    m.index_put_((before, after), torch.ones_like(before), accumulate=True)
    return m


def _code_table(fs: FaceSet) -> dict:
    """head index -> raw code of the dataset's label coding (head index itself where none applies)."""
    coding = CODINGS.get(fs.meta.get("coding", ""))
    table = coding.from_index(fs.classes) if coding is not None else {}
    numeric = all(isinstance(raw, int) for raw in table.values())  # `name code` files hold integer codes
    return table if len(table) == fs.num_classes and numeric else {k: k for k in range(fs.num_classes)}


def write_label_file(path: str | Path, names: list[str], labels: Tensor, fs: FaceSet) -> str:
    """Write `name code` lines in `fs`'s coding (RAF-DB: 1..7), LF, no final newline, as EAC's
    files are; returns the file's sha256 (publish it with the file)."""
    table = _code_table(fs)
    data = "\n".join(f"{n} {table[int(k)]}" for n, k in zip(names, labels)).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_label_file(path: Path, fs: FaceSet, sha256: str = "") -> tuple[Tensor, str]:
    """Noisy head indices for `fs`'s samples from a `name code` file covering the full training
    split (`fs.meta['n_rows']` lines), and the file's sha256. Errors name the file and line."""
    from ..files import lf_sha256, sha256_file
    from .readers.rafdb import parse_name_code
    from .readers.toolkit import Problems

    if not path.is_file():
        raise DataError(f"{path}: noise label file missing")
    digest = sha256_file(path)
    if sha256 and sha256 not in (digest, lf_sha256(path)):  # a copy saved on Windows is still the published one
        raise DataError(f"{path}: sha256 {digest} differs from the published {sha256}; fercore accepts only "
                        "the published file (use file:<path> for another draw)")
    table = _code_table(fs)
    rows = parse_name_code(path, Problems(strict=True), {raw: k for k, raw in table.items()}, re.compile(r"\S+"))
    expected = fs.meta.get("n_rows", len(fs))
    if len(rows) != expected:
        line = rows[expected][0] if len(rows) > expected else (rows[-1][0] + 1 if rows else 1)
        raise DataError(f"{path}:{line}: {len(rows)} label lines, the training split has {expected} rows")
    code = {name: (line, raw) for line, name, raw in rows}
    missing = [i for i in fs.ids if i not in code]
    if missing:
        raise DataError(f"{path}: no line for training image {missing[0]!r} ({len(missing)} missing)")
    index = {raw: k for k, raw in table.items()}
    return torch.tensor([index[code[i][1]] for i in fs.ids], dtype=torch.long), digest


def _flip_none(train: FaceSet, s: NoiseSpec, seed: int, text: str) -> tuple[Tensor, dict]:
    return train.label.clone(), {}


def _flip_sym(train: FaceSet, s: NoiseSpec, seed: int, text: str) -> tuple[Tensor, dict]:
    return symmetric(train.label, s.rate, train.num_classes, seed), {}


def _flip_asym(train: FaceSet, s: NoiseSpec, seed: int, text: str) -> tuple[Tensor, dict]:
    return asymmetric(train.label, s.rate, asym_targets(s.pairs, train.classes), seed), {}


def _flip_file(train: FaceSet, s: NoiseSpec, seed: int, text: str) -> tuple[Tensor, dict]:
    path = Path(s.path)
    if s.sha256:
        if train.meta.get("dataset") != "rafdb":
            raise DataError(f"data.noise: {text} is EAC's RAF-DB file; dataset is {train.meta.get('dataset')!r}")
        path = Path(train.meta["root"]) / s.path
    elif not path.is_absolute() and not path.exists() and "root" in train.meta:
        path = Path(train.meta["root"]) / s.path
    labels, digest = read_label_file(path, train, s.sha256)
    return labels, {"file": str(path), "sha256": digest}


register(Protocol("none", "none", lambda spec, rest: NoiseSpec("none"), _flip_none))
register(Protocol("sym", "sym:<rate>", _parse_sym, _flip_sym, seeded=True))
register(Protocol("asym", "asym:<rate>[:a>b,...]", _parse_asym, _flip_asym, seeded=True))
register(Protocol("file", "eac10|eac20|eac30 or file:<path>", _parse_file, _flip_file, aliases=tuple(EAC_NOISE)))


def _spec_problem(spec: str) -> str:
    try:
        parse_spec(spec)
    except ValueError as e:
        return str(e)
    return ""


VALUE_CHECKS["noise"] = _spec_problem  # build_config checks every data.noise with this grammar


def missing_file(spec: str, data_root: str = "") -> DataError | None:
    """The problem with a `file:<path>` noise setting whose file is absent (as given, and under the
    data root, where `_flip_file` also looks), for `fit` to raise before any data is generated or
    decoded; None otherwise (the published EAC files are checked with their hash when read)."""
    s = parse_spec(spec)
    if s.kind != "file" or s.sha256:
        return None
    path = Path(s.path)
    if path.is_file() or (data_root and not path.is_absolute() and (Path(data_root) / path).is_file()):
        return None
    where = f" (nor under data.data_root={data_root})" if data_root and not path.is_absolute() else ""
    return DataError(f"data.noise={spec}: noise label file {path} not found{where}")


def inject(train: FaceSet, spec: str, seed: int) -> FaceSet:
    """Return `train` with noisy labels; `clean_label` keeps the labels before injection (or the
    reader's own reference label, e.g. the FERPlus majority under `data.label_source=fer2013` or
    `one_vote`), `extras['flipped']` marks every training label that differs from it, and `meta['noise']`
    reports the realised rate and the injected confusion matrix (and, under a reader's reference
    label, `label_source`: the rate and confusion of the reader's labels against it). Test sets are
    never passed here."""
    try:
        s = parse_spec(spec)
        protocol = PROTOCOLS[s.kind]
        before = train.label
        after, info = protocol.flip(train, s, seed, spec)
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(str(e)) from None
    report = {"spec": spec, "kind": s.kind, "seed": seed if protocol.seeded else None,
              "rate_asked": s.rate if protocol.seeded else None, **info}
    if train.clean_label is not None:  # the reader's own real noise (FERPlus label_source fer2013 / one_vote)
        report["label_source"] = {"source": train.meta.get("label_source"),
                                  **noise_report(train.clean_label, before, train.num_classes)}
    clean = train.clean_label if train.clean_label is not None else before.clone()
    return train.replace(label=after, clean_label=clean, extras={**train.extras, "flipped": after != clean},
                         meta={**train.meta, "noise": {**report, **noise_report(before, after, train.num_classes)}})


def noise_report(before: Tensor, after: Tensor, num_classes: int) -> dict:
    """Realised flip rate overall and per class (of the clean label), and the confusion matrix."""
    flipped = after != before
    per_class = [flipped[before == k].float().mean().item() if (before == k).any() else 0.0
                 for k in range(num_classes)]
    return {"rate_realised": flipped.float().mean().item() if len(before) else 0.0, "n_flipped": int(flipped.sum()),
            "rate_per_class": per_class, "confusion": confusion(before, after, num_classes).tolist()}
