"""MTAC (arXiv 2212.07144), reconstructed: one module per term of the paper's abstract.

confidence (confidence estimation block), regularization (weighted regularization module),
au_graph (action unit detection over a data-driven AU graph), va (valence-arousal measurement),
relabel (re-labeling guided by feature-level similarity); method registers `mtac` with the engine.
"""
from .method import MTAC, MTACParams

__all__ = ["MTAC", "MTACParams"]
