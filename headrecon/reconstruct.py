"""`headrecon reconstruct`: FLAME heads from images, folders and videos.

For every input image (or video frame) this writes, under OUT/<input stem>/ for videos and OUT/ for images:

* ``<stem>.npz``: the FLAME parameters (`FlameParams` fields), the lighting latent, the crop's 2x3 affine
  `crop_to_image` (crop pixel -> input pixel), the crop size and the crop source (detector, box-file, centre);
* ``<stem>.obj``: the posed mesh (metres, FLAME world frame, predicted translation applied; seen by the SHeaP
  default camera of the crop) with the model's UVs when it has them;
* ``<stem>_overlay.png``: the shaded mesh drawn over the input image.

Faces are cropped with insightface's detector when a local model folder is given, else with boxes from a box
file, else the centre square; a warning says which. Unreadable inputs are reported and skipped; the rest finish.
Videos can be smoothed over time (a centred moving average of the parameters over `smooth` frames).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from headrecon.data.crop import Crop, InsightFaceDetector, centre_box, crop_image, load_box_file, square_box
from headrecon.data.media import InputItem, MediaError, expand_inputs, iter_video, read_image
from headrecon.flame.model import FlameModel
from headrecon.flame.params import FlameParams
from headrecon.io.atomic import atomic_path, save_image
from headrecon.io.mesh import write_obj
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import render_mesh

__all__ = ["ReconstructOptions", "ReconstructReport", "reconstruct", "Estimator"]

log = logging.getLogger(__name__)


class Estimator(Protocol):
    """What reconstruct needs: images [B, 3, S, S] in [0, 1] -> an object with `.flame` (FlameParams) and
    `.lighting` [B, L]; and the FLAME model that turns parameters into meshes."""

    flame: FlameModel

    def __call__(self, images: Tensor): ...


@dataclass
class ReconstructOptions:
    """batch_size; crop size (the estimator's input); crop_scale (square side / face box side); detector: a
    local insightface model folder or ONNX file; boxes: a box file (see `load_box_file`); smooth: temporal window
    in frames for videos (0 or 1: none); video_stride / max_frames: which frames of a video; overlay: draw PNGs."""

    batch_size: int = 8
    size: int = 224
    crop_scale: float = 1.5
    detector: str | None = None
    boxes: str | None = None
    smooth: int = 0
    video_stride: int = 1
    max_frames: int | None = None
    overlay: bool = True
    progress: bool = True


@dataclass
class ReconstructReport:
    written: list[Path] = field(default_factory=list)  # one .npz per reconstructed image / frame
    failures: list[tuple[Path, str]] = field(default_factory=list)
    crop_sources: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        src = ", ".join(f"{k}: {v}" for k, v in sorted(self.crop_sources.items()))
        return f"{len(self.written)} reconstructed ({src}), {len(self.failures)} failed"


@dataclass
class _Frame:
    image: np.ndarray  # [H, W, 3] uint8
    crop: Crop
    stem: str
    out_dir: Path


class _Cropper:
    def __init__(self, opts: ReconstructOptions) -> None:
        self.opts = opts
        self.detector = InsightFaceDetector(opts.detector) if opts.detector else None
        self.boxes = load_box_file(opts.boxes) if opts.boxes else None
        if self.detector is None and self.boxes is None:
            log.warning("reconstruct: no face detector and no box file given: using centre crops")

    def __call__(self, image: np.ndarray, name: str) -> Crop:
        H, W = image.shape[:2]
        if self.detector is not None:
            faces = self.detector.detect(image)
            if faces:
                return crop_image(
                    image, square_box(faces[0], self.opts.crop_scale), self.opts.size, source="detector"
                )
            log.warning("reconstruct: %s: no face detected, using a centre crop", name)
        elif self.boxes is not None:
            box = self.boxes.get(name)
            if box is not None:
                return crop_image(
                    image, square_box(box, self.opts.crop_scale), self.opts.size, source="box-file"
                )
            log.warning("reconstruct: %s: not in the box file, using a centre crop", name)
        return crop_image(image, centre_box(H, W), self.opts.size, source="centre")


def reconstruct(
    inputs: list[str | os.PathLike],
    estimator: Estimator,
    out_dir: str | os.PathLike,
    opts: ReconstructOptions,
) -> ReconstructReport:
    """Run the estimator on every input; see the module docstring for what is written."""
    out_dir = Path(out_dir)
    report = ReconstructReport()
    items, problems = expand_inputs(list(inputs))
    for p in problems:
        log.error("reconstruct: %s", p)
        report.failures.append((p.path, p.reason))
    cropper = _Cropper(opts)
    images = [i for i in items if i.kind == "image"]
    videos = [i for i in items if i.kind == "video"]
    if images:
        frames = _image_frames(images, cropper, out_dir, report)
        _run(frames, estimator, opts, report, smooth=0, desc="images")
    for v in videos:
        try:
            frames = list(_video_frames(v, cropper, out_dir / v.path.stem, opts))
        except MediaError as exc:
            log.error("reconstruct: %s", exc)
            report.failures.append((v.path, exc.reason))
            continue
        _run(iter(frames), estimator, opts, report, smooth=opts.smooth, desc=v.path.name)
    return report


def _image_frames(items: list[InputItem], cropper: _Cropper, out_dir: Path, report: ReconstructReport):
    for item in items:
        try:
            img = read_image(item.path)
        except MediaError as exc:
            log.error("reconstruct: %s (skipped)", exc)
            report.failures.append((item.path, exc.reason))
            continue
        yield _Frame(img, cropper(img, item.path.name), item.path.stem, out_dir)


def _video_frames(
    item: InputItem, cropper: _Cropper, out_dir: Path, opts: ReconstructOptions
) -> Iterator[_Frame]:
    for k, img in enumerate(iter_video(item.path, stride=opts.video_stride, max_frames=opts.max_frames)):
        index = k * opts.video_stride
        yield _Frame(img, cropper(img, item.path.name), f"frame_{index:06d}", out_dir)


def _batches(frames: Iterator[_Frame], n: int) -> Iterator[list[_Frame]]:
    batch: list[_Frame] = []
    for f in frames:
        batch.append(f)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def _predict(estimator: Estimator, frames: list[_Frame], device: torch.device) -> tuple[FlameParams, Tensor]:
    x = (
        torch.from_numpy(np.stack([f.crop.image for f in frames])).to(device).permute(0, 3, 1, 2).float()
        / 255.0
    )
    out = estimator(x)
    return out.flame, out.lighting


def _run(frames, estimator: Estimator, opts: ReconstructOptions, report: ReconstructReport, *, smooth: int,
         desc: str) -> None:  # fmt: skip
    from tqdm import tqdm

    device = next(iter(estimator.flame.buffers())).device
    if smooth > 1:  # videos: predict everything, smooth over time, then write
        frames = list(frames)
        if not frames:
            return
        preds = [_predict(estimator, b, device) for b in _batches(iter(frames), opts.batch_size)]
        params = FlameParams.cat([p for p, _ in preds])
        lighting = torch.cat([light for _, light in preds])
        params = smooth_params(params, smooth)
        for s in range(0, len(frames), opts.batch_size):
            sl = slice(s, s + opts.batch_size)
            _write(frames[sl], params[sl], lighting[sl], estimator.flame, opts, report)
        return
    for batch in tqdm(_batches(frames, opts.batch_size), desc=desc, unit="batch", disable=not opts.progress):
        params, lighting = _predict(estimator, batch, device)
        _write(batch, params, lighting, estimator.flame, opts, report)


def smooth_params(params: FlameParams, window: int) -> FlameParams:
    """Centred moving average over the batch (time) axis with `window` frames (edges use what exists)."""
    if window <= 1:
        return params
    k = torch.ones(1, 1, window, dtype=params.shape.dtype, device=params.device)

    def avg(t: Tensor) -> Tensor:
        x = t.T[:, None]  # [D, 1, T]
        num = torch.nn.functional.conv1d(x, k, padding=window // 2)[..., : t.shape[0]]
        den = torch.nn.functional.conv1d(torch.ones_like(x[:1]), k, padding=window // 2)[..., : t.shape[0]]
        return (num / den)[:, 0].T

    return params.apply(avg)


def _write(frames: list[_Frame], params: FlameParams, lighting: Tensor, flame: FlameModel,
           opts: ReconstructOptions, report: ReconstructReport) -> None:  # fmt: skip
    out = flame(params)
    verts = out.vertices
    faces = flame.faces
    cams = Cameras.sheap_default(len(frames), opts.size, opts.size, device=verts.device, dtype=verts.dtype)
    render = render_mesh(verts, faces, cams, background=0.0) if opts.overlay else None
    pn = params.to_numpy()
    uvs = flame.uvs.cpu().numpy() if flame.uvs is not None else None
    uv_faces = flame.uv_faces.cpu().numpy() if flame.uv_faces is not None else None
    for i, f in enumerate(frames):
        f.out_dir.mkdir(parents=True, exist_ok=True)
        npz = f.out_dir / f"{f.stem}.npz"
        arrays = {k: v[i] for k, v in pn.items()}
        arrays.update(lighting=lighting[i].cpu().numpy(), crop_to_image=f.crop.crop_to_image,
                      crop_size=np.asarray(opts.size), crop_source=np.asarray(f.crop.source),
                      landmarks68=(out.landmarks68[i].cpu().numpy() if out.landmarks68 is not None
                                   else np.zeros((0, 3))))  # fmt: skip
        with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        write_obj(f.out_dir / f"{f.stem}.obj", verts[i].cpu().numpy(), faces.cpu().numpy(), uvs=uvs,
                  uv_faces=uv_faces)  # fmt: skip
        if render is not None:
            save_image(
                f.out_dir / f"{f.stem}_overlay.png",
                overlay(f.image, render.rgb[i].cpu().numpy(), render.alpha[i].cpu().numpy(), f.crop),
            )
        report.written.append(npz)
        report.crop_sources[f.crop.source] = report.crop_sources.get(f.crop.source, 0) + 1


def overlay(
    image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, crop: Crop, opacity: float = 0.75
) -> np.ndarray:
    """Blend a crop-space render (rgb [S, S, 3] in [0, 1], alpha [S, S]) over the input image [H, W, 3] uint8."""
    import cv2

    H, W = image.shape[:2]
    A = crop.crop_to_image.astype(np.float64)  # crop pixel -> image pixel, so warp forward
    rgb_img = cv2.warpAffine(rgb.astype(np.float32), A, (W, H), flags=cv2.INTER_LINEAR)
    a_img = cv2.warpAffine(alpha.astype(np.float32), A, (W, H), flags=cv2.INTER_LINEAR)[..., None] * opacity
    out = image.astype(np.float32) / 255.0 * (1 - a_img) + rgb_img * a_img
    return np.clip(out, 0.0, 1.0)
