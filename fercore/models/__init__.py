"""Models: timm backbones behind one small interface."""
from .backbone import Backbone

__all__ = ["Backbone"]
