"""SynthFER: procedural faces with exact ground truth (docs/datasets.md#12-synthfer-the-embedded-dataset) `[ours]`.

Each sample draws a true emotion from a class prior, AU intensities from that emotion's EMFACS
prototype with variation (a fraction blends in a second emotion: compound, ambiguous faces),
valence-arousal from the circumplex coordinates of the blend, and a rendered face. Simulated
annotators then perceive the AUs with noise and vote; the votes give a soft label and their
majority (ties broken by seed) the annotated label. So the data has real-style ambiguity and a
known true emotion; synthetic flips come on top (`fercore.data.noise`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict

import torch

from ...config import SynthFERConfig
from ...errors import notice
from ...files import cache_dir, read_cache_entry
from ..classes import protocol_classes
from ..faceset import FaceSet
from .annotate import annotate
from .facs import AU_INDEX, AU_NAMES, circumplex_matrix, prototype_matrix
from .render import GEOMETRY, render, sample_appearance

VERSION = 2  # bump when generation changes, so caches are not reused across versions
CHUNK = 500  # faces rendered at once; fixed so that the output does not depend on it

# RAF-DB basic training counts (docs/datasets.md#22-class-counts), by canonical name.
RAFDB_TRAIN_COUNTS = {"neutral": 2524, "happy": 4772, "sad": 1982, "surprise": 1290,
                      "fear": 281, "disgust": 717, "anger": 705}


RAFDB_SIZES = (12271, 3068)  # default split sizes: RAF-DB basic (docs/datasets.md#22-class-counts)


def class_prior(cfg: SynthFERConfig) -> torch.Tensor:
    classes = protocol_classes(cfg.protocol)
    if cfg.prior == "uniform":
        return torch.full((len(classes),), 1.0 / len(classes))
    if cfg.prior != "rafdb":
        raise ValueError(f"synthfer.prior: expected 'rafdb' or 'uniform', got {cfg.prior!r}")
    counts = torch.tensor([RAFDB_TRAIN_COUNTS.get(c, 300) for c in classes], dtype=torch.float)
    return counts / counts.sum()  # contempt, absent from RAF-DB, gets a small share [ours]


def sample_expressions(n: int, cfg: SynthFERConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """True emotion, blend partner and weight, AU intensities, per-side AU12/14 factors, VA."""
    classes = protocol_classes(cfg.protocol)
    k = len(classes)
    proto, circ = prototype_matrix(classes), circumplex_matrix(classes)
    true = torch.multinomial(class_prior(cfg), n, replacement=True, generator=gen)
    other = (true + torch.randint(1, k, (n,), generator=gen)) % k
    blended = torch.rand(n, generator=gen) < cfg.blend_fraction
    lo, hi = cfg.blend_weight
    w = torch.where(blended, lo + (hi - lo) * torch.rand(n, generator=gen), torch.ones(n))
    mix = torch.zeros(n, k)
    mix[torch.arange(n), true] = w
    mix[torch.arange(n), other] += 1 - w
    lo, hi = cfg.intensity
    strength = lo + (hi - lo) * torch.rand(n, generator=gen)
    au = (mix @ proto) * strength[:, None]
    active = (au > 0).float()
    au = au * (1 + 0.15 * torch.randn(n, au.shape[1], generator=gen)) + active * 0.05 * torch.randn(
        n, au.shape[1], generator=gen)
    spurious = (torch.rand(n, au.shape[1], generator=gen) < 0.04).float()
    au = (au + spurious * 0.3 * torch.rand(n, au.shape[1], generator=gen)).clamp(0, 1)
    side = torch.ones(n, 2)
    if "contempt" in classes:
        c = classes.index("contempt")
        share = mix[:, c]
        right = torch.rand(n, generator=gen) < 0.5
        weak = 1 - share  # the unilateral part of AU12/14 comes from the contempt component
        side = torch.stack([torch.where(right, weak, torch.ones(n)), torch.where(right, torch.ones(n), weak)], 1)
    va = (mix @ circ) * (0.4 + 0.6 * strength[:, None]) + 0.08 * torch.randn(n, 2, generator=gen)
    return {"true": true, "other": torch.where(blended, other, true), "mix": mix,
            "strength": strength, "au": au, "side": side, "va": va.clamp(-1, 1)}


def identity_geometry(cfg: SynthFERConfig, n: int, split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(identity of each of the split's n faces, balanced and shuffled; the (identities,) geometry
    table of render.GEOMETRY keys, the same for every split of this seed)."""
    table_seed = int(hashlib.sha256(f"{cfg.seed}/identities".encode()).hexdigest()[:15], 16)
    table = sample_appearance(cfg.identities, torch.Generator().manual_seed(table_seed))
    order_seed = int(hashlib.sha256(f"{cfg.seed}/{split}/identity-order".encode()).hexdigest()[:15], 16)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))
    identity = (torch.arange(n) % cfg.identities)[perm]
    return identity, {k: table[k] for k in GEOMETRY}


def _split(cfg: SynthFERConfig, n: int, split: str, image_size: int) -> FaceSet:
    if n < 1:
        raise ValueError(f"SynthFER {split} split: size must be at least 1, got {n}")
    classes = protocol_classes(cfg.protocol)
    seed = int(hashlib.sha256(f"{cfg.seed}/{split}".encode()).hexdigest()[:15], 16)
    gen = torch.Generator().manual_seed(seed)
    expr = sample_expressions(n, cfg, gen)
    app = sample_appearance(n, gen, cfg.p_glasses, cfg.p_occluder)
    identity = None
    if cfg.identities > 0:  # own generators: the default (identities=0) draws stay as they were
        identity, geometry = identity_geometry(cfg, n, split)
        app.update({k: v[identity] for k, v in geometry.items()})
    votes, majority = annotate(expr["au"], classes, cfg, gen)
    images, landmarks = [], []
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        noise = torch.Generator().manual_seed(seed + start + 1)
        img, lmk = render(expr["au"][sl], expr["side"][sl], {k: v[sl] for k, v in app.items()},
                          image_size, noise)
        images.append(img)
        landmarks.append(lmk)
    au_intensity = expr["au"]
    return FaceSet(
        images=torch.cat(images), label=majority.clone(), classes=classes,
        ids=[f"{split}_{i:05d}" for i in range(n)], clean_label=majority.clone(), true_label=expr["true"],
        soft_label=votes / votes.sum(1, keepdim=True), au=(au_intensity >= 0.25).float(),
        au_mask=torch.ones_like(au_intensity), va=expr["va"], va_mask=torch.ones(n),
        landmarks=torch.cat(landmarks),
        extras={"votes": votes, "au_intensity": au_intensity, "blend_partner": expr["other"],
                "blend_weight": expr["mix"].max(1).values, "strength": expr["strength"],
                "occluded": app["occluder"], "glasses": app["glasses"],
                **({} if identity is None else {"identity": identity})},
        meta={"dataset": "synthfer", "split": split, "au_names": list(AU_NAMES),
              "synthfer": asdict(cfg), "synthfer_version": VERSION})


def generate(cfg: SynthFERConfig, n_train: int = RAFDB_SIZES[0], n_test: int = RAFDB_SIZES[1],
             image_size: int = 64) -> tuple[FaceSet, FaceSet]:
    """Generate the train and test splits (no cache). A split depends only on its own size."""
    return _split(cfg, n_train, "train", image_size), _split(cfg, n_test, "test", image_size)


def config_key(cfg: SynthFERConfig, n: int, split: str, image_size: int) -> str:
    fields = asdict(cfg)
    if not fields["identities"]:  # added later: the default leaves the keys of existing caches unchanged
        del fields["identities"]
    blob = json.dumps({"version": VERSION, "n": n, "split": split, "image_size": image_size,
                       **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_synthfer(cfg: SynthFERConfig, n_train: int = RAFDB_SIZES[0], n_test: int = RAFDB_SIZES[1],
                  image_size: int = 64, cache: bool = True, verbose: bool = False) -> tuple[FaceSet, FaceSet]:
    """Train and test FaceSets, each cached on disk under a key of everything that made it."""
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        path = cache_dir() / f"synthfer-{config_key(cfg, n, split, image_size)}.pt"
        if cache and path.exists():
            fs = _load_cached(path, n, image_size)
            if fs is not None:
                out.append(fs)
                continue
        t0 = time.perf_counter()
        fs = _split(cfg, n, split, image_size)
        if verbose:
            print(f"SynthFER {split}: generated {n} faces at {image_size}px in {time.perf_counter() - t0:.1f}s")
        if cache:
            try:
                fs.save(path)
            except OSError as e:  # the cache only saves time: go on without it
                notice(f"SynthFER cache not written ({e}); continuing without it")
        out.append(fs)
    return out[0], out[1]


def _load_cached(path, n: int, image_size: int) -> FaceSet | None:
    """A cached split, or None (with a notice, the entry removed) when it does not read back as the
    `n` faces at `image_size` it should hold: the split is generated again."""
    def load(p):
        fs = FaceSet.load(p)
        if len(fs) != n or fs.image_size != image_size:
            raise ValueError(f"holds {len(fs)} faces at {fs.image_size} px, expected {n} at {image_size}")
        return fs
    out, why = read_cache_entry(path, load)
    if why:
        notice(f"{path}: SynthFER cache entry does not read back ({why}); generating the split again")
    return out


__all__ = ["AU_INDEX", "SynthFERConfig", "generate", "load_synthfer", "sample_expressions"]
