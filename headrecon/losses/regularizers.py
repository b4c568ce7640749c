"""Regularisers: FLAME priors (w_beta, w_psi = 1) and Gaussian regularisers (w_x 0.1, w_s 0.01, w_o 0.001).

Weights live in the config; these modules return unweighted terms.

* FLAME priors: FLAME's shape and expression coefficients are unit-variance PCA coordinates, so the Gaussian prior
  is the mean squared coefficient (per head, averaged over the batch).
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

__all__ = ["FlamePrior", "GaussianRegularizer"]


class FlamePrior(nn.Module):
    """coefficients [B, K] -> mean over heads of the mean squared coefficient."""

    def forward(self, coefficients: Tensor) -> Tensor:
        return coefficients.square().mean()


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
