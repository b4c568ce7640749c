"""Frozen DINOv2 patch features (timm), loaded from a local weights file only.

SHeaP conditions its UV map generator on frozen DINOv2 features of the source image. This wrapper builds the timm
model (default ``vit_small_patch14_dinov2.lvd142m``: ViT-S/14, D = 384), loads its weights from a local file and
keeps it frozen: always in eval mode (``train()`` is overridden), ``requires_grad=False`` everywhere, and the
forward pass runs under ``torch.no_grad()``.

Weights files accepted (anything timm's DINOv2 checkpoint filter understands, via
``pretrained_cfg_overlay=dict(file=...)``):

- timm's ``model.safetensors`` (or ``pytorch_model.bin``) from https://huggingface.co/timm/<model name>;
- Meta's original release, e.g. ``dinov2_vits14_pretrain.pth`` from https://dl.fbaipublicfiles.com/dinov2/;
- a plain ``torch.save``-d state dict in either layout (optionally under a ``"model"`` or ``"state_dict"`` key).

The position embedding is resampled by timm when the file's grid differs from ``image_size / 14``.
Nothing is downloaded: a missing file raises ``FileNotFoundError`` naming the file and where to get it.
Random initialisation only with ``random_init=True`` (demos, tests), announced with ``logging.warning``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FrozenDINOv2", "DEFAULT_DINOV2_MODEL"]

log = logging.getLogger(__name__)

DEFAULT_DINOV2_MODEL = "vit_small_patch14_dinov2.lvd142m"


def _where_to_get(model_name: str) -> str:
    """Human-readable download sources for a timm model's weights (from its pretrained config)."""
    sources = []
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # an unknown tag: the create_model call reports it properly
        cfg = None
    if cfg is not None:
        hub = getattr(cfg, "hf_hub_id", None)
        if hub:
            hub = f"{hub}{model_name}" if hub.endswith("/") else hub
            sources.append(f"'model.safetensors' from https://huggingface.co/{hub}")
        if getattr(cfg, "url", None):
            sources.append(f"Meta's original file {cfg.url}")
    if not sources:
        sources.append(f"the timm weights of {model_name!r} (https://huggingface.co/timm)")
    return " or ".join(sources)


class FrozenDINOv2(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> DINOv2 patch tokens [B, T, D], frozen.

    Args:
        weights: path to a local weights file (see the module docstring). Required unless ``random_init``.
        model_name: timm model name, e.g. ``vit_small_patch14_dinov2.lvd142m`` or ``vit_base_patch14_dinov2.lvd142m``.
        image_size: side of the square input the model sees (a multiple of the patch size, 14); images are
            resized to it (bilinear, antialiased). 224 gives a 16x16 grid, T = 256.
        random_init: build with random weights instead of loading a file (logged as a warning).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``depth`` for tests).

    Output: the final-LayerNorm-ed patch tokens in raster order (row-major over the 16x16 grid at 224), without
    the class token and without register tokens (``*_reg4_*`` models), shape [B, (image_size / 14)^2, D].
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        model_name: str = DEFAULT_DINOV2_MODEL,
        image_size: int = 224,
        random_init: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        kwargs.update(img_size=image_size, num_classes=0)
        if random_init:
            log.warning(
                "FrozenDINOv2: RANDOM INITIALISATION of %s (random_init=True); its features are meaningless. "
                "Use this only for demos and tests.",
                model_name,
            )
            model = timm.create_model(model_name, pretrained=False, **kwargs)
        else:
            if weights is None:
                raise ValueError(
                    f"FrozenDINOv2 needs a local weights file for {model_name!r} (weights=PATH); get "
                    f"{_where_to_get(model_name)}. Set random_init=True only for demos and tests."
                )
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"DINOv2 weights file not found: {str(path)!r}. Download {_where_to_get(model_name)} "
                    f"and point the config's DINOv2 weights path at it (nothing is downloaded at run time)."
                )
            model = timm.create_model(
                model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
            )
        patch = model.patch_embed.patch_size
        patch = patch[0] if isinstance(patch, tuple | list) else int(patch)
        if image_size % patch != 0:
            raise ValueError(f"image_size={image_size} must be a multiple of the patch size {patch}")
        self.model = model
        self.model_name = model_name
        self.image_size = image_size
        self.patch_size = patch
        self.embed_dim: int = model.embed_dim
        self.grid_size: int = image_size // patch
        self.num_tokens: int = self.grid_size**2
        cfg = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenDINOv2:
        """Stays in eval mode whatever ``mode`` says (the network is frozen)."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Args:
            images: [B, 3, H, W] RGB in [0, 1].

        Returns:
            [B, T, D] patch tokens (detached), T = (image_size / patch)^2, D = ``embed_dim``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        with torch.no_grad():
            x = images.to(self.mean.dtype)
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(
                    x,
                    size=(self.image_size, self.image_size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
            x = (x - self.mean) / self.std
            tokens = self.model.forward_features(x)  # [B, prefix + T, D]
            return tokens[:, self.model.num_prefix_tokens :]
