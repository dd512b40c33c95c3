"""The one canonical class tuple, label protocols and per-dataset code mappings (datasets.md, 1).

Index 0..7 equals AffectNet's expression codes; a protocol is an ordered subsequence of
`CLASSES` (plus dataset-specific extras at the end) and a model's head index is the position
within the protocol tuple. Loaders never derive indices from folder sorting.
"""
from __future__ import annotations

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


# RAF-DB label file codes 1..7 (Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral)
# -> canonical names (datasets.md 1.3).
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}
