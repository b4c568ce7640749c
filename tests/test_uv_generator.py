"""UVMapGenerator on small configs (tiny latent and channel counts); defaults are checked without a forward."""

import pytest
import torch

from headrecon.nets.uv_generator import LIGHTWEIGHT_GAN_SLE_PAIRS, UVMapGenerator

SMALL = dict(
    latent_dim=16, out_channels=5, image_size=64, num_removed_blocks=1, fmap_inverse_coef=7, fmap_max=16
)


def _small(**kw) -> UVMapGenerator:
    torch.manual_seed(0)
    args = dict(SMALL, sle_pairs=[(8, 32)], dino_dim=12, cross_attn_resolutions=(8, 16), cross_attn_heads=2)
    args.update(kw)
    return UVMapGenerator(**args)


def test_default_layout_matches_paper() -> None:
    # Structure only (built on the meta device: no 80M-parameter allocation, no forward).
    with torch.device("meta"):
        g = UVMapGenerator()
    assert g.output_size == 128 and g.latent_dim == 1024 and g.out_channels == 32
    assert g.resolutions == [8, 16, 32, 64, 128]
    assert g.channels == {8: 512, 16: 512, 32: 512, 64: 256, 128: 128}
    assert g.sle_pairs == [(16, 128)]  # the 32->256, 64->512, 128->1024 gates went with their blocks
    assert LIGHTWEIGHT_GAN_SLE_PAIRS[0] == (16, 128)
    assert g.cross_attn_resolutions == [16, 32]


def test_shapes_and_eval_determinism() -> None:
    g = _small()
    assert g.resolutions == [8, 16, 32] and g.channels == {8: 16, 16: 16, 32: 8}
    ident, tok = torch.randn(3, 16), torch.randn(3, 7, 12)
    g.train()
    out_train = g(ident, tok)
    assert out_train.shape == (3, 5, 32, 32)
    g.eval()
    with torch.no_grad():
        a = g(ident, tok)
        b = g(ident, tok)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.isfinite(a).all()
    # In eval mode each item is independent of the rest of the batch (BatchNorm uses running statistics).
    with torch.no_grad():
        torch.testing.assert_close(g(ident[1:2], tok[1:2]), a[1:2])


def test_noise_only_in_training() -> None:
    g = _small()
    for m in g.modules():
        if type(m).__name__ == "NoiseInjection":
            m.weight.data.fill_(1.0)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0  # keep running stats fixed so only the noise can differ
    ident, tok = torch.randn(2, 16), torch.randn(2, 4, 12)
    g.train()
    assert not torch.allclose(g(ident, tok), g(ident, tok))
    g_nonoise = _small(noise=False).train()
    torch.testing.assert_close(g_nonoise(ident, tok), g_nonoise(ident, tok))


def test_dino_conditioning_and_gradients() -> None:
    g = _small().eval()
    ident = torch.randn(2, 16, requires_grad=True)
    tok = torch.randn(2, 6, 12, requires_grad=True)
    out = g(ident, tok)
    assert not torch.allclose(out, g(ident, torch.randn(2, 6, 12)))  # tokens matter
    out.square().mean().backward()
    assert ident.grad.abs().sum() > 0 and tok.grad.abs().sum() > 0
    g.train()
    g.zero_grad()
    g(torch.randn(2, 16), torch.randn(2, 6, 12)).square().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sle_gate_changes_output() -> None:
    g = _small(use_dino=False).eval()
    assert len(g.sle) == 1 and g.cross_attn_resolutions == []
    ident = torch.randn(2, 16)
    out = g(ident)
    g.sle["8_32"].net[2].bias.data.fill_(-50.0)  # gate ~ 0: the gated 32x32 map vanishes
    assert not torch.allclose(out, g(ident))


def test_without_dino_and_argument_errors() -> None:
    g = _small(use_dino=False, upsample="nearest", blur=False, norm="group").eval()
    assert g(torch.randn(1, 16)).shape == (1, 5, 32, 32)
    with pytest.raises(ValueError, match="use_dino=False"):
        g(torch.randn(1, 16), torch.randn(1, 3, 12))
    with pytest.raises(ValueError, match="needs dino_tokens"):
        _small()(torch.randn(1, 16))
    with pytest.raises(ValueError, match="identity"):
        g(torch.randn(1, 15))
    with pytest.raises(ValueError, match="SLE pair"):
        _small(sle_pairs=[(8, 64)])
    with pytest.raises(ValueError, match="cross-attention resolution"):
        _small(cross_attn_resolutions=(64,))
