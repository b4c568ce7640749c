"""Closed-form checks of the 2DGS renderer on fronto-parallel surfels."""

import math

import pytest
import torch

from headrecon.render.camera import Cameras
from headrecon.render.splat import render_surfels
from headrecon.render.splat_dense import render_dense
from headrecon.render.surfels import Surfels

DT = torch.float64
SIZE = 64  # image is SIZE x SIZE; the surfels project onto the centre of pixel (32, 32)


def _cams() -> tuple[Cameras, float]:
    cams = Cameras.sheap_default(1, SIZE, SIZE, dtype=DT)
    return cams, cams.K[0, 0, 0].item()


def _fronto(depths, sigma_px, opacities, colors) -> Surfels:
    """Surfels facing the camera at the given camera depths, centred on pixel (32, 32), with screen-space
    standard deviation sigma_px pixels."""
    _, f = _cams()
    z = torch.tensor(depths, dtype=DT)
    world_z = 1.0 - z  # the default camera sits at world z = 1 looking down -z
    means = torch.stack([0.5 * z / f, -0.5 * z / f, world_z], -1)[None]
    n = len(depths)
    s = torch.as_tensor(sigma_px, dtype=DT).expand(n) * z / f
    return Surfels(
        means=means,
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=DT).expand(1, n, 4).clone(),
        scales=torch.stack([s, s], -1)[None],
        opacities=torch.tensor(opacities, dtype=DT)[None],
        features=torch.tensor(colors, dtype=DT)[None],
    )


def _r2() -> torch.Tensor:
    c = torch.arange(SIZE, dtype=DT) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return (xx - 32.5) ** 2 + (yy - 32.5) ** 2


@pytest.mark.parametrize("renderer", ["torch", "dense"])
def test_single_fronto_surfel_is_an_isotropic_gaussian(renderer):
    cams, _ = _cams()
    s = _fronto([1.0], 3.0, [0.8], [[0.2, 0.4, 1.0]])
    r = render_surfels(s, cams, backend="torch") if renderer == "torch" else render_dense(s, cams)
    a = 0.8 * torch.exp(-0.5 * _r2() / 9.0)
    a = torch.where(a >= 1 / 255, a, torch.zeros_like(a))
    torch.testing.assert_close(r.alphas[0, ..., 0], a, atol=1e-9, rtol=0)
    assert r.alphas[0, 32, 32, 0].item() == pytest.approx(0.8, abs=1e-12)  # alpha at the centre = opacity
    torch.testing.assert_close(
        r.colors[0], a[..., None] * torch.tensor([0.2, 0.4, 1.0], dtype=DT), atol=1e-9, rtol=0
    )
    on = a > 0
    torch.testing.assert_close(r.depth_expected[0, ..., 0][on], torch.ones_like(a[on]))
    torch.testing.assert_close(r.depth_median[0, ..., 0][on], torch.ones_like(a[on]))
    assert (r.depth_median[0, ..., 0][~on] == 0).all()
    normal = torch.tensor([0.0, 0.0, 1.0], dtype=DT)  # world +z faces the camera
    torch.testing.assert_close(r.normals[0], a[..., None] * normal, atol=1e-9, rtol=0)
    assert r.distortion.abs().max() < 1e-12
    torch.testing.assert_close(r.means2d[0, 0], torch.tensor([32.5, 32.5], dtype=DT))
    assert r.radii[0, 0].tolist() == [math.ceil(3.33 * 3.0)] * 2


def test_tiny_surfel_falls_back_to_the_screen_space_filter():
    cams, _ = _cams()
    s = _fronto([1.0], 0.2, [0.9], [[1.0]])
    r = render_surfels(s, cams, backend="torch")
    a = 0.9 * torch.exp(-_r2())  # sigma = 0.5 * 2 |d|^2
    a = torch.where(a >= 1 / 255, a, torch.zeros_like(a))
    torch.testing.assert_close(r.alphas[0, ..., 0], a, atol=1e-9, rtol=0)


def test_opacity_clamp_and_front_to_back_with_early_stop():
    cams, _ = _cams()
    red, green, blue = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    # given back to front: the renderer must sort by depth
    s = _fronto([1.1, 1.0, 0.9], 3.0, [0.995, 0.995, 0.995], [blue, green, red])
    r = render_surfels(s, cams, backend="torch")
    # centre: T after the first layer 0.005, after the second 2.5e-5 <= 1e-4, so the second one stops the pixel
    torch.testing.assert_close(r.colors[0, 32, 32], torch.tensor([0.995, 0.0, 0.0], dtype=DT))
    assert r.alphas[0, 32, 32, 0].item() == pytest.approx(0.995)
    # 4 px from the centre every layer has alpha a: plain front-to-back compositing
    a = 0.995 * math.exp(-0.5 * 16 / 9)
    expected = torch.tensor([a, a * (1 - a), a * (1 - a) ** 2], dtype=DT)
    torch.testing.assert_close(r.colors[0, 32, 36], expected)
    torch.testing.assert_close(r.alphas[0, 32, 36, 0], 1 - torch.tensor((1 - a) ** 3, dtype=DT))
    # median depth: the last layer reached while T > 0.5 (T before layer 2 is 1 - a = 0.59 > 0.5)
    assert r.depth_median[0, 32, 36, 0].item() == pytest.approx(1.0)
    full = _fronto([1.0], 3.0, [1.0], [red])
    assert render_surfels(full, cams, backend="torch").alphas[0, 32, 32, 0].item() == pytest.approx(0.999)


def test_means2d_handle_is_the_screen_space_position_gradient():
    """For a large fronto-parallel surfel, d loss / d(pixel shift) = d loss / d(world x) * z / f."""
    cams, f = _cams()
    s = _fronto([1.0], 4.0, [0.7], [[1.0, 0.5, 0.2]])
    s.means.requires_grad_(True)
    r = render_surfels(s, cams, backend="torch")
    w = torch.linspace(0, 1, SIZE, dtype=DT)
    loss = (r.colors[..., 0] * w[None, None, :]).sum() + (r.alphas[..., 0] * w[None, :, None] ** 2).sum()
    loss.backward()
    h = r.means2d_grad_handle.grad[0, 0]
    g = s.means.grad[0, 0]
    assert h.abs().min() > 1e-3
    torch.testing.assert_close(h[0], g[0] * 1.0 / f)
    torch.testing.assert_close(h[1], -g[1] * 1.0 / f)  # image y points down, world y up
