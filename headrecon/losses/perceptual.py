"""Perceptual loss: LPIPS with a VGG-16 trunk (SHeaP's L_perc, weight 6 in the paper's best configuration).

``lpips.LPIPS(net="vgg")`` would download torchvision's ImageNet VGG-16 (``vgg16-397923af.pth``) into
``$TORCH_HOME/hub/checkpoints/``. We never download: :func:`build_lpips_vgg` builds LPIPS with a random trunk
(``pnet_rand=True``, which keeps lpips' shipped, calibrated linear heads ``lpips/weights/v0.1/vgg.pth``) and then
copies the trunk's weights from an explicit local file in torchvision's state-dict format
(``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}``; the ``classifier.*`` keys are ignored).
lpips splits ``features`` into ``slice1..5`` keeping torchvision's indices as module names, so
``features.N.*`` goes to ``net.sliceK.N.*``.

Where to get the file: torchvision's ImageNet VGG-16 weights,
https://download.pytorch.org/models/vgg16-397923af.pth (the same file ``torchvision.models.vgg16(weights=
"IMAGENET1K_V1")`` fetches).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from headrecon.losses.photometric import masked_pair

__all__ = ["VGG16_URL", "LPIPSLoss", "build_lpips_vgg", "load_vgg16_features"]

log = logging.getLogger(__name__)

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"

# lpips' VGG slices: torchvision ``features`` indices [start, end) of slice1..slice5.
_LPIPS_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def load_vgg16_features(path: str | Path) -> dict[str, Tensor]:
    """Read the ``features.*`` tensors of a torchvision VGG-16 state-dict file.

    Returns:
        ``{"features.N.weight" | "features.N.bias": tensor}`` (26 entries for VGG-16).

    Raises:
        FileNotFoundError: naming the file and where to obtain it.
        ValueError: when the file holds no VGG-16 ``features``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"LPIPS VGG-16 weights not found: {str(p)!r} (torchvision's ImageNet VGG-16 state dict, "
            f"vgg16-397923af.pth). Download {VGG16_URL} and point the config's perceptual-loss VGG path at it."
        )
    try:  # the zip format can be memory-mapped (skips reading the 400 MB classifier)
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-zip) serialisation, as in torchvision's 2017 file
        obj = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(p)!r} is not a state dict (got {type(obj).__name__})")
    feats = {k: v for k, v in obj.items() if isinstance(k, str) and k.startswith("features.")}
    if not feats:
        raise ValueError(f"{str(p)!r} holds no 'features.*' keys: not a torchvision VGG-16 state dict")
    return feats


def build_lpips_vgg(vgg_path: str | Path | None = None, random_init: bool = False) -> nn.Module:
    """An ``lpips.LPIPS(net="vgg")`` model with its trunk loaded from a local torchvision VGG-16 file.

    Args:
        vgg_path: torchvision's ``vgg16-397923af.pth`` (or any VGG-16 state dict in its layout).
        random_init: keep the random trunk instead (demos and tests only; logged as a warning).

    Returns:
        the LPIPS model (lpips' linear heads v0.1 loaded), frozen and in eval mode.
    """
    import lpips

    if not random_init and vgg_path is None:
        raise ValueError(
            f"LPIPS-VGG needs a local VGG-16 file (vgg_path=...): download {VGG16_URL}. "
            "Set random_init=True only for demos and tests."
        )
    feats = None if random_init else load_vgg16_features(vgg_path)  # type: ignore[arg-type]
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    if feats is None:
        log.warning(
            "LPIPS-VGG: RANDOM VGG-16 TRUNK (random_init=True); the perceptual loss is not LPIPS. "
            "Use this only for demos and tests."
        )
    else:
        for k, (start, end) in enumerate(_LPIPS_VGG_SLICES, start=1):
            sl = getattr(model.net, f"slice{k}")
            sub = {}
            for key, value in feats.items():
                idx, name = key[len("features.") :].split(".", 1)
                if start <= int(idx) < end:
                    sub[f"{idx}.{name}"] = value
            sl.load_state_dict(sub, strict=True)
    model.requires_grad_(False)
    model.eval()
    return model


class LPIPSLoss(nn.Module):
    """LPIPS-VGG distance between render and target, averaged over the batch.

    Args:
        vgg_path: torchvision's VGG-16 state-dict file (see the module docstring).
        random_init: random VGG trunk instead of the file (demos and tests; logged).

    The LPIPS network is frozen and stays in eval mode (``train()`` is overridden); gradients flow to ``render``.
    """

    def __init__(self, vgg_path: str | Path | None = None, random_init: bool = False) -> None:
        super().__init__()
        self.lpips = build_lpips_vgg(vgg_path, random_init=random_init)
        super().train(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Stays in eval mode whatever ``mode`` says (the network is frozen)."""
        return super().train(False)

    def forward(self, render: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            render: [B, 3, H, W] RGB in [0, 1] (gradients flow here).
            target: [B, 3, H, W] RGB in [0, 1] (treated as a constant).
            mask: optional [B, 1, H, W] in [0, 1]; both images are composited onto black by it first, so that
                pixels outside the mask cannot contribute.

        Returns:
            scalar: mean over the batch of LPIPS(render, target) (0 for identical images).
        """
        render, target = masked_pair(render, target, mask)
        return self.lpips(render, target, normalize=True).mean()
