"""SynthFER, the embedded procedural dataset (see `generate`)."""
from .dataset import SynthFERConfig, generate, load_synthfer
from .facs import AU_NAMES, AUS, PROTOTYPES

__all__ = ["AUS", "AU_NAMES", "PROTOTYPES", "SynthFERConfig", "generate", "load_synthfer"]
