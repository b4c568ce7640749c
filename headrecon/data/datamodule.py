"""`HeadDataModule`: (source, target) frame pairs of the same subject from clip-layout roots, mixed by weight.

    dm = HeadDataModule(roots={"synthetic": "data"}, eval_subjects=["synthetic/s0003"], image_size=128)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch["source"].shape   # [B, 3, 128, 128], float in [0, 1]

Batches are dicts:

==========================  =======================================================================
``source``, ``target``      [B, 3, S, S] float32 RGB in [0, 1] (frames resized to S = image_size)
``target_mask``             [B, 1, S, S] float32 in [0, 1] from ``masks/``; ones where a clip has none
``dataset``, ``subject``    lists of B names
``source_clip``,            lists of B clip folder names and frame file names
``source_frame``, ...
``target_landmarks``        [B, 68, 2] float32 in pixels of the S x S crop, and ``target_landmarks_valid``
                            [B] bool (False, landmarks 0, where the clip has no ``landmarks.npy``);
                            present when any clip of the split has landmarks
``source_flame``,           dicts field -> [B, D] float32 of the ground-truth
``target_flame``            :class:`~headrecon.flame.FlameParams` fields, ``target_lighting`` [B, 9, 3] SH
``target_lighting``,        coefficients and ``has_flame`` [B] bool; present when any clip of the split has
``has_flame``               ``gt/flame.npz`` (zeros, has_flame False, for those without)
``skipped``                 list of the frame files that failed while this batch was drawn (one entry per
                            replaced pair); consumed by the DataModule before the batch reaches the model
==========================  =======================================================================

Unreadable frames never stop an epoch: the dataset draws a replacement pair (the next ``attempt`` of the same
deterministic draw), remembers the bad file (per worker) and reports it in ``skipped``. In a Lightning run
:meth:`HeadDataModule.on_before_batch_transfer` moves these reports into :attr:`HeadDataModule.skipped`
(logging each file once); :class:`SkippedFramesLogger` logs the count at every training epoch end (a
LightningDataModule has no epoch hooks, hence the callback). In a plain loop call
:meth:`HeadDataModule.consume_skipped` on each batch.

Epochs: training pairs are keyed ``(epoch, index)`` by :class:`EpochPairSampler`, a ``DistributedSampler``
(Lightning then leaves it in place under DDP and calls its ``set_epoch``): each epoch draws new pairs, the same
ones for the same seed whatever the number of workers, and each rank gets its own share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from headrecon.data.layout import GT_FLAME_KEYS, ClipInfo, LayoutIndex, index_roots
from headrecon.data.media import MediaError, read_image
from headrecon.data.pairs import FrameRef, Pair, PairSampler, split_subjects

__all__ = [
    "HeadDataModule",
    "PairDataset",
    "EpochPairSampler",
    "SkipStats",
    "SkippedFramesLogger",
    "collate_pairs",
    "FLAME_FIELDS",
]

log = logging.getLogger(__name__)

#: Ground-truth FlameParams fields returned in ``source_flame`` / ``target_flame``.
FLAME_FIELDS = tuple(k for k in GT_FLAME_KEYS if k != "sh_coeffs")


class FrameLoadError(RuntimeError):
    """A frame (or its mask / per-frame arrays) could not be loaded; ``path`` names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize [H, W(, C)] to [size, size(, C)] (area filter when shrinking)."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise FrameLoadError(path, f"unreadable mask ({exc})") from exc


class PairDataset(Dataset):
    """Pairs from a :class:`PairSampler`, loaded and resized to `image_size`.

    Keys are ``(epoch, index)`` tuples (training, see :class:`EpochPairSampler`) or ints (validation: pair i
    cycles through the subjects, :meth:`PairSampler.subject_pair`). ``len`` is the number of pairs per epoch.
    """

    def __init__(self, sampler: PairSampler, image_size: int, length: int, *, max_attempts: int = 64) -> None:
        self.sampler = sampler
        self.clips = sampler.clips
        self.image_size = int(image_size)
        self.length = int(length)
        self.max_attempts = int(max_attempts)
        self.with_landmarks = any(c.has_landmarks for c in self.clips)
        self.flame_dims: dict[str, tuple[int, ...]] | None = None
        gt_clip = next((c for c in self.clips if c.has_gt), None)
        if gt_clip is not None:
            with np.load(gt_clip.gt_path) as z:
                self.flame_dims = {k: tuple(z[k].shape[1:]) for k in GT_FLAME_KEYS}
        self._bad: set[Path] = set()
        self._cache: dict[tuple[int, str], Any] = {}

    def __len__(self) -> int:
        return self.length

    # ---------------------------------------------------------------------------------------------- loading
    def _clip_array(self, clip: int, name: str) -> Any:
        key = (clip, name)
        if key not in self._cache:
            info = self.clips[clip]
            path = info.gt_path if name == "gt" else info.path / name
            try:
                if name == "gt":
                    with np.load(path) as z:
                        self._cache[key] = {k: np.asarray(z[k], dtype=np.float32) for k in GT_FLAME_KEYS}
                else:
                    self._cache[key] = np.load(path)  # [T, 68, 2]: small, read whole (no open handles)
            except (OSError, ValueError, KeyError) as exc:
                raise FrameLoadError(path, f"unreadable ({exc})") from exc
            if len(self._cache) > 1024:  # bound memory on huge datasets
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def _load_image(self, ref: FrameRef) -> tuple[Tensor, float, float]:
        info = self.clips[ref.clip]
        path = info.frame_path(ref.frame)
        try:
            img = read_image(path)
        except MediaError as exc:
            raise FrameLoadError(path, exc.reason) from exc
        h, w = img.shape[:2]
        img = _resize(img, self.image_size)
        t = torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)
        return t, self.image_size / w, self.image_size / h

    def _load_mask(self, ref: FrameRef) -> Tensor:
        path = self.clips[ref.clip].mask_path(ref.frame)
        S = self.image_size
        if path is None:
            return torch.ones(1, S, S)
        m = _resize(_read_mask(path), S)
        return torch.from_numpy(np.require(m, requirements=["C", "W"])).float().div_(255.0)[None]

    def _flame(self, ref: FrameRef) -> tuple[dict[str, Tensor], Tensor, bool]:
        assert self.flame_dims is not None
        if not self.clips[ref.clip].has_gt:
            z = {k: torch.zeros(self.flame_dims[k]) for k in FLAME_FIELDS}
            return z, torch.zeros(self.flame_dims["sh_coeffs"]), False
        gt = self._clip_array(ref.clip, "gt")
        flame = {k: torch.from_numpy(gt[k][ref.frame].copy()) for k in FLAME_FIELDS}
        return flame, torch.from_numpy(gt["sh_coeffs"][ref.frame].copy()), True

    def _load_pair(self, pair: Pair) -> dict[str, Any]:
        for ref in pair:
            p = self.clips[ref.clip].frame_path(ref.frame)
            if p in self._bad:
                raise FrameLoadError(p, "known bad frame")
        src, _, _ = self._load_image(pair.source)
        tgt, sx, sy = self._load_image(pair.target)
        s_info, t_info = self.clips[pair.source.clip], self.clips[pair.target.clip]
        item: dict[str, Any] = {
            "source": src,
            "target": tgt,
            "target_mask": self._load_mask(pair.target),
            "dataset": t_info.dataset,
            "subject": t_info.subject,
            "source_clip": s_info.clip,
            "source_frame": s_info.frames[pair.source.frame],
            "target_clip": t_info.clip,
            "target_frame": t_info.frames[pair.target.frame],
        }
        if self.with_landmarks:
            if t_info.has_landmarks:
                lmk = np.asarray(self._clip_array(pair.target.clip, "landmarks.npy")[pair.target.frame])
                lmk = torch.from_numpy(lmk.astype(np.float32) * np.float32([sx, sy]))
                item["target_landmarks"], item["target_landmarks_valid"] = lmk, True
            else:
                item["target_landmarks"], item["target_landmarks_valid"] = torch.zeros(68, 2), False
        if self.flame_dims is not None:
            item["source_flame"], _, has_s = self._flame(pair.source)
            item["target_flame"], item["target_lighting"], has_t = self._flame(pair.target)
            item["has_flame"] = has_s and has_t
        return item

    def _draw(self, key: Any, attempt: int) -> Pair:
        if isinstance(key, tuple):
            epoch, index = key
            return self.sampler.pair(epoch, index, attempt)
        n = self.sampler.num_subjects  # validation: pair i cycles through the subjects
        return self.sampler.subject_pair(int(key) % n, int(key) // n, attempt)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """Load pair `key`; failed frames are replaced by the next attempt of the same draw."""
        skipped: list[str] = []
        for attempt in range(self.max_attempts):
            pair = self._draw(key, attempt)
            try:
                item = self._load_pair(pair)
            except FrameLoadError as exc:
                self._bad.add(exc.path)
                skipped.append(str(exc.path))
                continue
            item["skipped"] = skipped
            return item
        raise RuntimeError(
            f"pair {key}: {self.max_attempts} draws in a row hit unreadable files (last: {skipped[-3:]}); "
            "run 'headrecon data check' on the data roots"
        )


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the items of :class:`PairDataset` into a batch (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, first in items[0].items():
        values = [it[key] for it in items]
        if key == "skipped":
            out[key] = [s for v in values for s in v]
        elif isinstance(first, Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, bool):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, dict):
            out[key] = {k: torch.stack([v[k] for v in values]) for k in first}
        else:
            out[key] = values
    return out


class EpochPairSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys for `length` pairs per epoch, this rank's share of them.

    A ``DistributedSampler`` subclass so that Lightning neither replaces it under DDP nor forgets to call
    :meth:`set_epoch`. Ranks get interleaved indices (padded by wrapping, like ``DistributedSampler``).
    """

    def __init__(self, length: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(length), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.length = length

    def __iter__(self):
        idx = list(range(self.length))
        idx += idx[: self.total_size - len(idx)] if self.length else []
        for i in idx[self.rank : self.total_size : self.num_replicas]:
            yield (self.epoch, i)


@dataclass
class SkipStats:
    """Pairs replaced because of unreadable files: ``count`` replacements, ``files`` file -> times hit."""

    count: int = 0
    files: dict[str, int] = field(default_factory=dict)

    def add(self, paths: Sequence[str]) -> list[str]:
        """Record failures; returns the files seen for the first time."""
        new = []
        for p in paths:
            self.count += 1
            if p not in self.files:
                new.append(p)
                self.files[p] = 0
            self.files[p] += 1
        return new


class HeadDataModule(L.LightningDataModule):
    """Source/target pairs of the same subject from clip-layout roots (SPEC section 6).

    Args:
        roots: dataset name -> root (or list of roots); each root holds a folder named after the dataset
            (``ROOT/<dataset>/<subject>/<clip>``) or is that folder.
        mix: dataset -> sampling weight for training pairs (normalised); None: equal weights.
        eval_subjects: subjects held out of training and used for validation/test, as ``"dataset/subject"``
            or bare ``"subject"`` (every dataset). Unknown names raise at :meth:`setup` with close matches.
        image_size: side S of the returned images (frames are resized, landmarks scaled).
        batch_size, num_workers: DataLoader settings (workers are persistent when num_workers > 0).
        pairs_per_epoch: training pairs per epoch (over all ranks).
        val_pairs: validation pairs (fixed; they cycle through the eval subjects).
        same_clip: draw source and target from one clip (else from any clip of the subject).
        seed: pairs are a function of (seed, epoch, index).
        max_attempts: replacement draws per pair before giving up (only when nearly every frame is bad).
    """

    def __init__(
        self,
        roots: Mapping[str, list[str] | str | os.PathLike],
        mix: Mapping[str, float] | None = None,
        eval_subjects: Sequence[str] | None = None,
        image_size: int = 224,
        batch_size: int = 8,
        num_workers: int = 2,
        pairs_per_epoch: int = 10_000,
        val_pairs: int = 64,
        same_clip: bool = False,
        seed: int = 0,
        max_attempts: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.roots = {str(k): v for k, v in roots.items()}
        self.mix = dict(mix) if mix is not None else None
        self.eval_subjects = list(eval_subjects or [])
        self.image_size, self.batch_size, self.num_workers = (
            int(image_size),
            int(batch_size),
            int(num_workers),
        )
        self.pairs_per_epoch, self.val_pairs = int(pairs_per_epoch), int(val_pairs)
        self.same_clip, self.seed, self.max_attempts = bool(same_clip), int(seed), int(max_attempts)
        self.index: LayoutIndex | None = None
        self.train_clips: list[ClipInfo] = []
        self.eval_clips: list[ClipInfo] = []
        self.train_sampler: PairSampler | None = None
        self.eval_sampler: PairSampler | None = None
        self.skipped = SkipStats()

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Index the roots (once), split off the eval subjects and build the pair samplers."""
        if self.index is not None:
            return
        index = index_roots(self.roots)
        for p in index.problems[:20]:
            log.warning("data: %s", p)
        if len(index.problems) > 20:
            log.warning("data: ... and %d more layout problems (run 'headrecon data check')",
                        len(index.problems) - 20)  # fmt: skip
        index.raise_if_empty(f"HeadDataModule roots {self.roots}")
        self.train_clips, self.eval_clips = split_subjects(index.clips, self.eval_subjects)
        if not self.train_clips:
            raise ValueError("every subject is an evaluation subject: nothing left to train on")
        self.train_sampler = PairSampler(self.train_clips, self.mix, same_clip=self.same_clip, seed=self.seed)
        if self.eval_clips:
            self.eval_sampler = PairSampler(
                self.eval_clips, None, same_clip=self.same_clip, seed=self.seed + 1
            )
        self.index = index
        log.info("data: %d train subjects, %d eval subjects, %d clips, %d frames",
                 self.train_sampler.num_subjects, self.eval_sampler.num_subjects if self.eval_sampler else 0,
                 len(index.clips), index.num_frames)  # fmt: skip

    def _loader(self, dataset: Dataset, sampler: Any, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_sampler is None:
            self.setup("fit")
        assert self.train_sampler is not None
        world, rank = 1, 0
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            world, rank = trainer.world_size, trainer.global_rank
        ds = PairDataset(
            self.train_sampler, self.image_size, self.pairs_per_epoch, max_attempts=self.max_attempts
        )
        return self._loader(ds, EpochPairSampler(self.pairs_per_epoch, num_replicas=world, rank=rank))

    def val_dataloader(self) -> DataLoader | list:
        """Fixed pairs of the eval subjects; an empty list (no validation) without eval subjects."""
        if self.index is None:
            self.setup("validate")
        if self.eval_sampler is None:
            log.warning("data: no eval_subjects configured: no validation pairs")
            return []
        ds = PairDataset(self.eval_sampler, self.image_size, self.val_pairs, max_attempts=self.max_attempts)
        return self._loader(ds, None)

    def test_dataloader(self) -> DataLoader | list:
        """The validation pairs (eval subjects)."""
        return self.val_dataloader()

    # -------------------------------------------------------------------------------------- skipped frames
    def consume_skipped(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move a batch's ``skipped`` reports into :attr:`skipped` (logging each new file once)."""
        paths = batch.pop("skipped", None) or []
        for p in self.skipped.add(paths):
            log.warning("data: skipped unreadable file %s (replaced by another pair)", p)
        return batch

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict):
            self.consume_skipped(batch)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_count": self.skipped.count, "skipped_files": dict(self.skipped.files)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = SkipStats(
            int(state_dict.get("skipped_count", 0)), dict(state_dict.get("skipped_files", {}))
        )


class SkippedFramesLogger(L.Callback):
    """Logs ``data/skipped_pairs`` (cumulative replaced pairs, summed over ranks) and
    ``data/skipped_files`` at the end of every training epoch, from the trainer's :class:`HeadDataModule`."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if not isinstance(dm, HeadDataModule):
            return
        pl_module.log("data/skipped_pairs", float(dm.skipped.count), sync_dist=True, reduce_fx="sum")
        pl_module.log("data/skipped_files", float(len(dm.skipped.files)), sync_dist=True, reduce_fx="sum")
        if dm.skipped.count:
            log.info("data: %d pairs replaced so far because of %d unreadable files", dm.skipped.count,
                     len(dm.skipped.files))  # fmt: skip
