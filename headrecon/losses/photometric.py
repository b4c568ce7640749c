"""Pixel-space photometric losses: SHeaP's L_L1 (weight 6 in the paper's best configuration) and a silhouette
term on the render's alpha (our addition)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MaskedL1", "SilhouetteL1", "masked_mean", "masked_pair"]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of values [B, C, H, W] over pixels where mask [B, 1, H, W] (weights in [0, 1]) is set; plain mean
    without a mask. An empty mask gives 0 (not NaN)."""
    if mask is None:
        return values.mean()
    w = mask.expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def masked_pair(render: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """The common prologue of the image-network losses: checks that render and target are both [B, 3, H, W],
    detaches the target and, with a mask [B, 1, H, W] in [0, 1], composites both onto black by it."""
    if render.shape != target.shape or render.ndim != 4 or render.shape[1] != 3:
        raise ValueError(f"render and target must both be [B, 3, H, W], got {render.shape}, {target.shape}")
    target = target.detach()
    if mask is not None:
        render = render * mask
        target = target * mask
    return render, target


class MaskedL1(nn.Module):
    """Mean absolute difference between render and target, [B, 3, H, W] in [0, 1], over the mask's pixels."""

    def forward(self, render: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return masked_mean((render - target).abs(), mask)


class SilhouetteL1(nn.Module):
    """Mean absolute difference between the render's alpha and the target's head mask, [B, 1, H, W] in [0, 1]
    (our addition, `w_silhouette`). The L1 on colours already sees the silhouette through the background colour,
    but only as strongly as the head's colour differs from it; this term sees it everywhere, and fixes the head's
    size and outline (on the synthetic demo, without it the rendered head shrinks and turns away, docs/results.md).
    """

    def forward(self, alpha: Tensor, mask: Tensor) -> Tensor:
        if alpha.shape != mask.shape:
            raise ValueError(f"SilhouetteL1: alpha {list(alpha.shape)} and mask {list(mask.shape)} differ")
        return (alpha - mask).abs().mean()
