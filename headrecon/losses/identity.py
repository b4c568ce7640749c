"""Identity loss with a frozen ArcFace (SHeaP's L_ID, weight 0.3 in the paper's best configuration).

Render and target are cropped to 112x112 ArcFace crops with the same differentiable warp
(``kornia.geometry.transform.warp_affine``), embedded with :class:`headrecon.nets.arcface.ArcFace`, and compared:
``loss = mean_b (1 - cos(e_render_b, e_target_b))``, the target embeddings detached.

Alignment:

- with 5-point landmarks [B, 5, 2] (pixel coordinates (x, y) in the input image; insightface's ``kps`` order: left
  eye, right eye, nose tip, left mouth corner, right mouth corner, as seen in the image), the least-squares
  similarity transform (rotation, uniform scale, translation; what ``skimage``'s ``SimilarityTransform`` estimates
  for insightface's ``norm_crop``) maps them onto insightface's template ``arcface_dst``;
- without landmarks, a fixed **centre crop**: the central square of side ``center_crop * min(H, W)`` is resized to
  112x112 (default 0.8, for face crops roughly centred on the face, as our 224x224 estimator crops are).

Pixel convention: pixel centres at integer coordinates, as OpenCV's ``warpAffine`` (kornia with
``align_corners=True``); areas outside the image are black, as in ``norm_crop``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import Tensor, nn

from headrecon.losses.photometric import masked_pair
from headrecon.nets.arcface import ARCFACE_TEMPLATE_112, ArcFace

__all__ = [
    "ArcFaceIdentityLoss",
    "IdentityLoss",
    "arcface_align",
    "center_crop_affine",
    "similarity_from_landmarks",
]


def similarity_from_landmarks(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares similarity transform (no reflection) mapping ``src`` points onto ``dst``.

    Args:
        src: [B, N, 2] source points (x, y), N >= 2.
        dst: [N, 2] or [B, N, 2] destination points.

    Returns:
        [B, 2, 3] affine matrices ``A`` with ``dst ~ A @ [x, y, 1]``, of the form ``[[a, -b, tx], [b, a, ty]]``.
    """
    if src.ndim != 3 or src.shape[-1] != 2:
        raise ValueError(f"landmarks must be [B, N, 2], got {list(src.shape)}")
    b, n, _ = src.shape
    src = src.to(torch.float64)
    dst = dst.to(device=src.device, dtype=torch.float64).expand(b, n, 2)
    x, y = src[..., 0], src[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # u = a x - b y + tx ; v = b x + a y + ty, unknowns (a, b, tx, ty)
    rows_u = torch.stack([x, -y, one, zero], dim=-1)
    rows_v = torch.stack([y, x, zero, one], dim=-1)
    design = torch.cat([rows_u, rows_v], dim=1)  # [B, 2N, 4]
    rhs = torch.cat([dst[..., 0], dst[..., 1]], dim=1).unsqueeze(-1)  # [B, 2N, 1]
    sol = torch.linalg.lstsq(design, rhs).solution.squeeze(-1)  # [B, 4]
    a, bb, tx, ty = sol.unbind(-1)
    mat = torch.stack([torch.stack([a, -bb, tx], -1), torch.stack([bb, a, ty], -1)], dim=1)
    return mat.to(torch.float32)


def center_crop_affine(batch: int, height: int, width: int, fraction: float, size: int = 112) -> Tensor:
    """[B, 2, 3] affine matrices taking the central square of side ``fraction * min(H, W)`` to ``size x size``
    (pixel centres at integer coordinates)."""
    side = fraction * min(height, width)
    scale = size / side
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    c = (size - 1) / 2.0
    mat = torch.tensor([[scale, 0.0, c - scale * cx], [0.0, scale, c - scale * cy]], dtype=torch.float32)
    return mat.expand(batch, 2, 3).clone()


def arcface_align(
    images: Tensor, landmarks: Tensor | None = None, center_crop: float = 0.8, size: int = 112
) -> Tensor:
    """Differentiable ArcFace alignment.

    Args:
        images: [B, C, H, W].
        landmarks: optional [B, 5, 2] pixel coordinates (x, y) in ``images`` (insightface ``kps`` order).
        center_crop: fraction of min(H, W) of the centre crop used without landmarks.
        size: output side (112 for ArcFace).

    Returns:
        [B, C, size, size] crops (black outside the image).
    """
    b, _, h, w = images.shape
    if landmarks is None:
        mat = center_crop_affine(b, h, w, center_crop, size)
    else:
        if landmarks.shape != (b, 5, 2):
            raise ValueError(f"landmarks must be [B, 5, 2] = [{b}, 5, 2], got {list(landmarks.shape)}")
        template = torch.tensor(ARCFACE_TEMPLATE_112, dtype=torch.float64) * (size / 112.0)
        mat = similarity_from_landmarks(landmarks.detach(), template)
    mat = mat.to(device=images.device, dtype=images.dtype)
    return warp_affine(images, mat, (size, size), mode="bilinear", padding_mode="zeros", align_corners=True)


class IdentityLoss(nn.Module):
    """ArcFace identity loss: mean over the batch of 1 - cos(ArcFace(render crop), ArcFace(target crop)).

    Args:
        arcface: a frozen :class:`ArcFace` (e.g. ``build_arcface(onnx_path=".../buffalo_l/w600k_r50.onnx")``).
        center_crop: centre-crop fraction used when no landmarks are given (see the module docstring).
    """

    def __init__(self, arcface: ArcFace, center_crop: float = 0.8) -> None:
        super().__init__()
        if not 0.0 < center_crop <= 1.5:
            raise ValueError(f"center_crop must be in (0, 1.5], got {center_crop}")
        self.arcface = arcface
        self.center_crop = float(center_crop)
        super().train(False)

    def train(self, mode: bool = True) -> IdentityLoss:
        """Stays in eval mode whatever ``mode`` says (the network is frozen)."""
        return super().train(False)

    def embed(self, images: Tensor, landmarks: Tensor | None = None) -> Tensor:
        """[B, 3, H, W] in [0, 1] (+ optional [B, 5, 2] landmarks) -> L2-normalised embeddings [B, D]."""
        crops = arcface_align(images, landmarks, self.center_crop, self.arcface.input_size)
        return F.normalize(self.arcface(crops), dim=-1)

    def forward(
        self, render: Tensor, target: Tensor, mask: Tensor | None = None, landmarks: Tensor | None = None
    ) -> Tensor:
        """Args:
            render: [B, 3, H, W] RGB in [0, 1] (gradients flow here).
            target: [B, 3, H, W] RGB in [0, 1] (embeddings detached).
            mask: optional [B, 1, H, W] in [0, 1]; both images are composited onto black by it first.
            landmarks: optional [B, 5, 2] target-frame 5-point landmarks (pixels), used for both images.

        Returns:
            scalar in [0, 2]: mean of 1 - cosine similarity (0 for identical images).
        """
        render, target = masked_pair(render, target, mask)
        with torch.no_grad():
            e_tgt = self.embed(target, landmarks)
        e_ren = self.embed(render, landmarks)
        return (1.0 - (e_ren * e_tgt).sum(-1)).mean()


class ArcFaceIdentityLoss(IdentityLoss):
    """:class:`IdentityLoss` built from files, for class_path configs: insightface's recognition ONNX
    (`buffalo_l/w600k_r50.onnx`) or an arcface_torch iresnet `.pth`; `random_init` only when set (logged)."""

    def __init__(
        self,
        onnx_path: str | None = None,
        iresnet_path: str | None = None,
        arch: str = "r50",
        random_init: bool = False,
        center_crop: float = 0.8,
    ) -> None:
        from headrecon.nets.arcface import build_arcface

        arcface = build_arcface(
            onnx_path=onnx_path, iresnet_path=iresnet_path, arch=arch, random_init=random_init
        )
        super().__init__(arcface, center_crop=center_crop)
