"""Binding Gaussians to the triangles of a posed mesh (written from the GaussianAvatars / SHeaP maths).

Per triangle (v0, v1, v2) a local frame:

* axes (columns of R): e_u = normalize(v1 - v0), the face normal n = normalize((v1 - v0) x (v2 - v0)), and the
  in-plane e_v = n x e_u, so R = [e_u, e_v, n] is a right-handed rotation;
* scale S = diag(s_u, s_v, min(s_u, s_v)) with s_u = |v1 - v0| (the edge length) and s_v = |e_v . (v2 - v0)| (the
  triangle's height over that edge). GaussianAvatars uses one isotropic k = (s_u + s_v) / 2; SHeaP makes it
  anisotropic, which is what we do.

A Gaussian with parent face f, barycentric b, local offset o, local rotation q and local in-plane scales s gets

    mean     = sum_k b_k v_k + R S o            (anchored on its barycentric point, not the centroid)
    rotation = q_R * q                           (quaternion of R, then the local rotation)
    scales   = (s_u s_1, s_v s_2)                (the surfel's tangent axes scale with the triangle's)
    normal   = third column of the world rotation

Zero offsets therefore put centres on their triangles; a rigid motion of the mesh moves every surfel rigidly; a
triangle scaled by c scales its surfels' means offsets and scales by c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headrecon.render.rotations import quat_multiply, quat_to_rotmat, rotmat_to_quat

__all__ = ["TriangleFrames", "triangle_frames", "BoundGaussians", "bind_to_mesh"]


@dataclass
class TriangleFrames:
    """Per-triangle frames. rotation [B, F, 3, 3] (columns e_u, e_v, n); scale [B, F, 3] (s_u, s_v, min)."""

    rotation: Tensor
    scale: Tensor


def triangle_frames(vertices: Tensor, faces: Tensor, *, eps: float = 1e-12) -> TriangleFrames:
    """Frames of every triangle of B meshes: vertices [B, V, 3] (metres), faces [F, 3]."""
    v = vertices[:, faces]  # [B, F, 3, 3]
    e1 = v[:, :, 1] - v[:, :, 0]
    e2 = v[:, :, 2] - v[:, :, 0]
    s_u = e1.norm(dim=-1)
    eu = e1 / s_u.clamp_min(eps)[..., None]
    n = torch.linalg.cross(e1, e2)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    ev = torch.linalg.cross(n, eu)
    s_v = (ev * e2).sum(-1).abs()
    R = torch.stack([eu, ev, n], dim=-1)
    return TriangleFrames(R, torch.stack([s_u, s_v, torch.minimum(s_u, s_v)], dim=-1))


@dataclass
class BoundGaussians:
    """World-space surfels of B heads: means [B, N, 3], quats [B, N, 4] (wxyz), scales [B, N, 2], normals [B, N, 3]."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    normals: Tensor


def bind_to_mesh(
    vertices: Tensor,
    faces: Tensor,
    face_ids: Tensor,
    bary: Tensor,
    offsets: Tensor,
    quats: Tensor,
    scales: Tensor,
) -> BoundGaussians:
    """Place Gaussians given in their parent triangles' frames into the world (see the module docstring).

    vertices [B, V, 3]; faces [F, 3]; face_ids [N]; bary [N, 3]; offsets [B, N, 3] (in units of the triangle's
    scale); quats [B, N, 4] local rotations (wxyz); scales [B, N, 2] local in-plane scales (relative).
    """
    frames = triangle_frames(vertices, faces)
    R = frames.rotation[:, face_ids]  # [B, N, 3, 3]
    S = frames.scale[:, face_ids]  # [B, N, 3]
    corners = vertices[:, faces[face_ids]]  # [B, N, 3, 3]
    anchor = (corners * bary[None, :, :, None]).sum(dim=2)
    means = anchor + (R @ (S * offsets)[..., None]).squeeze(-1)
    world_q = quat_multiply(rotmat_to_quat(R), torch.nn.functional.normalize(quats, dim=-1))
    world_scales = S[..., :2] * scales
    normals = quat_to_rotmat(world_q)[..., :, 2]
    return BoundGaussians(means, world_q, world_scales, normals)
