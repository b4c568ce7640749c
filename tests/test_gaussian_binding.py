"""Quaternions and the binding of Gaussians to mesh triangles."""

import math

import torch
from scipy.spatial.transform import Rotation

from headrecon.gaussians.binding import bind_to_mesh, triangle_frames
from headrecon.render.rotations import quat_multiply, quat_to_rotmat, rotmat_to_quat
from tests.meshes import icosphere

D = torch.float64


def _random_rot(n, seed):
    return torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())


def test_quaternion_round_trip_and_product():
    R = _random_rot(500, 0)
    R = torch.cat(
        [R, torch.diag_embed(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=D))]
    )  # w ~ 0
    q = rotmat_to_quat(R)
    torch.testing.assert_close(quat_to_rotmat(q), R, atol=1e-10, rtol=0)
    # against scipy (xyzw)
    sq = torch.from_numpy(Rotation.from_matrix(R[:500].numpy()).as_quat())[:, [3, 0, 1, 2]]
    sq = sq * torch.sign(sq[:, :1])
    torch.testing.assert_close(q[:500], sq, atol=1e-10, rtol=0)
    a, b = rotmat_to_quat(_random_rot(50, 1)), rotmat_to_quat(_random_rot(50, 2))
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b))


def _scene(B=2, N=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    v, f = icosphere(1)
    v = (
        torch.from_numpy(v * 0.1)[None].repeat(B, 1, 1)
        + torch.randn(B, len(v), 3, generator=g, dtype=D) * 0.005
    )
    f = torch.from_numpy(f)
    face_ids = torch.randint(0, len(f), (N,), generator=g)
    bary = torch.distributions.Dirichlet(torch.ones(3, dtype=D)).sample((N,))
    offsets = torch.randn(B, N, 3, generator=g, dtype=D) * 0.3
    quats = torch.randn(B, N, 4, generator=g, dtype=D)
    scales = torch.rand(B, N, 2, generator=g, dtype=D) + 0.1
    return v, f, face_ids, bary, offsets, quats, scales


def test_frames_are_rotations_with_documented_scale():
    v, f, *_ = _scene()
    fr = triangle_frames(v, f)
    eye = torch.eye(3, dtype=D).expand_as(fr.rotation)
    torch.testing.assert_close(fr.rotation.transpose(-1, -2) @ fr.rotation, eye)
    torch.testing.assert_close(torch.linalg.det(fr.rotation), torch.ones_like(fr.scale[..., 0]))
    tri = v[:, f]
    e1, e2 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    torch.testing.assert_close(fr.scale[..., 0], e1.norm(dim=-1))
    area = 0.5 * torch.linalg.cross(e1, e2).norm(dim=-1)
    torch.testing.assert_close(fr.scale[..., 0] * fr.scale[..., 1] / 2, area)  # base x height / 2
    torch.testing.assert_close(fr.scale[..., 2], fr.scale[..., :2].min(-1).values)
    # normals point outwards on the sphere
    assert ((fr.rotation[..., 2] * tri.mean(2)).sum(-1) > 0).all()


def test_zero_offsets_put_centres_on_their_triangles():
    v, f, face_ids, bary, offsets, quats, scales = _scene()
    out = bind_to_mesh(v, f, face_ids, bary, torch.zeros_like(offsets), quats, scales)
    expected = (v[:, f[face_ids]] * bary[None, :, :, None]).sum(2)
    torch.testing.assert_close(out.means, expected)


def test_rigid_motion_moves_surfels_rigidly():
    v, f, face_ids, bary, offsets, quats, scales = _scene()
    R = _random_rot(1, 5)[0]
    t = torch.tensor([0.1, -0.2, 0.3], dtype=D)
    a = bind_to_mesh(v, f, face_ids, bary, offsets, quats, scales)
    b = bind_to_mesh(v @ R.T + t, f, face_ids, bary, offsets, quats, scales)
    torch.testing.assert_close(b.means, a.means @ R.T + t)
    torch.testing.assert_close(quat_to_rotmat(b.quats), R @ quat_to_rotmat(a.quats))
    torch.testing.assert_close(b.scales, a.scales)
    torch.testing.assert_close(b.normals, a.normals @ R.T)


def test_scaling_a_triangle_scales_its_surfels():
    # one right triangle in the xy plane; stretch it along x by 3 and along y by 2
    v = torch.tensor([[[0.0, 0, 0], [0.01, 0, 0], [0, 0.02, 0]]], dtype=D)
    f = torch.tensor([[0, 1, 2]])
    face_ids = torch.zeros(1, dtype=torch.long)
    bary = torch.tensor([[1 / 3, 1 / 3, 1 / 3]], dtype=D)
    offsets = torch.tensor([[[0.5, 0.25, 0.2]]], dtype=D)
    quats = torch.tensor([[[1.0, 0, 0, 0]]], dtype=D)
    scales = torch.tensor([[[0.3, 0.4]]], dtype=D)
    a = bind_to_mesh(v, f, face_ids, bary, offsets, quats, scales)
    # frame: e_u = +x (s_u = 0.01), n = +z, e_v = +y (s_v = 0.02), min = 0.01
    torch.testing.assert_close(a.scales, torch.tensor([[[0.003, 0.008]]], dtype=D))
    centroid = v[0].mean(0)
    torch.testing.assert_close(a.means[0, 0], centroid + torch.tensor([0.005, 0.005, 0.002], dtype=D))
    torch.testing.assert_close(a.normals[0, 0], torch.tensor([0.0, 0, 1], dtype=D))
    S = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=D))
    b = bind_to_mesh(v @ S, f, face_ids, bary, offsets, quats, scales)
    torch.testing.assert_close(b.scales, a.scales * torch.tensor([3.0, 2.0], dtype=D))
    # offset along the normal scales with min(s_u, s_v) = min(0.03, 0.04)
    torch.testing.assert_close(
        b.means[0, 0], (v @ S)[0].mean(0) + torch.tensor([0.015, 0.01, 0.006], dtype=D)
    )
    # uniform scaling scales everything about the anchor
    c = bind_to_mesh(v * 2.5, f, face_ids, bary, offsets, quats, scales)
    torch.testing.assert_close(c.means, a.means * 2.5)
    torch.testing.assert_close(c.scales, a.scales * 2.5)


def test_binding_gradcheck():
    v, f, face_ids, bary, offsets, quats, scales = _scene(B=1, N=5)
    v = v[:, :42].clone().requires_grad_()
    f = f[(f < 42).all(1)]
    face_ids = face_ids % len(f)

    def fn(v, offsets, quats, scales):
        o = bind_to_mesh(v, f, face_ids, bary, offsets, quats, scales)
        return o.means, o.scales, o.normals

    assert torch.autograd.gradcheck(
        fn, (v, offsets.requires_grad_(), quats.requires_grad_(), scales.requires_grad_())
    )
    assert math.isfinite(1.0)
