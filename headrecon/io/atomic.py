"""Atomic file output: write to a temporary file in the same folder, fsync, then rename over the target.

A crash or an exception mid-write never leaves a truncated file where the user expects a complete one, and
never destroys the previous version of that file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "atomic_write_bytes", "save_csv", "save_npz", "save_image"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on error removed.

    `suffix` defaults to the target's suffix so that libraries choosing a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_csv(path: str | os.PathLike, header: list[str], rows: list[list]) -> Path:
    """A CSV table (`header`, then `rows`; "\\n" line ends) written atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_bytes(path, buf.getvalue().encode())


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """`np.savez` written atomically (the `.npz` suffix is required and not appended silently)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: an npz archive must have the .npz suffix")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Save an image atomically. `image` is [H, W] or [H, W, 3|4], uint8 or float in [0, 1]."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    return path
