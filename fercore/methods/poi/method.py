"""POI: Prior-based Objective Inference (Liu, Cai, Lin, Li, Xiao; arXiv 2411.13024), reconstructed.

"POI comprises two key networks": the Prior Inference Network (PIN, `pin.py`) infers a relatively
objective emotion distribution from facial subregions through AU priors; the Target Recognition
Network (TRN, `trn.py`) learns from the annotation and from that soft label, balanced per sample
by the uncertainty module (`uncertainty.py`) `[abstract]`. Everything below the abstract's level
is a documented, switchable choice (docs/poi.md); the total loss is `[ours]`:

    L = sum_k CE(s_k, y) + l_ml L_ml + mean_i[(1 - w_i) CE(p_i, y_i) + w_i T^2 KL(q_i || p_i)]
        + l_u ramp R(u) (+ l_au L_au)

PIN and TRN train jointly; `ramp_start` delays the transfer (a PIN warm-up). TRN's logits are
the prediction. Per-sample diagnostics (training-time, last visit of each epoch): `q`, `u`, `w`,
and the per-region distributions at the last epoch.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import Fraction, NonNeg, OptimConfig, PosInt, Positive, Prob, Range, raise_problems
from ...data.faceset import FaceSet
from ...data.landmarks import TEMPLATE, mean_template, template_landmarks
from ...errors import ConfigError
from ...models.backbone import init_linear
from .. import register
from ..base import Method, SampleRecord
from .mutual import ensemble_mutual_loss, pairwise_mutual_loss
from .pin import PIN
from .prior import au_vocabulary, load_tables, prior_matrix
from .regions import DEFAULT_REGIONS, REGIONS
from .soft_label import objective_soft_label
from .trn import transfer_loss
from .uncertainty import UncertaintyHead, log_penalty, ramp, rank_penalty

REGION_NAMES = tuple(REGIONS)
PRIOR_TABLES = (*load_tables(), "learned")  # the tables of au_emotion_priors.yaml, or no prior knowledge


@dataclass
class POIParams:
    """POI's parameters; every row of POI's reconstruction table (docs/poi.md) can be switched off
    or swapped. Choices and ranges are checked by the config layer."""

    # facial subregions [lineage: AMP-Net]: names from regions.REGIONS
    regions: list[Literal[REGION_NAMES]] = field(default_factory=lambda: list(DEFAULT_REGIONS))
    patch: Annotated[float, Range(0, 1, lo_open=True)] = 10 / 28  # landmark patch side as a fraction of the feature map
    stride: PosInt = 8              # PIN stem output stride (the map the regions are cut from)
    landmarks: Literal["auto", "template"] = "auto"  # auto: the batch's landmarks, else the template | template: always
    # PIN [ours]
    pin_backbone: str = ""          # timm name of PIN's stem; empty: model.backbone
    pin_weights: bool = True        # load model.weights into PIN's stem too (the same network cut at `stride`) `[ours]`
    branch_width: PosInt = 256
    # prior knowledge of AUs and emotions
    prior: Literal[PRIOR_TABLES] = "emfacs"  # emfacs | du2014 | learned (no prior knowledge)
    residual: Literal["matrix", "linear", "none"] = "matrix"
    prior_scale: Positive = 8.0     # initial logit scale of the prior layer
    # mutual learning among regions [lineage: DUML T=4]
    mutual: Literal["ensemble", "pairwise", "none"] = "ensemble"
    ml_weight: NonNeg = 1.0
    ml_temperature: Positive = 4.0
    # objective soft label and TRN transfer [ours]
    q_temperature: Positive = 4.0
    # dynamic: w = u * ramp | fixed: w = w_fixed * ramp | none: w = 0
    transfer: Literal["dynamic", "fixed", "none"] = "dynamic"
    w_fixed: Prob = 0.5
    # fraction of the run before any transfer (PIN warm-up)
    ramp_start: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
    ramp_length: Positive = 1 / 6   # fraction of the run the sigmoid ramp-up takes
    # uncertainty regulariser [ours]
    u_input: Literal["feature", "feature+label"] = "feature"  # feature: u = MLP(f) | feature+label: MLP([f, one-hot y])
    u_reg: Literal["log", "rank", "none"] = "log"
    u_weight: NonNeg = 0.5
    u_beta: Fraction = 0.3          # rank: fraction of the batch in the uncertain group
    u_margin: NonNeg = 0.15         # rank: required gap between the groups
    # optional AU supervision of PIN: masked BCE where AU labels exist [ours]
    au_weight: NonNeg = 0.0
    # what au_weight > 0 does on a training split without labels for the vocabulary's AUs: required = a
    # configuration error | auto = PIN's AUs stay latent, said in one line `[ours]`
    au_supervision: Literal["required", "auto"] = "auto"

    def problems(self, key: str) -> list[str]:
        if not self.regions:
            return [f"config key '{key}regions' must name at least one of {list(REGIONS)}"]
        if len(set(self.regions)) != len(self.regions):
            return [f"config key '{key}regions' names a region twice: {list(self.regions)}"]
        return []


def au_plan(p: POIParams, cols: Tensor, aus: list[int], dataset: str) -> tuple[dict, list[str]]:
    """Whether PIN's AU logits are supervised, and why (`cols`: the dataset column of each vocabulary
    AU, -1 where it has none); with `au_supervision=required`, a problem line when they cannot be."""
    have = int((cols >= 0).sum())
    plan = {"requested": p.au_supervision, "au_weight": p.au_weight, "used": False}
    if p.au_weight == 0:
        return {**plan, "why": "poi.au_weight=0: PIN's AUs are latent"}, []
    if have:
        return {**plan, "used": True, "why": f"{have} of the {len(aus)} vocabulary AUs have labels"}, []
    why = (f"dataset {dataset!r} has no labels for the AUs {list(aus)}; add them with data.au_file "
           f"(docs/datasets.md#side-files)")
    if p.au_supervision == "auto":
        return {**plan, "why": f"auto: {why}"}, []
    return {**plan, "why": why}, [f"poi.au_weight={p.au_weight}, but the training set has no labels for the AUs "
                                  f"{list(aus)}: {why.split('; ', 1)[1]}, or set poi.au_supervision=auto"]


@register
class POI(Method):
    """PIN + TRN + uncertainty-weighted transfer (see the module docstring)."""

    name = "poi"
    Params = POIParams
    noise_score = ("u", False)

    def __init__(self, cfg, train) -> None:
        super().__init__(cfg, train)
        p = self.params
        self.regions = tuple(p.regions)
        classes = tuple(self.facts.classes)
        self.aus = au_vocabulary(classes)
        # vocabulary AU -> column of the dataset's AU labels (-1: not annotated)
        names = self.facts.au_names or []
        cols = torch.tensor([names.index(f"AU{a}") if f"AU{a}" in names else -1 for a in self.aus])
        self.au_plan, problems = au_plan(p, cols, self.aus, cfg.data.dataset)
        self.au_supervised = self.au_plan["used"]
        try:
            prior = None if p.prior == "learned" else prior_matrix(p.prior, classes, self.aus)
            self.pin = PIN(p.pin_backbone or cfg.model.backbone, p.stride, self.regions, p.patch, self.aus,
                           prior, self.num_classes, p.residual, p.branch_width, p.prior_scale)
        except ConfigError as e:
            raise_problems(problems + str(e).splitlines())   # every incompatible choice at once
        except ValueError as e:
            raise_problems(problems + [f"poi: {e}"])
        raise_problems(problems)
        if isinstance(train, FaceSet) and p.au_weight > 0 and int(os.environ.get("RANK", "0")) == 0:
            print(f"poi: PIN AU supervision {'on' if self.au_supervised else 'off'} ({self.au_plan['why']})")
        self.fc = init_linear(nn.Linear(self.backbone.num_features, self.num_classes))
        self.uncertainty = None
        if p.transfer == "dynamic":
            self.uncertainty = UncertaintyHead(self.backbone.num_features,
                                               num_classes=self.num_classes if p.u_input == "feature+label" else 0)
        # landmark template for faces without landmarks: the training set's mean, else ArcFace's (a
        # buffer, so a method rebuilt from DataFacts gets the training set's template from its checkpoint)
        lmk = getattr(train, "landmarks", None)
        self.register_buffer("template", TEMPLATE.clone() if lmk is None else mean_template(lmk, self.facts.image_size))
        self.register_buffer("au_cols", cols)
        self.record_u, self.record_w = SampleRecord(self.num_train), SampleRecord(self.num_train)
        self.record_q = torch.full((self.num_train, self.num_classes), math.nan)
        self.record_regions = torch.full((self.num_train, len(self.regions), self.num_classes), math.nan)
        self.record_epoch = -1

    # --- inputs ---
    def batch_landmarks(self, batch: dict) -> Tensor:
        """The batch's landmarks, or the template (mirrored for flipped images) when it has none."""
        x = batch["image"]
        if self.params.landmarks == "auto" and "landmarks" in batch:
            return batch["landmarks"]
        return template_landmarks(self.template, x.shape[0], x.shape[-2:], batch.get("flipped"))

    # --- model ---
    def forward(self, batch: dict) -> dict[str, Tensor]:
        x = batch["image"]
        out = self.pin(x, self.batch_landmarks(batch))
        f = self.backbone(x)
        logits = self.fc(f)
        out.update(logits=logits, feature=f)
        if self.uncertainty is not None:
            # the annotation where the batch has one (training, and scoring labelled samples); for
            # unlabelled images (fercore predict) TRN's prediction stands in for it
            out["u"] = self.uncertainty(f, batch["label"] if "label" in batch else logits.detach().argmax(1))
        return out

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, Tensor]:
        """TRN's logits; PIN's ensemble distribution at T = 1 ('pin_prob', PIN's own prediction) and
        the objective soft label exactly as TRN gets it in training ('q', at `q_temperature`)."""
        out = self(batch)
        region_logits = out["region_logits"].float()
        pred = {"logits": out["logits"], "pin_prob": objective_soft_label(region_logits),
                "q": objective_soft_label(region_logits, self.params.q_temperature),
                "region_prob": out["region_logits"].float().softmax(-1), "au_prob": self.pin.au_prob(out["au_logits"])}
        if "u" in out:
            pred["u"] = out["u"]
        return pred

    # --- losses ---
    def transfer_weight(self, out: dict, r: float) -> Tensor:
        """w = u * ramp (dynamic), w_fixed * ramp (fixed) or 0 (none), one per sample."""
        p = self.params
        if p.transfer == "dynamic":
            return out["u"].float() * r
        return out["logits"].new_full((len(out["logits"]),), p.w_fixed * r if p.transfer == "fixed" else 0.0).float()

    def au_loss(self, batch: dict, au_logits: list[Tensor]) -> Tensor:
        """Masked BCE of every region's AU logits against the dataset's AU labels."""
        total, count = au_logits[0].new_zeros(()), 0
        for ra, logits in zip(self.pin.region_aus, au_logits):
            cols = self.au_cols[[self.aus.index(a) for a in ra]]
            keep = cols >= 0
            if not bool(keep.any()):
                continue
            target = batch["au"][:, cols[keep]].float()
            mask = batch["au_mask"][:, cols[keep]].float()
            bce = F.binary_cross_entropy_with_logits(logits[:, keep], target, reduction="none")
            total = total + (bce * mask).sum()
            count = count + mask.sum()
        return total / max(float(count), 1.0)

    def loss(self, batch, out, state):
        p, y = self.params, batch["label"]
        s = out["region_logits"].float()                                       # (B, R, K)
        pin_ce = F.cross_entropy(s.flatten(0, 1), y.repeat_interleave(s.shape[1]), reduction="sum") / len(y)
        if p.mutual == "ensemble":
            ml = ensemble_mutual_loss(s, p.ml_temperature)
        elif p.mutual == "pairwise":
            ml = pairwise_mutual_loss(s, p.ml_temperature)
        else:
            ml = s.new_zeros(())
        q = objective_soft_label(s.detach(), p.q_temperature)
        r = ramp(state.epoch, state.epochs, p.ramp_start, p.ramp_length)
        w = self.transfer_weight(out, r)
        trn, logs = transfer_loss(out["logits"].float(), y, q, w, p.q_temperature)
        u_reg = s.new_zeros(())
        if p.transfer == "dynamic" and p.u_reg == "log":
            u_reg = r * log_penalty(out["u"].float())
        elif p.transfer == "dynamic" and p.u_reg == "rank":
            u_reg = r * rank_penalty(out["u"].float(), p.u_beta, p.u_margin)
        loss = pin_ce + p.ml_weight * ml + trn + p.u_weight * u_reg
        if self.au_supervised:
            au = self.au_loss(batch, out["au_logits"])
            loss = loss + p.au_weight * au
            logs["au_bce"] = au.detach()
        self.record(batch["index"], q, s.detach().softmax(-1), out.get("u"), w, state.epoch)
        pin_pred = s.detach().mean(1).argmax(1)
        logs.update(pin_ce=pin_ce.detach(), ml=ml.detach(), w_mean=w.detach().mean(),
                    ramp=torch.tensor(r), pin_acc=(pin_pred == y).float().mean())
        if "u" in out:
            logs.update(u_reg=u_reg.detach(), u_mean=out["u"].detach().float().mean())
        return loss, logs

    @torch.no_grad()
    def record(self, index: Tensor, q: Tensor, region_prob: Tensor, u: Tensor | None, w: Tensor, epoch: int) -> None:
        """Keep this epoch's q, region distributions, u and w per training sample (NaN for samples
        not seen this epoch)."""
        if self.record_q.device != index.device:
            self.record_q, self.record_regions = self.record_q.to(index.device), self.record_regions.to(index.device)
        if epoch != self.record_epoch:
            self.record_q.fill_(math.nan)
            self.record_regions.fill_(math.nan)
            self.record_epoch = epoch
        self.record_q[index] = q.float()
        self.record_regions[index] = region_prob.float()
        self.record_w.write(index, w, epoch)
        if u is not None:
            self.record_u.write(index, u, epoch)

    def diagnostics(self) -> dict[str, Tensor]:
        """q (N, K), w and u (N,) every epoch; the per-region distributions (N, R, K) at the last
        epoch only (every epoch would take 60x the space in the paper profile)."""
        out = {"q": self.record_q, "w": self.record_w.values}
        if self.uncertainty is not None:
            out["u"] = self.record_u.values
        if self.record_epoch == self.cfg.train.epochs - 1:
            out["region_prob"] = self.record_regions
        return out

    def extra_weight_targets(self) -> dict[str, nn.Module]:
        """PIN's stem, when it is the backbone's architecture and `pin_weights` is on."""
        same = (self.params.pin_backbone or self.cfg.model.backbone) == self.cfg.model.backbone
        return {"pin.stem": self.pin.stem} if self.params.pin_weights and same else {}

    def describe(self) -> dict:
        """Resolved choices for env.json: the AU vocabulary, each region's AUs, the prior's source."""
        p = self.params
        return {"aus": list(self.aus), "regions": {r: list(a) for r, a in zip(self.regions, self.pin.region_aus)},
                "prior": p.prior if p.prior == "learned" else {p.prior: load_tables()[p.prior]["citation"]},
                "landmark_template": "train mean" if self.facts.has_landmarks else "arcface_112",
                "au_supervision": self.au_plan}

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """Both backbones (TRN's and PIN's stem) at `optim.lr`, the heads and branches at `head_lr`."""
        backbone = list(self.backbone.parameters()) + list(self.pin.stem.parameters())
        ids = {id(q) for q in backbone}
        heads = [q for q in self.parameters() if id(q) not in ids]
        return [{"params": backbone, "lr": optim.lr, "name": "backbone"},
                {"params": heads, "lr": optim.head_lr or optim.lr, "name": "heads"}]
