"""Exact point-to-triangle-mesh distances and closest points (CPU and CUDA, chunked).

`closest_point_on_triangles` is the closed-form Voronoi-region test of Ericson, *Real-Time Collision Detection*
(section 5.1.5), vectorised over (point, triangle) pairs. `point_to_mesh` finds, for every query point, the
nearest point on the mesh surface:

* method="brute": every point against every triangle, in chunks of at most `max_pairs` pairs (exact; the
  reference, and the CUDA path);
* method="pruned" (CPU default): exact as well, but only triangles that can be nearest are tested. For a point p
  with nearest mesh vertex at distance d_v, the nearest surface point is within d_v; a triangle with centroid c
  and circumradius-about-centroid r can only contain it if |p - c| <= d_v + r. Candidates come from a KD-tree
  over the centroids queried with radius d_v + r_max, then filtered per triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["closest_point_on_triangles", "point_to_mesh", "MeshDistance"]


def closest_point_on_triangles(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Closest points on triangles (a, b, c) to points p, all [..., 3] (broadcast). Returns the closest points
    [..., 3] and their barycentric coordinates [..., 3]. Degenerate triangles are handled (edges/vertices)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    one, zero = torch.ones_like(d1), torch.zeros_like(d1)
    tiny = torch.finfo(p.dtype).tiny

    def safe_div(n: Tensor, d: Tensor) -> Tensor:
        return n / torch.where(d.abs() > tiny, d, torch.full_like(d, tiny))

    # interior by default
    denom = va + vb + vc
    v = safe_div(vb, denom)
    w = safe_div(vc, denom)
    u = one - v - w
    bary = torch.stack([u, v, w], -1)

    def put(mask: Tensor, bu: Tensor, bv: Tensor, bw: Tensor) -> None:
        nonlocal bary
        bary = torch.where(mask[..., None], torch.stack([bu, bv, bw], -1), bary)

    # edge regions first, then vertex regions, so that vertex regions (which take precedence) are written last
    m_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    t = safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    put(m_bc, zero, one - t, t)
    m_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    t = safe_div(d2, d2 - d6)
    put(m_ac, one - t, zero, t)
    m_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    t = safe_div(d1, d1 - d3)
    put(m_ab, one - t, t, zero)
    put((d6 >= 0) & (d5 <= d6), zero, zero, one)  # vertex c
    put((d3 >= 0) & (d4 <= d3), zero, one, zero)  # vertex b
    put((d1 <= 0) & (d2 <= 0), one, zero, zero)  # vertex a
    q = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    return q, bary


@dataclass
class MeshDistance:
    """distances [M] (units of the inputs), closest points [M, 3], face ids [M], barycentrics [M, 3]."""

    distances: Tensor
    closest: Tensor
    face_ids: Tensor
    bary: Tensor


def point_to_mesh(
    points: Tensor, vertices: Tensor, faces: Tensor, *, method: str = "auto", max_pairs: int = 1 << 22
) -> MeshDistance:
    """Unsigned distance from every point [M, 3] to the surface of a mesh (vertices [V, 3], faces [F, 3])."""
    if method == "auto":
        method = "pruned" if points.device.type == "cpu" else "brute"
    if method == "brute":
        return _brute(points, vertices, faces, max_pairs)
    if method == "pruned":
        return _pruned(points, vertices, faces, max_pairs)
    raise ValueError(f"point_to_mesh: method must be 'auto', 'brute' or 'pruned', got {method!r}")


def _evaluate_pairs(points: Tensor, tri: Tensor, pi: Tensor, fi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    q, bary = closest_point_on_triangles(points[pi], tri[fi, 0], tri[fi, 1], tri[fi, 2])
    return (points[pi] - q).square().sum(-1), q, bary


def _brute(points: Tensor, vertices: Tensor, faces: Tensor, max_pairs: int) -> MeshDistance:
    M, F = points.shape[0], faces.shape[0]
    tri = vertices[faces]  # [F, 3, 3]
    best_d = torch.full((M,), float("inf"), dtype=points.dtype, device=points.device)
    best_q = torch.zeros_like(points)
    best_f = torch.zeros(M, dtype=torch.long, device=points.device)
    best_b = torch.zeros_like(points)
    rows = max(1, max_pairs // max(F, 1))
    for s in range(0, M, rows):
        p = points[s : s + rows]
        q, bary = closest_point_on_triangles(p[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
        d = (p[:, None] - q).square().sum(-1)  # [m, F]
        dmin, arg = d.min(dim=1)
        idx = torch.arange(len(p), device=p.device)
        best_d[s : s + rows], best_f[s : s + rows] = dmin, arg
        best_q[s : s + rows], best_b[s : s + rows] = q[idx, arg], bary[idx, arg]
    return MeshDistance(best_d.sqrt(), best_q, best_f, best_b)


def _pruned(points: Tensor, vertices: Tensor, faces: Tensor, max_pairs: int) -> MeshDistance:
    from scipy.spatial import cKDTree

    p_np = points.detach().cpu().double().numpy()
    v_np = vertices.detach().cpu().double().numpy()
    f_np = faces.detach().cpu().numpy()
    tri = v_np[f_np]
    centroid = tri.mean(1)
    radius = np.linalg.norm(tri - centroid[:, None], axis=-1).max(1)
    used = np.unique(f_np)
    d_v, _ = cKDTree(v_np[used]).query(p_np)
    ctree = cKDTree(centroid)
    cand = ctree.query_ball_point(p_np, d_v + radius.max() + 1e-12)
    counts = np.fromiter((len(c) for c in cand), dtype=np.int64, count=len(cand))
    pi = np.repeat(np.arange(len(p_np)), counts)
    fi = np.fromiter((f for c in cand for f in c), dtype=np.int64, count=int(counts.sum()))
    # exact filter with each triangle's own radius
    keep = np.linalg.norm(p_np[pi] - centroid[fi], axis=1) <= d_v[pi] + radius[fi] + 1e-12
    pi, fi = pi[keep], fi[keep]
    dev, dt = points.device, points.dtype
    tri_t = vertices[faces]
    M = points.shape[0]
    best_d = torch.full((M,), float("inf"), dtype=dt, device=dev)
    best_q = torch.zeros_like(points)
    best_f = torch.zeros(M, dtype=torch.long, device=dev)
    best_b = torch.zeros_like(points)
    pi_t, fi_t = torch.from_numpy(pi).to(dev), torch.from_numpy(fi).to(dev)
    for s in range(0, len(pi), max_pairs):
        a, f = pi_t[s : s + max_pairs], fi_t[s : s + max_pairs]
        d, q, bary = _evaluate_pairs(points, tri_t, a, f)
        # per-point minimum over this chunk, then merge with the running best
        cur = torch.full((M,), float("inf"), dtype=dt, device=dev).scatter_reduce(0, a, d, "amin")
        hit = d == cur[a]
        winner = torch.full((M,), -1, dtype=torch.long, device=dev)
        winner[a[hit]] = torch.nonzero(hit).squeeze(1)
        better = (winner >= 0) & (cur < best_d)
        w = winner[better]
        best_d[better], best_q[better], best_f[better], best_b[better] = d[w], q[w], f[w], bary[w]
    return MeshDistance(best_d.sqrt(), best_q, best_f, best_b)
