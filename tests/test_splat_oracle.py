"""The portable 2DGS backend (fast path and its autograd twin) against the dense all-pairs oracle built on
gsplat's own pure-PyTorch projection."""

import pytest
import torch

from headrecon.render.bench import random_surfels, sphere_surfels
from headrecon.render.camera import Cameras
from headrecon.render.splat import render_surfels
from headrecon.render.splat_dense import render_dense
from headrecon.render.surfels import Surfels

IMAGE_FIELDS = ["colors", "alphas", "depth_expected", "depth_median", "normals", "distortion"]
LEAVES = ["means", "quats", "scales", "opacities", "features"]


def _leafy(s: Surfels) -> Surfels:
    return Surfels(**{k: getattr(s, k).detach().clone().requires_grad_(True) for k in LEAVES})


def _run(fn, surfels: Surfels, cams: Cameras, **kw):
    """Render, back-propagate a random linear loss over every output, return (render, grads)."""
    s = _leafy(surfels)
    r = fn(s, cams, **kw)
    g = torch.Generator().manual_seed(7)
    loss = sum(
        (getattr(r, f) * torch.randn(getattr(r, f).shape, generator=g, dtype=r.colors.dtype)).sum()
        for f in IMAGE_FIELDS
    )
    loss.backward()
    grads = {k: getattr(s, k).grad for k in LEAVES}
    grads["means2d_handle"] = r.means2d_grad_handle.grad
    return r, grads


def _assert_matches(r, g, r_ref, g_ref, atol=1e-4, grad_rtol=1e-3):
    for f in IMAGE_FIELDS:
        a, b = getattr(r, f), getattr(r_ref, f)
        err = (a - b).abs().max().item()
        assert err <= atol * max(1.0, b.abs().max().item()) if f.startswith("depth") else err <= atol, (
            f,
            err,
        )
    for k, ref in g_ref.items():
        err = (g[k] - ref).abs().max().item()
        scale = ref.abs().max().item()
        assert scale > 0, k
        assert err <= grad_rtol * scale, (k, err, scale)


SCENES = {
    "sphere": lambda dt: (
        sphere_surfels(2, 300, seed=1, dtype=dt),
        Cameras.sheap_default(2, 40, 36, dtype=dt),
    ),
    "clutter": lambda dt: (
        random_surfels(2, 120, seed=2, dtype=dt),
        Cameras.sheap_default(2, 48, 33, dtype=dt),
    ),
    "big_overlapping": lambda dt: (
        random_surfels(1, 40, seed=3, scale_range=(0.01, 0.04), grazing_fraction=0.3, dtype=dt),
        Cameras.sheap_default(1, 32, 32, dtype=dt),
    ),
}


@pytest.mark.parametrize("backward", ["manual", "autograd"])
@pytest.mark.parametrize("scene", sorted(SCENES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_backend_matches_dense_oracle(scene, dtype, backward):
    surfels, cams = SCENES[scene](dtype)
    r, g = _run(render_surfels, surfels, cams, backend="torch", backward=backward)
    r_ref, g_ref = _run(render_dense, surfels, cams)
    assert r.alphas.max() > 0.5  # the scene is actually in view
    _assert_matches(r, g, r_ref, g_ref)
    if dtype == torch.float64:
        nfd_err = (r.normals_from_depth - r_ref.normals_from_depth).abs().max().item()
        assert nfd_err < 1e-6
        assert torch.equal(r.radii, r_ref.radii)
        torch.testing.assert_close(r.means2d, r_ref.means2d)


def test_background_and_median_depth_mode_match_oracle():
    surfels, cams = SCENES["sphere"](torch.float64)
    bg = torch.tensor([[0.2, 0.5, 1.0], [1.0, 0.0, 0.3]], dtype=torch.float64)
    r, g = _run(render_surfels, surfels, cams, backend="torch", background=bg, depth_mode="median")
    r_ref, g_ref = _run(render_dense, surfels, cams, background=bg, depth_mode="median")
    _assert_matches(r, g, r_ref, g_ref)
    torch.testing.assert_close(r.normals_from_depth, r_ref.normals_from_depth)
    empty = r.alphas[..., 0] == 0
    assert empty.any()
    torch.testing.assert_close(r.colors[empty], bg[:, None, None, :].expand_as(r.colors)[empty])


def test_grazing_surfels_are_thin_and_still_match():
    """Edge-on surfels use the screen-space low-pass filter; they must still match the oracle."""
    surfels = random_surfels(
        1, 60, seed=5, grazing_fraction=1.0, scale_range=(0.005, 0.02), dtype=torch.float64
    )
    cams = Cameras.sheap_default(1, 40, 40, dtype=torch.float64)
    r, g = _run(render_surfels, surfels, cams, backend="torch")
    r_ref, g_ref = _run(render_dense, surfels, cams)
    assert r.alphas.max() > 0.1
    _assert_matches(r, g, r_ref, g_ref)


def test_radius_clip_and_near_plane_cull_like_oracle():
    surfels, cams = SCENES["clutter"](torch.float64)
    for kw in [dict(radius_clip=3.0), dict(near_plane=0.99), dict(far_plane=1.0)]:
        r, g = _run(render_surfels, surfels, cams, backend="torch", **kw)
        r_ref, g_ref = _run(render_dense, surfels, cams, **kw)
        assert torch.equal(r.radii, r_ref.radii), kw
        assert (r.radii == 0).any(), kw
        _assert_matches(r, g, r_ref, g_ref)


def test_chunking_does_not_change_results():
    surfels, cams = SCENES["sphere"](torch.float64)
    r1, g1 = _run(render_surfels, surfels, cams, backend="torch", max_chunk_elems=1)
    r2, g2 = _run(render_surfels, surfels, cams, backend="torch", max_chunk_elems=1 << 24)
    _assert_matches(r1, g1, r2, g2, atol=1e-12, grad_rtol=1e-10)


def test_dense_oracle_pixel_chunks_and_checkpoint_agree():
    surfels, cams = SCENES["clutter"](torch.float64)
    r1, g1 = _run(render_dense, surfels, cams)
    r2, g2 = _run(render_dense, surfels, cams, pixel_chunk=100, use_checkpoint=True)
    _assert_matches(r1, g1, r2, g2, atol=1e-12, grad_rtol=1e-10)


def test_deterministic():
    surfels, cams = SCENES["sphere"](torch.float32)
    r1, g1 = _run(render_surfels, surfels, cams, backend="torch")
    r2, g2 = _run(render_surfels, surfels, cams, backend="torch")
    for f in IMAGE_FIELDS:
        assert torch.equal(getattr(r1, f), getattr(r2, f)), f
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
