"""LPIPS-VGG perceptual loss: the loader really reads a torchvision VGG-16 file; the loss behaves."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
import torchvision

from headrecon.losses.perceptual import LPIPSLoss, build_lpips_vgg, load_vgg16_features

_CONV_IDX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_SLICE_OF = {
    i: k for k, (a, b) in enumerate(((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)), 1) for i in range(a, b)
}


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory, torch_home) -> tuple[Path, dict]:
    """A random-init torchvision VGG-16 state dict saved as torchvision's file would be (classifier included)."""
    torch.manual_seed(0)
    state = torchvision.models.vgg16().state_dict()
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, {k: v for k, v in state.items() if k.startswith("features.")}


@pytest.fixture(scope="module")
def lpips_loss(vgg_file) -> LPIPSLoss:
    return LPIPSLoss(vgg_file[0])


def test_loader_really_loads_the_vgg_weights(lpips_loss, vgg_file, torch_home) -> None:
    _, feats = vgg_file
    net = lpips_loss.lpips.net
    for i in _CONV_IDX:
        conv = getattr(net, f"slice{_SLICE_OF[i]}").get_submodule(str(i))
        assert torch.equal(conv.weight, feats[f"features.{i}.weight"])
        assert torch.equal(conv.bias, feats[f"features.{i}.bias"])
    # lpips' shipped linear heads are loaded (non-negative calibrated weights, not the default init)
    assert all(bool((lin.model[-1].weight >= 0).all()) for lin in lpips_loss.lpips.lins)
    # nothing was fetched into TORCH_HOME
    assert not any(torch_home.rglob("*.pth"))


def test_legacy_serialisation_is_read(tmp_path, vgg_file) -> None:
    _, feats = vgg_file
    path = tmp_path / "legacy.pth"
    torch.save(feats, path, _use_new_zipfile_serialization=False)
    loaded = load_vgg16_features(path)
    assert set(loaded) == set(feats)
    assert all(torch.equal(loaded[k], feats[k]) for k in feats)


def test_missing_file_and_no_silent_random(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*download\.pytorch\.org"):
        LPIPSLoss(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="random_init"):
        build_lpips_vgg(None)


def test_random_init_is_explicit_and_logged(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        model = build_lpips_vgg(None, random_init=True)
    assert "RANDOM" in caplog.text
    assert not any(p.requires_grad for p in model.parameters())


def test_lpips_zero_for_identical_and_decreasing(lpips_loss) -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 3, 32, 32, generator=g)
    other = torch.rand(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        assert lpips_loss(target, target).abs().item() < 1e-6
        values = [lpips_loss((1 - t) * target + t * other, target).item() for t in (0.8, 0.4, 0.2, 0.05)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] > 0


def test_frozen_eval_mask_and_gradient(lpips_loss) -> None:
    lpips_loss.train()
    assert not lpips_loss.training and not lpips_loss.lpips.training
    assert not any(m.training for m in lpips_loss.modules())
    assert not any(p.requires_grad for p in lpips_loss.parameters())
    g = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, 32, 32, generator=g)
    render = torch.rand(1, 3, 32, 32, generator=g).requires_grad_(True)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    loss = lpips_loss(render, target, mask)
    assert loss.ndim == 0
    loss.backward()
    assert render.grad is not None and render.grad.abs().sum() > 0
    assert render.grad[..., :4, :].abs().sum() == 0  # outside the mask nothing counts
    # differences outside the mask do not change the loss
    outside = target.clone()
    outside[..., :4, :] = 1 - outside[..., :4, :]
    assert lpips_loss(outside, target, mask).item() < 1e-6


def test_equals_lpips_own_loading_path(lpips_loss, vgg_file, torch_home) -> None:
    """With the same file where lpips/torchvision would look for it, lpips' own model gives the same distances."""
    import warnings

    import lpips

    ckpt_dir = torch_home / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    link = ckpt_dir / "vgg16-397923af.pth"
    link.symlink_to(vgg_file[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            reference = lpips.LPIPS(net="vgg", verbose=False).eval()
    finally:
        link.unlink()
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(2, 1, 3, 32, 32, generator=g)
    with torch.no_grad():
        ours = lpips_loss(x, y)
        ref = reference(x, y, normalize=True).mean()
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)
