"""DensifyPrune inside real Lightning training: edits, optimiser state, resume, and 2-process DDP."""

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from headrecon.callbacks import DensifyPrune
from tests.densify_toy import ToyGaussianModule, snapshot, toy_loader

ROOT = Path(__file__).resolve().parents[1]


def _trainer(max_steps, callbacks, tmp_path, **kw):
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp_path, **kw)  # fmt: skip


def test_training_densifies_and_keeps_optimizer_in_step(tmp_path):
    torch.manual_seed(0)
    model = ToyGaussianModule()
    cb = DensifyPrune(t_history=8, n_prune=1, n_densify=2)
    _trainer(5, cb, tmp_path, enable_checkpointing=False).fit(model, toy_loader())
    c = model.canonical_gaussians
    assert [n for _, n in cb.history] == [25, 26, 27, 28, 29]  # +2 -1 per step from 24
    assert len(model.densify_statistics) == len(c) == 29
    assert c.next_uid.item() == 24 + 2 * 5
    counts = c.per_face_counts()
    assert counts.min() >= 1 and counts.max() <= 6
    opt = model.trainer.optimizers[0]
    assert opt.state[c.embeddings]["exp_avg"].shape == c.embeddings.shape


def test_resume_matches_uninterrupted_run(tmp_path):
    """Checkpoint (by ModelCheckpoint, during training, after densification) at an epoch boundary, resume into a
    fresh module of the initial size: the canonical set and every later step equal the uninterrupted run's."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    full = ToyGaussianModule()
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    _trainer(6, [DensifyPrune(t_history=8, n_densify=2), ckpt_cb], tmp_path / "a").fit(full, toy_loader(n=12))
    ckpt = next((tmp_path / "ckpt").glob("*step=3.ckpt"))
    resumed = ToyGaussianModule()  # initial size: loading must resize it before loading
    cb = DensifyPrune(t_history=8, n_densify=2)
    _trainer(6, [cb], tmp_path / "b", enable_checkpointing=False).fit(
        resumed, toy_loader(n=12), ckpt_path=ckpt
    )
    a, b = snapshot(full), snapshot(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k, rtol=0, atol=0)
    assert [n for _, n in cb.history] == [25, 26, 27, 28, 29, 30]  # history restored, then continued


def test_rejects_module_without_protocol(tmp_path):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, i):
            return self.w.sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match="canonical_gaussians"):
        _trainer(1, DensifyPrune(), tmp_path, enable_checkpointing=False).fit(Plain(), toy_loader())


def test_two_process_ddp_ranks_agree(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "tests.densify_toy", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["history"] == r1["history"] and len(r0["history"]) == 6  # densification happened on both ranks
    for k in r0["snapshot"]:
        torch.testing.assert_close(r0["snapshot"][k], r1["snapshot"][k], msg=k, rtol=0, atol=0)
    assert r0["snapshot"]["uids"].numel() == 24 + 6
