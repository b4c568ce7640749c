"""One 2D Gaussian splatting (2DGS) API over two backends.

``render_surfels(surfels, cameras)`` renders B images, each from its own surfel set through its own camera.
``backend="gsplat"`` runs gsplat's CUDA kernels (float32 CUDA tensors only); ``backend="torch"`` runs the
portable tile-based rasteriser in `splat_torch` (any device, any float dtype, deterministic); ``"auto"``
picks gsplat for float32 CUDA tensors when gsplat is importable, the portable backend otherwise. Both
backends implement gsplat 1.5.3's 2DGS mathematics (see `splat_torch`'s docstring) and return the same
`SurfelRender`; the tests check them against a dense all-pairs oracle (`splat_dense`) and each other.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from .camera import Cameras
from .splat_gsplat import gsplat_available_for, render_gsplat
from .splat_torch import render_torch
from .surfels import SurfelRender, Surfels

__all__ = ["render_surfels", "resolve_backend"]

Backend = Literal["auto", "torch", "gsplat"]


def resolve_backend(surfels: Surfels, backend: Backend = "auto") -> str:
    """The backend `render_surfels` will use: "torch" or "gsplat"."""
    if backend == "auto":
        return "gsplat" if gsplat_available_for(surfels) else "torch"
    if backend not in ("torch", "gsplat"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    return backend


def render_surfels(
    surfels: Surfels,
    cameras: Cameras,
    *,
    backend: Backend = "auto",
    background: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    tile_size: int = 16,
    depth_mode: Literal["expected", "median"] = "expected",
    **torch_options,
) -> SurfelRender:
    """Render B surfel sets through B cameras.

    Args:
        surfels: `Surfels` with means [B, N, 3], quats [B, N, 4] (wxyz), scales [B, N, 2], opacities [B, N],
            features [B, N, D].
        cameras: `Cameras` with K [B, 3, 3], world_to_cam [B, 4, 4] (OpenCV), width W, height H.
        backend: "auto" | "torch" | "gsplat" (see the module docstring).
        background: [B, D] colour behind the surfels: colors += background * (1 - alpha). None: black.
        near_plane, far_plane: surfels whose centre z is outside (near, far) are culled.
        radius_clip: cull surfels whose screen radii are both <= this many pixels.
        tile_size: tile edge in pixels (16 as gsplat; tiles also bound each surfel's footprint).
        depth_mode: which depth map `normals_from_depth` differentiates: "expected" or "median".
        torch_options: portable backend only: ``backward="manual"|"autograd"``, ``max_chunk_elems=int``.

    Returns:
        `SurfelRender`: colors [B, H, W, D], alphas [B, H, W, 1], depth_expected and depth_median
        [B, H, W, 1], normals and normals_from_depth [B, H, W, 3] (world space), distortion [B, H, W, 1],
        means2d_grad_handle [B, N, 2] (read ``.grad`` after backward), means2d [B, N, 2], depths [B, N],
        radii [B, N, 2].
    """
    if cameras.batch_size != surfels.batch_size:
        raise ValueError(f"{cameras.batch_size} cameras for {surfels.batch_size} surfel sets")
    if background is not None and background.shape != (surfels.batch_size, surfels.feature_dim):
        raise ValueError(
            f"background must be [{surfels.batch_size}, {surfels.feature_dim}], got {list(background.shape)}"
        )
    common = dict(
        background=background,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        tile_size=tile_size,
        depth_mode=depth_mode,
    )
    if resolve_backend(surfels, backend) == "gsplat":
        if torch_options:
            raise TypeError(f"options {sorted(torch_options)} apply to backend='torch' only")
        return render_gsplat(surfels, cameras, **common)
    return render_torch(surfels, cameras, **common, **torch_options)
