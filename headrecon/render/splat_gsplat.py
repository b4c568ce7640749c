"""gsplat backend of `render_surfels` (CUDA only; gsplat >= 1.5.2 for one surfel set per image).

It runs the stages of gsplat's ``rasterization_2dgs`` itself (projection, tile intersection, rasterisation),
so that it can (a) hand gsplat scales (s_u, s_v, 1) (see `surfels.py`), (b) put the densification handle
[B, N, 2] into the ray transforms exactly as the portable backend does (gsplat's own
``meta["gradient_2dgs"]`` is [B, C, N, 2] and written without atomics), and (c) share the portable
backend's post-processing (background, expected depth, world normals, normals from depth). gsplat is
imported only here and only when this backend is used; its kernels are never called on CPU tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .camera import Cameras
from .splat_torch import Projection, finish_render, inject_means2d_handle
from .surfels import SurfelRender, Surfels

__all__ = ["render_gsplat", "render_with_gsplat_api", "gsplat_available_for"]


def gsplat_available_for(surfels: Surfels) -> bool:
    """True if the gsplat backend can render these surfels: float32 CUDA tensors and gsplat importable."""
    if surfels.device.type != "cuda" or surfels.dtype != torch.float32 or not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render_gsplat(
    surfels: Surfels,
    cameras: Cameras,
    *,
    background: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    tile_size: int = 16,
    depth_mode: str = "expected",
) -> SurfelRender:
    """Render with gsplat's CUDA 2DGS kernels; same inputs and outputs as `render_surfels`."""
    if surfels.device.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(
            f"backend='gsplat' needs CUDA tensors (surfels are on {surfels.device}); use backend='torch' or 'auto'"
        )
    if surfels.dtype != torch.float32:
        raise TypeError(f"backend='gsplat' supports float32 only, surfels are {surfels.dtype}")
    import gsplat

    return render_with_gsplat_api(
        gsplat,
        surfels,
        cameras,
        background=background,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        tile_size=tile_size,
        depth_mode=depth_mode,
    )


def render_with_gsplat_api(
    api,
    surfels: Surfels,
    cameras: Cameras,
    *,
    background: Tensor | None,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    tile_size: int,
    depth_mode: str,
) -> SurfelRender:
    """The gsplat pipeline over ``api``, an object with gsplat's ``fully_fused_projection_2dgs``,
    ``isect_tiles``, ``isect_offset_encode`` and ``rasterize_to_pixels_2dgs`` (the `gsplat` module itself in
    `render_gsplat`; the CPU tests pass stand-ins with gsplat's signatures to check this glue)."""
    B, N, D = surfels.batch_size, surfels.num_surfels, surfels.feature_dim
    W, H = cameras.width, cameras.height
    w2c = cameras.world_to_cam.to(device=surfels.device, dtype=surfels.dtype)
    K = cameras.K.to(device=surfels.device, dtype=surfels.dtype)
    radii, means2d, depths, M, normals = api.fully_fused_projection_2dgs(
        surfels.means.contiguous(),
        surfels.quats.contiguous(),
        surfels.gsplat_scales().contiguous(),
        w2c[:, None].contiguous(),
        K[:, None].contiguous(),
        W,
        H,
        0.3,  # eps2d: not used by gsplat's 2DGS projection
        near_plane,
        far_plane,
        radius_clip,
        False,  # packed
        False,  # sparse_grad
    )  # [B, 1, N, ...]
    handle = torch.zeros(B, N, 2, dtype=surfels.dtype, device=surfels.device, requires_grad=True)
    M = inject_means2d_handle(M[:, 0], depths[:, 0], handle)[:, None]

    tiles_w, tiles_h = math.ceil(W / tile_size), math.ceil(H / tile_size)
    _, isect_ids, flatten_ids = api.isect_tiles(
        means2d, radii, depths, tile_size, tiles_w, tiles_h, packed=False, n_images=B
    )
    offsets = api.isect_offset_encode(isect_ids, B, tiles_w, tiles_h).reshape(B, 1, tiles_h, tiles_w)
    colors = torch.cat([surfels.features[:, None], depths[..., None]], dim=-1)  # [B, 1, N, D + 1]
    dummy_densify = torch.zeros_like(means2d)  # our handle (inside M) carries the densification gradient
    rc, ra, rn, rd, rm = api.rasterize_to_pixels_2dgs(
        means2d,
        M,
        colors,
        surfels.opacities[:, None].contiguous(),
        normals,
        dummy_densify,
        W,
        H,
        tile_size,
        offsets,
        flatten_ids,
        backgrounds=None,  # added in finish_render, identically for both backends
        packed=False,
        absgrad=False,
        distloss=True,
    )
    composited = torch.cat([rc[:, 0], rn[:, 0]], dim=-1)  # [B, H, W, D + 1 + 3]
    proj = Projection(means2d[:, 0], depths[:, 0], M[:, 0], normals[:, 0], radii[:, 0])
    return finish_render(
        composited, ra[:, 0], rd[:, 0], rm[:, 0], D, w2c, K, background, depth_mode, handle, proj
    )
