"""The SHeaP 3DMM estimator: a timm ViT with learnable query tokens (TokenFace style) and one head per group.

Architecture
------------
``image [B,3,H,W] in [0,1]`` -> normalise with the backbone's mean/std -> ``patch_embed`` -> class token +
positional embedding (timm's ``_pos_embed``) -> append ``Q`` learnable **query tokens** (one per group:
shape, expression, pose, lighting, identity; they get *no* positional embedding) -> ``norm_pre`` (CLIP's
``ln_pre``, so the queries enter the residual stream at the same scale as the image tokens) -> every
transformer block of the backbone (full self-attention over class, patch and query tokens: the queries read
the image in every block) -> the backbone's final ``norm`` -> each group's query token goes through its own
MLP head (``Linear(D, D) -> GELU -> Linear(D, out)``).

Outputs and parameterisations
-----------------------------
- shape [B, n_shape], expression [B, n_expression]: linear outputs (unit-variance FLAME PCA coefficients).
- rotations (global, neck, jaw, left eye, right eye), from the pose token: each predicted as a 6D rotation
  (:mod:`headrecon.nets.rotation6d`) ``IDENTITY_6D + head output``, orthonormalised, returned as axis-angle
  [B, 3] radians. With ``jaw_opening="relu"`` (SMIRK's parameterisation, off by default) the jaw's opening
  component (x, FLAME's jaw opens about +x) is ``relu(x)`` and its sideways components (y, z) are clamped to
  +-``jaw_side_max`` (0.2 rad): the jaw cannot close through the upper lip or twist past anatomy, by construction
  rather than by a soft penalty that a photometric loss can outweigh. The price: once the opening's
  pre-activation is negative no gradient reaches it; on the synthetic demo that happens within the first steps
  and the jaw stays at exactly 0 (docs/results.md, session 5).
- eyelids [B, 2], from the expression token: ``sigmoid(z + logit(eyelid_init))`` in (0, 1), 0 open .. 1 closed.
  A sigmoid rather than a clamp so the gradient never dies; at initialisation the eyelids are ``eyelid_init``
  (default 0.02, i.e. open).
- translation [B, 3] metres, from the pose token: ``translation_scale * z`` (default 0.1 m per unit), an offset
  from the default head position (the FLAME origin, 1 m in front of the default camera).
- lighting latent [B, lighting_dim] (default 27, the size of 9x3 order-2 SH coefficients), from the lighting
  token. It is a *latent*: the Gaussian regressor maps it to SH coefficients with a learned map (SPEC section 2),
  so its initial value (zero) is given meaning by that map's bias.
- identity features [B, identity_dim] (default 1024, the UV generator's latent), from the identity token, with
  PyTorch's default initialisation so the features already differ between images at the start.

The last layer of the shape, expression, pose (rotations, translation), eyelid and lighting heads has PyTorch's
default initialisation (``head_init="default"``): a fresh network predicts heads near the neutral one (on a
ViT-Ti/8 of width 192: coefficients and rotation offsets of a few tenths, a few cm of translation) that differ
between images. ``head_init="zero"`` makes a fresh network predict exactly the neutral FLAME head (zero shape and
expression, identity rotations, zero translation: facing the camera) for every image, but a zero last layer
passes no gradient to the layers before it until it has grown, and it grows on noise: behind the transformer,
regressing head rotation on the synthetic data stays at the predict-the-mean loss for hundreds of steps where the
default initialisation learns (docs/results.md).

Patch embedding (``stem``)
--------------------------
- ``"patch"`` (default): the backbone's own patch embedding (one strided convolution), as FaRL / CLIP.
- ``"conv"``: a convolutional (ResNet-18) stem in place of ``patch_embed.proj``, same token grid (see
  :func:`conv_stem`; Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021). For training
  from scratch on little data (the synthetic demo): on 64 px synthetic heads a random-init ViT-Ti/8 with the plain
  patch embedding does not learn to regress head rotation in 500 supervised steps, and with this stem it does
  (docs/results.md). Only with ``init="random"`` or ``"deferred"``: pretrained checkpoints have a patch projection.

Initialisation of the backbone (``init``)
-----------------------------------------
- ``"farl"`` (default): weights from a local FaRL checkpoint (``pretrained_path``), see :mod:`headrecon.nets.farl`.
  The query tokens then start as copies of the pretrained class token (plus its positional embedding) with a
  little noise, so each starts out pooling the image the way the pretrained CLS token does.
- ``"random"``: timm's random initialisation; allowed only when asked for, and logged with a warning.
- ``"deferred"``: timm's random initialisation without a warning, for callers that overwrite every parameter
  right away (e.g. ``load_state_dict`` from a headrecon checkpoint).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from headrecon.flame.params import ROTATION_FIELDS, FlameParams
from headrecon.nets.rotation6d import IDENTITY_6D, rotation_6d_to_axis_angle

__all__ = [
    "DEFAULT_BACKBONE",
    "QUERY_GROUPS",
    "EstimatorOutput",
    "FlameEstimatorNet",
    "conv_stem",
    "OUTPUT_NAMES",
    "QuickGeluMlp",
    "count_flops",
]

log = logging.getLogger(__name__)

#: timm name of the CLIP ViT-B/16 layout FaRL uses.
DEFAULT_BACKBONE = "vit_base_patch16_clip_quickgelu_224"

#: The query tokens, in order.
QUERY_GROUPS = ("shape", "expression", "pose", "lighting", "identity")

_INIT_CHOICES = ("farl", "random", "deferred")

#: Names of :meth:`EstimatorOutput.to_tuple`'s tensors (and of the exported models' outputs).
OUTPUT_NAMES = (*(f.name for f in fields(FlameParams)), "lighting", "identity")


@dataclass
class EstimatorOutput:
    """What :class:`FlameEstimatorNet` predicts for B images.

    flame: FLAME parameters (see :class:`~headrecon.flame.params.FlameParams`; rotations axis-angle radians,
    translation metres). lighting: [B, L] lighting latent. identity: [B, I] identity features (the UV
    generator's latent, I = 1024 by default).
    """

    flame: FlameParams
    lighting: Tensor
    identity: Tensor

    @property
    def batch_size(self) -> int:
        return self.lighting.shape[0]

    def detach(self) -> EstimatorOutput:
        return EstimatorOutput(self.flame.detach(), self.lighting.detach(), self.identity.detach())

    def to(self, *args: Any, **kwargs: Any) -> EstimatorOutput:
        return EstimatorOutput(
            self.flame.to(*args, **kwargs),
            self.lighting.to(*args, **kwargs),
            self.identity.to(*args, **kwargs),
        )

    def to_tuple(self) -> tuple[Tensor, ...]:
        """Flat tuple in ``OUTPUT_NAMES`` order: the FlameParams fields, then lighting, then identity."""
        return (*self.flame.to_dict().values(), self.lighting, self.identity)

    @classmethod
    def from_tuple(cls, tensors: tuple[Tensor, ...] | list[Tensor]) -> EstimatorOutput:
        """Inverse of :meth:`to_tuple` (e.g. for the outputs of an exported model)."""
        if len(tensors) != len(OUTPUT_NAMES):
            raise ValueError(
                f"EstimatorOutput.from_tuple: expected {len(OUTPUT_NAMES)} tensors, got {len(tensors)}"
            )
        *flame, lighting, identity = tensors
        return cls(FlameParams(*flame), lighting, identity)


def _mlp_head(dim: int, out: int, zero_last: bool) -> nn.Sequential:
    """Linear(dim, dim) -> GELU -> Linear(dim, out), the last layer zeroed when `zero_last`."""
    head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))
    if zero_last:
        nn.init.zeros_(head[2].weight)
        nn.init.zeros_(head[2].bias)
    return head


class QuickGeluMlp(nn.Module):
    """Drop-in replacement of timm's ``Mlp`` with QuickGELU (CLIP's ``x * sigmoid(1.702 x)``), same keys.

    ``QuickGELU(h) = silu(1.702 h) / 1.702``; both factors are folded into the two GEMMs as ``addmm``'s
    ``alpha``/``beta`` (free inside BLAS), so the activation is one fused ``silu`` pass instead of three
    elementwise passes (scale, sigmoid, multiply) over the [B, N, 4D] hidden tensor, which on CPU cost about as
    much as the first GEMM itself. Exact (same function, same parameters ``fc1.*``/``fc2.*``, same gradients);
    the silu runs in place when no gradient is recorded.
    """

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.fc1: nn.Linear = mlp.fc1
        self.fc2: nn.Linear = mlp.fc2
        self.drop1: nn.Module = mlp.drop1
        self.drop2: nn.Module = mlp.drop2

    @staticmethod
    def applies_to(mlp: nn.Module) -> bool:
        """True for a timm ``Mlp`` with QuickGELU, linear fc1/fc2 with biases and no hidden norm."""
        from timm.layers import Mlp
        from timm.layers.activations import QuickGELU

        return (
            type(mlp) is Mlp
            and isinstance(mlp.act, QuickGELU)
            and isinstance(mlp.fc1, nn.Linear)
            and isinstance(mlp.fc2, nn.Linear)
            and mlp.fc1.bias is not None
            and mlp.fc2.bias is not None
            and isinstance(mlp.norm, nn.Identity)
        )

    def forward(self, x: Tensor) -> Tensor:
        """[..., D] -> [..., D_out]."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        h = torch.addmm(self.fc1.bias, x2, self.fc1.weight.t(), beta=_QUICK_GELU_K, alpha=_QUICK_GELU_K)
        h = F.silu(h, inplace=not (torch.is_grad_enabled() and h.requires_grad))
        h = self.drop1(h)
        y = torch.addmm(self.fc2.bias, h, self.fc2.weight.t(), alpha=1.0 / _QUICK_GELU_K)
        return self.drop2(y.reshape(*lead, y.shape[-1]))


_QUICK_GELU_K = 1.702


class _BasicBlock(nn.Module):
    """ResNet basic block: ReLU(shortcut(x) + BN(conv3x3(ReLU(BN(conv3x3_stride(x)))))), with a 1x1 strided
    projection as the shortcut when the stride or width changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.shortcut(x) + y)


def conv_stem(
    width: int, patch_size: tuple[int, int] | int, blocks_per_stage: int = 2, base_channels: int = 64
) -> nn.Sequential:
    """ResNet stem [B, 3, H, W] -> [B, width, H / p, W / p] for a square power-of-two patch size p >= 4: ResNet-18's
    first layers (7x7 stride-2 conv + BatchNorm + ReLU + 3x3 stride-2 max-pool, a stage of `blocks_per_stage`
    basic blocks at `base_channels`), one more stage per further factor 2 (stride 2, channels doubled), then a 1x1
    convolution to `width`. At p = 8 this is ResNet-18 up to ``layer2``: the hybrid ViT of Dosovitskiy et al.
    (2021), and a convolutional stem in the sense of Xiao et al. (2021)."""
    p = patch_size if isinstance(patch_size, int) else patch_size[0]
    if isinstance(patch_size, tuple) and patch_size[0] != patch_size[1] or p < 4 or p & (p - 1):
        raise ValueError(f"conv_stem: needs a square power-of-two patch size >= 4, got {patch_size}")
    c = base_channels
    layers: list[nn.Module] = [
        nn.Conv2d(3, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
    ]  # fmt: skip
    layers += [_BasicBlock(c, c) for _ in range(blocks_per_stage)]
    for _ in range(p.bit_length() - 3):  # stride 4 so far
        layers += [_BasicBlock(c, 2 * c, 2)] + [
            _BasicBlock(2 * c, 2 * c) for _ in range(blocks_per_stage - 1)
        ]
        c *= 2
    layers.append(nn.Conv2d(c, width, 1))
    return nn.Sequential(*layers)


class FlameEstimatorNet(nn.Module):
    """timm ViT + query tokens -> :class:`EstimatorOutput`.

    Args:
        backbone: any timm model name built by timm's ``VisionTransformer`` class (default the CLIP ViT-B/16
            layout that FaRL uses).
        img_size: input side in pixels (square); the positional embedding of a checkpoint at another size is
            resampled by timm's checkpoint filter.
        n_shape, n_expression: FLAME coefficient counts (300, 100).
        identity_dim: identity feature size (1024, the UV generator's latent).
        lighting_dim: lighting latent size (27 = 9 SH x 3 colours by default).
        init: ``"farl"`` | ``"random"`` | ``"deferred"`` (module docstring).
        pretrained_path: local FaRL / CLIP checkpoint for ``init="farl"``.
        translation_scale: metres per unit of the translation head output.
        eyelid_init: eyelid value predicted at initialisation, in (0, 1).
        query_init_std: std of the noise added to the query tokens (and of their random init).
        head_init: last layer of the parameter heads: ``"default"`` (PyTorch's initialisation) or ``"zero"``
            (exactly the neutral head at initialisation); see the module docstring.
        fast_mlp: replace QuickGELU MLPs by :class:`QuickGeluMlp` (same function and parameter names, ~20%
            faster on CPU); no effect on backbones with another activation.
        timm_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``embed_dim=64, depth=2,
            num_heads=2`` for a tiny test backbone). ``num_classes`` is always 0.
        stem: ``"patch"`` (the backbone's patch embedding) or ``"conv"`` (a convolutional stem, see the module
            docstring; needs a power-of-two patch size and no pretrained checkpoint).
        jaw_opening: ``"free"`` (the jaw's axis-angle as predicted) or ``"relu"`` (SMIRK's: opening ``relu(x)``,
            sideways components clamped to +-``jaw_side_max`` radians); see the module docstring.
        jaw_side_max: the clamp of the jaw's sideways components with ``jaw_opening="relu"`` (radians).

    Input ``images`` [B, 3, img_size, img_size] RGB in [0, 1]; the module normalises them with the backbone's
    ``pretrained_cfg`` mean and std (OpenAI CLIP's for the CLIP layouts, which FaRL also uses), stored as
    non-persistent buffers. Outputs are float32, also under bf16 autocast.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        img_size: int = 224,
        n_shape: int = 300,
        n_expression: int = 100,
        identity_dim: int = 1024,
        lighting_dim: int = 27,
        init: str = "farl",
        pretrained_path: str | Path | None = None,
        translation_scale: float = 0.1,
        eyelid_init: float = 0.02,
        query_init_std: float = 0.02,
        head_init: str = "default",
        fast_mlp: bool = True,
        timm_kwargs: dict[str, Any] | None = None,
        stem: str = "patch",
        jaw_opening: str = "free",
        jaw_side_max: float = 0.2,
    ) -> None:
        super().__init__()
        if jaw_opening not in ("free", "relu"):
            raise ValueError(f"FlameEstimatorNet: jaw_opening must be 'free' or 'relu', got {jaw_opening!r}")
        self.jaw_opening, self.jaw_side_max = jaw_opening, float(jaw_side_max)
        if head_init not in ("default", "zero"):
            raise ValueError(f"FlameEstimatorNet: head_init must be 'default' or 'zero', got {head_init!r}")
        if stem not in ("patch", "conv"):
            raise ValueError(f"FlameEstimatorNet: stem must be 'patch' or 'conv', got {stem!r}")
        if stem == "conv" and init == "farl":
            raise ValueError(
                "FlameEstimatorNet: stem='conv' replaces the patch projection that a FaRL checkpoint provides; "
                "use it with init='random'"
            )
        if init not in _INIT_CHOICES:
            raise ValueError(f"FlameEstimatorNet: init must be one of {_INIT_CHOICES}, got {init!r}")
        if not 0.0 < eyelid_init < 1.0:
            raise ValueError(f"FlameEstimatorNet: eyelid_init must be in (0, 1), got {eyelid_init}")
        kwargs = dict(timm_kwargs or {})
        kwargs.pop("num_classes", None)
        try:
            vit = timm.create_model(backbone, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
        except TypeError as e:
            raise TypeError(
                f"FlameEstimatorNet: cannot build timm backbone {backbone!r} with img_size={img_size} and "
                f"{kwargs} ({e}); a timm VisionTransformer (vit_*, deit_*, ...) is required"
            ) from e
        if not isinstance(vit, VisionTransformer):
            raise TypeError(
                f"FlameEstimatorNet: backbone {backbone!r} is a {type(vit).__name__}; a timm VisionTransformer "
                "(vit_*, deit_*, ...) is required"
            )
        if stem == "conv":
            vit.patch_embed.proj = conv_stem(vit.embed_dim, vit.patch_embed.patch_size)
        self.stem = stem
        if fast_mlp:
            for blk in vit.blocks:
                if QuickGeluMlp.applies_to(getattr(blk, "mlp", None)):
                    blk.mlp = QuickGeluMlp(blk.mlp)
        self.backbone: VisionTransformer = vit
        self.backbone_name = backbone
        self.img_size = img_size
        self.n_shape, self.n_expression = n_shape, n_expression
        self.identity_dim, self.lighting_dim = identity_dim, lighting_dim
        self.translation_scale = float(translation_scale)
        self.eyelid_logit = math.log(eyelid_init / (1.0 - eyelid_init))
        self.query_init_std = float(query_init_std)

        cfg = vit.pretrained_cfg or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)

        D = vit.embed_dim
        self.query_tokens = nn.Parameter(torch.zeros(1, len(QUERY_GROUPS), D))
        nn.init.trunc_normal_(self.query_tokens, std=self.query_init_std)
        n_rot = len(ROTATION_FIELDS)
        self.heads = nn.ModuleDict(
            {
                "shape": _mlp_head(D, n_shape, head_init == "zero"),
                "expression": _mlp_head(D, n_expression + 2, head_init == "zero"),  # + eyelids
                "pose": _mlp_head(D, 6 * n_rot + 3, head_init == "zero"),  # 6D rotations + translation
                "lighting": _mlp_head(D, lighting_dim, head_init == "zero"),
                "identity": _mlp_head(D, identity_dim, zero_last=False),
            }
        )
        self.register_buffer("identity_6d", torch.tensor(IDENTITY_6D, dtype=torch.float32), False)

        if init == "farl":
            if pretrained_path is None:
                from headrecon.nets.farl import FARL_HELP

                raise ValueError(
                    "FlameEstimatorNet: init='farl' needs pretrained_path, a local FaRL checkpoint. "
                    f"{FARL_HELP} Use init='random' to train from scratch on purpose."
                )
            self.load_pretrained(pretrained_path)
        elif init == "random":
            log.warning(
                "FlameEstimatorNet: backbone %s randomly initialised (init='random'), no FaRL weights",
                backbone,
            )

    # ------------------------------------------------------------------------------------------- weights
    def load_pretrained(self, path: str | Path) -> Any:
        """Load the backbone from a local FaRL / OpenAI-CLIP / timm checkpoint (strict; see
        :func:`headrecon.nets.farl.load_farl_backbone`), then start the query tokens from the class token.
        Returns the load report."""
        from headrecon.nets.farl import load_farl_backbone

        report = load_farl_backbone(self.backbone, path)
        self.init_queries_from_cls()
        return report

    @torch.no_grad()
    def init_queries_from_cls(self, noise_std: float | None = None) -> None:
        """Set every query token to the class token plus its positional embedding (+ N(0, noise_std) noise)."""
        vit = self.backbone
        if vit.cls_token is None:
            return
        cls = vit.cls_token[0, 0]
        if vit.pos_embed is not None and not vit.no_embed_class:
            cls = cls + vit.pos_embed[0, 0]
        std = self.query_init_std if noise_std is None else noise_std
        q = cls.expand_as(self.query_tokens[0]).clone()
        self.query_tokens.copy_((q + torch.randn_like(q) * std)[None])

    # ------------------------------------------------------------------------------------------- forward
    def normalize(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> the backbone's normalised input."""
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def forward_tokens(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, Q, D] the final (normed) query tokens, in ``QUERY_GROUPS`` order."""
        vit = self.backbone
        x = vit.patch_embed(self.normalize(images))
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        q = self.query_tokens.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat((x, q), dim=1)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        return x[:, -len(QUERY_GROUPS) :]

    def decode(self, tokens: Tensor) -> EstimatorOutput:
        """[B, Q, D] query tokens -> :class:`EstimatorOutput` (parameterisations in the module docstring)."""
        t = dict(zip(QUERY_GROUPS, tokens.unbind(1)))
        # heads may run in bf16 under autocast; everything after them is fp32 (a small 6D offset added to the
        # identity in bf16 would be rounded away; Gram-Schmidt and atan2 want fp32), so outputs are fp32
        shape = self.heads["shape"](t["shape"]).float()
        ex = self.heads["expression"](t["expression"]).float()
        expression, eyelid_z = ex[:, : self.n_expression], ex[:, self.n_expression :]
        pose = self.heads["pose"](t["pose"]).float()
        n_rot = len(ROTATION_FIELDS)
        d6 = pose[:, : 6 * n_rot].reshape(-1, n_rot, 6) + self.identity_6d
        aa = rotation_6d_to_axis_angle(d6)  # [B, 5, 3]
        translation = pose[:, 6 * n_rot :] * self.translation_scale
        eyelids = torch.sigmoid(eyelid_z + self.eyelid_logit)
        rotations = {name: aa[:, i] for i, name in enumerate(ROTATION_FIELDS)}
        if self.jaw_opening == "relu":
            jaw = rotations["jaw_rotation"]
            side = jaw[:, 1:].clamp(-self.jaw_side_max, self.jaw_side_max)
            rotations["jaw_rotation"] = torch.cat([torch.relu(jaw[:, :1]), side], dim=1)
        flame = FlameParams(
            shape=shape,
            expression=expression,
            eyelids=eyelids,
            translation=translation,
            **rotations,
        )
        lighting = self.heads["lighting"](t["lighting"]).float()
        identity = self.heads["identity"](t["identity"]).float()
        return EstimatorOutput(flame=flame, lighting=lighting, identity=identity)

    def forward(self, images: Tensor) -> EstimatorOutput:
        """[B, 3, img_size, img_size] RGB in [0, 1] -> :class:`EstimatorOutput`."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FlameEstimatorNet: expected images [B, 3, H, W], got {list(images.shape)}")
        return self.decode(self.forward_tokens(images))

    def num_flops(self, batch_size: int = 1) -> int:
        """FLOPs of one forward pass, counted by :func:`count_flops` (a multiply-add counts 2)."""
        p = next(self.parameters())
        x = torch.rand(batch_size, 3, self.img_size, self.img_size, device=p.device)
        return count_flops(self, x)


def count_flops(module: nn.Module, *inputs: Any) -> int:
    """FLOPs of ``module(*inputs)`` under ``torch.utils.flop_counter.FlopCounterMode`` (no grad).

    torch 2.14's counter has no formula for the CPU kernel of ``F.scaled_dot_product_attention``
    (``aten._scaled_dot_product_flash_attention_for_cpu``), so attention would count as zero on CPU; it is
    mapped here to the counter's own SDPA formula (the one used for the CUDA kernels).
    """
    from torch.utils import flop_counter

    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None and cpu_sdpa not in flop_counter.flop_registry:

        def cpu_sdpa_flop(q_shape, k_shape, v_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)

        mapping[cpu_sdpa] = cpu_sdpa_flop
    with torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        module(*inputs)
    return int(fc.get_total_flops())
