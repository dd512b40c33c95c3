"""SynthFER, the embedded procedural dataset (see `generate`)."""
from .facs import AU_NAMES, AUS, PROTOTYPES
from .dataset import SynthFERConfig, generate, load_synthfer

__all__ = ["AUS", "AU_NAMES", "PROTOTYPES", "SynthFERConfig", "generate", "load_synthfer"]
