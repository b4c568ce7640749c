"""`FlameEstimator`: the product users run, one face crop in, FLAME parameters out.

    est = FlameEstimator.from_checkpoint("run.ckpt", flame_dir="flame/")   # our own or a GaussianRegressor ckpt
    out = est(images)                                                       # EstimatorOutput
    mesh = est.flame(out.flame).vertices                                    # [B, V, 3] metres

As a LightningModule it also trains a supervised baseline on synthetic ground truth (parameter and vertex
losses; the self-supervised SHeaP training lives in `GaussianRegressor`). Batches are dicts:
``{"image": [B, 3, S, S] in [0, 1], "flame": {FlameParams field: [B, D]}}``; ``predict_step`` also accepts a
bare image tensor.

FLAME's arrays are never stored in checkpoints (they are the user's licensed files): `flame_dir` is a
hyper-parameter that can be overridden when loading.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from headrecon.flame.model import FlameModel
from headrecon.flame.params import FlameParams
from headrecon.nets.estimator import DEFAULT_BACKBONE, EstimatorOutput, FlameEstimatorNet

__all__ = ["FlameEstimator"]

log = logging.getLogger(__name__)


class FlameEstimator(pl.LightningModule):
    """ViT FLAME estimator (see :class:`~headrecon.nets.estimator.FlameEstimatorNet`) plus the FLAME model.

    Args:
        flame_dir: FLAME folder or model file (official files, converted npz or the procedural head).
        backbone, img_size, n_shape, n_expression, identity_dim, lighting_dim, timm_kwargs, stem, head_init,
            jaw_opening: the network (see :class:`~headrecon.nets.estimator.FlameEstimatorNet`).
        init: "farl" (FaRL checkpoint at `pretrained_path`), "random" (logged loudly) or "deferred" (weights
            come from a checkpoint right after construction).
        lr, weight_decay: AdamW for the supervised baseline.
        param_loss_weight, vertex_loss_weight: supervised losses (MSE on parameters; L1 on vertices in mm).
    """

    def __init__(
        self,
        flame_dir: str,
        backbone: str = DEFAULT_BACKBONE,
        img_size: int = 224,
        n_shape: int = 300,
        n_expression: int = 100,
        identity_dim: int = 1024,
        lighting_dim: int = 27,
        init: str = "farl",
        pretrained_path: str | None = None,
        timm_kwargs: dict[str, Any] | None = None,
        stem: str = "patch",
        head_init: str = "default",
        jaw_opening: str = "free",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        param_loss_weight: float = 1.0,
        vertex_loss_weight: float = 1.0,
    ) -> None:
        # Our own record of the constructor arguments: under LightningCLI a nested LightningModule's
        # `save_hyperparameters` receives the outer model's config, so `self.hparams` cannot be trusted here.
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.save_hyperparameters()
        self.config = config
        self.net = FlameEstimatorNet(
            backbone=backbone, img_size=img_size, n_shape=n_shape, n_expression=n_expression,
            identity_dim=identity_dim, lighting_dim=lighting_dim, init=init, pretrained_path=pretrained_path,
            timm_kwargs=timm_kwargs, stem=stem, head_init=head_init, jaw_opening=jaw_opening,
        )  # fmt: skip
        self.flame = FlameModel.from_path(flame_dir, n_shape=n_shape, n_expression=n_expression)

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        flame_dir: str | None = None,
        map_location: Any = "cpu",
        use_ema: bool = True,
    ) -> FlameEstimator:
        """Load the estimator from one of our checkpoints: a FlameEstimator one, or a GaussianRegressor one
        (its ``estimator.*`` weights). `flame_dir` overrides the FLAME path stored in the checkpoint. With
        `use_ema` (default) the weight average kept by :class:`headrecon.callbacks.SubmoduleEMA`
        (``state_dict_ema``) is used where the checkpoint has one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
        hp = dict(ckpt.get("estimator_config") or ckpt.get("hyper_parameters", {}))
        state = ckpt["state_dict"]
        if use_ema and ckpt.get("state_dict_ema"):
            state = {**state, **ckpt["state_dict_ema"]}
            log.info("%s: using the estimator's weight average (state_dict_ema)", path)
        if any(k.startswith("estimator.net.") for k in state):  # a GaussianRegressor checkpoint
            hp = dict(
                ckpt.get("estimator_config") or ckpt.get("hyper_parameters", {}).get("estimator_hparams", {})
            )
            state = {k[len("estimator.") :]: v for k, v in state.items() if k.startswith("estimator.")}
        if not any(k.startswith("net.") for k in state):
            raise ValueError(f"{path}: holds no estimator weights (no 'net.*' or 'estimator.net.*' keys)")
        if flame_dir is not None:
            hp["flame_dir"] = flame_dir
        if "flame_dir" not in hp:
            raise ValueError(f"{path}: the checkpoint does not name its FLAME folder; pass flame_dir=")
        hp["init"] = "deferred"
        model = cls(**{k: v for k, v in hp.items() if not k.startswith("_")})
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("flame.")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: estimator weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, images: Tensor) -> EstimatorOutput:
        """images [B, 3, S, S] in [0, 1] -> FLAME parameters, lighting latent [B, L], identity [B, I]."""
        return self.net(images)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["estimator_config"] = dict(self.config)

    def predict_step(self, batch: Any, batch_idx: int = 0) -> dict[str, Tensor]:
        images = batch["image"] if isinstance(batch, dict) else batch
        out = self(images)
        flame = self.flame(out.flame)
        result = {f"flame/{k}": v for k, v in out.flame.to_dict().items()}
        result.update(lighting=out.lighting, identity=out.identity, vertices=flame.vertices)
        if flame.landmarks68 is not None:
            result["landmarks68"] = flame.landmarks68
        return result

    # ------------------------------------------------------------------------------- supervised baseline
    def _losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if not isinstance(batch, dict) or "flame" not in batch:
            raise ValueError(
                "FlameEstimator's supervised step needs batches with 'image' and 'flame' (ground truth)"
            )
        pred = self(batch["image"]).flame
        gt = FlameParams.from_dict(batch["flame"], device=self.device, dtype=pred.shape.dtype)
        param_loss = sum(
            torch.nn.functional.mse_loss(getattr(pred, k), getattr(gt, k)[:, : getattr(pred, k).shape[1]])
            for k in gt.to_dict()
        )
        v_pred = self.flame(pred).vertices
        with torch.no_grad():
            v_gt = self.flame(gt).vertices
        vertex_mm = (v_pred - v_gt).norm(dim=-1).mean() * 1000.0
        total = self.config["param_loss_weight"] * param_loss + self.config["vertex_loss_weight"] * vertex_mm
        return {"loss": total, "param": param_loss, "vertex_mm": vertex_mm}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self._losses(batch)
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=batch["image"].shape[0]
        )
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        losses = self._losses(batch)
        self.log_dict(
            {f"val/{k}": v for k, v in losses.items()}, batch_size=batch["image"].shape[0], sync_dist=True
        )

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.net.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"]
        )
