"""The procedural FLAME-format head: file formats, topology, anatomy, skinning, bases, UVs, landmarks."""

from __future__ import annotations

import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from headrecon.flame.procedural import (
    EXPRESSION_REGIONS,
    YAW_BINS_DEG,
    make_procedural_flame,
    write_procedural_flame,
)

SKIN, POCKET, LEFT_EYEBALL, RIGHT_EYEBALL = 0, 1, 2, 3
MASK_KEYS = {
    "eye_region",
    "neck",
    "left_eyeball",
    "right_eyeball",
    "right_ear",
    "right_eye_region",
    "forehead",
    "lips",
    "nose",
    "scalp",
    "boundary",
    "face",
    "left_ear",
    "left_eye_region",
}


@pytest.fixture(scope="module")
def model() -> dict:
    return make_procedural_flame(0)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _pose(m: dict, betas: np.ndarray | None = None, rots: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Vertices [V, 3] of the model posed with smplx's lbs (rotation matrices per joint)."""
    from smplx.lbs import lbs

    V = len(m["v_template"])
    b = np.zeros(400) if betas is None else betas
    pose = np.tile(np.eye(3), (1, 5, 1, 1))
    for j, R in (rots or {}).items():
        pose[0, j] = R
    dt = torch.float64
    verts, _ = lbs(
        torch.tensor(b[None], dtype=dt),
        torch.tensor(pose, dtype=dt),
        torch.tensor(m["v_template"][None], dtype=dt),
        torch.tensor(m["shapedirs"], dtype=dt),
        torch.tensor(m["posedirs"].reshape(V * 3, -1).T, dtype=dt),
        torch.tensor(m["J_regressor"].toarray(), dtype=dt),
        torch.tensor([-1, 0, 1, 1, 1]),
        torch.tensor(m["weights"], dtype=dt),
        pose2rot=False,
    )
    return verts[0].numpy()


def _landmarks(m: dict, verts: np.ndarray | None = None) -> np.ndarray:
    v = m["v_template"] if verts is None else verts
    f = m["f"].astype(np.int64)
    emb = m["landmark_embedding"]
    return np.einsum("lk,lkc->lc", emb["full_lmk_bary_coords"][0], v[f[emb["full_lmk_faces_idx"][0]]])


def _edges(faces: np.ndarray) -> Counter:
    """Undirected edge -> number of faces using it."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return Counter(map(tuple, np.sort(e, axis=1).tolist()))


def _frontal_z(v: np.ndarray, f: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """z of the front-most surface point of mesh (v, f) under each (x, y) in xy [N, 2] (-inf where missed)."""
    t = v[f]
    a, b, c = t[:, 0, :2], t[:, 1, :2], t[:, 2, :2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    den = np.where(np.abs(den) < 1e-15, 1e-15, den)
    out = np.full(len(xy), -np.inf)
    for i, (px, py) in enumerate(xy):
        l0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
        l1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
        l2 = 1.0 - l0 - l1
        ok = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        if ok.any():
            out[i] = (l0 * t[:, 0, 2] + l1 * t[:, 1, 2] + l2 * t[:, 2, 2])[ok].max()
    return out


# ------------------------------------------------------------------------------------------------- files
def test_files_have_flame_formats(procedural_flame_dir: Path, model: dict):
    d = procedural_flame_dir
    with open(d / "generic_model.pkl", "rb") as fh:
        g = pickle.load(fh)
    V = len(g["v_template"])
    assert g["v_template"].dtype == np.float64 and g["v_template"].shape == (V, 3)
    assert g["f"].dtype == np.uint32 and g["f"].shape[1] == 3
    assert g["shapedirs"].shape == (V, 3, 400) and g["shapedirs"].dtype == np.float64
    assert g["posedirs"].shape == (V, 3, 36) and g["posedirs"].dtype == np.float64
    assert isinstance(g["J_regressor"], scipy.sparse.csc_matrix) and g["J_regressor"].shape == (5, V)
    assert g["weights"].shape == (V, 5)
    np.testing.assert_array_equal(g["kintree_table"], [[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    assert g["J"].shape == (5, 3) and g["bs_style"] == "lbs" and g["bs_type"] == "lrotmin"
    with open(d / "flame_static_embedding.pkl", "rb") as fh:
        st = pickle.load(fh)
    assert st["lmk_face_idx"].shape == (51,) and st["lmk_face_idx"].dtype == np.int64
    assert st["lmk_b_coords"].shape == (51, 3)
    dyn = np.load(d / "flame_dynamic_embedding.npy", allow_pickle=True).item()
    assert dyn["lmk_face_idx"].shape == (79, 17) and dyn["lmk_b_coords"].shape == (79, 17, 3)
    deca = np.load(d / "landmark_embedding.npy", allow_pickle=True).item()
    assert deca["full_lmk_faces_idx"].shape == (1, 68) and deca["full_lmk_bary_coords"].shape == (1, 68, 3)
    assert deca["static_lmk_faces_idx"].shape == (51,) and deca["dynamic_lmk_bary_coords"].shape == (
        79,
        17,
        3,
    )
    with open(d / "FLAME_masks.pkl", "rb") as fh:
        masks = pickle.load(fh)
    assert set(masks) == MASK_KEYS and all(m.dtype == np.int64 and len(m) for m in masks.values())
    for name in ("l_eyelid.npy", "r_eyelid.npy"):
        assert np.load(d / name).shape == (V, 3)
    from headrecon.io.mesh import read_obj

    obj = read_obj(d / "head_template.obj")
    assert len(obj.vertices) == V and len(obj.uvs) > V  # UV seams
    np.testing.assert_array_equal(obj.faces, g["f"].astype(np.int64))
    np.testing.assert_allclose(obj.uvs, model["uv"]["vt"], atol=1e-7)
    # what was written is bytes-identical to a second, independent build with the same seed
    for k in ("v_template", "shapedirs", "posedirs", "weights", "J"):
        assert g[k].tobytes() == model[k].tobytes(), k
    assert (g["J_regressor"] != model["J_regressor"]).nnz == 0
    assert dyn["lmk_b_coords"].tobytes() == model["dynamic_embedding"]["lmk_b_coords"].tobytes()


def test_loads_through_flame_loader_and_smplx(procedural_flame_dir: Path, tmp_path: Path):
    import smplx

    from headrecon.flame.assets import load_flame_assets

    a = load_flame_assets(procedural_flame_dir)
    assert a.n_expression == 100 and a.landmarks is not None and a.uv is not None
    assert a.eyelids is not None and set(a.masks) == MASK_KEYS
    shutil.copy(procedural_flame_dir / "generic_model.pkl", tmp_path / "FLAME_NEUTRAL.pkl")
    for name in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy"):
        shutil.copy(procedural_flame_dir / name, tmp_path / name)
    layer = smplx.FLAMELayer(
        model_path=str(tmp_path),
        ext="pkl",
        use_face_contour=True,
        num_betas=300,
        num_expression_coeffs=100,
        dtype=torch.float64,
    )
    out = layer(
        betas=torch.zeros(1, 300, dtype=torch.float64), expression=torch.zeros(1, 100, dtype=torch.float64)
    )
    np.testing.assert_allclose(out.vertices[0].numpy(), a.v_template, atol=1e-9)
    assert out.joints.shape[1] == 5 + 68  # joints then 51 static + 17 contour landmarks


def test_write_returns_paths_and_leaves_no_temporary_files(tmp_path: Path, monkeypatch, model: dict):
    import headrecon.flame.procedural as proc

    monkeypatch.setattr(proc, "make_procedural_flame", lambda seed=0: model)  # reuse: a build takes seconds
    paths = write_procedural_flame(tmp_path / "m", seed=0)
    assert set(paths) == {p.name for p in (tmp_path / "m").iterdir()}
    assert all(p.parent == tmp_path / "m" and p.stat().st_size > 0 for p in paths.values())


# ---------------------------------------------------------------------------------------- size and topology
def test_size_frame_and_camera(model: dict):
    v = model["v_template"]
    assert 2000 <= len(v) <= 6000
    height = v[:, 1].max() - v[:, 1].min()
    assert 0.22 <= height <= 0.26
    assert 0.13 <= v[:, 0].max() - v[:, 0].min() <= 0.19  # ear to ear
    lm = _landmarks(model)
    assert np.abs(lm.mean(axis=0)[:2]).max() < 0.03  # face centred near the origin
    from headrecon.render.camera import Cameras

    cam = Cameras.sheap_default(1, 224, 224)
    K, w2c = cam.K[0].double().numpy(), cam.world_to_cam[0].double().numpy()
    pts = np.concatenate([lm, v[v[:, 1] > 0.0]])  # the face and the whole skull are in the picture
    xc = pts @ w2c[:3, :3].T + w2c[:3, 3]
    uv = (xc @ K.T)[:, :2] / xc[:, 2:3]
    assert (uv > 0).all() and (uv < 224).all()


def test_skin_is_closed_except_neck_base_and_eyeballs_are_closed(model: dict):
    f = model["f"].astype(np.int64)
    part = model["face_part"]
    skin = f[part <= POCKET]
    counts = _edges(skin)
    boundary = [e for e, n in counts.items() if n == 1]
    assert all(n in (1, 2) for n in counts.values())  # manifold edges
    ring = set(model["masks"]["boundary"].tolist())
    assert {v for e in boundary for v in e} == ring  # the only hole is the neck base
    assert len(boundary) == len(ring)  # ... and it is one simple loop
    Vs = len(np.unique(skin))
    assert Vs - len(counts) + len(skin) == 1  # a disc: the neck opening is the only boundary, no handles
    # consistent orientation: every directed edge used once
    directed = Counter(
        map(tuple, np.concatenate([skin[:, [0, 1]], skin[:, [1, 2]], skin[:, [2, 0]]]).tolist())
    )
    assert max(directed.values()) == 1
    v = model["v_template"]
    for code in (LEFT_EYEBALL, RIGHT_EYEBALL):
        ef = f[part == code]
        c = _edges(ef)
        assert set(c.values()) == {2}
        assert len(np.unique(ef)) - len(c) + len(ef) == 2  # a sphere
        p = v[ef]
        vol = np.einsum("fi,fi->f", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0
        assert vol > 0  # outward
    # skin outward: signed volume with the neck base capped by a fan to its centroid
    ring_ids = np.array(sorted(ring))
    centre = v[ring_ids].mean(axis=0)
    vol = 0.0
    p = v[skin]
    vol += np.einsum("fi,fi->f", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum()
    for a, b in boundary:
        # the cap uses the boundary edges in the direction opposite to their skin face
        if (a, b) in directed:
            a, b = b, a
        vol += np.dot(v[a], np.cross(v[b], centre))
    assert vol / 6.0 > 0.002  # a head of a few litres, outward


def test_face_has_nose_brow_chin_cheeks_and_eye_sockets(model: dict):
    v, f = model["v_template"], model["f"].astype(np.int64)
    skin_f = f[model["face_part"] == SKIN]
    lm = _landmarks(model)
    skin_v = v[model["vertex_part"] == SKIN]
    # the nose tip is the front-most point of the skin
    assert abs(lm[30, 2] - skin_v[:, 2].max()) < 0.002 and abs(lm[30, 0]) < 1e-6
    eye_x, eye_y = lm[42:48, 0].mean(), lm[42:48, 1].mean()
    z = lambda x, y: _frontal_z(v, skin_f, np.array([[x, y]]))[0]  # noqa: E731
    assert z(eye_x, eye_y + 0.021) > z(eye_x, eye_y + 0.009) + 0.006  # brow ridge over the eye socket
    assert z(0.0, lm[30, 1]) > z(0.0, eye_y) + 0.015  # nose stands out from the nose root
    assert (
        z(0.0, lm[8, 1] + 0.016) > z(0.0, lm[57, 1] - 0.007) + 0.001
    )  # chin ahead of the groove under the lip
    assert z(0.045, lm[33, 1]) > z(0.062, lm[33, 1]) + 0.005  # cheek rounds off to the side
    # the head is not a sphere: face wider than deep at the eyes, skull longer than wide
    assert skin_v[:, 2].max() - skin_v[:, 2].min() > 1.1 * (skin_v[:, 0].max() - skin_v[:, 0].min())


# ---------------------------------------------------------------------------------------------- skinning
def test_skinning_weights(model: dict):
    W = model["weights"]
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    assert W.min() >= 0.0
    part = model["vertex_part"]
    np.testing.assert_array_equal(W[part == LEFT_EYEBALL, 3], 1.0)
    np.testing.assert_array_equal(W[part == RIGHT_EYEBALL, 4], 1.0)
    assert (W[part <= POCKET][:, 3:] == 0).all()
    np.testing.assert_array_equal(W[model["masks"]["boundary"], 0], 1.0)  # neck base on the root
    # smooth: weights change little along any skin edge
    f = model["f"].astype(np.int64)[model["face_part"] == SKIN]
    e = np.array(list(_edges(f)))
    assert np.abs(W[e[:, 0]] - W[e[:, 1]]).max() < 0.4
    J = model["J_regressor"]
    np.testing.assert_allclose(np.asarray(J.sum(axis=1)).ravel(), 1.0)


def test_jaw_opens_mouth_and_moves_only_lower_face(model: dict):
    v0 = model["v_template"]
    v1 = _pose(model, rots={2: _rot_x(0.3)})
    moved = np.linalg.norm(v1 - v0, axis=1) > 1e-9
    lm0, lm1 = _landmarks(model), _landmarks(model, v1)
    mouth_y = lm0[60:68, 1].mean()
    assert (v0[moved, 1] < mouth_y + 0.001).all()  # nothing above the mouth line moves
    part = model["vertex_part"]
    assert not moved[part >= LEFT_EYEBALL].any()
    # upper lip, nose, eyes, brows stay; lower lip and chin drop
    np.testing.assert_allclose(lm1[17:48], lm0[17:48], atol=1e-12)
    np.testing.assert_allclose(lm1[48:55], lm0[48:55], atol=1e-12)
    np.testing.assert_allclose(lm1[61:64], lm0[61:64], atol=1e-12)
    assert (lm1[65:68, 1] < lm0[65:68, 1] - 0.008).all()  # inner lower lip
    assert lm1[8, 1] < lm0[8, 1] - 0.005 and np.linalg.norm(lm1[8] - lm0[8]) > 0.01  # chin
    assert moved[part == SKIN].sum() > 200


def test_eyes_rotate_alone(model: dict):
    v0 = model["v_template"]
    part = model["vertex_part"]
    J = model["J"]
    for joint, code in ((3, LEFT_EYEBALL), (4, RIGHT_EYEBALL)):
        v1 = _pose(model, rots={joint: _rot_y(0.4) @ _rot_x(0.2)})
        moved = np.linalg.norm(v1 - v0, axis=1) > 1e-9
        eye = part == code
        assert not moved[~eye].any()
        assert moved[eye].mean() > 0.95
        r0 = np.linalg.norm(v0[eye] - J[joint], axis=1)
        r1 = np.linalg.norm(v1[eye] - J[joint], axis=1)
        np.testing.assert_allclose(r1, r0, atol=1e-9)  # a rigid rotation about the eyeball centre
        np.testing.assert_allclose(r0, r0.mean(), rtol=1e-6)  # eye joint at the eyeball centre
    assert J[3, 0] > 0.02 and J[4, 0] < -0.02  # left eye on +x


def test_neck_turns_head_and_keeps_neck_base(model: dict):
    v0 = model["v_template"]
    v1 = _pose(model, rots={1: _rot_y(0.5) @ _rot_x(0.3)})
    base = model["masks"]["boundary"]
    np.testing.assert_allclose(v1[base], v0[base], atol=1e-12)
    crown = np.argmax(v0[:, 1])
    assert np.linalg.norm(v1[crown] - v0[crown]) > 0.03
    J = model["J"]
    assert J[0, 1] < J[1, 1] < J[3, 1]  # root below neck below eyes
    assert J[2, 1] < J[3, 1] and J[2, 2] < J[3, 2]  # jaw hinge below and behind the eyes


# ------------------------------------------------------------------------------------------------- bases
def test_shape_components(model: dict):
    S = model["shapedirs"][:, :, :300]
    V = S.shape[0]
    rms = np.sqrt((S**2).sum(axis=(0, 1)) / V)
    assert (np.diff(rms) <= 1e-15).all() and rms[0] > 0.002 and rms[-1] < rms[0] / 20
    flat = S.reshape(V * 3, 300) / (rms * np.sqrt(V))
    np.testing.assert_allclose(flat.T @ flat, np.eye(300), atol=1e-8)  # orthogonal, like PCA components
    # eyeballs move rigidly with their sockets
    for code in (LEFT_EYEBALL, RIGHT_EYEBALL):
        e = S[model["vertex_part"] == code]
        np.testing.assert_allclose(e, np.broadcast_to(e[:1], e.shape), atol=1e-15)
    # smooth: no component varies faster than a wave of 4 cm wavelength with its peak amplitude would
    f = model["f"].astype(np.int64)[model["face_part"] == SKIN]
    e = np.array(list(_edges(f)))
    v = model["v_template"]
    length = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    slope = (np.linalg.norm(S[e[:, 0]] - S[e[:, 1]], axis=1) / length[:, None]).max(axis=0)
    d_peak = np.linalg.norm(S, axis=1).max(axis=0)
    assert (slope < 2 * np.pi / 0.04 * d_peak).all()
    # random N(0,1) shapes stay plausible heads
    rng = np.random.default_rng(0)
    for _ in range(4):
        b = np.zeros(400)
        b[:300] = rng.standard_normal(300)
        v = model["v_template"] + S @ b[:300]
        assert 0.2 < v[:, 1].max() - v[:, 1].min() < 0.29
        assert np.linalg.norm(v - model["v_template"], axis=1).max() < 0.035


def test_expression_components_are_localised(model: dict):
    E = model["shapedirs"][:, :, 300:]
    regions = model["expression_regions"]
    weights = model["region_weights"]
    assert len(regions) == 100 and set(regions) == set(EXPRESSION_REGIONS)
    peak = np.linalg.norm(E, axis=1).max(axis=0)
    assert (np.diff(peak) < 0).all() and 0.002 < peak[0] < 0.02
    part = model["vertex_part"]
    v = model["v_template"]
    for k, name in enumerate(regions):
        support = np.linalg.norm(E[:, :, k], axis=1) > 0
        assert not support[part >= LEFT_EYEBALL].any()
        assert (weights[name][support] > 0).all(), (k, name)
    # the regions are where their names say
    lm = _landmarks(model)
    centre = {n: (v * weights[n][:, None]).sum(0) / weights[n].sum() for n in EXPRESSION_REGIONS}
    assert np.linalg.norm(centre["mouth"][:2] - lm[48:68, :2].mean(0)) < 0.015
    assert np.linalg.norm(centre["left_eye"][:2] - lm[42:48, :2].mean(0)) < 0.01
    assert np.linalg.norm(centre["right_eye"][:2] - lm[36:42, :2].mean(0)) < 0.01
    assert centre["brows"][1] > lm[36:48, 1].mean() + 0.01
    assert centre["left_cheek"][0] > 0.03 and centre["right_cheek"][0] < -0.03
    # smooth: along every skin edge (the lips are not connected across the slit) no faster than a 1.5 cm wave
    f = model["f"].astype(np.int64)[model["face_part"] == SKIN]
    e = np.array(list(_edges(f)))
    length = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    slope = (np.linalg.norm(E[e[:, 0]] - E[e[:, 1]], axis=1) / length[:, None]).max(axis=0)
    assert (slope < 2 * np.pi / 0.015 * peak).all()
    # nothing in any region reaches the skull top or the neck base
    assert not (np.linalg.norm(E, axis=1).max(axis=1)[model["masks"]["boundary"]] > 0).any()


def test_pose_correctives_small_smooth_and_local(model: dict):
    P = model["posedirs"]
    assert np.abs(P).max() < 0.01
    assert (P[:, :, 18:] == 0).all()  # eye joints never move the skin
    assert (P[model["masks"]["boundary"]] == 0).all()
    assert np.abs(P[:, :, 0:9]).max() > 0 and np.abs(P[:, :, 9:18]).max() > 0  # neck and jaw correctives
    W = model["weights"]
    assert (np.abs(P[:, :, 9:18]).max(axis=(1, 2))[W[:, 2] == 0] == 0).all()  # jaw correctives on the jaw
    f = model["f"].astype(np.int64)[model["face_part"] == SKIN]
    e = np.array(list(_edges(f)))
    assert np.abs(P[e[:, 0]] - P[e[:, 1]]).max() < 0.003


def test_eyelids_close_the_eyes(model: dict):
    v, f = model["v_template"], model["f"].astype(np.int64)
    skin_f = f[model["face_part"] == SKIN]
    J = model["J"]
    part = model["vertex_part"]
    for key, joint, code in (("l_eyelid", 3, LEFT_EYEBALL), ("r_eyelid", 4, RIGHT_EYEBALL)):
        d = model["eyelids"][key]
        moved = np.linalg.norm(d, axis=1) > 0
        assert not moved[part != SKIN].any()
        assert (np.linalg.norm(v[moved] - J[joint], axis=1) < 0.03).all()
        front = v[part == code][:, 2].max()
        c = J[joint]
        probe = np.array([[c[0], c[1]], [c[0], c[1] + 0.004], [c[0] + 0.004, c[1]]])
        assert (_frontal_z(v, skin_f, probe) < front).all()  # open: the eyeball shows
        assert (_frontal_z(v + d, skin_f, probe) > front).all()  # closed: the lid covers it


# ------------------------------------------------------------------------------------------------------ UVs
def test_uv_layout_is_valid_and_without_overlaps(model: dict):
    vt, ft = model["uv"]["vt"], model["uv"]["ft"]
    assert ft.shape == model["f"].shape and ft.min() >= 0 and ft.max() < len(vt)
    assert vt.min() >= 0.0 and vt.max() <= 1.0
    t = vt[ft]
    area = 0.5 * (
        (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
        - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])
    )
    assert (area > 0).all()
    # rasterise at 1024^2: no texel centre lies strictly inside two triangles
    n = 1024
    cover = np.zeros((n, n), np.int32)
    p = t * n - 0.5  # texel centres at integers
    lo = np.floor(p.min(axis=1)).astype(int)
    hi = np.ceil(p.max(axis=1)).astype(int)
    for k in range(len(ft)):
        xs = np.arange(max(lo[k, 0], 0), min(hi[k, 0], n - 1) + 1)
        ys = np.arange(max(lo[k, 1], 0), min(hi[k, 1], n - 1) + 1)
        if not len(xs) or not len(ys):
            continue
        X, Y = np.meshgrid(xs, ys)
        a, b, c = p[k]
        w0 = (b[0] - a[0]) * (Y - a[1]) - (b[1] - a[1]) * (X - a[0])
        w1 = (c[0] - b[0]) * (Y - b[1]) - (c[1] - b[1]) * (X - b[0])
        w2 = (a[0] - c[0]) * (Y - c[1]) - (a[1] - c[1]) * (X - c[0])
        eps = 1e-9
        inside = (w0 > eps) & (w1 > eps) & (w2 > eps)
        cover[Y[inside], X[inside]] += 1
    assert cover.max() == 1
    assert (cover > 0).mean() > 0.3  # the atlas is used


# ------------------------------------------------------------------------------------------------ landmarks
def test_landmark_embeddings_are_on_the_surface(model: dict):
    F = len(model["f"])
    emb = model["landmark_embedding"]
    for fk, bk in (
        ("static_lmk_faces_idx", "static_lmk_bary_coords"),
        ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords"),
        ("full_lmk_faces_idx", "full_lmk_bary_coords"),
    ):
        fi, b = emb[fk], emb[bk]
        assert fi.min() >= 0 and fi.max() < F
        assert (model["face_part"][fi] == SKIN).all()
        assert b.min() >= 0.0 and b.max() <= 1.0
        np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(
        emb["full_lmk_faces_idx"][0, 17:], model["static_embedding"]["lmk_face_idx"]
    )
    np.testing.assert_array_equal(emb["full_lmk_faces_idx"][0, :17], emb["dynamic_lmk_faces_idx"][0])
    assert (
        len(YAW_BINS_DEG) == 79
        and YAW_BINS_DEG[0] == 0
        and YAW_BINS_DEG[39] == -39
        and YAW_BINS_DEG[78] == 39
    )


def test_landmarks_at_anatomical_places(model: dict):
    lm = _landmarks(model)
    J = model["J"]
    x, y = lm[:, 0], lm[:, 1]
    # eyes: corners on both sides of each eyeball, "right" = subject's right = -x
    assert x[36] < J[4, 0] < x[39] < 0 < x[42] < J[3, 0] < x[45]
    assert (np.abs(y[36:48] - J[3, 1]) < 0.01).all()
    assert y[37] > y[41] and y[38] > y[40] and y[43] > y[47] and y[44] > y[46]  # upper lids above lower
    # brows above the eyes, in order from the subject's right to left
    assert (y[17:27] > y[36:48].max() + 0.008).all()
    assert (np.diff(x[17:27]) > 0).all()
    # nose: bridge top to tip downwards, nostrils under the tip, 33 in the middle
    assert (np.diff(y[27:31]) < 0).all() and y[33] < y[30] and abs(x[33]) < 1e-6
    assert (np.diff(x[31:36]) > 0).all()
    # mouth: corners right (48) and left (54), upper lip above lower lip, below the nose
    assert x[48] < -0.015 and x[54] > 0.015 and x[60] < 0 < x[64]
    assert y[51] > y[62] >= y[66] > y[57] and y[51] < y[33]
    # jaw contour from the right ear round the chin to the left ear; chin lowest
    assert x[0] < x[4] < x[8] < x[12] < x[16] and abs(x[8]) < 0.003
    assert y[8] == y[:17].min() and y[8] < y[57]
    assert np.abs(lm[:17] * [-1, 1, 1] - lm[16::-1]).max() < 2e-3  # symmetric at yaw 0


def test_dynamic_contour_follows_yaw_symmetrically(model: dict):
    v, f = model["v_template"], model["f"].astype(np.int64)
    dyn = model["dynamic_embedding"]
    pts = np.einsum("bik,bikc->bic", dyn["lmk_b_coords"], v[f[dyn["lmk_face_idx"]]])  # [79, 17, 3]
    for yaw in (10, 25, 39):
        pos, neg = pts[39 + yaw], pts[yaw]  # yaw +a and -a
        np.testing.assert_allclose(pos * [-1, 1, 1], neg[::-1], atol=2e-3)
    # turning the head to its left (+yaw about y) moves the left-side contour towards the face centre
    assert pts[39 + 30, 12:, 0].mean() < pts[0, 12:, 0].mean() - 0.003
    assert len({tuple(r) for r in dyn["lmk_face_idx"].tolist()}) > 10  # the table really changes with yaw


# --------------------------------------------------------------------------------------------- determinism
def test_seeds_give_different_plausible_heads(model: dict):
    from headrecon.flame.procedural_geometry import build_head_geometry, sample_head_params

    # the template is the first thing drawn from the seed's generator (the full build takes seconds)
    same = build_head_geometry(sample_head_params(np.random.default_rng(0)))
    assert same.vertices.tobytes() == model["v_template"].tobytes()
    for seed in (1, 2):
        v = build_head_geometry(sample_head_params(np.random.default_rng(seed))).vertices
        assert v.shape != model["v_template"].shape or not np.array_equal(v, model["v_template"])
        assert 0.22 <= v[:, 1].max() - v[:, 1].min() <= 0.26
        assert 0.13 <= v[:, 0].max() - v[:, 0].min() <= 0.19
        assert 2000 <= len(v) <= 6000


def test_preview_png(procedural_flame_dir: Path, tmp_path: Path):
    from PIL import Image

    from headrecon.flame.preview import TILE_SIZE, render_preview

    out = render_preview(procedural_flame_dir, tmp_path / "preview.png", seed=0)
    img = np.asarray(Image.open(out))
    assert img.shape == (2 * TILE_SIZE, 5 * TILE_SIZE, 3)
    tiles = img.reshape(2, TILE_SIZE, 5, TILE_SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(10, -1, 3)
    covered = (tiles < 250).any(axis=-1).mean(axis=1)
    assert (covered > 0.2).all()  # a head in every tile
