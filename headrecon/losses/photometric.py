"""Pixel-space photometric loss (SHeaP's L_L1, weight 6 in the paper's best configuration)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MaskedL1", "masked_mean"]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of values [B, C, H, W] over pixels where mask [B, 1, H, W] (weights in [0, 1]) is set; plain mean
    without a mask. An empty mask gives 0 (not NaN)."""
    if mask is None:
        return values.mean()
    w = mask.expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(1.0)


class MaskedL1(nn.Module):
    """Mean absolute difference between render and target, [B, 3, H, W] in [0, 1], over the mask's pixels."""

    def forward(self, render: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return masked_mean((render - target).abs(), mask)
