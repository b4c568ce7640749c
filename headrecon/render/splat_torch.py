"""Portable tile-based 2D Gaussian splatting (2DGS) in plain PyTorch: CPU, CUDA, any float dtype.

The mathematics is gsplat's 2DGS (``rasterization_2dgs``, gsplat 1.5.3 CUDA kernels), step by step:

1. Projection (`project_surfels`, gsplat ``Projection2DGSFused.cu``): camera-space centre ``mu_c = R mu + t``;
   ``RS = R_cw R_q diag(s_u, s_v, 1)``; the ray-splat transform ``M = K [RS[:, 0], RS[:, 1], mu_c]`` (rows
   M0, M1, M2) maps splat coordinates (u, v, 1) to homogeneous pixels. The screen-space box comes from
   ``d = M2 . (M2 * (1, 1, -1))``: ``means2d_x = (M0 * M2 * f).sum()`` etc. with ``f = (1, 1, -1) / d``, half
   extent ``sqrt(max(1e-4, means2d^2 - (M0 * M0 * f).sum()))`` and radius ``ceil(3.33 * extent)``. Surfels
   with z outside (near, far), d == 0, both radii <= radius_clip, or boxes outside the image get radius 0.
   The normal is R[:, 2] flipped to face the camera.
2. Tiling (`intersect_tiles`, gsplat ``IntersectTile.cu``): a surfel covers tiles
   ``[floor((m - r) / ts), ceil((m + r) / ts))`` clamped to the grid; pairs are sorted by (image, tile,
   depth, surfel index). Pixels outside the covered tiles never see the surfel, exactly as in gsplat
   (this clips the low-pass filter of very thin surfels; the dense oracle applies the same rule).
3. Per pixel centre (x, y) = (j + 0.5, i + 0.5) and pair (``RasterizeToPixels2DGSFwd.cu``):
   ``h_u = x M2 - M0``, ``h_v = y M2 - M1``, ``t = h_u x h_v``, ``(u, v) = (t0, t1) / t2`` (skipped if t2 = 0);
   ``sigma = 0.5 min(u^2 + v^2, 2 |(x, y) - means2d|^2)``; ``alpha = min(0.999, o exp(-sigma))``, skipped
   below 1/255; front to back ``w = alpha T``, ``T <- T (1 - alpha)``, stopping (exclusive) at the first
   surfel that would bring T to <= 1e-4. Median depth: the depth of the last surfel reached while T > 0.5.
   Distortion: ``sum_i 2 w_i (z_i (1 - T_i) - sum_{j<i} w_j z_j)``.

Speed. (a) Lists are built per small raster tile (4x4 px by default) inside gsplat's 16 px tile rule, keeping
only raster tiles the surfel can reach with alpha >= 1/255, so the work is ~ the pixel-surfel pairs that
really overlap (`intersect_tiles`). (b) ``t = h_u x h_v`` is bilinear in (x, y):
``t = x (M1 x M2) + y (M2 x M0) + M0 x M1``, so one batched matmul of a tile's pixel grid [P, 3] with three
per-pair vectors gives t for every pixel-pair. (c) The fast path (`_RasterizeChunk`) composites a chunk of
tiles, padded to the chunk's longest list, in log-transmittance with `cumsum`, and keeps no
[tiles, pixels, pairs] tensor for backward: its hand-written backward recomputes them chunk by chunk
(gsplat's strategy), so memory ~ inputs + outputs + one chunk. `rasterize_tiles_autograd` is its readable
autograd twin (gsplat's formulas verbatim, `torch.cumprod` compositing); the tests check that both agree.

Outputs follow gsplat's `rasterization_2dgs`: normals are composited in camera space and rotated to world
space; normals from depth are world space; the densification handle is described in `inject_means2d_handle`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .camera import Cameras
from .surfels import SurfelRender, Surfels

__all__ = [
    "Projection",
    "TileIntersections",
    "quat_to_rotmat",
    "project_surfels",
    "intersect_tiles",
    "rasterize_tiles",
    "rasterize_tiles_autograd",
    "inject_means2d_handle",
    "normals_from_depth",
    "render_torch",
]

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before the surfel that would bring T to <= this
FILTER_INV_SQUARE = 2.0  # gsplat's FILTER_INV_SQUARE_2DGS
RADIUS_SIGMAS = 3.33
FILTER_REACH = math.sqrt(math.log(255.0))  # beyond this many pixels the low-pass filter alone gives < 1/255


# ------------------------------------------------------------------------------------------------ projection
@dataclass
class Projection:
    """Per-surfel screen-space quantities for B images.

    Attributes:
        means2d: [B, N, 2] centre of the screen-space box (pixels); the low-pass filter is centred here.
        depths: [B, N] camera z of the surfel centres.
        ray_transforms: [B, N, 3, 3] M = K [R S_u, R S_v, mu_c]: splat (u, v, 1) to homogeneous pixels.
        normals: [B, N, 3] unit camera-space normals facing the camera.
        radii: [B, N, 2] int32 half extents in pixels; 0 means culled.
    """

    means2d: Tensor
    depths: Tensor
    ray_transforms: Tensor
    normals: Tensor
    radii: Tensor


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Quaternions [..., 4] (w, x, y, z; normalised here) to rotation matrices [..., 3, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def project_surfels(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    world_to_cam: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> Projection:
    """Project surfels as gsplat's ``fully_fused_projection_2dgs`` (CUDA semantics, unit normals).

    Args:
        means: [B, N, 3] world centres. quats: [B, N, 4] wxyz. scales: [B, N, 2] in-plane scales.
        world_to_cam: [B, 4, 4] OpenCV world-to-camera. K: [B, 3, 3] intrinsics (pixels).
        width, height: image size; near_plane, far_plane: z range kept; radius_clip: cull radii <= this.
    """
    R_cw = world_to_cam[:, None, :3, :3]  # [B, 1, 3, 3]
    t_cw = world_to_cam[:, None, :3, 3]  # [B, 1, 3]
    mean_c = (R_cw @ means.unsqueeze(-1)).squeeze(-1) + t_cw  # [B, N, 3]
    RS = R_cw @ quat_to_rotmat(quats)  # [B, N, 3, 3] camera-space tangent axes and normal (columns)
    T_cl = torch.stack([RS[..., 0] * scales[..., 0:1], RS[..., 1] * scales[..., 1:2], mean_c], dim=-1)
    M = K[:, None] @ T_cl  # [B, N, 3, 3]
    M0, M1, M2 = M[..., 0, :], M[..., 1, :], M[..., 2, :]

    sign = torch.tensor([1.0, 1.0, -1.0], dtype=M.dtype, device=M.device)
    dist = (sign * M2 * M2).sum(-1, keepdim=True)  # [B, N, 1]
    ok = dist != 0
    f = torch.where(ok, sign / torch.where(ok, dist, torch.ones_like(dist)), torch.zeros_like(sign))
    means2d = torch.stack([(f * M0 * M2).sum(-1), (f * M1 * M2).sum(-1)], dim=-1)  # [B, N, 2]
    second = torch.stack([(f * M0 * M0).sum(-1), (f * M1 * M1).sum(-1)], dim=-1)

    with torch.no_grad():
        half = (means2d * means2d - second).clamp_min(1e-4)
        radius = torch.ceil(RADIUS_SIGMAS * half.sqrt())  # [B, N, 2]
        depth = mean_c[..., 2]
        keep = ok[..., 0] & (depth > near_plane) & (depth < far_plane)
        keep &= ~((radius[..., 0] <= radius_clip) & (radius[..., 1] <= radius_clip))
        keep &= (means2d[..., 0] + radius[..., 0] > 0) & (means2d[..., 0] - radius[..., 0] < width)
        keep &= (means2d[..., 1] + radius[..., 1] > 0) & (means2d[..., 1] - radius[..., 1] < height)
        radii = torch.where(keep.unsqueeze(-1), radius, torch.zeros_like(radius)).to(torch.int32)
        facing = ((-RS[..., 2]) * mean_c).sum(-1, keepdim=True) > 0

    normals = torch.where(facing, RS[..., 2], -RS[..., 2])
    return Projection(means2d, mean_c[..., 2], M, normals, radii)


def inject_means2d_handle(ray_transforms: Tensor, depths: Tensor, handle: Tensor) -> Tensor:
    """Add the densification handle to the ray transforms: rows M0 and M1 get ``handle * z`` in column 2.

    At handle = 0 the value is unchanged and ``handle.grad = z * dL/dM[:, :, 0:2, 2]``, the gradient with
    respect to a screen-space translation of the splat centre through its ray transform (what gsplat writes
    to ``meta["gradient_2dgs"]``; the low-pass-filter path through means2d is not included, as in gsplat).

    Args:
        ray_transforms: [B, N, 3, 3]. depths: [B, N]. handle: [B, N, 2] zeros requiring grad.
    Returns:
        [B, N, 3, 3].
    """
    col = torch.cat([handle * depths.detach().unsqueeze(-1), torch.zeros_like(handle[..., :1])], dim=-1)
    return ray_transforms + F.pad(col.unsqueeze(-1), (2, 0))


# ---------------------------------------------------------------------------------------------------- tiling
@dataclass
class TileIntersections:
    """Surfel lists per tile, front to back.

    Attributes:
        flat_ids: [P] int64 surfel index into the flattened [B * N] set, sorted by (image, tile, depth, id).
        tile_offsets: [B * tiles_h * tiles_w + 1] int64; tile g owns flat_ids[offsets[g]:offsets[g+1]].
        tiles_w, tiles_h, tile_size: the raster tile grid (tile_size: edge of a raster tile in pixels).
    """

    flat_ids: Tensor
    tile_offsets: Tensor
    tiles_w: int
    tiles_h: int
    tile_size: int

    @property
    def num_pairs(self) -> int:
        return int(self.flat_ids.shape[0])


@torch.no_grad()
def intersect_tiles(
    means2d: Tensor,
    radii: Tensor,
    depths: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    raster_tile_size: int | None = None,
) -> TileIntersections:
    """Bin surfels to tiles (gsplat's ``isect_tiles`` + ``isect_offset_encode``).

    A surfel is visible in the ``tile_size`` tiles its box touches (gsplat's rule). With a smaller
    ``raster_tile_size`` (a divisor of tile_size) the lists are built per raster tile instead, keeping
    only raster tiles inside that gsplat rectangle that contain a pixel centre where the surfel's alpha can
    reach 1/255: within its box (3.33 sigma holds alpha = o exp(-0.5 * 3.33^2) < 1/255) or within
    sqrt(ln 255) = 2.354 px of means2d (the low-pass filter). Same image, ~2x fewer pixel-pair evaluations.

    Args:
        means2d: [B, N, 2]. radii: [B, N, 2] int (0 = culled). depths: [B, N].
    """
    B, N = depths.shape
    dev = means2d.device
    rt = raster_tile_size or tile_size
    if tile_size % rt:
        raise ValueError(f"raster_tile_size {rt} must divide tile_size {tile_size}")
    sub = tile_size // rt
    tiles_w, tiles_h = math.ceil(width / rt), math.ceil(height / rt)
    n_tiles = tiles_w * tiles_h
    # gsplat does this arithmetic in float32; so do we, whatever the input dtype
    m = means2d.detach().reshape(-1, 2).float()
    rf = radii.reshape(-1, 2).float()
    lo = torch.floor(m / tile_size - rf / tile_size).clamp_min(0).long() * sub
    hi = torch.ceil(m / tile_size + rf / tile_size).clamp_min(0).long() * sub
    if sub > 1:
        reach = rf.clamp_min(FILTER_REACH) + 0.01
        lo = torch.maximum(lo, torch.floor((m - reach) / rt).long())
        hi = torch.minimum(hi, torch.floor((m + reach) / rt).long() + 1)
    x0, y0 = lo[:, 0].clamp(0, tiles_w), lo[:, 1].clamp(0, tiles_h)
    x1, y1 = hi[:, 0].clamp(0, tiles_w), hi[:, 1].clamp(0, tiles_h)
    nx, ny = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
    visible = (radii.reshape(-1, 2) > 0).all(-1)
    counts = torch.where(visible, nx * ny, torch.zeros_like(nx))

    # surfels in (image, depth, index) order; a stable sort by tile then keeps depth order inside tiles
    order = torch.argsort(depths.detach().reshape(-1), stable=True)
    image = torch.div(order, N, rounding_mode="floor")
    order = order[torch.argsort(image, stable=True)]
    c = counts[order]
    total = int(c.sum())
    sid = torch.repeat_interleave(order, c)
    start = torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
    local = torch.arange(total, device=dev) - start
    nxs = nx[sid]
    tx = x0[sid] + local % nxs
    ty = y0[sid] + torch.div(local, nxs, rounding_mode="floor")
    tile = torch.div(sid, N, rounding_mode="floor") * n_tiles + ty * tiles_w + tx
    perm = torch.argsort(tile, stable=True)
    per_tile = torch.bincount(tile, minlength=B * n_tiles)
    offsets = torch.cat([per_tile.new_zeros(1), torch.cumsum(per_tile, 0)])
    return TileIntersections(sid[perm], offsets, tiles_w, tiles_h, rt)


def _plan_chunks(tile_offsets: Tensor, pixels_per_tile: int, max_elems: int) -> list[tuple[Tensor, int]]:
    """Group non-empty tiles (longest lists first) into chunks of T tiles padded to K pairs, T*P*K <= max."""
    counts = (tile_offsets[1:] - tile_offsets[:-1]).cpu()
    nonempty = torch.nonzero(counts > 0).squeeze(-1)
    if nonempty.numel() == 0:
        return []
    order = nonempty[torch.argsort(counts[nonempty], descending=True, stable=True)]
    cl = counts[order].tolist()
    chunks, i = [], 0
    while i < len(cl):
        k = cl[i]
        t = max(1, max_elems // (pixels_per_tile * k))
        chunks.append((order[i : i + t].to(tile_offsets.device), k))
        i += t
    return chunks


def _gather_chunk(
    isects: TileIntersections, tiles: Tensor, K: int, n_tiles_per_image: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Flat surfel ids [T, K] (0 where padded), pad mask [T, K] and tile pixel origins [T, 2]."""
    start = isects.tile_offsets[tiles]
    n = isects.tile_offsets[tiles + 1] - start
    ar = torch.arange(K, device=tiles.device)
    valid = ar < n.unsqueeze(-1)
    idx = torch.where(valid, start.unsqueeze(-1) + ar, torch.zeros_like(ar))
    ids = isects.flat_ids[idx]
    local = tiles % n_tiles_per_image
    origin = torch.stack(
        [local % isects.tiles_w, torch.div(local, isects.tiles_w, rounding_mode="floor")], -1
    )
    return ids, valid, origin * isects.tile_size


def _tile_pixels(tile_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[P, 3] local pixel centres (x + 0.5, y + 0.5, 1) of a tile, row-major (p = iy * ts + ix)."""
    c = torch.arange(tile_size, dtype=dtype, device=device) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1), torch.ones_like(xx).reshape(-1)], -1)


# --------------------------------------------------------------------------- fast path: hand-written backward
def _cross(a: Tensor, b: Tensor) -> Tensor:
    """a x b along the last dimension (3); cheaper than torch.linalg.cross on CPU for these small batches."""
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-1)


def _cofactor_rows(M: Tensor) -> Tensor:
    """[..., 3, 3] -> rows (M1 x M2, M2 x M0, M0 x M1) [..., 3, 3]."""
    M0, M1, M2 = M.unbind(-2)
    return torch.stack([_cross(M1, M2), _cross(M2, M0), _cross(M0, M1)], dim=-2)


def _cofactor_rows_vjp(M: Tensor, V: Tensor) -> Tensor:
    """Gradient wrt M [..., 3, 3] of sum(V * _cofactor_rows(M)): for c = a x b, v_a = b x v, v_b = v x a."""
    M0, M1, M2 = M.unbind(-2)
    vA, vB, vC = V.unbind(-2)
    g0 = _cross(vB, M2) + _cross(M1, vC)
    g1 = _cross(M2, vA) + _cross(vC, M0)
    g2 = _cross(vA, M1) + _cross(M0, vB)
    return torch.stack([g0, g1, g2], dim=-2)


def _chunk_forward_terms(M: Tensor, xy: Tensor, opac: Tensor, origin: Tensor, ts: int) -> dict[str, Tensor]:
    """Per pixel-pair terms for a chunk of T tiles (P = ts^2 pixels) with K padded pairs each.

    Args:
        M: [T, K, 3, 3] ray transforms. xy: [T, K, 2] means2d. opac: [T, K] (0 on padding).
        origin: [T, 2] tile origins in pixels (same dtype as M).
    Returns: dict of [T, P, K] tensors (and the bilinear coefficients [T, 3, 3, K]).
    """
    T, K = opac.shape
    cof = _cofactor_rows(M)  # rows M1 x M2, M2 x M0, M0 x M1: [T, K, 3, 3]
    A, Bv = cof[..., 0, :], cof[..., 1, :]
    C = cof[..., 2, :] + origin[:, None, 0:1] * A + origin[:, None, 1:2] * Bv
    coef = torch.stack([A, Bv, C], dim=1).transpose(-1, -2)  # [T, 3 (lx, ly, 1), 3 (t0..t2), K]
    Q = _tile_pixels(ts, M.dtype, M.device)  # [P, 3]
    t = (Q @ coef.reshape(T, 3, 3 * K)).reshape(T, ts * ts, 3, K)
    t0, t1, t2 = t[:, :, 0], t[:, :, 1], t[:, :, 2]
    nz = t2 != 0
    inv_t2 = torch.where(nz, t2, torch.ones_like(t2)).reciprocal_()
    u, v = t0 * inv_t2, t1 * inv_t2
    s3 = torch.addcmul(u * u, v, v)
    pc = Q[:ts, 0].view(1, ts, 1)  # local pixel-centre offsets along one axis
    dx = origin[:, 0].view(T, 1, 1) + pc - xy[:, None, :, 0]  # [T, ts (ix), K]
    dy = origin[:, 1].view(T, 1, 1) + pc - xy[:, None, :, 1]  # [T, ts (iy), K]
    s2 = (FILTER_INV_SQUARE * (dy * dy).unsqueeze(2) + FILTER_INV_SQUARE * (dx * dx).unsqueeze(1)).reshape(
        T, ts * ts, K
    )
    G = torch.minimum(s3, s2).mul_(-0.5).exp_()
    a_raw = opac.unsqueeze(1) * G
    valid = (a_raw >= ALPHA_THRESHOLD).logical_and_(nz)  # min(0.999, x) >= 1/255 iff x >= 1/255
    a = a_raw.clamp_max(ALPHA_MAX).mul_(valid)
    log1m = torch.log1p(-a)
    cs = torch.cumsum(log1m, dim=-1)
    keep = cs > math.log(TRANSMITTANCE_MIN)  # a prefix along K: T after this surfel stays above 1e-4
    T_excl = torch.sub(cs, log1m).exp_()
    w = torch.mul(a, T_excl).mul_(keep)
    log_T_final = torch.mul(log1m, keep).sum(-1)
    return dict(
        t0=t0, t1=t1, t2=t2, inv_t2=inv_t2, u=u, v=v, s3=s3, s2=s2, dx=dx, dy=dy, G=G, a_raw=a_raw,
        valid=valid, a=a, keep=keep, T_excl=T_excl, w=w, log_T_final=log_T_final, A=A, Bv=Bv, Q=Q,
    )  # fmt: skip


def _chunk_outputs(r: dict[str, Tensor], feat: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Composited features [T, P, F], alpha [T, P], distortion [T, P] and median slot [T, P] (-1: none)."""
    w, T_excl = r["w"], r["T_excl"]
    out = w @ feat  # [T, P, F]
    alpha = 1.0 - torch.exp(r["log_T_final"])
    wz = w * z.unsqueeze(1)
    excl_wz = torch.cumsum(wz, -1) - wz
    distort = 2.0 * (wz * (1.0 - T_excl) - w * excl_wz).sum(-1)
    K = w.shape[-1]
    med = r["valid"] & r["keep"] & (T_excl > 0.5)
    slot = (med * torch.arange(1, K + 1, device=w.device)).amax(-1) - 1 if K > 0 else w.new_zeros(0)
    return out, alpha, distort, slot


class _RasterizeChunk(torch.autograd.Function):
    """One chunk of tiles; saves only its [T, K] inputs and recomputes [T, P, K] terms in backward."""

    @staticmethod
    def forward(ctx, M, xy, opac, feat, z, origin, ts: int):
        r = _chunk_forward_terms(M, xy, opac, origin, ts)
        out, alpha, distort, slot = _chunk_outputs(r, feat, z)
        ctx.save_for_backward(M, xy, opac, feat, z, origin)
        ctx.ts = ts
        ctx.mark_non_differentiable(slot)
        ctx.set_materialize_grads(False)
        return out, alpha, distort, slot

    @staticmethod
    def backward(ctx, g_out, g_alpha, g_distort, _g_slot):
        M, xy, opac, feat, z, origin = ctx.saved_tensors
        ts = ctx.ts
        r = _chunk_forward_terms(M, xy, opac, origin, ts)
        w, a, T_excl, keep = r["w"], r["a"], r["T_excl"], r["keep"]
        T, P, K = w.shape

        if g_out is not None:
            g_feat = w.transpose(1, 2) @ g_out  # [T, K, F]
            gw = g_out @ feat.transpose(1, 2)  # [T, P, K]
        else:
            g_feat = torch.zeros_like(feat)
            gw = torch.zeros_like(w)
        g_z = torch.zeros_like(z)
        if g_distort is not None:
            # D = 2 sum_k w_k (z_k A_k - B_k) with A_k = sum_{j<k} w_j, B_k = sum_{j<k} w_j z_j
            zz = z.unsqueeze(1)
            wz = w * zz
            cw, cwz = torch.cumsum(w, -1), torch.cumsum(wz, -1)
            A_ = cw - w
            Wsuf = cw[..., -1:] - cw
            gd2 = 2.0 * g_distort.unsqueeze(-1)
            # dD/dw_k = 2 (z_k A_k - B_k + C_k - z_k W_k), C_k = sum_{j>k} w_j z_j, W_k = sum_{j>k} w_j
            dD_dw = zz * (A_ - Wsuf) - (cwz - wz) + (cwz[..., -1:] - cwz)
            gw = gw + gd2 * dD_dw
            g_z = g_z + (gd2 * w * (A_ - Wsuf)).sum(1)  # [T, K]
        # chain w_k = a_k T_k to the alphas; S_k = sum_{j>k} w_j gw_j
        cwg = torch.cumsum(w * gw, -1)
        S = cwg[..., -1:] - cwg
        if g_alpha is not None:
            S = S - (g_alpha * torch.exp(r["log_T_final"])).unsqueeze(-1)
        v_a = T_excl * gw - S / (1.0 - a)
        active = (r["a_raw"] <= ALPHA_MAX).logical_and_(keep).logical_and_(r["valid"])
        v_a = v_a.mul_(active)
        Gv = r["G"] * v_a
        g_opac = Gv.sum(1)  # [T, K]
        v_half = Gv.mul_(-0.5 * opac.unsqueeze(1))  # dL/d(gauss_weight); sigma = 0.5 * gauss_weight
        use3 = r["s3"] <= r["s2"]
        v_s3 = v_half * use3
        v_s2 = v_half.masked_fill_(use3, 0.0)
        # s3 = (t0^2 + t1^2) / t2^2
        k2 = torch.mul(v_s3, r["inv_t2"]).mul_(2.0)
        v_t = torch.empty(T, P, 3, K, dtype=w.dtype, device=w.device)
        torch.mul(k2, r["u"], out=v_t[:, :, 0])
        torch.mul(k2, r["v"], out=v_t[:, :, 1])
        torch.mul(k2, r["s3"], out=v_t[:, :, 2]).neg_()
        Q = r["Q"]
        v_coef = (Q.t() @ v_t.reshape(T, P, 3 * K)).reshape(T, 3, 3, K).transpose(-1, -2)  # [T, 3, K, 3]
        v_A, v_B, v_C = v_coef[:, 0], v_coef[:, 1], v_coef[:, 2]  # [T, K, 3]
        v_A = v_A + origin[:, None, 0:1] * v_C
        v_B = v_B + origin[:, None, 1:2] * v_C
        g_M = _cofactor_rows_vjp(M, torch.stack([v_A, v_B, v_C], dim=-2))
        # s2 = 2 (dx^2 + dy^2), d = pixel - means2d
        v_s2 = v_s2.reshape(T, ts, ts, K)
        g_x = -2.0 * FILTER_INV_SQUARE * (r["dx"] * v_s2.sum(1)).sum(1)
        g_y = -2.0 * FILTER_INV_SQUARE * (r["dy"] * v_s2.sum(2)).sum(1)
        g_xy = torch.stack([g_x, g_y], -1)
        return g_M, g_xy, g_opac, g_feat, g_z, None, None


# ----------------------------------------------------------------------------- readable twin: plain autograd
def _chunk_autograd(
    M: Tensor, xy: Tensor, opac: Tensor, feat: Tensor, z: Tensor, origin: Tensor, ts: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """gsplat's per-pixel formulas written out for a chunk of T tiles x P pixels x K pairs (autograd).

    Args as `_RasterizeChunk`: M [T, K, 3, 3], xy [T, K, 2], opac [T, K], feat [T, K, F], z [T, K],
    origin [T, 2]. Returns features [T, P, F], alpha [T, P], distortion [T, P], median slot [T, P].
    """
    Q = _tile_pixels(ts, M.dtype, M.device)
    px = (origin[:, None, 0] + Q[None, :, 0])[:, :, None, None]  # [T, P, 1, 1]
    py = (origin[:, None, 1] + Q[None, :, 1])[:, :, None, None]
    M0, M1, M2 = M[:, None, :, 0, :], M[:, None, :, 1, :], M[:, None, :, 2, :]  # [T, 1, K, 3]
    h_u = px * M2 - M0  # [T, P, K, 3]
    h_v = py * M2 - M1
    c = torch.linalg.cross(h_u, h_v, dim=-1)
    nz = c[..., 2] != 0
    t2 = torch.where(nz, c[..., 2], torch.ones_like(c[..., 2]))
    u, v = c[..., 0] / t2, c[..., 1] / t2
    gauss_3d = u * u + v * v
    d = xy[:, None] - torch.cat([px, py], dim=-1)[..., 0, :].unsqueeze(2)  # [T, P, K, 2]
    gauss_2d = FILTER_INV_SQUARE * (d * d).sum(-1)
    sigma = 0.5 * torch.minimum(gauss_3d, gauss_2d)
    alpha = torch.clamp_max(opac[:, None, :] * torch.exp(-sigma), ALPHA_MAX)
    valid = nz & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(1.0 - alpha, dim=-1)  # T after each surfel
    T_excl = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], dim=-1)
    keep = trans > TRANSMITTANCE_MIN
    w = torch.where(keep, alpha * T_excl, torch.zeros_like(alpha))
    out = torch.einsum("tpk,tkf->tpf", w, feat)
    acc = 1.0 - torch.where(keep, 1.0 - alpha, torch.ones_like(alpha)).prod(-1)
    zz = z[:, None, :]
    before_wz = torch.cumsum(w * zz, -1) - w * zz
    distort = (2.0 * w * (zz * (1.0 - T_excl) - before_wz)).sum(-1)
    K = alpha.shape[-1]
    reached = valid & keep & (T_excl > 0.5)
    slot = torch.where(
        reached, torch.arange(K, device=M.device), torch.full_like(reached, -1, dtype=torch.long)
    )
    return out, acc, distort, slot.amax(-1)


# ---------------------------------------------------------------------------------------------- rasterising
def _take(x: Tensor, ids: Tensor) -> Tensor:
    """x[ids] via index_select, whose backward (index_add_) is deterministic on CPU (x[ids] is not, x.ndim > 1)."""
    return x.index_select(0, ids.reshape(-1)).reshape(ids.shape + x.shape[1:])


def _rasterize(
    chunk_fn,
    means2d: Tensor,
    ray_transforms: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    isects: TileIntersections,
    width: int,
    height: int,
    max_chunk_elems: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, N, Fd = features.shape
    ts = isects.tile_size
    P = ts * ts
    n_tiles = isects.tiles_w * isects.tiles_h
    M_f = ray_transforms.reshape(B * N, 3, 3)
    xy_f, o_f = means2d.reshape(B * N, 2), opacities.reshape(B * N)
    f_f, z_f = features.reshape(B * N, Fd), depths.reshape(B * N)
    tiles_l, outs, alphas, dists, meds = [], [], [], [], []
    for tiles, K in _plan_chunks(isects.tile_offsets, P, max_chunk_elems):
        ids, pad, origin = _gather_chunk(isects, tiles, K, n_tiles)

        oc = torch.where(pad, _take(o_f, ids), 0.0)
        out, acc, dist, slot = chunk_fn(
            _take(M_f, ids), _take(xy_f, ids), oc, _take(f_f, ids), _take(z_f, ids), origin.to(M_f.dtype), ts
        )
        med = torch.where(slot >= 0, ids.gather(1, slot.clamp_min(0)), torch.full_like(slot, -1))
        tiles_l.append(tiles)
        outs.append(out)
        alphas.append(acc)
        dists.append(dist)
        meds.append(med)

    def assemble(parts: list[Tensor], channels: int, fill: float = 0.0) -> Tensor:
        dt = parts[0].dtype if parts else features.dtype
        buf = torch.full((B * n_tiles, P, channels), fill, dtype=dt, device=features.device)
        if parts:
            src = torch.cat(parts).reshape(-1, P, channels)
            buf = buf.index_copy(0, torch.cat(tiles_l), src)
        img = buf.reshape(B, isects.tiles_h, isects.tiles_w, ts, ts, channels).permute(0, 1, 3, 2, 4, 5)
        return img.reshape(B, isects.tiles_h * ts, isects.tiles_w * ts, channels)[:, :height, :width]

    img = assemble(outs, Fd)
    alpha = assemble(alphas, 1)
    distort = assemble(dists, 1)
    median_ids = assemble(meds, 1, fill=-1)[..., 0] if meds else None
    if median_ids is None:
        median_ids = torch.full((B, height, width), -1, dtype=torch.long, device=features.device)
    if not outs and torch.is_grad_enabled():
        # keep the outputs connected to the inputs so that backward works on an empty image
        link = 0.0 * (features.sum() + opacities.sum() + ray_transforms.sum() + means2d.sum())
        img, alpha, distort = img + link, alpha + link, distort + link
    return img, alpha, distort, median_ids


def rasterize_tiles(
    means2d: Tensor,
    ray_transforms: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    isects: TileIntersections,
    width: int,
    height: int,
    max_chunk_elems: int = 1 << 22,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Composite every tile's surfels front to back (fast path, hand-written backward).

    Args:
        means2d: [B, N, 2]. ray_transforms: [B, N, 3, 3]. opacities: [B, N]. features: [B, N, F] to
        composite. depths: [B, N] z used by the distortion term. isects: from `intersect_tiles`.
        max_chunk_elems: tiles x pixels x padded pairs per chunk (bounds the temporaries).
    Returns:
        features [B, H, W, F], alpha [B, H, W, 1], distortion [B, H, W, 1] and the flat id (b * N + n) of
        the median-depth surfel per pixel [B, H, W] int64 (-1: none).
    """

    def fast(M, xy, o, f, z, origin, ts):
        return _RasterizeChunk.apply(M, xy, o, f, z, origin, ts)

    return _rasterize(
        fast, means2d, ray_transforms, opacities, features, depths, isects, width, height, max_chunk_elems
    )


def rasterize_tiles_autograd(
    means2d: Tensor,
    ray_transforms: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    isects: TileIntersections,
    width: int,
    height: int,
    max_chunk_elems: int = 1 << 20,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`rasterize_tiles` written with gsplat's formulas and plain autograd (its readable twin; memory grows
    with pairs x tile pixels because autograd keeps every chunk's terms)."""
    return _rasterize(
        _chunk_autograd,
        means2d,
        ray_transforms,
        opacities,
        features,
        depths,
        isects,
        width,
        height,
        max_chunk_elems,
    )


# ------------------------------------------------------------------------------------------- post-processing
def normals_from_depth(depth: Tensor, cam_to_world: Tensor, K: Tensor) -> Tensor:
    """World-space normals [B, H, W, 3] from a z-depth map [B, H, W, 1] (gsplat's ``depth_to_normal``).

    Back-projects pixel centres, takes central differences (rows, then columns), normalises their cross
    product and pads the one-pixel border with zeros. cam_to_world: [B, 4, 4]. K: [B, 3, 3].
    """
    B, H, W, _ = depth.shape
    dev, dt = depth.device, depth.dtype
    ys, xs = torch.meshgrid(
        torch.arange(H, device=dev, dtype=dt), torch.arange(W, device=dev, dtype=dt), indexing="ij"
    )
    fx, fy = K[:, 0, 0].view(B, 1, 1), K[:, 1, 1].view(B, 1, 1)
    cx, cy = K[:, 0, 2].view(B, 1, 1), K[:, 1, 2].view(B, 1, 1)
    dirs = torch.stack([(xs - cx + 0.5) / fx, (ys - cy + 0.5) / fy, torch.ones_like(xs).expand(B, H, W)], -1)
    dirs = torch.einsum("bij,bhwj->bhwi", cam_to_world[:, :3, :3], dirs)
    points = cam_to_world[:, None, None, :3, 3] + depth * dirs
    dx = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    dy = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    normals = F.normalize(torch.linalg.cross(dx, dy, dim=-1), dim=-1)
    return F.pad(normals, (0, 0, 1, 1, 1, 1))


def finish_render(
    composited: Tensor,
    alphas: Tensor,
    distortion: Tensor,
    median_depth: Tensor,
    feature_dim: int,
    world_to_cam: Tensor,
    K: Tensor,
    background: Tensor | None,
    depth_mode: str,
    handle: Tensor,
    projection: Projection,
) -> SurfelRender:
    """Split composited [B, H, W, D + 1 + 3] (features, z, camera normals) into a `SurfelRender`.

    alphas, distortion, median_depth: [B, H, W, 1]. world_to_cam: [B, 4, 4]. K: [B, 3, 3].
    background: [B, D] or None. handle: [B, N, 2]. projection: per-surfel quantities to expose.
    """
    D = feature_dim
    colors = composited[..., :D]
    if background is not None:
        colors = colors + background[:, None, None, :] * (1.0 - alphas)
    depth_expected = composited[..., D : D + 1] / alphas.clamp_min(1e-10)
    normals_world = composited[..., D + 1 : D + 4] @ world_to_cam[:, None, :3, :3]  # R^T n per pixel
    if depth_mode not in ("expected", "median"):
        raise ValueError(f"depth_mode must be 'expected' or 'median', got {depth_mode!r}")
    depth_for_normals = depth_expected if depth_mode == "expected" else median_depth
    nfd = normals_from_depth(depth_for_normals, torch.linalg.inv(world_to_cam), K)
    return SurfelRender(
        colors=colors,
        alphas=alphas,
        depth_expected=depth_expected,
        depth_median=median_depth,
        normals=normals_world,
        normals_from_depth=nfd,
        distortion=distortion,
        means2d_grad_handle=handle,
        means2d=projection.means2d,
        depths=projection.depths,
        radii=projection.radii,
    )


def render_torch(
    surfels: Surfels,
    cameras: Cameras,
    *,
    background: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    tile_size: int = 16,
    depth_mode: str = "expected",
    backward: str = "manual",
    max_chunk_elems: int | None = None,
    raster_tile_size: int | None = 4,
) -> SurfelRender:
    """Portable backend of `render_surfels` (see there).

    Extra options: ``backward="autograd"`` uses the readable twin instead of the hand-written backward;
    ``max_chunk_elems`` bounds tiles x pixels x pairs per chunk; ``raster_tile_size`` (a divisor of
    tile_size; otherwise tile_size is used) is the tile the rasteriser works on (see `intersect_tiles`)."""
    B, N = surfels.batch_size, surfels.num_surfels
    W, H = cameras.width, cameras.height
    w2c, K = cameras.world_to_cam.to(surfels.dtype), cameras.K.to(surfels.dtype)
    proj = project_surfels(
        surfels.means, surfels.quats, surfels.scales, w2c, K, W, H, near_plane, far_plane, radius_clip
    )
    handle = torch.zeros(B, N, 2, dtype=surfels.dtype, device=surfels.device, requires_grad=True)
    M = inject_means2d_handle(proj.ray_transforms, proj.depths, handle)
    if raster_tile_size is not None and tile_size % raster_tile_size:
        raster_tile_size = None
    isects = intersect_tiles(proj.means2d, proj.radii, proj.depths, W, H, tile_size, raster_tile_size)
    feats = torch.cat([surfels.features, proj.depths.unsqueeze(-1), proj.normals], dim=-1)
    if backward == "manual":
        fn, default_elems = rasterize_tiles, 1 << 18
    elif backward == "autograd":
        fn, default_elems = rasterize_tiles_autograd, 1 << 20
    else:
        raise ValueError(f"backward must be 'manual' or 'autograd', got {backward!r}")
    img, alpha, distort, med_ids = fn(
        proj.means2d, M, surfels.opacities, feats, proj.depths, isects, W, H, max_chunk_elems or default_elems
    )
    z_f = proj.depths.reshape(-1)
    median = torch.where(med_ids >= 0, z_f[med_ids.clamp_min(0)], torch.zeros_like(z_f[:1])).unsqueeze(-1)
    return finish_render(
        img, alpha, distort, median, surfels.feature_dim, w2c, K, background, depth_mode, handle, proj
    )
