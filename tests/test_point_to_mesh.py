"""Point-to-mesh distances against brute force and analytic cases."""

import numpy as np
import pytest
import torch

from headrecon.eval.distance import closest_point_on_triangles, point_to_mesh
from tests.meshes import icosphere

D = torch.float64
TRI = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=D)


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([0.2, 0.2, 0.5], [0.2, 0.2, 0.0]),  # above the face
        ([0.5, -0.3, 0.1], [0.5, 0.0, 0.0]),  # near edge ab
        ([-0.2, 0.5, 0.0], [0.0, 0.5, 0.0]),  # near edge ac
        ([0.8, 0.8, -0.2], [0.5, 0.5, 0.0]),  # near edge bc
        ([-1.0, -1.0, 0.3], [0.0, 0.0, 0.0]),  # near vertex a
        ([2.0, -0.5, 0.0], [1.0, 0.0, 0.0]),  # near vertex b
        ([-0.1, 3.0, 1.0], [0.0, 1.0, 0.0]),  # near vertex c
    ],
)
def test_analytic_regions(p, q):
    got, bary = closest_point_on_triangles(torch.tensor(p, dtype=D), *TRI)
    torch.testing.assert_close(got, torch.tensor(q, dtype=D))
    torch.testing.assert_close(bary @ TRI, got)
    assert (bary >= -1e-12).all() and abs(bary.sum().item() - 1) < 1e-12


def test_matches_dense_sampling_minimum():
    # an independent check: minimum over a dense sampling of the triangle approaches the exact distance
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(50, 3, generator=g, dtype=D)
    u, v = torch.meshgrid(
        torch.linspace(0, 1, 401, dtype=D), torch.linspace(0, 1, 401, dtype=D), indexing="ij"
    )
    m = (u + v) <= 1
    samples = TRI[0] + u[m][:, None] * (TRI[1] - TRI[0]) + v[m][:, None] * (TRI[2] - TRI[0])
    dense = torch.cdist(pts, samples).min(1).values
    exact = (pts - closest_point_on_triangles(pts, *TRI)[0]).norm(dim=-1)
    assert (exact <= dense + 1e-12).all() and (dense - exact).max() < 4e-3


@pytest.mark.parametrize("method", ["brute", "pruned"])
def test_sphere_distances(method):
    v, f = icosphere(3)
    v, f = torch.from_numpy(v), torch.from_numpy(f)
    g = torch.Generator().manual_seed(1)
    dirs = torch.nn.functional.normalize(torch.randn(300, 3, generator=g, dtype=D), dim=-1)
    radii = torch.rand(300, 1, generator=g, dtype=D) * 2
    pts = dirs * radii
    out = point_to_mesh(pts, v, f, method=method, max_pairs=5000)
    # the faceted sphere is within 1% of the unit sphere
    assert ((out.distances - (radii[:, 0] - 1).abs()).abs() < 0.02).all()
    # closest points lie on their faces
    q = (v[f[out.face_ids]] * out.bary[:, :, None]).sum(1)
    torch.testing.assert_close(q, out.closest)
    torch.testing.assert_close((pts - out.closest).norm(dim=-1), out.distances)


def test_pruned_equals_brute_on_random_mesh():
    rng = np.random.default_rng(3)
    v = torch.from_numpy(rng.normal(size=(200, 3)))
    f = torch.from_numpy(rng.integers(0, 200, (300, 3)))
    pts = torch.from_numpy(rng.normal(size=(400, 3)) * 1.5)
    a = point_to_mesh(pts, v, f, method="brute", max_pairs=7000)
    b = point_to_mesh(pts, v, f, method="pruned", max_pairs=7000)
    torch.testing.assert_close(a.distances, b.distances, atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    v, f = icosphere(2)
    v, f = torch.from_numpy(v), torch.from_numpy(f)
    pts = torch.randn(100, 3, dtype=D)
    a = point_to_mesh(pts, v, f)
    b = point_to_mesh(pts.cuda(), v.cuda(), f.cuda())
    torch.testing.assert_close(a.distances, b.distances.cpu())
