"""The FLAME estimator network: outputs, parameterisations, rotations, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headrecon.flame.params import FlameParams
from headrecon.nets.estimator import OUTPUT_NAMES, QUERY_GROUPS, EstimatorOutput, FlameEstimatorNet
from headrecon.nets.rotation6d import (
    IDENTITY_6D,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_axis_angle,
    rotation_6d_to_matrix,
)
from tests.farl_files import TINY_TIMM_KWARGS


def _net(**kw) -> FlameEstimatorNet:
    torch.manual_seed(0)
    return FlameEstimatorNet(init="deferred", timm_kwargs=TINY_TIMM_KWARGS, **kw)


def test_initial_prediction_is_neutral_head():
    net = _net(head_init="zero")
    x = torch.rand(3, 3, 224, 224)
    out = net(x)
    assert isinstance(out, EstimatorOutput) and isinstance(out.flame, FlameParams)
    f = out.flame
    assert f.shape.shape == (3, 300) and f.expression.shape == (3, 100)
    for name in ("shape", "expression", "translation", *[n for n in OUTPUT_NAMES if n.endswith("rotation")]):
        assert torch.count_nonzero(getattr(f, name)) == 0, name
    torch.testing.assert_close(f.eyelids, torch.full((3, 2), 0.02))
    assert out.lighting.shape == (3, 27) and torch.count_nonzero(out.lighting) == 0
    assert out.identity.shape == (3, 1024)
    assert (out.identity[0] - out.identity[1]).abs().max() > 1e-4  # image-dependent from the start


def test_default_heads_start_near_neutral_and_image_dependent():
    net = _net()
    f = net(torch.rand(3, 3, 224, 224)).flame
    for name in ("shape", "expression", "jaw_rotation", "global_rotation"):
        v = getattr(f, name)
        assert 0 < v.abs().max() < 1.5, name  # PyTorch's init: a few tenths, not the exact neutral head
        assert (v[0] - v[1]).abs().max() > 0, name
    with pytest.raises(ValueError, match="head_init"):
        _net(head_init="small")


def test_configurable_sizes_and_tuple_roundtrip():
    net = _net(n_shape=50, n_expression=20, identity_dim=96, lighting_dim=8, img_size=112)
    out = net(torch.rand(2, 3, 112, 112))
    assert out.flame.shape.shape == (2, 50) and out.flame.expression.shape == (2, 20)
    assert out.lighting.shape == (2, 8) and out.identity.shape == (2, 96)
    back = EstimatorOutput.from_tuple(out.to_tuple())
    assert all(torch.equal(a, b) for a, b in zip(back.to_tuple(), out.to_tuple()))
    assert len(out.to_tuple()) == len(OUTPUT_NAMES)


def test_normalisation_uses_backbone_mean_std():
    net = _net()
    mean = torch.tensor(net.backbone.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(net.backbone.pretrained_cfg["std"]).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(net.normalize(x), (x - mean) / std)
    assert "pixel_mean" not in net.state_dict()  # not persistent: checkpoints stay backbone-agnostic


def test_query_tokens_read_the_image_and_batch_items_are_independent():
    net = _net()
    for p in net.heads.parameters():
        torch.nn.init.normal_(p, std=0.05)
    net.eval()
    x = torch.rand(3, 3, 224, 224)
    tok = net.forward_tokens(x)
    assert tok.shape == (3, len(QUERY_GROUPS), 64)
    assert (tok[0] - tok[1]).abs().max() > 1e-3
    one = net(x[1:2]).to_tuple()
    for a, b in zip(net(x).to_tuple(), one):
        torch.testing.assert_close(a[1:2], b, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter_and_are_finite():
    net = _net()
    out = net(torch.rand(2, 3, 224, 224))
    loss = sum(t.square().sum() + t.sum() for t in out.to_tuple())
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # the zero-initialised last layers still get gradient (through the identity rotation at init too)
    assert net.heads["pose"][2].weight.grad.abs().sum() > 0
    assert net.heads["shape"][2].weight.grad.abs().sum() > 0


def test_parameterisations():
    net = _net(translation_scale=0.25, eyelid_init=0.1, head_init="zero")
    D = 64
    tok = torch.zeros(1, len(QUERY_GROUPS), D)
    last = net.heads["pose"][2]
    with torch.no_grad():
        last.bias.zero_()
        last.bias[-3:] = torch.tensor([1.0, -2.0, 0.5])  # translation output
        # jaw: second 6D row (0, cos, -sin) -> rotation about x by +30 degrees (rows of R_x)
        c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
        jaw = 2 * 6
        last.bias[jaw : jaw + 6] = torch.tensor([0.0, 0.0, 0.0, 0.0, c - 1.0, -s])
    out = net.decode(tok)
    torch.testing.assert_close(out.flame.translation, torch.tensor([[0.25, -0.5, 0.125]]))
    torch.testing.assert_close(out.flame.jaw_rotation, torch.tensor([[math.radians(30), 0.0, 0.0]]))
    torch.testing.assert_close(out.flame.eyelids, torch.full((1, 2), 0.1))


@pytest.mark.parametrize("opening_deg", [30.0, -20.0])
def test_jaw_opening_relu_is_smirks_parameterisation(opening_deg):
    """jaw_opening='relu': the opening (x) is relu'd, a sideways twist is clamped to jaw_side_max; 'free' keeps
    both. The jaw is set through the pose head's bias as a rotation about x, then about z."""
    a = math.radians(opening_deg)
    # 0.4 rad sideways: past the 0.2 clamp
    twist = Rotation.from_euler("x", a) * Rotation.from_euler("z", 0.4)
    d6 = matrix_to_rotation_6d(torch.tensor(twist.as_matrix(), dtype=torch.float32)[None])[0]
    expected_free = torch.tensor(twist.as_rotvec(), dtype=torch.float32)[None]
    tok = torch.zeros(1, len(QUERY_GROUPS), 64)
    outs = {}
    for mode in ("free", "relu"):
        net = _net(head_init="zero", jaw_opening=mode)
        with torch.no_grad():
            net.heads["pose"][2].bias[12:18] = d6 - torch.tensor(IDENTITY_6D)
        outs[mode] = net.decode(tok).flame.jaw_rotation
    torch.testing.assert_close(outs["free"], expected_free, atol=1e-5, rtol=0)
    relu = outs["relu"].detach()
    assert relu[0, 0].item() == pytest.approx(max(expected_free[0, 0].item(), 0.0), abs=1e-6)
    assert relu[0, 1].item() == pytest.approx(expected_free[0, 1].item(), abs=1e-6)  # inside the clamp
    assert relu[0, 2].item() == pytest.approx(0.2)  # clamped
    # gradients flow through an open jaw; a closed one stops at zero (SMIRK's relu)
    net = _net(jaw_opening="relu")
    net.decode(torch.randn(3, len(QUERY_GROUPS), 64)).flame.jaw_rotation[:, 0].sum().backward()
    assert net.heads["pose"][2].weight.grad is not None
    with pytest.raises(ValueError, match="jaw_opening"):
        _net(jaw_opening="clamp")


def test_rotation_conversions_against_scipy():
    rng = np.random.default_rng(0)
    R = Rotation.random(64, random_state=1)
    aa = torch.tensor(R.as_rotvec(), dtype=torch.float64)
    mats = torch.tensor(R.as_matrix(), dtype=torch.float64)
    torch.testing.assert_close(axis_angle_to_matrix(aa), mats)
    torch.testing.assert_close(matrix_to_axis_angle(mats), aa)
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(mats)), mats)
    # a non-orthonormal 6D input -> Gram-Schmidt gives a proper rotation
    d6 = torch.tensor(rng.normal(size=(16, 6)))
    M = rotation_6d_to_matrix(d6)
    torch.testing.assert_close(M @ M.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(16, 3, 3))
    torch.testing.assert_close(torch.linalg.det(M), torch.ones(16, dtype=torch.float64))
    # near pi and near zero
    for angle in (math.pi - 1e-4, 1e-8, 0.0):
        v = torch.tensor([[0.0, angle, 0.0]], dtype=torch.float64)
        torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(v)), v, atol=1e-7, rtol=0)


def test_rotation_gradient_at_identity():
    d6 = torch.tensor([IDENTITY_6D], requires_grad=True)
    aa = rotation_6d_to_axis_angle(d6)
    assert torch.count_nonzero(aa) == 0
    J = torch.autograd.functional.jacobian(rotation_6d_to_axis_angle, d6)[0, :, 0, :]  # [3, 6]
    assert torch.isfinite(J).all()
    # 6D = the first two rows of R: R[1,2] = -sin about x, R[0,1] = -sin about z, R[0,2] = +sin about y
    torch.testing.assert_close(J[:, 5], torch.tensor([-1.0, 0.0, 0.0]))
    torch.testing.assert_close(J[:, 1], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(J[:, 2], torch.tensor([0.0, 1.0, 0.0]))
    J2 = torch.autograd.functional.jacobian(axis_angle_to_matrix, torch.zeros(3))
    assert torch.isfinite(J2).all() and J2.abs().sum() > 0


def test_non_vit_backbone_is_refused():
    with pytest.raises(TypeError, match="VisionTransformer"):
        FlameEstimatorNet(backbone="resnet18", init="deferred")
    with pytest.raises(ValueError, match="init"):
        FlameEstimatorNet(init="imagenet", timm_kwargs=TINY_TIMM_KWARGS)


def test_real_vit_b16_layout():
    """The default backbone (CLIP ViT-B/16 layout, random init): one image, output shapes and FLOPs."""
    torch.manual_seed(0)
    net = FlameEstimatorNet(init="deferred").eval()
    assert net.backbone.embed_dim == 768 and len(net.backbone.blocks) == 12
    with torch.no_grad():
        out = net(torch.rand(1, 3, 224, 224))
    assert out.flame.shape.shape == (1, 300) and out.identity.shape == (1, 1024)
    # ViT-B/16 backbone 33.7 GFLOP at 197 tokens (attention included); 5 query tokens and the heads: 36.06
    assert 35e9 < net.num_flops(1) < 37e9


def test_flop_count_includes_cpu_attention():
    """SDPA's CPU kernel is counted like the explicit softmax(QK^T)V path (same FLOPs)."""
    from headrecon.nets.bench_estimator import _attention
    from headrecon.nets.estimator import count_flops

    net = _net().eval()
    x = torch.rand(2, 3, 224, 224)
    with _attention(net, "sdpa"):
        fused = count_flops(net, x)
    with _attention(net, "math"):
        math_ = count_flops(net, x)
    assert fused == math_ > 0
    assert net.backbone.blocks[0].attn.fused_attn  # restored


def test_bench_estimator_runs_tiny(capsys):
    import json

    from headrecon.nets.bench_estimator import bench_estimator

    rows = bench_estimator(
        [
            "--timm-kwargs", json.dumps(TINY_TIMM_KWARGS), "--batch-sizes", "2", "--repeats", "2",
            "--warmup", "1", "--min-repeat-s", "0", "--matmul-size", "256", "--matmul-min-s", "0.05",
            "--device", "cpu",
            "--attention", "sdpa", "math",
        ]
    )  # fmt: skip
    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert lines == rows and len(rows) == 4  # 2 attention x 2 dtypes
    for r in rows:
        assert r["images_per_s"] > 0 and r["matmul_gflop_s"] > 0 and 0 < r["fraction_of_matmul"]
        assert r["gflop_per_image"] == rows[0]["gflop_per_image"]


def test_fast_quickgelu_mlp_is_exact():
    """QuickGeluMlp (alpha/beta-folded QuickGELU) = timm's Mlp: same keys, outputs and gradients."""
    from headrecon.nets.estimator import QuickGeluMlp

    fast, ref = _net(), _net(fast_mlp=False)
    assert isinstance(fast.backbone.blocks[0].mlp, QuickGeluMlp)
    assert not isinstance(ref.backbone.blocks[0].mlp, QuickGeluMlp)
    assert list(fast.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(fast.state_dict())
    for p in list(fast.heads.parameters()):
        torch.nn.init.normal_(p, std=0.1)
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(2, 3, 224, 224)
    outs = []
    for net in (fast, ref):
        out = net(x)
        sum(t.square().sum() for t in out.to_tuple()).backward()
        outs.append(out)
    for a, b in zip(outs[0].to_tuple(), outs[1].to_tuple()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    g_fast = dict(fast.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(g_fast[name].grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)
    with torch.inference_mode():  # in-place silu path
        for a, b in zip(fast(x).to_tuple(), outs[1].to_tuple()):
            torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_outputs_fp32():
    net = _net(head_init="zero").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = net(torch.rand(1, 3, 224, 224))
    assert all(t.dtype == torch.float32 for t in out.to_tuple())
    assert torch.count_nonzero(out.flame.global_rotation) == 0


def test_conv_stem_keeps_the_token_grid_and_trains():
    import torchvision

    from headrecon.nets.estimator import conv_stem

    stem = conv_stem(192, 8)  # ResNet-18 up to layer2, then a 1x1 projection
    assert stem(torch.rand(2, 3, 64, 64)).shape == (2, 192, 8, 8)
    r18 = torchvision.models.resnet18()
    r18_trunk = [r18.conv1, r18.bn1, r18.layer1, r18.layer2]
    n_params = sum(p.numel() for m in r18_trunk for p in m.parameters())
    assert sum(p.numel() for p in stem[:-1].parameters()) == n_params
    assert conv_stem(64, 16, base_channels=16)(torch.rand(1, 3, 64, 64)).shape == (1, 64, 4, 4)
    for bad in (6, 2, (8, 4)):
        with pytest.raises(ValueError, match="power-of-two"):
            conv_stem(64, bad)

    net = _net(stem="conv", head_init="zero")
    assert isinstance(net.backbone.patch_embed.proj, torch.nn.Sequential)
    out = net(torch.rand(2, 3, 224, 224))
    for name in ("shape", "jaw_rotation", "translation"):  # still the neutral head at initialisation
        assert torch.count_nonzero(getattr(out.flame, name)) == 0
    sum(t.square().sum() + t.sum() for t in out.to_tuple()).backward()
    assert all(p.grad is not None for p in net.backbone.patch_embed.proj.parameters())
    with pytest.raises(ValueError, match="stem='conv'"):
        FlameEstimatorNet(init="farl", stem="conv", timm_kwargs=TINY_TIMM_KWARGS)
    with pytest.raises(ValueError, match="stem must be"):
        _net(stem="resnet")
