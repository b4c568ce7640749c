"""EMOCA's AffectNet emotion network backbone (frozen), loaded from EMOCA's checkpoint.

EMOCA's image-based emotion recogniser ``EmoCnnModule`` with ``backbone: resnet50`` (EMOCA's
``gdl/models/EmoCnnModule.py``) holds ``self.backbone = resnet50(num_classes=8631, include_top=False)`` from
``gdl/layers/losses/FRNet.py`` (the VGGFace2 ResNet-50, originally converted from Caffe) and a linear head
``self.linear`` (expression logits, valence, arousal). EMOCA's emotion loss (``EmoBackboneLoss``) feeds the images
as they are (RGB in [0, 1], 224x224, no mean subtraction) to ``backbone`` and compares the 2048-d pooled features
(``emo_feat_2``). :class:`EmotionResNet50` reproduces that backbone exactly:

- caffe-style bottleneck: the stride sits on each block's **first 1x1 conv** (torchvision puts it on the 3x3);
- stem: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool with ``padding=0, ceil_mode=True``;
- stages of 3, 4, 6, 3 bottlenecks; 7x7 average pool (stride 1), so the input must be 224x224 for a 1x1 output;
- parameter names ``conv1, bn1, layer1..4.N.{conv1, bn1, conv2, bn2, conv3, bn3, downsample.0, downsample.1}``
  (the classifier ``fc`` of the VGGFace2 model exists in the file but is unused and not loaded).

**Checkpoint format** (:func:`load_emotion_resnet50`): EMOCA's released emotion recogniser is a run folder
(``cfg.yaml`` + ``checkpoints/*.ckpt``); the ``.ckpt`` is a PyTorch Lightning checkpoint ``{"state_dict": {...},
...}`` of the ``EmoCnnModule``, so the backbone's weights sit under the prefix ``backbone.`` (next to
``linear.*``). The loader takes that ``.ckpt`` (or a plain state dict) and a ``prefix`` to strip (default
``"backbone."``; ``""`` for a bare backbone state dict). Lightning checkpoints pickle extra objects (OmegaConf
configs, callback states); when a safe ``weights_only`` load refuses them, classes that cannot be imported are
replaced by inert stand-ins and only the tensors are kept.

Where to get it: EMOCA's ``ResNet50`` emotion recogniser from the EMOCA project (https://emoca.is.tue.mpg.de,
``gdl_apps/EmotionRecognition`` download script ``download_assets.sh``: ``ResNet50.zip``, unzipped to
``ResNet50/checkpoints/*.ckpt``).
"""

from __future__ import annotations

import io
import logging
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EMOCA_EMOTION_SOURCE", "EmotionBottleneck", "EmotionResNet50", "load_emotion_resnet50"]

log = logging.getLogger(__name__)

EMOCA_EMOTION_SOURCE = (
    "EMOCA's ResNet50 emotion recogniser (https://emoca.is.tue.mpg.de; the EmotionRecognition assets, "
    "ResNet50.zip, unzipped: ResNet50/checkpoints/*.ckpt)"
)


class EmotionBottleneck(nn.Module):
    """Caffe-style ResNet bottleneck (stride on the first 1x1 conv): [B, C_in, H, W] -> [B, 4 planes, H/s, W/s]."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, H, W] -> [B, 4 planes, H', W']."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class EmotionResNet50(nn.Module):
    """EMOCA's emotion backbone: RGB [B, 3, H, W] in [0, 1] -> pooled features [B, 2048], frozen.

    Images that are not 224x224 are resized bilinearly (antialiased) to 224 first. The module is frozen
    (``requires_grad=False``) and always in eval mode; gradients still flow to the input.
    Build it from EMOCA's checkpoint with :func:`load_emotion_resnet50` (or randomly, for tests/demos, with
    :meth:`random`).
    """

    image_size = 224
    feature_dim = 2048

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        """``layers``: bottlenecks per stage; (3, 4, 6, 3) is ResNet-50, the only depth EMOCA's checkpoint has
        (other depths are for fast tests)."""
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        for m in self.modules():  # the initialisation of EMOCA's (VGGFace2) ResNet: He-normal over fan-out
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(
                    m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                )
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.requires_grad_(False)
        super().train(False)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        mods: list[nn.Module] = [EmotionBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        mods += [EmotionBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    @classmethod
    def random(cls) -> EmotionResNet50:
        """Random weights (demos and tests only; logged as a warning)."""
        log.warning(
            "EmotionResNet50: RANDOM INITIALISATION (random_init=True); the emotion loss is meaningless. "
            "Use this only for demos and tests."
        )
        return cls()

    def train(self, mode: bool = True) -> EmotionResNet50:
        """Stays in eval mode whatever ``mode`` says (the network is frozen)."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Args:
            images: [B, 3, H, W] RGB in [0, 1].

        Returns:
            [B, 2048] average-pooled layer-4 features (EMOCA's ``emo_feat_2``).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        s = self.image_size
        x = images
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class _Stub:
    """Inert stand-in for a pickled class that cannot (or need not) be imported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(*args)


class _PermissiveUnpickler(pickle.Unpickler):
    """Resolves torch / numpy / collections and plain builtin containers normally and everything else (OmegaConf
    configs, Lightning callback classes, any other builtin) to inert :class:`_Stub` subclasses. Tolerant, not a
    sandbox: load checkpoints you trust."""

    _TRUSTED = ("torch", "numpy", "collections", "_codecs", "copyreg")
    _BUILTINS = frozenset(
        {
            "set",
            "frozenset",
            "slice",
            "range",
            "complex",
            "bytearray",
            "bytes",
            "dict",
            "list",
            "tuple",
            "int",
        }
        | {"float", "str", "bool", "object"}
    )

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in self._TRUSTED or (module == "builtins" and name in self._BUILTINS):
            return super().find_class(module, name)
        return type(name, (_Stub,), {"__module__": module})


class _PermissivePickleModule:
    """A ``pickle_module`` for ``torch.load`` that tolerates unimportable classes (see :class:`_PermissiveUnpickler`)."""

    Unpickler = _PermissiveUnpickler

    @staticmethod
    def load(f: io.BufferedIOBase, **kwargs: Any) -> Any:
        return _PermissiveUnpickler(f, **kwargs).load()


def _load_checkpoint(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        log.info("%s holds non-tensor objects; loading it with inert stand-ins for unknown classes", path)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PermissivePickleModule)


def load_emotion_resnet50(path: str | Path, prefix: str = "backbone.") -> EmotionResNet50:
    """Load EMOCA's emotion backbone from its Lightning checkpoint (or a state dict).

    Args:
        path: EMOCA's ``ResNet50/checkpoints/*.ckpt`` (``{"state_dict": {"backbone.conv1.weight": ...,
            "linear.weight": ..., ...}}``), or any ``torch.save``-d state dict (optionally under ``state_dict``).
        prefix: key prefix of the backbone to strip (``"backbone."`` for EMOCA's ``EmoCnnModule``; ``""`` for a
            bare VGGFace2-layout ResNet-50 state dict). Keys outside the prefix and the unused ``fc.*`` are ignored.

    Returns:
        the frozen :class:`EmotionResNet50`.

    Raises:
        FileNotFoundError: naming the file and where to obtain it.
        ValueError: when the file has no complete backbone under ``prefix``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"EMOCA emotion-network checkpoint not found: {str(p)!r} (a Lightning .ckpt of EMOCA's EmoCnnModule "
            f"with a ResNet-50 backbone). Get {EMOCA_EMOTION_SOURCE} and point the config's emotion-loss "
            "checkpoint path at the .ckpt."
        )
    obj = _load_checkpoint(p)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(p)!r} holds no state dict (got {type(obj).__name__})")
    state = {
        k[len(prefix) :]: v
        for k, v in obj.items()
        if isinstance(v, Tensor) and k.startswith(prefix) and not k[len(prefix) :].startswith("fc.")
    }
    model = EmotionResNet50()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        some = sorted(k for k in obj if isinstance(k, str))[:6]
        raise ValueError(
            f"{str(p)!r} has no complete VGGFace2 ResNet-50 under prefix {prefix!r}: {len(missing)} missing keys "
            f"(e.g. {missing[:4]}), unexpected {unexpected[:4]}; first keys in the file: {some}"
        )
    model.requires_grad_(False)
    return model
