"""Gradients of the portable 2DGS backend: gradcheck in float64 and fast path vs autograd twin."""

import pytest
import torch

from headrecon.render.bench import random_surfels, sphere_surfels
from headrecon.render.camera import Cameras
from headrecon.render.splat import render_surfels
from headrecon.render.splat_torch import (
    _gather_chunk,
    _plan_chunks,
    _RasterizeChunk,
    intersect_tiles,
    project_surfels,
)

FIELDS = ["colors", "alphas", "depth_expected", "depth_median", "normals", "distortion"]


def _tiny_scene(seed: int):
    s = random_surfels(1, 4, seed=seed, extent=0.01, scale_range=(0.004, 0.008), grazing_fraction=0.25)
    s = s.to(torch.float64)
    s.opacities.data.clamp_(0.2, 0.9)  # keep away from the 0.999 clamp
    return s, Cameras.sheap_default(1, 12, 10, dtype=torch.float64, fov_y_deg=4.0)


@pytest.mark.parametrize("backward", ["manual", "autograd"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_render(seed, backward):
    s, cams = _tiny_scene(seed)

    def fn(means, quats, scales, opacities, features):
        from headrecon.render.surfels import Surfels

        r = render_surfels(
            Surfels(means, quats, scales, opacities, features),
            cams,
            backend="torch",
            tile_size=8,
            backward=backward,
        )
        return tuple(getattr(r, f) for f in FIELDS)

    inputs = tuple(
        t.clone().requires_grad_(True) for t in (s.means, s.quats, s.scales, s.opacities, s.features)
    )
    out = fn(*inputs)
    assert out[1].max() > 0.3
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_raster_chunk_function():
    """The hand-written backward of one chunk of tiles, on inputs from a real projection."""
    s = sphere_surfels(1, 24, seed=3, scale_range=(0.006, 0.012), dtype=torch.float64)
    cams = Cameras.sheap_default(1, 16, 16, dtype=torch.float64, fov_y_deg=16.0)
    p = project_surfels(s.means, s.quats, s.scales, cams.world_to_cam, cams.K, 16, 16)
    isects = intersect_tiles(p.means2d, p.radii, p.depths, 16, 16, tile_size=8)
    (tiles, K), *_ = _plan_chunks(isects.tile_offsets, 64, 1 << 30)
    ids, pad, origin = _gather_chunk(isects, tiles, K, 4)
    flat = lambda t: t.reshape(24, *t.shape[2:])[ids].detach().clone().requires_grad_(True)  # noqa: E731
    M, xy, z = flat(p.ray_transforms), flat(p.means2d), flat(p.depths)
    o = torch.where(pad, s.opacities.reshape(-1)[ids], torch.zeros(())).requires_grad_(True)
    feat = torch.rand(*ids.shape, 4, dtype=torch.float64, requires_grad=True)
    assert K > 3

    def fn(M, xy, o, feat, z):
        return _RasterizeChunk.apply(M, xy, o, feat, z, origin.double(), 8)[:3]

    assert fn(M, xy, o, feat, z)[1].max() > 0.5
    assert torch.autograd.gradcheck(fn, (M, xy, o, feat, z), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_fast_path_equals_autograd_twin():
    s = sphere_surfels(2, 500, seed=4, dtype=torch.float64)
    cams = Cameras.sheap_default(2, 48, 40, dtype=torch.float64)
    outs = {}
    for mode in ("manual", "autograd"):
        leaves = [
            t.clone().requires_grad_(True) for t in (s.means, s.quats, s.scales, s.opacities, s.features)
        ]
        from headrecon.render.surfels import Surfels

        r = render_surfels(Surfels(*leaves), cams, backend="torch", backward=mode)
        g = torch.Generator().manual_seed(0)
        loss = sum(
            (getattr(r, f) * torch.randn(getattr(r, f).shape, generator=g, dtype=torch.float64)).sum()
            for f in FIELDS
        )
        loss.backward()
        outs[mode] = [getattr(r, f) for f in FIELDS] + [t.grad for t in leaves] + [r.means2d_grad_handle.grad]
    for a, b in zip(outs["manual"], outs["autograd"]):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
