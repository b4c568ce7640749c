"""Reading user inputs: images, folders of images and videos, with per-item errors instead of crashes.

Images are returned as uint8 RGB arrays [H, W, 3]. A file that cannot be read raises :class:`MediaError` naming
the file and the reason; callers that process many inputs catch it, report it and go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "MediaError",
    "InputItem",
    "expand_inputs",
    "read_image",
    "iter_video",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


class MediaError(ValueError):
    """An input file could not be read. The message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class InputItem:
    """One input: an image or a video file."""

    path: Path
    kind: str  # "image" | "video"


def expand_inputs(paths: list[str | os.PathLike]) -> tuple[list[InputItem], list[MediaError]]:
    """Images, videos and folders (searched non-recursively, sorted) to a list of inputs.

    Returns the inputs and the problems found (missing paths, unsupported suffixes), which callers report.
    """
    items: list[InputItem] = []
    problems: list[MediaError] = []
    for p in map(Path, paths):
        if p.is_dir():
            children = sorted(c for c in p.iterdir() if c.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not children:
                problems.append(MediaError(p, "folder holds no images or videos"))
            items += [_item(c) for c in children]
        elif not p.exists():
            problems.append(MediaError(p, "no such file or folder"))
        elif p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            items.append(_item(p))
        else:
            problems.append(MediaError(p, f"unsupported file type {p.suffix!r}"))
    return items, problems


def _item(p: Path) -> InputItem:
    return InputItem(p, "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB [H, W, 3] (grey and RGBA are converted; EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise MediaError(path, "no such file") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(path, f"unreadable or corrupt image ({exc})") from exc
    if arr.ndim != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise MediaError(path, f"degenerate image of shape {arr.shape}")
    return arr


def iter_video(
    path: str | os.PathLike, *, stride: int = 1, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """Frames of a video as uint8 RGB [H, W, 3] (every `stride`-th frame, at most `max_frames`)."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise MediaError(path, "no such file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(path, "cannot open video (unsupported codec or corrupt file)")
    n_read = n_out = 0
    try:
        while max_frames is None or n_out < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if n_read % stride == 0:
                n_out += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            n_read += 1
    finally:
        cap.release()
    if n_read == 0:
        raise MediaError(path, "video has no readable frames")


def video_fps(path: str | os.PathLike) -> float:
    """Frames per second stored in a video file (0 when unknown)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
