"""Image and geometry metrics: PSNR and SSIM (torchmetrics), vertex error after rigid (Kabsch) alignment."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr", "ssim", "kabsch", "rigid_vertex_error_mm"]


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio (dB) of images [B, 3, H, W] in [0, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(pred, target, data_range=1.0)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Structural similarity of images [B, 3, H, W] in [0, 1] (Gaussian window 11, sigma 1.5)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred, target, data_range=1.0)


def kabsch(src: Tensor, dst: Tensor, *, with_scale: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity (or rigid) transform mapping src [B, N, 3] onto dst [B, N, 3]:
    returns R [B, 3, 3], t [B, 3], s [B] with dst ~ s * src @ R^T + t (Umeyama 1991; s = 1 unless with_scale)."""
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    a, b = src - mu_s, dst - mu_d
    H = a.transpose(1, 2) @ b  # [B, 3, 3]
    U, S, Vh = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(Vh.transpose(1, 2) @ U.transpose(1, 2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = Vh.transpose(1, 2) @ D @ U.transpose(1, 2)
    if with_scale:
        s = (S * torch.diagonal(D, dim1=1, dim2=2)).sum(-1) / a.square().sum(dim=(1, 2)).clamp_min(1e-20)
    else:
        s = torch.ones(src.shape[0], dtype=src.dtype, device=src.device)
    t = mu_d[:, 0] - s[:, None] * (R @ mu_s[:, 0, :, None])[..., 0]
    return R, t, s


def rigid_vertex_error_mm(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean per-vertex distance [B] in millimetres after rigidly aligning pred [B, V, 3] to gt [B, V, 3] (metres)."""
    R, t, _ = kabsch(pred, gt)
    aligned = pred @ R.transpose(1, 2) + t[:, None]
    return (aligned - gt).norm(dim=-1).mean(dim=1) * 1000.0
