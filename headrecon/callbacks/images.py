"""Image logging: source | target | render | Gaussian normals | |render - target| grids to TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageGridLogger", "make_image_grid"]


@torch.no_grad()
def make_image_grid(
    batch: dict[str, Any], out: dict[str, Any], max_rows: int = 4, target: Tensor | None = None
) -> Tensor:
    """[3, rows * S, 5 * S] grid in [0, 1] from a GaussianRegressor batch and its forward output.

    Columns: source, target frame, render, Gaussian normals, 3 x |render - target| (mean over RGB). `target`
    [B, 3, H, W] is what the render is compared with in the error panel (GaussianRegressor.render_target: the frame
    composited over the render background); the raw target frame when None.
    """
    render = out["render"]
    rgb = render.colors.permute(0, 3, 1, 2).clamp(0, 1)
    s = rgb.shape[-1]

    def fit(x: Tensor) -> Tensor:
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    src, tgt = fit(batch["source"]), fit(batch["target"])
    normals = F.normalize(render.normals, dim=-1).permute(0, 3, 1, 2) * 0.5 + 0.5
    normals = normals * render.alphas.permute(0, 3, 1, 2)
    ref = tgt if target is None else fit(target)
    err = (rgb - ref).abs().mean(1, keepdim=True).expand(-1, 3, -1, -1).mul(3).clamp(0, 1)
    rows = [torch.cat([a, b, c, d, e], dim=-1) for a, b, c, d, e in zip(src, tgt, rgb, normals, err)][
        :max_rows
    ]
    return torch.cat(rows, dim=-2).cpu()


class ImageGridLogger(pl.Callback):
    """Every `every_n_steps` training steps, log the grid of the last batch (modules exposing `_last`)."""

    def __init__(self, every_n_steps: int = 50, max_rows: int = 4) -> None:
        super().__init__()
        self.every_n_steps, self.max_rows = every_n_steps, max_rows

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ):
        last = getattr(pl_module, "_last", None)
        if last is None or trainer.global_step % self.every_n_steps != 0 or not trainer.is_global_zero:
            return
        compare = getattr(pl_module, "render_target", None)
        target = compare(last["batch"]) if callable(compare) else None
        grid = make_image_grid(last["batch"], last["out"], self.max_rows, target)
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_image"):
                exp.add_image("train/source|target|render|normals|error", grid, trainer.global_step)
