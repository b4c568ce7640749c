"""AffectNet for the emotion probe: CSV reader, FLAME-parameter feature cache, DataModule.

**Annotations.** AffectNet's official ``training.csv`` / ``validation.csv`` have the columns
``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression, valence,
arousal`` (some copies of ``validation.csv`` lack the header row: then this column order is assumed). The 8
emotion classes are :data:`AFFECTNET_CLASSES` (0 Neutral .. 7 Contempt); rows labelled 8 None, 9 Uncertain,
10 No-Face, rows with the valence/arousal sentinel -2 and malformed rows are excluded and counted.

**Features.** FLAME parameters are predicted once per image with an estimator checkpoint (FlameEstimator or
GaussianRegressor, :meth:`FlameEstimator.from_checkpoint`): the face box is made square (``crop_scale`` x its
larger side, as ``headrecon reconstruct``'s box crops) and resampled to the estimator's input size. Results
are cached in ``cache_dir/<sha256(checkpoint)[:16]>-s<crop_scale>-<size>/<csv stem>.npz``, holding per image
``paths`` (the CSV's image path), ``ok`` (False: unreadable image, counted and excluded), the labels
``emotion`` / ``valence`` / ``arousal``, every :class:`~headrecon.flame.params.FlameParams` field [N, D] and
``checkpoint_sha256``. A cache is reused only when its image paths match the CSV's exactly. Extraction writes
``part_NNNNN.npz`` files of ``chunk_size`` images as it goes (all atomic), so an interrupted run resumes where it
stopped; the parts are merged into the final file and removed.

**Probe inputs.** ``param_keys`` FlameParams fields concatenated; default ``("expression", "jaw_rotation",
"eyelids")`` (100 + 3 + 2 = 105 values): what a face's expression is made of, as in EMOCA's probe (expression +
jaw) plus SHeaP's eyelids. Add ``"shape"`` or ``"global_rotation"`` to study identity or pose leakage.
``n_expression`` keeps only the first coefficients.

**DataModule.** :class:`AffectNetDataModule` extracts (``prepare_data``, rank 0) and serves cached features, or
serves feature files given directly (``train_features`` ...: the cache format, e.g. from
:func:`synthetic_emotion_features`). AffectNet's test set is not public: ``test`` defaults to the validation
split, as in EMOCA and SHeaP. Batches: ``{"features": [B, F] float32, "emotion": [B] long, "valence": [B],
"arousal": [B]}``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from headrecon.data.crop import FaceBox, crop_image, square_box
from headrecon.data.media import MediaError, read_image
from headrecon.flame.params import FlameParams
from headrecon.io.atomic import save_npz

__all__ = [
    "AFFECTNET_CLASSES",
    "AFFECTNET_COLUMNS",
    "DEFAULT_PARAM_KEYS",
    "AffectNetRecord",
    "read_affectnet_csv",
    "checkpoint_sha256",
    "FlameFeatureCache",
    "load_feature_file",
    "synthetic_emotion_features",
    "FlameFeatureDataset",
    "AffectNetDataModule",
]

log = logging.getLogger(__name__)

AFFECTNET_CLASSES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                     "facial_landmarks", "expression", "valence", "arousal")  # fmt: skip
#: Labels outside the 8 emotions (excluded): 8 None, 9 Uncertain, 10 No-Face.
EXCLUDED_LABELS = {8: "none", 9: "uncertain", 10: "no_face"}
VA_SENTINEL = -2.0
DEFAULT_PARAM_KEYS = ("expression", "jaw_rotation", "eyelids")
FLAME_FIELDS = tuple(f.name for f in fields(FlameParams))


@dataclass(frozen=True)
class AffectNetRecord:
    """One annotated image: path relative to the image root, face box (pixels), class 0..7, valence, arousal."""

    path: str
    box: FaceBox
    emotion: int
    valence: float
    arousal: float


def read_affectnet_csv(path: str | os.PathLike) -> tuple[list[AffectNetRecord], dict[str, int]]:
    """Records of an official AffectNet CSV and the excluded-row counts
    (``none``, ``uncertain``, ``no_face``, ``va_sentinel``, ``malformed``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such AffectNet annotation file")
    excluded = {"none": 0, "uncertain": 0, "no_face": 0, "va_sentinel": 0, "malformed": 0}
    records: list[AffectNetRecord] = []
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        first = next(rows, None)
        if first is None:
            return records, excluded
        if first and first[0].strip() == AFFECTNET_COLUMNS[0]:
            header = [c.strip() for c in first]
            missing = [c for c in AFFECTNET_COLUMNS if c not in header]
            if missing:
                raise ValueError(f"{path}: AffectNet CSV lacks the columns {missing}")
            pending: list[list[str]] = []
        else:  # headerless copy: the official column order
            header, pending = list(AFFECTNET_COLUMNS), [first]
        col = {c: header.index(c) for c in AFFECTNET_COLUMNS}
        for row in (*pending, *rows):
            if not row or not "".join(row).strip():
                continue
            try:
                label = int(float(row[col["expression"]]))
                valence, arousal = float(row[col["valence"]]), float(row[col["arousal"]])
                x, y, w, h = (float(row[col[c]]) for c in ("face_x", "face_y", "face_width", "face_height"))
                image = row[col["subDirectory_filePath"]].strip()
            except (ValueError, IndexError):
                excluded["malformed"] += 1
                continue
            if label in EXCLUDED_LABELS:
                excluded[EXCLUDED_LABELS[label]] += 1
            elif not 0 <= label < len(AFFECTNET_CLASSES) or w <= 0 or h <= 0 or not image:
                excluded["malformed"] += 1
            elif valence == VA_SENTINEL or arousal == VA_SENTINEL:
                excluded["va_sentinel"] += 1
            else:
                records.append(AffectNetRecord(image, FaceBox(x, y, x + w, y + h), label, valence, arousal))
    return records, excluded


_HASHES: dict[tuple[str, int, int], str] = {}


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), memoised per (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def load_feature_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A cached (or synthetic) feature file as a dict of arrays."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class FlameFeatureCache:
    """FLAME parameters of AffectNet images, predicted once per (checkpoint, crop) and cached as npz.

    Args:
        cache_dir: root of the cache.
        checkpoint: estimator checkpoint (FlameEstimator or GaussianRegressor).
        flame_dir: overrides the FLAME folder recorded in the checkpoint.
        crop_scale: square crop side / the face box's larger side.
        batch_size: images per estimator forward.
        device: "cpu", "cuda", ... or "auto" (CUDA when available).
        chunk_size: images per resumable part file.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        checkpoint: str | os.PathLike,
        *,
        flame_dir: str | None = None,
        crop_scale: float = 1.5,
        batch_size: int = 32,
        device: str = "auto",
        chunk_size: int = 2048,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"{self.checkpoint}: no such estimator checkpoint")
        self.cache_dir, self.flame_dir = Path(cache_dir), flame_dir
        self.crop_scale, self.batch_size, self.chunk_size = crop_scale, batch_size, chunk_size
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.sha256 = checkpoint_sha256(self.checkpoint)
        self._estimator = None
        self.extracted = 0  # images run through the estimator by this object (0 when the cache answered)

    @property
    def estimator(self):
        if self._estimator is None:
            from headrecon.modules.flame_estimator import FlameEstimator

            self._estimator = FlameEstimator.from_checkpoint(
                self.checkpoint, flame_dir=self.flame_dir, map_location=self.device
            )
        return self._estimator

    def _image_size(self) -> int:
        ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        hp = ckpt.get("estimator_config") or ckpt.get("hyper_parameters", {})
        hp = hp.get("estimator_hparams", hp)
        return int(hp.get("img_size", 224))

    def folder(self) -> Path:
        """``cache_dir/<sha16>-s<crop_scale>-<size>``: one folder per checkpoint and crop."""
        if not hasattr(self, "_folder"):
            self._folder = self.cache_dir / f"{self.sha256[:16]}-s{self.crop_scale:g}-{self._image_size()}"
        return self._folder

    def path_for(self, name: str) -> Path:
        """The feature file of split `name` (the CSV's stem)."""
        return self.folder() / f"{name}.npz"

    def get(self, records: Sequence[AffectNetRecord], image_root: str | os.PathLike, name: str) -> Path:
        """The feature file for `records` (images under `image_root`): from the cache, or extracted now."""
        out = self.path_for(name)
        paths = np.array([r.path for r in records], dtype=str)
        if out.is_file():
            cached = load_feature_file(out)
            if np.array_equal(cached["paths"], paths) and str(cached["checkpoint_sha256"]) == self.sha256:
                log.info("AffectNet features: %s from the cache (%d images)", name, len(paths))
                return out
            log.warning("AffectNet features: %s is stale (other images or checkpoint): extracting again", out)
        parts_dir = self.folder() / f"{name}.parts"
        parts = []
        for i, start in enumerate(range(0, len(records), self.chunk_size)):
            chunk = records[start : start + self.chunk_size]
            part = parts_dir / f"part_{i:05d}.npz"
            if part.is_file() and np.array_equal(
                load_feature_file(part)["paths"], paths[start : start + len(chunk)]
            ):
                parts.append(load_feature_file(part))
                continue
            arrays = self._extract(chunk, Path(image_root))
            save_npz(part, **arrays)
            parts.append(arrays)
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else self._empty()
        merged.update(
            emotion=np.array([r.emotion for r in records], dtype=np.int64),
            valence=np.array([r.valence for r in records], dtype=np.float32),
            arousal=np.array([r.arousal for r in records], dtype=np.float32),
            checkpoint_sha256=np.array(self.sha256),
            crop_scale=np.array(self.crop_scale),
        )
        save_npz(out, **merged)
        for p in sorted(parts_dir.glob("part_*.npz")):
            p.unlink()
        if parts_dir.is_dir():
            parts_dir.rmdir()
        n_bad = int((~merged["ok"]).sum())
        if n_bad:
            log.warning("AffectNet features: %d of %d images of %s were unreadable and are excluded",
                        n_bad, len(records), name)  # fmt: skip
        return out

    def _empty(self) -> dict[str, np.ndarray]:
        est = self.estimator
        z = FlameParams.zeros(0, est.config["n_shape"], est.config["n_expression"]).to_numpy()
        return {"paths": np.array([], dtype=str), "ok": np.zeros(0, dtype=bool), **z}

    @torch.no_grad()
    def _extract(self, records: Sequence[AffectNetRecord], image_root: Path) -> dict[str, np.ndarray]:
        est = self.estimator
        size = int(est.config["img_size"])
        ok = np.zeros(len(records), dtype=bool)
        outputs: dict[str, list[np.ndarray]] = {k: [] for k in FLAME_FIELDS}
        for start in range(0, len(records), self.batch_size):
            batch = records[start : start + self.batch_size]
            crops = []
            for j, rec in enumerate(batch):
                try:
                    image = read_image(image_root / rec.path)
                    crops.append(
                        crop_image(image, square_box(rec.box, self.crop_scale), size, source="box-file").image
                    )
                    ok[start + j] = True
                except MediaError as exc:
                    log.warning("AffectNet: skipping %s", exc)
                    crops.append(np.zeros((size, size, 3), dtype=np.uint8))
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
            for k, v in est(x).flame.to_numpy().items():
                outputs[k].append(v.astype(np.float32))
            self.extracted += len(batch)
        return {"paths": np.array([r.path for r in records], dtype=str), "ok": ok,
                **{k: np.concatenate(v) for k, v in outputs.items()}}  # fmt: skip


def synthetic_emotion_features(
    n: int,
    *,
    seed: int = 0,
    n_expression: int = 100,
    n_shape: int = 300,
    shift: float = 2.0,
) -> dict[str, np.ndarray]:
    """A synthetic emotion set in the feature-file format: class k in 0..7 shifts expression coefficient k by
    `shift`; valence = 0.9 tanh(expression[8]), arousal = 0.9 tanh(expression[9]) (in AffectNet's [-1, 1]).
    Other parameters are random (shape, jaw, eyelids) so that the probe must find the informative ones."""
    rng = np.random.default_rng(seed)
    emotion = rng.integers(0, len(AFFECTNET_CLASSES), n)
    p = FlameParams.random(n, n_shape, n_expression, generator=torch.Generator().manual_seed(seed)).to_numpy()
    p["expression"][np.arange(n), emotion] += shift
    return {
        **p,
        "paths": np.array([f"synthetic/{i:06d}.png" for i in range(n)]),
        "ok": np.ones(n, dtype=bool),
        "emotion": emotion.astype(np.int64),
        "valence": (0.9 * np.tanh(p["expression"][:, 8])).astype(np.float32),
        "arousal": (0.9 * np.tanh(p["expression"][:, 9])).astype(np.float32),
        "checkpoint_sha256": np.array("synthetic"),
    }


class FlameFeatureDataset(Dataset):
    """Probe samples from a feature file's arrays (rows with ``ok`` False dropped).

    features [N, F]: the `param_keys` fields concatenated (expression cut to `n_expression` if given)."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        param_keys: Sequence[str] = DEFAULT_PARAM_KEYS,
        n_expression: int | None = None,
    ) -> None:
        unknown = [k for k in param_keys if k not in FLAME_FIELDS]
        if unknown or not param_keys:
            raise ValueError(f"param_keys {list(param_keys)}: choose from {list(FLAME_FIELDS)}")
        keep = np.asarray(arrays["ok"], dtype=bool) if "ok" in arrays else slice(None)
        cols = []
        for k in param_keys:
            a = np.asarray(arrays[k], dtype=np.float32)
            cols.append(a[:, :n_expression] if (k == "expression" and n_expression is not None) else a)
        self.features = torch.from_numpy(np.concatenate(cols, axis=1)[keep].copy())
        self.emotion = torch.from_numpy(np.asarray(arrays["emotion"], dtype=np.int64)[keep].copy())
        self.valence = torch.from_numpy(np.asarray(arrays["valence"], dtype=np.float32)[keep].copy())
        self.arousal = torch.from_numpy(np.asarray(arrays["arousal"], dtype=np.float32)[keep].copy())

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"features": self.features[i], "emotion": self.emotion[i], "valence": self.valence[i],
                "arousal": self.arousal[i]}  # fmt: skip


class AffectNetDataModule(pl.LightningDataModule):
    """Cached FLAME parameters of AffectNet images for :class:`~headrecon.modules.AffectNetProbe`.

    Args:
        root: AffectNet image root (the CSVs' ``subDirectory_filePath`` are relative to it).
        train_csv, val_csv, test_csv: annotation files (``test_csv`` defaults to ``val_csv``).
        estimator_ckpt: the checkpoint whose FLAME predictions are probed; flame_dir overrides its FLAME folder.
        cache_dir, crop_scale, extract_batch_size, extract_device: see :class:`FlameFeatureCache`.
        train_features, val_features, test_features: feature files used as they are (no CSV, no estimator).
        param_keys, n_expression: probe inputs (see the module docstring).
        batch_size (paper: 16), num_workers.
    """

    def __init__(
        self,
        root: str | None = None,
        train_csv: str | None = None,
        val_csv: str | None = None,
        test_csv: str | None = None,
        estimator_ckpt: str | None = None,
        flame_dir: str | None = None,
        cache_dir: str = "affectnet_cache",
        train_features: str | None = None,
        val_features: str | None = None,
        test_features: str | None = None,
        param_keys: Sequence[str] = DEFAULT_PARAM_KEYS,
        n_expression: int | None = None,
        crop_scale: float = 1.5,
        extract_batch_size: int = 32,
        extract_device: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.csvs = {"train": train_csv, "val": val_csv, "test": test_csv or val_csv}
        self.given = {"train": train_features, "val": val_features, "test": test_features or val_features}
        for split in ("train", "val"):
            if self.given[split] is None and self.csvs[split] is None:
                raise ValueError(f"AffectNetDataModule: give {split}_features or {split}_csv")
        if any(self.given[s] is None for s in self.given if self.csvs[s]) and (
            root is None or estimator_ckpt is None
        ):
            raise ValueError(
                "AffectNetDataModule: extracting features from CSVs needs root and estimator_ckpt"
            )
        self.param_keys, self.n_expression = tuple(param_keys), n_expression
        self.datasets: dict[str, FlameFeatureDataset] = {}
        self._cache: FlameFeatureCache | None = None

    def _feature_cache(self) -> FlameFeatureCache:
        if self._cache is None:
            hp = self.hparams
            self._cache = FlameFeatureCache(hp.cache_dir, hp.estimator_ckpt, flame_dir=hp.flame_dir,
                                            crop_scale=hp.crop_scale, batch_size=hp.extract_batch_size,
                                            device=hp.extract_device)  # fmt: skip
        return self._cache

    def feature_file(self, split: str) -> Path | None:
        """The feature file serving `split` ("train", "val", "test"), None when the split has no source."""
        if self.given[split] is not None:
            return Path(self.given[split])
        if self.csvs[split] is None:
            return None
        return self._feature_cache().path_for(Path(self.csvs[split]).stem)

    def prepare_data(self) -> None:
        """Extract (once, cached) the FLAME parameters of every CSV split not given as a feature file."""
        done = set()
        for split, csv_path in self.csvs.items():
            if self.given[split] is not None or csv_path is None or csv_path in done:
                continue
            records, excluded = read_affectnet_csv(csv_path)
            log.info("AffectNet %s: %d images, excluded %s", csv_path, len(records), excluded)
            self._feature_cache().get(records, self.hparams.root, Path(csv_path).stem)
            done.add(csv_path)

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            path = self.feature_file(split)
            if path is not None and split not in self.datasets:
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{path}: feature file missing (run prepare_data / check the path)"
                    )
                self.datasets[split] = FlameFeatureDataset(load_feature_file(path), self.param_keys,
                                                           self.n_expression)  # fmt: skip

    def feature_statistics(self) -> tuple[Tensor, Tensor]:
        """Per-feature mean and std [F] of the training set."""
        self.setup("fit")
        x = self.datasets["train"].features
        return x.mean(0), x.std(0) if x.shape[0] > 1 else torch.ones(x.shape[1])

    @property
    def num_features(self) -> int:
        self.setup("fit")
        return int(self.datasets["train"].features.shape[1])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, drop_last=False)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def state_dict(self) -> dict[str, Any]:
        return {}
