"""Loading FLAME's real file formats without chumpy, converting, and failing clearly."""

import pickle
import sys

import numpy as np
import pytest

from headrecon.flame.assets import FlameAssets, FlameFileError
from headrecon.flame.pickle_compat import load_pickle
from tests.flame_files import write_flame2020_pickle, write_flame_folder


def _assert_model_equal(a: FlameAssets, model: dict) -> None:
    np.testing.assert_array_equal(a.v_template, model["v_template"])
    np.testing.assert_array_equal(a.faces, model["f"].astype(np.int64))
    np.testing.assert_array_equal(a.shapedirs, model["shapedirs"])
    np.testing.assert_array_equal(a.posedirs, model["posedirs"])
    np.testing.assert_array_equal(a.J_regressor, model["J_regressor"])
    np.testing.assert_array_equal(a.weights, model["weights"])
    np.testing.assert_array_equal(a.parents, [-1, 0, 1, 1, 1])


def test_chumpy_pickle_reads_without_chumpy(tmp_path, tiny_flame):
    path = write_flame2020_pickle(tmp_path / "generic_model.pkl", tiny_flame)
    assert "chumpy" not in sys.modules
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"csc_matrix" in raw  # the file really has the official layout
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(raw, encoding="latin1")  # the plain unpickler needs chumpy ...
    d = load_pickle(path)  # ... ours does not
    assert set(d) >= {"v_template", "shapedirs", "J_regressor"}
    a = FlameAssets.load(path)
    _assert_model_equal(a, tiny_flame)
    assert a.n_shape == 300 and a.n_expression == 100
    assert "chumpy" not in sys.modules


@pytest.mark.parametrize("name", ["generic_model.pkl", "flame2023.pkl", "FLAME_NEUTRAL.pkl"])
@pytest.mark.parametrize("deca", [False, True])
def test_folder_discovery_and_all_parts(tmp_path, tiny_flame, name, deca):
    folder = write_flame_folder(tmp_path / "flame", tiny_flame, model_name=name, deca=deca)
    a = FlameAssets.load(folder)
    _assert_model_equal(a, tiny_flame)
    s, d = tiny_flame["static_embedding"], tiny_flame["dynamic_embedding"]
    np.testing.assert_array_equal(a.landmarks.static_faces, s["lmk_face_idx"])
    np.testing.assert_allclose(a.landmarks.static_bary, s["lmk_b_coords"])
    np.testing.assert_array_equal(a.landmarks.dynamic_faces, d["lmk_face_idx"])
    np.testing.assert_allclose(a.landmarks.dynamic_bary, d["lmk_b_coords"])
    np.testing.assert_allclose(a.uv.uvs, tiny_flame["uvs"], atol=1e-8)
    np.testing.assert_array_equal(a.uv.uv_faces, tiny_flame["uv_faces"])
    np.testing.assert_allclose(a.eyelids, tiny_flame["eyelids"].astype(np.float32))
    assert set(a.masks) == {"face", "scalp"}
    assert a.sources["model"].endswith(name)


def test_uv_from_texture_npz(tmp_path, tiny_flame):
    folder = write_flame_folder(tmp_path / "flame", tiny_flame, uv="npz")
    a = FlameAssets.load(folder)
    np.testing.assert_array_equal(a.uv.uvs, tiny_flame["uvs"])
    assert a.sources["uv"].endswith("FLAME_texture.npz")


def test_converted_copy_is_identical(tmp_path, tiny_flame):
    folder = write_flame_folder(tmp_path / "flame", tiny_flame)
    a = FlameAssets.load(folder)
    out = a.save(tmp_path / "converted")
    assert out.name == "flame_model.npz"
    with open(out, "rb") as f:
        assert b"chumpy" not in f.read()
    b = FlameAssets.load(tmp_path / "converted")
    for field in (
        "v_template",
        "faces",
        "shapedirs",
        "posedirs",
        "J_regressor",
        "weights",
        "parents",
        "eyelids",
    ):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    for field in ("static_faces", "static_bary", "dynamic_faces", "dynamic_bary"):
        np.testing.assert_array_equal(getattr(a.landmarks, field), getattr(b.landmarks, field))
    np.testing.assert_array_equal(a.uv.uvs, b.uv.uvs)
    np.testing.assert_array_equal(a.uv.uv_faces, b.uv.uv_faces)
    assert a.masks.keys() == b.masks.keys()
    assert a.n_shape == b.n_shape


def test_cli_convert_flame(tmp_path, tiny_flame):
    from headrecon.cli import main

    folder = write_flame_folder(tmp_path / "flame", tiny_flame)
    assert main(["assets", "convert-flame", str(folder), "--out", str(tmp_path / "out")]) == 0
    b = FlameAssets.load(tmp_path / "out")
    np.testing.assert_array_equal(b.shapedirs, tiny_flame["shapedirs"])


def test_missing_folder_names_file_and_source(tmp_path):
    with pytest.raises(FlameFileError) as e:
        FlameAssets.load(tmp_path / "nope")
    msg = str(e.value)
    assert str(tmp_path / "nope") in msg and "flame.is.tue.mpg.de" in msg and "procedural-flame" in msg


def test_empty_folder_lists_expected_names(tmp_path):
    with pytest.raises(FlameFileError, match="generic_model.pkl"):
        FlameAssets.load(tmp_path)


def test_malformed_files(tmp_path, tiny_flame):
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(FlameFileError, match="generic_model.pkl"):
        FlameAssets.load(bad)

    model = dict(tiny_flame)
    model["posedirs"] = model["posedirs"][:, :, :30]
    write_flame2020_pickle(tmp_path / "short.pkl", model)
    with pytest.raises(FlameFileError, match=r"posedirs .*want"):
        FlameAssets.load(tmp_path / "short.pkl")

    missing = {k: v for k, v in tiny_flame.items() if k != "weights"}
    with open(tmp_path / "noweights.pkl", "wb") as f:
        pickle.dump(
            {
                k: missing[k]
                for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table")
            },
            f,
        )
    with pytest.raises(FlameFileError, match="missing keys.*weights"):
        FlameAssets.load(tmp_path / "noweights.pkl")


def test_malicious_pickle_refused(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(FlameFileError, match="refusing"):
        FlameAssets.load(p)


def test_bad_landmark_file(tmp_path, tiny_flame):
    folder = write_flame_folder(tmp_path / "flame", tiny_flame)
    with open(folder / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": np.array([10**6] * 51), "lmk_b_coords": np.zeros((51, 3))}, f)
    with pytest.raises(FlameFileError, match="flame_static_embedding.pkl.*out of range"):
        FlameAssets.load(folder)


def test_obj_without_uvs_is_an_error_when_used_for_uvs(tmp_path, tiny_flame):
    from headrecon.io.mesh import write_obj

    folder = write_flame_folder(tmp_path / "flame", tiny_flame, uv="none")
    write_obj(folder / "head_template.obj", tiny_flame["v_template"], tiny_flame["f"].astype(np.int64))
    with pytest.raises(FlameFileError, match="head_template.obj.*no UVs"):
        FlameAssets.load(folder)
