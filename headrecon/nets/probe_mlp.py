"""The AffectNet probe's MLP: FLAME parameters -> 8 emotion logits, valence, arousal (plain ``nn.Module``).

Supplementary 1.2: a 4-layer MLP with dropout 0.3 on each layer. Our reading: ``num_layers`` Linear layers;
every hidden layer is Linear -> LeakyReLU(0.2) -> Dropout(p); the last Linear gives ``num_classes + 2`` outputs.
The hidden width (1024 by default) is not stated in the paper; it is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["ProbeMLP", "ProbeOutput"]


@dataclass
class ProbeOutput:
    """logits [B, K]; valence [B]; arousal [B]."""

    logits: Tensor
    valence: Tensor
    arousal: Tensor


class ProbeMLP(nn.Module):
    """features [B, F] -> :class:`ProbeOutput`.

    Args:
        in_features: F, the concatenated FLAME parameters.
        hidden_dim: width of the hidden layers.
        num_layers: Linear layers in all (>= 1; the paper: 4).
        dropout: dropout after every hidden layer (the paper: 0.3).
        num_classes: emotion classes (AffectNet: 8).
    """

    def __init__(
        self,
        in_features: int,
        hidden_dim: int = 1024,
        num_layers: int = 4,
        dropout: float = 0.3,
        num_classes: int = 8,
    ) -> None:
        super().__init__()
        if num_layers < 1 or in_features < 1 or hidden_dim < 1:
            raise ValueError(f"ProbeMLP: need num_layers, in_features, hidden_dim >= 1 ({num_layers=})")
        self.in_features, self.num_classes = in_features, num_classes
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes + 2))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> ProbeOutput:
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"ProbeMLP: expected features [B, {self.in_features}], got {list(features.shape)}"
            )
        out = self.layers(features)
        k = self.num_classes
        return ProbeOutput(out[:, :k], out[:, k], out[:, k + 1])
