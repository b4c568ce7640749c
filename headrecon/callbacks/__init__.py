"""Lightning callbacks."""

from headrecon.callbacks.densify import Densifiable, DensifyPrune
from headrecon.callbacks.ema import SubmoduleEMA
from headrecon.callbacks.images import ImageGridLogger, make_image_grid

__all__ = ["Densifiable", "DensifyPrune", "ImageGridLogger", "make_image_grid", "SubmoduleEMA"]
