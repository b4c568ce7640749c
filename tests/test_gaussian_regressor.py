"""GaussianRegressor: a few real training steps on CPU (tiny networks), densification, NaN skipping, checkpoints."""

import lightning.pytorch as pl
import pytest
import torch

from headrecon.callbacks import DensifyPrune
from headrecon.flame.params import FlameParams
from headrecon.modules import FlameEstimator
from headrecon.modules.gaussian_regressor import LOSS_WEIGHTS, GaussianRegressor
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import render_mesh

TINY_EST = dict(backbone="vit_base_patch16_clip_quickgelu_224", img_size=64, identity_dim=16,
                timm_kwargs=dict(embed_dim=32, depth=1, num_heads=2, patch_size=16))  # fmt: skip
TINY_HEAD = dict(per_face=1, embed_dim=8, uv_channels=8, gcn_hidden=16, gcn_blocks=4,
                 uv_generator_kwargs=dict(image_size=64, num_removed_blocks=1, fmap_max=32))  # fmt: skip


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory, tiny_flame):
    """The small FLAME-format ico-sphere model (320 faces, with UVs): keeps these training tests fast."""
    from tests.flame_files import write_flame_folder

    return write_flame_folder(tmp_path_factory.mktemp("tiny_flame"), tiny_flame)


def _model(flame_dir, head_kwargs=TINY_HEAD, **kw):
    torch.manual_seed(0)
    est = FlameEstimator(str(flame_dir), init="random", **TINY_EST)
    return GaussianRegressor(est, head_kwargs=head_kwargs, render_size=32, backend="torch", **kw)


def _pairs(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    flame = model.estimator.flame
    shape = FlameParams.random(1, generator=g, shape_std=0.5).shape.repeat(2 * n, 1)
    p = FlameParams.random(2 * n, generator=g, expression_std=0.5, rotation_std=0.1).replace(shape=shape)
    img = render_mesh(flame(p).vertices, flame.faces, Cameras.sheap_default(2 * n, 64, 64), background=0.1)
    img = img.rgb.permute(0, 3, 1, 2).detach()
    tgt = {k: v[n:] for k, v in p.to_dict().items()}
    return {"source": img[:n], "target": img[n:], "target_flame": tgt}


def test_defaults_are_the_supplementary_weights(flame_dir):
    assert LOSS_WEIGHTS == dict(l1=6.0, perceptual=6.0, identity=0.3, emotion=0.1, shape_prior=1.0,
                                expression_prior=1.0, normals=1.0, depth=1.0, offset=0.1, scale=0.01,
                                opacity=0.001, landmarks=0.0, pose_limits=0.0, pose_prior=0.0,
                                silhouette=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="w_perceptual = 0"):
        _model(flame_dir, perceptual_loss=torch.nn.L1Loss(), w_perceptual=0.0)


def test_training_steps_densify_and_reduce_the_loss(flame_dir, tmp_path):
    model = _model(flame_dir, lr_regressor=3e-3, lr_estimator=1e-3)
    batch = _pairs(model)
    with torch.no_grad():
        before = model.compute_losses(batch, model(batch["source"], batch["target"]))["l1"].item()
    n0 = len(model.canonical_gaussians)
    cb = DensifyPrune(t_history=4, n_densify=3, n_prune=1)
    loader = torch.utils.data.DataLoader([batch] * 8, batch_size=None)
    pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[cb], default_root_dir=tmp_path).fit(model, loader)  # fmt: skip
    # one Gaussian per face at first: nothing can be pruned until a face has two (+3), then +3 -1 per step
    assert [n for _, n in cb.history] == [n0 + 3] + [n0 + 3 + 2 * k for k in range(1, 8)]
    assert len(model.canonical_gaussians) == n0 + 3 + 2 * 7
    assert len(model.densify_statistics) == len(model.canonical_gaussians)
    with torch.no_grad():
        after = model.compute_losses(batch, model(batch["source"], batch["target"]))["l1"].item()
    assert after < before


def test_estimator_warmup_ramps_only_the_estimator_group(flame_dir):
    assert isinstance(_model(flame_dir).configure_optimizers(), torch.optim.AdamW)  # default: no schedule
    conf = _model(
        flame_dir, lr_estimator=1e-3, lr_regressor=2e-3, estimator_warmup_steps=3
    ).configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(5):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert [r["estimator"] for r in lrs] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3])
    assert [r["regressor"] for r in lrs] == pytest.approx([2e-3] * 5)


def test_our_additional_terms_only_when_weighted(flame_dir):
    batch = _pairs(_model(flame_dir), n=2)
    with torch.no_grad():
        model = _model(flame_dir)
        terms = model.compute_losses(batch, model(batch["source"], batch["target"]))
        assert not {"pose_limits", "pose_prior", "silhouette"} & set(terms)
        model = _model(flame_dir, w_pose_limits=2.0, w_pose_prior=3.0, w_silhouette=4.0)
        out = model(batch["source"], batch["target"])
        assert "silhouette" not in model.compute_losses(batch, out)  # no target_mask: nothing to compare with
        mask = (batch["target"].mean(1, keepdim=True) > 0.1).float()
        terms = model.compute_losses(dict(batch, target_mask=mask), out)
        assert {"pose_limits", "pose_prior", "silhouette"} <= set(terms)
        alpha = out["render"].alphas.permute(0, 3, 1, 2)
        resized = torch.nn.functional.interpolate(
            mask, size=alpha.shape[-2:], mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(terms["silhouette"], (alpha - resized).abs().mean())
        total = sum(model.config[f"w_{k}"] * v for k, v in terms.items() if k != "loss")
        torch.testing.assert_close(terms["loss"], total)


def test_geometry_consistency_pixels(flame_dir):
    """Normal/depth consistency are measured where the mesh faces the camera and, with `consistency_edge_m`,
    away from its depth steps."""
    from headrecon.losses.geometry import consistency_mask, depth_discontinuities

    batch = _pairs(_model(flame_dir), n=2)
    with torch.no_grad():
        model = _model(flame_dir)
        out = model(batch["source"], batch["target"])
        frag, render = out["fragments"], out["render"]
        assert out["mesh_front"].dtype == torch.bool and not (out["mesh_front"] & ~frag.mask).any()
        assert (
            out["mesh_front"].sum() >= 0.95 * frag.mask.sum()
        )  # a closed sphere-like head: nearly all front
        # only front-facing pixels count: with none, the terms are 0
        seen_from_behind = dict(out, mesh_front=torch.zeros_like(out["mesh_front"]))
        terms = model.compute_losses(batch, seen_from_behind)
        assert terms["normals"].item() == 0.0 and terms["depth"].item() == 0.0
        plain = model.compute_losses(batch, out)
        model.config["consistency_edge_m"] = 0.005
        edged = model.compute_losses(batch, out)
        keep = out["mesh_front"] & ~depth_discontinuities(frag.depth, frag.mask, 0.005)
        assert keep.sum() < out["mesh_front"].sum()
        expected = model.normals_loss(
            render.normals, out["mesh_normals"], consistency_mask(keep, render.alphas)
        )
        torch.testing.assert_close(edged["normals"], expected)
        assert edged["normals"].item() != plain["normals"].item()


def test_non_finite_loss_skips_the_step(flame_dir, tmp_path):
    model = _model(flame_dir)
    batch = _pairs(model, n=2)
    bad = dict(batch, target=batch["target"] * float("nan"))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    loader = torch.utils.data.DataLoader([bad, bad], batch_size=None)
    pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path).fit(model, loader)  # fmt: skip
    assert model.skipped_steps.item() == 2
    for n, p in model.named_parameters():
        assert torch.equal(p, weights[n]), n


def test_validation_metrics_and_checkpoint(flame_dir, tmp_path):
    model = _model(flame_dir)
    batch = _pairs(model, n=2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)  # fmt: skip
    metrics = trainer.validate(model, torch.utils.data.DataLoader([batch], batch_size=None), verbose=False)[0]
    assert {"val/psnr", "val/ssim", "val/vertex_error_mm", "val/landmark_error_mm"} <= set(metrics)
    assert metrics["val/vertex_error_mm"] > 0
    trainer.save_checkpoint(tmp_path / "gr.ckpt")
    est = FlameEstimator.from_checkpoint(
        tmp_path / "gr.ckpt"
    )  # the estimator out of a GaussianRegressor checkpoint
    x = batch["source"]
    torch.testing.assert_close(est(x).identity, model.estimator.eval()(x).identity)


@pytest.mark.slow
def test_two_process_ddp_with_densification(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "tests.ddp_regressor", str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["history"] == r1["history"] and len(r0["history"]) == 2
    for k in r0["snapshot"]:
        torch.testing.assert_close(r0["snapshot"][k], r1["snapshot"][k], msg=k, rtol=0, atol=0)
