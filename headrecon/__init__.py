"""headrecon: SHeaP (self-supervised single-image FLAME head reconstruction via 2D Gaussians) in Lightning.

    from headrecon import FlameEstimator, GaussianRegressor, AffectNetProbe, HeadDataModule

The LightningModules and the DataModule are imported lazily, so `import headrecon` (and the CLI) stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FlameEstimator": "headrecon.modules.flame_estimator",
    "GaussianRegressor": "headrecon.modules.gaussian_regressor",
    "HeadDataModule": "headrecon.data.datamodule",
    "AffectNetProbe": "headrecon.modules.affectnet_probe",
    "FlameModel": "headrecon.flame.model",
    "FlameParams": "headrecon.flame.params",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headrecon' has no attribute {name!r}")
