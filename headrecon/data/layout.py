"""The on-disk clip layout shared by every data source, and a fast reader that indexes and validates it.

Layout (SPEC section 6)::

    ROOT/<dataset>/<subject>/<clip>/
        frames/*.jpg|*.jpeg|*.png    the face crops, square, all the same size (crop_size x crop_size)
        meta.json                    a JSON object, see below
        landmarks.npy                optional, float [T, 68, 2]: iBUG-68 landmarks in frame pixels (x right,
                                     y down, pixel (i, j) has its centre at (j + 0.5, i + 0.5))
        bboxes.npy                   optional, float [T, 4]: face box (x0, y0, x1, y1) in frame pixels
        masks/<frame stem>.png       optional, one grey image per frame (same size; 255 = head, 0 = background)
        gt/flame.npz                 synthetic clips only: ground truth, see :data:`GT_FLAME_KEYS`
        gt/texture.png               synthetic clips only: the subject's albedo texture [Ht, Wt, 3]

Frames are ordered by their file names with a natural sort (``f2.png`` < ``f10.png``); row t of every per-frame
array belongs to the t-th frame in that order. T is the number of frames.

``meta.json`` keys (all optional unless said otherwise; unknown keys are kept and ignored):

=================  ======================================================================================
``crop_size``      int, side of the frames in pixels (checked by ``data check`` when present)
``fps``            float, frames per second of the clip as stored (after any temporal subsampling)
``source``         str, where the clip came from (original video / folder, for provenance)
``camera``         str or null, camera id for multi-view captures (Nersemble's serial), null otherwise
``frame_count``    int, number of frames; when present it must equal T
``box_source``     str, how crops were made: ``"dataset"``, ``"detector"``, ``"centre"`` or ``"synthetic"``
``crop_scale``     float, side of the square crop divided by the face box's larger side
``crop_boxes``     optional [T, 4] list, the square crop of each frame in the ORIGINAL image's pixels
``dataset``        str, dataset name (informational; the folder name is authoritative)
=================  ======================================================================================

:func:`index_root` walks the folders with ``os.scandir`` only (no image decoding, no array data read: ``.npy``
shapes come from their headers), so indexing tens of thousands of clips takes seconds. Problems are collected
as :class:`LayoutProblem` (file name + message); *fatal* ones drop the clip from the index, the others are
warnings. ``headrecon data check`` (:mod:`headrecon.data.check`) additionally decodes every file.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FRAME_SUFFIXES",
    "MASK_SUFFIXES",
    "GT_FLAME_KEYS",
    "CLIP_FILES",
    "ClipInfo",
    "LayoutProblem",
    "LayoutIndex",
    "LayoutError",
    "index_root",
    "index_dataset",
    "index_roots",
    "natural_key",
    "npy_shape",
    "resolve_dataset_dir",
]

#: Frame image suffixes (lower case).
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Mask image suffixes (lower case).
MASK_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Entries a clip folder may hold; anything else is reported as an extra file (a warning).
CLIP_FILES = ("frames", "meta.json", "landmarks.npy", "bboxes.npy", "masks", "gt")
#: Arrays of ``gt/flame.npz``: the :class:`~headrecon.flame.FlameParams` fields, each [T, D] per frame
#: (shape [T, 300], expression [T, 100], the five rotations [T, 3] axis-angle radians, eyelids [T, 2],
#: translation [T, 3] metres), plus ``sh_coeffs`` [T, 9, 3] (radiance SH lighting, see
#: :mod:`headrecon.render.sh`). Writers may add more (camera, background); readers ignore them.
GT_FLAME_KEYS = (
    "shape",
    "expression",
    "global_rotation",
    "neck_rotation",
    "jaw_rotation",
    "left_eye_rotation",
    "right_eye_rotation",
    "eyelids",
    "translation",
    "sh_coeffs",
)


class LayoutError(ValueError):
    """The layout is unusable (e.g. a root without any valid clip). The message lists the problems."""


@dataclass(frozen=True)
class LayoutProblem:
    """A problem found in the layout: the file or folder concerned and what is wrong with it."""

    path: Path
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        kind = "error" if self.fatal else "warning"
        return f"{self.path}: {kind}: {self.message}"


@dataclass(frozen=True)
class ClipInfo:
    """One valid clip. Only names and shapes are stored; nothing is decoded.

    Attributes:
        dataset, subject, clip: the three folder names.
        path: the clip folder.
        frames: frame file names inside ``path/frames``, naturally sorted (T = ``len(frames)``).
        meta: the parsed ``meta.json``.
        masks: mask file name per frame (``None`` where a frame has no mask), or ``None`` without ``masks/``.
        has_landmarks, has_bboxes, has_gt: whether ``landmarks.npy`` [T, 68, 2], ``bboxes.npy`` [T, 4] and
            ``gt/flame.npz`` exist with matching shapes.
    """

    dataset: str
    subject: str
    clip: str
    path: Path
    frames: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    masks: tuple[str | None, ...] | None = None
    has_landmarks: bool = False
    has_bboxes: bool = False
    has_gt: bool = False

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def subject_key(self) -> str:
        """``"<dataset>/<subject>"``, the unique subject id used by eval lists and the pair sampler."""
        return f"{self.dataset}/{self.subject}"

    @property
    def clip_key(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.clip}"

    def frame_path(self, t: int) -> Path:
        return self.path / "frames" / self.frames[t]

    def mask_path(self, t: int) -> Path | None:
        if self.masks is None or self.masks[t] is None:
            return None
        return self.path / "masks" / self.masks[t]

    @property
    def landmarks_path(self) -> Path:
        return self.path / "landmarks.npy"

    @property
    def bboxes_path(self) -> Path:
        return self.path / "bboxes.npy"

    @property
    def gt_path(self) -> Path:
        return self.path / "gt" / "flame.npz"


@dataclass
class LayoutIndex:
    """Valid clips of one or more roots, and every problem met while indexing them."""

    clips: list[ClipInfo] = field(default_factory=list)
    problems: list[LayoutProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[LayoutProblem]:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[LayoutProblem]:
        return [p for p in self.problems if not p.fatal]

    def subjects(self) -> dict[str, list[ClipInfo]]:
        """``"dataset/subject"`` -> its clips (sorted by clip name)."""
        out: dict[str, list[ClipInfo]] = {}
        for c in sorted(self.clips, key=lambda c: (c.dataset, c.subject, natural_key(c.clip))):
            out.setdefault(c.subject_key, []).append(c)
        return out

    def datasets(self) -> list[str]:
        return sorted({c.dataset for c in self.clips})

    @property
    def num_frames(self) -> int:
        return sum(c.num_frames for c in self.clips)

    def extend(self, other: LayoutIndex) -> None:
        self.clips += other.clips
        self.problems += other.problems

    def raise_if_empty(self, what: str) -> None:
        """Raise :class:`LayoutError` listing the problems when no clip was found."""
        if self.clips:
            return
        lines = "\n".join(f"  {p}" for p in self.problems[:50]) or "  (no subject/clip folders found)"
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        raise LayoutError(f"{what}: no valid clip (expected <dataset>/<subject>/<clip>/frames/*.png|jpg):\n"
                          f"{lines}{more}")  # fmt: skip


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``f2`` before ``f10``)."""
    return tuple(int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name))


def npy_shape(path: Path) -> tuple[int, ...]:
    """Shape of a ``.npy`` file from its header only (raises ``ValueError`` when it is not a valid .npy)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, _ = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape)


def _npz_keys(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        return {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}


def resolve_dataset_dir(root: str | os.PathLike, dataset: str) -> Path:
    """The folder of `dataset`: ``root/<dataset>`` when it exists, else `root` itself when it is named
    `dataset`. Raises ``FileNotFoundError`` naming both candidates otherwise."""
    root = Path(root)
    if (root / dataset).is_dir():
        return root / dataset
    if root.is_dir() and root.name == dataset:
        return root
    raise FileNotFoundError(f"dataset {dataset!r}: neither {root / dataset} nor {root} (named {dataset}) "
                            "is a folder")  # fmt: skip


def _scan_clip(dataset: str, subject: str, clip_dir: Path) -> tuple[ClipInfo | None, list[LayoutProblem]]:
    problems: list[LayoutProblem] = []

    def bad(path: Path, msg: str, fatal: bool = True) -> None:
        problems.append(LayoutProblem(path, msg, fatal))

    entries = {e.name: e for e in os.scandir(clip_dir)}
    for name in sorted(entries):
        if name not in CLIP_FILES and not name.startswith("."):
            bad(clip_dir / name, "unexpected file in a clip folder", fatal=False)
    frames_dir = clip_dir / "frames"
    if "frames" not in entries or not entries["frames"].is_dir():
        bad(frames_dir, "missing frames/ folder")
        return None, problems
    frames: list[str] = []
    for e in os.scandir(frames_dir):
        if e.name.startswith("."):
            continue
        if e.is_file() and os.path.splitext(e.name)[1].lower() in FRAME_SUFFIXES:
            frames.append(e.name)
        else:
            bad(frames_dir / e.name, f"not a frame (expected {'|'.join(FRAME_SUFFIXES)})", fatal=False)
    frames.sort(key=natural_key)
    stems = [os.path.splitext(f)[0] for f in frames]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        bad(frames_dir, f"several frames share a name stem: {dup[:5]}")
    if not frames:
        bad(frames_dir, "empty clip: no frames")
        return None, problems
    T = len(frames)

    meta: dict[str, Any] = {}
    meta_path = clip_dir / "meta.json"
    if "meta.json" not in entries:
        bad(meta_path, "missing meta.json")
    else:
        try:
            loaded = json.loads(meta_path.read_text())
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            meta = loaded
        except (OSError, ValueError) as exc:
            bad(meta_path, f"unreadable meta.json ({exc})")
        if "frame_count" in meta and meta["frame_count"] != T:
            bad(meta_path, f"frame_count is {meta['frame_count']} but frames/ holds {T} frames")
        if "crop_size" in meta and not (isinstance(meta["crop_size"], int) and meta["crop_size"] > 0):
            bad(meta_path, f"crop_size must be a positive int, got {meta['crop_size']!r}")

    def check_npy(name: str, expected: tuple[int | None, ...]) -> bool:
        if name not in entries:
            return False
        path = clip_dir / name
        try:
            shape = npy_shape(path)
        except (OSError, ValueError) as exc:
            bad(path, f"unreadable .npy ({exc})")
            return False
        want = tuple(T if d is None else d for d in expected)
        if shape != want:
            bad(path, f"shape {shape} does not match {T} frames (expected {want})")
            return False
        return True

    has_landmarks = check_npy("landmarks.npy", (None, 68, 2))
    has_bboxes = check_npy("bboxes.npy", (None, 4))

    masks: tuple[str | None, ...] | None = None
    if "masks" in entries:
        mask_dir = clip_dir / "masks"
        by_stem: dict[str, str] = {}
        for e in os.scandir(mask_dir):
            stem, suf = os.path.splitext(e.name)
            if e.is_file() and suf.lower() in MASK_SUFFIXES:
                by_stem[stem] = e.name
            elif not e.name.startswith("."):
                bad(mask_dir / e.name, "not a mask image", fatal=False)
        masks = tuple(by_stem.get(s) for s in stems)
        missing = [f for f, m in zip(frames, masks) if m is None]
        if missing:
            bad(mask_dir, f"no mask for {len(missing)} of {T} frames (e.g. {missing[0]}); those use no mask",
                fatal=False)  # fmt: skip
        extra = sorted(set(by_stem) - set(stems))
        if extra:
            bad(mask_dir, f"{len(extra)} masks without a frame (e.g. {by_stem[extra[0]]})", fatal=False)

    has_gt = False
    if "gt" in entries:
        gt = clip_dir / "gt" / "flame.npz"
        if not gt.is_file():
            bad(gt, "gt/ folder without flame.npz", fatal=False)
        else:
            try:
                keys = _npz_keys(gt)
                missing_keys = [k for k in GT_FLAME_KEYS if k not in keys]
                if missing_keys:
                    bad(gt, f"missing arrays {missing_keys}")
                else:
                    has_gt = True
            except (OSError, zipfile.BadZipFile) as exc:
                bad(gt, f"unreadable npz ({exc})")

    if any(p.fatal for p in problems):
        return None, problems
    info = ClipInfo(dataset, subject, clip_dir.name, clip_dir, tuple(frames), meta, masks,
                    has_landmarks, has_bboxes, has_gt)  # fmt: skip
    return info, problems


def _subdirs(path: Path, problems: list[LayoutProblem], what: str) -> list[Path]:
    out = []
    for e in os.scandir(path):
        if e.name.startswith("."):
            continue
        if e.is_dir():
            out.append(Path(e.path))
        else:
            problems.append(
                LayoutProblem(Path(e.path), f"unexpected file where {what} folders belong", False)
            )
    return sorted(out, key=lambda p: natural_key(p.name))


def index_dataset(dataset_dir: str | os.PathLike, dataset: str | None = None) -> LayoutIndex:
    """Index ``<dataset_dir>/<subject>/<clip>/`` (the dataset name defaults to the folder's name)."""
    dataset_dir = Path(dataset_dir)
    dataset = dataset or dataset_dir.name
    index = LayoutIndex()
    if not dataset_dir.is_dir():
        index.problems.append(LayoutProblem(dataset_dir, "no such folder"))
        return index
    subjects = _subdirs(dataset_dir, index.problems, "subject")
    if not subjects:
        index.problems.append(LayoutProblem(dataset_dir, "dataset folder holds no subject folders"))
    for subject_dir in subjects:
        clips = _subdirs(subject_dir, index.problems, "clip")
        if not clips:
            index.problems.append(LayoutProblem(subject_dir, "subject folder holds no clip folders"))
        for clip_dir in clips:
            info, problems = _scan_clip(dataset, subject_dir.name, clip_dir)
            index.problems += problems
            if info is not None:
                index.clips.append(info)
    return index


def index_root(root: str | os.PathLike, datasets: Iterable[str] | None = None) -> LayoutIndex:
    """Index ``ROOT/<dataset>/<subject>/<clip>`` for every dataset folder of `root` (or only `datasets`).

    No image is decoded. Problems are collected, not raised: see :class:`LayoutIndex`.
    """
    root = Path(root)
    index = LayoutIndex()
    if not root.is_dir():
        index.problems.append(LayoutProblem(root, "no such folder"))
        return index
    if datasets is None:
        dirs = _subdirs(root, index.problems, "dataset")
        if not dirs:
            index.problems.append(LayoutProblem(root, "root holds no dataset folders"))
        for d in dirs:
            index.extend(index_dataset(d))
    else:
        for name in datasets:
            try:
                index.extend(index_dataset(resolve_dataset_dir(root, name), name))
            except FileNotFoundError as exc:
                index.problems.append(LayoutProblem(root / name, str(exc)))
    return index


def index_roots(roots: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]]) -> LayoutIndex:
    """Index several datasets: ``{"vfhq": ROOT, "nersemble": [ROOT_A, ROOT_B]}``, each root holding a folder
    named after the dataset (or being that folder)."""
    index = LayoutIndex()
    for dataset, value in roots.items():
        paths = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for r in paths:
            try:
                index.extend(index_dataset(resolve_dataset_dir(r, dataset), dataset))
            except FileNotFoundError as exc:
                index.problems.append(LayoutProblem(Path(r), str(exc)))
    return index
