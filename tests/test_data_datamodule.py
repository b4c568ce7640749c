"""HeadDataModule through real DataLoaders: batch shapes, determinism, eval split, corrupt frames."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from headrecon.data.datamodule import EpochPairSampler, HeadDataModule, SkippedFramesLogger
from headrecon.data.layout import GT_FLAME_KEYS
from tests.data_trees import write_clip, write_tree


def _ids(batch):
    return list(zip(batch["subject"], batch["source_clip"], batch["source_frame"], batch["target_clip"],
                    batch["target_frame"]))  # fmt: skip


@pytest.fixture
def tree(tmp_path):
    write_tree(tmp_path, {"vfhq": 3, "nersemble": 2}, clips=2, frames=3, size=20, masks=True)
    return tmp_path


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_through_dataloader(tree, num_workers):
    dm = HeadDataModule(roots={"vfhq": tree, "nersemble": tree}, mix={"vfhq": 0.5, "nersemble": 0.5},
                        eval_subjects=["vfhq/p2"], image_size=12, batch_size=4, num_workers=num_workers,
                        pairs_per_epoch=10, val_pairs=5, seed=3)  # fmt: skip
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [len(b["subject"]) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b["source"].shape == (4, 3, 12, 12) and b["target"].shape == (4, 3, 12, 12)
    assert (
        b["source"].dtype == torch.float32
        and 0.0 <= float(b["source"].min()) <= float(b["source"].max()) <= 1
    )
    assert b["target_mask"].shape == (4, 1, 12, 12)
    assert b["target_landmarks"].shape == (4, 68, 2) and b["target_landmarks_valid"].all()
    # landmarks scaled from 20 px frames to the 12 px crop
    assert float(b["target_landmarks"].max()) == pytest.approx(19 * 12 / 20, rel=1e-5)
    assert "source_flame" not in b and b["skipped"] == []
    for batch in batches:
        assert "p2" not in [s for d, s in zip(batch["dataset"], batch["subject"]) if d == "vfhq"]
    val = list(dm.val_dataloader())
    assert sum(len(v["subject"]) for v in val) == 5
    assert all(d == "vfhq" and s == "p2" for v in val for d, s in zip(v["dataset"], v["subject"]))


def test_pairs_independent_of_workers_and_epochs(tree):
    kw = dict(roots={"vfhq": tree}, image_size=8, batch_size=3, pairs_per_epoch=6, seed=1)
    ids = []
    for nw in (0, 2):
        dm = HeadDataModule(num_workers=nw, **kw)
        dm.setup("fit")
        loader = dm.train_dataloader()
        ids.append([i for b in loader for i in _ids(b)])
        loader.sampler.set_epoch(1)
        ids.append([i for b in loader for i in _ids(b)])
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]


def test_epoch_sampler_shards_ranks():
    s0, s1 = EpochPairSampler(5, num_replicas=2, rank=0), EpochPairSampler(5, num_replicas=2, rank=1)
    s0.set_epoch(4)
    assert list(s0) == [(4, 0), (4, 2), (4, 4)] and list(s1) == [(0, 1), (0, 3), (0, 0)]
    assert len(s0) == len(s1) == 3


def test_unknown_eval_subject_fails_at_setup(tree):
    dm = HeadDataModule(roots={"vfhq": tree}, eval_subjects=["vfhq/p7"])
    with pytest.raises(ValueError, match="close matches"):
        dm.setup("fit")


def test_no_eval_subjects_means_no_validation(tree):
    dm = HeadDataModule(roots={"vfhq": tree}, num_workers=0)
    dm.setup("fit")
    assert dm.val_dataloader() == []


def _corrupt(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage, not an image")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_frames_skipped_and_counted(tmp_path, num_workers):
    write_tree(tmp_path, {"vfhq": 2}, clips=1, frames=4, size=8, landmarks=False)
    bad = [
        tmp_path / "vfhq" / "p0" / "c0" / "frames" / "0001.png",
        tmp_path / "vfhq" / "p1" / "c0" / "frames" / "0002.png",
    ]
    for p in bad:
        _corrupt(p)
    dm = HeadDataModule(roots={"vfhq": tmp_path}, image_size=8, batch_size=4, num_workers=num_workers,
                        pairs_per_epoch=40, seed=0)  # fmt: skip
    dm.setup("fit")
    n = 0
    for batch in dm.train_dataloader():
        dm.consume_skipped(batch)
        assert "skipped" not in batch
        n += len(batch["subject"])
        assert "0001.png" not in [f for c, f in zip(batch["subject"], batch["target_frame"]) if c == "p0"]
    assert n == 40  # the epoch completed with the full number of pairs
    assert dm.skipped.count > 0
    assert set(dm.skipped.files) == {str(p) for p in bad}
    assert dm.state_dict()["skipped_count"] == dm.skipped.count


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen_keys: set[str] = set()

    def training_step(self, batch, batch_idx):
        self.seen_keys |= set(batch)
        return ((batch["target"].mean() - self.w) ** 2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/x", batch["target"].mean(), batch_size=len(batch["subject"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_counts_and_logs_skips(tmp_path):
    write_tree(tmp_path, {"vfhq": 3}, clips=1, frames=3, size=8, landmarks=False)
    _corrupt(tmp_path / "vfhq" / "p0" / "c0" / "frames" / "0000.png")
    dm = HeadDataModule(roots={"vfhq": tmp_path}, eval_subjects=["p2"], image_size=8, batch_size=4,
                        num_workers=0, pairs_per_epoch=16, val_pairs=4)  # fmt: skip
    model = _Tiny()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[SkippedFramesLogger()],
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert "skipped" not in model.seen_keys and "source" in model.seen_keys
    assert dm.skipped.count > 0 and len(dm.skipped.files) == 1
    assert trainer.callback_metrics["data/skipped_pairs"] == dm.skipped.count
    assert trainer.callback_metrics["data/skipped_files"] == 1


def test_synthetic_ground_truth_in_batches(tmp_path):
    for s in range(2):
        clip = write_clip(tmp_path / "synthetic" / f"s{s}" / "c0", frames=3, size=8)
        gt = {k: np.full((3, 9, 3) if k == "sh_coeffs" else (3, 5), s * 10.0 + np.arange(3)[:, None, None][..., 0]
                         if k != "sh_coeffs" else s, np.float32) for k in GT_FLAME_KEYS}  # fmt: skip
        gt["shape"] = np.tile((s * 10.0 + np.arange(3, dtype=np.float32))[:, None], (1, 4))
        (clip / "gt").mkdir()
        np.savez(clip / "gt" / "flame.npz", **gt)
    dm = HeadDataModule(
        roots={"synthetic": tmp_path}, image_size=8, batch_size=4, num_workers=0, pairs_per_epoch=8
    )
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["source_flame"]["shape"].shape == (4, 4) and b["target_flame"]["expression"].shape == (4, 5)
    assert b["target_lighting"].shape == (4, 9, 3) and b["has_flame"].all()
    for i in range(4):  # the ground truth belongs to the frame named in the batch
        s, t = int(b["subject"][i][1:]), int(b["target_frame"][i][:4])
        assert float(b["target_flame"]["shape"][i, 0]) == s * 10 + t
        assert float(b["source_flame"]["shape"][i, 0]) == s * 10 + int(b["source_frame"][i][:4])
