"""Action unit detection over a data-driven AU graph.

MTAC abstract: the auxiliary tasks "learn semantic distributions from a data-driven AU graph"
`[abstract]`. Reconstruction after ML-GCN (Chen et al., CVPR 2019, `util.py` gen_A / gen_adj)
`[lineage: ML-GCN]`: nodes are the AUs with labels; from the training split's AU labels,
`P_ij = P(AU_j | AU_i)`, binarised at `threshold` (0.4), the off-diagonal re-weighted by
`reweight / column sum` (0.25), the identity added, and the result normalised as
`D^-1/2 A^T D^-1/2` (D from A's row sums). Two graph convolutions (LeakyReLU 0.2) map learnable
node embeddings (ML-GCN uses word vectors; we have none `[ours]`) to one classifier per AU in
the space of the pooled feature `f`: `AU_logits = f @ W_au.T + b` (the per-AU bias is `[ours]`).
Masked binary cross-entropy `[ours]`: only annotated entries count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conditional_cooccurrence(au: Tensor, mask: Tensor | None = None) -> Tensor:
    """P[i, j] = P(AU_j = 1 | AU_i = 1), counted over samples where both AUs are annotated.

    au: (N, A) 0/1 occurrence; mask: (N, A) 1 where annotated (None: all). Rows of AUs that never
    occur (with j annotated) are 0. The diagonal is set to 0 (ML-GCN counts pairs of distinct labels).
    """
    a = (au > 0.5).float()
    m = torch.ones_like(a) if mask is None else (mask > 0.5).float()
    a = a * m
    both = a.T @ a                       # samples with AU_i and AU_j present (both annotated)
    given = a.T @ m                      # samples with AU_i present and AU_j annotated
    p = both / given.clamp(min=1)
    p.fill_diagonal_(0)
    return p


def adjacency(p: Tensor, threshold: float = 0.4, reweight: float = 0.25) -> Tensor:
    """ML-GCN's correlation matrix from conditional probabilities `p` (A, A), normalised.

    A = 1[p >= threshold] (diagonal 0); A <- A * reweight / (column sums + 1e-6); A <- A + I;
    returns D^-1/2 A^T D^-1/2 with D = diag(row sums of A) (ML-GCN's gen_adj).
    """
    a = (p >= threshold).float()
    a.fill_diagonal_(0)
    a = a * reweight / (a.sum(0, keepdim=True) + 1e-6)
    a = a + torch.eye(len(a))
    d = a.sum(1).pow(-0.5)
    return d[:, None] * a.T * d[None, :]


class GraphConv(nn.Module):
    """out = adj @ (x @ W), no bias `[lineage: ML-GCN GraphConvolution]`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-out_dim ** -0.5, out_dim ** -0.5))

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        return adj @ (x @ self.weight)


class AUGraphHead(nn.Module):
    """Two GCN layers on node embeddings -> per-AU classifiers W_au (A, D); logits f @ W_au.T + b.

    `adj` is a buffer: filled from the training split's AU labels (`set_adjacency`), or left as
    the identity for a method rebuilt from a checkpoint, whose `load_state_dict` restores it.
    """

    def __init__(self, num_aus: int, feat_dim: int, embed_dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(num_aus, embed_dim))
        self.gc1 = GraphConv(embed_dim, hidden)
        self.gc2 = GraphConv(hidden, feat_dim)
        self.bias = nn.Parameter(torch.zeros(num_aus))
        self.register_buffer("adj", torch.eye(num_aus))

    def set_adjacency(self, adj: Tensor) -> None:
        self.adj.copy_(adj)

    def classifiers(self) -> Tensor:
        h = F.leaky_relu(self.gc1(self.embedding, self.adj), 0.2)
        return self.gc2(h, self.adj)

    def forward(self, f: Tensor) -> Tensor:
        return f @ self.classifiers().T + self.bias


class AULinearHead(nn.Module):
    """The graph-free ablation: one independent linear classifier per AU `[ours]`."""

    def __init__(self, num_aus: int, feat_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(feat_dim, num_aus)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(f)


def masked_bce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean binary cross-entropy over the annotated entries (mask 1); 0 when none is annotated."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    m = mask.float()
    return (bce * m).sum() / m.sum().clamp(min=1)
