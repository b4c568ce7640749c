"""Exponential moving average (EMA) of one submodule's weights, e.g. the FLAME estimator of a GaussianRegressor.

Lightning's own `WeightAveraging` averages the whole LightningModule; ours cannot be averaged whole, because
densification changes the Gaussian head's parameter shapes during training. `SubmoduleEMA` averages only the
named submodule (default ``"estimator"``, whose shapes never change):

* after every optimiser step, ``ema <- d * ema + (1 - d) * current`` for every floating-point parameter and
  buffer, with the usual warm-up ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (timm / TF), so the
  average is not dominated by the random initial weights;
* validation during `fit` runs with the averaged weights (swapped in and back);
* at the end of training the averaged weights are copied into the submodule (``apply_at_end``), so what
  `trainer.validate` / the demo report / an export sees afterwards is the average;
* checkpoints keep the live weights in ``state_dict`` (so resuming continues the same optimisation) and the
  average in ``state_dict_ema`` (full keys, as timm names it) as well as in the callback state;
  ``FlameEstimator.from_checkpoint(..., use_ema=True)`` prefers it.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

__all__ = ["SubmoduleEMA", "ema_decay"]

log = logging.getLogger(__name__)


def ema_decay(decay: float, updates: int) -> float:
    """The decay used for update number `updates` (0-based): ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class SubmoduleEMA(pl.Callback):
    """Keep an exponential moving average of ``pl_module.<module>``'s parameters and buffers.

    Args:
        module: attribute path of the submodule to average (``pl_module.get_submodule(module)``).
        decay: the EMA decay per optimiser step (0.999 ~ a 1000-step horizon; 0.99 ~ 100 steps).
        start_step: first global step (optimiser steps taken) at which the average is updated; before it the
            average follows the live weights exactly.
        apply_at_end: copy the average into the submodule when training ends.
    """

    def __init__(
        self, module: str = "estimator", decay: float = 0.999, start_step: int = 0, apply_at_end: bool = True
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"SubmoduleEMA: decay must be in [0, 1), got {decay}")
        self.module = module
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.apply_at_end = apply_at_end
        self.shadow: dict[str, Tensor] | None = None
        self.updates = 0
        self._last_step = -1
        self._swapped = False

    # -------------------------------------------------------------------------------------------- helpers
    def _target(self, pl_module: pl.LightningModule) -> nn.Module:
        try:
            return pl_module.get_submodule(self.module)
        except AttributeError as err:
            name = type(pl_module).__name__
            raise ValueError(f"SubmoduleEMA: {name} has no submodule {self.module!r}") from err

    def _live(self, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        """name -> tensor for every parameter and buffer of the submodule (the live storage, not copies)."""
        target = self._target(pl_module)
        return {**dict(target.named_parameters()), **dict(target.named_buffers())}

    def _check(self, live: dict[str, Tensor]) -> None:
        assert self.shadow is not None
        if live.keys() != self.shadow.keys():
            missing, extra = (
                sorted(live.keys() - self.shadow.keys()),
                sorted(self.shadow.keys() - live.keys()),
            )
            msg = (
                f"average and model differ: only in the model {missing[:3]}, only in the average {extra[:3]}"
            )
            raise ValueError(f"SubmoduleEMA({self.module!r}): {msg}")
        for k, v in live.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(
                    f"SubmoduleEMA({self.module!r}): {k} has shape {tuple(v.shape)} in the model but "
                    f"{tuple(self.shadow[k].shape)} in the average (the submodule's shapes must not change)"
                )

    @torch.no_grad()
    def _swap(self, pl_module: pl.LightningModule) -> None:
        live = self._live(pl_module)
        self._check(live)
        for k, v in live.items():
            tmp = v.detach().clone()
            v.copy_(self.shadow[k])
            self.shadow[k].copy_(tmp)
        self._swapped = not self._swapped

    # -------------------------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        live = self._live(pl_module)
        if self.shadow is None:  # not restored from a checkpoint
            self.shadow = {k: v.detach().clone() for k, v in live.items()}
        else:
            self.shadow = {k: v.to(live[k].device) for k, v in self.shadow.items()}
        self._check(live)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # no optimiser step taken (gradient accumulation, a skipped step)
            return
        self._last_step = step
        live = self._live(pl_module)
        if step < self.start_step:
            for k, v in live.items():
                self.shadow[k].copy_(v)
            return
        d = ema_decay(self.decay, self.updates)
        for k, v in live.items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1.0 - d)
            else:  # e.g. BatchNorm's num_batches_tracked
                self.shadow[k].copy_(v)
        self.updates += 1

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shadow is not None and trainer.state.fn == "fit" and not self._swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._swapped:
            self._swap(pl_module)

    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shadow is None or not self.apply_at_end:
            return
        if self._swapped:
            self._swap(pl_module)
        live = self._live(pl_module)
        self._check(live)
        for k, v in live.items():
            v.copy_(self.shadow[k])
        log.info(
            "SubmoduleEMA: %s holds its average of %d steps (decay %g)", self.module, self.updates, self.decay
        )

    # -------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.shadow is None:
            return
        prefix = f"{self.module}."
        if self._swapped:  # saved during validation: the live weights are in the shadow, the average is live
            live = {prefix + k: v for k, v in self.shadow.items()}
            checkpoint["state_dict"].update({k: v.detach().clone() for k, v in live.items()})
            average = self._live(pl_module)
            checkpoint["state_dict_ema"] = {prefix + k: v.detach().clone() for k, v in average.items()}
        else:
            checkpoint["state_dict_ema"] = {prefix + k: v.detach().clone() for k, v in self.shadow.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "last_step": self._last_step, "module": self.module}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])
        self._last_step = int(state_dict["last_step"])

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        ema = checkpoint.get("state_dict_ema")
        prefix = f"{self.module}."
        if ema is None:
            log.warning(
                "SubmoduleEMA: no 'state_dict_ema' in the checkpoint; the average restarts from its weights"
            )
            return
        self.shadow = {k[len(prefix) :]: v.detach().clone() for k, v in ema.items() if k.startswith(prefix)}
