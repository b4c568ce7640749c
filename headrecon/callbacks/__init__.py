"""Lightning callbacks."""

from headrecon.callbacks.densify import Densifiable, DensifyPrune

__all__ = ["Densifiable", "DensifyPrune"]
