"""Identity stability: variance ratio by hand, discovery, and the command end to end on synthetic clips."""

import argparse
import json

import numpy as np
import pytest
import torch

from headrecon.eval.stability import (
    IdentityFeatureExtractor,
    TexelPCA,
    VarianceAccumulator,
    discover_videos,
    plot_lines,
    variance_ratio,
)
from headrecon.eval.stability_cli import add_stability_command


def test_variance_ratio_by_hand():
    # video 0: frames 0 and 2 (mean 1); video 1: frames 10 and 12 (mean 11); 1-D features
    x = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    r = variance_ratio(x, torch.tensor([0, 0, 1, 1]))
    # within: every frame is 1 from its video mean -> 1; between: means 1, 11 around 6 -> 25
    assert r["within"] == pytest.approx(1.0) and r["between"] == pytest.approx(25.0)
    assert r["ratio"] == pytest.approx(0.04) and (r["videos"], r["frames"]) == (2, 4)
    # 2-D, unequal video lengths; videos weigh the same in the between term
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 4.0], [0.0, 4.0]])
    r = variance_ratio(x, torch.tensor([5, 5, 7, 7, 7]))
    # within: (1 + 1 + 0 + 0 + 0) / 5; means (2, 0), (0, 4), centre (1, 2): each 1 + 4 = 5 away
    assert r["within"] == pytest.approx(0.4) and r["between"] == pytest.approx(5.0)
    assert r["ratio"] == pytest.approx(0.08)
    # identical frames within videos -> 0; one video -> no ratio
    assert variance_ratio(torch.tensor([[1.0], [1.0], [3.0]]), torch.tensor([0, 0, 1]))["ratio"] == 0.0
    assert variance_ratio(torch.randn(4, 3), torch.zeros(4))["ratio"] is None
    # streaming in several batches equals one shot
    g = torch.Generator().manual_seed(0)
    feats, ids = torch.randn(30, 6, generator=g), torch.arange(30) % 3
    acc = VarianceAccumulator()
    for s in range(0, 30, 7):
        for v in ids[s : s + 7].unique().tolist():
            sel = slice(s, s + 7)
            acc.add(v, feats[sel][ids[sel] == v])
    assert acc.result()["ratio"] == pytest.approx(variance_ratio(feats, ids)["ratio"])


def test_texel_pca_matches_svd():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(3, 5, 4, 4, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1]).view(1, 5, 1, 1)
    pca = TexelPCA()
    pca.add(M[:2])
    pca.add(M[2:])
    fit = pca.fit(3)
    X = M.double().permute(0, 2, 3, 1).reshape(-1, 5)
    _, S, Vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)
    for k in range(3):
        assert abs(float(fit["components"][k] @ Vh[k])) == pytest.approx(1.0, abs=1e-8)
    torch.testing.assert_close(fit["eigenvalues"], (S[:3] ** 2) / (X.shape[0] - 1))
    rgb = TexelPCA.to_rgb(M, fit)
    assert rgb.shape == (3, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_plot_lines_draws():
    img = plot_lines(
        {"a": np.sin(np.arange(50) / 5), "b": np.ones(30)}, title="t", xlabel="frame", ylabel="y"
    )
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and (img < 250).any()


@pytest.fixture(scope="module")
def tiny_regressor_ckpt(tmp_path_factory, tiny_flame):
    import lightning.pytorch as pl

    from headrecon.modules import FlameEstimator
    from headrecon.modules.gaussian_regressor import GaussianRegressor
    from tests.flame_files import write_flame_folder
    from tests.test_gaussian_regressor import TINY_EST, TINY_HEAD

    root = tmp_path_factory.mktemp("stability")
    flame_dir = write_flame_folder(root / "flame", tiny_flame)
    torch.manual_seed(0)
    model = GaussianRegressor(FlameEstimator(str(flame_dir), init="random", head_init="zero", **TINY_EST),
                              head_kwargs=TINY_HEAD,
                              render_size=32, backend="torch")  # fmt: skip
    with torch.no_grad():  # the shape head starts at zero (a neutral head): give it some output to measure
        torch.nn.init.normal_(model.estimator.net.heads["shape"][2].weight, std=0.1)
    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(model)
    trainer.save_checkpoint(root / "gr.ckpt")
    return root, flame_dir, model


def test_stability_command_on_synthetic_clips(tiny_regressor_ckpt, tmp_path):
    from headrecon.data.synthetic import SyntheticOptions, write_synthetic_dataset

    root, flame_dir, model = tiny_regressor_ckpt
    write_synthetic_dataset(
        tmp_path / "data", flame_dir, SyntheticOptions(subjects=3, clips=1, frames=3, size=48)
    )
    frames_dir = tmp_path / "loose"  # a plain frame folder too (centre crops)
    frames_dir.mkdir()
    for f in sorted((tmp_path / "data/synthetic/s0001/c00/frames").iterdir()):
        (frames_dir / f.name).write_bytes(f.read_bytes())
    (frames_dir / "zz_broken.png").write_bytes(b"not a png")  # skipped and counted
    sources, problems = discover_videos([tmp_path / "data", frames_dir])
    assert [s.name for s in sources] == [
        "synthetic_s0000_c00",
        "synthetic_s0001_c00",
        "synthetic_s0002_c00",
        "loose",
    ]
    assert [s.kind for s in sources] == ["clip"] * 3 + ["frames"] and sources[0].boxes.shape == (3, 4)
    assert not problems

    ext = IdentityFeatureExtractor.from_checkpoint(root / "gr.ckpt")
    x = torch.rand(2, 3, 64, 64)
    M, beta = ext(x)
    with torch.no_grad():
        est = model.estimator.eval()(x)
        torch.testing.assert_close(
            M, model.head.uv_generator.eval()(est.identity)
        )  # the trained generator's M
    torch.testing.assert_close(beta, est.flame.shape)

    parser = argparse.ArgumentParser()
    add_stability_command(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "out"
    args = parser.parse_args(["stability", "--ckpt", str(root / "gr.ckpt"), "--videos", str(tmp_path / "data"),
                              str(frames_dir), "--out", str(out), "--device", "cpu", "--batch-size", "2",
                              "--image-frames", "2"])  # fmt: skip
    assert args.func(args) == 0
    summary = json.loads((out / "stability.json").read_text())
    assert [v["frames"] for v in summary["videos"]] == [3, 3, 3, 3] and summary["skipped_frames"] == 1
    for key in ("uv_features", "shape"):
        r = summary[key]
        assert r["videos"] == 4 and r["frames"] == 12
        assert all(np.isfinite(r[k]) and r[k] >= 0 for k in ("within", "between", "ratio"))
    assert len(summary["pca_explained_variance_ratio"]) == 3
    from headrecon.data.media import read_image

    for s in sources:
        img = read_image(out / "pca" / f"{s.name}.png")
        assert img.shape[0] == 2 * img.shape[1] // 2  # two rows (crops, PCA) of two frames each
    assert read_image(out / "shape_coefficient_0.png").ndim == 3
    codes = np.load(out / "shape_codes.npz")
    assert (
        codes["shape"].shape[0] == 12 and list(codes["video_index"]) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    )
    assert np.isfinite(codes["shape"]).all()


def test_missing_inputs_are_reported(tmp_path):
    sources, problems = discover_videos([tmp_path / "nope", tmp_path])
    assert not sources and len(problems) == 2


def test_video_files_are_read_with_centre_crops(tmp_path):
    import cv2

    from headrecon.eval.stability import iter_crops

    path = tmp_path / "clips" / "talk.avi"
    path.parent.mkdir()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 30))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write MJPG here")
    for k in range(5):
        writer.write(np.full((30, 40, 3), 40 * k, np.uint8))
    writer.release()
    sources, problems = discover_videos([tmp_path / "clips"])
    assert [(s.name, s.kind) for s in sources] == [("talk", "video")] and not problems
    frames = list(iter_crops(sources[0], 16, stride=2, max_frames=2))
    assert [i for i, _ in frames] == [0, 2] and frames[1][1].shape == (16, 16, 3)
    assert abs(int(frames[1][1][8, 8, 0]) - 80) < 12  # the third frame (grey 80), centre-cropped
