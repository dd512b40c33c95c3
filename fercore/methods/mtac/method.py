"""MTAC: multi-task assisted correction (Liu, Zhang, Kauttonen, Zhao; arXiv 2212.07144), reconstructed.

One module per component the abstract names (docs/mtac.md#components); every row is a switch:

| abstract                                    | module            | switch (`mtac.<key>`)            |
|---------------------------------------------|-------------------|----------------------------------|
| confidence estimation block                 | confidence.py     | confidence = logit / loss / none |
| weighted regularization module              | regularization.py | wrm = rank / none, class_weights |
| action unit detection, data-driven AU graph | au_graph.py       | au = graph / linear / none       |
| valence-arousal measurement                 | va.py             | va = ccc / mse / none            |
| re-labeling by feature-level similarity     | relabel.py        | relabel = similarity / none      |
| combine with existing frameworks            | here              | base = ce / scn / rul            |
| fully- or weakly-supervised                 | here              | aux_fraction (AU/VA masks)       |
| (which auxiliary tasks the data can serve)  | here              | au = auto, va = auto             |

Total loss `[ours]`: `L = L_expr(c) + l_wr L_wr + l_au L_au + l_va L_va`, all weights 1.

`base` picks the expression branch the MTAC modules attach to `[ours]`: `ce` a linear classifier
on the pooled feature `f`; `scn` the same plus SCN's own relabel rule (p_max - p_label > 0.2),
since MTAC's CEB and WRM already are SCN's importance weighting and rank regularisation
`[lineage: SCN]`; `rul` RUL's uncertainty mixup of `mu` features with the add-up loss
`[lineage: RUL]`. The CEB reads `f` in every case and scales whatever logits the base produces.

Weak supervision `[ours]`: AU and VA targets always enter through their masks; `aux_fraction`
keeps the AU/VA labels of that (seeded) fraction of the training samples and masks the rest, so
the same code runs fully supervised (1.0), weakly (between) or without auxiliary labels (0.0).
Targets may be a reader's own or pseudo-labels from a side file (`data.au_file`, `data.va_file`,
written by `fercore pseudo-label`; docs/mtac.md#weak-supervision-with-pseudo-labels).

Which auxiliary tasks run `[ours]` (`auxiliary_plan`): `au=auto` is the AU graph (`graph`) when the
training split has AU targets and no AU task otherwise, `va=auto` likewise `ccc` or none; explicit
values need their targets, and every explicit choice the data cannot serve is reported at once,
before the run directory exists. The decision reads only `DataFacts`, so a checkpoint rebuilds the
same model; it is printed in one line when training starts and kept in `describe()` (env.json).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import Fraction, NonNeg, NonNegInt, PosInt, Positive, Prob, Range, raise_problems
from ...data.faceset import FaceSet
from ...models.backbone import init_linear
from .. import register
from ..base import DataFacts, Method, SampleRecord, TrainState, annotated_images
from ..rul import add_up_loss, feature_map_shape, rul_head, uncertainty_mixup
from .au_graph import AUGraphHead, AULinearHead, adjacency, conditional_cooccurrence, masked_bce
from .confidence import ConfidenceBlock, confidence_weighted_mean
from .regularization import class_weights, high_group_mask, rank_regularization
from .relabel import ClassTemplates, first_relabel_epoch, relabel_step, similarity_margin
from .va import VAHead, va_loss


@dataclass
class MTACParams:
    """MTAC's switches and their defaults (provenance in each module's docstring; the whole
    table in docs/mtac.md). Choices and ranges are checked by the config layer."""

    base: Literal["ce", "scn", "rul"] = "ce"  # the framework MTAC attaches to `[ours]`
    # confidence estimation block
    # logit: CE(c z, y) `[lineage: SCN]` | loss: c-weighted mean `[ours]`
    confidence: Literal["logit", "loss", "none"] = "logit"
    confidence_hidden: NonNegInt = 128  # MLP width of c = sigmoid(MLP(f)); 0: SCN's single linear layer `[ours]`
    confidence_input: Literal["feature", "feature+label"] = "feature"  # feature: c from f alone | feature+label:
                                    # from [f, one-hot label] (evaluation: the predicted label) `[ours, after DMUE's
                                    # pairwise uncertainty]`
    # weighted regularization module
    wrm: Literal["rank", "none"] = "rank"  # rank: SCN's rank regularisation of c `[lineage: SCN]`
    beta: Fraction = 0.7            # high-confidence fraction of a batch `[lineage: SCN]`
    margin1: NonNeg = 0.07          # rank margin at batch 64 (0.15 at batch >= 256) `[lineage: SCN]`
    wr_weight: NonNeg = 1.0         # l_wr `[ours]`
    # class-imbalance weights of the expression loss `[ours]`
    class_weights: Literal["none", "inverse", "sqrt"] = "none"
    # action unit detection over a data-driven AU graph
    # graph: ML-GCN classifiers `[lineage: ML-GCN]` | linear | none | auto: graph when the training split has
    # AU targets, else none `[ours]`
    au: Literal["graph", "linear", "none", "auto"] = "auto"
    au_weight: NonNeg = 1.0         # l_au `[ours]`
    au_threshold: Prob = 0.4        # binarisation of P(AU_j | AU_i) `[lineage: ML-GCN]`
    au_reweight: Prob = 0.25        # off-diagonal mass p `[lineage: ML-GCN]`
    au_embed: PosInt = 64           # node embedding size (ML-GCN: 300-d word vectors) `[ours]`
    au_hidden: PosInt = 256         # first GCN layer width `[ours]`
    au_fuse: bool = False           # alternative reading: fuse the AU distribution into the feature `[ours]`
    # valence-arousal measurement
    # ccc: (1-CCC_v)+(1-CCC_a) | mse | none | auto: ccc when the training split has VA targets, else none `[ours]`
    va: Literal["ccc", "mse", "none", "auto"] = "auto"
    va_weight: NonNeg = 1.0         # l_va `[ours]`
    va_min_samples: Annotated[int, Range(2)] = 8  # fewer annotated samples in a batch: MSE instead of CCC `[ours]`
    # re-labeling guided by feature-level similarity
    relabel: Literal["similarity", "none"] = "similarity"
    margin2: NonNeg = 0.2           # similarity margin cos(f,t_k*) - cos(f,t_y) `[ours, after SCN]`
    template_momentum: Annotated[float, Range(0, 1, hi_open=True)] = 0.9  # EMA momentum of the class templates `[ours]`
    template_center: bool = True    # centre features by their running mean before the cosine `[ours]`
    relabel_start: Positive = 1 / 6  # first relabel epoch: >= 1 an epoch (1-based), < 1 a fraction of the run `[ours]`
    relabel_group: Literal["low", "all"] = "low"  # low: only the batch's low-confidence group `[ours]`
    # consecutive visits (epochs) a sample must meet the rule, same k*, before it is relabelled `[ours]`
    relabel_votes: PosInt = 1
    # fully- vs weakly-supervised
    aux_fraction: Prob = 1.0        # share of training samples keeping AU/VA labels `[ours]`
    aux_seed: NonNegInt = 0         # seed of that draw `[ours]`
    # base = scn / rul
    scn_margin2: Prob = 0.2         # SCN's own relabel margin on p_max - p_label `[lineage: SCN]`
    rul_dim: PosInt = 64            # RUL feature size `[lineage: RUL]`
    rul_dropout: Prob = 0.4         # RUL head dropout `[lineage: RUL]`


AUTO = {"au": "graph", "va": "ccc"}  # what `auto` resolves to when the training split has the targets [ours]
SIDE_FILES = "docs/datasets.md#side-files"


def auxiliary_plan(p: MTACParams, facts: DataFacts, dataset: str, data: FaceSet | None = None,
                   side_files: dict[str, str] | None = None) -> tuple[dict[str, dict], list[str]]:
    """Which auxiliary tasks run and why, from the data facts alone: `{"au": {"requested", "used",
    "why"}, "va": {...}}`, and one problem line for every explicit choice the data cannot serve
    (`data`, when given, only adds coverage counts to the reasons; `side_files`, task -> the
    `data.au_file` / `data.va_file` given, names a side file that brought no targets)."""
    side_files = side_files or {}
    have = {"au": bool(facts.au_names), "va": facts.has_va}
    what = {"au": "AU", "va": "valence-arousal"}
    plan, problems = {}, []
    for task in ("au", "va"):
        req = getattr(p, task)
        if have[task] and data is not None:
            target, mask = (data.au, data.au_mask) if task == "au" else (data.va, data.va_mask)
            count = f"{annotated_images(target, mask)} of {len(data)} training images have {what[task]} targets"
        else:
            count = f"the training split has {what[task]} targets"
        if task == "au" and have[task]:
            count += f", {len(facts.au_names)} AUs"
        if req == "none":
            used, why = "none", f"mtac.{task}=none"
        elif have[task]:
            used = AUTO[task] if req == "auto" else req
            why = ("auto: " if req == "auto" else "") + count
        elif req == "auto" and side_files.get(task):
            n = f" of the {len(data)}" if data is not None else ""
            used, why = "none", (f"auto: data.{task}_file={side_files[task]} gave {what[task]} targets to none"
                                 f"{n} training images (rows without values, or ids that match no image; "
                                 f"{SIDE_FILES})")
        elif req == "auto":
            used, why = "none", (f"auto: dataset {dataset!r} has no {what[task]} targets; add them with "
                                 f"data.{task}_file ({SIDE_FILES}, e.g. from `fercore pseudo-label`)")
        else:
            used, why = req, ""
            problems.append(f"mtac.{task}={req} needs {what[task]} labels, and dataset {dataset!r} has none; set "
                            f"mtac.{task}=auto (or none), or give {what[task]} targets with data.{task}_file "
                            f"({SIDE_FILES})")
        plan[task] = {"requested": req, "used": used, "why": why}
    return plan, problems


def plan_line(plan: dict[str, dict]) -> str:
    """The one line a training run prints about its auxiliary tasks."""
    parts = []
    for task, name in (("au", "AU task"), ("va", "VA task")):
        t = plan[task]
        parts.append(f"{name} {'off' if t['used'] == 'none' else t['used']} ({t['why']})")
    return "mtac: " + "; ".join(parts)


@register
class MTAC(Method):
    """Confidence-weighted expression branch + AU graph and VA auxiliary tasks + similarity relabeling."""

    name = "mtac"
    Params = MTACParams
    noise_score = ("confidence", True)

    def __init__(self, cfg, train) -> None:
        super().__init__(cfg, train)
        p = self.params
        facts, dim = self.facts, self.backbone.num_features
        data = train if isinstance(train, FaceSet) else None  # None: rebuilt from a checkpoint
        self.aux_plan, problems = auxiliary_plan(p, facts, cfg.data.dataset, data,
                                                 {"au": cfg.data.au_file, "va": cfg.data.va_file})
        raise_problems(problems)                             # every incompatible choice at once
        self.au_mode, self.va_mode = self.aux_plan["au"]["used"], self.aux_plan["va"]["used"]
        if data is not None and int(os.environ.get("RANK", "0")) == 0:
            print(plan_line(self.aux_plan))
        num_aus = len(facts.au_names or []) if self.au_mode != "none" else 0

        # expression branch of the base framework
        expr_dim = p.rul_dim if p.base == "rul" else dim
        if p.base == "rul":
            shape = feature_map_shape(self.backbone, facts.channels, facts.image_size)
            self.mu = rul_head(shape, p.rul_dim, p.rul_dropout)
            self.logvar = rul_head(shape, p.rul_dim, p.rul_dropout)
        self.fc = init_linear(nn.Linear(expr_dim, self.num_classes))
        label_in = self.num_classes if p.confidence_input == "feature+label" else 0
        self.ceb = ConfidenceBlock(dim + label_in, p.confidence_hidden) if p.confidence != "none" else None
        self.register_buffer("class_weight", torch.ones(self.num_classes))
        if data is not None:
            self.class_weight.copy_(class_weights(data.label, self.num_classes, p.class_weights))

        # weak supervision: which samples keep their AU/VA labels
        self.register_buffer("aux_keep", torch.ones(self.num_train))
        if data is not None and p.aux_fraction < 1:
            gen = torch.Generator().manual_seed(p.aux_seed)
            self.aux_keep.copy_((torch.rand(self.num_train, generator=gen) < p.aux_fraction).float())

        # auxiliary tasks
        self.au_head: nn.Module | None = None
        if self.au_mode == "graph":
            self.au_head = AUGraphHead(num_aus, dim, p.au_embed, p.au_hidden)
            if data is not None:
                mask = (data.au_mask if data.au_mask is not None else torch.ones_like(data.au)) * self.aux_keep[:, None]
                self.au_head.set_adjacency(adjacency(conditional_cooccurrence(data.au, mask),
                                                     p.au_threshold, p.au_reweight))
        elif self.au_mode == "linear":
            self.au_head = AULinearHead(num_aus, dim)
        self.au_fuse = nn.Linear(num_aus, expr_dim) if p.au_fuse and self.au_head is not None else None
        self.va_head = VAHead(dim) if self.va_mode != "none" else None

        # relabeling
        self.templates = (ClassTemplates(self.num_classes, dim, p.template_momentum, p.template_center)
                          if p.relabel != "none" else None)
        # consecutive visits on which a sample met the rule, and the class it pointed to (-1: none)
        self.register_buffer("relabel_streak", torch.zeros(self.num_train, dtype=torch.long))
        self.register_buffer("relabel_target", torch.full((self.num_train,), -1, dtype=torch.long))

        # per-sample diagnostics of the latest epoch
        n = self.num_train
        self.rec_confidence = SampleRecord(n)
        self.rec_margin = SampleRecord(n)
        self.rec_similar = SampleRecord(n)
        self.rec_au = SampleRecord(n, num_aus) if num_aus else None
        self.rec_va = SampleRecord(n, 2)

    # --- model ---
    def forward(self, batch: dict) -> dict[str, Tensor]:
        p = self.params
        fmap = self.backbone.forward_features(batch["image"])
        f = self.backbone.pool(fmap)
        out: dict[str, Tensor] = {"feature": f}
        if self.au_head is not None:
            out["au_logits"] = self.au_head(f)
        if self.va_head is not None:
            out["va"] = self.va_head(f)
        h = self.mu(fmap) if p.base == "rul" else f
        if self.au_fuse is not None:
            h = h + self.au_fuse(out["au_logits"].sigmoid())
        logits = self.fc(h)
        if p.base == "rul" and self.training:
            perm = torch.randperm(len(h), device=h.device)
            mixed, u, _ = uncertainty_mixup(h, self.logvar(fmap), perm)
            out.update(plain_logits=logits, perm=perm, uncertainty=u)
            logits = self.fc(mixed)
        if self.ceb is not None:
            x = f
            if p.confidence_input == "feature+label":  # training: the given label; evaluation: the prediction
                y = batch["label"] if self.training else out.get("plain_logits", logits).argmax(1)
                x = torch.cat([f, F.one_hot(y, self.num_classes).to(f.dtype)], 1)
            c = self.ceb(x)
            out["confidence"] = c
            if p.confidence == "logit":
                logits = c[:, None] * logits
        out["logits"] = logits
        return out

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, Tensor]:
        """Logits, and the confidence, AU probabilities and VA the method estimates."""
        out = self(batch)
        pred = {"logits": out["logits"]}
        if "confidence" in out:
            pred["confidence"] = out["confidence"]
        if "au_logits" in out:
            pred["au"] = out["au_logits"].sigmoid()
        if "va" in out:
            pred["va"] = out["va"]
        return pred

    # --- losses ---
    def loss(self, batch: dict, out: dict[str, Tensor], state: TrainState) -> tuple[Tensor, dict[str, Tensor]]:
        p, y = self.params, batch["label"]
        weight = self.class_weight if p.class_weights != "none" else None
        if p.base == "rul":
            per = add_up_loss(out["logits"], y, out["perm"], reduction="none", weight=weight)
        else:
            per = F.cross_entropy(out["logits"], y, weight=weight, reduction="none")
        c = out.get("confidence")
        expr = confidence_weighted_mean(per, c) if p.confidence == "loss" else per.mean()
        loss, logs = expr, {"expr": expr.detach()}
        if c is not None:
            logs["confidence"] = c.detach().mean()
            if p.wrm == "rank":
                wr = rank_regularization(c, p.beta, p.margin1)
                loss = loss + p.wr_weight * wr
                logs["wr"] = wr.detach()
        keep = self.aux_keep[batch["index"]]
        if "au_logits" in out:
            mask = batch.get("au_mask", torch.ones_like(batch["au"])) * keep[:, None]
            au = masked_bce(out["au_logits"], batch["au"], mask)
            loss = loss + p.au_weight * au
            logs["au_bce"] = au.detach()
        if "va" in out:
            mask = batch.get("va_mask", torch.ones_like(keep)).reshape(-1) * keep
            va = va_loss(out["va"], batch["va"], mask, self.va_mode, p.va_min_samples)
            loss = loss + p.va_weight * va
            logs["va"] = va.detach()
        return loss, logs

    # --- relabeling and diagnostics ---
    @torch.no_grad()
    def after_step(self, batch: dict, out: dict[str, Tensor], state: TrainState) -> None:
        """Record the per-sample diagnostics; update the class templates with the batch's
        high-confidence group; from the start epoch, relabel (module docstring of relabel.py)."""
        p, idx, y, epoch = self.params, batch["index"], batch["label"], state.epoch
        c = out.get("confidence")
        if c is not None:
            self.rec_confidence.write(idx, c, epoch)
        if "au_logits" in out:
            self.rec_au.write(idx, out["au_logits"].sigmoid(), epoch)
        if "va" in out:
            self.rec_va.write(idx, out["va"], epoch)
        high = high_group_mask(c, p.beta) if c is not None else torch.ones_like(y, dtype=torch.bool)
        f = out["feature"].detach()
        cos = None
        if self.templates is not None:
            self.templates.update(f, y, high)
            cos = self.templates.similarity(f)
            best, gap = similarity_margin(cos, y)
            self.rec_margin.write(idx, gap, epoch)
            self.rec_similar.write(idx, best, epoch)
        decision = relabel_step(p, epoch=epoch, epochs=state.epochs, cos=cos,
                                logits=out.get("plain_logits", out["logits"]).detach().float(), label=y,
                                low=~high if c is not None else None, index=idx, streak=self.relabel_streak,
                                target=self.relabel_target)
        if decision is not None:
            mask, new, score = decision
            state.relabel(idx[mask], new[mask], score[mask])

    def diagnostics(self) -> dict[str, Tensor]:
        """confidence (N,), similarity_margin and similar_class (N,: the most similar template's class
        k*), au_prob (N, A), va (N, 2), each from the latest epoch's visit of the sample."""
        out = {}
        if self.ceb is not None:
            out["confidence"] = self.rec_confidence.values
        if self.templates is not None:
            out["similarity_margin"] = self.rec_margin.values
            out["similar_class"] = self.rec_similar.values
        if self.au_head is not None:
            out["au_prob"] = self.rec_au.values
        if self.va_head is not None:
            out["va"] = self.rec_va.values
        return out

    def describe(self) -> dict:
        p = self.params
        d = {"base": p.base, "first_relabel_epoch": first_relabel_epoch(p.relabel_start, self.cfg.train.epochs)
             if p.relabel != "none" or p.base == "scn" else None,
             "aux_labels_kept": float(self.aux_keep.mean()), "auxiliary": self.aux_plan}
        if isinstance(self.au_head, AUGraphHead):
            d["au_nodes"] = list(self.facts.au_names)
            d["au_graph_edges"] = int((self.au_head.adj > 0).sum()) - len(self.au_head.adj)
        return d
