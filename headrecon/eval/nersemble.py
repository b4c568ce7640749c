"""The Nersemble point-cloud benchmark (SHeaP supplementary, section 3): expressive-face geometry from one image.

For every image, the full FLAME prediction (shape, expression, jaw, eyes, eyelids, pose) is aligned to the
ground-truth point cloud of its frame as for NoW (:mod:`headrecon.eval.now`): similarity on the 7 landmarks,
then the scan-to-mesh refinement of scale, rotation and translation over all points. By default the point
cloud is *not* cropped (the clouds are already face captures; ``crop=True`` applies NoW's face sphere). Every
ground-truth point is scored by its distance to the closest point of the predicted head surface (mm); per
image the mean and median, overall the mean and median over all points of all images and the means of the
per-image numbers.

On-disk layout (``ROOT``), 60 point clouds and 960 images in the paper::

    ROOT/<subject>/<expression>/pointcloud.ply   (or pointcloud.npy [N, 3]) the ground-truth points
    ROOT/<subject>/<expression>/landmarks7.npy   [7, 3] the NoW landmarks of the cloud, in NoW's order
                                                 (right-eye outer, right-eye inner, left-eye inner, left-eye
                                                 outer, nose bottom, right and left mouth corners)
    ROOT/<subject>/<expression>/images/<view>.png|jpg   the views of that frame
    ROOT/<subject>/<expression>/boxes.json       optional face boxes per image file name (see
                                                 `headrecon.data.crop.load_box_file`); none: centre crop

Points and landmarks share units: metres by default (``units="mm"`` for millimetre clouds). PLY files may be
ASCII or binary; only the x, y, z of the ``vertex`` element are read.

Outputs (``OUT``): ``per_image.csv``, ``summary.json``, ``error_maps/<subject>__<expression>__<view>.png``
(input image | predicted mesh rendered with the default camera | the ground-truth points mapped into the
prediction's frame, projected with the same camera and splatted as dots coloured by error, with a colour bar in
mm), and ``error_ply/<subject>__<expression>__<view>.ply`` (the ground-truth points in their own frame,
coloured, with a per-vertex ``error_mm`` scalar) plus ``..._mesh.ply`` (the aligned predicted mesh).
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headrecon.eval.now import (
    SCAN_UNITS_TO_MM,
    ScanResult,
    error_stats,
    evaluate_scan,
)
from headrecon.io.atomic import atomic_write_bytes, save_csv, save_image

__all__ = [
    "NersembleSample",
    "read_ply_vertices",
    "read_point_cloud",
    "read_nersemble",
    "predict_full",
    "evaluate_point_cloud",
    "error_colors",
    "splat_points",
    "colour_bar",
    "error_map_figure",
    "run_nersemble",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ files
def read_ply_vertices(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every scalar property of a PLY file's first element, which must be ``vertex`` (name -> [N] array).
    ASCII, binary little- and big-endian. Raises ValueError naming the file for anything else."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no 'end_header')")
    body = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for line in data[:body].decode("ascii", "replace").splitlines():
        t = line.split()
        if not t:
            continue
        if t[0] == "format":
            fmt = t[1]
        elif t[0] == "element":
            elements.append((t[1], int(t[2]), []))
        elif t[0] == "property" and elements:
            elements[-1][2].append(t[1:])
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: the first PLY element must be 'vertex'")
    _, count, props = elements[0]
    if any(p[0] == "list" or p[0] not in _PLY_TYPES for p in props):
        raise ValueError(f"{path}: unsupported vertex property types {[p[0] for p in props]}")
    names = [p[1] for p in props]
    if fmt == "ascii":
        lines = [ln for ln in data[body:].decode("ascii", "replace").splitlines() if ln.strip()][:count]
        arr = np.loadtxt(io.StringIO("\n".join(lines)), ndmin=2) if lines else np.zeros((0, len(names)))
        if arr.shape != (count, len(names)):
            raise ValueError(f"{path}: expected {count} vertex rows of {len(names)} values, got {arr.shape}")
        return {n: arr[:, i] for i, n in enumerate(names)}
    if fmt in ("binary_little_endian", "binary_big_endian"):
        e = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(n, e + _PLY_TYPES[p[0]]) for n, p in zip(names, props)])
        if len(data) - body < dt.itemsize * count:
            raise ValueError(f"{path}: truncated vertex data")
        rec = np.frombuffer(data, dtype=dt, count=count, offset=body)
        return {n: rec[n].copy() for n in names}
    raise ValueError(f"{path}: unknown PLY format {fmt!r}")


def read_point_cloud(path: str | os.PathLike) -> np.ndarray:
    """Points [N, 3] float64 from a ``.ply`` (x, y, z of its vertices) or ``.npy`` ([N, 3]) file."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        pts = np.asarray(np.load(path), dtype=np.float64)
    else:
        v = read_ply_vertices(path)
        if not all(k in v for k in "xyz"):
            raise ValueError(f"{path}: PLY vertices need x, y and z")
        pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0 or not np.isfinite(pts).all():
        raise ValueError(f"{path}: expected finite points [N>0, 3], got {pts.shape}")
    return pts


@dataclass
class NersembleSample:
    """One benchmark image with its frame's point cloud, landmarks and optional box file."""

    subject: str
    expression: str
    view: str
    image: Path
    points: Path
    landmarks: Path
    boxes: Path | None

    @property
    def name(self) -> str:
        """``<subject>__<expression>__<view>``, the stem of this image's output files."""
        return f"{self.subject}__{self.expression}__{self.view}"


def read_nersemble(root: str | os.PathLike) -> list[NersembleSample]:
    """All images under `root` (layout in the module docstring), sorted. Frames without images are skipped
    with a warning; a frame with images but no point cloud or landmarks raises FileNotFoundError."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such benchmark folder")
    out: list[NersembleSample] = []
    for frame in sorted(p for p in root.glob("*/*") if p.is_dir()):
        images = sorted(p for p in (frame / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            log.warning("nersemble: %s has no images/, skipped", frame)
            continue
        cloud = next((frame / n for n in ("pointcloud.ply", "pointcloud.npy") if (frame / n).is_file()), None)
        if cloud is None:
            raise FileNotFoundError(f"{frame}: no pointcloud.ply or pointcloud.npy")
        lmk = frame / "landmarks7.npy"
        if not lmk.is_file():
            raise FileNotFoundError(f"{lmk}: missing (the 7 NoW landmarks of the point cloud)")
        boxes = frame / "boxes.json"
        for img in images:
            out.append(NersembleSample(frame.parent.name, frame.name, img.stem, img, cloud, lmk,
                                       boxes if boxes.is_file() else None))  # fmt: skip
    if not out:
        raise FileNotFoundError(f"{root}: no <subject>/<expression>/images/* found")
    return out


# ------------------------------------------------------------------------------------------------- predicting
@torch.no_grad()
def predict_full(estimator, images: Tensor):
    """The full prediction for images [B, 3, S, S] in [0, 1]: FLAME parameters and the FlameOutput (vertices
    [B, V, 3], landmarks_now7 [B, 7, 3], metres, in the default camera's world frame)."""
    params = estimator(images).flame
    out = estimator.flame(params)
    if out.landmarks_now7 is None:
        raise ValueError("the FLAME model has no landmark embedding: the NoW landmarks are unavailable")
    return params, out


def evaluate_point_cloud(
    pred_vertices: np.ndarray,
    faces: np.ndarray,
    pred_landmarks: np.ndarray,
    points: np.ndarray,
    landmarks: np.ndarray,
    *,
    unit_to_mm: float = 1000.0,
    iterations: int = 20,
    crop: bool = False,
) -> ScanResult:
    """Align a prediction (vertices [V, 3], faces [F, 3], landmarks [7, 3]) to a ground-truth cloud (points
    [N, 3], landmarks [7, 3], cloud units) as for NoW and score every (kept) point: errors_mm [K]."""
    return evaluate_scan(pred_vertices, faces, pred_landmarks, points, landmarks, unit_to_mm=unit_to_mm,
                         iterations=iterations, crop=crop)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- drawing
_CMAP = np.array(
    [
        [0.19, 0.07, 0.23],
        [0.16, 0.47, 0.93],
        [0.10, 0.81, 0.78],
        [0.46, 0.99, 0.36],
        [0.98, 0.73, 0.22],
        [0.90, 0.27, 0.05],
        [0.48, 0.02, 0.01],
    ]
)  # fmt: skip  (anchors of a turbo-like map, low -> high)


def error_colors(errors_mm: np.ndarray, max_mm: float) -> np.ndarray:
    """RGB colours [N, 3] in [0, 1] for errors [N] (mm): a turbo-like map from 0 to `max_mm` (clipped)."""
    x = np.clip(np.asarray(errors_mm, dtype=np.float64) / max_mm, 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_CMAP) - 2)
    w = (x - i)[:, None]
    return (1 - w) * _CMAP[i] + w * _CMAP[i + 1]


def splat_points(
    canvas: np.ndarray, pixels: np.ndarray, depth: np.ndarray, colors: np.ndarray, radius: int = 1
) -> np.ndarray:
    """Draw points as (2 radius + 1)^2 pixel squares, nearest point wins per pixel (z-buffer). canvas [H, W, 3]
    float, pixels [N, 2] (x right, y down), depth [N] (camera z; points with z <= 0 are dropped), colors [N, 3].
    Returns a new canvas."""
    H, W = canvas.shape[:2]
    out = canvas.copy()
    ok = np.isfinite(pixels).all(1) & (depth > 0)
    px = np.floor(pixels[ok]).astype(np.int64)
    z, col = depth[ok], colors[ok]
    offs = np.arange(-radius, radius + 1)
    dx, dy = (a.ravel() for a in np.meshgrid(offs, offs))
    xs, ys = (px[:, 0:1] + dx).ravel(), (px[:, 1:2] + dy).ravel()
    idx = np.repeat(np.arange(len(z)), len(dx))
    inside = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    lin, idx = ys[inside] * W + xs[inside], idx[inside]
    order = np.lexsort((z[idx], lin))  # by pixel, then nearest first
    lin, idx = lin[order], idx[order]
    first = np.ones(len(lin), dtype=bool)
    first[1:] = lin[1:] != lin[:-1]
    flat = out.reshape(-1, 3)
    flat[lin[first]] = col[idx[first]]
    return out


def colour_bar(height: int, max_mm: float, width: int = 70) -> np.ndarray:
    """A vertical colour bar [height, width, 3] float in [0, 1]: 0 mm at the bottom, `max_mm` at the top,
    labelled every fifth of the range (mm)."""
    from PIL import Image, ImageDraw

    margin = 10
    bar = np.ones((height, width, 3))
    ys = np.arange(margin, height - margin)
    vals = (1 - (ys - margin) / max(height - 2 * margin - 1, 1)) * max_mm
    bar[margin : height - margin, 5:20] = error_colors(vals, max_mm)[:, None, :]
    img = Image.fromarray((bar * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for k in range(6):
        y = margin + (1 - k / 5) * (height - 2 * margin - 1)
        d.line([(20, y), (24, y)], fill=(0, 0, 0))
        d.text((26, y - 5), f"{max_mm * k / 5:g}", fill=(0, 0, 0))
    d.text((26, height - margin + 0), "mm", fill=(0, 0, 0))
    return np.asarray(img).astype(np.float64) / 255.0


def error_map_figure(
    image: np.ndarray, render: np.ndarray, pixels: np.ndarray, depth: np.ndarray, errors_mm: np.ndarray,
    max_mm: float = 10.0,
) -> np.ndarray:  # fmt: skip
    """Figure 3 of the supplementary for one image: input crop | mesh render | error-coloured points | colour
    bar. image [S, S, 3] uint8 or float, render [S, S, 3] float, pixels [N, 2] and depth [N] of the points in the
    render's camera, errors_mm [N]. Returns [S, 3 S + bar, 3] float in [0, 1]."""
    S = render.shape[0]
    img = np.asarray(image, dtype=np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    if img.shape[:2] != (S, S):
        from PIL import Image

        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((S, S), Image.BILINEAR)
        img = np.asarray(pil).astype(np.float64) / 255.0
    radius = max(1, S // 256)
    dots = splat_points(np.ones((S, S, 3)), pixels, depth, error_colors(errors_mm, max_mm), radius)
    return np.concatenate([img, np.asarray(render, np.float64), dots, colour_bar(S, max_mm)], axis=1)


# -------------------------------------------------------------------------------------------------------- run
def _load_crop(sample: NersembleSample, size: int, crop_scale: float, boxes_cache: dict) -> np.ndarray:
    from headrecon.data.crop import centre_box, crop_image, load_box_file, square_box
    from headrecon.data.media import read_image

    image = read_image(sample.image)
    box = None
    if sample.boxes is not None:
        if sample.boxes not in boxes_cache:
            boxes_cache[sample.boxes] = load_box_file(sample.boxes)
        box = boxes_cache[sample.boxes].get(sample.image.name)
    if box is None:
        return crop_image(image, centre_box(*image.shape[:2]), size, source="centre").image
    return crop_image(image, square_box(box, crop_scale), size, source="box-file").image


def run_nersemble(
    ckpt: str | os.PathLike,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    flame_dir: str | None = None,
    units: str = "m",
    iterations: int = 20,
    crop: bool = False,
    max_error_mm: float = 10.0,
    batch_size: int = 8,
    crop_scale: float = 1.5,
    error_maps: bool = True,
    render_size: int = 256,
    device: str = "cpu",
) -> dict:
    """Evaluate a checkpoint on the benchmark under `root`; writes the files listed in the module docstring to
    `out_dir` and returns the summary dict (mean/median mm over all points, means of per-image means/medians)."""
    from headrecon.io.mesh import write_ply
    from headrecon.modules.flame_estimator import FlameEstimator
    from headrecon.render.camera import Cameras
    from headrecon.render.mesh_raster import render_mesh

    if units not in SCAN_UNITS_TO_MM:
        raise ValueError(f"units must be one of {sorted(SCAN_UNITS_TO_MM)}, got {units!r}")
    unit_to_mm = SCAN_UNITS_TO_MM[units]
    out = Path(out_dir)
    samples = read_nersemble(root)
    est = FlameEstimator.from_checkpoint(ckpt, flame_dir=flame_dir, map_location=device)
    size = int(est.config["img_size"])
    faces_t = est.flame.faces
    faces = faces_t.cpu().numpy()
    clouds: dict[Path, np.ndarray] = {}
    boxes_cache: dict = {}
    rows, all_errors = [], []
    for s in range(0, len(samples), batch_size):
        chunk = samples[s : s + batch_size]
        crops = np.stack([_load_crop(c, size, crop_scale, boxes_cache) for c in chunk])
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0).to(device)
        _, flame = predict_full(est, images)
        verts = flame.vertices.double().cpu().numpy()
        lmks = flame.landmarks_now7.double().cpu().numpy()
        for i, c in enumerate(chunk):
            if c.points not in clouds:
                clouds[c.points] = read_point_cloud(c.points)
            pts = clouds[c.points]
            gt_lmk = np.asarray(np.load(c.landmarks), dtype=np.float64)
            if gt_lmk.shape != (7, 3):
                raise ValueError(f"{c.landmarks}: expected [7, 3] landmarks, got {gt_lmk.shape}")
            r = evaluate_point_cloud(verts[i], faces, lmks[i], pts, gt_lmk, unit_to_mm=unit_to_mm,
                                     iterations=iterations, crop=crop)  # fmt: skip
            st = error_stats(r.errors_mm)
            rows.append([c.subject, c.expression, c.view, st["n"], f"{st['mean_mm']:.6f}",
                         f"{st['median_mm']:.6f}", f"{r.transform.s:.6g}"])  # fmt: skip
            all_errors.append(r.errors_mm)
            if error_maps:
                _write_error_outputs(out, c, crops[i], verts[i], faces, faces_t, r, max_error_mm, render_size,
                                     Cameras, render_mesh, write_ply)  # fmt: skip
            log.info("nersemble %s: mean %.3f median %.3f mm", c.name, st["mean_mm"], st["median_mm"])
    header = ["subject", "expression", "view", "n_points", "mean_mm", "median_mm", "scale"]
    save_csv(out / "per_image.csv", header, rows)
    errors = np.concatenate(all_errors)
    summary = {
        "images": len(rows),
        "point_clouds": len(clouds),
        "units": units,
        "crop": crop,
        "refine_iterations": iterations,
        **error_stats(errors),
        "mean_of_image_means_mm": float(np.mean([float(r[4]) for r in rows])),
        "mean_of_image_medians_mm": float(np.mean([float(r[5]) for r in rows])),
        "checkpoint": str(ckpt),
    }
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _write_error_outputs(
    out: Path, c: NersembleSample, crop: np.ndarray, verts: np.ndarray, faces: np.ndarray, faces_t: Tensor,
    r: ScanResult, max_mm: float, render_size: int, Cameras, render_mesh, write_ply,
) -> None:  # fmt: skip
    """The error-map PNG and the coloured PLYs of one image (see the module docstring)."""
    cams = Cameras.sheap_default(1, render_size, render_size, dtype=torch.float64)
    v = torch.from_numpy(verts).float()[None]
    rgb = render_mesh(v, faces_t.cpu(), cams.to(torch.float32), background=1.0).rgb[0].double().numpy()
    in_pred = torch.from_numpy(r.transform.inverse_apply(r.scan_points))[
        None
    ]  # the prediction's frame, metres
    pix, z = cams.project(in_pred)
    fig = error_map_figure(crop, rgb, pix[0].numpy(), z[0].numpy(), r.errors_mm, max_mm)
    save_image(out / "error_maps" / f"{c.name}.png", fig)
    write_ply(out / "error_ply" / f"{c.name}.ply", r.scan_points, vertex_colors=error_colors(r.errors_mm, max_mm),
              vertex_scalars={"error_mm": r.errors_mm})  # fmt: skip
    write_ply(out / "error_ply" / f"{c.name}_mesh.ply", r.transform.apply(verts), faces)
