"""Geometry consistency between the Gaussian render and the posed FLAME mesh (SHeaP's L_normals, L_depth).

Both compare per-pixel maps where the mesh covers the pixel and the Gaussians are opaque enough
(`consistency_mask`; `GaussianRegressor` passes only the pixels where the mesh faces the camera, and optionally
leaves out those next to its depth steps, `depth_discontinuities`):

* normals: 1 - cos(n_gaussians, n_mesh), with the Gaussians' composited normals [B, H, W, 3] (whose length is
  the pixel's alpha) normalised first and the mesh's interpolated vertex normals;
* depth: |d_gaussians - d_mesh| in metres, with the Gaussians' expected depth and the mesh's camera depth.

Gradients flow into both sides (the mesh's depth and normals are differentiable in its vertices), so the
Gaussians are pulled onto the surface and the mesh towards where the Gaussians explain the image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NormalConsistency", "DepthConsistency", "consistency_mask", "depth_discontinuities"]


def consistency_mask(mesh_mask: Tensor, gaussian_alpha: Tensor, min_alpha: float = 0.5) -> Tensor:
    """[B, H, W] float: pixels covered by the mesh (mesh_mask [B, H, W] bool) where the Gaussians' alpha
    [B, H, W] (or [B, H, W, 1]) exceeds `min_alpha`."""
    a = gaussian_alpha[..., 0] if gaussian_alpha.ndim == 4 else gaussian_alpha
    return (mesh_mask & (a.detach() > min_alpha)).to(a.dtype)


def depth_discontinuities(depth: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """[B, H, W] bool: pixels next to an occlusion boundary of a depth map.

    True where a covered pixel (mask [B, H, W] bool) has one of its 8 neighbours uncovered or at a camera depth
    (depth [B, H, W], metres) differing by more than `threshold` metres. There the Gaussians' composited maps
    (a blend of the surfaces along the ray) and the mesh's first-surface maps cannot agree: at the silhouette and
    the lips of an open mouth. At low render resolutions these pixels are a large share of the face.
    """
    d = depth.detach()[:, None]  # [B, 1, H, W]
    m = mask[:, None].to(d.dtype)
    pad_d = torch.nn.functional.pad(d, (1, 1, 1, 1), mode="replicate")
    pad_m = torch.nn.functional.pad(m, (1, 1, 1, 1), mode="replicate")  # the image border is no boundary
    H, W = depth.shape[-2:]
    edge = torch.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            nd = pad_d[..., dy : dy + H, dx : dx + W]
            nm = pad_m[..., dy : dy + H, dx : dx + W]
            edge = edge | ((nm < 0.5) | ((nd - d).abs() > threshold))[:, 0]
    return edge & mask


class NormalConsistency(nn.Module):
    """Mean of 1 - cos between Gaussian normals [B, H, W, 3] and mesh normals [B, H, W, 3] over mask [B, H, W]."""

    def forward(self, gaussian_normals: Tensor, mesh_normals: Tensor, mask: Tensor) -> Tensor:
        cos = (torch.nn.functional.normalize(gaussian_normals, dim=-1, eps=1e-8)
               * torch.nn.functional.normalize(mesh_normals, dim=-1, eps=1e-8)).sum(-1)  # fmt: skip
        return ((1.0 - cos) * mask).sum() / mask.sum().clamp_min(1.0)


class DepthConsistency(nn.Module):
    """Mean |Gaussian depth - mesh depth| (metres) over mask; depths [B, H, W] or [B, H, W, 1]."""

    def forward(self, gaussian_depth: Tensor, mesh_depth: Tensor, mask: Tensor) -> Tensor:
        g = gaussian_depth[..., 0] if gaussian_depth.ndim == 4 else gaussian_depth
        m = mesh_depth[..., 0] if mesh_depth.ndim == 4 else mesh_depth
        return ((g - m).abs() * mask).sum() / mask.sum().clamp_min(1.0)
