"""Loss families, one module each. Weights live in the config, not in the losses."""

from headrecon.losses.geometry import DepthConsistency, NormalConsistency, consistency_mask
from headrecon.losses.landmarks import LandmarkLoss
from headrecon.losses.photometric import MaskedL1, masked_mean
from headrecon.losses.regularizers import FlamePrior, GaussianRegularizer

__all__ = [
    "DepthConsistency",
    "FlamePrior",
    "GaussianRegularizer",
    "LandmarkLoss",
    "MaskedL1",
    "NormalConsistency",
    "consistency_mask",
    "masked_mean",
]
