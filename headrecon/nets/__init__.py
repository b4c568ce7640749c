"""Plain ``nn.Module`` networks (no Lightning imports here)."""

from headrecon.nets.arcface import ArcFace, build_arcface, iresnet
from headrecon.nets.dinov2 import DEFAULT_DINOV2_MODEL, FrozenDINOv2
from headrecon.nets.emotion_net import EmotionResNet50, load_emotion_resnet50
from headrecon.nets.estimator import DEFAULT_BACKBONE, OUTPUT_NAMES, EstimatorOutput, FlameEstimatorNet
from headrecon.nets.farl import (
    FarlCheckpointError,
    FarlLoadReport,
    farl_checkpoint_filter_fn,
    load_farl_backbone,
)
from headrecon.nets.gcn import (
    GaussianAttributes,
    GaussianGCN,
    SharedGraphConv,
    gaussian_graph,
    gcn_inputs,
    sample_uv_features,
    shared_adjacency,
)
from headrecon.nets.uv_generator import LIGHTWEIGHT_GAN_SLE_PAIRS, UVMapGenerator

__all__ = [
    "ArcFace",
    "EmotionResNet50",
    "build_arcface",
    "iresnet",
    "load_emotion_resnet50",
    "DEFAULT_BACKBONE",
    "EstimatorOutput",
    "FarlCheckpointError",
    "FarlLoadReport",
    "FlameEstimatorNet",
    "OUTPUT_NAMES",
    "farl_checkpoint_filter_fn",
    "load_farl_backbone",
    "DEFAULT_DINOV2_MODEL",
    "FrozenDINOv2",
    "GaussianAttributes",
    "GaussianGCN",
    "LIGHTWEIGHT_GAN_SLE_PAIRS",
    "SharedGraphConv",
    "UVMapGenerator",
    "gaussian_graph",
    "gcn_inputs",
    "sample_uv_features",
    "shared_adjacency",
]
