"""Tests of the portable mesh rasteriser against an independent ray-casting oracle (Moller-Trumbore, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headrecon.render.camera import Cameras, look_at_world_to_cam
from headrecon.render.mesh_raster import (
    DEFAULT_ALBEDO,
    MeshFragments,
    face_normals,
    interpolate_face_corner_attributes,
    interpolate_vertex_attributes,
    rasterize_mesh,
    rasterize_triangles_2d,
    render_mesh,
    sample_texture,
    vertex_normals,
)
from headrecon.render.sh import default_sh_coeffs, sh_irradiance
from tests.meshes import icosphere


# ------------------------------------------------------------------------------------------------ fixtures
def box() -> tuple[np.ndarray, np.ndarray]:
    """Closed axis-aligned cube [-1, 1]^3, 12 faces wound counter-clockwise seen from outside."""
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    faces = []
    for a, b, c, d in quads:
        faces += [[a, b, c], [a, c, d]]
    faces = np.asarray(faces, dtype=np.int64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    assert (np.einsum("fi,fi->f", n, v[faces].mean(1)) > 0).all()  # outward winding
    return v, faces


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def cameras_for(batch: int, width: int, height: int, dtype=torch.float64) -> Cameras:
    return Cameras.sheap_default(batch, width, height, dtype=dtype)


def ray_cast_oracle(
    vertices: np.ndarray, faces: np.ndarray, cameras: Cameras, *, cull_backfaces: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every pixel-centre ray with every face (Moller-Trumbore, float64).

    Returns face ids [B, H, W] (-1 for a miss) and camera depth [B, H, W] (0 for a miss)."""
    K = cameras.K.double().numpy()
    w2c = cameras.world_to_cam.double().numpy()
    H, W = cameras.height, cameras.width
    B = vertices.shape[0]
    fids = np.full((B, H, W), -1, dtype=np.int64)
    depth = np.zeros((B, H, W))
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    for b in range(B):
        R, t = w2c[b, :3, :3], w2c[b, :3, 3]
        origin = -R.T @ t
        d_cam = np.stack(
            [(jj - K[b, 0, 2]) / K[b, 0, 0], (ii - K[b, 1, 2]) / K[b, 1, 1], np.ones_like(jj)], -1
        ).reshape(-1, 1, 3)
        d = d_cam @ R  # world directions whose camera z is 1, so the ray parameter is the camera depth
        tri = vertices[b][faces]
        v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        pvec = np.cross(d, e2[None])
        det = np.einsum("pfi,fi->pf", pvec, e1)
        ok = np.abs(det) > 1e-15
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tvec = origin[None] - v0
        u = np.einsum("fi,pfi->pf", tvec, pvec) * inv
        qvec = np.cross(tvec, e1)
        v = np.einsum("pmi,fi->pf", d, qvec) * inv
        tt = np.einsum("fi,fi->f", e2, qvec)[None] * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (tt > 1e-6)
        if cull_backfaces:
            n = np.cross(e1, e2)
            hit &= (np.einsum("fi,fi->f", n, v0 - origin) < 0)[None]
        tt = np.where(hit, tt, np.inf)
        best = tt.argmin(1)
        any_hit = np.isfinite(tt.min(1))
        fids[b] = np.where(any_hit, best, -1).reshape(H, W)
        depth[b] = np.where(any_hit, tt.min(1), 0.0).reshape(H, W)
    return fids, depth


def assert_matches_oracle(
    frags: MeshFragments, oracle: tuple[np.ndarray, np.ndarray], depth_tol: float
) -> None:
    fids, depth = oracle
    ours = frags.face_ids.numpy()
    agree = (ours == fids).mean()
    assert agree >= 0.995, f"face ids agree on only {agree:.4f} of the pixels"
    both = (ours == fids) & (fids >= 0)
    assert both.sum() > 0
    np.testing.assert_allclose(
        frags.depth.detach().double().numpy()[both], depth[both], atol=depth_tol, rtol=0
    )


def random_triangles(rng: np.random.Generator, n: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n random overlapping triangles near the origin (the sheap camera looks at it from z = +1 m)."""
    centres = rng.uniform(-0.07, 0.07, size=(batch, n, 1, 3)) * np.array([1.0, 1.0, 2.0])
    verts = (centres + rng.normal(scale=0.04, size=(batch, n, 3, 3))).reshape(batch, 3 * n, 3)
    faces = np.arange(3 * n).reshape(n, 3)
    return verts, faces


# ------------------------------------------------------------------------------------------------ visibility
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_overlapping_triangles_match_oracle(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    verts, faces = random_triangles(rng, 12)
    cams = cameras_for(1, 48, 40, dtype)
    frags = rasterize_mesh(torch.tensor(verts, dtype=dtype), torch.tensor(faces), cams)
    assert frags.face_ids.dtype == torch.int64 and frags.face_ids.shape == (1, 40, 48)
    assert frags.bary.dtype == dtype and frags.bary.shape == (1, 40, 48, 3)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert_matches_oracle(frags, ray_cast_oracle(verts, faces, cams.to(torch.float64)), tol)


def test_icosphere_matches_oracle_and_has_no_holes() -> None:
    v, f = icosphere(2)
    verts = (v * 0.09 + np.array([0.02, -0.01, 0.05]))[None]
    cams = cameras_for(1, 48, 48)
    frags = rasterize_mesh(torch.tensor(verts), torch.tensor(f), cams)
    oracle = ray_cast_oracle(verts, f, cams)
    assert_matches_oracle(frags, oracle, 1e-9)
    # The silhouette of a closed convex mesh is filled: every pixel the oracle hits is covered.
    assert (frags.mask.numpy() == (oracle[0] >= 0)).mean() > 0.997


def test_rotated_closed_box_matches_oracle() -> None:
    rng = np.random.default_rng(3)
    v, f = box()
    verts = np.stack([v @ random_rotation(rng).T * 0.06 for _ in range(2)])
    eye = torch.tensor([[0.3, 0.2, 0.9], [-0.5, -0.4, -0.6]], dtype=torch.float64)
    w2c = look_at_world_to_cam(eye, torch.zeros(2, 3, dtype=torch.float64))
    base = cameras_for(2, 40, 40)
    cams = Cameras(base.K, w2c, 40, 40)
    frags = rasterize_mesh(torch.tensor(verts), torch.tensor(f), cams)
    assert_matches_oracle(frags, ray_cast_oracle(verts, f, cams), 1e-9)
    assert frags.mask.float().mean() > 0.1


def test_batch_items_have_their_own_meshes() -> None:
    rng = np.random.default_rng(1)
    v, f = icosphere(1)
    verts = np.stack(
        [v @ random_rotation(rng).T * s + off for s, off in [(0.05, 0.0), (0.08, 0.03), (0.03, -0.05)]]
    )
    cams = cameras_for(3, 32, 24)
    frags = rasterize_mesh(torch.tensor(verts), torch.tensor(f), cams)
    assert_matches_oracle(frags, ray_cast_oracle(verts, f, cams), 1e-9)
    for b in range(3):
        single = rasterize_mesh(torch.tensor(verts[b : b + 1]), torch.tensor(f), cams[b])
        assert torch.equal(single.face_ids[0], frags.face_ids[b])
        torch.testing.assert_close(single.depth[0], frags.depth[b])
    # One camera broadcasts over the batch.
    broadcast = rasterize_mesh(torch.tensor(verts), torch.tensor(f), cams[0])
    assert torch.equal(broadcast.face_ids, frags.face_ids)


def test_background_is_empty_and_zero() -> None:
    verts = torch.tensor([[[-0.02, -0.02, 0.0], [0.02, -0.02, 0.0], [0.0, 0.02, 0.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    cams = cameras_for(1, 24, 24)
    frags = rasterize_mesh(verts, faces, cams)
    bg = ~frags.mask
    assert bg.any() and frags.mask.any()
    assert (frags.face_ids[bg] == -1).all()
    assert (frags.depth[bg] == 0).all() and (frags.bary[bg] == 0).all()
    attrs = interpolate_vertex_attributes(frags, faces, torch.ones(1, 3, 2, dtype=torch.float64))
    assert (attrs[bg] == 0).all() and torch.allclose(attrs[frags.mask], torch.ones(()).double())
    out = render_mesh(verts, faces, cams, background=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    torch.testing.assert_close(
        out.rgb[bg], torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).expand(int(bg.sum()), 3)
    )
    assert (out.alpha[bg] == 0).all() and (out.alpha[~bg] == 1).all()
    assert (out.normals[bg] == 0).all()
    # Nothing in front of the camera: everything is background.
    empty = rasterize_mesh(verts + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64), faces, cams)
    assert not empty.mask.any() and (empty.depth == 0).all()


def test_near_plane_drops_crossing_faces() -> None:
    faces = torch.tensor([[0, 1, 2]])
    cams = cameras_for(1, 16, 16)
    crossing = torch.tensor(
        [[[-0.02, -0.02, 0.0], [0.02, -0.02, 0.0], [0.0, 0.02, 0.9995]]], dtype=torch.float64
    )
    # Its nearest vertex is 0.5 mm in front of the camera: kept with near = 0.1 mm, dropped by the default 1 mm.
    assert rasterize_mesh(crossing, faces, cams, near=1e-4).mask.any()
    assert not rasterize_mesh(crossing, faces, cams).mask.any()
    behind = crossing + torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    assert not rasterize_mesh(behind, faces, cams, near=1e-6).mask.any()


def test_backface_culling() -> None:
    v, f = icosphere(2)
    cams = cameras_for(1, 32, 32)
    verts = torch.tensor(v[None] * 0.08)
    faces = torch.tensor(f)
    plain = rasterize_mesh(verts, faces, cams)
    culled = rasterize_mesh(verts, faces, cams, cull_backfaces=True)
    assert torch.equal(plain.face_ids, culled.face_ids)  # a convex closed mesh shows only front faces
    # Reverse the winding: every visible face now faces away; culling reveals the far side, seen from inside.
    flipped = faces[:, [0, 2, 1]]
    inside = rasterize_mesh(verts, flipped, cams, cull_backfaces=True)
    oracle = ray_cast_oracle(v[None] * 0.08, f[:, [0, 2, 1]], cams, cull_backfaces=True)
    assert_matches_oracle(inside, oracle, 1e-9)
    assert (inside.depth > plain.depth)[inside.mask].all()  # the far side, behind the near side
    # A single triangle facing away from the camera disappears.
    tri = torch.tensor([[[-0.02, -0.02, 0.0], [0.02, -0.02, 0.0], [0.0, 0.02, 0.0]]], dtype=torch.float64)
    assert rasterize_mesh(tri, torch.tensor([[0, 1, 2]]), cams, cull_backfaces=True).mask.any()
    assert not rasterize_mesh(tri, torch.tensor([[0, 2, 1]]), cams, cull_backfaces=True).mask.any()


def _coverage_counts(pix: torch.Tensor, faces: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """How many faces cover each pixel centre [H, W]: one batch item per face, masking all the others."""
    F = faces.shape[0]
    fids, _ = rasterize_triangles_2d(
        pix.expand(F, -1, -1), None, faces, H, W, face_mask=torch.eye(F, dtype=torch.bool)
    )
    return (fids >= 0).sum(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_centres_on_shared_edges_get_exactly_one_face(dtype: torch.dtype) -> None:
    # A grid whose vertices sit on pixel centres: many centres lie exactly on edges and vertices.
    n, step, H, W = 5, 3, 18, 18
    ys, xs = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    pix = torch.stack([xs * step + 1.5, ys * step + 1.5], -1).reshape(1, -1, 2).to(dtype)
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = (
                i * (n + 1) + j,
                i * (n + 1) + j + 1,
                (i + 1) * (n + 1) + j,
                (i + 1) * (n + 1) + j + 1,
            )
            tris = [[a, b, d], [a, d, c]] if (i + j) % 2 else [[a, b, c], [b, d, c]]
            if (i * n + j) % 3 == 0:
                tris = [[t[0], t[2], t[1]] for t in tris]  # mixed windings must not matter
            faces += tris
    faces = torch.tensor(faces)
    # Move one interior vertex off the lattice diagonal but keep it on a pixel centre.
    pix[0, 2 * (n + 1) + 2] += torch.tensor([1.0, -1.0], dtype=dtype)
    counts = _coverage_counts(pix, faces, H, W)
    lo, hi = 1.5, 1.5 + n * step
    centres = torch.arange(H, dtype=dtype) + 0.5
    strictly_inside = ((centres > lo) & (centres < hi))[:, None] & ((centres > lo) & (centres < hi))[None, :]
    closed = ((centres >= lo) & (centres <= hi))[:, None] & ((centres >= lo) & (centres <= hi))[None, :]
    assert (counts[strictly_inside] == 1).all()
    # Centres on the mesh boundary are covered too (boundary edges are inclusive), and nothing outside.
    assert (counts[closed & ~strictly_inside] >= 1).all() and (counts[~closed] == 0).all()
    # The full rasteriser then covers every interior pixel.
    fids, bary = rasterize_triangles_2d(pix, None, faces, H, W)
    assert (fids[0][strictly_inside] >= 0).all()
    # Screen barycentrics reproduce the pixel centre.
    corner = pix[0][faces[fids[0].clamp_min(0)]]  # [H, W, 3, 2]
    p = (bary[0][..., None] * corner).sum(-2)
    jj, ii = torch.meshgrid(centres, centres, indexing="xy")
    m = fids[0] >= 0
    torch.testing.assert_close(p[m], torch.stack([jj, ii], -1)[m])


def test_fan_around_vertex_on_pixel_centre() -> None:
    rng = np.random.default_rng(5)
    k = 9
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    ring = np.stack([np.cos(angles), np.sin(angles)], -1) * rng.uniform(4, 7, (k, 1)) + 8.5
    pix = torch.tensor(np.concatenate([[[8.5, 8.5]], ring]), dtype=torch.float32)[None]
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % k] for i in range(k)])
    counts = _coverage_counts(pix, faces, 17, 17)
    assert counts[8, 8] == 1 and counts.max() == 1


def test_uv_space_rasterisation_without_depth() -> None:
    # Overlapping triangles without a z-test: the lowest face index wins.
    pix = torch.tensor([[[1.0, 1.0], [15.0, 1.0], [1.0, 15.0], [3.0, 3.0], [15.0, 3.0], [3.0, 15.0]]])
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    fids, bary = rasterize_triangles_2d(pix, None, faces, 16, 16)
    assert fids[0, 4, 4] == 0 and fids[0, 1, 1] == 1 and fids[0, 15, 15] == -1
    torch.testing.assert_close(bary.sum(-1)[fids >= 0], torch.ones(int((fids >= 0).sum())))
    assert (bary[fids < 0] == 0).all()


@pytest.mark.parametrize("tile_size,max_pairs", [(4, 64), (7, 500), (64, 1 << 16)])
def test_tiling_and_chunking_do_not_change_the_result(tile_size: int, max_pairs: int) -> None:
    rng = np.random.default_rng(2)
    verts, faces = random_triangles(rng, 20, batch=2)
    cams = cameras_for(2, 37, 29)
    pc = cams.world_to_camera(torch.tensor(verts))
    pix, z = cams.camera_to_pixels(pc), pc[..., 2]
    ref, ref_bary = rasterize_triangles_2d(pix, z, torch.tensor(faces), 29, 37)
    got, got_bary = rasterize_triangles_2d(
        pix, z, torch.tensor(faces), 29, 37, tile_size=tile_size, max_pairs=max_pairs
    )
    assert torch.equal(ref, got) and torch.equal(ref_bary, got_bary)
    frags = rasterize_mesh(torch.tensor(verts), torch.tensor(faces), cams)
    assert torch.equal(frags.face_ids, ref)


# ------------------------------------------------------------------------------------------------ gradients
def _single_triangle(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(
        [[-0.03, -0.025, 0.01], [0.035, -0.02, -0.02], [0.0, 0.03, 0.03]], dtype=torch.float64
    )
    return 3.0 * (base + 0.004 * torch.randn(3, 3, generator=g, dtype=torch.float64))[None]


def _min_edge_distance_px(verts: torch.Tensor, cams: Cameras) -> float:
    pix, _ = cams.project(verts)
    p = pix[0]
    H, W = cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    c = torch.stack([xs, ys], -1).reshape(-1, 2).double()
    dmin = math.inf
    for a, b in [(0, 1), (1, 2), (2, 0)]:
        e = p[b] - p[a]
        cr = e[0] * (c[:, 1] - p[a, 1]) - e[1] * (c[:, 0] - p[a, 0])
        dmin = min(dmin, float((cr.abs() / e.norm()).min()))
    return dmin


def test_depth_and_bary_gradcheck() -> None:
    cams = cameras_for(1, 10, 8)
    verts = _single_triangle(0)
    assert _min_edge_distance_px(verts, cams) > 1e-3
    faces = torch.tensor([[0, 1, 2]])

    def fn(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frags = rasterize_mesh(v, faces, cams)
        return frags.depth, frags.bary

    assert rasterize_mesh(verts, faces, cams).mask.sum() > 10
    assert torch.autograd.gradcheck(fn, (verts.clone().requires_grad_(True),), eps=1e-7, atol=1e-6)


def test_depth_gradient_matches_ray_plane_intersection() -> None:
    cams = cameras_for(1, 12, 12)
    verts = _single_triangle(1).requires_grad_(True)
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize_mesh(verts, faces, cams)
    m = frags.mask[0]
    weights = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((frags.depth[0] * weights).sum(), verts)

    # Analytic: the camera-space plane n . X = n . v0 meets the ray X = t d (d_z = 1) at t = n . v0 / n . d.
    v2 = verts.detach().clone().requires_grad_(True)
    vc = cams.world_to_camera(v2)[0]
    n = torch.linalg.cross(vc[1] - vc[0], vc[2] - vc[0])
    K = cams.K[0]
    ii, jj = torch.meshgrid(
        torch.arange(12.0).double() + 0.5, torch.arange(12.0).double() + 0.5, indexing="ij"
    )
    d = torch.stack([(jj - K[0, 2]) / K[0, 0], (ii - K[1, 2]) / K[1, 1], torch.ones_like(jj)], -1).double()
    t = (n @ vc[0]) / (d @ n)
    torch.testing.assert_close(frags.depth[0][m], t.detach()[m])
    (ref,) = torch.autograd.grad((t * weights * m).sum(), v2)
    torch.testing.assert_close(grad, ref)


# ------------------------------------------------------------------------------------------------ attributes
def test_linear_vertex_attribute_is_reproduced_exactly() -> None:
    v, f = icosphere(1)
    rng = np.random.default_rng(4)
    verts = torch.tensor((v @ random_rotation(rng).T * 0.08)[None])
    cams = cameras_for(1, 24, 20)
    frags = rasterize_mesh(verts, torch.tensor(f), cams)
    a = torch.tensor(
        [[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], dtype=torch.float64
    )  # two linear functions a.X + c
    c = torch.tensor([0.2, -0.4], dtype=torch.float64)
    attrs = verts @ a.T + c
    got = interpolate_vertex_attributes(frags, torch.tensor(f), attrs)
    # The visible point: camera centre + depth * (ray direction with camera z = 1).
    R = cams.world_to_cam[0, :3, :3]
    K = cams.K[0]
    ii, jj = torch.meshgrid(
        torch.arange(20.0).double() + 0.5, torch.arange(24.0).double() + 0.5, indexing="ij"
    )
    d_cam = torch.stack(
        [(jj - K[0, 2]) / K[0, 0], (ii - K[1, 2]) / K[1, 1], torch.ones_like(jj)], -1
    ).double()
    X = cams.camera_centres()[0] + frags.depth[0][..., None] * (d_cam @ R)
    m = frags.mask[0]
    torch.testing.assert_close(got[0][m], (X @ a.T + c)[m], atol=1e-10, rtol=0)
    # The same through per-corner attributes, shared and per batch item.
    corner = attrs[0][torch.tensor(f)]
    torch.testing.assert_close(interpolate_face_corner_attributes(frags, corner), got)
    torch.testing.assert_close(interpolate_face_corner_attributes(frags, corner[None]), got)
    # Perspective-correct barycentrics are a partition of unity.
    torch.testing.assert_close(frags.bary.sum(-1)[frags.mask], torch.ones(int(m.sum()), dtype=torch.float64))


def test_sample_texture_orientation_and_texel_centres() -> None:
    Ht, Wt = 4, 5
    tex = torch.arange(Ht * Wt, dtype=torch.float64).reshape(1, 1, Ht, Wt)  # row 0 is the top of the image
    r, cidx = torch.meshgrid(torch.arange(Ht), torch.arange(Wt), indexing="ij")
    uv = torch.stack([(cidx + 0.5) / Wt, 1.0 - (r + 0.5) / Ht], -1)[None].double()
    torch.testing.assert_close(sample_texture(tex, uv)[..., 0], tex[:, 0])
    # v = 0 is the bottom row, v = 1 the top row (clamped at the border).
    corners = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    out = sample_texture(tex, corners)[0, 0, :, 0]
    assert out.tolist() == [float(tex[0, 0, Ht - 1, 0]), float(tex[0, 0, 0, 0])]
    # Bilinear halfway between two texel centres, and the mask.
    mid = torch.tensor([[[[1.0 / Wt, 1.0 - 0.5 / Ht]]]], dtype=torch.float64)
    assert float(sample_texture(tex, mid)[0, 0, 0, 0]) == pytest.approx(0.5)
    assert float(sample_texture(tex, mid, torch.zeros(1, 1, 1, dtype=torch.bool))[0, 0, 0, 0]) == 0.0
    uv_g = uv.clone().requires_grad_(True)
    tex_g = tex.clone().requires_grad_(True)
    sample_texture(tex_g, uv_g * 0.9 + 0.05).sum().backward()
    assert uv_g.grad is not None and tex_g.grad is not None and tex_g.grad.abs().sum() > 0


def test_render_textured_quad_shows_texture_upright() -> None:
    # A quad in the z = 0 plane facing the camera; the texture's top half red, bottom half blue.
    verts = torch.tensor([[[-0.05, -0.05, 0.0], [0.05, -0.05, 0.0], [0.05, 0.05, 0.0], [-0.05, 0.05, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tex = torch.zeros(1, 3, 8, 8)
    tex[:, 0, :4] = 1.0
    tex[:, 2, 4:] = 1.0
    cams = cameras_for(1, 24, 24, torch.float32)
    light = torch.zeros(1, 9, 3)
    light[:, 0] = 1.0 / (math.pi * 0.5 / math.sqrt(math.pi))  # constant irradiance 1
    out = render_mesh(verts, faces, cams, texture=tex, uvs=uvs, uv_faces=faces, sh_coeffs=light)
    top, bottom = out.rgb[0, 8, 12], out.rgb[0, 15, 12]  # image rows grow downwards, world y upwards
    torch.testing.assert_close(top, torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(bottom, torch.tensor([0.0, 0.0, 1.0]))


def test_vertex_and_face_normals_of_a_sphere_point_outwards() -> None:
    v, f = icosphere(2)
    verts = torch.tensor(v[None] * 0.1 + np.array([0.2, -0.1, 0.3]))
    faces = torch.tensor(f)
    vn = vertex_normals(verts, faces)
    radial = torch.nn.functional.normalize(
        verts - torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64), dim=-1
    )
    torch.testing.assert_close(vn.norm(dim=-1), torch.ones(1, v.shape[0], dtype=torch.float64))
    assert (vn * radial).sum(-1).min() > 0.999
    fn = face_normals(verts, faces)
    centroid_dir = torch.nn.functional.normalize(
        verts[:, faces].mean(2) - torch.tensor([0.2, -0.1, 0.3]), dim=-1
    )
    assert (fn * centroid_dir).sum(-1).min() > 0.99
    # Area weighting: a vertex shared by a big and a tiny face leans towards the big face's normal.
    tv = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0.01]]])
    n = vertex_normals(tv, torch.tensor([[0, 1, 2], [0, 3, 1]]))[0, 0]
    assert n[2] > 0.99


def test_render_mesh_default_lighting_and_gradients() -> None:
    v, f = icosphere(2)
    verts = torch.tensor(v[None] * 0.09, dtype=torch.float32).repeat(2, 1, 1).requires_grad_(True)
    faces = torch.tensor(f)
    colors = torch.rand(2, v.shape[0], 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    cams = cameras_for(2, 32, 32, torch.float32)
    grey = render_mesh(verts, faces, cams)
    m = grey.alpha[0] > 0
    assert grey.rgb.shape == (2, 32, 32, 3) and grey.rgb.dtype == torch.float32
    assert grey.rgb.min() >= 0 and grey.rgb.max() <= 1
    torch.testing.assert_close(grey.normals[0][m].norm(dim=-1), torch.ones(int(m.sum())))
    # Default light is frontal: the centre of the sphere (normal +z) is the brightest pixel.
    lum = grey.rgb[0, ..., 0]
    assert lum[16, 16] == lum[m].max()
    expected = DEFAULT_ALBEDO * sh_irradiance(grey.normals[:1, 16, 16], default_sh_coeffs(1))[0]
    torch.testing.assert_close(grey.rgb[0, 16, 16], expected)
    assert grey.normals[0, 16, 16, 2] > 0.99
    coloured = render_mesh(
        verts, faces, cams, vertex_colors=colors, sh_coeffs=default_sh_coeffs(2), background=0.5
    )
    (coloured.rgb.sum() + coloured.depth.sum()).backward()
    assert verts.grad is not None and verts.grad.abs().sum() > 0 and torch.isfinite(verts.grad).all()
    assert colors.grad is not None and colors.grad.abs().sum() > 0
    assert (coloured.rgb[0][~m] == 0.5).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    v, f = icosphere(2)
    verts = torch.tensor(v[None] * 0.09, dtype=torch.float32)
    cams = cameras_for(1, 64, 48, torch.float32)
    cpu = render_mesh(verts, torch.tensor(f), cams)
    gpu = render_mesh(verts.cuda(), torch.tensor(f).cuda(), cams.to("cuda"))
    assert (cpu.fragments.face_ids == gpu.fragments.face_ids.cpu()).float().mean() > 0.999
    torch.testing.assert_close(gpu.rgb.cpu(), cpu.rgb, atol=1e-4, rtol=0)


def test_lone_triangle_covers_its_closed_area() -> None:
    # Vertices on pixel centres: the centres on its (boundary) edges and corners are covered too.
    pix = torch.tensor([[[1.5, 1.5], [9.5, 1.5], [1.5, 9.5]]])
    fids, _ = rasterize_triangles_2d(pix, None, torch.tensor([[0, 1, 2]]), 12, 12)
    c = torch.arange(12) + 0.5
    y, x = torch.meshgrid(c, c, indexing="ij")
    expected = (x >= 1.5) & (y >= 1.5) & (x + y <= 11.0)
    assert torch.equal(fids[0] >= 0, expected)
