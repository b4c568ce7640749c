"""FrozenDINOv2: loading from local files (timm and Meta layouts), freezing, token shapes, error messages."""

import logging

import pytest
import torch

from headrecon.nets.dinov2 import FrozenDINOv2

NAME = "vit_small_patch14_dinov2.lvd142m"
TINY = dict(depth=2)  # ViT-S/14 width, 2 blocks: small and fast


@pytest.fixture(scope="module")
def source() -> FrozenDINOv2:
    torch.manual_seed(0)
    return FrozenDINOv2(model_name=NAME, image_size=56, random_init=True, model_kwargs=TINY)


def test_loads_timm_and_meta_layout_files(source: FrozenDINOv2, tmp_path) -> None:
    sd = source.model.state_dict()
    timm_file = tmp_path / "timm_layout.pth"
    torch.save(sd, timm_file)
    meta_file = tmp_path / "dinov2_vits14_pretrain.pth"  # Meta's layout: same keys plus a mask token
    torch.save({**sd, "mask_token": torch.zeros(1, sd["cls_token"].shape[-1])}, meta_file)
    images = torch.rand(2, 3, 70, 63)
    ref = source(images)
    assert ref.shape == (2, 16, 384)  # 56 / 14 = 4 -> 4 x 4 patch tokens, no class token
    for f in (timm_file, meta_file):
        loaded = FrozenDINOv2(weights=f, model_name=NAME, image_size=56, model_kwargs=TINY)
        torch.testing.assert_close(loaded(images), ref)
    # A file with another patch grid: timm resamples the position embedding (4x4 -> 5x5 here).
    other = FrozenDINOv2(weights=timm_file, model_name=NAME, image_size=70, model_kwargs=TINY)
    assert other(images).shape == (2, 25, 384)


def test_frozen_and_always_eval(source: FrozenDINOv2) -> None:
    wrapper = torch.nn.Sequential(source)
    wrapper.train()
    assert not source.training and not source.model.training
    assert all(not p.requires_grad for p in source.parameters())
    x = torch.rand(1, 3, 56, 56, requires_grad=True)
    tokens = source(x)
    assert not tokens.requires_grad
    assert (source.grid_size, source.num_tokens, source.embed_dim) == (4, 16, 384)


def test_tokens_match_manual_pipeline(source: FrozenDINOv2) -> None:
    x = torch.rand(1, 3, 56, 56)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        full = source.model.forward_features((x - mean) / std)
    torch.testing.assert_close(source(x), full[:, 1:])


def test_missing_file_and_random_init_messages(tmp_path, caplog) -> None:
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(FileNotFoundError) as err:
        FrozenDINOv2(weights=missing, model_name=NAME, image_size=56, model_kwargs=TINY)
    msg = str(err.value)
    assert str(missing) in msg and "huggingface.co/timm/vit_small_patch14_dinov2.lvd142m" in msg
    assert "dinov2_vits14_pretrain.pth" in msg
    with pytest.raises(ValueError, match="random_init=True"):
        FrozenDINOv2(weights=None, model_name=NAME)
    with caplog.at_level(logging.WARNING):
        FrozenDINOv2(model_name=NAME, image_size=56, random_init=True, model_kwargs=dict(depth=1))
    assert "RANDOM INITIALISATION" in caplog.text
    with pytest.raises(ValueError, match="multiple of the patch size"):
        FrozenDINOv2(model_name=NAME, image_size=50, random_init=True, model_kwargs=dict(depth=1))
