"""Plain ``nn.Module`` networks (no Lightning imports here)."""

from headrecon.nets.dinov2 import DEFAULT_DINOV2_MODEL, FrozenDINOv2
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
