"""Quaternion helpers (w, x, y, z convention, as gsplat). Shapes: quaternions [..., 4], matrices [..., 3, 3]."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["quat_to_rotmat", "rotmat_to_quat", "quat_multiply"]


def quat_to_rotmat(q: Tensor) -> Tensor:
    """[..., 4] (normalised here) -> [..., 3, 3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)  # fmt: skip


def rotmat_to_quat(R: Tensor) -> Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions with w >= 0.

    Picks, per matrix, the best-conditioned of the four standard formulas (largest of w, x, y, z), so it is
    accurate and differentiable away from exact ties.
    """
    m = R
    t = torch.stack(
        [
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        dim=-1,
    )  # 4 * (w^2, x^2, y^2, z^2)
    r = torch.sqrt(t.clamp_min(1e-12))  # 2|w|, 2|x|, 2|y|, 2|z|
    # each row: the quaternion computed from the formula led by that component
    cands = torch.stack(
        [
            torch.stack([r[..., 0], (m[..., 2, 1] - m[..., 1, 2]) / r[..., 0], (m[..., 0, 2] - m[..., 2, 0]) / r[..., 0], (m[..., 1, 0] - m[..., 0, 1]) / r[..., 0]], -1),
            torch.stack([(m[..., 2, 1] - m[..., 1, 2]) / r[..., 1], r[..., 1], (m[..., 1, 0] + m[..., 0, 1]) / r[..., 1], (m[..., 0, 2] + m[..., 2, 0]) / r[..., 1]], -1),
            torch.stack([(m[..., 0, 2] - m[..., 2, 0]) / r[..., 2], (m[..., 1, 0] + m[..., 0, 1]) / r[..., 2], r[..., 2], (m[..., 2, 1] + m[..., 1, 2]) / r[..., 2]], -1),
            torch.stack([(m[..., 1, 0] - m[..., 0, 1]) / r[..., 3], (m[..., 0, 2] + m[..., 2, 0]) / r[..., 3], (m[..., 2, 1] + m[..., 1, 2]) / r[..., 3], r[..., 3]], -1),
        ],
        dim=-2,
    ) * 0.5  # fmt: skip
    best = t.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    return torch.nn.functional.normalize(q, dim=-1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b for [..., 4] quaternions (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )
