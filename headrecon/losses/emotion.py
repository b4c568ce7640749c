"""Emotion loss with EMOCA's frozen AffectNet network (SHeaP's L_emo, weight 0.1 in the paper's best configuration).

``loss = mean((f(render) - f(target))^2)`` over the batch and the 2048 features, where ``f`` is EMOCA's emotion
backbone (:class:`headrecon.nets.emotion_net.EmotionResNet50`: inputs resized to 224x224, average-pooled
layer-4 features) and the target features are detached.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headrecon.losses.photometric import masked_pair
from headrecon.nets.emotion_net import EmotionResNet50, load_emotion_resnet50

__all__ = ["EmocaEmotionLoss", "EmotionLoss", "build_emotion_net"]


def build_emotion_net(
    checkpoint: str | Path | None = None, prefix: str = "backbone.", random_init: bool = False
) -> EmotionResNet50:
    """EMOCA's emotion backbone from its ``.ckpt`` (see :func:`load_emotion_resnet50`), or random weights when
    ``random_init=True`` (demos and tests; logged as a warning)."""
    if random_init:
        return EmotionResNet50.random()
    if checkpoint is None:
        raise ValueError(
            "the emotion loss needs EMOCA's emotion-network checkpoint (checkpoint=PATH to "
            "ResNet50/checkpoints/*.ckpt); set random_init=True only for demos and tests."
        )
    return load_emotion_resnet50(checkpoint, prefix=prefix)


class EmotionLoss(nn.Module):
    """MSE between EMOCA emotion features of render and target.

    Args:
        net: the frozen emotion backbone (``build_emotion_net(...)``).
    """

    def __init__(self, net: EmotionResNet50) -> None:
        super().__init__()
        self.net = net
        super().train(False)

    def train(self, mode: bool = True) -> EmotionLoss:
        """Stays in eval mode whatever ``mode`` says (the network is frozen)."""
        return super().train(False)

    def forward(self, render: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            render: [B, 3, H, W] RGB in [0, 1] (gradients flow here); resized to 224x224 inside the network.
            target: [B, 3, H, W] RGB in [0, 1] (features detached).
            mask: optional [B, 1, H, W] in [0, 1]; both images are composited onto black by it first.

        Returns:
            scalar: mean squared feature difference (0 for identical images).
        """
        render, target = masked_pair(render, target, mask)
        with torch.no_grad():
            f_tgt = self.net(target)
        return F.mse_loss(self.net(render), f_tgt)


class EmocaEmotionLoss(EmotionLoss):
    """:class:`EmotionLoss` built from EMOCA's emotion-network checkpoint, for class_path configs
    (`random_init` only when set, logged)."""

    def __init__(
        self, checkpoint: str | None = None, prefix: str = "backbone.", random_init: bool = False
    ) -> None:
        super().__init__(build_emotion_net(checkpoint, prefix=prefix, random_init=random_init))
