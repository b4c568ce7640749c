"""`AffectNetProbe`: how much emotion do predicted FLAME parameters carry? (supplementary 1.2, Table 3)

A 4-layer MLP (:class:`~headrecon.nets.probe_mlp.ProbeMLP`) maps FLAME parameters, predicted once by any
estimator and cached (:mod:`headrecon.data.affectnet`), to AffectNet's 8 emotion classes, valence and arousal.

    loss = 0.7 CE(logits, class) + 0.8 MSE(valence) + 0.3 MSE(arousal)
    Adam(lr 1e-4, weight decay 1e-6), lr x 0.6 after every epoch (StepLR), batch 16, 20 epochs

Batches (see :class:`~headrecon.data.affectnet.AffectNetDataModule`): ``{"features": [B, F], "emotion":
[B] long (class 0..7), "valence": [B], "arousal": [B]}``. Inputs are standardised with the training set's
per-feature mean and standard deviation (buffers filled from the DataModule at fit start and saved in checkpoints; disable with
``standardize=False``). Validation and test log ``{val,test}/{valence,arousal}_{ccc,pcc,rmse,sagr}``,
``{val,test}/expression_accuracy`` and ``{val,test}/expression_f1_macro``
(:class:`~headrecon.eval.emotion_metrics.EmotionMetrics`).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from headrecon.eval.emotion_metrics import EmotionMetrics
from headrecon.nets.probe_mlp import ProbeMLP, ProbeOutput

__all__ = ["AffectNetProbe"]

log = logging.getLogger(__name__)


class AffectNetProbe(pl.LightningModule):
    """MLP probe on FLAME parameters: 8 emotion logits, valence and arousal.

    Args:
        in_features: size of the feature vector (default 105: expression 100 + jaw rotation 3 + eyelids 2, the
            DataModule's default ``param_keys``).
        hidden_dim, num_layers, dropout, num_classes: the MLP (paper: 4 layers, dropout 0.3, 8 classes).
        w_expression, w_valence, w_arousal: loss weights (paper: 0.7, 0.8, 0.3).
        lr, lr_decay, lr_step_epochs, weight_decay: Adam with StepLR (paper: 1e-4, x0.6 every epoch, 1e-6).
        standardize: standardise inputs with the training set's statistics.
    """

    def __init__(
        self,
        in_features: int = 105,
        hidden_dim: int = 1024,
        num_layers: int = 4,
        dropout: float = 0.3,
        num_classes: int = 8,
        w_expression: float = 0.7,
        w_valence: float = 0.8,
        w_arousal: float = 0.3,
        lr: float = 1e-4,
        lr_decay: float = 0.6,
        lr_step_epochs: int = 1,
        weight_decay: float = 1e-6,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = ProbeMLP(in_features, hidden_dim, num_layers, dropout, num_classes)
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self.val_metrics = EmotionMetrics(num_classes)
        self.test_metrics = EmotionMetrics(num_classes)

    # ------------------------------------------------------------------------------------------- forward
    def set_feature_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Per-feature mean and std [F] used to standardise inputs (std is clamped to >= 1e-6)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=self.feature_mean.dtype))
        self.feature_std.copy_(torch.as_tensor(std, dtype=self.feature_std.dtype).clamp_min(1e-6))

    def forward(self, features: Tensor) -> ProbeOutput:
        """features [B, F] (raw FLAME parameters) -> logits [B, K], valence [B], arousal [B]."""
        if self.hparams.standardize:
            features = (features - self.feature_mean) / self.feature_std
        return self.net(features)

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.hparams.standardize and dm is not None and hasattr(dm, "feature_statistics"):
            mean, std = dm.feature_statistics()
            self.set_feature_statistics(mean.to(self.device), std.to(self.device))
        elif self.hparams.standardize:
            log.warning(
                "AffectNetProbe: no DataModule with feature_statistics(); inputs are not standardised"
            )

    # -------------------------------------------------------------------------------------------- losses
    def compute_losses(self, batch: dict[str, Tensor], out: ProbeOutput) -> dict[str, Tensor]:
        """Unweighted CE / MSE terms and 'loss', the weighted total."""
        hp = self.hparams
        ce = F.cross_entropy(out.logits, batch["emotion"].long())
        mse_v = F.mse_loss(out.valence, batch["valence"].to(out.valence.dtype))
        mse_a = F.mse_loss(out.arousal, batch["arousal"].to(out.arousal.dtype))
        loss = hp.w_expression * ce + hp.w_valence * mse_v + hp.w_arousal * mse_a
        return {"loss": loss, "emotion_ce": ce, "valence_mse": mse_v, "arousal_mse": mse_a}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.compute_losses(batch, self(batch["features"]))
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False,
                      batch_size=batch["features"].shape[0])  # fmt: skip
        return losses["loss"]

    def _eval_step(self, batch: dict[str, Tensor], stage: str, metrics: EmotionMetrics) -> None:
        out = self(batch["features"])
        losses = self.compute_losses(batch, out)
        self.log(f"{stage}/loss", losses["loss"], batch_size=batch["features"].shape[0], sync_dist=True)
        metrics.update(
            out.logits, out.valence, out.arousal, batch["emotion"], batch["valence"], batch["arousal"]
        )

    def _log_metrics(self, stage: str, metrics: EmotionMetrics) -> None:
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.compute().items()})
        metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int = 0) -> dict[str, Tensor]:
        """Class probabilities [B, K], predicted class [B], valence [B], arousal [B]."""
        features = batch["features"] if isinstance(batch, dict) else batch
        out = self(features)
        probs = out.logits.softmax(-1)
        return {"probabilities": probs, "emotion": probs.argmax(-1), "valence": out.valence,
                "arousal": out.arousal}  # fmt: skip

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step_epochs, gamma=hp.lr_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 1}}
