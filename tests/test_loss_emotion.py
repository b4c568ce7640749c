"""EMOCA emotion loss: the caffe-style ResNet-50 loads from an EMOCA-layout Lightning checkpoint and matches an
independent torchvision-based forward; the loss behaves."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch

from headrecon.losses.emotion import EmotionLoss, build_emotion_net
from headrecon.nets.emotion_net import EmotionResNet50, load_emotion_resnet50
from tests.pretrained_files import randomise_batchnorm, save_emoca_checkpoint, torchvision_caffe_resnet50


@pytest.fixture(scope="module")
def emoca_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    src = randomise_batchnorm(EmotionResNet50(), 0)
    state = src.state_dict()
    path = tmp_path_factory.mktemp("ResNet50") / "checkpoints" / "deca-epoch=03-val_loss_total=1.23.ckpt"
    path.parent.mkdir(parents=True)
    save_emoca_checkpoint(path, state)
    return path, state


@pytest.fixture(scope="module")
def emotion_net(emoca_ckpt) -> EmotionResNet50:
    return load_emotion_resnet50(emoca_ckpt[0])


def test_loads_emoca_checkpoint_and_matches_reference(emotion_net, emoca_ckpt) -> None:
    path, state = emoca_ckpt
    # the file pickles a config object of a package that is not importable, as EMOCA's checkpoints do
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    for k, v in emotion_net.state_dict().items():
        assert torch.equal(v, state[k]), k
    ref_net = torchvision_caffe_resnet50(state)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = emotion_net(x)
        ref = ref_net(x)
    assert ours.shape == (1, 2048)
    scale = ref.abs().max().clamp_min(1e-6)
    assert ((ours - ref).abs().max() / scale).item() < 1e-4
    # the layout matters: the stride on the 3x3 conv (torchvision's layout) gives different features
    tv_layout = torchvision_caffe_resnet50(state)
    for layer in (tv_layout.layer2, tv_layout.layer3, tv_layout.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (1, 1), (2, 2)
    with torch.no_grad():
        assert ((tv_layout(x) - ref).abs().max() / scale).item() > 1e-2


def test_plain_state_dict_prefix_and_errors(tmp_path, emoca_ckpt) -> None:
    _, state = emoca_ckpt
    plain = tmp_path / "resnet50_backbone.pth"
    torch.save(state, plain)
    net = load_emotion_resnet50(plain, prefix="")
    assert torch.equal(net.conv1.weight, state["conv1.weight"])
    with pytest.raises(ValueError, match="prefix 'backbone.'"):
        load_emotion_resnet50(plain)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt.*EMOCA"):
        build_emotion_net(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="random_init"):
        build_emotion_net()


def test_random_init_is_explicit_and_logged(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        net = build_emotion_net(random_init=True)
    assert "RANDOM" in caplog.text
    net.train()
    assert not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())


def test_emotion_loss_zero_decreasing_and_gradients() -> None:
    # the loss behaviour does not depend on depth: one bottleneck per stage keeps this fast
    torch.manual_seed(0)
    loss_fn = EmotionLoss(EmotionResNet50(layers=(1, 1, 1, 1)))
    g = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, 112, 112, generator=g)  # resized to 224 inside
    noise = torch.randn(1, 3, 112, 112, generator=g)
    other = torch.rand(1, 3, 112, 112, generator=g)
    with torch.no_grad():
        assert loss_fn(target, target).item() < 1e-10
        values = [loss_fn(target + t * noise, target).item() for t in (0.3, 0.1, 0.03, 0.01)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values

    render = ((1 - 0.5) * target + 0.5 * other).requires_grad_(True)
    tgt = target.clone().requires_grad_(True)
    loss = loss_fn(render, tgt, mask=torch.ones(1, 1, 112, 112))
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert render.grad is not None and render.grad.abs().sum() > 0
    assert tgt.grad is None
    loss_fn.train()
    assert not any(m.training for m in loss_fn.modules())


def test_config_friendly_emotion_loss_needs_a_file_or_explicit_random(tmp_path):
    import pytest

    from headrecon.losses.emotion import EmocaEmotionLoss

    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        EmocaEmotionLoss(str(tmp_path / "nope.ckpt"))
