"""The mesh-only ablation: TexturedMeshHead and GaussianRegressor(renderer="mesh")."""

import lightning.pytorch as pl
import pytest
import torch

from headrecon.callbacks import DensifyPrune
from headrecon.gaussians.mesh_head import TexturedMeshHead
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import render_mesh
from tests.test_gaussian_regressor import _model, _pairs

MESH_HEAD = dict(uv_channels=8, uv_generator_kwargs=dict(image_size=64, num_removed_blocks=1, fmap_max=32))


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory, tiny_flame):
    from tests.flame_files import write_flame_folder

    return write_flame_folder(tmp_path_factory.mktemp("tiny_flame_mesh"), tiny_flame)


def _mesh_model(flame_dir, **kw):
    return _model(flame_dir, renderer="mesh", head_kwargs=MESH_HEAD, **kw)


def test_head_shapes_and_its_render_is_render_mesh(flame_dir):
    """The head's texture and lighting, rendered, equal `render_mesh` called directly with them."""
    from headrecon.flame.model import FlameModel
    from headrecon.flame.params import FlameParams

    flame = FlameModel.from_path(flame_dir)
    torch.manual_seed(0)
    head = TexturedMeshHead(flame.faces, flame.uvs, flame.uv_faces, latent_dim=16, lighting_dim=27, use_dino=False,
                            **MESH_HEAD)  # fmt: skip
    out = head(torch.randn(2, 16), torch.randn(2, 27))
    S = head.uv_generator.output_size
    assert out.albedo.shape == (2, 3, S, S) and out.sh_coeffs.shape == (2, 9, 3)
    assert out.albedo.min() >= 0 and out.albedo.max() <= 1
    verts = flame(FlameParams.zeros(2)).vertices
    cams = Cameras.sheap_default(2, 32, 32)
    bg = torch.tensor([[0.1, 0.2, 0.3]]).expand(2, 3)
    img = head.render(out, verts, cams, bg)
    ref = render_mesh(verts, flame.faces, cams, texture=out.albedo, uvs=flame.uvs, uv_faces=flame.uv_faces,
                      sh_coeffs=out.sh_coeffs, background=bg)  # fmt: skip
    torch.testing.assert_close(img.colors, ref.rgb)
    assert img.alphas.shape == (2, 32, 32, 1) and img.depth_expected.shape == (2, 32, 32, 1)
    assert 0 < img.alphas.mean() < 1
    torch.testing.assert_close(img.colors[0, 0, 0], bg[0])  # a corner pixel is background


def test_canonical_texture_is_a_shared_logit_shift(flame_dir):
    from headrecon.flame.model import FlameModel

    flame = FlameModel.from_path(flame_dir)
    torch.manual_seed(0)
    head = TexturedMeshHead(
        flame.faces, flame.uvs, flame.uv_faces, latent_dim=16, use_dino=False, **MESH_HEAD
    )
    ident, light = torch.randn(2, 16), torch.randn(2, 27)
    with torch.no_grad():
        base = head(ident, light).albedo
        head.canonical_logits.fill_(0.5)
        shifted = head(ident, light).albedo
    torch.testing.assert_close(torch.logit(shifted), torch.logit(base) + 0.5, atol=1e-4, rtol=1e-4)
    plain = TexturedMeshHead(flame.faces, flame.uvs, flame.uv_faces, latent_dim=16, use_dino=False,
                             canonical_texture=False, **MESH_HEAD)  # fmt: skip
    assert plain.canonical_logits is None


def test_regressor_mesh_terms_gradients_and_training(flame_dir, tmp_path):
    """No consistency or Gaussian terms; the image loss reaches the texture and the geometry; training lowers it."""
    model = _mesh_model(flame_dir, lr_regressor=3e-3, lr_estimator=1e-3)
    batch = _pairs(model)
    out = model(batch["source"], batch["target"])
    terms = model.compute_losses(batch, out)
    assert not {"normals", "depth", "offset", "scale", "opacity"} & set(terms)
    assert {"l1", "shape_prior", "expression_prior", "loss"} <= set(terms)
    terms["l1"].backward()
    head_grad = model.head.to_albedo.weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert model.head.canonical_logits.grad.abs().sum() > 0
    est_grads = [p.grad for p in model.estimator.parameters() if p.grad is not None]
    assert est_grads and sum(float(g.abs().sum()) for g in est_grads) > 0  # through barycentrics and shading
    model.zero_grad()
    with torch.no_grad():
        before = model.compute_losses(batch, model(batch["source"], batch["target"]))["l1"].item()
    loader = torch.utils.data.DataLoader([batch] * 8, batch_size=None)
    pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path).fit(model, loader)  # fmt: skip
    with torch.no_grad():
        after = model.compute_losses(batch, model(batch["source"], batch["target"]))["l1"].item()
    assert after < before
    metrics = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path).validate(model, loader, verbose=False)[0]  # fmt: skip
    assert metrics["val/vertex_error_mm"] > 0 and metrics["val/psnr"] > 0


def test_mesh_regressor_has_nothing_to_densify(flame_dir, tmp_path):
    model = _mesh_model(flame_dir)
    assert not hasattr(model, "canonical_gaussians") and model.densify_signal() is None
    batch = _pairs(model, n=2)
    loader = torch.utils.data.DataLoader([batch] * 2, batch_size=None)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[DensifyPrune()],
                         default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(Exception, match="canonical_gaussians"):
        trainer.fit(model, loader)


def test_unknown_renderer_is_rejected(flame_dir):
    with pytest.raises(ValueError, match="renderer must be"):
        _model(flame_dir, renderer="voxels")
