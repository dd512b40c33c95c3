"""POI (arXiv 2411.13024), reconstructed: one module per term of the paper's abstract.

regions (facial subregions), prior (AU-to-emotion prior), pin (Prior Inference Network),
mutual (mutual learning among regions), soft_label (objective soft label q), trn (Target
Recognition Network), uncertainty (uncertainty estimation and the dynamic weight w); method
registers `poi` with the engine.
"""
from .method import POI, POIParams

__all__ = ["POI", "POIParams"]
