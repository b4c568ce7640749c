"""Canonical Gaussians bound to FLAME's triangles, and the densify/prune rules that edit them."""

from headrecon.gaussians.binding import BoundGaussians, TriangleFrames, bind_to_mesh, triangle_frames
from headrecon.gaussians.canonical import CanonicalGaussians, initial_barycentrics
from headrecon.gaussians.densify import (
    DensifyDecision,
    DensifyStatistics,
    apply_edits,
    choose_edits,
    densify_signal,
    remap_optimizer_state,
)

__all__ = [
    "BoundGaussians",
    "CanonicalGaussians",
    "DensifyDecision",
    "DensifyStatistics",
    "TriangleFrames",
    "apply_edits",
    "bind_to_mesh",
    "choose_edits",
    "densify_signal",
    "initial_barycentrics",
    "remap_optimizer_state",
    "triangle_frames",
]
