"""RunConfig: one typed config built from defaults, a profile, a YAML file and `key=value` overrides.

The config layer (docs/architecture.md#configuration) checks every value once, before anything
is created on disk: each field's annotation is its contract. `Literal[...]` fields take one of a
closed set of choices (with a "did you mean" hint), `Annotated[float, Range(...)]` fields a number
in a range, tuples their length; floats accept scientific notation (`1e-3`) from the command line
and YAML; sections may add cross-field checks (`problems`). All problems are reported at once,
one line each, naming the key, the value and what is expected.

Method parameters live under the method's own name (`scn.margin1=0.07`). Each method registers
its `Params` dataclass here (`register_params`, called by `fercore.methods.register`), so the
config layer checks them without importing the methods.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from .errors import ConfigError
from .files import sha256_text

# --- value contracts ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """A numeric range for `Annotated[int | float, Range(...)]` fields; None = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


Prob = Annotated[float, Range(0, 1)]                   # a probability or a fraction
Positive = Annotated[float, Range(0, lo_open=True)]    # > 0
NonNeg = Annotated[float, Range(0)]                    # >= 0
PosInt = Annotated[int, Range(1)]                      # >= 1
NonNegInt = Annotated[int, Range(0)]                   # >= 0
Fraction = Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]  # in (0, 1)

Device = str  # auto | cpu | cuda | cuda:N, checked by pattern below
Amp = Literal["auto", "fast", "bf16", "none"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
Residency = Literal["auto", "device", "host"]
Normalize = Literal["imagenet", "msceleb", "half"]
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
FLOAT_PATTERN = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


# --- the config sections ------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthFERConfig:
    """How SynthFER faces, expressions and annotators are drawn `[ours]` (docs/datasets.md#synthfer).

    Sizes (samples per split, pixels) come from the run's data config; together with these
    fields they key the on-disk cache.
    """

    protocol: Literal["synth7", "synth8"] = "synth7"   # synth7 (RAF-DB's 7 classes) | synth8 (adds contempt)
    prior: Literal["rafdb", "uniform"] = "rafdb"
    blend_fraction: Prob = 0.35     # share of faces that blend in a second emotion
    blend_weight: tuple[Prob, Prob] = (0.5, 0.8)  # weight of the true emotion in a blend
    intensity: tuple[Prob, Prob] = (0.35, 1.0)     # expression strength range
    n_annotators: PosInt = 10
    perception_noise: NonNeg = 0.16  # std of each annotator's AU perception error
    vote_temperature: Positive = 0.05  # softness of an annotator's choice among residuals
    expression_evidence: NonNeg = 0.15  # residual cost of calling any non-neutral expression
    annotator_bias: NonNeg = 0.3     # std of per-annotator class preferences (in logits)
    p_glasses: Prob = 0.12
    p_occluder: Prob = 0.06
    seed: NonNegInt = 0             # the dataset's seed, independent of a run's training seed
    # 0: every face a new person (the default). N > 0: every face is a render of one of N identities
    # (balanced, extras['identity']) whose facial geometry (render.GEOMETRY: face shape, eyes, brows,
    # nose, mouth) is drawn once per identity from `seed`, shared by both splits, while colour, hair,
    # glasses, pose, lighting, background, occluders and the expression are drawn per render: only face
    # structure tells identities apart (fercore.pretrain's face-recognition-style objective) `[ours]`
    identities: NonNegInt = 0

    def problems(self, key: str) -> list[str]:
        return _ordered_pairs(self, key, ("blend_weight", "intensity"))


@dataclass
class AugmentConfig:
    """Training-time augmentation, applied per batch on the device `[lineage: SCN/RUL/EAC]`."""

    flip: Prob = 0.5                # horizontal flip probability
    shift: NonNeg = 0.0             # max translation as a fraction of the image side
    erasing: Prob = 0.5             # RandomErasing probability, scale (0.02, 0.25)
    # random resized crop [lineage: torchvision RandomResizedCrop]; (1, 1) = off
    crop_scale: tuple[Annotated[float, Range(0, 1, lo_open=True)],
                      Annotated[float, Range(0, 1, lo_open=True)]] = (1.0, 1.0)
    crop_ratio: tuple[Positive, Positive] = (0.75, 1.3333333333333333)  # aspect ratio range of the crop
    # landmark-consistent affine [lineage: AMP-Net/DUML recipe for POI]; 0 / (1, 1) = off
    rotate: Annotated[float, Range(0, 180)] = 0.0  # max rotation in degrees
    scale: tuple[Positive, Positive] = (1.0, 1.0)   # zoom range
    # photometric [lineage: AMP-Net/DUML: ColorJitter 0.2, RandomGrayscale 0.2]; 0 = off
    brightness: NonNeg = 0.0        # factor drawn from [1 - b, 1 + b]
    contrast: NonNeg = 0.0
    saturation: NonNeg = 0.0
    hue: Annotated[float, Range(0, 0.5)] = 0.0  # shift drawn from [-h, h]
    grayscale: Prob = 0.0           # probability

    def problems(self, key: str) -> list[str]:
        return _ordered_pairs(self, key, ("crop_scale", "crop_ratio", "scale"))


@dataclass
class DataConfig:
    dataset: str = "synthfer"       # a reader of fercore.data.datasets.READERS (checked there, with the data root)
    data_root: str = ""             # empty for the embedded SynthFER
    image_size: Annotated[int, Range(8, 1024)] = 64  # decoded / rendered and fed to the model at this size
    n_train: NonNegInt = 0          # 0: the dataset's full training split (SynthFER: RAF-DB's 12,271)
    n_test: NonNegInt = 0           # 0: the full test split (SynthFER: 3,068)
    noise: str = "none"             # none | sym:<rate> | asym:<rate>[:a>b,...] | eac10|eac20|eac30 | file:<path>
    noise_seed: NonNegInt = 0       # seed of the injected flips, independent of the run seed
    normalize: Normalize = "imagenet"
    protocol: str = ""              # label protocol (fercore.data.classes.PROTOCOLS); "" = the dataset's default
    layout: Literal["auto", "csv", "npy", "png"] = "auto"  # affectnet: csv | npy; ferplus: csv | png (generator)
    crop_face: bool = True          # affectnet csv: crop the face box before resizing
    ferplus_tie: Literal["exclude", "first"] = "exclude"  # ferplus hard label (docs/datasets.md#53-deriving-labels)
    # ferplus: the training labels. fer2013 = FER2013's own labels; one_vote = one annotator's vote per image,
    # drawn in proportion to the votes (real annotation noise: the test split keeps the FERPlus majority and
    # diagnostics mark training label != FERPlus majority as wrong) `[ours]`
    label_source: Literal["ferplus", "fer2013", "one_vote"] = "ferplus"
    vote_seed: NonNegInt = 0        # ferplus one_vote: seed of the drawn votes, independent of the run seed
    ferplus_votes: str = ""         # ferplus: the vote file; "" = fer2013new.csv in the root, else label.csv
    n_folds: Annotated[int, Range(2)] = 10  # ckplus: subject-independent folds
    fold: NonNegInt = 0             # ckplus: the fold used as test split
    fold_seed: NonNegInt = 0        # ckplus: seed of the subject-to-fold assignment
    au_file: str = ""               # AU side file, any reader (docs/datasets.md#side-files); ckplus: also per sequence
    va_file: str = ""               # valence-arousal side file, any reader (docs/datasets.md#side-files)
    side_merge: Literal["fill", "replace"] = "fill"  # fill: the reader's AU/VA win | replace: the side file's `[ours]`
    side_min_confidence: Prob = 0.0  # side-file rows whose confidence column is below this get mask 0 `[ours]`
    # out-of-fold training (label-aware detectors, e.g. cleanlab, need predictions on samples a model did not
    # train on): with oof_folds = K > 1 the noisy training split is cut into K seeded folds and fold
    # `oof_fold` is left out of training `[ours]`
    oof_folds: NonNegInt = 0
    oof_fold: NonNegInt = 0
    cache: bool = True              # keep decoded splits in $FERCORE_CACHE, keyed by the source files
    decode_device: Device = "cpu"   # cpu | cuda[:N] (nvJPEG) for the first decode of JPEG layouts
    residency: Residency = "auto"  # Loader: on the device, or streamed from pinned host memory
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthfer: SynthFERConfig = field(default_factory=SynthFERConfig)

    def problems(self, key: str) -> list[str]:
        out = []
        if self.fold >= self.n_folds:
            out.append(f"config key '{key}fold' must be < data.n_folds ({self.n_folds}), got {self.fold}")
        if self.oof_folds == 1 or (self.oof_folds and self.oof_fold >= self.oof_folds):
            out.append(f"config key '{key}oof_folds'/'{key}oof_fold' must be K >= 2 folds and a fold in 0..K-1 "
                       f"(or oof_folds=0: off), got {self.oof_folds}/{self.oof_fold}")
        for name, value, default in (("label_source", self.label_source, "ferplus"),
                                     ("ferplus_votes", self.ferplus_votes, "")):
            if value != default and self.dataset != "ferplus":
                out.append(f"config key '{key}{name}' applies to dataset ferplus only, got {value!r} with dataset "
                           f"{self.dataset!r}")
        layouts = {"ferplus": ("csv", "png"), "affectnet7": ("csv", "npy"), "affectnet8": ("csv", "npy")}
        # a value outside the four is the type check's to name
        if self.layout in ("csv", "npy", "png") and self.layout not in layouts.get(self.dataset, ()):
            out.append(f"config key '{key}layout' for dataset {self.dataset} is auto, "
                       f"{' or '.join(layouts[self.dataset])}, got {self.layout!r}" if self.dataset in layouts else
                       f"config key '{key}layout' applies to datasets {', '.join(layouts)} only, got "
                       f"{self.layout!r} with dataset {self.dataset!r}")
        if self.decode_device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", self.decode_device):
            out.append(f"config key '{key}decode_device' must be cpu or cuda[:N], got {self.decode_device!r}")
        for name, check_value in VALUE_CHECKS.items():  # e.g. the noise grammar: with the config, not with the data
            problem = check_value(getattr(self, name))
            if problem:
                out.append(problem)
        return out


@dataclass
class ModelConfig:
    backbone: str = "resnet18"      # any timm model name, built with pretrained=False
    drop_rate: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
    weights: str = ""               # local pretrained backbone file (fercore.models.weights); "" = random init
    memory_format: MemoryFormat = "auto"  # auto: channels_last with CUDA
    compile: bool = False           # torch.compile the backbone

@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: NonNeg = 1e-3               # backbone learning rate (0 freezes the backbone)
    head_lr: NonNeg = 0.0           # heads' learning rate; 0 means the same as lr
    weight_decay: NonNeg = 1e-4
    momentum: Annotated[float, Range(0, 1, hi_open=True)] = 0.9  # sgd only
    schedule: Literal["exponential", "step", "cosine", "none"] = "exponential"  # stepped per epoch
    gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.9  # exponential and step decay factor
    step_size: PosInt = 20          # step schedule period in epochs
    grad_clip: NonNeg = 0.0         # max gradient norm; 0 disables


@dataclass
class TrainConfig:
    epochs: PosInt = 60
    batch_size: PosInt = 64
    eval_batch_size: PosInt = 256
    eval_every: PosInt = 1          # evaluate the test split after every N-th epoch (and the last) `[ours]`
    eval_last: NonNegInt = 0        # and after each of the last N epochs (the last-3 swing reads 3) `[ours]`
    # an exponential moving average of the weights (and float buffers) is what is evaluated, checkpointed for
    # eval/predict and reported; its decay rises from 0 to this cap as 1 - (1 + step)^(-2/3); 0 = off
    # [lineage: timm.utils.ModelEmaV3, use_warmup]
    ema: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
    num_threads: NonNegInt = 0      # CPU threads for torch; 0 leaves torch's default
    deterministic: bool = False
    progress: bool = True           # tqdm bars
    # auto: bf16 autocast with CUDA, none on CPU; fast: bf16 where the device computes it natively (CUDA; a
    # CPU with AVX-512 BF16 or AMX), else none: emulated bf16 on an AVX2 CPU is many times slower [ours]
    amp: Amp = "auto"
    tensorboard: bool = False       # TensorBoard scalars in <run>/tb (needs the `tensorboard` extra)


@dataclass
class RunConfig:
    profile: str = "quick"
    recipe: str = ""                # a peer's training recipe on top of the profile (RECIPES); "" = none
    method: str = "ce"
    seed: NonNegInt = 0
    device: Device = "auto"         # auto | cpu | cuda | cuda:N
    out_dir: str = "runs"
    name: str = ""                  # run directory name (one path component); empty: <dataset>-<method>-<noise>-s<seed>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    params: Any = None              # the method's Params dataclass, filled in by build_config

    @property
    def run_name(self) -> str:
        noise = self.data.noise.replace(":", "").replace("/", "_")
        return self.name or f"{self.data.dataset}-{self.method}-{noise}-s{self.seed}"

    def identity(self) -> dict:
        """The config without the keys that do not change what a run computes (see `identity_of`)."""
        return identity_of(self.to_dict())

    def cell_name(self) -> str:
        """A run name derived from the whole config: readable prefix + 8 hex digits of its hash,
        so two variants never share a directory (the sweep runner names every cell so)."""
        noise = self.data.noise.replace(":", "").replace("/", "_")[:24]
        digest = sha256_text(json.dumps(self.identity(), sort_keys=True), 8)
        return f"{self.data.dataset}-{self.method}-{noise}-s{self.seed}-{digest}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d[self.method] = d.pop("params") or {}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def problems(self, key: str) -> list[str]:
        out = []
        if not DEVICE_PATTERN.fullmatch(self.device):
            out.append(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.name and (self.name in (".", "..") or re.search(r"[/\\\x00]", self.name) or self.name.startswith(".")):
            out.append(f"config key 'name' must be one path component (no '/', not starting with '.'), "
                       f"got {self.name!r}")
        if not self.out_dir:
            out.append("config key 'out_dir' must not be empty")
        if self.recipe and self.recipe not in RECIPES:
            out.append(choice_problem("recipe", self.recipe, tuple(RECIPES)) + " (or empty: no recipe)")
        return out


def identity_of(config: dict) -> dict:
    """A config dict (a RunConfig's, or a run's config.json) without the keys that do not change what
    a run computes: where it is written and its name, progress bars, TensorBoard, the CPU thread
    count, and which CUDA device of several (`cuda:1` counts as `cuda`). Two runs with equal
    identities are the same run: the engine reuses one for the other and the sweep names them alike."""
    d = copy.deepcopy(config)
    for k in ("out_dir", "name"):
        d.pop(k, None)
    for k in ("progress", "tensorboard", "num_threads"):
        d.get("train", {}).pop(k, None)
    if isinstance(d.get("device"), str) and d["device"].startswith("cuda"):
        d["device"] = "cuda"
    return d


# Profiles: partial overrides on top of the defaults (docs/architecture.md#profiles).
PROFILES: dict[str, dict] = {
    # CI and nbval: seconds per notebook on 2 CPU cores; proves every code path, the pretraining included
    # (a 1-epoch, 512-face au preset) [ours].
    "smoke": {"data": {"image_size": 32, "n_train": 384, "n_test": 192},
              "model": {"backbone": "fercore_resnet10t_os8", "weights": "pretrain:au32-smoke"},
              "train": {"epochs": 2, "batch_size": 64, "progress": False},
              "scn": {"relabel_epoch": 2},  # SCN relabels in the last epoch: the code path runs [ours]
              "mtac": {"relabel_start": 2},  # so does MTAC [ours]
              "poi": {"stride": 4}},  # as in quick: POI's regions on an 8x8 map [ours]
    # The default of ./reproduce.sh, tuned so that the papers' regime appears within a 30-minute CPU
    # budget for every notebook (docs/architecture.md#profiles) [ours]: fine-tuning from fercore's own
    # AU-pretrained backbone (fercore.pretrain, preset au32), 1,200 faces at 32 px (expressions stay
    # readable), 10 epochs of batch 128 with Adam 2e-3 decayed by 0.75 per epoch, so test accuracy has
    # stopped rising by the last epochs and ce fits more and more of the flipped labels; channels_last
    # (1.1x on an AVX2 CPU) and bf16 autocast where the device has it natively (`train.amp=fast`: 1.35x on
    # a CPU with native bf16; 50x slower where it is emulated, BENCHMARKS.md).
    "quick": {"data": {"image_size": 32, "n_train": 1200, "n_test": 600},
              # fercore_resnet10t_os8 (resnet10t's first three stages, the third dilated: a 4x4 last map at 32 px,
              # so EAC's flip consistency compares layouts; resnet10t's is 1x1), faster than resnet10t here and
              # within the regime (BENCHMARKS.md, "A regime fair to EAC and POI") [ours]
              "model": {"backbone": "fercore_resnet10t_os8", "weights": "pretrain:au32",
                        "memory_format": "channels_last"},
              "optim": {"lr": 2e-3, "gamma": 0.75},
              "train": {"epochs": 10, "batch_size": 128, "amp": "fast"},
              # SCN's epoch 10 of 70 is the first epoch after the fast initial climb; from a pretrained start
              # that climb takes 3 of these 10 epochs (ce reaches ~0.73 of its ~0.76 peak there) [ours]
              "scn": {"relabel_epoch": 3},
              "mtac": {"relabel_start": 3},  # the same start as SCN's, for a like-for-like comparison [ours]
              # POI's PIN cut at stride 4: an 8x8 map at 32 px, where the 5 landmark regions fall on distinct
              # cells (at stride 8 the map is 4x4 and the glabella shares the left eye's cell) [ours]
              "poi": {"stride": 4}},
    # Real faces on a CPU (the default of ./reproduce.sh with a real --dataset; docs/architecture.md#profiles)
    # [ours]: a seeded subset of 4,000 training faces (data.n_train; the run says so and env.json records the
    # sizes used) and the whole test split, at 48 px (FER2013's own resolution; 32 px costs about 5 points), from
    # the au32 start; 12 epochs of batch 128, Adam 2e-3 under a cosine schedule, and the test split scored with
    # an exponential moving average of the weights (train.ema), so the test curve is flat over the last epochs
    # (measured on FERPlus, one_vote: ce moved 0.4 points over its last 3; without the average 5.5; 6,000 faces
    # over 8 epochs still rose 2.2: BENCHMARKS.md, "A regime for real faces"); the test split is scored every
    # 2nd epoch and in each of the last 3 (evaluation only where it is read); the methods' epochs as in quick.
    "real": {"data": {"image_size": 48, "n_train": 4000, "n_test": 0},
             "model": {"backbone": "fercore_resnet10t_os8", "weights": "pretrain:au32",
                       "memory_format": "channels_last"},
             "optim": {"lr": 2e-3, "schedule": "cosine"},
             "train": {"epochs": 12, "batch_size": 128, "amp": "fast", "ema": 0.99, "eval_every": 2, "eval_last": 3},
             "scn": {"relabel_epoch": 3},
             "mtac": {"relabel_start": 3},
             "poi": {"stride": 4}},
    # The real protocol on a GPU: 224 px and RUL's schedule for every method, a like-for-like table
    # [lineage: RUL src/main.py: Adam 2e-4 trunk / 2e-3 classifier, 60 epochs, batch 64]; each peer's
    # own recipe is `recipe=scn|rul|eac` (RECIPES). Start from a real face-pretrained file: model.weights=FILE.
    "paper": {"data": {"image_size": 224},
              "optim": {"lr": 2e-4, "head_lr": 2e-3},
              "train": {"epochs": 60, "batch_size": 64}},
}

# Each peer's own recipe, read from its official training script (docs/baselines.md#2-shared-recipe-of-scn-rul-and-eac):
# applied on top of the profile, below the YAML file and the overrides; method sections apply to that
# method only. Every value is the script's; the tag on each line says which script.
_ADAM = {"optimizer": "adam", "weight_decay": 1e-4, "schedule": "exponential", "gamma": 0.9}
RECIPES: dict[str, dict] = {
    # [lineage: SCN src/train.py] Adam at torch's default lr 1e-3 for every parameter (its --lr only feeds
    # SGD), 70 epochs, batch 64, relabel from epoch 10, margin_1 0.15 as in the code (the README suggests
    # 0.07 at batch 64, fercore's scn.margin1 default), margin_2 0.2, beta 0.7, no dropout
    "scn": {"data": {"image_size": 224}, "model": {"backbone": "resnet18", "drop_rate": 0.0},
            "optim": {**_ADAM, "lr": 1e-3, "head_lr": 0.0}, "train": {"epochs": 70, "batch_size": 64},
            "scn": {"relabel_epoch": 10, "margin1": 0.15, "margin2": 0.2, "beta": 0.7}},
    # [lineage: RUL src/main.py] Adam 2e-4 for the trunk and both heads, 2e-3 for the classifier,
    # 60 epochs, batch 64, 64-d features
    "rul": {"data": {"image_size": 224}, "model": {"backbone": "resnet18"},
            "optim": {**_ADAM, "lr": 2e-4, "head_lr": 2e-3}, "train": {"epochs": 60, "batch_size": 64},
            "rul": {"feature_dim": 64, "dropout": 0.4}},
    # [lineage: EAC src/main.py] ResNet-50, Adam 1e-4 for every parameter, 60 epochs, batch 32, lam 5
    "eac": {"data": {"image_size": 224}, "model": {"backbone": "resnet50"},
            "optim": {**_ADAM, "lr": 1e-4, "head_lr": 0.0}, "train": {"epochs": 60, "batch_size": 32},
            "eac": {"lam": 5.0}},
    # [ours] one recipe for a like-for-like table: RUL's optimiser and schedule for every method
    "shared": {"data": {"image_size": 224}, "model": {"backbone": "resnet18"},
               "optim": {**_ADAM, "lr": 2e-4, "head_lr": 2e-3}, "train": {"epochs": 60, "batch_size": 64}},
}

# Method name -> its Params dataclass; filled by fercore.methods.register (one entry per method).
METHOD_PARAMS: dict[str, type] = {}
# DataConfig field -> a check of its value (the problem's text, or "") that a layer above owns: filled by
# fercore.data.noise (the noise protocols' grammar), so `build_config` refuses a bad setting before any work.
VALUE_CHECKS: dict[str, Callable[[Any], str]] = {}


def register_params(name: str, params: type) -> None:
    """Make `name`'s parameters known to the config layer (called once per registered method)."""
    if name in METHOD_PARAMS and METHOD_PARAMS[name] is not params:
        raise ValueError(f"method parameters {name!r} registered twice")
    METHOD_PARAMS[name] = params


# --- checking values ----------------------------------------------------------------------------

def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(str(key), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _ordered_pairs(obj, key: str, names: tuple[str, ...]) -> list[str]:
    return [f"config key '{key}{n}' must be [low, high] with low <= high, got {list(getattr(obj, n))}"
            for n in names if getattr(obj, n)[0] > getattr(obj, n)[1]]


def choice_problem(key: str, value: Any, options: tuple) -> str:
    """The one wording of a value outside a closed set of choices."""
    names = [str(o) for o in options]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"{key}: expected {listed}, got {value!r}{_suggest(value, options)}"


def check_choice(key: str, value: Any, tp: Any) -> Any:
    """`value` if it is one of the `Literal` type `tp`'s choices, else a ConfigError (for callers
    of the library that pass a string without building a config)."""
    options = typing.get_args(_unwrap(tp)[0])
    if value not in options:
        raise ConfigError(choice_problem(key, value, options))
    return value


@dataclass(frozen=True)
class Raw:
    """An override value as typed on the command line: its text, and its YAML reading."""

    text: str
    value: Any


def _describe(tp: Any) -> str:
    base, _ = _unwrap(tp)
    return getattr(base, "__name__", str(base))


def _unwrap(tp: Any) -> tuple[Any, Range | None]:
    if typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        return args[0], next((a for a in args[1:] if isinstance(a, Range)), None)
    return tp, None


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """`value` checked against the annotation `tp` (choices, ranges, tuple lengths), converted where
    the intent is unambiguous (int -> float, '1e-3' -> float, list -> tuple). A problem is appended
    to `problems` (one line naming the key) and the value is returned unchanged."""
    base, rng = _unwrap(tp)
    raw = value.text if isinstance(value, Raw) else None
    value = value.value if isinstance(value, Raw) else value
    origin = typing.get_origin(base)
    if base is Any:
        return value
    if origin is Literal:
        options = typing.get_args(base)
        if raw is not None and raw in options:
            return raw
        if value not in options or type(value) is not type(options[0]):
            problems.append(choice_problem(key, value, options))
        return value
    if base is str:
        if raw is not None:
            return raw
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if type(value) is not str:
            problems.append(f"config key {key!r} must be str, got {value!r}")
        return value
    if base is float:
        if isinstance(value, str) and FLOAT_PATTERN.fullmatch(value.strip()):
            value = float(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
    if base in (int, bool, float):
        if type(value) is not base:
            problems.append(f"config key {key!r} must be {base.__name__}, got {value!r}")
            return value
        if rng is not None and not rng.holds(value):
            problems.append(f"config key {key!r} must be {rng}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(base)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            problems.append(f"config key {key!r} must be a list of {len(args)} values, got {value!r}")
            return value
        return tuple(_coerce(v, a, f"{key}[{i}]", problems) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(base)
        if isinstance(value, str) and arg is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            problems.append(f"config key {key!r} must be a list, got {value!r}")
            return value
        return [_coerce(v, arg, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    raise TypeError(f"config key {key!r} has an unsupported type {tp}")


def _apply(obj: Any, updates: dict, prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(type(obj), include_extras=True)
    names = [f.name for f in fields(obj) if f.name != "params"]
    changes = {}
    for k, v in updates.items():
        key = f"{prefix}{k}"
        if k not in names:
            problems.append(f"unknown config key {key!r}{_suggest(k, names)}")
            continue
        cur = getattr(obj, k)
        if is_dataclass(cur):
            if not isinstance(v, dict):
                problems.append(f"config key {key!r} is a section; give {key}.<name>=value")
                continue
            changes[k] = _apply(cur, v, key + ".", problems)
        else:
            changes[k] = _coerce(v, hints[k], key, problems)
    return dataclasses.replace(obj, **changes)


def check(obj: Any, prefix: str = "") -> list[str]:
    """Every problem of a (nested) config dataclass's values: annotations and `problems` hooks."""
    problems: list[str] = []
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in fields(obj):
        v = getattr(obj, f.name)
        if is_dataclass(v):
            problems += check(v, f"{prefix}{f.name}.")
        elif f.name != "params":
            _coerce(v, hints[f.name], f"{prefix}{f.name}", problems)
    if hasattr(obj, "problems"):
        problems += obj.problems(prefix)
    return problems


def apply(obj: Any, updates: dict, prefix: str = "") -> Any:
    """A copy of dataclass `obj` with nested `updates`; every problem raises one ConfigError."""
    problems: list[str] = []
    out = _apply(obj, updates, prefix, problems)
    problems += [p for p in check(out, prefix) if p not in problems]
    raise_problems(problems)
    return out


def raise_problems(problems: list[str]) -> None:
    """One ConfigError carrying every problem, one line each (the CLI prints them all)."""
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


def _merge(base: dict, upd: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict:
    """`["train.epochs=5", "scn.beta=0.7"]` -> nested dict of `Raw` values (text and YAML reading)."""
    out: dict = {}
    problems = []
    for item in items:
        if "=" not in item:
            problems.append(f"override {item!r} is not of the form key=value")
            continue
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            problems.append(f"override {item!r} has an empty key part")
            continue
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                problems.append(f"override {item!r} conflicts with another override of {p!r}")
                break
        else:
            if isinstance(node.get(parts[-1]), dict):
                problems.append(f"override {item!r} conflicts with another override of {parts[-1]!r}")
                continue
            node[parts[-1]] = Raw(text, value)
    raise_problems(problems)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict; every problem is one ConfigError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "\t" in text and "tab" in str(what).lower() or "found character '\\t'" in str(e):
            what = f"{what} (YAML forbids tabs for indentation; use spaces)"
        raise ConfigError(f"{where}: not valid YAML: {what}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def build_config(profile: str | None = None, yaml_file: str | Path | None = None,
                 overrides: list[str] | dict | None = None) -> RunConfig:
    """Defaults <- profile <- recipe <- YAML file <- overrides; then the method's own parameters.

    `profile` may also be given in the YAML file or the overrides; the explicit argument wins.
    Every problem of every layer is reported at once (one ConfigError, one line per problem).
    """
    layers = [load_yaml(yaml_file) if yaml_file else {},
              parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})]
    merged: dict = {}
    for layer in layers:
        merged = _merge(merged, layer)
    raw_profile = merged.pop("profile", None)
    name = profile or (raw_profile.text if isinstance(raw_profile, Raw) else raw_profile) or "quick"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}{_suggest(name, PROFILES)}")
    raw_recipe = merged.get("recipe", "")
    recipe = raw_recipe.text if isinstance(raw_recipe, Raw) else raw_recipe
    if recipe and recipe not in RECIPES:
        raise ConfigError(choice_problem("recipe", recipe, tuple(RECIPES)) + " (or empty: no recipe)")
    raw_method = merged.get("method", PROFILES[name].get("method", RunConfig.method))
    method_name = raw_method.text if isinstance(raw_method, Raw) else raw_method
    if method_name not in METHOD_PARAMS:
        raise ConfigError(f"unknown method {method_name!r}; expected one of {sorted(METHOD_PARAMS)}"
                          f"{_suggest(method_name, METHOD_PARAMS)}")
    # a profile or recipe may hold method sections (e.g. SCN's relabel epoch): only the chosen method's applies
    def own(layer: dict) -> dict:
        return {k: v for k, v in layer.items() if k not in METHOD_PARAMS or k == method_name}
    merged = _merge(_merge(own(PROFILES[name]), own(RECIPES.get(recipe, {}))), merged)
    problems: list[str] = []
    for other in sorted(set(METHOD_PARAMS) - {method_name}):
        if other in merged:
            keys = merged[other] if isinstance(merged[other], dict) else {}
            problems += [f"unknown config key '{other}.{k}' (a {other} parameter, but the method is "
                         f"{method_name!r})" for k in keys] or [f"config section {other!r} given, but the "
                                                                f"method is {method_name!r}"]
            merged.pop(other)
    method_args = merged.pop(method_name, None) or {}
    if not isinstance(method_args, dict):
        problems.append(f"config key {method_name!r} must be a section of {method_name} parameters")
        method_args = {}
    cfg = _apply(RunConfig(profile=name), merged, "", problems)
    params = _apply(METHOD_PARAMS[method_name](), method_args, method_name + ".", problems)
    problems += [p for p in check(cfg) + check(params, method_name + ".") if p not in problems]
    raise_problems(problems)
    return dataclasses.replace(cfg, params=params)


def from_run_config(conf: dict, overrides: list[str] | None = None) -> RunConfig:
    """Rebuild a RunConfig from a run directory's config.json (plus `key=value` overrides)."""
    conf = dict(conf)
    profile = conf.pop("profile", None)
    if not isinstance(profile, str):
        raise ConfigError("config.json has no 'profile' key: not written by fercore")
    return build_config(profile, overrides=_merge(conf, parse_overrides(overrides or [])))
