"""Order-2 real spherical harmonics for Lambertian (diffuse) lighting.

Convention (Ramamoorthi & Hanrahan, "An Efficient Representation for Irradiance Environment Maps", 2001):
real SH without the Condon-Shortley phase, orthonormal on the unit sphere, ordered

    k : 0     1      2      3      4       5       6              7       8
    Y : Y00   Y1-1   Y10    Y11    Y2-2    Y2-1    Y20            Y21     Y22
      : c0    c1*y   c1*z   c1*x   c2*x*y  c2*y*z  c3*(3z^2 - 1)  c2*x*z  c4*(x^2 - y^2)

with c0 = 1 / (2 sqrt(pi)) = 0.282095, c1 = sqrt(3 / (4 pi)) = 0.488603, c2 = sqrt(15 / (4 pi)) = 1.092548,
c3 = sqrt(5 / (16 pi)) = 0.315392, c4 = sqrt(15 / (16 pi)) = 0.546274. Directions are in world space (FLAME:
x to the subject's left, y up, z out of the face).

Lighting coefficients `L [B, 9, 3]` are the SH projection of the incident radiance, one column per RGB
channel. The irradiance at a surface with unit normal n is `E(n) = sum_k A_l(k) L_k Y_k(n)` with the clamped
cosine lobe's convolution factors A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4 (folded into `sh_irradiance`). A constant
environment of radiance L gives E = pi L. Renderers here use `albedo * E` as the outgoing colour, i.e. the
Lambertian 1/pi is absorbed into the scale of the lighting coefficients (`default_sh_coeffs` is scaled so that
E lies in [0, 1]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "SH_C0",
    "SH_C1",
    "SH_C2",
    "SH_C3",
    "SH_C4",
    "SH_BAND_FACTORS",
    "sh_basis_order2",
    "sh_irradiance",
    "sh_directional_light",
    "default_sh_coeffs",
]

SH_C0 = 0.5 / math.sqrt(math.pi)  # 0.282095
SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603
SH_C2 = math.sqrt(15.0 / (4.0 * math.pi))  # 1.092548
SH_C3 = math.sqrt(5.0 / (16.0 * math.pi))  # 0.315392
SH_C4 = math.sqrt(15.0 / (16.0 * math.pi))  # 0.546274

#: Clamped-cosine convolution factor A_l of each of the 9 coefficients (band 0, 1, 1, 1, 2, 2, 2, 2, 2).
SH_BAND_FACTORS = (math.pi,) + (2.0 * math.pi / 3.0,) * 3 + (math.pi / 4.0,) * 5


def sh_basis_order2(normals: Tensor) -> Tensor:
    """Real SH basis up to order 2 evaluated at unit directions.

    Args:
        normals: [..., 3] unit vectors (x, y, z), world space.

    Returns:
        [..., 9] basis values in the order and with the constants documented in this module.
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"sh_basis_order2 expects [..., 3] directions, got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, SH_C0),
            SH_C1 * y,
            SH_C1 * z,
            SH_C1 * x,
            SH_C2 * x * y,
            SH_C2 * y * z,
            SH_C3 * (3.0 * z * z - 1.0),
            SH_C2 * x * z,
            SH_C4 * (x * x - y * y),
        ],
        dim=-1,
    )


def _as_batched_coeffs(coeffs: Tensor, batch_size: int) -> Tensor:
    if coeffs.ndim == 2:
        coeffs = coeffs.unsqueeze(0)
    if coeffs.ndim != 3 or coeffs.shape[1] != 9:
        raise ValueError(f"SH coefficients must be [B, 9, C] or [9, C], got {tuple(coeffs.shape)}")
    if coeffs.shape[0] == 1 and batch_size != 1:
        coeffs = coeffs.expand(batch_size, -1, -1)
    if coeffs.shape[0] != batch_size:
        raise ValueError(f"SH coefficients have batch {coeffs.shape[0]} but the normals have {batch_size}")
    return coeffs


def sh_irradiance(normals: Tensor, coeffs: Tensor) -> Tensor:
    """Irradiance E(n) of an order-2 SH radiance environment (Ramamoorthi-Hanrahan).

    E(n) = sum_k A_l(k) coeffs[:, k] Y_k(n), with A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4.

    Args:
        normals: [B, ..., 3] unit surface normals, world space.
        coeffs: [B, 9, C] radiance SH coefficients per channel (C = 3 for RGB); [9, C] or [1, 9, C] is
            broadcast over the batch.

    Returns:
        [B, ..., C] irradiance, same dtype as the inputs. Not clamped (an order-2 fit can dip slightly below 0).
    """
    B = normals.shape[0]
    coeffs = _as_batched_coeffs(coeffs, B).to(normals.dtype)
    factors = torch.tensor(SH_BAND_FACTORS, device=normals.device, dtype=normals.dtype)
    basis = sh_basis_order2(normals).reshape(B, -1, 9)  # [B, N, 9]
    out = torch.bmm(basis, coeffs * factors[None, :, None])  # [B, N, C]
    return out.reshape(*normals.shape[:-1], coeffs.shape[-1])


def sh_directional_light(direction: Tensor, color: Tensor) -> Tensor:
    """SH radiance coefficients of a distant light arriving from `direction` (a delta on the sphere).

    Its order-2 irradiance approximates `color * max(0, n . direction)`: the fit is 1.0625 times the colour at
    the light direction, 0.09375 times it at grazing angles and dips to -0.04 times it on the back side.

    Args:
        direction: [B, 3] direction towards the light (world space; normalised here).
        color: [B, C] or [C] light intensity per channel.

    Returns:
        [B, 9, C] coefficients, to be summed with others (SH lighting is linear).
    """
    d = torch.nn.functional.normalize(direction, dim=-1)
    color = color.to(d.dtype)
    if color.ndim == 1:
        color = color.expand(d.shape[0], -1)
    return sh_basis_order2(d).unsqueeze(-1) * color.unsqueeze(-2)


def default_sh_coeffs(
    batch_size: int = 1, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """A white ambient + frontal light: irradiance 0.35 from the ambient term plus a directional light of
    intensity 0.6 from +z (towards the viewer of a FLAME head), so E(n) lies in [0.326, 0.988] for every unit
    normal: 0.988 facing the camera, 0.41 at grazing angles, 0.39 facing away.

    Returns:
        [B, 9, 3] radiance SH coefficients (see the module docstring for the convention).
    """
    ambient, intensity = 0.35, 0.6
    coeffs = torch.zeros(9, device=device, dtype=torch.float64)
    coeffs[0] = ambient / (math.pi * SH_C0)  # E = pi * L00 * Y00 = ambient
    coeffs += intensity * sh_basis_order2(torch.tensor([0.0, 0.0, 1.0], device=device, dtype=torch.float64))
    return coeffs.to(dtype)[None, :, None].expand(batch_size, 9, 3).clone()
