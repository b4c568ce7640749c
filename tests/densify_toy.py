"""A tiny LightningModule with a canonical Gaussian set, for densify/prune callback tests (single and DDP).

Run as a script for the 2-process DDP test: `python -m tests.densify_toy OUT_DIR` writes OUT_DIR/rank{r}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headrecon.callbacks import DensifyPrune
from headrecon.gaussians import CanonicalGaussians, DensifyStatistics


class ToyGaussianModule(pl.LightningModule):
    """Each Gaussian predicts a 1-D 'position' and an opacity from its embedding; targets depend on the batch."""

    def __init__(self, num_faces: int = 12, per_face: int = 2, embed_dim: int = 4, lr: float = 0.05) -> None:
        super().__init__()
        self.canonical_gaussians = CanonicalGaussians(num_faces, per_face, embed_dim, seed=0)
        self.densify_statistics = DensifyStatistics(len(self.canonical_gaussians), t_history=8)
        self.head = nn.Linear(embed_dim, 2)
        self.lr = lr
        self._signal = None

    def training_step(self, batch, batch_idx):
        (x,) = batch  # [B, 1]
        out = self.head(self.canonical_gaussians.embeddings)  # [N, 2]
        opacity = torch.sigmoid(out[:, 0])
        handle = torch.zeros(x.shape[0], out.shape[0], 2, requires_grad=True)
        target = torch.sin(x * (1 + self.canonical_gaussians.face_ids.float())[None])  # [B, N]
        pos = out[None, :, 1] + handle[..., 0] + 0.5 * handle[..., 1]
        loss = ((pos - target) ** 2 * opacity[None]).mean()
        self._signal = (opacity.detach() * x.shape[0], handle)
        return loss

    def densify_signal(self):
        if self._signal is None or self._signal[1].grad is None:
            return None
        opacity_sum, handle = self._signal
        return opacity_sum, handle.grad.norm(dim=-1).sum(0)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def toy_loader(n: int = 64, batch_size: int = 4) -> DataLoader:
    x = torch.linspace(-1, 1, n)[:, None]
    return DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=False)


def snapshot(module: ToyGaussianModule) -> dict[str, torch.Tensor]:
    c = module.canonical_gaussians
    return {k: v.detach().clone() for k, v in
            {"face_ids": c.face_ids, "bary": c.bary, "uids": c.uids, "embeddings": c.embeddings,
             "head.weight": module.head.weight}.items()}  # fmt: skip


def shutdown_process_group() -> None:
    """Shut gloo down before the interpreter does: left to interpreter teardown, a rank now and then aborts
    ("terminate called without an active exception", exit -6) after all its work is done."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _ddp_main(out_dir: str) -> None:
    torch.manual_seed(0)
    model = ToyGaussianModule()
    cb = DensifyPrune(t_history=8, n_prune=1, n_densify=2)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
    )  # fmt: skip
    trainer.fit(model, toy_loader())
    torch.save(
        {"snapshot": snapshot(model), "history": cb.history}, Path(out_dir) / f"rank{trainer.global_rank}.pt"
    )
    shutdown_process_group()


if __name__ == "__main__":
    _ddp_main(sys.argv[1])
