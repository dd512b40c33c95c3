"""fercore: a reproducible reconstruction of MTAC and POI for facial expression recognition.

Importing fercore sets HF_HUB_OFFLINE=1 (before timm is imported) so nothing is ever downloaded.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
