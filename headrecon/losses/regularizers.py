"""Regularisers: FLAME priors (w_beta, w_psi = 1) and Gaussian regularisers (w_x 0.1, w_s 0.01, w_o 0.001).

Weights live in the config; these modules return unweighted terms.

* FLAME priors: FLAME's shape and expression coefficients are unit-variance PCA coordinates, so the Gaussian prior
  is the squared norm of the coefficient vector (summed over coefficients, averaged over the batch): the negative
  log-likelihood up to a factor 1/2. (A mean over coefficients would weaken it by the number of coefficients.)
* Gaussian offsets: mean squared local offset (in units of the parent triangle's scale), keeping Gaussians near
  their triangles.
* Gaussian scales: mean of relu(scale - max_scale) over the local (triangle-relative) in-plane scales, as in
  GaussianAvatars, so no Gaussian grows far beyond its triangle (max_scale configurable, default 0.6).
* Gaussian opacities: mean opacity, a sparsity prior that lets unneeded Gaussians fade (and be pruned, since
  pruning removes the lowest running mean opacity). The supplementary gives only the weight; this is our reading.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FlamePrior", "GaussianRegularizer", "PoseLimits"]


class FlamePrior(nn.Module):
    """coefficients [B, K] -> mean over heads of the squared norm of the coefficients."""

    def forward(self, coefficients: Tensor) -> Tensor:
        return coefficients.square().sum(-1).mean()


class GaussianRegularizer(nn.Module):
    """Offsets [B, N, 3], local scales [B, N, 2], opacities [B, N] -> dict of unweighted terms."""

    def __init__(self, max_scale: float = 0.6) -> None:
        super().__init__()
        self.max_scale = max_scale

    def forward(self, offsets: Tensor, scales: Tensor, opacities: Tensor) -> dict[str, Tensor]:
        return {
            "offset": offsets.square().sum(-1).mean(),
            "scale": torch.relu(scales - self.max_scale).mean(),
            "opacity": opacities.mean(),
        }


class PoseLimits(nn.Module):
    """Soft anatomical limits (our addition; the supplementary has no pose prior): the squared excess of each
    joint's rotation angle (radians) and of the translation norm (metres) over a limit, summed per head and
    averaged over the batch. Zero inside the limits, so it only stops degenerate drift (eyes rolled into the head,
    jaw opened past anatomy, the head pushed out of frame) that photometric losses cannot see.

    Limits: neck 0.8 rad, jaw 0.5 rad, eyes 0.6 rad, translation 0.1 m.
    """

    def __init__(
        self, neck: float = 0.8, jaw: float = 0.5, eyes: float = 0.6, translation: float = 0.1
    ) -> None:
        super().__init__()
        self.limits = {"neck_rotation": neck, "jaw_rotation": jaw, "left_eye_rotation": eyes,
                       "right_eye_rotation": eyes, "translation": translation}  # fmt: skip

    def forward(self, params) -> Tensor:
        total = 0.0
        for name, limit in self.limits.items():
            total = total + torch.relu(getattr(params, name).norm(dim=-1) - limit).square()
        return total.mean()
