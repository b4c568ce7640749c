"""2-process CPU DDP (gloo) run of the real GaussianRegressor with densification, for tests.

`python -m tests.ddp_regressor OUT_DIR` writes OUT_DIR/rank{r}.pt with each rank's canonical set and weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from headrecon.callbacks import DensifyPrune
from tests.densify_toy import shutdown_process_group
from tests.flame_files import make_tiny_flame, write_flame_folder
from tests.test_gaussian_regressor import _model, _pairs


class PairsByRank(torch.utils.data.Dataset):
    """Different pairs on every rank (the sampler splits them), so the statistics really differ per rank."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def main(out_dir: str) -> None:
    out = Path(out_dir)
    flame_dir = out / "flame"
    if not (flame_dir / "generic_model.pkl").exists():
        write_flame_folder(flame_dir, make_tiny_flame(seed=0))
    pl.seed_everything(0)
    model = _model(flame_dir)
    batches = [_pairs(model, n=2, seed=s) for s in range(4)]
    loader = torch.utils.data.DataLoader(PairsByRank(batches), batch_size=None)
    cb = DensifyPrune(t_history=4, n_densify=2, n_prune=1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb], default_root_dir=out)  # fmt: skip
    trainer.fit(model, loader)
    c = model.canonical_gaussians
    snap = {"face_ids": c.face_ids, "bary": c.bary, "uids": c.uids, "embeddings": c.embeddings.detach(),
            **{k: v.detach() for k, v in model.named_parameters() if k.startswith(("head.gcn.", "estimator."))}}  # fmt: skip
    torch.save({"snapshot": snap, "history": cb.history}, out / f"rank{trainer.global_rank}.pt")
    shutdown_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
