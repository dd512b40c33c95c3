"""The one canonical class tuple, label protocols and one explicit code table per dataset
(docs/datasets.md#1-one-canonical-label-space).

Index 0..7 equals AffectNet's expression codes; a protocol is an ordered subsequence of
`CLASSES` (plus dataset-specific extras at the end) and a model's head index is the position
within the protocol tuple. Every dataset's raw codes map to canonical names through a `Coding`
written out below (docs/datasets.md#13-raw-code-to-canonical-index); readers never derive indices from folder sorting.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")

PROTOCOLS: dict[str, tuple[str, ...]] = {
    "raf7": CLASSES[:7],
    "affectnet7": CLASSES[:7],
    "fer2013": CLASSES[:7],
    "ferplus7": CLASSES[:7],
    "affectnet8": CLASSES[:8],
    "ferplus8": CLASSES[:8],
    "ckplus7": CLASSES[1:8],
    "affwild2_expr": CLASSES[:7] + ("other",),
    "synth7": CLASSES[:7],
    "synth8": CLASSES[:8],
}

SYNONYMS = {
    "happiness": "happy", "sadness": "sad", "angry": "anger", "surprised": "surprise",
    "fearful": "fear", "disgusted": "disgust", "neutrality": "neutral",
}


def canonical_name(name: str) -> str:
    """Resolve a class name or synonym (case-insensitive) to its canonical spelling."""
    key = name.strip().lower()
    key = SYNONYMS.get(key, key)
    if key not in CLASSES and key != "other":
        raise KeyError(f"unknown expression name {name!r}; expected one of {CLASSES} or a synonym "
                       f"{sorted(SYNONYMS)}")
    return key


def protocol_classes(protocol: str) -> tuple[str, ...]:
    """The ordered head classes of a protocol, with a clear error for an unknown name."""
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown label protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


@dataclass(frozen=True)
class Coding:
    """How one dataset writes its expression labels: raw code -> canonical class name.

    `excluded` lists raw codes that are not an expression (dropped by the readers and counted).
    """

    name: str
    codes: dict
    source: str
    excluded: dict = field(default_factory=dict)

    def to_index(self, classes: tuple[str, ...]) -> dict:
        """raw code -> head index in `classes`, for the codes whose class is in the protocol."""
        return {raw: classes.index(name) for raw, name in self.codes.items() if name in classes}

    def from_index(self, classes: tuple[str, ...]) -> dict:
        """head index -> raw code (the inverse of `to_index`)."""
        return {k: raw for raw, k in self.to_index(classes).items()}


# RAF-DB label file codes 1..7 (Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral).
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}

CODINGS: dict[str, Coding] = {c.name: c for c in (
    Coding("rafdb", RAFDB_CODES, "RAF-DB EmoLabel/list_patition_label.txt, codes 1..7"),
    Coding("raf_peer", {code - 1: name for code, name in RAFDB_CODES.items()},
           "SCN/RUL/EAC/DAN `label - 1` (0..6, index 0 = Surprise)"),
    Coding("affectnet", {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust",
                         6: "anger", 7: "contempt"}, "AffectNet `expression` column / `_exp.npy`",
           excluded={8: "none", 9: "uncertain", 10: "no-face"}),
    Coding("fer2013", {0: "anger", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"},
           "FER2013 `emotion` column 0..6"),
    Coding("ferplus", {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
                       "anger": "anger", "disgust": "disgust", "fear": "fear", "contempt": "contempt"},
           "FERPlus fer2013new.csv vote columns", excluded={"unknown": "unknown", "NF": "not a face"}),
    Coding("ckplus48", {"anger": "anger", "contempt": "contempt", "disgust": "disgust", "fear": "fear",
                        "happy": "happy", "sadness": "sad", "surprise": "surprise"}, "CK+48 class folder names"),
    # [ours, reconstruction] ABAW EXPR codes as commonly used (0 Neutral, 1 Anger, 2 Disgust, 3 Fear,
    # 4 Happiness, 5 Sadness, 6 Surprise, 7 Other; -1 unannotated). Verify on a real copy: the
    # reader checks the annotation header against AFFWILD2_EXPR_HEADER and fails if it differs.
    Coding("affwild2_expr", {0: "neutral", 1: "anger", 2: "disgust", 3: "fear", 4: "happy", 5: "sad",
                             6: "surprise", 7: "other"}, "ABAW EXPR annotation codes (reconstruction)",
           excluded={-1: "unannotated"}),
)}

# FERPlus vote columns in file order (docs/datasets.md#51-vote-file); the last two are not expressions.
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                   "unknown", "NF")
# CK+48 folders in alphabetical (ImageFolder) order, listed only to document what peers index by.
CKPLUS48_FOLDERS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")

# Which protocols each reader accepts; the first is its default.
DATASET_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "rafdb": ("raf7",),
    "affectnet7": ("affectnet7",),
    "affectnet8": ("affectnet8",),
    "ferplus": ("ferplus8", "ferplus7"),
    "fer2013": ("fer2013",),
    "ckplus": ("ckplus7",),
    "affwild2": ("affwild2_expr",),
}
# The coding each protocol's dataset writes its labels in.
PROTOCOL_CODING = {"raf7": "rafdb", "affectnet7": "affectnet", "affectnet8": "affectnet", "fer2013": "fer2013",
                   "ferplus7": "ferplus", "ferplus8": "ferplus", "ckplus7": "ckplus48",
                   "affwild2_expr": "affwild2_expr"}


def resolve_protocol(dataset: str, protocol: str) -> str:
    """The protocol of `dataset`: the configured one if the reader accepts it, else its default
    (generic layouts accept any protocol, "" meaning the classes found on disk)."""
    allowed = DATASET_PROTOCOLS.get(dataset, tuple(PROTOCOLS))
    if not protocol:
        return allowed[0] if dataset in DATASET_PROTOCOLS else ""
    if protocol not in allowed:
        raise ConfigError(f"data.protocol: dataset {dataset!r} accepts {list(allowed)}, got {protocol!r}")
    return protocol


def mapping_table(protocol: str) -> list[dict]:
    """Rows `raw code -> canonical -> head index` of a protocol's coding, for the doctor and notebooks."""
    classes = protocol_classes(protocol)
    coding = CODINGS[PROTOCOL_CODING[protocol]]
    index = coding.to_index(classes)
    rows = [{"raw": raw, "canonical": name, "head": index.get(raw)} for raw, name in coding.codes.items()]
    rows += [{"raw": raw, "canonical": f"(dropped: {why})", "head": None} for raw, why in coding.excluded.items()]
    return rows
