"""Builders of tiny clip-layout trees for the data tests (8x8..32x32 PNGs, a few frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_clip(
    clip_dir: Path,
    frames: int = 3,
    size: int = 16,
    *,
    value: int | None = None,
    landmarks: bool = True,
    bboxes: bool = False,
    masks: bool = False,
    meta: dict | None = None,
    suffix: str = ".png",
) -> Path:
    """A clip of `frames` solid-colour frames (colour = `value` or a hash of the path) with optional files."""
    (clip_dir / "frames").mkdir(parents=True, exist_ok=True)
    base = value if value is not None else (hash(str(clip_dir)) % 200) + 20
    for t in range(frames):
        img = np.full((size, size, 3), base, np.uint8)
        img[0, 0] = t  # frames differ
        Image.fromarray(img).save(clip_dir / "frames" / f"{t:04d}{suffix}")
        if masks:
            (clip_dir / "masks").mkdir(exist_ok=True)
            m = np.zeros((size, size), np.uint8)
            m[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
            Image.fromarray(m).save(clip_dir / "masks" / f"{t:04d}.png")
    if landmarks:
        lm = np.tile(np.linspace(0, size - 1, 68)[:, None], (frames, 1, 2)).astype(np.float32)
        np.save(clip_dir / "landmarks.npy", lm)
    if bboxes:
        np.save(clip_dir / "bboxes.npy", np.tile(np.float32([1, 1, size - 1, size - 1]), (frames, 1)))
    m = {"fps": 25.0, "source": "test", "camera": None, "crop_size": size}
    m.update(meta or {})
    (clip_dir / "meta.json").write_text(json.dumps(m))
    return clip_dir


def write_tree(
    root: Path,
    datasets: dict[str, int],
    *,
    clips: int = 2,
    frames: int = 3,
    size: int = 16,
    **kwargs,
) -> Path:
    """``root/<dataset>/p<i>/c<k>`` for `datasets` = {name: number of subjects}."""
    for name, n_subjects in datasets.items():
        for i in range(n_subjects):
            for k in range(clips):
                write_clip(root / name / f"p{i}" / f"c{k}", frames, size, **kwargs)
    return root
