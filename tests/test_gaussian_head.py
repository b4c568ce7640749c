"""The Gaussian head end to end on the procedural FLAME (small networks): shapes, rigging, gradients."""

import torch

from headrecon.flame.model import FlameModel
from headrecon.flame.params import FlameParams
from headrecon.gaussians.head import GaussianHead
from headrecon.render.camera import Cameras
from headrecon.render.rotations import quat_to_rotmat
from headrecon.render.splat import render_surfels

SMALL = dict(per_face=1, embed_dim=8, latent_dim=16, uv_channels=8, lighting_dim=27, use_dino=False, gcn_hidden=16,
             gcn_blocks=4, uv_generator_kwargs=dict(image_size=64, num_removed_blocks=1, fmap_max=32))  # fmt: skip


def _head(flame: FlameModel) -> GaussianHead:
    torch.manual_seed(0)
    return GaussianHead(flame.faces, flame.uvs, flame.uv_faces, **SMALL).eval()


def test_surfels_follow_the_posed_mesh(procedural_flame_dir):
    flame = FlameModel.from_path(procedural_flame_dir)
    head = _head(flame)
    identity = torch.randn(2, 16)
    lighting = torch.zeros(2, 27)
    p = FlameParams.zeros(2)
    verts = flame(p).vertices
    out = head(identity, verts, lighting)
    N = len(head.canonical_gaussians)
    assert N == flame.faces.shape[0]
    assert out.surfels.means.shape == (2, N, 3) and out.surfels.features.shape == (2, N, 3)
    assert out.uv_features.shape[-1] == 32
    assert (out.surfels.features >= 0).all() and (out.surfels.opacities > 0).all()
    # the same identity re-posed: a global rotation of the head rotates every surfel with it
    angle = torch.tensor([[0.0, 0.4, 0.0]]).repeat(2, 1)
    rotated = flame(p.replace(global_rotation=angle)).vertices
    out_r = head(identity, rotated, lighting)
    R = quat_to_rotmat(torch.tensor([0.9800666, 0.0, 0.1986693, 0.0]))  # 0.4 rad about y
    root = flame(p).joints[:, 0]
    torch.testing.assert_close(out_r.surfels.means - root[:, None], (out.surfels.means - root[:, None]) @ R.T,
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(out_r.surfels.scales, out.surfels.scales, atol=1e-6, rtol=0)


def test_graph_is_cached_and_rebuilt_after_edits(procedural_flame_dir):
    flame = FlameModel.from_path(procedural_flame_dir)
    head = _head(flame)
    g1 = head.graph()
    assert head.graph() is g1
    from headrecon.gaussians.densify import DensifyDecision, apply_edits

    apply_edits(head.canonical_gaussians, None, DensifyDecision(torch.tensor([], dtype=torch.long),
                torch.tensor([0, 1])), generator=torch.Generator().manual_seed(0))  # fmt: skip
    g2 = head.graph()
    assert g2 is not g1 and int(g2.max()) == len(head.canonical_gaussians) - 1


def test_render_backpropagates_into_all_parts(procedural_flame_dir):
    flame = FlameModel.from_path(procedural_flame_dir)
    head = _head(flame).train()
    identity = torch.randn(1, 16, requires_grad=True)
    lighting = torch.zeros(1, 27, requires_grad=True)
    shape = torch.zeros(1, 300, requires_grad=True)
    verts = flame(FlameParams.zeros(1).replace(shape=shape)).vertices
    out = head(identity, verts, lighting)
    cams = Cameras.sheap_default(1, 32, 32)
    img = render_surfels(out.surfels, cams, backend="torch").colors
    img.mean().backward()
    for name, t in [("identity", identity), ("lighting", lighting), ("FLAME shape", shape),
                    ("embeddings", head.canonical_gaussians.embeddings)]:  # fmt: skip
        assert t.grad is not None and t.grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in head.gcn.parameters())


def test_embedding_albedo_gives_each_gaussian_a_direct_colour(procedural_flame_dir):
    import pytest

    flame = FlameModel.from_path(procedural_flame_dir)
    with pytest.raises(ValueError, match="embed_dim >= 3"):
        GaussianHead(
            flame.faces, flame.uvs, flame.uv_faces, **dict(SMALL, embed_dim=2), embedding_albedo=True
        )
    paper = _head(flame)
    ours = GaussianHead(flame.faces, flame.uvs, flame.uv_faces, **SMALL, embedding_albedo=True).eval()
    ours.load_state_dict(paper.state_dict())  # the same weights: the flag adds no parameter
    verts = flame(FlameParams.zeros(1)).vertices
    identity, lighting = torch.randn(1, 16), torch.zeros(1, 27)
    with torch.no_grad():
        a_paper = paper(identity, verts, lighting).attributes
        a_ours = ours(identity, verts, lighting).attributes
    emb = paper.canonical_gaussians.embeddings[:, :3]
    torch.testing.assert_close(
        torch.logit(a_ours.albedo), torch.logit(a_paper.albedo) + emb, atol=1e-4, rtol=0
    )
    torch.testing.assert_close(a_ours.offsets, a_paper.offsets)
    # the gradient of a Gaussian's albedo reaches its own embedding directly
    out = ours(identity, verts, lighting)
    out.attributes.albedo[0, 5, 0].backward()
    a = out.attributes.albedo[0, 5, 0].detach()
    assert ours.canonical_gaussians.embeddings.grad[5, 0] > 0.5 * a * (1 - a)
