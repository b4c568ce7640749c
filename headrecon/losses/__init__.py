"""Loss families, one module each. Weights live in the config, not in the losses."""

from headrecon.losses.emotion import EmocaEmotionLoss, EmotionLoss, build_emotion_net
from headrecon.losses.geometry import DepthConsistency, NormalConsistency, consistency_mask
from headrecon.losses.identity import ArcFaceIdentityLoss, IdentityLoss
from headrecon.losses.landmarks import LandmarkLoss
from headrecon.losses.perceptual import LPIPSLoss
from headrecon.losses.photometric import MaskedL1, masked_mean
from headrecon.losses.regularizers import FlamePrior, GaussianRegularizer

__all__ = [
    "ArcFaceIdentityLoss",
    "EmocaEmotionLoss",
    "EmotionLoss",
    "IdentityLoss",
    "LPIPSLoss",
    "build_emotion_net",
    "DepthConsistency",
    "FlamePrior",
    "GaussianRegularizer",
    "LandmarkLoss",
    "MaskedL1",
    "NormalConsistency",
    "consistency_mask",
    "masked_mean",
]
