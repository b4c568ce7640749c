"""The NoW challenge protocol (Sanyal et al. 2019): neutral-shape accuracy of a predicted head against a 3D scan.

Each step is its own function, following the public challenge description:

1. :func:`face_sphere` / :func:`crop_scan`: the scan is cropped to a sphere around the face. Centre: nose bottom
   + 0.3 (nose bridge - nose bottom); the *nose bridge* is the midpoint of the two inner eye corners (landmarks
   1 and 2; the 7 NoW landmarks carry no explicit bridge point). Radius: 1.4 x (outer-eye distance + nose length)
   / 2, the outer-eye distance between landmarks 0 and 3, the nose length |nose bridge - nose bottom|.
2. :func:`landmark_alignment`: a similarity (scale, rotation, translation) mapping the predicted mesh onto the scan,
   least squares on the 7 landmarks (Umeyama, :func:`headrecon.eval.metrics.kabsch` with scale).
3. :func:`refine_alignment`: scale, rotation and translation refined by minimising the squared scan-to-mesh
   distances of the cropped scan vertices: closest points on the predicted surface (exact, see
   :func:`headrecon.eval.distance.point_to_mesh`) and damped Gauss-Newton steps on the point-to-plane
   linearisation, each step accepted only if the exact RMS distance decreases.
4. :func:`scan_to_mesh_errors`: the unsigned distance of every cropped scan vertex to the aligned predicted
   surface, converted to millimetres; :func:`error_stats` gives median, mean and standard deviation.

The predicted mesh is the *neutral* head: shape only; expression, jaw, eyes, neck, global rotation, eyelids and
translation are zero (:func:`predict_neutral`). Its 7 landmarks come from ``FlameOutput.landmarks_now7``.

Challenge layout read by :func:`read_now_split` (``NOW_ROOT``):

* ``imagepathsvalidation.txt`` (split "val") / ``imagepathstest.txt`` (split "test"): one image per line, relative to
  ``iphone_pictures/``, e.g. ``FaMoS_180424_03335_TA/multiview_neutral/IMG_0101.jpg``; the first component is
  the subject, the second the capture condition (``multiview_neutral``, ``selfie``, ...).
* ``iphone_pictures/<subject>/<condition>/<IMG>.jpg``: the images.
* ``detected_face/<subject>/<condition>/<IMG>.npy`` (optional): the challenge's face box, a pickled dict with
  ``left, top, right, bottom`` (pixels) or an array [4] (x0, y0, x1, y1). Missing: a centre crop.
* ``scans/<subject>/natural_head_rotation.*.obj``: the scan (first match in sorted order; any ``*.obj`` otherwise).
* ``scans_lmks_onlypp/<subject>/*.pp``: the scan's 7 landmarks as a MeshLab PickedPoints XML file, in the order
  above.

Units: the NoW scans are in millimetres (the official evaluation code, ``now_evaluation``, states "Scans are in
unit mm" and reports scan-unit distances), so the default is ``scan_units="mm"``; ``"m"`` multiplies distances by
1000. The predicted mesh is in metres; the fitted scale absorbs the difference. (The challenge's separate
*metrical* variant, with the scale fixed to the unit conversion, is not implemented here.)

The official code minimises the same objective (sum of squared unsigned scan-to-mesh distances over s, R, t)
with chumpy's dogleg solver; here it is a damped Gauss-Newton on exact closest points (see
:func:`refine_alignment`), so results agree to the solvers' tolerance, not bit for bit.
"""

from __future__ import annotations

import io
import json
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headrecon.eval.distance import point_to_mesh
from headrecon.eval.metrics import kabsch
from headrecon.io.atomic import atomic_write_bytes, save_csv, save_image

__all__ = [
    "SCAN_UNITS_TO_MM",
    "Similarity",
    "NowSample",
    "ScanResult",
    "read_pp",
    "read_now_split",
    "face_sphere",
    "crop_scan",
    "landmark_alignment",
    "refine_alignment",
    "scan_to_mesh_errors",
    "evaluate_scan",
    "error_stats",
    "cumulative_error_curve",
    "draw_cumulative_curve",
    "load_face_crop",
    "predict_neutral",
    "run_now",
]

log = logging.getLogger(__name__)

#: millimetres per scan unit
SCAN_UNITS_TO_MM = {"mm": 1.0, "m": 1000.0}
SPLIT_FILES = {"val": "imagepathsvalidation.txt", "test": "imagepathstest.txt"}


# ------------------------------------------------------------------------------------------------- transforms
@dataclass
class Similarity:
    """x -> s * R x + t. R [3, 3] rotation, t [3] (target units), s scale (target units per source unit)."""

    R: np.ndarray
    t: np.ndarray
    s: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points [..., 3] -> [..., 3]."""
        return self.s * np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def inverse_apply(self, points: np.ndarray) -> np.ndarray:
        """The inverse map: target points [..., 3] -> source frame [..., 3]."""
        return (np.asarray(points, dtype=np.float64) - self.t) @ self.R / self.s

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray) -> Similarity:
        """Least-squares similarity mapping src [N, 3] onto dst [N, 3] (Umeyama, via `kabsch`)."""
        R, t, s = kabsch(
            torch.as_tensor(src, dtype=torch.float64)[None],
            torch.as_tensor(dst, dtype=torch.float64)[None],
            with_scale=True,
        )
        return cls(R[0].numpy(), t[0].numpy(), float(s[0]))


# ------------------------------------------------------------------------------------------------------ files
def read_pp(path: str | os.PathLike) -> np.ndarray:
    """Landmarks [N, 3] (file order) from a MeshLab PickedPoints (``.pp``) XML file: ``<point x= y= z= .../>``.
    Points with ``active="0"`` are kept (the NoW files mark all 7 active); raises ValueError when none."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"{path}: not a readable MeshLab PickedPoints file ({exc})") from exc
    pts = [[float(p.get(k, "nan")) for k in ("x", "y", "z")] for p in root.iter("point")]
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    if len(arr) == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{path}: no (or non-numeric) <point x= y= z=> entries")
    return arr


def write_pp(path: str | os.PathLike, points: np.ndarray) -> Path:
    """Write landmarks [N, 3] as a MeshLab PickedPoints file (atomically)."""
    lines = ["<!DOCTYPE PickedPoints>", "<PickedPoints>"]
    for i, (x, y, z) in enumerate(np.asarray(points, dtype=np.float64)):
        lines.append(f' <point x="{x:.9g}" y="{y:.9g}" z="{z:.9g}" active="1" name="{i + 1}"/>')
    lines.append("</PickedPoints>")
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


@dataclass
class NowSample:
    """One challenge image: its relative path (as listed), subject, condition and the files it uses."""

    rel_path: str
    subject: str
    condition: str
    image: Path
    box_file: Path | None
    scan: Path
    landmarks: Path


def _first(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    return None


def read_now_split(now_root: str | os.PathLike, split: str = "val") -> list[NowSample]:
    """The images of a split with their scans and landmark files (layout in the module docstring). Raises
    FileNotFoundError naming the first missing file."""
    root = Path(now_root)
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    listing = root / SPLIT_FILES[split]
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: no such image list (the NoW challenge's {SPLIT_FILES[split]})")
    out: list[NowSample] = []
    for line in listing.read_text().splitlines():
        rel = line.strip().lstrip("/")
        if not rel:
            continue
        parts = Path(rel).parts
        subject, condition = parts[0], (parts[1] if len(parts) > 2 else "")
        image = root / "iphone_pictures" / rel
        if not image.is_file():
            raise FileNotFoundError(f"{image}: listed in {listing.name} but missing")
        box = (root / "detected_face" / rel).with_suffix(".npy")
        scan = _first(root / "scans" / subject, ("natural_head_rotation.*.obj", "*.obj"))
        if scan is None:
            raise FileNotFoundError(f"{root / 'scans' / subject}: no scan (*.obj) for subject {subject}")
        lmk = _first(root / "scans_lmks_onlypp" / subject, ("*.pp",))
        if lmk is None:
            raise FileNotFoundError(f"{root / 'scans_lmks_onlypp' / subject}: no .pp landmark file")
        out.append(NowSample(rel, subject, condition, image, box if box.is_file() else None, scan, lmk))
    return out


# ------------------------------------------------------------------------------------------------ the protocol
def face_sphere(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Face sphere of the 7 NoW landmarks [7, 3]: centre [3] = nose bottom + 0.3 (nose bridge - nose bottom),
    radius = 1.4 (outer-eye distance + nose length) / 2, with nose bridge = midpoint of the inner eye corners.
    Same units as the landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (7, 3):
        raise ValueError(f"face_sphere: expected the 7 NoW landmarks [7, 3], got {lm.shape}")
    nose_bottom = lm[4]
    nose_bridge = 0.5 * (lm[1] + lm[2])
    centre = nose_bottom + 0.3 * (nose_bridge - nose_bottom)
    outer_eye = float(np.linalg.norm(lm[0] - lm[3]))
    nose_length = float(np.linalg.norm(nose_bridge - nose_bottom))
    return centre, 1.4 * (outer_eye + nose_length) / 2.0


def crop_scan(
    vertices: np.ndarray, landmarks: np.ndarray, faces: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Keep the scan vertices [V, 3] inside the face sphere of `landmarks` [7, 3]. Returns the kept vertices
    [K, 3], the faces [Fk, 3] whose three corners are kept (re-indexed; None when `faces` is None) and the
    boolean mask [V]."""
    v = np.asarray(vertices, dtype=np.float64)
    centre, radius = face_sphere(landmarks)
    mask = np.linalg.norm(v - centre, axis=1) <= radius
    kept_faces = None
    if faces is not None:
        f = np.asarray(faces, dtype=np.int64)
        remap = np.full(len(v), -1, dtype=np.int64)
        remap[mask] = np.arange(int(mask.sum()))
        kept_faces = remap[f[mask[f].all(1)]]
    return v[mask], kept_faces, mask


def landmark_alignment(pred_landmarks: np.ndarray, scan_landmarks: np.ndarray) -> Similarity:
    """Similarity mapping the predicted landmarks [7, 3] onto the scan's [7, 3] (least squares, with scale)."""
    return Similarity.fit(pred_landmarks, scan_landmarks)


def refine_alignment(
    vertices: np.ndarray,
    faces: np.ndarray,
    scan_points: np.ndarray,
    init: Similarity,
    *,
    iterations: int = 20,
    tol: float = 1e-5,
    max_attempts: int = 4,
) -> Similarity:
    """Refine a similarity mapping the mesh (vertices [V, 3], faces [F, 3], source units) onto `scan_points`
    [M, 3] (target units) by minimising sum_i d(scan_i, transformed mesh)^2, d the exact unsigned point-to-surface
    distance.

    Gauss-Newton (Levenberg-damped) on the point-to-plane linearisation: for each scan point p with closest
    surface point q on face normal n, the residual n.(p - q) and its derivatives with respect to a small
    rotation w, translation u and log-scale k applied about the centroid c of the closest points,
    [(q - c) x n, n, n.(q - c)]. A step is kept only if the RMS of the exact distances decreases (otherwise the
    damping grows tenfold, at most `max_attempts` tries per step). Stops after `iterations` steps or when the RMS improves by less than `tol` (relative), and
    never returns a transform worse than `init`."""
    from scipy.spatial.transform import Rotation

    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    scan = torch.as_tensor(np.asarray(scan_points), dtype=torch.float64)

    def closest(T: Similarity):
        moved = torch.from_numpy(T.apply(v.numpy()))
        return moved, point_to_mesh(scan, moved, f)

    current = init
    moved, md = closest(current)
    rms = float(md.distances.square().mean().sqrt())
    damping = 1e-6
    for _ in range(max(iterations, 0)):
        tri = moved[f[md.face_ids]]
        n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n = (n / n.norm(dim=1, keepdim=True).clamp_min(1e-300)).numpy()
        q, p = md.closest.numpy(), scan.numpy()
        c = q.mean(0)
        qc = q - c
        J = np.concatenate([np.cross(qc, n), n, (n * qc).sum(1, keepdims=True)], axis=1)  # [M, 7]
        r = (n * (p - q)).sum(1)
        JtJ, Jtr = J.T @ J, J.T @ r
        improved = False
        for _attempt in range(max_attempts):
            x = np.linalg.solve(JtJ + damping * np.diag(np.diag(JtJ) + 1e-12), Jtr)
            Rw = Rotation.from_rotvec(x[:3]).as_matrix()
            k = float(np.exp(x[6]))
            cand = Similarity(Rw @ current.R, k * Rw @ (current.t - c) + c + x[3:6], k * current.s)
            cand_moved, cand_md = closest(cand)
            cand_rms = float(cand_md.distances.square().mean().sqrt())
            if cand_rms < rms:
                improved = True
                damping = max(damping / 10, 1e-9)
                break
            damping *= 10
        if not improved:
            break
        gain = (rms - cand_rms) / max(cand_rms, 1e-300)
        current, moved, md, rms = cand, cand_moved, cand_md, cand_rms
        if gain < tol:
            break
    return current


def scan_to_mesh_errors(
    scan_points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, unit_to_mm: float = 1.0
) -> np.ndarray:
    """Unsigned distance [M] (mm) from every scan point [M, 3] to the mesh surface (vertices [V, 3], faces [F, 3]),
    all in scan units; `unit_to_mm` converts (1 for mm, 1000 for metres)."""
    md = point_to_mesh(
        torch.as_tensor(np.asarray(scan_points), dtype=torch.float64),
        torch.as_tensor(np.asarray(vertices), dtype=torch.float64),
        torch.as_tensor(np.asarray(faces), dtype=torch.long),
    )
    return md.distances.numpy() * unit_to_mm


@dataclass
class ScanResult:
    """errors_mm [K] per cropped scan vertex; transform (refined) and landmark_transform map the prediction into
    the scan frame; scan_points [K, 3] the cropped scan (scan units); crop_mask [V] over the scan's vertices."""

    errors_mm: np.ndarray
    transform: Similarity
    landmark_transform: Similarity
    scan_points: np.ndarray
    crop_mask: np.ndarray


def evaluate_scan(
    pred_vertices: np.ndarray,
    faces: np.ndarray,
    pred_landmarks: np.ndarray,
    scan_vertices: np.ndarray,
    scan_landmarks: np.ndarray,
    *,
    unit_to_mm: float = 1.0,
    iterations: int = 20,
    crop: bool = True,
) -> ScanResult:
    """The whole protocol for one prediction (vertices [V, 3], faces [F, 3], landmarks [7, 3], any units) against
    one scan (vertices [Vs, 3] and its 7 landmarks, scan units): crop, landmark alignment, refinement, errors."""
    if crop:
        points, _, mask = crop_scan(scan_vertices, scan_landmarks)
    else:
        points = np.asarray(scan_vertices, dtype=np.float64)
        mask = np.ones(len(points), dtype=bool)
    if len(points) == 0:
        raise ValueError("evaluate_scan: no scan vertex inside the face sphere (check the landmarks' units)")
    init = landmark_alignment(pred_landmarks, scan_landmarks)
    T = refine_alignment(pred_vertices, faces, points, init, iterations=iterations)
    errors = scan_to_mesh_errors(points, T.apply(pred_vertices), faces, unit_to_mm=unit_to_mm)
    return ScanResult(errors, T, init, points, mask)


def error_stats(errors_mm: np.ndarray) -> dict[str, float]:
    """median, mean and std (population) of errors [N] in mm, plus the count."""
    e = np.asarray(errors_mm, dtype=np.float64)
    return {
        "median_mm": float(np.median(e)),
        "mean_mm": float(e.mean()),
        "std_mm": float(e.std()),
        "n": len(e),
    }


def cumulative_error_curve(
    errors_mm: np.ndarray, max_mm: float = 10.0, steps: int = 201
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds [steps] in [0, max_mm] and the fraction [steps] of errors <= each threshold."""
    e = np.sort(np.asarray(errors_mm, dtype=np.float64))
    thr = np.linspace(0.0, max_mm, steps)
    return thr, np.searchsorted(e, thr, side="right") / max(len(e), 1)


def draw_cumulative_curve(
    path: str | os.PathLike,
    curves: dict[str, np.ndarray],
    *,
    max_mm: float = 10.0,
    size: tuple[int, int] = (640, 480),
) -> Path:
    """PNG of cumulative error curves (x: error in mm up to `max_mm`, y: fraction of scan vertices), one
    coloured line per entry of `curves` (name -> errors [N] mm), with axes, ticks and a legend. Drawn with PIL
    (matplotlib is not a dependency); written atomically."""
    from PIL import Image, ImageDraw

    W, H = size
    left, right, top, bottom = 60, 20, 20, 50
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    pw, ph = W - left - right, H - top - bottom

    def xy(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        return list(zip((left + x / max_mm * pw).tolist(), (top + (1 - y) * ph).tolist()))

    for k in range(11):  # grid and ticks
        gx, gy = left + k * pw / 10, top + k * ph / 10
        d.line([(gx, top), (gx, top + ph)], fill=(225, 225, 225))
        d.line([(left, gy), (left + pw, gy)], fill=(225, 225, 225))
        d.text((gx - 8, top + ph + 5), f"{max_mm * k / 10:g}", fill=(0, 0, 0))
        d.text((left - 30, gy - 5), f"{1 - k / 10:.1f}", fill=(0, 0, 0))
    d.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    d.text((left + pw // 2 - 30, H - 20), "error (mm)", fill=(0, 0, 0))
    d.text((5, 5), "fraction of scan vertices", fill=(0, 0, 0))
    palette = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
    for i, (name, errors) in enumerate(curves.items()):
        thr, frac = cumulative_error_curve(errors, max_mm)
        colour = palette[i % len(palette)]
        d.line(xy(thr, frac), fill=colour, width=2)
        d.text((left + pw - 150, top + ph - 20 - 14 * i), name, fill=colour)
    return save_image(path, np.asarray(img))


# --------------------------------------------------------------------------------------------------- predict
def load_face_crop(image_path: Path, box_file: Path | None, size: int, crop_scale: float = 1.5) -> np.ndarray:
    """The estimator's input for one NoW image: uint8 [size, size, 3]. The box from `box_file` (a pickled dict
    with left/top/right/bottom or an array [4] x0, y0, x1, y1) enlarged to a square `crop_scale` times its larger
    side; no box file: the largest centred square."""
    from headrecon.data.crop import FaceBox, centre_box, crop_image, square_box
    from headrecon.data.media import read_image

    image = read_image(image_path)
    if box_file is None:
        return crop_image(image, centre_box(*image.shape[:2]), size, source="centre").image
    raw = np.load(box_file, allow_pickle=True)
    if raw.dtype == object:
        raw = raw.item()
    if isinstance(raw, dict):
        box = FaceBox(float(raw["left"]), float(raw["top"]), float(raw["right"]), float(raw["bottom"]))
    else:
        x0, y0, x1, y1 = (float(x) for x in np.asarray(raw).reshape(-1)[:4])
        box = FaceBox(x0, y0, x1, y1)
    return crop_image(image, square_box(box, crop_scale), size, source="box-file").image


@torch.no_grad()
def predict_neutral(estimator, images: Tensor) -> tuple[Tensor, Tensor]:
    """Neutral heads from images [B, 3, S, S] in [0, 1]: the predicted shape with every other FLAME parameter
    zero. Returns vertices [B, V, 3] and the 7 NoW landmarks [B, 7, 3] (metres)."""
    params = estimator(images).flame
    zero = {k: torch.zeros_like(v) for k, v in params.to_dict().items() if k != "shape"}
    out = estimator.flame(params.replace(**zero))
    if out.landmarks_now7 is None:
        raise ValueError("the FLAME model has no landmark embedding: the NoW landmarks are unavailable")
    return out.vertices, out.landmarks_now7


def run_now(
    ckpt: str | os.PathLike,
    now_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "val",
    flame_dir: str | None = None,
    scan_units: str = "mm",
    iterations: int = 20,
    batch_size: int = 8,
    crop_scale: float = 1.5,
    save_meshes: bool = False,
    device: str = "cpu",
) -> dict:
    """Evaluate a checkpoint on a NoW split. Writes to `out_dir`: ``per_image.csv`` (image, subject, condition,
    median/mean/std mm, cropped vertex count, fitted scale), ``summary.json`` (statistics over all cropped scan
    vertices of all images, and the mean of per-image medians/means), ``cumulative_error.png`` and, with
    `save_meshes`, the predicted neutral meshes and landmarks in the challenge's submission layout
    (``meshes/<subject>/<condition>/<IMG>.obj`` and ``<IMG>.npy``, metres). Returns the summary dict."""
    from headrecon.io.mesh import read_obj, write_obj
    from headrecon.modules.flame_estimator import FlameEstimator

    if scan_units not in SCAN_UNITS_TO_MM:
        raise ValueError(f"scan_units must be one of {sorted(SCAN_UNITS_TO_MM)}, got {scan_units!r}")
    out = Path(out_dir)
    samples = read_now_split(now_root, split)
    if not samples:
        raise ValueError(f"{now_root}: the {split} list is empty")
    est = FlameEstimator.from_checkpoint(ckpt, flame_dir=flame_dir, map_location=device)
    size = int(est.config["img_size"])
    faces = est.flame.faces.cpu().numpy()
    scans: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    rows, all_errors = [], []
    for s in range(0, len(samples), batch_size):
        chunk = samples[s : s + batch_size]
        crops = np.stack([load_face_crop(c.image, c.box_file, size, crop_scale) for c in chunk])
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0).to(device)
        verts, lmks = predict_neutral(est, images)
        verts, lmks = verts.double().cpu().numpy(), lmks.double().cpu().numpy()
        for i, c in enumerate(chunk):
            if c.scan not in scans:
                scans[c.scan] = (read_obj(c.scan).vertices, read_pp(c.landmarks))
            scan_v, scan_l = scans[c.scan]
            if len(scan_l) != 7:
                raise ValueError(f"{c.landmarks}: expected the 7 NoW landmarks, found {len(scan_l)}")
            r = evaluate_scan(
                verts[i], faces, lmks[i], scan_v, scan_l, unit_to_mm=SCAN_UNITS_TO_MM[scan_units],
                iterations=iterations,
            )  # fmt: skip
            st = error_stats(r.errors_mm)
            rows.append([c.rel_path, c.subject, c.condition, f"{st['median_mm']:.6f}", f"{st['mean_mm']:.6f}",
                         f"{st['std_mm']:.6f}", st["n"], f"{r.transform.s:.6g}"])  # fmt: skip
            all_errors.append(r.errors_mm)
            if save_meshes:
                stem = out / "meshes" / Path(c.rel_path).with_suffix("")
                write_obj(stem.with_suffix(".obj"), verts[i], faces)
                atomic_write_bytes(stem.with_suffix(".npy"), _npy_bytes(lmks[i]))
            log.info("NoW %s: median %.3f mean %.3f mm", c.rel_path, st["median_mm"], st["mean_mm"])
    header = ["image", "subject", "condition", "median_mm", "mean_mm", "std_mm", "n_vertices", "scale"]
    save_csv(out / "per_image.csv", header, rows)
    errors = np.concatenate(all_errors)
    summary = {
        "split": split,
        "images": len(rows),
        "scan_units": scan_units,
        "refine_iterations": iterations,
        **error_stats(errors),
        "mean_of_image_medians_mm": float(np.mean([float(r[3]) for r in rows])),
        "mean_of_image_means_mm": float(np.mean([float(r[4]) for r in rows])),
        "checkpoint": str(ckpt),
    }
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    draw_cumulative_curve(out / "cumulative_error.png", {f"NoW {split}": errors})
    return summary


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()
