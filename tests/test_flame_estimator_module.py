"""FlameEstimator LightningModule and `headrecon reconstruct` end to end (tiny backbone, procedural FLAME)."""

import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from headrecon.flame.params import FlameParams
from headrecon.io.atomic import save_image
from headrecon.io.mesh import read_obj
from headrecon.modules import FlameEstimator
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import render_mesh

TINY = dict(backbone="vit_base_patch16_clip_quickgelu_224", img_size=64,
            timm_kwargs=dict(embed_dim=64, depth=2, num_heads=2, patch_size=16), identity_dim=32)  # fmt: skip


@pytest.fixture(scope="module")
def estimator(procedural_flame_dir):
    torch.manual_seed(0)
    return FlameEstimator(str(procedural_flame_dir), init="random", **TINY)


def _synthetic_batch(model: FlameEstimator, B: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    gt = FlameParams.random(B, generator=g, shape_std=0.5, expression_std=0.5, rotation_std=0.1)
    verts = model.flame(gt).vertices
    cams = Cameras.sheap_default(B, 64, 64)
    img = render_mesh(verts, model.flame.faces, cams, background=0.2).rgb.permute(0, 3, 1, 2)
    return {"image": img.detach(), "flame": {k: v for k, v in gt.to_dict().items()}}


def test_forward_and_predict_shapes(estimator):
    out = estimator(torch.rand(2, 3, 64, 64))
    assert out.flame.shape.shape == (2, 300) and out.identity.shape == (2, 32)
    pred = estimator.predict_step(torch.rand(2, 3, 64, 64))
    assert pred["vertices"].shape == (2, estimator.flame.num_vertices, 3)
    assert pred["landmarks68"].shape == (2, 68, 3)


def test_supervised_baseline_learns(procedural_flame_dir, tmp_path):
    torch.manual_seed(0)
    model = FlameEstimator(str(procedural_flame_dir), init="random", lr=1e-3, **TINY)
    batch = _synthetic_batch(model)
    with torch.no_grad():
        before = model._losses(batch)["vertex_mm"].item()
    loader = torch.utils.data.DataLoader([batch] * 30, batch_size=None)
    pl.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(model, loader)  # fmt: skip
    with torch.no_grad():
        after = model._losses(batch)["vertex_mm"].item()
    assert after < 0.7 * before


def test_checkpoint_round_trip_and_flame_dir_override(estimator, procedural_flame_dir, tmp_path):
    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(estimator)
    trainer.save_checkpoint(tmp_path / "est.ckpt")
    ckpt = torch.load(tmp_path / "est.ckpt", weights_only=False)
    assert not any(k.startswith("flame.") for k in ckpt["state_dict"])  # no FLAME arrays in checkpoints
    loaded = FlameEstimator.from_checkpoint(tmp_path / "est.ckpt", flame_dir=str(procedural_flame_dir))
    x = torch.rand(2, 3, 64, 64)
    estimator.eval()
    torch.testing.assert_close(loaded(x).flame.shape, estimator(x).flame.shape)
    # Lightning's own loader works too
    again = FlameEstimator.load_from_checkpoint(tmp_path / "est.ckpt", init="deferred")
    torch.testing.assert_close(again.eval()(x).identity, estimator(x).identity)


def test_loads_estimator_from_a_gaussian_regressor_style_checkpoint(estimator, tmp_path):
    state = {f"estimator.{k}": v for k, v in estimator.state_dict().items()}
    state["uv_generator.weight"] = torch.zeros(3)
    torch.save({"state_dict": state, "hyper_parameters": {"estimator_hparams": dict(estimator.config)}},
               tmp_path / "gr.ckpt")  # fmt: skip
    loaded = FlameEstimator.from_checkpoint(tmp_path / "gr.ckpt")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x).lighting, estimator.eval()(x).lighting)
    torch.save({"state_dict": {"something.else": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="no estimator weights"):
        FlameEstimator.from_checkpoint(tmp_path / "bad.ckpt")


def test_from_checkpoint_prefers_the_weight_average(estimator, tmp_path):
    """A GaussianRegressor checkpoint written with SubmoduleEMA: state_dict_ema wins unless use_ema=False."""
    live = {f"estimator.{k}": v for k, v in estimator.state_dict().items()}
    avg = {k: v + 0.01 if v.is_floating_point() else v for k, v in live.items() if ".net." in f".{k}"}
    hp = {"estimator_hparams": dict(estimator.config)}
    torch.save({"state_dict": live, "state_dict_ema": avg, "hyper_parameters": hp}, tmp_path / "gr.ckpt")
    name = next(k for k in avg if avg[k].is_floating_point())[len("estimator.") :]
    with_ema = FlameEstimator.from_checkpoint(tmp_path / "gr.ckpt").state_dict()
    without = FlameEstimator.from_checkpoint(tmp_path / "gr.ckpt", use_ema=False).state_dict()
    torch.testing.assert_close(with_ema[name], avg[f"estimator.{name}"])
    torch.testing.assert_close(without[name], live[f"estimator.{name}"])


def test_reconstruct_end_to_end_with_a_corrupt_image(estimator, tmp_path, caplog):
    from headrecon.cli import main

    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(estimator)
    trainer.save_checkpoint(tmp_path / "est.ckpt")
    inputs = tmp_path / "in"
    batch = _synthetic_batch(estimator, B=3, seed=1)
    for i in range(3):  # renders of the procedural head, padded into larger photos
        img = np.full((96, 128, 3), 0.3)
        img[16:80, 32:96] = batch["image"][i].permute(1, 2, 0).numpy()
        save_image(inputs / f"img{i}.png", img)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        rc = main(["reconstruct", str(inputs), "--ckpt", str(tmp_path / "est.ckpt"), "--out", str(out),
                   "--batch-size", "2", "--no-progress"])  # fmt: skip
    assert rc == 1  # one input failed, the rest finished
    assert "broken.jpg" in caplog.text and "centre crop" in caplog.text
    for i in range(3):
        z = np.load(out / f"img{i}.npz")
        assert z["shape"].shape == (300,) and z["crop_to_image"].shape == (2, 3)
        mesh = read_obj(out / f"img{i}.obj")
        assert mesh.vertices.shape == (estimator.flame.num_vertices, 3) and mesh.uvs is not None
        assert np.isfinite(mesh.vertices).all()
        from PIL import Image

        overlay = np.asarray(Image.open(out / f"img{i}_overlay.png"))
        assert overlay.shape == (96, 128, 3)
        assert np.abs(overlay.astype(float) / 255 - 0.3).max() > 0.1  # something was drawn
    assert not (out / "broken.npz").exists()


def test_smooth_params_is_a_centred_moving_average():
    from headrecon.reconstruct import smooth_params

    p = FlameParams.zeros(5).replace(jaw_rotation=torch.tensor([[0.0, 0, 0], [3, 0, 0], [0, 0, 0], [6, 0, 0],
                                                                [0, 0, 0]]))  # fmt: skip
    s = smooth_params(p, 3)
    torch.testing.assert_close(s.jaw_rotation[:, 0], torch.tensor([1.5, 1.0, 3.0, 2.0, 3.0]))
    assert smooth_params(p, 1) is p


def test_reconstruct_video_with_smoothing(estimator, tmp_path):
    import cv2

    from headrecon.cli import main

    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(estimator)
    trainer.save_checkpoint(tmp_path / "est.ckpt")
    frames = (_synthetic_batch(estimator, B=5, seed=2)["image"].permute(0, 2, 3, 1).numpy() * 255).astype(
        np.uint8
    )
    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    out = tmp_path / "out"
    rc = main(["reconstruct", str(path), "--ckpt", str(tmp_path / "est.ckpt"), "--out", str(out), "--smooth", "3",
               "--batch-size", "2", "--no-progress", "--no-overlay"])  # fmt: skip
    assert rc == 0
    written = sorted((out / "clip").glob("frame_*.npz"))
    assert [p.stem for p in written] == [f"frame_{i:06d}" for i in range(5)]
    assert not list((out / "clip").glob("*_overlay.png"))
    shapes = np.stack([np.load(p)["shape"] for p in written])
    assert np.isfinite(shapes).all()


def test_export_command_checks_against_eager(estimator, tmp_path):
    from headrecon.cli import main

    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(estimator)
    trainer.save_checkpoint(tmp_path / "est.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "est.ckpt"), "--out", str(tmp_path / "est.onnx")]) == 0
    assert main(["export", "--ckpt", str(tmp_path / "est.ckpt"), "--out", str(tmp_path / "est.pt")]) == 0
    assert (tmp_path / "est.onnx").stat().st_size > 0 and (tmp_path / "est.pt").stat().st_size > 0
