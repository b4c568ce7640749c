"""Tests of the order-2 SH lighting: basis, irradiance convention, directional and default lights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headrecon.render.sh import (
    SH_BAND_FACTORS,
    default_sh_coeffs,
    sh_basis_order2,
    sh_directional_light,
    sh_irradiance,
)


def sphere_quadrature(n_theta: int, n_phi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre in cos(theta) x uniform phi: directions [N, 3] and weights [N] summing to 4 pi.
    Exact for polynomials of degree < 2 n_theta in z and trigonometric degree < n_phi in phi."""
    z, wz = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * 2.0 * np.pi / n_phi
    Z, P = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1.0 - Z**2)
    dirs = np.stack([r * np.cos(P), r * np.sin(P), Z], -1).reshape(-1, 3)
    w = (wz[:, None] * np.full(n_phi, 2.0 * np.pi / n_phi)[None]).reshape(-1)
    return torch.tensor(dirs), torch.tensor(w)


def fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = torch.sqrt(1.0 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def test_basis_is_orthonormal_on_the_sphere() -> None:
    dirs, w = sphere_quadrature(6, 12)
    Y = sh_basis_order2(dirs)
    gram = Y.T @ (Y * w[:, None])
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=1e-12, rtol=0)


def test_basis_ordering_and_constants() -> None:
    x, y, z = 0.36, 0.48, 0.8
    Y = sh_basis_order2(torch.tensor([x, y, z], dtype=torch.float64))
    c0, c1 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi))
    c2, c3, c4 = math.sqrt(15 / (4 * math.pi)), math.sqrt(5 / (16 * math.pi)), math.sqrt(15 / (16 * math.pi))
    expected = [
        c0,
        c1 * y,
        c1 * z,
        c1 * x,
        c2 * x * y,
        c2 * y * z,
        c3 * (3 * z * z - 1),
        c2 * x * z,
        c4 * (x * x - y * y),
    ]
    torch.testing.assert_close(Y, torch.tensor(expected, dtype=torch.float64))
    assert SH_BAND_FACTORS == pytest.approx([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)
    assert sh_basis_order2(torch.zeros(2, 5, 3)).shape == (2, 5, 9)


def test_constant_environment_gives_pi_times_radiance() -> None:
    L = torch.tensor([0.2, 0.5, 1.3], dtype=torch.float64)
    coeffs = torch.zeros(2, 9, 3, dtype=torch.float64)
    coeffs[:, 0] = (
        L * 2.0 * math.sqrt(math.pi)
    )  # projection of a constant: L * integral of Y00 = L * 2 sqrt(pi)
    normals = fibonacci_sphere(50).reshape(1, 5, 10, 3).expand(2, -1, -1, -1)
    E = sh_irradiance(normals, coeffs)
    assert E.shape == (2, 5, 10, 3)
    torch.testing.assert_close(E, (math.pi * L).expand(2, 5, 10, 3))


def test_irradiance_equals_cosine_weighted_integral_of_the_radiance() -> None:
    # For radiance of order <= 2 the clamped-cosine convolution is exact (Funk-Hecke): compare with quadrature.
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(1, 9, 3, dtype=torch.float64, generator=g)
    dirs, w = sphere_quadrature(200, 400)
    radiance = sh_basis_order2(dirs) @ coeffs[0]  # [N, 3]
    normals = fibonacci_sphere(7)
    cos = (normals @ dirs.T).clamp_min(0.0)  # [7, N]
    numeric = (cos * w) @ radiance
    torch.testing.assert_close(sh_irradiance(normals[None], coeffs)[0], numeric, atol=2e-4, rtol=0)


def test_directional_light_peaks_in_its_direction() -> None:
    direction = torch.tensor([[0.3, -0.5, 0.8], [-1.0, 0.2, 0.1]], dtype=torch.float64)
    color = torch.tensor([[1.0, 0.5, 0.25], [0.8, 0.8, 0.8]], dtype=torch.float64)
    coeffs = sh_directional_light(direction, color)
    assert coeffs.shape == (2, 9, 3)
    normals = fibonacci_sphere(4000)[None].expand(2, -1, -1)
    E = sh_irradiance(normals, coeffs)  # [2, N, 3]
    unit = torch.nn.functional.normalize(direction, dim=-1)
    for b in range(2):
        best = normals[b, E[b, :, 0].argmax()]
        assert float(best @ unit[b]) > 0.999
        # The order-2 fit of max(0, cos): 1/4 + cos/2 + 5/16 P2(cos), times the colour.
        c = normals[b] @ unit[b]
        fit = 0.25 + 0.5 * c + 5.0 / 16.0 * 0.5 * (3.0 * c * c - 1.0)
        torch.testing.assert_close(E[b], fit[:, None] * color[b])


def test_default_coeffs_give_frontal_shading_in_unit_range() -> None:
    coeffs = default_sh_coeffs(3)
    assert coeffs.shape == (3, 9, 3) and coeffs.dtype == torch.float32
    assert default_sh_coeffs(1, dtype=torch.float64).dtype == torch.float64
    normals = fibonacci_sphere(5000).float()[None].expand(3, -1, -1)
    E = sh_irradiance(normals, coeffs)
    assert E.min() >= 0.3 and E.max() <= 1.0
    assert torch.equal(E[..., 0], E[..., 1]) and torch.equal(E[..., 0], E[..., 2])  # white
    front = sh_irradiance(torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]]), coeffs[:1])[
        0, :, 0
    ]
    assert front[0] == pytest.approx(0.35 + 0.6 * 1.0625, abs=1e-6)
    assert front[0] > front[2] > front[1] > 0.3


def test_irradiance_broadcasts_shared_coeffs_and_is_differentiable() -> None:
    normals = torch.nn.functional.normalize(torch.randn(4, 6, 3, dtype=torch.float64), dim=-1)
    coeffs = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    E = sh_irradiance(normals, coeffs)
    torch.testing.assert_close(E, sh_irradiance(normals, coeffs.detach()[None].expand(4, 9, 3)))
    n = normals.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda nn, cc: sh_irradiance(nn, cc), (n, coeffs))
    with pytest.raises(ValueError):
        sh_irradiance(normals, torch.zeros(2, 9, 3))
