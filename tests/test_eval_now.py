"""NoW protocol: each step on a synthetic scan with a known similarity transform and noise, and a tiny run of
`headrecon eval now` on a fake challenge tree with a random-weight estimator checkpoint."""

import argparse
import csv
import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headrecon.eval.now import (
    Similarity,
    crop_scan,
    draw_cumulative_curve,
    evaluate_scan,
    face_sphere,
    read_now_split,
    read_pp,
    write_pp,
)
from headrecon.flame.model import FlameModel
from headrecon.flame.params import FlameParams
from headrecon.flame.topology import interpolate_on_faces, sample_points_on_faces
from headrecon.io.mesh import write_obj


@pytest.fixture(scope="module")
def neutral(procedural_flame_dir):
    """The procedural neutral head (metres): vertices [V, 3], faces [F, 3], NoW landmarks [7, 3]."""
    model = FlameModel.from_path(procedural_flame_dir, dtype=torch.float64)
    out = model(FlameParams.zeros(1, dtype=torch.float64))
    return out.vertices[0], model.faces, out.landmarks_now7[0]


def _synthetic_scan(neutral, n: int, noise_mm: float, seed: int = 0):
    """Dense surface samples of the neutral head and its landmarks, moved into a millimetre scan frame by a
    known similarity (scale 1000 * 1.07), with Gaussian noise of `noise_mm` on every point."""
    v, f, lm = neutral
    g = torch.Generator().manual_seed(seed)
    fid, bary = sample_points_on_faces(v, f, n, generator=g)
    pts = interpolate_on_faces(v, f, fid, bary).numpy()
    truth = Similarity(
        Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix(), np.array([12.0, -40.0, 900.0]), 1070.0
    )
    rng = np.random.default_rng(seed)
    scan = truth.apply(pts) + rng.normal(0.0, noise_mm, pts.shape)
    return scan, truth.apply(lm.numpy()), truth


def test_face_sphere_follows_the_challenge_rule():
    lm = np.array([[-45, 30, 60], [-15, 30, 70], [15, 30, 70], [45, 30, 60], [0, -20, 100], [-30, -45, 80],
                   [30, -45, 80]], dtype=float)  # fmt: skip
    centre, radius = face_sphere(lm)
    bridge = np.array([0.0, 30.0, 70.0])
    np.testing.assert_allclose(centre, lm[4] + 0.3 * (bridge - lm[4]))
    assert radius == pytest.approx(1.4 * (90.0 + np.linalg.norm(bridge - lm[4])) / 2)
    pts = np.stack([centre, centre + [radius * 0.99, 0, 0], centre + [0, radius * 1.01, 0]])
    faces = np.array([[0, 1, 2], [0, 1, 1]])
    kept, kept_faces, mask = crop_scan(pts, lm, faces)
    assert mask.tolist() == [True, True, False] and len(kept) == 2 and kept_faces.tolist() == [[0, 1, 1]]


def test_pp_round_trip(tmp_path):
    pts = np.random.default_rng(0).normal(size=(7, 3))
    np.testing.assert_allclose(read_pp(write_pp(tmp_path / "a.pp", pts)), pts, rtol=1e-8)
    (tmp_path / "bad.pp").write_text("<PickedPoints></PickedPoints>")
    with pytest.raises(ValueError, match="no"):
        read_pp(tmp_path / "bad.pp")


def test_synthetic_scan_recovers_transform_and_noise_level(neutral):
    v, f, lm = neutral
    noise = 0.3  # mm
    scan, scan_lm, truth = _synthetic_scan(neutral, 5000, noise)
    # landmark annotations off by ~2 mm: the landmark fit alone is imprecise, the refinement fixes it
    scan_lm_noisy = scan_lm + np.random.default_rng(5).normal(0.0, 2.0, scan_lm.shape)
    r = evaluate_scan(v.numpy(), f.numpy(), lm.numpy(), scan, scan_lm_noisy, unit_to_mm=1.0)
    assert 1000 < len(r.errors_mm) < len(scan)  # cropped to the face
    # recovered similarity: scale, rotation (deg) and translation (mm at the face)
    assert r.transform.s == pytest.approx(truth.s, rel=1e-3)
    ang = np.degrees(Rotation.from_matrix(r.transform.R @ truth.R.T).magnitude())
    assert ang < 0.1
    face = lm.numpy()
    assert np.abs(r.transform.apply(face) - truth.apply(face)).max() < 0.1
    # the landmark-only fit was worse than the refined one
    init_err = np.abs(r.landmark_transform.apply(face) - truth.apply(face)).max()
    assert init_err > 10 * np.abs(r.transform.apply(face) - truth.apply(face)).max()
    # unsigned distance of isotropic Gaussian noise to a locally flat surface: |N(0, sigma)|
    assert np.median(r.errors_mm) == pytest.approx(0.6745 * noise, rel=0.12)
    assert r.errors_mm.mean() == pytest.approx(np.sqrt(2 / np.pi) * noise, rel=0.12)
    # metres: the same numbers once converted
    r_m = evaluate_scan(
        v.numpy(), f.numpy(), lm.numpy(), scan / 1000, scan_lm_noisy / 1000, unit_to_mm=1000.0
    )
    assert np.median(r_m.errors_mm) == pytest.approx(np.median(r.errors_mm), rel=1e-2)


def test_wrong_shape_gives_larger_errors(procedural_flame_dir, neutral):
    v, f, lm = neutral
    scan, scan_lm, _ = _synthetic_scan(neutral, 2000, 0.0, seed=1)
    model = FlameModel.from_path(procedural_flame_dir, dtype=torch.float64)
    other = FlameParams.zeros(1, dtype=torch.float64)
    other.shape[0, :10] = 2.0
    o = model(other)
    exact = evaluate_scan(v.numpy(), f.numpy(), lm.numpy(), scan, scan_lm, iterations=3)
    wrong = evaluate_scan(
        o.vertices[0].numpy(), f.numpy(), o.landmarks_now7[0].numpy(), scan, scan_lm, iterations=3
    )
    assert np.median(exact.errors_mm) < 0.01
    assert np.median(wrong.errors_mm) > 10 * np.median(exact.errors_mm) + 0.1


def test_cumulative_curve_png(tmp_path):
    from PIL import Image

    path = draw_cumulative_curve(tmp_path / "c.png", {"a": np.linspace(0, 5, 100), "b": np.ones(10)})
    assert Image.open(path).size == (640, 480)


# ------------------------------------------------------------------------------------------ end to end
TINY = dict(backbone="vit_base_patch16_clip_quickgelu_224", img_size=64,
            timm_kwargs=dict(embed_dim=64, depth=2, num_heads=2, patch_size=16), identity_dim=32)  # fmt: skip


def tiny_checkpoint(flame_dir, path):
    """A random-weight tiny FlameEstimator checkpoint (shared with the Nersemble tests)."""
    from headrecon.modules import FlameEstimator

    torch.manual_seed(0)
    est = FlameEstimator(str(flame_dir), init="random", **TINY)
    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(est)
    trainer.save_checkpoint(path)
    return path


def _fake_now_tree(root, neutral):
    from headrecon.io.atomic import save_image

    v, f, lm = neutral
    lines = []
    for k, subject in enumerate(["FaMoS_000_A", "FaMoS_001_B"]):
        _, scan_lm, truth = _synthetic_scan(neutral, 10, 0.0, seed=k)
        scan = truth.apply(v.numpy()) + np.random.default_rng(k).normal(0.0, 0.2, v.shape)
        write_obj(root / "scans" / subject / "natural_head_rotation.000001.obj", scan, f.numpy())
        write_pp(
            root / "scans_lmks_onlypp" / subject / "natural_head_rotation.000001_picked_points.pp", scan_lm
        )
        for j, cond in enumerate(["multiview_neutral", "selfie"][: 2 - k]):
            rel = f"{subject}/{cond}/IMG_{j:04d}.jpg"
            img = (np.random.default_rng(j + 10 * k).random((80, 60, 3)) * 255).astype(np.uint8)
            save_image(root / "iphone_pictures" / rel, img)
            lines.append(rel)
            if j == 0:  # one image with a challenge-style box file
                box = root / "detected_face" / rel.replace(".jpg", ".npy")
                box.parent.mkdir(parents=True, exist_ok=True)
                np.save(box, {"left": 5, "top": 10, "right": 50, "bottom": 60}, allow_pickle=True)
    (root / "imagepathsvalidation.txt").write_text("\n".join(lines) + "\n")


def test_eval_commands_registered():
    from headrecon.eval.cli import add_eval_commands

    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers(dest="command"))
    for name in ("now", "nersemble", "stability"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["eval", name, "--help"])
        assert exc.value.code == 0


def test_eval_now_end_to_end(procedural_flame_dir, neutral, tmp_path):
    from headrecon.eval.cli import add_eval_commands

    root = tmp_path / "now"
    _fake_now_tree(root, neutral)
    samples = read_now_split(root, "val")
    assert len(samples) == 3 and samples[0].box_file is not None and samples[1].box_file is None
    ckpt = tiny_checkpoint(procedural_flame_dir, tmp_path / "est.ckpt")
    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "now", "--ckpt", str(ckpt), "--now-root", str(root), "--split", "val",
                              "--out", str(tmp_path / "out"), "--flame-dir", str(procedural_flame_dir),
                              "--iterations", "1", "--save-meshes"])  # fmt: skip
    assert args.func(args) == 0
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 3 and all(np.isfinite(float(r["median_mm"])) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 3 and all(np.isfinite(summary[k]) for k in ("median_mm", "mean_mm", "std_mm"))
    assert (out / "cumulative_error.png").stat().st_size > 0
    assert (out / "meshes" / "FaMoS_000_A" / "selfie" / "IMG_0001.obj").is_file()
    assert np.load(out / "meshes" / "FaMoS_000_A" / "selfie" / "IMG_0001.npy").shape == (7, 3)
