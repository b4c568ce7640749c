"""Typed containers for 2D Gaussian surfels and their renders.

A surfel is a flat 2D Gaussian in 3D (2DGS, Huang et al. 2024): a centre, an orientation (unit quaternion,
wxyz, as gsplat), two in-plane scales along the first two columns of its rotation matrix, an opacity and a
feature vector. The third column of the rotation matrix is the surfel normal.

The third scale. gsplat's `rasterization_2dgs` takes scales [..., N, 3]. Its CUDA projection builds
`R @ diag(s0, s1, 1)` and ignores `scales[..., 2]` entirely (the normal is the unit third column of R),
while its pure-PyTorch twin `_fully_fused_projection_2dgs` builds `R @ diag(s0, s1, s2)` and so scales the
normal by s2. We store only the two in-plane scales and hand gsplat (and its PyTorch twin) a third scale of
exactly 1, so both give unit normals and agree with each other and with our own backend.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = ["Surfels", "SurfelRender"]


@dataclass
class Surfels:
    """B independent sets of N surfels (one set per rendered image).

    Attributes:
        means: [B, N, 3] centres in world coordinates.
        quats: [B, N, 4] rotations as quaternions (w, x, y, z). Normalised on use, so any non-zero
            quaternion works; the columns of its rotation matrix are the tangent axes u, v and the normal.
        scales: [B, N, 2] standard deviations along the two tangent axes (world units, > 0).
        opacities: [B, N] in [0, 1].
        features: [B, N, D] colours or any per-surfel features to composite (D >= 1).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    features: Tensor

    def __post_init__(self) -> None:
        if self.means.ndim != 3 or self.means.shape[-1] != 3:
            raise ValueError(f"Surfels.means must be [B, N, 3], got {tuple(self.means.shape)}")
        B, N = self.means.shape[:2]
        expected = {
            "quats": (B, N, 4),
            "scales": (B, N, 2),
            "opacities": (B, N),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Surfels.{name} must be {list(shape)}, got {list(got)}")
        if self.features.ndim != 3 or self.features.shape[:2] != (B, N) or self.features.shape[-1] < 1:
            raise ValueError(f"Surfels.features must be [{B}, {N}, D>=1], got {list(self.features.shape)}")
        for f in fields(self):
            t = getattr(self, f.name)
            if t.device != self.means.device:
                raise ValueError(f"Surfels.{f.name} is on {t.device}, means on {self.means.device}")
            if t.dtype != self.means.dtype:
                raise ValueError(f"Surfels.{f.name} has dtype {t.dtype}, means has {self.means.dtype}")

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_surfels(self) -> int:
        return self.means.shape[1]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(self, *args, **kwargs) -> Surfels:
        return Surfels(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def __getitem__(self, idx) -> Surfels:
        """Select images of the batch (an int keeps the batch dimension)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Surfels(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def with_features(self, features: Tensor) -> Surfels:
        """The same surfels with other features [B, N, D']."""
        return replace(self, features=features)

    def gsplat_scales(self) -> Tensor:
        """[B, N, 3] scales for gsplat: (s_u, s_v, 1); see the module docstring for why the third is 1."""
        return torch.cat([self.scales, torch.ones_like(self.scales[..., :1])], dim=-1)


@dataclass
class SurfelRender:
    """What `render_surfels` returns for B images of H x W pixels.

    Attributes:
        colors: [B, H, W, D] composited features, plus `background * (1 - alpha)` when a background is given.
        alphas: [B, H, W, 1] accumulated opacity, 1 - final transmittance.
        depth_expected: [B, H, W, 1] alpha-normalised camera z-depth, sum(w_i z_i) / max(alpha, 1e-10).
        depth_median: [B, H, W, 1] z-depth of the last surfel reached while the transmittance was above 0.5
            (0 where there is none), as gsplat.
        normals: [B, H, W, 3] composited surfel normals (each flipped to face the camera) in WORLD
            coordinates, not normalised (their length is the alpha of the pixel), as gsplat's
            `rasterization_2dgs`.
        normals_from_depth: [B, H, W, 3] unit world-space normals from finite differences of the depth map
            chosen by `depth_mode` (zero on the one-pixel border), as gsplat's `depth_to_normal`.
        distortion: [B, H, W, 1] the 2DGS depth-distortion term, sum_ij w_i w_j |z_i - z_j| (gsplat's L1 form).
        means2d_grad_handle: [B, N, 2] zeros that require grad. After `backward`, `.grad` is the gradient of
            the loss with respect to a screen-space translation (pixels) of each surfel's centre through its
            ray-splat transform, the 2DGS densification signal (gsplat's `meta["gradient_2dgs"]`).
        means2d: [B, N, 2] projected centres (pixels), differentiable.
        depths: [B, N] camera z-depths of the centres, differentiable.
        radii: [B, N, 2] int32 screen-space half extents (x, y) in pixels used for tiling; 0 = culled.
    """

    colors: Tensor
    alphas: Tensor
    depth_expected: Tensor
    depth_median: Tensor
    normals: Tensor
    normals_from_depth: Tensor
    distortion: Tensor
    means2d_grad_handle: Tensor
    means2d: Tensor
    depths: Tensor
    radii: Tensor

    def visible(self) -> Tensor:
        """[B, N] bool: surfels that touched at least one tile of the image."""
        return (self.radii > 0).all(dim=-1)
