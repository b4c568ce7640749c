"""Mesh topology helpers: k-ring face adjacency, UV-space rasterisation, sampling points on faces.

Shapes: faces [F, 3] long; vertices [V, 3] or [B, V, 3]; UVs [Vt, 2] in [0, 1] with v up (OBJ convention);
face ids [...] long; barycentrics [..., 3] summing to 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "UVRaster",
    "face_adjacency",
    "k_ring_face_neighbours",
    "face_areas",
    "sample_points_on_faces",
    "interpolate_on_faces",
    "uv_rasterize",
]


def face_adjacency(faces: Tensor, *, by: str = "vertex") -> Tensor:
    """Pairs of distinct faces that touch, as an `edge_index` [2, E] (both directions, sorted, no self loops).

    by="vertex": faces sharing at least one vertex; by="edge": faces sharing an edge (two vertices).
    """
    faces = faces.long()
    F = faces.shape[0]
    dev = faces.device
    if by == "edge":
        e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values  # [3F, 2]
        owner = torch.arange(F, device=dev).repeat(3)
        key = e[:, 0] * (int(faces.max()) + 1) + e[:, 1]
    elif by == "vertex":
        key = faces.reshape(-1)
        owner = torch.arange(F, device=dev).repeat_interleave(3)
    else:
        raise ValueError(f"face_adjacency: by must be 'vertex' or 'edge', got {by!r}")
    order = torch.argsort(key, stable=True)
    key, owner = key[order], owner[order]
    # group faces by key; connect every pair inside a group
    _, counts = torch.unique_consecutive(key, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    max_c = int(counts.max())
    offs = torch.arange(max_c, device=dev)
    slot = starts[:, None] + offs[None]  # [G, max_c]
    valid = offs[None] < counts[:, None]
    members = torch.where(valid, owner[slot.clamp(max=len(owner) - 1)], torch.full_like(slot, -1))
    a = members[:, :, None].expand(-1, max_c, max_c)
    b = members[:, None, :].expand(-1, max_c, max_c)
    keep = (a >= 0) & (b >= 0) & (a != b)
    pairs = torch.stack([a[keep], b[keep]])
    return _unique_pairs(pairs, F)


def _unique_pairs(pairs: Tensor, n: int) -> Tensor:
    code = torch.unique(pairs[0] * n + pairs[1])
    return torch.stack([code // n, code % n])


def k_ring_face_neighbours(
    faces: Tensor, k: int = 2, *, by: str = "vertex", include_self: bool = False
) -> Tensor:
    """Faces within `k` adjacency steps of each other, as an `edge_index` [2, E] (both directions, sorted).

    Ring 1 is :func:`face_adjacency`; ring k adds the neighbours of ring k-1. `include_self` adds (f, f) pairs.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    F = faces.shape[0]
    one = face_adjacency(faces, by=by)
    with warnings.catch_warnings():  # torch's "sparse ... beta" / invariant-check notices
        warnings.simplefilter("ignore", UserWarning)
        A = torch.sparse_coo_tensor(one, torch.ones(one.shape[1], device=faces.device), (F, F)).coalesce()
        reach = A
        for _ in range(k - 1):
            reach = (reach + torch.sparse.mm(reach, A)).coalesce()
    idx = reach.indices()
    idx = idx[:, idx[0] != idx[1]]
    if include_self:
        ar = torch.arange(F, device=faces.device)
        idx = torch.cat([idx, torch.stack([ar, ar])], dim=1)
    return _unique_pairs(idx, F)


def face_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    """Triangle areas: vertices [..., V, 3] -> [..., F] (square metres)."""
    v = vertices[..., faces, :]  # [..., F, 3, 3]
    return 0.5 * torch.linalg.cross(v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :]).norm(dim=-1)


def sample_points_on_faces(
    vertices: Tensor, faces: Tensor, n: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Area-weighted uniform samples on a mesh surface. vertices [V, 3] -> face ids [n] and barycentrics [n, 3].

    Uniform inside each triangle (the square-root warp of Osada et al.). Use :func:`interpolate_on_faces` to get
    the points of any posed version of the mesh.
    """
    if vertices.ndim != 2:
        raise ValueError(f"sample_points_on_faces takes one mesh [V, 3], got {tuple(vertices.shape)}")
    areas = face_areas(vertices, faces)
    if not torch.isfinite(areas).all() or areas.sum() <= 0:
        raise ValueError("sample_points_on_faces: the mesh has no positive area")
    dev = vertices.device
    face_ids = torch.multinomial(areas.cpu().double(), n, replacement=True, generator=generator).to(dev)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64).to(device=dev, dtype=vertices.dtype)
    s = r[:, 0].sqrt()
    bary = torch.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], dim=-1)
    return face_ids, bary


def interpolate_on_faces(values: Tensor, faces: Tensor, face_ids: Tensor, bary: Tensor) -> Tensor:
    """Barycentric interpolation of per-vertex values at points on faces.

    values [..., V, D], faces [F, 3], face_ids [N], bary [N, 3] -> [..., N, D]. Differentiable in values and bary.
    """
    corners = values[..., faces[face_ids], :]  # [..., N, 3, D]
    return (corners * bary[..., :, :, None]).sum(dim=-2)


@dataclass
class UVRaster:
    """Which face covers each texel of a UV map, and where (texel centres; row 0 is the top, v = 1).

    face_ids [S, S] long (-1 where no face), bary [S, S, 3], uv [S, S, 2] the texel centres' UV coordinates.
    """

    face_ids: Tensor
    bary: Tensor
    uv: Tensor

    @property
    def mask(self) -> Tensor:
        return self.face_ids >= 0


def uv_rasterize(uvs: Tensor, uv_faces: Tensor, size: int) -> UVRaster:
    """Rasterise a UV layout at `size` x `size` texels (FlashAvatar-style texel -> face, barycentrics).

    uvs [Vt, 2] in [0, 1], uv_faces [F, 3]. Texel (i, j) has centre u = (j + 0.5) / size, v = 1 - (i + 0.5) / size.
    Barycentrics refer to the face's corners in `uv_faces` order (the same corners as the mesh's `faces`).
    """
    from headrecon.render.mesh_raster import rasterize_triangles_2d

    if uvs.ndim != 2 or uvs.shape[1] != 2:
        raise ValueError(f"uv_rasterize: uvs must be [Vt, 2], got {tuple(uvs.shape)}")
    pix = torch.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], dim=-1)[None]  # image x right, y down
    face_ids, bary = rasterize_triangles_2d(pix, None, uv_faces.long(), size, size)
    ii, jj = torch.meshgrid(
        torch.arange(size, device=uvs.device), torch.arange(size, device=uvs.device), indexing="ij"
    )
    uv = torch.stack([(jj + 0.5) / size, 1.0 - (ii + 0.5) / size], dim=-1).to(uvs.dtype)
    return UVRaster(face_ids[0], bary[0], uv)
