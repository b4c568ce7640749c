"""Nersemble point-cloud benchmark: PLY reading, alignment of expressive heads, drawing, and a tiny run of
`headrecon eval nersemble` on a fake tree built from procedural-head meshes."""

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from headrecon.eval.nersemble import (
    colour_bar,
    error_colors,
    evaluate_point_cloud,
    read_nersemble,
    read_ply_vertices,
    read_point_cloud,
    splat_points,
)
from headrecon.eval.now import Similarity
from headrecon.flame.model import FlameModel
from headrecon.flame.params import FlameParams
from headrecon.flame.topology import interpolate_on_faces, sample_points_on_faces
from headrecon.io.atomic import save_image
from headrecon.io.mesh import write_ply
from tests.test_eval_now import tiny_checkpoint


@pytest.fixture(scope="module")
def expressive(procedural_flame_dir):
    """Two expressive procedural heads (metres): vertices [2, V, 3], faces, NoW landmarks [2, 7, 3]."""
    model = FlameModel.from_path(procedural_flame_dir, dtype=torch.float64)
    p = FlameParams.random(2, generator=torch.Generator().manual_seed(3), shape_std=0.5, expression_std=1.0,
                           rotation_std=0.1, dtype=torch.float64)  # fmt: skip
    out = model(p)
    return out.vertices, model.faces, out.landmarks_now7


def _cloud(v, f, n, seed):
    fid, bary = sample_points_on_faces(v, f, n, generator=torch.Generator().manual_seed(seed))
    return interpolate_on_faces(v, f, fid, bary).numpy()


def test_ply_reader_binary_and_ascii(tmp_path):
    pts = np.random.default_rng(0).normal(size=(20, 3))
    write_ply(tmp_path / "b.ply", pts, vertex_scalars={"error_mm": np.arange(20.0)})
    v = read_ply_vertices(tmp_path / "b.ply")
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], 1), pts, rtol=1e-6)
    np.testing.assert_array_equal(v["error_mm"], np.arange(20.0))
    text = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    text += "element face 0\nproperty list uchar int vertex_indices\nend_header\n1 2 3\n4 5 6\n"
    (tmp_path / "a.ply").write_text(text)
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.ply"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "c.ply").write_text("not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_point_cloud(tmp_path / "c.ply")


def test_expressive_cloud_aligned_and_scored(expressive):
    v, f, lm = expressive
    pts = _cloud(v[0], f, 1500, 0)
    truth = Similarity(Rotation.from_rotvec([0.1, 0.6, -0.2]).as_matrix(), np.array([0.1, -0.2, 1.5]), 0.95)
    cloud, cloud_lm = truth.apply(pts), truth.apply(lm[0].numpy())
    r = evaluate_point_cloud(v[0].numpy(), f.numpy(), lm[0].numpy(), cloud, cloud_lm, iterations=5)
    assert len(r.errors_mm) == len(cloud)  # no crop by default
    assert r.errors_mm.max() < 1e-3 and r.transform.s == pytest.approx(0.95, rel=1e-6)
    # the other expression scores worse, even after the refinement
    other = evaluate_point_cloud(v[1].numpy(), f.numpy(), lm[1].numpy(), cloud, cloud_lm, iterations=2)
    assert np.median(other.errors_mm) > 0.5


def test_splat_nearest_wins_and_colours():
    canvas = np.ones((10, 10, 3))
    pix = np.array([[5.5, 5.5], [5.5, 5.5], [0.2, 9.9], [50.0, 5.0]])
    cols = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    out = splat_points(canvas, pix, np.array([2.0, 1.0, 1.0, 1.0]), cols, radius=1)
    np.testing.assert_array_equal(out[5, 5], [0, 1, 0])  # the nearer (green) point
    np.testing.assert_array_equal(out[9, 0], [0, 0, 1])
    np.testing.assert_array_equal(out[0, 0], [1, 1, 1]) and np.testing.assert_array_equal(canvas, 1.0)
    c = error_colors(np.array([0.0, 5.0, 10.0, 99.0]), 10.0)
    assert c.shape == (4, 3) and np.all((c >= 0) & (c <= 1)) and np.allclose(c[2], c[3])
    assert colour_bar(128, 10.0).shape == (128, 70, 3)


def _fake_tree(root, expressive):
    from headrecon.render.camera import Cameras
    from headrecon.render.mesh_raster import render_mesh

    v, f, lm = expressive
    cams = Cameras.sheap_default(1, 96, 96, dtype=torch.float64)
    for k, expr in enumerate(["EXP-1", "EXP-2"]):
        frame = root / "subj_017" / expr
        pts = _cloud(v[k], f, 600, k)
        if k == 0:
            write_ply(frame / "pointcloud.ply", pts)
        else:
            frame.mkdir(parents=True)
            np.save(frame / "pointcloud.npy", pts)
        np.save(frame / "landmarks7.npy", lm[k].numpy())
        img = render_mesh(v[k : k + 1], f, cams, background=0.3).rgb[0].numpy()
        save_image(frame / "images" / "cam_222200037.png", img)
        save_image(frame / "images" / "cam_220700191.jpg", img[:, ::-1])
    (root / "subj_017" / "EXP-1" / "boxes.json").write_text(
        json.dumps({"cam_222200037.png": [10, 10, 80, 85]})
    )


def test_eval_nersemble_end_to_end(procedural_flame_dir, expressive, tmp_path):
    from headrecon.eval.cli import add_eval_commands

    root = tmp_path / "ners"
    _fake_tree(root, expressive)
    samples = read_nersemble(root)
    assert [s.name for s in samples][:2] == [
        "subj_017__EXP-1__cam_220700191",
        "subj_017__EXP-1__cam_222200037",
    ]
    ckpt = tiny_checkpoint(procedural_flame_dir, tmp_path / "est.ckpt")
    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(["eval", "nersemble", "--ckpt", str(ckpt), "--root", str(root), "--out", str(out),
                              "--flame-dir", str(procedural_flame_dir), "--iterations", "1", "--render-size", "128"])  # fmt: skip
    assert args.func(args) == 0
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 4 and all(np.isfinite(float(r["mean_mm"])) for r in rows)
    assert all(int(r["n_points"]) == 600 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["point_clouds"] == 2
    assert np.isfinite(summary["mean_mm"]) and np.isfinite(summary["median_mm"])
    for s in samples:
        png = Image.open(out / "error_maps" / f"{s.name}.png")
        assert png.size == (3 * 128 + 70, 128)
        ply = read_ply_vertices(out / "error_ply" / f"{s.name}.ply")
        assert len(ply["error_mm"]) == 600 and np.isfinite(ply["error_mm"]).all() and "red" in ply
        assert (out / "error_ply" / f"{s.name}_mesh.ply").is_file()
