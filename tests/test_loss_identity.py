"""ArcFace identity loss: ONNX (onnx2torch) and arcface_torch iresnet loaders on self-built files, alignment,
and the loss itself."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from headrecon.losses.identity import IdentityLoss, arcface_align, similarity_from_landmarks
from headrecon.nets.arcface import (
    ARCFACE_TEMPLATE_112,
    ArcFace,
    build_arcface,
    iresnet,
    load_arcface_onnx,
    load_iresnet,
)
from tests.pretrained_files import export_tiny_arcface_onnx, randomise_batchnorm


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("buffalo_l") / "w600k_r50.onnx"
    model = export_tiny_arcface_onnx(path)
    return path, model


@pytest.fixture(scope="module")
def onnx_arcface(onnx_file) -> ArcFace:
    return ArcFace.from_onnx(onnx_file[0])


def test_onnx_matches_onnxruntime_and_is_differentiable(onnx_file) -> None:
    ort = pytest.importorskip("onnxruntime")
    path, _ = onnx_file
    module, mean, std = load_arcface_onnx(path)
    assert (mean, std) == (127.5, 127.5)  # insightface's rule for non-MXNet graphs
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    out = module.eval()(x)
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-4, rtol=1e-4)

    arc = ArcFace(module, mean, std)
    img = torch.rand(2, 3, 112, 112, requires_grad=True)
    emb = arc(img)
    ref2 = sess.run(None, {sess.get_inputs()[0].name: ((img.detach() * 255 - 127.5) / 127.5).numpy()})[0]
    np.testing.assert_allclose(emb.detach().numpy(), ref2, atol=1e-4, rtol=1e-4)
    emb.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in arc.parameters())


def test_mxnet_style_graph_takes_raw_pixels() -> None:
    from onnx import TensorProto, helper

    from headrecon.nets.arcface import _onnx_input_normalisation

    def graph(*names: str):
        nodes = [helper.make_node("Identity", ["x"], ["x"], name=n) for n in names]
        vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        return helper.make_model(helper.make_graph(nodes, "g", [vi], [vi]))

    assert _onnx_input_normalisation(graph("_minus0", "_mul0", "conv0")) == (0.0, 1.0)
    assert _onnx_input_normalisation(graph("Conv_0", "Mul_1")) == (127.5, 127.5)


def test_iresnet_state_dict_layout_and_loading(tmp_path) -> None:
    torch.manual_seed(0)
    net = randomise_batchnorm(iresnet("r18"), 1).eval()
    sd = net.state_dict()
    # arcface_torch's key names (backbones/iresnet.py)
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "prelu.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.weight",
        "layer1.0.prelu.weight",
        "layer1.0.conv2.weight",
        "layer1.0.bn3.bias",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean",
        "layer4.1.conv2.weight",
        "bn2.weight",
        "fc.weight",
        "features.running_mean",
    ):
        assert key in sd, key
    assert "layer1.1.downsample.0.weight" not in sd
    assert sd["fc.weight"].shape == (512, 512 * 7 * 7)
    assert sd["layer1.0.conv2.weight"].shape == (64, 64, 3, 3)
    assert sum(1 for k in sd if k.endswith("conv1.weight")) == 1 + 8  # stem + 2 blocks x 4 stages
    path = tmp_path / "backbone.pth"
    torch.save(sd, path)

    arc = ArcFace.from_iresnet(path, arch="r18")
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        ref = net((x * 255 - 127.5) / 127.5)
    assert torch.allclose(arc(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="r50"):
        load_iresnet(path, arch="r50")


def test_missing_files_and_explicit_random(tmp_path, caplog) -> None:
    with pytest.raises(FileNotFoundError, match=r"w600k_r50\.onnx.*buffalo_l"):
        build_arcface(onnx_path=tmp_path / "models" / "buffalo_l" / "w600k_r50.onnx")
    with pytest.raises(FileNotFoundError, match="arcface_torch"):
        build_arcface(iresnet_path=tmp_path / "backbone.pth")
    with pytest.raises(ValueError, match="random_init"):
        build_arcface()
    with caplog.at_level(logging.WARNING):
        arc = build_arcface(arch="r18", random_init=True)
    assert "RANDOM" in caplog.text
    arc.train()
    assert not arc.training and not any(m.training for m in arc.modules())


def test_similarity_matches_skimage() -> None:
    skt = pytest.importorskip("skimage.transform")
    g = np.random.default_rng(0)
    lmk = np.array(ARCFACE_TEMPLATE_112) * 1.7 + g.normal(0, 2.0, (5, 2)) + np.array([30.0, 12.0])
    dst = np.array(ARCFACE_TEMPLATE_112)
    if hasattr(skt.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = skt.SimilarityTransform.from_estimate(lmk, dst)
    else:
        tform = skt.SimilarityTransform()
        tform.estimate(lmk, dst)
    mat = similarity_from_landmarks(torch.tensor(lmk)[None], torch.tensor(ARCFACE_TEMPLATE_112))
    np.testing.assert_allclose(mat[0].numpy(), tform.params[:2], atol=1e-4)


def test_alignment_matches_opencv_warp() -> None:
    cv2 = pytest.importorskip("cv2")
    h = w = 160
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(xx / 9.0), np.cos(yy / 7.0), np.sin((xx + yy) / 13.0)], -1) * 0.5 + 0.5
    # landmarks: the template rotated by 10 degrees, scaled by 1.3 and shifted
    a = np.deg2rad(10.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * 1.3
    lmk = np.array(ARCFACE_TEMPLATE_112) @ rot.T + np.array([15.0, 5.0])
    mat = similarity_from_landmarks(torch.tensor(lmk)[None], torch.tensor(ARCFACE_TEMPLATE_112))[0].numpy()
    ref = cv2.warpAffine(img, mat, (112, 112), flags=cv2.INTER_LINEAR, borderValue=0.0)
    ours = arcface_align(
        torch.from_numpy(img).permute(2, 0, 1)[None], torch.tensor(lmk, dtype=torch.float32)[None]
    )
    ours = ours[0].permute(1, 2, 0).numpy()
    inner = (slice(4, -4), slice(4, -4))  # borders differ only in how black padding is blended
    np.testing.assert_allclose(ours[inner], ref[inner], atol=2e-2)
    # the landmarks land on the template: warp the landmark points themselves
    pts = lmk @ mat[:, :2].T + mat[:, 2]
    np.testing.assert_allclose(pts, np.array(ARCFACE_TEMPLATE_112), atol=1e-3)


def test_identity_loss_zero_decreasing_and_gradients(onnx_arcface) -> None:
    loss_fn = IdentityLoss(onnx_arcface)
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 128, 128, generator=g)
    other = torch.rand(2, 3, 128, 128, generator=g)
    assert loss_fn(target, target).abs().item() < 1e-5
    with torch.no_grad():
        values = [loss_fn((1 - t) * target + t * other, target).item() for t in (0.8, 0.4, 0.2, 0.1, 0.05)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values

    render = ((1 - 0.3) * target + 0.3 * other).requires_grad_(True)
    tgt = target.clone().requires_grad_(True)
    lmk = torch.tensor(ARCFACE_TEMPLATE_112).expand(2, 5, 2) + 8.0
    mask = torch.ones(2, 1, 128, 128)
    loss = loss_fn(render, tgt, mask=mask, landmarks=lmk)
    assert loss.ndim == 0 and 0 < loss.item() <= 2
    loss.backward()
    assert render.grad is not None and render.grad.abs().sum() > 0
    assert tgt.grad is None  # target embeddings are detached
    loss_fn.train()
    assert not any(m.training for m in loss_fn.modules())


def test_same_embedding_as_insightface_pipeline(onnx_file, onnx_arcface) -> None:
    """insightface's own ArcFaceONNX on a BGR uint8 crop (its norm_crop + get_feat path) and our ArcFace on the
    same crop as RGB in [0, 1] agree: same channel order and normalisation; same landmark template too."""
    arcface_onnx = pytest.importorskip("insightface.model_zoo.arcface_onnx")
    face_align = pytest.importorskip("insightface.utils.face_align")
    np.testing.assert_allclose(np.array(ARCFACE_TEMPLATE_112), face_align.arcface_dst, atol=0)
    theirs = arcface_onnx.ArcFaceONNX(model_file=str(onnx_file[0]))
    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    ref = theirs.get_feat([bgr[0], bgr[1]])
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        ours = onnx_arcface(rgb)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4, rtol=1e-4)


def test_config_friendly_identity_loss_from_files(tmp_path):
    import pytest

    from headrecon.losses.identity import ArcFaceIdentityLoss

    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ArcFaceIdentityLoss(onnx_path=str(tmp_path / "missing.onnx"))
    loss = ArcFaceIdentityLoss(arch="r18", random_init=True)
    x = torch.rand(1, 3, 64, 64)
    assert loss(x, x).abs().item() < 1e-5
