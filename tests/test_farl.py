"""FaRL / OpenAI-CLIP checkpoint loading into the timm backbone (strict, local files only)."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from headrecon.nets.estimator import FlameEstimatorNet
from headrecon.nets.farl import (
    FarlCheckpointError,
    classify_clip_key,
    farl_checkpoint_filter_fn,
    load_farl_backbone,
)
from tests.farl_files import (
    TINY,
    TINY_TIMM_KWARGS,
    clip_state_dict,
    clip_visual_reference,
    write_clip_torchscript,
    write_farl_checkpoint,
)

BACKBONE = "vit_base_patch16_clip_quickgelu_224"


def _tiny_vit():
    return timm.create_model(BACKBONE, pretrained=False, num_classes=0, **TINY_TIMM_KWARGS)


def _expected_drops(sd):
    text = sorted(k for k in sd if not k.startswith("visual."))
    mim = sorted(
        k
        for k in sd
        if k == "visual.mask_token"
        or k.startswith(("visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head."))
    )
    return text, mim


def test_farl_checkpoint_matches_independent_clip_visual(tmp_path):
    sd = clip_state_dict(**TINY, seed=1)
    path = write_farl_checkpoint(tmp_path / "FaRL-tiny.pth", sd)
    vit = _tiny_vit()
    report = load_farl_backbone(vit, path)

    text, mim = _expected_drops(sd)
    assert report.source == "farl"
    assert report.dropped_text_tower == text and len(text) > 0
    assert report.dropped_mim == mim and len(mim) > 0
    assert report.dropped_projection == ["visual.proj"]
    assert report.dropped_metadata == []
    assert set(report.loaded) == set(vit.state_dict())

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 224, 224, generator=g)
    vit.eval()
    with torch.no_grad():
        ours = vit.forward_features(x)
        ref = clip_visual_reference(sd, x, heads=TINY["heads"])
    assert ours.shape == ref.shape == (2, 197, TINY["width"])
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_estimator_loads_farl_and_starts_queries_at_cls(tmp_path):
    sd = clip_state_dict(**TINY, seed=2)
    path = write_farl_checkpoint(tmp_path / "farl.pth", sd)
    net = FlameEstimatorNet(init="farl", pretrained_path=path, timm_kwargs=TINY_TIMM_KWARGS)
    cls = sd["visual.class_embedding"] + sd["visual.positional_embedding"][0]
    q = net.query_tokens[0]
    assert (q - cls).abs().max() < 0.2 and (q - cls).std() > 0  # cls + N(0, 0.02) noise
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ref = clip_visual_reference(sd, net.normalize(x), heads=TINY["heads"])
        ours = net.backbone.forward_features(net.normalize(x))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_clip_torchscript_archive(tmp_path):
    sd = clip_state_dict(**TINY, mim=False, seed=4)
    path = write_clip_torchscript(tmp_path / "ViT-tiny.pt", sd)
    vit = _tiny_vit()
    report = load_farl_backbone(vit, path)
    assert report.source == "clip-torchscript"
    assert report.dropped_mim == []
    assert report.dropped_metadata == ["context_length", "input_resolution", "vocab_size"]
    assert report.dropped_text_tower == _expected_drops(sd)[0]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            vit.forward_features(x), clip_visual_reference(sd, x, TINY["heads"]), atol=1e-4, rtol=0
        )


def test_plain_clip_and_timm_state_dicts(tmp_path):
    sd = clip_state_dict(**TINY, mim=False, seed=5)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "plain.pth")
    vit = _tiny_vit()
    assert load_farl_backbone(vit, tmp_path / "plain.pth").source == "clip"
    torch.save(vit.state_dict(), tmp_path / "timm.pth")
    vit2 = _tiny_vit()
    report = load_farl_backbone(vit2, tmp_path / "timm.pth")
    assert report.source == "timm" and report.dropped == []
    for k, v in vit.state_dict().items():
        assert torch.equal(v, vit2.state_dict()[k]), k


def test_missing_file_names_file_and_source(tmp_path):
    missing = tmp_path / "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"
    with pytest.raises(FileNotFoundError, match="FaRL-Base-Patch16-LAIONFace20M-ep64.pth") as e:
        load_farl_backbone(_tiny_vit(), missing)
    assert "github.com/FacePerceiver/FaRL/releases" in str(e.value)
    with pytest.raises(FileNotFoundError, match="ep64.pth"):
        FlameEstimatorNet(init="farl", pretrained_path=missing, timm_kwargs=TINY_TIMM_KWARGS)
    with pytest.raises(ValueError, match="pretrained_path"):
        FlameEstimatorNet(timm_kwargs=TINY_TIMM_KWARGS)


def test_wrong_file(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("this is not a checkpoint")
    with pytest.raises(FarlCheckpointError, match="notes.pth"):
        load_farl_backbone(_tiny_vit(), bad)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(FarlCheckpointError, match="list.pth"):
        load_farl_backbone(_tiny_vit(), tmp_path / "list.pth")
    # a real CLIP layout of another size: shape mismatch, named
    write_farl_checkpoint(tmp_path / "wide.pth", clip_state_dict(width=96, layers=2, seed=6))
    with pytest.raises(FarlCheckpointError, match=r"wide\.pth.*shape mismatch"):
        load_farl_backbone(_tiny_vit(), tmp_path / "wide.pth")


def test_unexpected_keys(tmp_path):
    sd = clip_state_dict(**TINY, seed=7)
    sd["visual.adapter.weight"] = torch.zeros(3)  # inside the image tower, not CLIP's
    write_farl_checkpoint(tmp_path / "extra_visual.pth", sd)
    with pytest.raises(FarlCheckpointError, match=r"extra_visual\.pth.*unexpected.*adapter\.weight"):
        load_farl_backbone(_tiny_vit(), tmp_path / "extra_visual.pth")

    sd = clip_state_dict(**TINY, seed=7)
    sd["bogus_scale"] = torch.zeros(())  # outside the image tower, text tower and MIM branch
    write_farl_checkpoint(tmp_path / "extra_top.pth", sd)
    with pytest.raises(FarlCheckpointError, match=r"extra_top\.pth.*bogus_scale"):
        load_farl_backbone(_tiny_vit(), tmp_path / "extra_top.pth")


def test_missing_keys(tmp_path):
    sd = clip_state_dict(**TINY, seed=8)
    del sd["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    write_farl_checkpoint(tmp_path / "holes.pth", sd)
    vit = _tiny_vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    with pytest.raises(FarlCheckpointError, match=r"holes\.pth.*missing 1 keys.*blocks\.1\.mlp\.fc1\.weight"):
        load_farl_backbone(vit, tmp_path / "holes.pth")
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in before.items())  # nothing half-loaded


def test_real_vit_b16_layout_maps_exactly():
    """The full FaRL ViT-B/16 key layout (shapes only: zero-stride tensors) maps onto the default backbone."""

    # FaRL-B/16: width 768, 12 layers, 197 positions, 512-d projection; text tower 512 wide, 12 layers, 77
    # tokens, 49408 vocabulary; MIM branch one block and an 8192-way head (sizes of the MIM branch do not matter)
    full = clip_state_dict(
        width=768, layers=12, embed_dim=512, text_width=512, text_layers=12, context_length=77,
        vocab_size=49408, mim=True, mim_layers=1, mim_vocab=8192, shapes_only=True,
    )  # fmt: skip
    vit = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    converted = farl_checkpoint_filter_fn({"state_dict": full}, vit)
    own = vit.state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)
    assert classify_clip_key("visual.lm_transformer.resblocks.0.attn.in_proj_weight") == "mim"
    assert classify_clip_key("positional_embedding") == "text"
    assert classify_clip_key("visual.positional_embedding") == "visual"


def test_random_init_is_logged(caplog):
    with caplog.at_level(logging.WARNING):
        FlameEstimatorNet(init="random", timm_kwargs=TINY_TIMM_KWARGS)
    assert any("randomly initialised" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        FlameEstimatorNet(init="deferred", timm_kwargs=TINY_TIMM_KWARGS)
    assert not caplog.records
