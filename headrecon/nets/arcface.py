"""Frozen ArcFace face-recognition embedders, loaded from local files only.

Two real formats are supported:

- **insightface ONNX** (:func:`load_arcface_onnx`): the recognition model of insightface's model packs, e.g.
  ``buffalo_l/w600k_r50.onnx`` (input [B, 3, 112, 112], output [B, 512]). The graph is converted to a
  differentiable ``torch.fx`` module with ``onnx2torch``. Normalisation follows insightface's
  ``model_zoo/arcface_onnx.py``: the network sees **RGB** (insightface reads BGR with OpenCV and feeds
  ``cv2.dnn.blobFromImages(..., swapRB=True)``) pixels in 0..255 mapped by ``(x - 127.5) / 127.5``, except for
  old MXNet exports whose first graph nodes already subtract and multiply (a ``Sub`` and a ``Mul`` node among the
  first 8), which take raw 0..255 pixels (mean 0, std 1).
- **arcface_torch iresnet** (:func:`load_iresnet`): a ``.pth`` state dict of insightface's
  ``recognition/arcface_torch/backbones/iresnet.py`` (``iresnet18/34/50/100/200``). :class:`IResNet` below is a
  compact reimplementation with the same parameter names (``conv1, bn1, prelu, layer1..4.N.{bn1, conv1, bn2,
  prelu, conv2, bn3, downsample.0, downsample.1}, bn2, fc, features``). arcface_torch's inference normalises RGB
  images as ``(x / 255 - 0.5) / 0.5``, the same mapping as above.

Both are wrapped in :class:`ArcFace`, which takes aligned RGB crops [B, 3, 112, 112] in [0, 1], applies the
normalisation and returns raw (not L2-normalised) embeddings [B, D]. The wrapper is frozen
(``requires_grad=False``) and always in eval mode (``train()`` is overridden), but gradients flow to its input
so that it can serve as a loss network.

Where to get the files (nothing is downloaded at run time):

- ``buffalo_l.zip`` from insightface's releases (https://github.com/deepinsight/insightface/releases, tag
  ``v0.7``), unzipped so that ``<root>/models/buffalo_l/w600k_r50.onnx`` exists;
- arcface_torch ``.pth`` backbones from the model zoo in
  https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch (e.g. ``ms1mv3_arcface_r50``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "IRESNET_LAYERS",
    "ArcFace",
    "IBasicBlock",
    "IResNet",
    "build_arcface",
    "iresnet",
    "load_arcface_onnx",
    "load_iresnet",
]

log = logging.getLogger(__name__)

#: insightface's 5-point ArcFace template for 112x112 crops (``insightface.utils.face_align.arcface_dst``), in
#: pixel coordinates (x, y): left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right).
ARCFACE_TEMPLATE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

#: Blocks per stage of arcface_torch's iresnets.
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}

_ONNX_SOURCE = (
    "insightface's buffalo_l.zip (https://github.com/deepinsight/insightface/releases, tag v0.7), unzipped so "
    "that <root>/models/buffalo_l/w600k_r50.onnx exists"
)
_IRESNET_SOURCE = (
    "an arcface_torch backbone .pth from the model zoo at "
    "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch (e.g. ms1mv3_arcface_r50)"
)


class IBasicBlock(nn.Module):
    """arcface_torch's pre-activation residual block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, + skip.

    Input [B, C_in, H, W] -> output [B, planes, H / stride, W / stride].
    """

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, H, W] -> [B, planes, H', W']."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """arcface_torch's IResNet (state-dict compatible): normalised RGB [B, 3, 112, 112] -> embeddings [B, D].

    Args:
        layers: blocks per stage, e.g. ``IRESNET_LAYERS["r50"]``.
        num_features: embedding size D (512 in all released models).
    """

    fc_scale = 7 * 7

    def __init__(self, layers: Sequence[int], num_features: int = 512) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"IResNet needs 4 stage depths, got {list(layers)}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 2) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
        )
        mods: list[nn.Module] = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised RGB [B, 3, 112, 112] -> [B, num_features] (not L2-normalised)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet(arch: str = "r50", num_features: int = 512) -> IResNet:
    """A randomly initialised :class:`IResNet` by arcface_torch name (``r18``, ``r34``, ``r50``, ``r100``, ``r200``;
    ``iresnet50`` etc. are accepted too)."""
    key = arch.lower().replace("iresnet", "r")
    if key not in IRESNET_LAYERS:
        raise ValueError(f"unknown iresnet arch {arch!r}; choose one of {sorted(IRESNET_LAYERS)}")
    return IResNet(IRESNET_LAYERS[key], num_features=num_features)


def _unwrap_state_dict(obj: object) -> dict[str, Tensor]:
    """A state dict from a ``torch.load``-ed object: plain, or under ``state_dict`` / ``model``; ``module.``
    prefixes (DDP) are removed."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    out: dict[str, Tensor] = {}
    for k, v in obj.items():
        if isinstance(v, Tensor):
            out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def load_iresnet(path: str | Path, arch: str = "r50") -> IResNet:
    """Load an arcface_torch iresnet ``.pth`` (a plain state dict, as arcface_torch saves ``backbone.pth``).

    Args:
        path: the ``.pth`` file.
        arch: ``r18`` / ``r34`` / ``r50`` / ``r100`` / ``r200``; must match the file (checked strictly).

    Returns:
        the :class:`IResNet` with the file's weights (not yet frozen; :class:`ArcFace` freezes it).

    Raises:
        FileNotFoundError: naming the file and where to obtain it.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"ArcFace iresnet weights not found: {str(p)!r} (an arcface_torch {arch} backbone state dict). "
            f"Get {_IRESNET_SOURCE} and point the config's identity-loss iresnet path at it."
        )
    state = _unwrap_state_dict(torch.load(p, map_location="cpu", weights_only=True))
    fc = state.get("fc.weight")
    model = iresnet(arch, num_features=int(fc.shape[0]) if fc is not None else 512)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{str(p)!r} does not match arcface_torch's iresnet {arch}: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}"
        )
    return model


def _onnx_input_normalisation(onnx_model: object) -> tuple[float, float]:
    """insightface's rule (``arcface_onnx.py``): MXNet exports normalise inside the graph (a ``Sub``/``_minus`` and
    a ``Mul``/``_mul`` node among the first 8) and take raw pixels; others take ``(x - 127.5) / 127.5``."""
    find_sub = find_mul = False
    for node in onnx_model.graph.node[:8]:  # type: ignore[attr-defined]
        if node.name.startswith("Sub") or node.name.startswith("_minus"):
            find_sub = True
        if node.name.startswith("Mul") or node.name.startswith("_mul"):
            find_mul = True
    return (0.0, 1.0) if (find_sub and find_mul) else (127.5, 127.5)


def load_arcface_onnx(path: str | Path) -> tuple[nn.Module, float, float]:
    """Convert an insightface recognition ONNX file (e.g. ``w600k_r50.onnx``) to a differentiable torch module.

    Returns:
        ``(module, input_mean, input_std)``: the ``onnx2torch`` graph module (input [B, 3, H, W] normalised RGB,
        output [B, D]) and the pixel normalisation insightface uses for this file (see the module docstring).

    Raises:
        FileNotFoundError: naming the file and where to obtain it.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"ArcFace ONNX model not found: {str(p)!r} (insightface's recognition model, e.g. "
            f"buffalo_l/w600k_r50.onnx). Get {_ONNX_SOURCE}, and point the config's identity-loss ONNX path at it."
        )
    import onnx
    from onnx2torch import convert

    onnx_model = onnx.load(str(p))
    mean, std = _onnx_input_normalisation(onnx_model)
    return convert(onnx_model), mean, std


class ArcFace(nn.Module):
    """Frozen ArcFace embedder: aligned RGB crops [B, 3, S, S] in [0, 1] -> embeddings [B, D].

    Args:
        model: the recognition network, taking normalised RGB [B, 3, S, S] and returning [B, D].
        input_mean, input_std: pixel normalisation in 0..255 units, ``(255 x - mean) / std``.
        input_size: crop side S the network expects (112 for every released ArcFace model).

    Build it with :meth:`from_onnx`, :meth:`from_iresnet` or :func:`build_arcface`.
    """

    def __init__(
        self, model: nn.Module, input_mean: float = 127.5, input_std: float = 127.5, input_size: int = 112
    ) -> None:
        super().__init__()
        self.model = model
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.input_size = int(input_size)
        self.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_onnx(cls, path: str | Path) -> ArcFace:
        """From insightface's recognition ONNX (e.g. ``buffalo_l/w600k_r50.onnx``), via ``onnx2torch``."""
        model, mean, std = load_arcface_onnx(path)
        return cls(model, mean, std)

    @classmethod
    def from_iresnet(cls, path: str | Path, arch: str = "r50") -> ArcFace:
        """From an arcface_torch iresnet ``.pth`` state dict."""
        return cls(load_iresnet(path, arch), 127.5, 127.5)

    def train(self, mode: bool = True) -> ArcFace:
        """Stays in eval mode whatever ``mode`` says (the network is frozen)."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """Args:
            images: [B, 3, S, S] aligned RGB crops in [0, 1] (resized bilinearly if not S x S).

        Returns:
            [B, D] raw embeddings (not L2-normalised); differentiable w.r.t. ``images``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        s = self.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = (images * 255.0 - self.input_mean) / self.input_std
        return self.model(x)


def build_arcface(
    onnx_path: str | Path | None = None,
    iresnet_path: str | Path | None = None,
    arch: str = "r50",
    random_init: bool = False,
) -> ArcFace:
    """The config-facing factory: exactly one of ``onnx_path`` / ``iresnet_path``, or ``random_init=True``.

    ``random_init`` builds a random iresnet of ``arch`` (demos and tests only) and logs a warning.
    """
    if random_init:
        log.warning(
            "ArcFace: RANDOM INITIALISATION of iresnet %s (random_init=True); the identity loss is meaningless. "
            "Use this only for demos and tests.",
            arch,
        )
        return ArcFace(iresnet(arch))
    if (onnx_path is None) == (iresnet_path is None):
        raise ValueError(
            "ArcFace needs exactly one of onnx_path (insightface's w600k_r50.onnx: "
            f"{_ONNX_SOURCE}) or iresnet_path ({_IRESNET_SOURCE}); set random_init=True only for demos and tests."
        )
    if onnx_path is not None:
        return ArcFace.from_onnx(onnx_path)
    assert iresnet_path is not None
    return ArcFace.from_iresnet(iresnet_path, arch)
