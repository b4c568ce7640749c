"""Densify/prune callback: edits the canonical Gaussian set from running statistics during training.

It works with any LightningModule that exposes (see :class:`Densifiable`):

* ``canonical_gaussians``: a :class:`~headrecon.gaussians.CanonicalGaussians`;
* ``densify_statistics``: a :class:`~headrecon.gaussians.DensifyStatistics` (part of the module so that it is
  checkpointed and restored with it);
* ``densify_signal()``: the last training step's per-Gaussian opacity and screen-space position-gradient
  magnitude, each [N] and summed over the batch, or None when the step produced none. Modules typically keep the
  renderer's ``means2d_grad_handle`` and read its ``.grad`` here (the callback runs after backward).

Rules and defaults (t_densify 1, n_densify 1, n_prune 1, t_history 256, 1..6 per face) are documented in
:mod:`headrecon.gaussians.densify`.

Distributed training: the statistics are summed over ranks before they are recorded, and the jitter of new
Gaussians comes from a generator seeded by (seed, step), so every rank takes the same decision and ends with the
same set. Because the set changes size, its tensors are kept out of DDP's gradient buckets
(``_ddp_params_and_buffers_to_ignore``) and the callback averages the embeddings' gradients over ranks itself.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from torch import Tensor

from headrecon.gaussians.canonical import CanonicalGaussians
from headrecon.gaussians.densify import DensifyStatistics, apply_edits, choose_edits, remap_optimizer_state

__all__ = ["DensifyPrune", "Densifiable"]

log = logging.getLogger(__name__)


@runtime_checkable
class Densifiable(Protocol):
    canonical_gaussians: CanonicalGaussians
    densify_statistics: DensifyStatistics

    def densify_signal(self) -> tuple[Tensor, Tensor] | None: ...


class DensifyPrune(pl.Callback):
    """Every `t_densify` steps prune `n_prune` and duplicate `n_densify` canonical Gaussians.

    Args:
        t_densify, n_densify, n_prune, t_history: SHeaP's hyper-parameters (defaults from the supplementary).
        min_per_face, max_per_face: bounds on Gaussians per face.
        min_observations: steps of its own statistics a Gaussian needs before it is judged.
        bary_jitter, embedding_noise: std of the perturbation of duplicated Gaussians.
        start_step, stop_step: edit only for start_step <= global step < stop_step (None: no end).
        seed: seeds the per-step generator for the perturbations (identical on every rank).
    """

    def __init__(
        self,
        t_densify: int = 1,
        n_densify: int = 1,
        n_prune: int = 1,
        t_history: int = 256,
        min_per_face: int = 1,
        max_per_face: int = 6,
        min_observations: int = 1,
        bary_jitter: float = 0.1,
        embedding_noise: float = 0.01,
        start_step: int = 0,
        stop_step: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if t_densify < 1:
            raise ValueError(f"t_densify must be >= 1, got {t_densify}")
        if not 1 <= min_per_face <= max_per_face:
            raise ValueError(f"need 1 <= min_per_face <= max_per_face, got {min_per_face}, {max_per_face}")
        self.t_densify, self.n_densify, self.n_prune, self.t_history = (
            t_densify,
            n_densify,
            n_prune,
            t_history,
        )
        self.min_per_face, self.max_per_face, self.min_observations = (
            min_per_face,
            max_per_face,
            min_observations,
        )
        self.bary_jitter, self.embedding_noise = bary_jitter, embedding_noise
        self.start_step, self.stop_step, self.seed = start_step, stop_step, seed
        self.history: list[tuple[int, int]] = []  # (global step, Gaussian count) after each edit

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(x) for x in state_dict.get("history", [])]

    # --------------------------------------------------------------------------------------------- set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Densifiable):
            raise TypeError(
                f"DensifyPrune needs a module with canonical_gaussians, densify_statistics and densify_signal(); "
                f"{type(pl_module).__name__} has not"
            )
        stats = pl_module.densify_statistics
        if stats.t_history != self.t_history or len(stats) != len(pl_module.canonical_gaussians):
            pl_module.densify_statistics = DensifyStatistics(
                len(pl_module.canonical_gaussians), self.t_history
            ).to(pl_module.canonical_gaussians.face_ids.device)
        ignore = set(getattr(pl_module, "_ddp_params_and_buffers_to_ignore", ()))
        for prefix, module in (("canonical_gaussians", pl_module.canonical_gaussians),
                               ("densify_statistics", pl_module.densify_statistics)):  # fmt: skip
            full = _module_path(pl_module, module) or prefix
            ignore |= {f"{full}.{n}" for n, _ in module.named_parameters()}
            ignore |= {f"{full}.{n}" for n, _ in module.named_buffers()}
        pl_module._ddp_params_and_buffers_to_ignore = sorted(ignore)

    # ---------------------------------------------------------------------------------------------- hooks
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            g = pl_module.canonical_gaussians.embeddings.grad
            if g is not None:
                torch.distributed.all_reduce(g)
                g /= trainer.world_size

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        signal = pl_module.densify_signal()
        if signal is None:
            return
        canonical, stats = pl_module.canonical_gaussians, pl_module.densify_statistics
        summed = trainer.strategy.reduce(torch.stack([signal[0].float(), signal[1].float()]), reduce_op="sum")
        stats.push(summed[0], summed[1])
        step = trainer.global_step  # already incremented by the optimiser step of this batch
        active = step >= self.start_step and (self.stop_step is None or step < self.stop_step)
        if active and step % self.t_densify == 0:
            self._edit(trainer, canonical, stats, step)
        pl_module.log("gaussians/count", float(len(canonical)), on_step=True, prog_bar=False, sync_dist=False)

    def _edit(
        self, trainer: pl.Trainer, canonical: CanonicalGaussians, stats: DensifyStatistics, step: int
    ) -> None:
        decision = choose_edits(
            stats.mean_opacity(), stats.mean_grad(), stats.observations(), canonical.face_ids, canonical.uids,
            canonical.num_faces, n_prune=self.n_prune, n_densify=self.n_densify, min_per_face=self.min_per_face,
            max_per_face=self.max_per_face, min_observations=self.min_observations,
        )  # fmt: skip
        if decision.prune.numel() == 0 and decision.densify.numel() == 0:
            return
        old_param = canonical.embeddings
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        source = apply_edits(canonical, stats, decision, generator=gen, bary_jitter=self.bary_jitter,
                             embedding_noise=self.embedding_noise)  # fmt: skip
        for opt in trainer.optimizers:
            remap_optimizer_state(opt, old_param, canonical.embeddings, source)
        self.history.append((step, len(canonical)))


def _module_path(root: torch.nn.Module, target: torch.nn.Module) -> str | None:
    for name, m in root.named_modules():
        if m is target:
            return name
    return None
