"""Face crops for the estimator: insightface's detector from a local model folder, a box file, or the centre.

A crop is a square around the face, `scale` times the larger side of the detected box, resampled to `size`
pixels. It is described by a 2x3 affine matrix mapping crop pixels to image pixels, so predictions can be drawn
back over the input.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FaceBox",
    "Crop",
    "InsightFaceDetector",
    "load_box_file",
    "square_box",
    "crop_image",
    "centre_box",
]

log = logging.getLogger(__name__)

DETECTOR_FILES = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx", "scrfd_10g_bnkps.onnx")
INSIGHTFACE_HINT = (
    "insightface's model packs (e.g. buffalo_l with det_10g.onnx) are distributed by the insightface project "
    "(github.com/deepinsight/insightface, model_zoo); unpack one locally and pass its folder."
)


@dataclass
class FaceBox:
    """A face box in image pixels (x0, y0, x1, y1), with a confidence and optional 5 keypoints [5, 2]."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    keypoints: np.ndarray | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def size(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)


@dataclass
class Crop:
    """image [size, size, 3] uint8; crop_to_image [2, 3] affine (crop pixel -> image pixel); source of the box."""

    image: np.ndarray
    crop_to_image: np.ndarray
    box: FaceBox
    source: str  # "detector" | "box-file" | "centre"


def square_box(box: FaceBox, scale: float = 1.5) -> FaceBox:
    """A square of side `scale` * the box's larger side, with the same centre."""
    cx, cy = box.centre
    half = box.size * scale / 2
    return FaceBox(cx - half, cy - half, cx + half, cy + half, box.score, box.keypoints)


def centre_box(height: int, width: int) -> FaceBox:
    """The largest centred square (used when no detector and no box file is available)."""
    s = min(height, width)
    x0, y0 = (width - s) / 2, (height - s) / 2
    return FaceBox(x0, y0, x0 + s, y0 + s, 0.0)


def crop_image(image: np.ndarray, box: FaceBox, size: int = 224, *, source: str = "detector") -> Crop:
    """Resample the square `box` of `image` [H, W, 3] to `size` x `size` (bilinear, black outside the image)."""
    import cv2

    side = max(box.x1 - box.x0, box.y1 - box.y0)
    s = side / size
    # crop pixel centre (u + 0.5) maps to image x0 + (u + 0.5) * s, i.e. x = s * u + (x0 + 0.5 * s - 0.5) in
    # OpenCV's integer-centre convention
    A = np.array([[s, 0.0, box.x0 + 0.5 * s - 0.5], [0.0, s, box.y0 + 0.5 * s - 0.5]])
    out = cv2.warpAffine(image, A, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))  # fmt: skip
    return Crop(out, A, box, source)


class InsightFaceDetector:
    """insightface's SCRFD face detector from a local ONNX file (or a model-pack folder holding one).

    Uses insightface's own pre- and post-processing (`insightface.model_zoo.get_model`), on CPU via
    onnxruntime. Never downloads: a missing file raises `FileNotFoundError` naming where it was looked for.
    """

    def __init__(self, path: str | os.PathLike, *, det_size: int = 640, threshold: float = 0.5) -> None:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        path = Path(path)
        onnx_file = (
            path if path.is_file() else next((path / n for n in DETECTOR_FILES if (path / n).is_file()), None)
        )
        if onnx_file is None:
            raise FileNotFoundError(
                f"{path}: no insightface detector here (looked for {', '.join(DETECTOR_FILES)}). {INSIGHTFACE_HINT}"
            )
        from insightface.model_zoo import get_model

        model = get_model(str(onnx_file), providers=["CPUExecutionProvider"])
        if model is None or not hasattr(model, "detect"):
            raise ValueError(f"{onnx_file}: not an insightface detection model")
        model.prepare(ctx_id=-1, input_size=(det_size, det_size), det_thresh=threshold)
        self.model, self.path, self.threshold = model, onnx_file, threshold

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image [H, W, 3], most confident first."""
        bboxes, kpss = self.model.detect(np.ascontiguousarray(image[:, :, ::-1]), max_num=0)
        faces = [
            FaceBox(*map(float, b[:4]), score=float(b[4]), keypoints=None if kpss is None else kpss[i])
            for i, b in enumerate(bboxes)
        ]
        return sorted(faces, key=lambda f: -f.score)


def load_box_file(path: str | os.PathLike) -> dict[str, FaceBox]:
    """Boxes per input file name: a JSON object {"name.jpg": [x0, y0, x1, y1], ...} or a CSV with lines
    `name,x0,y0,x1,y1`. Keys are matched against input file names (not paths)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read box file ({exc})") from exc
    out: dict[str, FaceBox] = {}
    try:
        if path.suffix.lower() == ".json":
            for name, b in json.loads(text).items():
                out[Path(name).name] = FaceBox(*map(float, b[:4]))
        else:
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.startswith("#"):
                    continue
                name, *vals = [x.strip() for x in line.split(",")]
                if len(vals) != 4:
                    raise ValueError(f"line {lineno}: expected name,x0,y0,x1,y1")
                out[Path(name).name] = FaceBox(*map(float, vals))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: malformed box file ({exc})") from exc
    return out
