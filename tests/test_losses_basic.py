"""Photometric, geometry-consistency, prior, Gaussian-regulariser and landmark losses."""

import pytest
import torch

from headrecon.losses.geometry import (
    DepthConsistency,
    NormalConsistency,
    consistency_mask,
    depth_discontinuities,
)
from headrecon.losses.landmarks import LandmarkLoss
from headrecon.losses.photometric import MaskedL1
from headrecon.losses.regularizers import FlamePrior, GaussianRegularizer
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import (
    front_facing,
    interpolate_vertex_attributes,
    rasterize_mesh,
    render_mesh,
    vertex_normals,
)
from tests.meshes import icosphere


def test_l1_decreases_towards_target_and_respects_mask():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, generator=g)
    noise = torch.randn(2, 3, 16, 16, generator=g)
    loss = MaskedL1()
    values = [loss((target + t * noise).clamp(0, 1), target).item() for t in (0.5, 0.2, 0.05, 0.0)]
    assert values == sorted(values, reverse=True) and values[-1] == 0
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8, :] = 1
    render = target.clone()
    render[..., 8:, :] = 0  # wrong only outside the mask
    assert loss(render, target, mask).item() == 0
    assert loss(render, target, torch.zeros_like(mask)).item() == 0  # empty mask: 0, not NaN


def _sphere_maps():
    v, f = icosphere(2)
    v = torch.from_numpy(v).float()[None] * 0.1
    f = torch.from_numpy(f)
    cams = Cameras.sheap_default(1, 48, 48)
    return v.requires_grad_(), f, cams


def test_geometry_consistency_zero_at_agreement_and_decreasing():
    v, f, cams = _sphere_maps()
    r = render_mesh(v, f, cams)
    mask = consistency_mask(r.fragments.mask, r.alpha)
    assert mask.sum() > 100
    g = torch.Generator().manual_seed(1)
    dn = torch.randn(r.normals.shape, generator=g)
    dd = torch.randn(r.depth.shape, generator=g) * 0.01
    nl, dl = NormalConsistency(), DepthConsistency()
    n_vals = [nl(r.normals.detach() + t * dn, r.normals.detach(), mask).item() for t in (1.0, 0.3, 0.1, 0.0)]
    d_vals = [dl(r.depth.detach() + t * dd, r.depth.detach(), mask).item() for t in (1.0, 0.3, 0.1, 0.0)]
    assert n_vals == sorted(n_vals, reverse=True) and abs(n_vals[-1]) < 1e-6
    assert d_vals == sorted(d_vals, reverse=True) and d_vals[-1] == 0
    # alpha-scaled Gaussian normals (gsplat convention) are normalised before comparing
    assert nl(r.normals.detach() * 0.7, r.normals.detach(), mask).item() < 1e-6


def test_front_facing_marks_the_outside_of_a_closed_mesh():
    v, f, cams = _sphere_maps()
    v = v.detach()
    frag = rasterize_mesh(v, f, cams)
    rays = cams.pixel_rays()[1]
    n = interpolate_vertex_attributes(frag, f, vertex_normals(v, f))
    front = frag.mask & front_facing(n, rays)
    # a sphere seen from outside: every covered pixel faces the camera, but for a few grazing ones at the rim
    # where the interpolated vertex normals tip away
    assert front.sum() >= 0.99 * frag.mask.sum()
    inside_out = interpolate_vertex_attributes(frag, f, vertex_normals(v, f.flip(-1)))  # reversed winding
    assert (frag.mask & front_facing(inside_out, rays)).sum() <= 0.01 * frag.mask.sum()


def test_depth_discontinuities_find_occlusion_boundaries_only():
    depth = torch.full((1, 12, 12), 1.0)
    depth[:, :, 6:] = 1.05  # a 5 cm step between columns 5 and 6
    mask = torch.ones(1, 12, 12, dtype=torch.bool)
    mask[:, 0, :] = False  # an uncovered top row
    edges = depth_discontinuities(depth, mask, threshold=0.01)
    assert edges[0, 5:, 5:7].all() and edges[0, 1, :].all()  # both sides of the step, next to the hole
    assert not edges[0, 3:, :5].any() and not edges[0, 3:, 7:].any()  # smooth parts
    assert not edges[0, 0].any()  # uncovered pixels are never edges
    slope = torch.linspace(1.0, 1.02, 12).expand(1, 12, 12).contiguous()  # 1.8 mm per pixel: smooth
    assert not depth_discontinuities(slope, torch.ones(1, 12, 12, dtype=torch.bool), 0.01)[
        :, 1:-1, 1:-1
    ].any()
    v, f, cams = _sphere_maps()
    frag = rasterize_mesh(v.detach(), f, cams)
    sphere_edges = depth_discontinuities(frag.depth, frag.mask, 0.01)
    assert 0 < sphere_edges.sum() < 0.5 * frag.mask.sum()  # the silhouette ring and the steep rim near it


def test_geometry_consistency_moves_the_mesh():
    v, f, cams = _sphere_maps()
    frag = rasterize_mesh(v, f, cams)
    target_depth = frag.depth.detach() - 0.005  # Gaussians 5 mm in front of the surface
    DepthConsistency()(target_depth, frag.depth, frag.mask.float()).backward()
    # the gradient pushes visible vertices towards the camera (+z in world, camera at z = 1): dL/dz < 0
    assert v.grad[0, :, 2].sum() < 0


def test_priors_and_gaussian_regularizers():
    assert FlamePrior()(torch.zeros(2, 300)).item() == 0
    assert FlamePrior()(torch.full((2, 300), 2.0)).item() == 4.0  # mean of the squares (SMIRK)
    assert FlamePrior()(torch.tensor([[1.0, 0.0], [0.0, 0.0]])).item() == 0.25
    reg = GaussianRegularizer(max_scale=0.6)
    terms = reg(torch.full((1, 4, 3), 0.5), torch.tensor([[[0.5, 0.7]] * 4]), torch.full((1, 4), 0.25))
    torch.testing.assert_close(terms["offset"], torch.tensor(0.75))
    torch.testing.assert_close(terms["scale"], torch.tensor(0.05))
    torch.testing.assert_close(terms["opacity"], torch.tensor(0.25))


def test_landmark_loss():
    t = torch.rand(2, 68, 2) * 64
    loss = LandmarkLoss()
    assert loss(t, t, 64).item() == 0
    shifted = t + torch.tensor([6.4, 0.0])
    torch.testing.assert_close(loss(shifted, t, 64), torch.tensor(0.1))
    w = torch.zeros(2, 68)
    assert loss(shifted, t, 64, w).item() == 0


def test_pose_limits_zero_inside_and_growing_outside():
    from headrecon.flame.params import FlameParams
    from headrecon.losses.regularizers import PoseLimits

    p = FlameParams.zeros(2)
    assert PoseLimits()(p).item() == 0
    inside = p.replace(jaw_rotation=torch.tensor([[0.4, 0, 0]] * 2))
    assert PoseLimits()(inside).item() == 0
    outside = p.replace(
        jaw_rotation=torch.tensor([[0.7, 0, 0]] * 2), translation=torch.tensor([[0, 0, 0.3]] * 2)
    )
    # jaw: 0.2 over the 0.5 rad angle limit and 0.2 over the x range; translation 0.2 m over
    torch.testing.assert_close(PoseLimits()(outside), torch.tensor(3 * 0.2**2))
    closed_through_lip = p.replace(jaw_rotation=torch.tensor([[-0.25, 0, 0]] * 2))
    torch.testing.assert_close(PoseLimits()(closed_through_lip), torch.tensor(0.2**2))
    sideways = p.replace(jaw_rotation=torch.tensor([[0.1, 0.35, 0.0]] * 2))
    torch.testing.assert_close(PoseLimits()(sideways), torch.tensor(0.2**2))


def test_pose_prior_ignores_jaw_opening_and_global_rotation():
    from headrecon.flame.params import FlameParams
    from headrecon.losses.regularizers import PosePrior

    p = FlameParams.zeros(2).replace(
        jaw_rotation=torch.tensor([[0.3, 0, 0]] * 2),
        global_rotation=torch.tensor([[0.5, 0.2, 0.1]] * 2),
    )
    assert PosePrior()(p).item() == 0
    moved = p.replace(translation=torch.tensor([[0.0, 0.0, 0.1]] * 2))
    torch.testing.assert_close(PosePrior()(moved), torch.tensor(4.0))  # 0.1 m = 2 units of 0.05 m
    q = p.replace(neck_rotation=torch.tensor([[0.1, 0, 0], [0, 0, 0]]),
                  left_eye_rotation=torch.tensor([[0, 0.2, 0], [0, 0, 0]]),
                  jaw_rotation=torch.tensor([[0.3, 0.0, 0.3], [0.3, 0, 0]]))  # fmt: skip
    torch.testing.assert_close(PosePrior()(q), torch.tensor((0.1**2 + 0.2**2 + 0.3**2) / 2))


def test_silhouette_decreases_as_alpha_approaches_the_mask():
    from headrecon.losses.photometric import SilhouetteL1

    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1.0
    loss = SilhouetteL1()
    far = torch.zeros_like(mask)
    values = [loss(far + t * (mask - far), mask).item() for t in (0.0, 0.5, 0.9, 1.0)]
    assert values == sorted(values, reverse=True) and values[-1] == 0
    torch.testing.assert_close(torch.tensor(values[0]), mask.mean())
    alpha = torch.full_like(mask, 0.5).requires_grad_(True)
    loss(alpha, mask).backward()
    assert (alpha.grad[mask > 0] < 0).all() and (alpha.grad[mask == 0] > 0).all()
    with pytest.raises(ValueError, match="differ"):
        loss(alpha[:, :, :8], mask)
