"""Action units, EMFACS expression prototypes and circumplex coordinates that drive SynthFER.

Prototype AU sets follow EMFACS (Friesen & Ekman 1983) docs/poi.md#the-au-emotion-prior `[lineage]`;
the intensities (0..1) and the AU substitutions below are ours `[ours]`: AU16 and unilateral
coding are not rendered, so disgust uses 9+10+15+17 and contempt a one-sided 12+14.
"""
from __future__ import annotations

import torch

AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26)
AU_NAMES = tuple(f"AU{a}" for a in AUS)
AU_INDEX = {a: i for i, a in enumerate(AUS)}

# emotion -> {AU: typical intensity}
PROTOTYPES: dict[str, dict[int, float]] = {
    "neutral": {},
    "happy": {6: 0.7, 12: 1.0, 25: 0.7},
    "sad": {1: 0.9, 4: 0.5, 15: 0.9, 17: 0.4},
    "surprise": {1: 0.9, 2: 0.9, 5: 0.8, 25: 0.6, 26: 0.9},
    "fear": {1: 0.8, 2: 0.5, 4: 0.7, 5: 0.9, 7: 0.3, 20: 1.0, 25: 0.7, 26: 0.3},
    "disgust": {9: 1.0, 10: 0.7, 15: 0.5, 17: 0.5},
    "anger": {4: 1.0, 5: 0.5, 7: 0.8, 17: 0.4, 23: 0.9},
    "contempt": {12: 0.7, 14: 0.8},
}
UNILATERAL = {"contempt"}  # 12 and 14 act on one side of the mouth only

# Valence-arousal circumplex centres in [-1, 1], after Russell (1980) `[ours]` placement.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.75, 0.35),
    "sad": (-0.65, -0.35),
    "surprise": (0.25, 0.8),
    "fear": (-0.6, 0.75),
    "disgust": (-0.7, 0.25),
    "anger": (-0.6, 0.6),
    "contempt": (-0.45, 0.1),
}


def prototype_matrix(classes: tuple[str, ...]) -> torch.Tensor:
    """(K, A) matrix of prototype intensities for `classes`."""
    m = torch.zeros(len(classes), len(AUS))
    for k, name in enumerate(classes):
        for au, v in PROTOTYPES[name].items():
            m[k, AU_INDEX[au]] = v
    return m


def circumplex_matrix(classes: tuple[str, ...]) -> torch.Tensor:
    """(K, 2) valence-arousal centres for `classes`."""
    return torch.tensor([CIRCUMPLEX[c] for c in classes])
