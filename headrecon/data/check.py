"""``headrecon data check ROOT``: walk a clip-layout root, decode every file, report every problem.

On top of the structural checks of :func:`headrecon.data.layout.index_root` (missing ``frames/`` or
``meta.json``, empty clips, extra files, ``.npy`` shapes that do not match the frame count, missing masks) it
decodes every frame and mask, and reports unreadable images, frames of different sizes within a clip, frames
that disagree with ``meta.json``'s ``crop_size``, masks of another size than their frame, non-finite
landmarks / boxes and ``gt/flame.npz`` arrays whose length is not the frame count. The exit status is 0 when
nothing at all was found, 1 otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headrecon.data.layout import GT_FLAME_KEYS, ClipInfo, LayoutProblem, index_root
from headrecon.data.media import MediaError, read_image

__all__ = ["CheckReport", "check_root", "check_clip"]


@dataclass
class CheckReport:
    """Counts of what was checked and every problem found (file name + message)."""

    root: Path
    datasets: int = 0
    subjects: int = 0
    clips: int = 0
    frames: int = 0
    unreadable: int = 0
    problems: list[LayoutProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        errors = sum(p.fatal for p in self.problems)
        status = "OK" if self.ok else "PROBLEMS"
        return (f"data check {self.root}: {status}: {self.datasets} datasets, {self.subjects} subjects, "
                f"{self.clips} valid clips, {self.frames} frames decoded; {len(self.problems)} problems "
                f"({errors} errors, {len(self.problems) - errors} warnings), "
                f"{self.unreadable} unreadable images")  # fmt: skip


def _read_grey(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("L"))
    except FileNotFoundError as exc:
        raise MediaError(path, "no such file") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(path, f"unreadable or corrupt image ({exc})") from exc


def check_clip(clip: ClipInfo) -> tuple[list[LayoutProblem], int, int]:
    """Decode every file of a clip the index accepted. Returns (problems, frames decoded, unreadable images)."""
    problems: list[LayoutProblem] = []
    T = clip.num_frames
    sizes: dict[tuple[int, int], list[str]] = {}
    decoded = unreadable = 0
    for t in range(T):
        path = clip.frame_path(t)
        try:
            img = read_image(path)
        except MediaError as exc:
            problems.append(LayoutProblem(path, f"unreadable frame: {exc.reason}"))
            unreadable += 1
            continue
        decoded += 1
        hw = img.shape[:2]
        sizes.setdefault(hw, []).append(clip.frames[t])
        mask_path = clip.mask_path(t)
        if mask_path is not None:
            try:
                m = _read_grey(mask_path)
            except MediaError as exc:
                problems.append(LayoutProblem(mask_path, f"unreadable mask: {exc.reason}"))
                unreadable += 1
                continue
            if m.shape != hw:
                problems.append(LayoutProblem(mask_path, f"mask is {m.shape[1]}x{m.shape[0]} but its frame is "
                                                         f"{hw[1]}x{hw[0]}"))  # fmt: skip
    if len(sizes) > 1:
        desc = ", ".join(f"{w}x{h} ({len(n)} frames, e.g. {n[0]})" for (h, w), n in sizes.items())
        problems.append(LayoutProblem(clip.path / "frames", f"frames of different sizes: {desc}"))
    crop = clip.meta.get("crop_size")
    for (h, w), names in sizes.items():
        if h != w:
            problems.append(
                LayoutProblem(clip.path / "frames" / names[0], f"non-square frame {w}x{h}", False)
            )
        if isinstance(crop, int) and (h, w) != (crop, crop):
            problems.append(LayoutProblem(clip.frame_path(clip.frames.index(names[0])),
                                          f"frame is {w}x{h} but meta.json says crop_size {crop}"))  # fmt: skip
    for flag, name in ((clip.has_landmarks, "landmarks.npy"), (clip.has_bboxes, "bboxes.npy")):
        if not flag:
            continue
        try:
            arr = np.load(clip.path / name)
            if not np.isfinite(arr).all():
                problems.append(LayoutProblem(clip.path / name, "holds non-finite values"))
        except (OSError, ValueError) as exc:
            problems.append(LayoutProblem(clip.path / name, f"unreadable ({exc})"))
    if clip.has_gt:
        try:
            with np.load(clip.gt_path) as z:
                for k in GT_FLAME_KEYS:
                    a = z[k]
                    if a.ndim < 2 or a.shape[0] != T:
                        problems.append(
                            LayoutProblem(clip.gt_path, f"{k} has shape {a.shape}, expected [{T}, D]")
                        )
                    elif not np.isfinite(a).all():
                        problems.append(LayoutProblem(clip.gt_path, f"{k} holds non-finite values"))
        except (OSError, ValueError, KeyError) as exc:
            problems.append(LayoutProblem(clip.gt_path, f"unreadable ({exc})"))
    return problems, decoded, unreadable


def check_root(root: str | os.PathLike, *, progress: Callable[[ClipInfo], None] | None = None) -> CheckReport:
    """Check ``ROOT/<dataset>/<subject>/<clip>`` completely (see the module docstring)."""
    root = Path(root)
    index = index_root(root)
    report = CheckReport(root, problems=list(index.problems))
    report.datasets = len(index.datasets())
    report.subjects = len(index.subjects())
    report.clips = len(index.clips)
    for clip in index.clips:
        if progress is not None:
            progress(clip)
        problems, decoded, unreadable = check_clip(clip)
        report.problems += problems
        report.frames += decoded
        report.unreadable += unreadable
    report.problems.sort(key=lambda p: str(p.path))
    return report
