"""Emotion metrics of the AffectNet probe (the EMOCA / SHeaP Table 3 set), built on torchmetrics.

    metrics = EmotionMetrics(num_classes=8)
    metrics.update(logits [B, K], valence [B], arousal [B], target_class [B], target_valence [B], target_arousal [B])
    metrics.compute()  # {"valence_ccc", "valence_pcc", "valence_rmse", "valence_sagr", "arousal_...",
                       #  "expression_accuracy", "expression_f1_macro"}: scalar tensors

Definitions (N samples, x predictions, y targets):

* CCC, concordance correlation: torchmetrics' ``ConcordanceCorrCoef``,
  ``2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with the unbiased (n - 1) sample (co)variances. Lin's
  original estimator divides by n; the two differ by O(1/N) (< 0.03 % on AffectNet's 4,000 validation images).
* PCC: torchmetrics' ``PearsonCorrCoef``.
* RMSE: torchmetrics' ``MeanSquaredError(squared=False)``.
* SAGR, sign agreement: ``mean(sign(x) == sign(y))`` (sign(0) = 0, as in EMOCA's evaluation), our
  :class:`SignAgreement` (torchmetrics has none); it keeps sums, so it is exact under DDP.
* expression accuracy: ``MulticlassAccuracy(average="micro")`` (fraction of correct top-1 classes);
  macro F1: ``MulticlassF1Score(average="macro")``, the unweighted mean of per-class F1.

Every metric accumulates over ``update`` calls and synchronises across DDP ranks (torchmetrics' states).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import ConcordanceCorrCoef, MeanSquaredError, PearsonCorrCoef

__all__ = ["SignAgreement", "EmotionMetrics", "emotion_metrics"]


class SignAgreement(Metric):
    """SAGR: the fraction of samples whose prediction has the target's sign. preds, target: [N]."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("agree", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"SignAgreement: preds {tuple(preds.shape)} vs target {tuple(target.shape)}")
        self.agree += (torch.sign(preds) == torch.sign(target)).sum().to(torch.float64)
        self.total += target.numel()

    def compute(self) -> Tensor:
        return (self.agree / self.total.clamp_min(1.0)).to(torch.float32)


def _regression_metrics() -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "ccc": ConcordanceCorrCoef(),
            "pcc": PearsonCorrCoef(),
            "rmse": MeanSquaredError(squared=False),
            "sagr": SignAgreement(),
        }
    )


class EmotionMetrics(nn.Module):
    """Valence and arousal CCC, PCC, RMSE, SAGR; expression accuracy and macro F1 (see the module docstring).

    A plain ``nn.Module`` holding torchmetrics metrics, so it moves with its LightningModule and syncs under DDP.
    """

    NAMES = tuple(
        [f"{d}_{m}" for d in ("valence", "arousal") for m in ("ccc", "pcc", "rmse", "sagr")]
        + ["expression_accuracy", "expression_f1_macro"]
    )

    def __init__(self, num_classes: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.valence = _regression_metrics()
        self.arousal = _regression_metrics()
        self.accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.f1 = MulticlassF1Score(num_classes=num_classes, average="macro")

    @torch.no_grad()
    def update(
        self,
        logits: Tensor,
        valence: Tensor,
        arousal: Tensor,
        target_class: Tensor,
        target_valence: Tensor,
        target_arousal: Tensor,
    ) -> None:
        """logits [B, K] (or predicted classes [B]); valence, arousal, targets [B]; target_class [B] in 0..K-1."""
        for group, pred, tgt in (
            (self.valence, valence, target_valence),
            (self.arousal, arousal, target_arousal),
        ):
            pred, tgt = pred.detach().float().reshape(-1), tgt.detach().float().reshape(-1)
            for metric in group.values():
                metric.update(pred, tgt)
        target_class = target_class.long().reshape(-1)
        self.accuracy.update(logits.detach(), target_class)
        self.f1.update(logits.detach(), target_class)

    def compute(self) -> dict[str, Tensor]:
        """Every metric in :attr:`NAMES`, as float scalars."""
        out = {f"valence_{k}": m.compute() for k, m in self.valence.items()}
        out.update({f"arousal_{k}": m.compute() for k, m in self.arousal.items()})
        out["expression_accuracy"] = self.accuracy.compute()
        out["expression_f1_macro"] = self.f1.compute()
        return {k: v.float().reshape(()) for k, v in out.items()}

    def reset(self) -> None:
        for m in self.modules():
            if isinstance(m, Metric):
                m.reset()


def emotion_metrics(
    logits: Tensor,
    valence: Tensor,
    arousal: Tensor,
    target_class: Tensor,
    target_valence: Tensor,
    target_arousal: Tensor,
    num_classes: int | None = None,
) -> dict[str, float]:
    """One-shot :class:`EmotionMetrics` on whole tensors (shapes as in ``EmotionMetrics.update``)."""
    k = (
        num_classes
        if num_classes is not None
        else (logits.shape[1] if logits.ndim == 2 else int(logits.max()) + 1)
    )
    m = EmotionMetrics(k).to(logits.device)
    m.update(logits, valence, arousal, target_class, target_valence, target_arousal)
    return {name: float(v) for name, v in m.compute().items()}
