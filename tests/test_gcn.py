"""GaussianGCN, SharedGraphConv and the UV-map sampler (small graphs, float64 where comparing)."""

import warnings

import pytest
import torch
from torch_geometric.nn import GraphConv

from headrecon.nets.gcn import (
    GaussianAttributes,
    GaussianGCN,
    SharedGraphConv,
    gaussian_graph,
    gcn_inputs,
    sample_uv_features,
    shared_adjacency,
)

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def _graph(n: int, k: int, seed: int) -> torch.Tensor:
    """A random symmetric graph without duplicate edges, [2, E]."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (n * k,), generator=g)
    dst = torch.arange(n).repeat_interleave(k)
    ei = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    return torch.unique(ei[:, ei[0] != ei[1]], dim=1)


def _flat(a: GaussianAttributes) -> torch.Tensor:
    return torch.cat([a.offsets, a.rotations, a.scales, a.albedo, a.opacities[..., None]], dim=-1)


@pytest.fixture
def model() -> GaussianGCN:
    torch.manual_seed(0)
    return GaussianGCN(in_features=12, hidden=16).double()


def test_shapes_ranges_and_init(model: GaussianGCN) -> None:
    B, N = 3, 40
    out = model(torch.randn(B, N, 12, dtype=torch.float64), _graph(N, 3, 0))
    assert isinstance(out, GaussianAttributes)
    assert out.offsets.shape == (B, N, 3) and out.rotations.shape == (B, N, 4)
    assert out.scales.shape == (B, N, 2) and out.albedo.shape == (B, N, 3) and out.opacities.shape == (B, N)
    assert (out.batch_size, out.num_gaussians) == (B, N)
    torch.testing.assert_close(out.rotations.norm(dim=-1), torch.ones(B, N, dtype=torch.float64))
    assert (out.opacities > 0).all() and (out.opacities < 1).all()
    assert (out.albedo > 0).all() and (out.albedo < 1).all() and (out.scales > 0).all()
    # Initialisation: near-identity rotations, small offsets, scales ~ init_scale, opacities ~ init_opacity.
    assert (out.rotations[..., 0] > 0.99).all()
    assert out.offsets.abs().max() < 0.1
    assert (out.scales - 0.3).abs().max() < 0.05
    assert (out.opacities - 0.7).abs().max() < 0.05


def test_gradients_reach_every_parameter_and_input(model: GaussianGCN) -> None:
    B, N = 2, 30
    x = torch.randn(B, N, 12, dtype=torch.float64, requires_grad=True)
    out = _flat(model(x, _graph(N, 3, 1)))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_permutation_equivariance(model: GaussianGCN) -> None:
    B, N = 2, 35
    x = torch.randn(B, N, 12, dtype=torch.float64)
    ei = _graph(N, 3, 2)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))  # new node i is old node perm[i]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    out = _flat(model(x, ei))
    out_p = _flat(model(x[:, perm], inv[ei]))
    torch.testing.assert_close(out_p, out[:, perm])


def test_batching_equals_per_item_and_plain_graphconv(model: GaussianGCN) -> None:
    B, N = 3, 30
    x = torch.randn(B, N, 12, dtype=torch.float64)
    ei = _graph(N, 4, 4)
    batched = _flat(model(x, ei))
    for b in range(B):
        torch.testing.assert_close(batched[b : b + 1], _flat(model(x[b : b + 1], ei)))
    # A prebuilt adjacency gives the same result.
    torch.testing.assert_close(_flat(model(x, shared_adjacency(ei, N))), batched)
    # SharedGraphConv == torch-geometric's GraphConv(aggr="mean") on each item, values and input gradients.
    conv = SharedGraphConv(12, 5).double()
    xr = x.clone().requires_grad_(True)
    y = conv(xr, ei)
    ref = torch.stack([GraphConv.forward(conv, xr[b], ei) for b in range(B)])
    torch.testing.assert_close(y, ref)
    w = torch.randn_like(y)
    (g1,) = torch.autograd.grad((y * w).sum(), xr)
    (g2,) = torch.autograd.grad((ref * w).sum(), xr)
    torch.testing.assert_close(g1, g2)


def test_duplicate_edges_count_once() -> None:
    ei = torch.tensor([[1, 2], [0, 0]])
    dup = torch.cat([ei, ei[:, :1]], dim=1)
    torch.testing.assert_close(shared_adjacency(dup, 3).to_dense(), shared_adjacency(ei, 3).to_dense())
    assert shared_adjacency(ei, 3).to_dense()[0].tolist() == [0.0, 1.0, 1.0]  # row = target, col = source


def test_bad_inputs(model: GaussianGCN) -> None:
    with pytest.raises(ValueError, match="features"):
        model(torch.randn(2, 5, 11, dtype=torch.float64), _graph(5, 1, 0))
    with pytest.raises(ValueError, match="outside"):
        model(torch.randn(1, 5, 12, dtype=torch.float64), torch.tensor([[0], [5]]))


def test_sampler_against_hand_computation() -> None:
    S = 8
    centres = (torch.arange(S, dtype=torch.float64) + 0.5) / S
    u_map = centres.view(1, S).expand(S, S)  # column j -> u = (j + 0.5) / S
    v_map = (1.0 - centres).view(S, 1).expand(S, S)  # row i -> v = 1 - (i + 0.5) / S (row 0 at the top)
    M = torch.stack([u_map, v_map, 2.0 * u_map + 3.0 * v_map])[None].repeat(2, 1, 1, 1)  # [2, 3, S, S]
    M[1] *= -1.0
    g = torch.Generator().manual_seed(0)
    lo, hi = 0.5 / S, 1 - 0.5 / S  # between the outer texel centres, bilinear reproduces a linear map
    uv = lo + (hi - lo) * torch.rand(50, 2, generator=g, dtype=torch.float64)
    uv = torch.cat([uv, torch.tensor([[lo, hi], [hi, lo], [0.5, 0.5]], dtype=torch.float64)])
    out = sample_uv_features(M, uv)
    assert out.shape == (2, uv.shape[0], 3)
    expected = torch.stack([uv[:, 0], uv[:, 1], 2.0 * uv[:, 0] + 3.0 * uv[:, 1]], dim=-1)
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1], -expected)
    # Texel centre lookups, and the border rule outside the outer centres.
    img = torch.arange(S * S, dtype=torch.float64).view(1, 1, S, S)
    assert sample_uv_features(img, torch.tensor([[centres[2], 1 - centres[5]]]))[0, 0, 0] == 5 * S + 2
    assert (
        sample_uv_features(img, torch.tensor([[0.0, 1.0]], dtype=torch.float64))[0, 0, 0] == 0.0
    )  # top left
    assert sample_uv_features(img, torch.tensor([[1.0, 0.0]], dtype=torch.float64))[0, 0, 0] == S * S - 1


def test_gcn_inputs_concatenates_embedding_and_samples() -> None:
    emb = torch.randn(6, 4)
    M = torch.randn(2, 3, 8, 8)
    uv = torch.rand(6, 2)
    x = gcn_inputs(emb, M, uv)
    assert x.shape == (2, 6, 7)
    torch.testing.assert_close(x[1, :, :4], emb)
    torch.testing.assert_close(x[..., 4:], sample_uv_features(M, uv))


def test_gaussian_graph_matches_brute_force() -> None:
    from headrecon.flame.topology import k_ring_face_neighbours

    # A strip of 6 triangles; faces hold 0..3 Gaussians (face 4 holds none).
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4], [4, 5, 6], [5, 7, 6]])
    face_ids = torch.tensor([5, 0, 2, 0, 1, 3, 3, 3, 0, 5])
    fn = k_ring_face_neighbours(faces, k=1, by="edge")
    ei = gaussian_graph(face_ids, fn)
    near = {(int(a), int(b)) for a, b in fn.t()} | {(f, f) for f in range(6)}
    n = face_ids.numel()
    expected = {
        (i, j) for i in range(n) for j in range(n) if i != j and (int(face_ids[i]), int(face_ids[j])) in near
    }
    got = [(int(a), int(b)) for a, b in ei.t()]
    assert len(got) == len(set(got)) and set(got) == expected
    assert (ei[1].diff() >= 0).all()  # sorted by target


def test_default_structure() -> None:
    m = GaussianGCN(in_features=64)
    assert len(m.blocks) == 4  # the paper's 4 residual blocks
    assert all(isinstance(b.conv1, SharedGraphConv) and b.conv1.aggr == "mean" for b in m.blocks)
    assert sum(p.numel() for p in m.parameters()) == 275469


def test_albedo_bias_shifts_the_logits_only(model: GaussianGCN) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 30, 12, generator=g, dtype=torch.float64)
    ei = _graph(30, 3, seed=3)
    bias = torch.randn(30, 3, generator=g, dtype=torch.float64)
    plain, shifted = model(x, ei), model(x, ei, albedo_bias=bias)
    torch.testing.assert_close(torch.logit(shifted.albedo), torch.logit(plain.albedo) + bias)
    torch.testing.assert_close(shifted.offsets, plain.offsets)
    torch.testing.assert_close(shifted.opacities, plain.opacities)
