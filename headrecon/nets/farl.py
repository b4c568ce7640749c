"""Loading FaRL (and OpenAI-CLIP) image-tower weights into a timm ViT, strictly and from local files only.

Accepted files (``torch.load(..., weights_only=True)`` or ``torch.jit.load``, always ``map_location="cpu"``):

1. **FaRL** (the official release, e.g. ``FaRL-Base-Patch16-LAIONFace20M-ep64.pth``): a dict whose
   ``"state_dict"`` holds an OpenAI-CLIP model, i.e.

   - the image tower ``visual.*``: ``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
     ``transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``,
     ``ln_post``, ``proj``;
   - the text tower: ``transformer.*``, ``token_embedding.*``, ``ln_final.*``, ``text_projection``,
     ``logit_scale``, ``positional_embedding``;
   - FaRL's masked-image-modelling (MIM) branch: ``visual.mask_token``, ``visual.lm_transformer.*``,
     ``visual.ln_lm.*``, ``visual.lm_head.*``.
2. **An OpenAI CLIP TorchScript archive** (OpenAI's ``ViT-B-16.pt``): its ``state_dict()`` has the same
   ``visual.*`` / text keys plus the scalar metadata ``input_resolution``, ``context_length``, ``vocab_size``.
3. **A plain state dict**: the same CLIP keys without the ``state_dict`` wrapper (optionally under
   ``module.``), or keys already in timm's layout (e.g. saved from our own backbone).

Conversion: :func:`farl_checkpoint_filter_fn` (a timm-style ``filter_fn(state_dict, model)``) removes the text
tower, the MIM branch and the CLIP metadata, then calls timm's own ``vision_transformer.checkpoint_filter_fn``,
which renames the CLIP keys (``_convert_openai_clip``) and resamples the positional embedding when the model's
image size differs. CLIP's image-text projection ``visual.proj`` has no place in a ``num_classes=0`` backbone
(timm turns it into ``head.weight``) and is dropped too. The result is loaded with ``strict=True``; any other
missing or unexpected key raises :class:`FarlCheckpointError` naming the file and the keys.
:func:`load_farl_backbone` returns a :class:`FarlLoadReport` listing exactly what was dropped, by category.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as timm_vit_checkpoint_filter_fn
from torch import Tensor, nn

__all__ = [
    "FARL_HELP",
    "FarlCheckpointError",
    "FarlLoadReport",
    "classify_clip_key",
    "farl_checkpoint_filter_fn",
    "read_checkpoint",
    "load_farl_backbone",
]

log = logging.getLogger(__name__)

FARL_HELP = (
    "FaRL weights are published on the FaRL GitHub releases (https://github.com/FacePerceiver/FaRL/releases), "
    "e.g. FaRL-Base-Patch16-LAIONFace20M-ep64.pth; download the file and give its local path "
    "(nothing is ever downloaded at run time)."
)

TEXT_TOWER_PREFIXES = ("transformer.", "token_embedding.", "ln_final.")
TEXT_TOWER_KEYS = ("text_projection", "logit_scale", "positional_embedding")
MIM_PREFIXES = ("visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.")
MIM_KEYS = ("visual.mask_token",)
CLIP_META_KEYS = ("input_resolution", "context_length", "vocab_size")
CLIP_PROJECTION_KEYS = ("visual.proj",)


class FarlCheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded into the backbone (wrong format, unexpected or missing keys)."""


@dataclass
class FarlLoadReport:
    """What :func:`load_farl_backbone` did. Key names are the checkpoint's (CLIP layout, ``module.`` removed).

    source: ``"farl"`` (wrapped in ``state_dict`` with MIM keys), ``"clip"`` (CLIP keys, no MIM),
    ``"clip-torchscript"`` or ``"timm"`` (already in timm's layout). loaded: the timm parameter names filled.
    """

    path: Path
    source: str
    loaded: list[str] = field(default_factory=list)
    dropped_text_tower: list[str] = field(default_factory=list)
    dropped_mim: list[str] = field(default_factory=list)
    dropped_projection: list[str] = field(default_factory=list)
    dropped_metadata: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> list[str]:
        return sorted(
            self.dropped_text_tower + self.dropped_mim + self.dropped_projection + self.dropped_metadata
        )


def classify_clip_key(key: str) -> str:
    """``"visual"`` | ``"projection"`` | ``"text"`` | ``"mim"`` | ``"meta"`` | ``"unknown"`` for a CLIP-layout key."""
    if key in MIM_KEYS or key.startswith(MIM_PREFIXES):
        return "mim"
    if key in CLIP_PROJECTION_KEYS:
        return "projection"
    if key.startswith("visual."):
        return "visual"
    if key in TEXT_TOWER_KEYS or key.startswith(TEXT_TOWER_PREFIXES):
        return "text"
    if key in CLIP_META_KEYS:
        return "meta"
    return "unknown"


def _is_clip_layout(sd: Mapping[str, Tensor]) -> bool:
    return "visual.class_embedding" in sd


def _strip_module(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _split_clip(sd: Mapping[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """Split a CLIP-layout dict into the image-tower keys to convert and the dropped keys by category."""
    keep: dict[str, Tensor] = {}
    dropped: dict[str, list[str]] = {"text": [], "mim": [], "projection": [], "meta": [], "unknown": []}
    has_head = isinstance(getattr(model, "head", None), nn.Linear)
    for k, v in sd.items():
        kind = classify_clip_key(k)
        if kind == "visual" or (kind == "projection" and has_head):
            keep[k] = v
        else:
            dropped[kind].append(k)
    return keep, dropped


def farl_checkpoint_filter_fn(
    state_dict: Mapping[str, Tensor], model: VisionTransformer
) -> dict[str, Tensor]:
    """timm-style filter: FaRL / CLIP state dict -> timm ViT state dict for ``model``.

    Unwraps ``state_dict`` / ``module.``, drops the text tower, the MIM branch, CLIP metadata and (for a model
    without a linear head) ``visual.proj``, then applies timm's ViT ``checkpoint_filter_fn``. Keys that belong
    to none of these categories are passed through, so a strict load reports them.
    """
    sd = state_dict.get("state_dict", state_dict) if isinstance(state_dict, Mapping) else state_dict
    sd = _strip_module(sd)
    if not _is_clip_layout(sd):
        return timm_vit_checkpoint_filter_fn(sd, model)
    keep, dropped = _split_clip(sd, model)
    for k in dropped["unknown"]:
        keep[k] = sd[k]
    return timm_vit_checkpoint_filter_fn(keep, model)


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    # TorchScript archives hold the model's code and constants; torch.save zips hold data only
    return any("/code/" in n or n.startswith("code/") or n.endswith("constants.pkl") for n in names)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Read a local checkpoint -> (flat state dict, ``"torchscript"`` | ``"wrapped"`` | ``"plain"``).

    Raises FileNotFoundError (with where to get FaRL) when the file is missing and FarlCheckpointError when it
    is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FaRL checkpoint not found: {path}. {FARL_HELP}")
    if _is_torchscript_archive(path):
        try:
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise FarlCheckpointError(f"{path}: cannot read the TorchScript archive ({e})") from e
        return {k: v for k, v in sd.items() if isinstance(v, Tensor)}, "torchscript"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise FarlCheckpointError(
            f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e}). {FARL_HELP}"
        ) from e
    kind = "plain"
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj, kind = obj["state_dict"], "wrapped"
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj, kind = obj["model"], "wrapped"
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise FarlCheckpointError(
            f"{path}: expected a state dict of tensors (optionally under 'state_dict'), got "
            f"{type(obj).__name__}. {FARL_HELP}"
        )
    return dict(obj), kind


def load_farl_backbone(model: VisionTransformer, path: str | Path) -> FarlLoadReport:
    """Load a FaRL / CLIP / timm-layout checkpoint from ``path`` into ``model`` strictly; returns the report.

    Exactly the text tower, the MIM branch, CLIP metadata and (for a headless model) ``visual.proj`` may be
    dropped; anything else left over, and any model parameter not filled, raises :class:`FarlCheckpointError`.
    """
    path = Path(path)
    raw, kind = read_checkpoint(path)
    sd = _strip_module(raw)
    if _is_clip_layout(sd):
        _, dropped = _split_clip(sd, model)
        if dropped["unknown"]:
            raise FarlCheckpointError(
                f"{path}: unexpected keys outside the CLIP image tower, text tower and FaRL MIM branch: "
                f"{sorted(dropped['unknown'])[:20]}"
            )
        if kind == "torchscript":
            source = "clip-torchscript"
        else:
            source = "farl" if dropped["mim"] else "clip"
    else:
        dropped = {"text": [], "mim": [], "projection": [], "meta": []}
        source = "timm"
        if any(k.startswith("visual.") for k in sd):
            raise FarlCheckpointError(
                f"{path}: has 'visual.*' keys but no 'visual.class_embedding': not an OpenAI-CLIP / FaRL "
                f"layout this loader knows. {FARL_HELP}"
            )
    try:
        converted = farl_checkpoint_filter_fn(sd, model)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise FarlCheckpointError(
            f"{path}: conversion to timm's layout failed: {type(e).__name__}: {e}"
        ) from e
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    mismatched = sorted(
        f"{k}: file {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(converted)
        if converted[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys {missing[:10]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (timm names) {unexpected[:10]}")
        if mismatched:
            parts.append(f"shape mismatch {mismatched[:10]}")
        raise FarlCheckpointError(
            f"{path} ({source} layout) does not fit backbone {type(model).__name__} "
            f"(embed_dim={getattr(model, 'embed_dim', '?')}, depth={len(getattr(model, 'blocks', []))}): "
            + "; ".join(parts)
        )
    model.load_state_dict(converted, strict=True)
    report = FarlLoadReport(
        path=path,
        source=source,
        loaded=sorted(converted),
        dropped_text_tower=sorted(dropped["text"]),
        dropped_mim=sorted(dropped["mim"]),
        dropped_projection=sorted(dropped["projection"]),
        dropped_metadata=sorted(dropped["meta"]),
    )
    log.info(
        "loaded %s weights from %s: %d tensors; dropped %d text-tower, %d MIM, %d projection, %d metadata keys",
        source,
        path,
        len(report.loaded),
        len(report.dropped_text_tower),
        len(report.dropped_mim),
        len(report.dropped_projection),
        len(report.dropped_metadata),
    )
    return report
