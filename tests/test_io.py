"""Atomic writes and mesh files."""

import numpy as np
import pytest

from headrecon.io.atomic import atomic_path, atomic_write_bytes, save_csv, save_image, save_npz
from headrecon.io.mesh import read_obj, write_obj, write_ply


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_bytes(p, b"first")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_bytes(b"half-written")
        raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"first"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]  # no temporary left behind


def test_save_npz_and_image(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(3))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=".npz"):
        save_npz(tmp_path / "a.bin", x=np.arange(3))
    from PIL import Image

    save_image(tmp_path / "img.png", np.linspace(0, 1, 12).reshape(2, 2, 3))
    img = np.asarray(Image.open(tmp_path / "img.png"))
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8 and img[1, 1, 2] == 255


def test_save_csv_round_trip_and_quoting(tmp_path):
    import csv

    path = save_csv(tmp_path / "t.csv", ["name", "error_mm"], [["a, b", 1.5], ['say "hi"', 2]])
    assert path.read_bytes().count(b"\r") == 0
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["name", "error_mm"], ["a, b", "1.5"], ['say "hi"', "2"]]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_obj_round_trip_with_uvs(tmp_path, rng):
    v = rng.normal(size=(10, 3))
    f = rng.integers(0, 10, (7, 3))
    uv = rng.uniform(size=(12, 2))
    ft = rng.integers(0, 12, (7, 3))
    write_obj(tmp_path / "m.obj", v, f, uvs=uv, uv_faces=ft, precision=9)
    m = read_obj(tmp_path / "m.obj")
    np.testing.assert_allclose(m.vertices, v, atol=1e-8)
    np.testing.assert_array_equal(m.faces, f)
    np.testing.assert_allclose(m.uvs, uv, atol=1e-8)
    np.testing.assert_array_equal(m.uv_faces, ft)


def test_obj_reader_handles_quads_normals_and_negative_indices(tmp_path):
    (tmp_path / "q.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\n"
        "f 1/1/1 2/2/1 3/3/1 4/4/1\nf -4/-4 -3/-3 -2/-2\n"
    )
    m = read_obj(tmp_path / "q.obj")
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2]]
    assert m.uv_faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2]]


def test_obj_reader_errors_name_file_and_line(tmp_path):
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n")
    with pytest.raises(ValueError, match=r"bad.obj:4"):
        read_obj(tmp_path / "bad.obj")
    (tmp_path / "range.obj").write_text("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="out of range"):
        read_obj(tmp_path / "range.obj")


def test_ply_binary_layout(tmp_path, rng):
    v = rng.normal(size=(5, 3)).astype(np.float32)
    f = np.array([[0, 1, 2], [2, 3, 4]])
    write_ply(
        tmp_path / "m.ply", v, f, vertex_colors=np.ones((5, 3)), vertex_scalars={"error_mm": np.arange(5)}
    )
    raw = (tmp_path / "m.ply").read_bytes()
    head, body = raw.split(b"end_header\n")
    assert b"element vertex 5" in head and b"property float error_mm" in head and b"element face 2" in head
    rec = np.frombuffer(body[: 5 * 19], dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3), ("e", "<f4")])
    np.testing.assert_array_equal(rec["xyz"], v)
    assert rec["rgb"].tolist() == [[255, 255, 255]] * 5
    assert rec["e"].tolist() == [0, 1, 2, 3, 4]
    faces = np.frombuffer(body[5 * 19 :], dtype=[("n", "u1"), ("i", "<i4", 3)])
    assert faces["n"].tolist() == [3, 3] and faces["i"].tolist() == f.tolist()
