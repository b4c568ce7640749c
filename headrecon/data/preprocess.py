"""Convert VFHQ and Nersemble to the clip layout (:mod:`headrecon.data.layout`): square face crops resized to
``size`` pixels, ``meta.json`` with the crop boxes, ``bboxes.npy`` and (when the source has 68 landmarks)
``landmarks.npy`` in crop pixels.

**VFHQ** (``headrecon data preprocess vfhq --src SRC --out ROOT``). Expected input, as the dataset is released
(frames extracted per clip plus its per-clip meta-info files)::

    SRC/<clip name>/*.png|jpg          the clip's frames (natural order)
    SRC/<clip name>.txt                the clip's annotation; also found as SRC/<clip name>/<clip name>.txt
                                       or ANNOTATIONS/<clip name>.txt with --annotations ANNOTATIONS

Clip names follow VFHQ's ``Clip+<video id>+P<person>+C<clip>+F<start>-<end>``; the subject is
``<video id>+P<person>`` (one person in one video) and the clip ``C<clip>+F<start>-<end>``; other names become
their own subject with clip ``clip``. The annotation text file holds ``KEY: value`` header lines (``H``,
``W``, ``FPS``, ``CROP_BBOX: x0 y0 x1 y1``, ...; other lines without a leading integer are ignored) and one
row per frame: an integer frame index followed by numbers, whose count says what they are:

=====  ========================================================================
4      face box x0 y0 x1 y1
10     5 landmarks x y (insightface order: eyes, nose, mouth corners)
14     box + 5 landmarks
136    68 landmarks (iBUG order)
140    box + 68 landmarks
=====  ========================================================================

Coordinates are pixels of the original video frame (``W`` x ``H``, continuous coordinates with pixel (i, j)
covering [j, j+1) x [i, i+1)). When the frame images are the size of ``CROP_BBOX`` instead (frames stored
already cropped), the coordinates are shifted by the box's corner. A row belongs to the frame whose file stem
is its index; when stems are not indices and the counts agree, rows go to frames in order. Frames without a
row are left out (reported). The face box is the row's box, or the landmarks' bounding box (5-point boxes are
doubled: they span eyes to mouth only). With ``--detector`` the detector's box replaces the dataset's.

**Nersemble** (``headrecon data preprocess nersemble --src SRC --out ROOT --detector DIR``)::

    SRC/<subject>/[sequences/]<sequence>/timesteps/frame_<t>/images*/cam_<serial>.jpg|png   (release layout)
    SRC/<subject>/[sequences/]<sequence>/<camera>/*.jpg|png                                 (frame folders)
    SRC/<subject>/[sequences/]<sequence>/**/<camera>.mp4|avi|mov|...                        (one video per camera)

Each (sequence, camera) becomes the clip ``<sequence>__<camera>`` of subject ``<subject>``. Nersemble has no
face boxes: frames are cropped around insightface's detection (``--detector``), or the centred square with
``--centre-crop``. Frames where the detector finds no face take the box of the nearest frame that has one.

Both: boxes are smoothed over time (``--smooth`` frames, moving average), squared and enlarged by
``--crop-scale``, and frames are resampled to ``--size`` pixels (black outside the image). Every file is
written atomically and ``meta.json`` last, so a clip that has ``meta.json`` is complete: re-running skips it
(``--overwrite`` redoes it).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from headrecon.data.crop import FaceBox, InsightFaceDetector, centre_box, crop_image, square_box
from headrecon.data.layout import natural_key
from headrecon.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, iter_video, read_image, video_fps
from headrecon.io.atomic import atomic_path, atomic_write_bytes

__all__ = [
    "PreprocessOptions",
    "PreprocessReport",
    "VfhqAnnotation",
    "parse_vfhq_annotation",
    "vfhq_names",
    "preprocess_vfhq",
    "preprocess_nersemble",
    "write_clip",
]

log = logging.getLogger(__name__)


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


@dataclass
class PreprocessOptions:
    """size: output crop side (pixels); crop_scale: crop side / face box side; smooth: moving-average window
    (frames) over the boxes; stride / max_frames: temporal subsampling per clip; image_format: "jpg" or "png";
    jpeg_quality; overwrite: redo clips that already have meta.json."""

    size: int = 512
    crop_scale: float = 1.5
    smooth: int = 5
    stride: int = 1
    max_frames: int | None = None
    image_format: str = "jpg"
    jpeg_quality: int = 95
    overwrite: bool = False


@dataclass
class PreprocessReport:
    """Clips and frames written, clips skipped as already done, and problems (path: reason)."""

    clips: int = 0
    frames: int = 0
    already_done: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.clips} clips, {self.frames} frames written; {self.already_done} clips already done; "
                f"{len(self.problems)} problems")  # fmt: skip


# ------------------------------------------------------------------------------------------------ writing
def _smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Moving average of [T, 4] boxes over `window` frames (edges use the frames available)."""
    if window <= 1 or len(boxes) < 2:
        return boxes
    T, h = len(boxes), window // 2
    c = np.cumsum(np.concatenate([np.zeros((1, 4)), boxes]), axis=0)
    lo = np.clip(np.arange(T) - h, 0, T)
    hi = np.clip(np.arange(T) + h + 1, 0, T)
    return (c[hi] - c[lo]) / (hi - lo)[:, None]


def _save_frame(path: Path, image: np.ndarray, opts: PreprocessOptions) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        if opts.image_format == "jpg":
            Image.fromarray(image).save(tmp, format="JPEG", quality=opts.jpeg_quality)
        else:
            Image.fromarray(image).save(tmp, format="PNG")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_clip(
    out_dir: Path,
    frames: Callable[[], Iterator[tuple[str, np.ndarray]]],
    boxes: np.ndarray,
    opts: PreprocessOptions,
    meta: dict[str, Any],
    landmarks: np.ndarray | None = None,
) -> int:
    """Crop and write one clip. `frames()` yields (stem, RGB uint8 [H, W, 3]) for the T frames that `boxes`
    [T, 4] (face boxes, image pixels) and `landmarks` [T, 68, 2] (image pixels, optional) describe.
    Returns the number of frames written. ``meta.json`` is written last."""
    boxes = _smooth_boxes(np.asarray(boxes, dtype=np.float64), opts.smooth)
    S = opts.size
    crops, faces, lmks = [], [], []
    t = -1
    for t, (stem, image) in enumerate(frames()):
        if t >= len(boxes):
            raise ValueError(f"{out_dir}: more frames than boxes ({len(boxes)})")
        face = FaceBox(*boxes[t])
        sq = square_box(face, opts.crop_scale)
        crop = crop_image(image, sq, S, source=meta.get("box_source", "dataset"))
        _save_frame(out_dir / "frames" / f"{stem}.{opts.image_format}", crop.image, opts)
        scale = S / (sq.x1 - sq.x0)
        crops.append([sq.x0, sq.y0, sq.x1, sq.y1])
        faces.append([(face.x0 - sq.x0) * scale, (face.y0 - sq.y0) * scale, (face.x1 - sq.x0) * scale,
                      (face.y1 - sq.y0) * scale])  # fmt: skip
        if landmarks is not None:
            lmks.append((landmarks[t] - np.array([sq.x0, sq.y0])) * scale)
    T = t + 1
    if T != len(boxes):
        raise ValueError(f"{out_dir}: {T} frames but {len(boxes)} boxes")
    _save_npy(out_dir / "bboxes.npy", np.asarray(faces, dtype=np.float32))
    if landmarks is not None:
        _save_npy(out_dir / "landmarks.npy", np.asarray(lmks, dtype=np.float32))
    meta = {**meta, "crop_size": S, "frame_count": T, "crop_scale": opts.crop_scale,
            "crop_boxes": np.round(np.asarray(crops), 2).tolist()}  # fmt: skip
    atomic_write_bytes(out_dir / "meta.json", (json.dumps(meta) + "\n").encode())
    return T


def _as_detector(detector: str | os.PathLike | Detector | None) -> Detector | None:
    if detector is None or hasattr(detector, "detect"):
        return detector  # type: ignore[return-value]
    return InsightFaceDetector(detector)


def _detect_boxes(images: Iterator[np.ndarray], detector: Detector) -> tuple[np.ndarray, int]:
    """Most confident face per frame, [T, 4]; frames without a face take the nearest frame's box.
    Returns the boxes and the number of frames without a detection (raises when no frame has one)."""
    found: list[np.ndarray | None] = []
    for img in images:
        faces = detector.detect(img)
        found.append(None if not faces else np.array([faces[0].x0, faces[0].y0, faces[0].x1, faces[0].y1]))
    have = [i for i, b in enumerate(found) if b is not None]
    if not have:
        raise ValueError("no face detected in any frame")
    out = np.zeros((len(found), 4))
    for i, b in enumerate(found):
        out[i] = b if b is not None else found[min(have, key=lambda j: abs(j - i))]
    return out, len(found) - len(have)


def _clip_done(out_dir: Path, opts: PreprocessOptions) -> bool:
    return (out_dir / "meta.json").is_file() and not opts.overwrite


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+\-]", "_", name)


# ------------------------------------------------------------------------------------------------ VFHQ
@dataclass
class VfhqAnnotation:
    """A parsed VFHQ annotation file: header values, and per frame index a box [4] and landmarks [K, 2]
    (K = 5 or 68, or None), in original-video pixels."""

    header: dict[str, str]
    boxes: dict[int, np.ndarray]
    landmarks: dict[int, np.ndarray | None]

    @property
    def crop_bbox(self) -> np.ndarray | None:
        v = self.header.get("CROP_BBOX")
        return None if v is None else np.array([float(x) for x in v.split()[:4]])

    @property
    def video_size(self) -> tuple[int, int] | None:
        """(W, H) of the original video, when given."""
        if "W" in self.header and "H" in self.header:
            return int(float(self.header["W"])), int(float(self.header["H"]))
        return None


def parse_vfhq_annotation(path: str | os.PathLike) -> VfhqAnnotation:
    """Parse a VFHQ per-clip annotation text file (format in the module docstring). Raises ``ValueError``
    naming the file and line on malformed rows."""
    path = Path(path)
    header: dict[str, str] = {}
    boxes: dict[int, np.ndarray] = {}
    lmks: dict[int, np.ndarray | None] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if not re.fullmatch(r"\d+", parts[0]):
            if ":" in line:
                key, _, value = line.partition(":")
                header[key.strip().upper()] = value.strip()
            continue
        try:
            vals = np.array([float(x) for x in parts[1:]])
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: non-numeric value ({exc})") from exc
        n = len(vals)
        if n not in (4, 10, 14, 136, 140):
            raise ValueError(
                f"{path}:{lineno}: {n} numbers after the frame index; expected 4, 10, 14, 136 or 140"
            )
        box = vals[:4] if n in (4, 14, 140) else None
        pts = vals[4:] if n in (14, 140) else (vals if n in (10, 136) else None)
        lm = None if pts is None else pts.reshape(-1, 2)
        if box is None:
            assert lm is not None
            lo, hi = lm.min(axis=0), lm.max(axis=0)
            if len(lm) == 5:  # eyes-to-mouth span: about half a face box
                c, half = (lo + hi) / 2, (hi - lo).max()
                lo, hi = c - half, c + half
            box = np.concatenate([lo, hi])
        idx = int(parts[0])
        boxes[idx], lmks[idx] = box, lm
    if not boxes:
        raise ValueError(f"{path}: no per-frame rows")
    return VfhqAnnotation(header, boxes, lmks)


def vfhq_names(clip_name: str) -> tuple[str, str]:
    """(subject, clip) of a VFHQ clip name ``Clip+<video>+P<p>+C<c>+F<a>-<b>``; other names: (name, "clip")."""
    m = re.fullmatch(r"Clip\+(.+)\+(P\d+)\+(C\d+)\+(F\d+-\d+)", clip_name)
    if m:
        return _safe(f"{m.group(1)}+{m.group(2)}"), _safe(f"{m.group(3)}+{m.group(4)}")
    return _safe(clip_name), "clip"


def _list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: natural_key(p.name))  # fmt: skip


def _subsample(items: list, opts: PreprocessOptions) -> list:
    items = items[:: max(1, opts.stride)]
    return items if opts.max_frames is None else items[: opts.max_frames]


def _image_frames(paths: Sequence[Path]) -> Callable[[], Iterator[tuple[str, np.ndarray]]]:
    def gen() -> Iterator[tuple[str, np.ndarray]]:
        for p in paths:
            yield p.stem, read_image(p)

    return gen


def preprocess_vfhq(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    annotations: str | os.PathLike | None = None,
    detector: str | os.PathLike | Detector | None = None,
    opts: PreprocessOptions | None = None,
) -> PreprocessReport:
    """VFHQ clips under `src` to ``out/vfhq/<subject>/<clip>/`` (see the module docstring)."""
    opts = opts or PreprocessOptions()
    src, root = Path(src), Path(out) / "vfhq"
    det = _as_detector(detector)
    report = PreprocessReport()
    clip_dirs = sorted((p for p in src.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not clip_dirs:
        report.problems.append(f"{src}: no clip folders")
    for clip_dir in clip_dirs:
        name = clip_dir.name
        subject, clip = vfhq_names(name)
        out_dir = root / subject / clip
        if _clip_done(out_dir, opts):
            report.already_done += 1
            continue
        candidates = [src / f"{name}.txt", clip_dir / f"{name}.txt"]
        if annotations is not None:
            candidates.insert(0, Path(annotations) / f"{name}.txt")
        ann_path = next((p for p in candidates if p.is_file()), None)
        try:
            frames = _list_images(clip_dir)
            if not frames:
                raise ValueError("no frames")
            if ann_path is None and det is None:
                raise ValueError(
                    f"no annotation file (looked for {', '.join(map(str, candidates))}) and no --detector"
                )
            keep, lmk68 = frames, None
            boxes: np.ndarray
            ann = parse_vfhq_annotation(ann_path) if ann_path is not None else None
            if ann is not None:
                rows = _match_rows(ann, frames)
                missing = [f.name for f, r in zip(frames, rows) if r is None]
                if missing:
                    report.problems.append(f"{clip_dir}: {len(missing)} frames without an annotation row left out "
                                           f"(e.g. {missing[0]})")  # fmt: skip
                pairs = _subsample([(f, r) for f, r in zip(frames, rows) if r is not None], opts)
                if not pairs:
                    raise ValueError("no frame has an annotation row")
                keep = [f for f, _ in pairs]
                offset = _vfhq_offset(ann, read_image(keep[0]).shape[:2])
                boxes = np.stack([ann.boxes[r] - np.tile(offset, 2) for _, r in pairs])
                lms = [ann.landmarks[r] for _, r in pairs]
                if all(lm is not None and len(lm) == 68 for lm in lms):
                    lmk68 = np.stack(lms) - offset  # type: ignore[arg-type]
            else:
                keep = _subsample(frames, opts)
            meta = {"dataset": "vfhq", "source": str(clip_dir), "camera": None,
                    "fps": float(ann.header.get("FPS", 25.0)) / max(1, opts.stride) if ann else 25.0 / max(1, opts.stride),
                    "box_source": "dataset"}  # fmt: skip
            if det is not None:
                boxes, n_missed = _detect_boxes((read_image(p) for p in keep), det)
                meta["box_source"] = "detector"
                if n_missed:
                    report.problems.append(
                        f"{clip_dir}: no face detected in {n_missed} frames (nearest box used)"
                    )
            report.frames += write_clip(out_dir, _image_frames(keep), boxes, opts, meta, lmk68)
            report.clips += 1
        except (ValueError, MediaError, OSError) as exc:
            report.problems.append(f"{clip_dir}: {exc}")
            log.warning("vfhq: %s: %s", clip_dir, exc)
    return report


def _match_rows(ann: VfhqAnnotation, frames: list[Path]) -> list[int | None]:
    """Annotation row index of each frame (None where none)."""
    stems = [f.stem for f in frames]
    if all(s.isdigit() for s in stems) and all(int(s) in ann.boxes for s in stems):
        return [int(s) for s in stems]
    keys = sorted(ann.boxes)
    if len(keys) == len(frames):
        return keys
    if all(s.isdigit() for s in stems):
        return [int(s) if int(s) in ann.boxes else None for s in stems]
    return [None] * len(frames)


def _vfhq_offset(ann: VfhqAnnotation, frame_hw: tuple[int, int]) -> np.ndarray:
    """(dx, dy) to subtract from annotation coordinates for frames of size `frame_hw` (H, W)."""
    crop, size = ann.crop_bbox, ann.video_size
    h, w = frame_hw
    if crop is not None and (size is None or size != (w, h)):
        cw, ch = crop[2] - crop[0], crop[3] - crop[1]
        if abs(cw - w) <= 1 and abs(ch - h) <= 1:
            return crop[:2].copy()
    return np.zeros(2)


# ------------------------------------------------------------------------------------------------ Nersemble
_NERSEMBLE_FRAME = re.compile(r"frame_(\d+)")


def _nersemble_clips(seq_dir: Path) -> dict[str, tuple[str, list[Path]]]:
    """camera -> ("images" | "video", files) for one sequence folder."""
    out: dict[str, tuple[str, list[Path]]] = {}
    timesteps = seq_dir / "timesteps"
    if timesteps.is_dir():
        per_cam: dict[str, list[tuple[int, Path]]] = {}
        for step in timesteps.iterdir():
            m = _NERSEMBLE_FRAME.fullmatch(step.name)
            if not (m and step.is_dir()):
                continue
            for img_dir in (d for d in step.iterdir() if d.is_dir() and d.name.startswith("images")):
                for p in img_dir.iterdir():
                    if p.suffix.lower() in IMAGE_SUFFIXES:
                        per_cam.setdefault(p.stem, []).append((int(m.group(1)), p))
        for cam, items in per_cam.items():
            out[cam] = ("images", [p for _, p in sorted(items)])
        return out
    for p in sorted(seq_dir.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            out[p.stem] = ("video", [p])
    for d in sorted(p for p in seq_dir.iterdir() if p.is_dir()):
        imgs = _list_images(d)
        if imgs:
            out[d.name] = ("images", imgs)
    return out


def preprocess_nersemble(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    detector: str | os.PathLike | Detector | None = None,
    centre_crop: bool = False,
    cameras: Sequence[str] | None = None,
    opts: PreprocessOptions | None = None,
) -> PreprocessReport:
    """Nersemble subjects under `src` to ``out/nersemble/<subject>/<sequence>__<camera>/``."""
    opts = opts or PreprocessOptions()
    det = _as_detector(detector)
    if det is None and not centre_crop:
        raise ValueError("Nersemble has no face boxes: pass a detector (--detector DIR) or use --centre-crop")
    src, root = Path(src), Path(out) / "nersemble"
    report = PreprocessReport()
    subjects = sorted((p for p in src.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not subjects:
        report.problems.append(f"{src}: no subject folders")
    for subj_dir in subjects:
        seq_root = subj_dir / "sequences" if (subj_dir / "sequences").is_dir() else subj_dir
        seqs = sorted((p for p in seq_root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
        for seq_dir in seqs:
            clips = _nersemble_clips(seq_dir)
            if not clips:
                report.problems.append(f"{seq_dir}: no camera images or videos")
            for cam, (kind, files) in sorted(clips.items()):
                if cameras and cam not in cameras:
                    continue
                out_dir = root / _safe(subj_dir.name) / _safe(f"{seq_dir.name}__{cam}")
                if _clip_done(out_dir, opts):
                    report.already_done += 1
                    continue
                try:
                    report.frames += _nersemble_clip(out_dir, kind, files, cam, det, opts, report)
                    report.clips += 1
                except (ValueError, MediaError, OSError) as exc:
                    report.problems.append(f"{files[0].parent if kind == 'images' else files[0]}: {exc}")
                    log.warning("nersemble: %s/%s: %s", seq_dir, cam, exc)
    return report


def _nersemble_clip(
    out_dir: Path, kind: str, files: list[Path], cam: str, det: Detector | None, opts: PreprocessOptions,
    report: PreprocessReport,
) -> int:  # fmt: skip
    if kind == "video":
        video = files[0]
        fps = video_fps(video)

        def frames() -> Iterator[tuple[str, np.ndarray]]:
            for t, img in enumerate(
                iter_video(video, stride=max(1, opts.stride), max_frames=opts.max_frames)
            ):
                yield f"{t:05d}", img

        source, images = str(video), lambda: (img for _, img in frames())
    else:
        keep = _subsample(files, opts)
        fps = 0.0
        names = [f"{t:05d}" for t in range(len(keep))]

        def frames() -> Iterator[tuple[str, np.ndarray]]:
            for n, p in zip(names, keep):
                yield n, read_image(p)

        source, images = str(keep[0].parent), lambda: (img for _, img in frames())
    if det is not None:
        boxes, missed = _detect_boxes(images(), det)
        if missed:
            report.problems.append(
                f"{source} ({cam}): no face detected in {missed} frames (nearest box used)"
            )
        box_source = "detector"
    else:
        boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in (centre_box(*img.shape[:2]) for img in images())])
        box_source = "centre"
    meta = {"dataset": "nersemble", "source": source, "camera": cam,
            "fps": fps / max(1, opts.stride) if fps else None, "box_source": box_source}  # fmt: skip
    if box_source == "centre":  # the centre square is the crop itself: no enlargement
        opts = PreprocessOptions(**{**opts.__dict__, "crop_scale": 1.0})
    return write_clip(out_dir, frames, boxes, opts, meta)
