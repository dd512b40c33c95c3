"""Data: the FaceSet type, SynthFER, readers, label noise and the device-resident Loader."""
from .classes import CLASSES, PROTOCOLS
from .faceset import FaceSet

__all__ = ["CLASSES", "PROTOCOLS", "FaceSet"]
