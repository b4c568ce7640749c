"""Topology helpers against brute-force references."""

import numpy as np
import pytest
import torch

from headrecon.flame.topology import (
    face_adjacency,
    face_areas,
    interpolate_on_faces,
    k_ring_face_neighbours,
    sample_points_on_faces,
    uv_rasterize,
)
from tests.meshes import icosphere


def _brute_rings(faces: np.ndarray, k: int, by: str) -> set[tuple[int, int]]:
    F = len(faces)
    sets = [set(f.tolist()) for f in faces]
    need = 1 if by == "vertex" else 2
    nbr = [{j for j in range(F) if j != i and len(sets[i] & sets[j]) >= need} for i in range(F)]
    out = set()
    for i in range(F):
        frontier, seen = {i}, {i}
        for _ in range(k):
            frontier = {n for f in frontier for n in nbr[f]} - seen
            seen |= frontier
        out |= {(i, j) for j in seen if j != i}
    return out


@pytest.mark.parametrize("by", ["vertex", "edge"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_ring_matches_bfs(by, k):
    _, f = icosphere(1)
    got = k_ring_face_neighbours(torch.from_numpy(f), k, by=by)
    assert set(map(tuple, got.T.tolist())) == _brute_rings(f, k, by)
    if k == 1:
        assert torch.equal(got, face_adjacency(torch.from_numpy(f), by=by))


def test_edge_adjacency_of_closed_mesh_has_three_neighbours():
    _, f = icosphere(2)
    e = face_adjacency(torch.from_numpy(f), by="edge")
    assert torch.bincount(e[0], minlength=len(f)).eq(3).all()


def test_self_loops_optional():
    _, f = icosphere(0)
    e = k_ring_face_neighbours(torch.from_numpy(f), 1, include_self=True)
    assert (e[0] == e[1]).sum() == len(f)


def test_sampling_is_area_weighted_and_on_surface():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [0, 3, 0]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 3, 4]])  # areas 0.5 and 4.5
    g = torch.Generator().manual_seed(0)
    ids, bary = sample_points_on_faces(v, f, 20000, generator=g)
    frac = (ids == 1).double().mean().item()
    assert abs(frac - 0.9) < 0.01
    assert torch.allclose(bary.sum(-1), torch.ones(20000, dtype=torch.float64))
    assert (bary >= 0).all()
    # uniform within the triangle: the mean of the samples is the centroid
    pts = interpolate_on_faces(v, f, ids, bary)
    big = pts[ids == 1]
    assert torch.allclose(big.mean(0), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=0.03)
    assert torch.allclose(face_areas(v, f), torch.tensor([0.5, 4.5], dtype=torch.float64))


def test_interpolate_batched_and_differentiable():
    v, f = icosphere(1)
    v = torch.from_numpy(v)[None].repeat(2, 1, 1).requires_grad_()
    f = torch.from_numpy(f)
    ids, bary = sample_points_on_faces(v[0].detach(), f, 50, generator=torch.Generator().manual_seed(1))
    pts = interpolate_on_faces(v, f, ids, bary)
    assert pts.shape == (2, 50, 3)
    pts.sum().backward()
    assert torch.allclose(v.grad.sum(dim=(0, 1)), torch.full((3,), 100.0, dtype=torch.float64))


def test_uv_rasterize_matches_point_in_triangle():
    # two triangles covering the lower-left half of the UV square, one covering part of the upper right
    uvs = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.0], [0.6, 0.9], [0.95, 0.95], [0.95, 0.6]],
        dtype=torch.float64,
    )
    uv_faces = torch.tensor([[0, 3, 2], [3, 1, 2], [4, 6, 5]])
    size = 32
    r = uv_rasterize(uvs, uv_faces, size)
    assert r.face_ids.shape == (size, size)
    # brute force: for each texel centre, barycentrics w.r.t. each triangle
    for i in range(size):
        for j in range(size):
            p = r.uv[i, j]
            hit = -1
            for fi, tri in enumerate(uv_faces):
                a, b, c = uvs[tri]
                m = torch.stack([b - a, c - a], dim=1)
                l12 = torch.linalg.solve(m, p - a)
                lam = torch.stack([1 - l12.sum(), l12[0], l12[1]])
                if (lam >= -1e-9).all():
                    hit = fi
                    expected_bary = lam
            if r.face_ids[i, j] != hit:
                # texel centres exactly on a shared edge may go to either face
                assert hit >= 0 and r.face_ids[i, j] >= 0
                continue
            if hit >= 0:
                torch.testing.assert_close(r.bary[i, j].double(), expected_bary, atol=1e-6, rtol=0)
    # texel -> barycentric -> uv reproduces the texel centre
    m = r.mask
    rec = interpolate_on_faces(uvs, uv_faces, r.face_ids[m], r.bary[m].double())
    torch.testing.assert_close(rec, r.uv[m], atol=1e-6, rtol=0)
    assert r.uv[0, 0, 1] > r.uv[-1, 0, 1]  # row 0 is the top of the map (v near 1)
