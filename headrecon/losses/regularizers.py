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
    """coefficients [B, K] -> mean of the squared coefficients (over heads and components).

    A mean, not a sum over the K components, as in SMIRK's `torch.mean(params ** 2)` regularisers, with which
    the supplementary's weights (1.0 for shape and expression against 6.0 for a per-pixel-mean L1) balance: with
    the sum, FLAME's 300 unit-variance shape components cost ~300 at the truth and no image term can move them.
    """

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


class PoseLimits(nn.Module):
    """Soft anatomical limits (our addition; the supplementary has no pose prior): the squared excess of each
    joint's rotation angle (radians) and of the translation norm (metres) over a limit, plus the squared excess of
    the jaw's axis-angle components outside their range, summed per head and averaged over the batch. Zero inside
    the limits, so it only stops degenerate drift (eyes rolled into the head, the jaw closed through the upper lip
    or twisted sideways, the head pushed out of frame) that photometric losses cannot see.

    Limits: neck 0.8 rad, eyes 0.6 rad, translation 0.1 m, jaw 0.5 rad in all and per axis (FLAME's jaw opens
    about +x): x in [-0.05, 0.5], y and z in [-0.15, 0.15].
    """

    def __init__(
        self,
        neck: float = 0.8,
        jaw: float = 0.5,
        eyes: float = 0.6,
        translation: float = 0.1,
        jaw_min: tuple[float, float, float] = (-0.05, -0.15, -0.15),
        jaw_max: tuple[float, float, float] = (0.5, 0.15, 0.15),
    ) -> None:
        super().__init__()
        self.limits = {"neck_rotation": neck, "jaw_rotation": jaw, "left_eye_rotation": eyes,
                       "right_eye_rotation": eyes, "translation": translation}  # fmt: skip
        self.register_buffer("jaw_min", torch.tensor(jaw_min), persistent=False)
        self.register_buffer("jaw_max", torch.tensor(jaw_max), persistent=False)

    def forward(self, params) -> Tensor:
        total = 0.0
        for name, limit in self.limits.items():
            total = total + torch.relu(getattr(params, name).norm(dim=-1) - limit).square()
        jaw = params.jaw_rotation
        jaw_min, jaw_max = self.jaw_min.to(jaw), self.jaw_max.to(jaw)
        total = total + (torch.relu(jaw_min - jaw).square() + torch.relu(jaw - jaw_max).square()).sum(-1)
        return total.mean()


class PosePrior(nn.Module):
    """A weak Gaussian prior on what images barely constrain (our addition, like SMIRK's jaw regulariser): the
    squared neck and eye rotations and sideways jaw components (y, z) in radians, plus the squared translation in
    units of `translation_scale` metres, summed per head and averaged over the batch. The jaw's opening (x) and
    the global rotation are left to the images (and to `PoseLimits`).

    Neck rotation trades off against the global rotation, eye rotations are a few pixels at small renders, and the
    distance to the camera trades off against head size (shape), so without a restoring force an optimiser like
    Adam random-walks them on noisy gradients (on the synthetic demo the head drifts 0.1 m towards the camera).
    Face crops (ours and the datasets') centre the head and normalise its size: the translation is small.
    """

    def __init__(self, translation_scale: float = 0.05) -> None:
        super().__init__()
        self.translation_scale = translation_scale

    def forward(self, params) -> Tensor:
        total = (
            params.neck_rotation.square().sum(-1)
            + params.left_eye_rotation.square().sum(-1)
            + params.right_eye_rotation.square().sum(-1)
            + params.jaw_rotation[..., 1:].square().sum(-1)
            + (params.translation / self.translation_scale).square().sum(-1)
        )
        return total.mean()
