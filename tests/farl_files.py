"""Test helpers: FaRL / OpenAI-CLIP checkpoints in the exact real key layout, and an independent CLIP visual
transformer written in plain torch (the reference the timm backbone is compared against)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# A tiny ViT (patch 16 at 224 as ViT-B/16, small width and depth); the timm kwargs that match it.
TINY = dict(width=64, layers=2, heads=2, patch=16, image=224, embed_dim=32)
TINY_TIMM_KWARGS = dict(embed_dim=64, depth=2, num_heads=2)


def _resblock(
    prefix: str, width: int, g: torch.Generator, std: float = 0.05, shapes_only: bool = False
) -> dict[str, Tensor]:
    def r(*shape: int) -> Tensor:
        if shapes_only:
            return torch.zeros(()).expand(*shape)
        return torch.randn(*shape, generator=g) * std

    def ln() -> tuple[Tensor, Tensor]:
        return 1.0 + r(width), r(width)

    sd = {}
    sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"] = ln()
    sd[prefix + "attn.in_proj_weight"] = r(3 * width, width)
    sd[prefix + "attn.in_proj_bias"] = r(3 * width)
    sd[prefix + "attn.out_proj.weight"] = r(width, width)
    sd[prefix + "attn.out_proj.bias"] = r(width)
    sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"] = ln()
    sd[prefix + "mlp.c_fc.weight"] = r(4 * width, width)
    sd[prefix + "mlp.c_fc.bias"] = r(4 * width)
    sd[prefix + "mlp.c_proj.weight"] = r(width, 4 * width)
    sd[prefix + "mlp.c_proj.bias"] = r(width)
    return sd


def clip_state_dict(
    width: int = 64,
    layers: int = 2,
    heads: int = 2,
    patch: int = 16,
    image: int = 224,
    embed_dim: int = 32,
    *,
    text_width: int = 32,
    text_layers: int = 1,
    context_length: int = 8,
    vocab_size: int = 50,
    mim: bool = True,
    mim_layers: int = 1,
    mim_vocab: int = 16,
    seed: int = 0,
    shapes_only: bool = False,
) -> dict[str, Tensor]:
    """Random weights in OpenAI CLIP's key layout (image and text tower), plus FaRL's MIM keys when `mim`.

    `shapes_only`: zero-stride zero tensors instead (the real ViT-B/16 layout without allocating it)."""
    del heads  # heads do not change any shape
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, std: float = 0.05) -> Tensor:
        if shapes_only:
            return torch.zeros(()).expand(*shape)
        return torch.randn(*shape, generator=g) * std

    grid = image // patch
    sd: dict[str, Tensor] = {
        "visual.conv1.weight": r(width, 3, patch, patch),
        "visual.class_embedding": r(width, std=0.5),
        "visual.positional_embedding": r(grid * grid + 1, width, std=0.5),
        "visual.ln_pre.weight": 1.0 + r(width),
        "visual.ln_pre.bias": r(width),
    }
    for i in range(layers):
        sd.update(_resblock(f"visual.transformer.resblocks.{i}.", width, g, shapes_only=shapes_only))
    sd["visual.ln_post.weight"] = 1.0 + r(width)
    sd["visual.ln_post.bias"] = r(width)
    sd["visual.proj"] = r(width, embed_dim)
    # text tower
    sd["positional_embedding"] = r(context_length, text_width)
    sd["text_projection"] = r(text_width, embed_dim)
    sd["logit_scale"] = torch.tensor(4.6052)
    sd["token_embedding.weight"] = r(vocab_size, text_width)
    for i in range(text_layers):
        sd.update(_resblock(f"transformer.resblocks.{i}.", text_width, g, shapes_only=shapes_only))
    sd["ln_final.weight"] = 1.0 + r(text_width)
    sd["ln_final.bias"] = r(text_width)
    if mim:  # FaRL's masked-image-modelling branch
        sd["visual.mask_token"] = r(1, 1, width)
        for i in range(mim_layers):
            sd.update(_resblock(f"visual.lm_transformer.resblocks.{i}.", width, g, shapes_only=shapes_only))
        sd["visual.ln_lm.weight"] = 1.0 + r(width)
        sd["visual.ln_lm.bias"] = r(width)
        sd["visual.lm_head.weight"] = r(mim_vocab, width)
        sd["visual.lm_head.bias"] = r(mim_vocab)
    return sd


def write_farl_checkpoint(path: Path, sd: dict[str, Tensor] | None = None, **kwargs) -> Path:
    """Write `{"state_dict": sd}` as the FaRL release does (torch.save)."""
    sd = clip_state_dict(**kwargs) if sd is None else sd
    torch.save({"state_dict": sd}, path)
    return path


def write_clip_torchscript(path: Path, sd: dict[str, Tensor]) -> Path:
    """A scripted module whose parameters carry CLIP's names (plus OpenAI's metadata buffers), saved with
    ``torch.jit.save`` like OpenAI's ``ViT-B-16.pt``."""

    class Root(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    root = Root()
    for key, value in sd.items():
        *mods, name = key.split(".")
        m = root
        for part in mods:
            if not hasattr(m, part):
                m.add_module(part, nn.Module())
            m = getattr(m, part)
        m.register_parameter(name, nn.Parameter(value.clone(), requires_grad=False))
    for meta, v in (("input_resolution", 224), ("context_length", 8), ("vocab_size", 50)):
        root.register_buffer(meta, torch.tensor(v))
    torch.jit.save(torch.jit.script(root), str(path))
    return path


def clip_visual_reference(sd: dict[str, Tensor], x: Tensor, heads: int) -> Tensor:
    """OpenAI CLIP's VisualTransformer in plain torch: [B, 3, H, W] (already normalised) -> [B, 1 + N, D]
    tokens after ``ln_post`` (CLIP applies ln_post to the class token only; LayerNorm is per token, so the
    class token here equals CLIP's)."""
    w = sd["visual.conv1.weight"]
    D, p = w.shape[0], w.shape[-1]
    B = x.shape[0]
    t = F.conv2d(x, w, stride=p).flatten(2).transpose(1, 2)  # [B, N, D]; conv1 has no bias in CLIP
    cls = sd["visual.class_embedding"].view(1, 1, D).expand(B, 1, D)
    t = torch.cat([cls, t], dim=1) + sd["visual.positional_embedding"][None]
    t = F.layer_norm(t, (D,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps=1e-5)
    L = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("visual.transformer.resblocks."))
    dh = D // heads
    for i in range(L):
        pre = f"visual.transformer.resblocks.{i}."
        h = F.layer_norm(t, (D,), sd[pre + "ln_1.weight"], sd[pre + "ln_1.bias"], eps=1e-5)
        qkv = h @ sd[pre + "attn.in_proj_weight"].T + sd[pre + "attn.in_proj_bias"]
        q, k, v = (z.reshape(B, -1, heads, dh).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
        att = torch.softmax((q @ k.transpose(-1, -2)) / dh**0.5, dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, -1, D)
        t = t + a @ sd[pre + "attn.out_proj.weight"].T + sd[pre + "attn.out_proj.bias"]
        h = F.layer_norm(t, (D,), sd[pre + "ln_2.weight"], sd[pre + "ln_2.bias"], eps=1e-5)
        h = h @ sd[pre + "mlp.c_fc.weight"].T + sd[pre + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        t = t + h @ sd[pre + "mlp.c_proj.weight"].T + sd[pre + "mlp.c_proj.bias"]
    return F.layer_norm(t, (D,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps=1e-5)
