"""UV map generator: a Lightweight-GAN generator (Liu et al. 2021, "FastGAN") truncated at 128x128.

SHeaP (supplementary, "Gaussian Regressor") uses the Lightweight GAN architecture with latent dimension 1024 and
feature-map inverse coefficient 13, with the last 3 blocks of the 1024-pixel generator removed so that it outputs
a 128x128 "UV region features map" M. This module is our own implementation from that description and from the
public architecture of the reference PyTorch port (lucidrains' ``lightweight_gan``, which is not imported: it
asserts CUDA at import time).

Layout (default config, ``image_size=1024``, ``num_removed_blocks=3``)::

    identity [B, 1024] --ConvTranspose 4x4 + norm + GLU--> [B, 1024, 4, 4] --L2-normalise over channels-->
    block  4 ->   8: [B, 512,   8,   8]
    block  8 ->  16: [B, 512,  16,  16]   (SLE source for the 128 block; DINOv2 cross-attention)
    block 16 ->  32: [B, 512,  32,  32]   (DINOv2 cross-attention)
    block 32 ->  64: [B, 256,  64,  64]
    block 64 -> 128: [B, 128, 128, 128]   (gated by the SLE from the 16x16 map)
    1x1 conv -> M [B, C, 128, 128]        (C = ``out_channels``, default 32)

Every block doubles the resolution: upsample (pixel shuffle with ICNR init, or nearest), blur ([1, 2, 1]
binomial filter), 4x4 "same" conv to 2x the output channels, noise injection, norm, GLU.

Channel rule. A block whose *input* resolution is ``r`` outputs ``min(2 ** (fmap_inverse_coef - log2(r)),
fmap_max)`` channels (lucidrains' ``2 ** (fmap_inverse_coef - res)`` with ``res = log2(r)`` its loop index).
With coefficient 13 and ``fmap_max`` 512 that is 512, 512, 512, 256, 128 for the kept blocks. (The reference
port gives the blocks with ``res >= 8`` 3 channels, since they emit the RGB image; those are exactly the removed
256 -> 512 and 512 -> 1024 blocks, so the rule does not matter here.)

Skip-layer excitation (SLE). The reference port gates the outputs at 128, 256, 512 and 1024 pixels with
channel weights computed from the outputs at 16, 32, 64 and 128 pixels (a softmax-pooled global context, then a
two-layer 1x1 MLP and a sigmoid). Gates whose target block was removed go with it, so the default 128x128
generator keeps one gate, 16 -> 128.

Conditioning. The latent is the estimator's identity feature vector. Optionally, feature maps at the
resolutions in ``cross_attn_resolutions`` attend (multi-head cross-attention, pre-norm, residual, with a learned
positional embedding for the queries) to frozen DINOv2 patch tokens of the source image [B, T, D_dino], projected
to the block's channel count.

Determinism. Noise injection adds ``weight * randn(B, 1, H, W)`` only in training mode (and only with
``noise=True``); in eval mode it adds nothing (the noise's expectation), and BatchNorm uses its running
statistics, so ``eval()`` makes the generator a deterministic function of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UVMapGenerator", "LIGHTWEIGHT_GAN_SLE_PAIRS"]

#: (source resolution, target resolution) pairs of the skip-layer excitation in the 1024-pixel reference
#: generator, in pixels of the blocks' *output* feature maps.
LIGHTWEIGHT_GAN_SLE_PAIRS: tuple[tuple[int, int], ...] = ((16, 128), (32, 256), (64, 512), (128, 1024))


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be 'batch', 'group' or 'instance', got {kind!r}")


class PixelShuffleUpsample(nn.Module):
    """x2 upsampling: 1x1 conv to 4x the channels, SiLU, pixel shuffle. [B, C, H, W] -> [B, C, 2H, 2W].

    The conv is ICNR-initialised (the four sub-pixel filters of each output channel start equal), so the
    upsampler starts as nearest-neighbour upsampling of a 1x1 conv and produces no checkerboard.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ICNR: one kaiming-uniform filter per output channel, repeated for its 4 sub-pixels; zero bias."""
        out4, cin = self.conv.weight.shape[:2]
        weight = torch.empty(out4 // 4, cin, 1, 1, device=self.conv.weight.device)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        with torch.no_grad():
            self.conv.weight.copy_(weight.repeat_interleave(4, dim=0))
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(F.silu(self.conv(x)), 2)


class Blur(nn.Module):
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 binomial filter with reflect padding. [B, C, H, W] -> same shape."""

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum())[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 3, 3), groups=c)


class NoiseInjection(nn.Module):
    """Adds ``weight * n`` with n ~ N(0, 1) of shape [B, 1, H, W], in training mode only.

    ``weight`` is one learnable scalar initialised to 0. In eval mode (or with ``enabled=False``) the input is
    returned unchanged, which keeps inference deterministic.
    """

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        if not (self.enabled and self.training):
            return x
        b, _, h, w = x.shape
        return x + self.weight * torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)


class SkipLayerExcitation(nn.Module):
    """Channel gates for a high-resolution map from a low-resolution one (Lightweight GAN's global context).

    ``x`` [B, C_src, h, w] -> attention pooling with a 1x1 conv score and a softmax over the h*w positions ->
    [B, C_src, 1, 1] -> 1x1 conv, LeakyReLU(0.1), 1x1 conv, sigmoid -> gates [B, C_tgt, 1, 1] in (0, 1).
    """

    def __init__(self, source_channels: int, target_channels: int) -> None:
        super().__init__()
        self.to_score = nn.Conv2d(source_channels, 1, 1)
        hidden = max(3, target_channels // 2)
        self.net = nn.Sequential(
            nn.Conv2d(source_channels, hidden, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, target_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        weights = self.to_score(x).flatten(2).softmax(dim=-1)  # [B, 1, h*w]
        context = torch.einsum("bin,bcn->bci", weights, x.flatten(2)).unsqueeze(-1)  # [B, C_src, 1, 1]
        return self.net(context)


class TokenCrossAttention(nn.Module):
    """Residual multi-head cross-attention from feature-map positions to a set of tokens.

    Queries: the LayerNorm-ed feature map [B, C, H, W] as H*W tokens plus a learned positional embedding
    [1, H*W, C]. Keys and values: LayerNorm-ed tokens [B, T, D] projected to C channels. Output: the input plus
    the attention result, [B, C, H, W].
    """

    def __init__(self, channels: int, token_dim: int, resolution: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"cross-attention: {channels} channels are not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(token_dim)
        self.pos = nn.Parameter(torch.zeros(1, resolution * resolution, channels))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(token_dim, 2 * channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q_in = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        q = self.to_q(self.norm_q(q_in) + self.pos)
        k, v = self.to_kv(self.norm_kv(tokens)).chunk(2, dim=-1)  # [B, T, C] each

        def heads(t: Tensor) -> Tensor:
            return t.unflatten(-1, (self.num_heads, c // self.num_heads)).transpose(1, 2)  # [B, h, L, C/h]

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        out = self.to_out(out.transpose(1, 2).flatten(2))  # [B, HW, C]
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class _UpBlock(nn.Module):
    """One resolution step: upsample, blur, 4x4 same conv, noise, norm, GLU. [B, Ci, r, r] -> [B, Co, 2r, 2r]."""

    def __init__(
        self, in_channels: int, out_channels: int, *, upsample: str, blur: bool, noise: bool, norm: str
    ) -> None:
        super().__init__()
        if upsample == "pixelshuffle":
            self.up: nn.Module = PixelShuffleUpsample(in_channels)
        elif upsample == "nearest":
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
        else:
            raise ValueError(f"upsample must be 'pixelshuffle' or 'nearest', got {upsample!r}")
        self.blur = Blur() if blur else nn.Identity()
        # "Same" padding for an even kernel: 2 before, 1 after (as the reference port's Conv2dSame).
        self.pad = nn.ZeroPad2d((2, 1, 2, 1))
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, 4)
        self.noise = NoiseInjection(noise)
        self.norm = _make_norm(norm, 2 * out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pad(self.blur(self.up(x))))
        return F.glu(self.norm(self.noise(x)), dim=1)


class UVMapGenerator(nn.Module):
    """Identity features (+ optional DINOv2 patch tokens) -> UV feature map M [B, C, S, S].

    Args:
        latent_dim: size of the identity feature vector (paper: 1024).
        out_channels: C, channels of M (a 1x1 conv after the last kept block).
        image_size: output size of the *full* generator (paper: 1024); a power of two >= 8.
        num_removed_blocks: blocks removed from the end (paper: 3); S = image_size / 2**num_removed_blocks.
        fmap_inverse_coef: channel rule coefficient (paper: 13), see the module docstring.
        fmap_max: channel cap (the reference port's default, 512).
        sle_pairs: (source, target) output resolutions of skip-layer excitation gates. ``None``: the reference
            generator's pairs (``LIGHTWEIGHT_GAN_SLE_PAIRS``), silently dropping gates whose blocks were removed.
            Pairs given explicitly must name kept blocks (a ValueError otherwise).
        use_dino: build cross-attention layers and require ``dino_tokens`` in ``forward``.
        dino_dim: D, channel size of the DINOv2 tokens (384 for ViT-S/14).
        cross_attn_resolutions: feature-map resolutions (4, 8, ..., S) whose maps attend to the DINOv2 tokens,
            after the block (and SLE gate) that produces them.
        cross_attn_heads: attention heads (must divide the channel count at each of those resolutions).
        upsample: "pixelshuffle" (reference) or "nearest".
        blur: apply the [1, 2, 1] blur after upsampling. On by default here (the block layout we were given);
            it is the reference port's ``antialias`` option, off by default there.
        noise: learnable noise injection in training mode.
        norm: "batch" (reference), "group" or "instance".
    """

    def __init__(
        self,
        latent_dim: int = 1024,
        out_channels: int = 32,
        image_size: int = 1024,
        num_removed_blocks: int = 3,
        fmap_inverse_coef: int = 13,
        fmap_max: int = 512,
        sle_pairs: Sequence[Sequence[int]] | None = None,
        use_dino: bool = True,
        dino_dim: int = 384,
        cross_attn_resolutions: Sequence[int] = (16, 32),
        cross_attn_heads: int = 8,
        upsample: str = "pixelshuffle",
        blur: bool = True,
        noise: bool = True,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if not _is_power_of_two(image_size) or image_size < 8:
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        log_full = int(math.log2(image_size))
        num_blocks = log_full - 2 - num_removed_blocks
        if num_removed_blocks < 0 or num_blocks < 1:
            raise ValueError(
                f"num_removed_blocks={num_removed_blocks} must be in [0, {log_full - 3}] for image_size={image_size}"
            )
        self.latent_dim = latent_dim
        self.out_channels = out_channels
        self.output_size = 2 ** (log_full - num_removed_blocks)
        self.use_dino = use_dino

        # Output channels of every block, keyed by the block's output resolution.
        self.resolutions: list[int] = [2 ** (k + 3) for k in range(num_blocks)]
        self.channels: dict[int, int] = {
            r: min(2 ** (fmap_inverse_coef - int(math.log2(r // 2))), fmap_max) for r in self.resolutions
        }
        if min(self.channels.values()) < 1:
            raise ValueError(f"fmap_inverse_coef={fmap_inverse_coef} gives blocks with no channels")

        self.initial = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * latent_dim, 4),
            _make_norm(norm, 2 * latent_dim),
            nn.GLU(dim=1),
        )
        ins = [latent_dim] + [self.channels[r] for r in self.resolutions[:-1]]
        self.blocks = nn.ModuleList(
            _UpBlock(ci, self.channels[r], upsample=upsample, blur=blur, noise=noise, norm=norm)
            for ci, r in zip(ins, self.resolutions)
        )

        kept = set(self.resolutions)
        if sle_pairs is None:
            pairs = [(s, t) for s, t in LIGHTWEIGHT_GAN_SLE_PAIRS if s in kept and t in kept]
        else:
            pairs = [(int(s), int(t)) for s, t in sle_pairs]
            for s, t in pairs:
                if s not in kept or t not in kept or s >= t:
                    raise ValueError(
                        f"SLE pair {(s, t)} must join two kept resolutions {sorted(kept)}, low -> high"
                    )
        self.sle_pairs: list[tuple[int, int]] = pairs
        self.sle = nn.ModuleDict(
            {f"{s}_{t}": SkipLayerExcitation(self.channels[s], self.channels[t]) for s, t in pairs}
        )

        self.cross_attn_resolutions: list[int] = (
            sorted(int(r) for r in cross_attn_resolutions) if use_dino else []
        )
        for r in self.cross_attn_resolutions:
            if r != 4 and r not in kept:
                raise ValueError(f"cross-attention resolution {r} is not one of {[4, *sorted(kept)]}")
        self.cross_attn = nn.ModuleDict(
            {
                str(r): TokenCrossAttention(
                    latent_dim if r == 4 else self.channels[r], dino_dim, r, cross_attn_heads
                )
                for r in self.cross_attn_resolutions
            }
        )
        self.to_out = nn.Conv2d(self.channels[self.resolutions[-1]], out_channels, 1)

        # The reference port's init for the generator's convs (kaiming normal, fan-in, leaky-relu gain);
        # the ICNR init of the pixel-shuffle convs is applied last, so it survives.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in", nonlinearity="leaky_relu")
        for m in self.modules():
            if isinstance(m, PixelShuffleUpsample):
                m.reset_parameters()

    def forward(self, identity: Tensor, dino_tokens: Tensor | None = None) -> Tensor:
        """Args:
            identity: [B, latent_dim] identity features (the latent).
            dino_tokens: [B, T, dino_dim] DINOv2 patch tokens; required iff ``use_dino``.

        Returns:
            M: [B, out_channels, S, S] UV feature map, S = ``output_size`` (128 by default); row 0 is v = 1.
        """
        if identity.ndim != 2 or identity.shape[1] != self.latent_dim:
            raise ValueError(f"identity must be [B, {self.latent_dim}], got {list(identity.shape)}")
        if self.use_dino:
            if dino_tokens is None:
                raise ValueError("UVMapGenerator(use_dino=True) needs dino_tokens [B, T, D]")
            if dino_tokens.ndim != 3 or dino_tokens.shape[0] != identity.shape[0]:
                raise ValueError(
                    f"dino_tokens must be [{identity.shape[0]}, T, D], got {list(dino_tokens.shape)}"
                )
        elif dino_tokens is not None:
            raise ValueError("dino_tokens given to a UVMapGenerator built with use_dino=False")

        x = self.initial(identity[:, :, None, None])  # [B, latent, 4, 4]
        x = F.normalize(x, dim=1)
        if "4" in self.cross_attn:
            x = self.cross_attn["4"](x, dino_tokens)
        gates: dict[int, Tensor] = {}
        for r, block in zip(self.resolutions, self.blocks):
            x = block(x)  # [B, channels[r], r, r]
            for s, t in self.sle_pairs:
                if s == r:
                    gates[t] = self.sle[f"{s}_{t}"](x)
            if r in gates:
                x = x * gates.pop(r)
            if str(r) in self.cross_attn:
                x = self.cross_attn[str(r)](x, dino_tokens)
        return self.to_out(x)
