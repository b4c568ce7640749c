"""FlameModel (smplx FLAMELayer) against an independent linear-blend-skinning implementation."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headrecon.flame.assets import FlameAssets
from headrecon.flame.model import FlameModel
from headrecon.flame.params import NOW_LANDMARK_INDICES, FlameParams
from tests.flame_files import write_flame_folder


def reference_lbs(a: FlameAssets, p: dict[str, np.ndarray], b: int) -> tuple[np.ndarray, np.ndarray]:
    """Textbook FLAME in numpy float64, written from the FLAME paper (not from smplx): returns verts, joints."""
    n_id = a.n_shape
    dirs = np.concatenate(
        [a.shapedirs[:, :, : len(p["shape"][b])], a.shapedirs[:, :, n_id : n_id + p["expression"].shape[1]]],
        2,
    )
    coeffs = np.concatenate([p["shape"][b], p["expression"][b]])
    v_shaped = a.v_template + dirs @ coeffs
    if a.eyelids is not None:
        v_shaped = v_shaped + p["eyelids"][b, 0] * a.eyelids[0] + p["eyelids"][b, 1] * a.eyelids[1]
    J = a.J_regressor @ v_shaped
    names = ("global_rotation", "neck_rotation", "jaw_rotation", "left_eye_rotation", "right_eye_rotation")
    R = [Rotation.from_rotvec(p[n][b]).as_matrix() for n in names]
    pose_feature = np.concatenate([(R[j] - np.eye(3)).reshape(-1) for j in range(1, 5)])
    v_posed = v_shaped + a.posedirs @ pose_feature
    G = [None] * 5
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = R[j]
        parent = a.parents[j]
        local[:3, 3] = J[j] - (J[parent] if parent >= 0 else 0)
        G[j] = local if parent < 0 else G[parent] @ local
    posed_joints = np.stack([G[j][:3, 3] for j in range(5)])
    skin = np.zeros((len(v_posed), 4, 4))
    for j in range(5):
        Gj = G[j].copy()
        Gj[:3, 3] -= Gj[:3, :3] @ J[j]  # remove the rest-pose joint location
        skin += a.weights[:, j, None, None] * Gj
    vh = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
    verts = np.einsum("vij,vj->vi", skin, vh)[:, :3] + p["translation"][b]
    return verts, posed_joints + p["translation"][b]


def _random_params(B, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = FlameParams.random(B, generator=g, dtype=dtype, rotation_std=0.4)
    return p.replace(translation=torch.randn(B, 3, generator=g, dtype=dtype) * 0.05)


@pytest.mark.parametrize("source", ["tiny", "procedural"])
def test_forward_matches_independent_lbs(tmp_path, tiny_flame, source, request):
    folder = (
        write_flame_folder(tmp_path / "flame", tiny_flame)
        if source == "tiny"
        else request.getfixturevalue("procedural_flame_dir")
    )
    assets = FlameAssets.load(folder)
    model = FlameModel(assets, dtype=torch.float64)
    params = _random_params(3, seed=7)
    out = model(params)
    pn = params.to_numpy()
    for b in range(3):
        verts, joints = reference_lbs(assets, pn, b)
        assert np.abs(out.vertices[b].numpy() - verts).max() <= 1e-5
        assert np.abs(out.joints[b].numpy() - joints).max() <= 1e-5


def test_landmarks_follow_embeddings(tmp_path, tiny_flame):
    assets = FlameAssets.load(write_flame_folder(tmp_path / "flame", tiny_flame))
    model = FlameModel(assets, dtype=torch.float64)
    params = _random_params(2, seed=3).replace(
        global_rotation=torch.zeros(2, 3, dtype=torch.float64),
        neck_rotation=torch.zeros(2, 3, dtype=torch.float64),
    )
    out = model(params)
    v = out.vertices.numpy()
    f = assets.faces
    lm = assets.landmarks
    static = np.einsum("bkcd,kc->bkd", v[:, f[lm.static_faces]], lm.static_bary)
    np.testing.assert_allclose(out.landmarks51.numpy(), static, atol=1e-10)
    np.testing.assert_allclose(out.landmarks68[:, 17:].numpy(), static, atol=1e-10)
    # zero yaw -> contour bin 0 (smplx / FLAME convention)
    contour = np.einsum("bkcd,kc->bkd", v[:, f[lm.dynamic_faces[0]]], lm.dynamic_bary[0])
    np.testing.assert_allclose(out.landmarks68[:, :17].numpy(), contour, atol=1e-10)
    np.testing.assert_allclose(
        out.landmarks_now7.numpy(), out.landmarks68[:, list(NOW_LANDMARK_INDICES)].numpy()
    )
    assert out.landmarks68.shape == (2, 68, 3)


def test_eyelids_and_batch_sizes(tmp_path, tiny_flame):
    assets = FlameAssets.load(write_flame_folder(tmp_path / "flame", tiny_flame))
    model = FlameModel(assets)
    for B in (1, 5):
        out = model(FlameParams.zeros(B))
        assert out.vertices.shape == (B, assets.num_vertices, 3)
        assert out.vertices.dtype == torch.float32
    p = FlameParams.zeros(1)
    closed = model(p.replace(eyelids=torch.tensor([[1.0, 0.0]]))).vertices
    delta = (closed - model(p).vertices)[0].numpy()
    np.testing.assert_allclose(delta, assets.eyelids[0], atol=1e-6)


def test_eyelids_ignored_without_blendshapes(tmp_path, tiny_flame, caplog):
    assets = FlameAssets.load(write_flame_folder(tmp_path / "flame", tiny_flame, eyelids=False))
    model = FlameModel(assets)
    p = FlameParams.zeros(1)
    a = model(p).vertices
    b = model(p.replace(eyelids=torch.ones(1, 2))).vertices
    assert torch.equal(a, b)
    assert "no eyelid blendshapes" in caplog.text


def test_gradients_flow_to_all_parameters(tmp_path, tiny_flame):
    model = FlameModel(FlameAssets.load(write_flame_folder(tmp_path / "flame", tiny_flame)))
    p = FlameParams.random(2, generator=torch.Generator().manual_seed(0)).apply(lambda t: t.requires_grad_())
    out = model(p)
    (out.vertices.square().sum() + out.landmarks68.square().sum()).backward()
    for name, t in p.to_dict().items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_fewer_components_and_validation(tmp_path, tiny_flame):
    assets = FlameAssets.load(write_flame_folder(tmp_path / "flame", tiny_flame))
    small = FlameModel(assets, n_shape=50, n_expression=20, dtype=torch.float64)
    full = FlameModel(assets, dtype=torch.float64)
    p = _random_params(2, seed=1)
    p_small = p.replace(shape=p.shape[:, :50], expression=p.expression[:, :20])
    p_trunc = p.replace(
        shape=torch.cat([p.shape[:, :50], torch.zeros(2, 250, dtype=torch.float64)], 1),
        expression=torch.cat([p.expression[:, :20], torch.zeros(2, 80, dtype=torch.float64)], 1),
    )
    torch.testing.assert_close(small(p_small).vertices, full(p_trunc).vertices)
    with pytest.raises(ValueError, match="n_shape"):
        FlameModel(assets, n_shape=400)
    with pytest.raises(ValueError, match="FlameParams.jaw_rotation"):
        p.replace(jaw_rotation=torch.zeros(2, 4))


def test_module_moves_with_to_and_state_dict(tmp_path, tiny_flame):
    model = FlameModel(FlameAssets.load(write_flame_folder(tmp_path / "flame", tiny_flame)))
    m64 = model.to(torch.float64)
    out = m64(FlameParams.zeros(1, dtype=torch.float64))
    assert out.vertices.dtype == torch.float64
    assert list(model.parameters()) == []
    assert model.state_dict() == {}  # FLAME's arrays never end up in checkpoints
