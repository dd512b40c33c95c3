"""Prior knowledge of AUs and emotions: the AU-to-emotion matrix `M` and the layer that applies it.

POI abstract: "the Prior Inference Network (PIN) utilizes the prior knowledge of AUs and emotions
to capture intricate motion details" `[abstract]`. Which prior, and how it enters the network,
is not in the abstract: `M` comes from EMFACS or from Du, Tao & Martinez (PNAS 2014), both in
`au_emotion_priors.yaml` with their citations; emotion logits are `scale * a @ (M + dM)^T + b`
with AU activations `a`, a learnable residual `dM` and a learnable per-class bias `b` (neutral's
row of `M` is empty, so its bias carries it) `[ours]`.

Caveat: SynthFER's expressions are drawn from EMFACS prototypes (plus AU25/AU17/AU10 in some),
so a prior of either table is close to SynthFER by construction, closer than to any real
dataset: on SynthFER the prior's benefit is an upper bound. The EMFACS and Du tables are about
equally close to SynthFER's prototypes (row-wise cosine 0.86 and 0.90, notebook 03).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from ...errors import ConfigError

PRIOR_FILE = Path(__file__).with_name("au_emotion_priors.yaml")
TABLES = ("emfacs", "du2014")


@cache
def load_tables() -> dict[str, dict]:
    """The prior tables: name -> {'citation', 'note', 'rows': {class: {AU: weight}}}."""
    return yaml.safe_load(PRIOR_FILE.read_text())


def au_vocabulary(classes: tuple[str, ...]) -> tuple[int, ...]:
    """Sorted AUs named by any table for `classes`: one vocabulary for every prior, so switching
    the prior in an ablation changes only `M`, never the network's AU outputs."""
    aus = set()
    for table in load_tables().values():
        for name in classes:
            aus |= set(table["rows"].get(name, {}))
    return tuple(sorted(aus))


def prior_matrix(table: str, classes: tuple[str, ...], aus: tuple[int, ...], normalize: bool = True) -> Tensor:
    """(K, A) matrix of `table` over `classes` x `aus`. With `normalize`, each non-empty row sums
    to 1, so a face showing a class's full prototype scores 1 for it whatever the prototype's size."""
    tables = load_tables()
    if table not in tables:
        raise ConfigError(f"poi.prior: expected one of {sorted(tables)} or 'learned', got {table!r}")
    rows = tables[table]["rows"]
    m = torch.zeros(len(classes), len(aus))
    for k, name in enumerate(classes):
        if name not in rows:
            raise ConfigError(f"poi.prior: table {table!r} ({PRIOR_FILE.name}) has no row for class {name!r}")
        for au, weight in rows[name].items():
            if au not in aus:
                raise ConfigError(f"poi.prior: AU{au} of {table}/{name} is not in the AU vocabulary {aus}")
            m[k, aus.index(au)] = float(weight)
    if normalize:
        m = m / m.sum(1, keepdim=True).clamp(min=1e-12)
    return m


class AUPrior(nn.Module):
    """AU activations (B, A) -> emotion logits (B, K): `scale * a @ (M + dM)^T + b` (+ `linear(h)`).

    `prior` None means no prior knowledge: the matrix is learned from a random start (ablation).
    `residual`: 'matrix' (learnable dM, zero at start), 'linear' (a zero-initialised linear map
    from the region feature `h` added to the logits) or 'none' (M fixed) `[ours]`.
    """

    def __init__(self, prior: Tensor | None, num_classes: int, num_aus: int, feat_dim: int,
                 residual: str = "matrix", scale: float = 8.0) -> None:
        super().__init__()
        self.register_buffer("prior", torch.zeros(num_classes, num_aus) if prior is None else prior.clone())
        learned = prior is None
        self.delta = nn.Parameter(torch.randn(num_classes, num_aus) / num_aus ** 0.5 if learned
                                  else torch.zeros(num_classes, num_aus)) if learned or residual == "matrix" else None
        self.linear = None
        if residual == "linear":
            self.linear = nn.Linear(feat_dim, num_classes)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def matrix(self) -> Tensor:
        return self.prior if self.delta is None else self.prior + self.delta

    def forward(self, au_prob: Tensor, h: Tensor) -> Tensor:
        z = self.scale * au_prob @ self.matrix().T + self.bias
        return z if self.linear is None else z + self.linear(h)
