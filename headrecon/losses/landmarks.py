"""Optional 2D landmark loss (off unless configured): projected FLAME landmarks vs. detected ones."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LandmarkLoss"]


class LandmarkLoss(nn.Module):
    """Mean L1 distance between predicted [B, K, 2] and target [B, K, 2] landmarks in pixels, divided by the image
    size so that it does not depend on the resolution. Optional per-landmark weights [B, K] (0 = missing)."""

    def forward(
        self, predicted: Tensor, target: Tensor, image_size: int, weights: Tensor | None = None
    ) -> Tensor:
        d = (predicted - target).abs().sum(-1) / image_size  # [B, K]
        if weights is None:
            return d.mean()
        return (d * weights).sum() / weights.sum().clamp_min(1.0)
