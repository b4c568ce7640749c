"""Rotation conversions for network outputs: 6D <-> matrix <-> axis-angle.

The 6D representation (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
CVPR 2019) is the first two *rows* of the rotation matrix, ``[r00, r01, r02, r10, r11, r12]`` (the
convention of PyTorch3D's ``matrix_to_rotation_6d``). A network predicts it unconstrained; Gram-Schmidt turns it
into a proper rotation. ``IDENTITY_6D`` is the identity rotation.

Shapes: 6D [..., 6], matrices [..., 3, 3], axis-angle [..., 3] (radians, |v| = angle, v / |v| = axis).
All functions are differentiable, finite at the identity (where the network starts), traceable and exportable
to ONNX (no data-dependent Python control flow).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from headrecon.render.rotations import quat_to_rotmat, rotmat_to_quat

__all__ = [
    "IDENTITY_6D",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "matrix_to_axis_angle",
    "axis_angle_to_matrix",
    "rotation_6d_to_axis_angle",
    "quat_to_axis_angle",
]

#: The identity rotation in the 6D representation (first two rows of I).
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

# Below this |v| (sine of the half angle) quaternion -> axis-angle uses the first-order series.
_SMALL = 1e-6


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """[..., 6] -> [..., 3, 3]: Gram-Schmidt on the two predicted rows; the third row is their cross product."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = _cross(b1, b2)
    return torch.stack((b1, b2, b3), dim=-2)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """Cross product of [..., 3] vectors, written out (``torch.cross`` has no ONNX export)."""
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    return torch.stack((ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx), dim=-1)


def matrix_to_rotation_6d(R: Tensor) -> Tensor:
    """[..., 3, 3] -> [..., 6]: the first two rows, flattened."""
    return R[..., :2, :].reshape(*R.shape[:-2], 6)


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """[..., 4] (w, x, y, z) -> [..., 3] axis-angle with angle in [0, pi] (q and -q give the same result).

    ``angle = 2 atan2(|v|, w)``; the axis-angle is ``v * angle / |v|``, with ``angle / |v| -> 2 / w`` as
    |v| -> 0 (used below ``_SMALL``, with safe denominators so that gradients stay finite at the identity).
    """
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    w, v = q[..., :1], q[..., 1:]
    n = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    small = n < _SMALL
    n_safe = torch.where(small, torch.ones_like(n), n)
    w_safe = torch.where(small, w, torch.ones_like(w)).clamp_min(1e-6)
    ratio = torch.where(small, 2.0 / w_safe, 2.0 * torch.atan2(n_safe, w) / n_safe)
    return v * ratio


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """[..., 3, 3] -> [..., 3] axis-angle (radians), through a unit quaternion."""
    return quat_to_axis_angle(rotmat_to_quat(R))


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """[..., 3] axis-angle (radians) -> [..., 3, 3] (through the quaternion; exact and smooth at angle 0)."""
    half = torch.linalg.vector_norm(aa, dim=-1, keepdim=True) * 0.5
    # sin(half) / (2 half) -> 1/2 as half -> 0
    small = half < _SMALL
    half_safe = torch.where(small, torch.ones_like(half), half)
    s = torch.where(small, 0.5 - half * half / 12.0, torch.sin(half_safe) / (2.0 * half_safe))
    q = torch.cat((torch.cos(half), aa * s), dim=-1)
    return quat_to_rotmat(q)


def rotation_6d_to_axis_angle(d6: Tensor) -> Tensor:
    """[..., 6] -> [..., 3] axis-angle (radians)."""
    return matrix_to_axis_angle(rotation_6d_to_matrix(d6))
