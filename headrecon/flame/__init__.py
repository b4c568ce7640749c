"""FLAME: the model (on smplx), chumpy-free loaders, the procedural FLAME-format head, topology helpers."""

from headrecon.flame.assets import FlameAssets, FlameFileError, load_flame_assets
from headrecon.flame.model import FlameModel
from headrecon.flame.params import NOW_LANDMARK_INDICES, FlameOutput, FlameParams

__all__ = [
    "FlameAssets",
    "FlameFileError",
    "FlameModel",
    "FlameOutput",
    "FlameParams",
    "NOW_LANDMARK_INDICES",
    "load_flame_assets",
]
