"""Synthetic clips with ground truth: procedural-textured FLAME heads rendered with the mesh rasteriser.

    headrecon data synthetic --out DIR --flame FLAME_DIR --subjects 8 --clips 2 --frames 16 --size 128 --seed 0

writes ``DIR/synthetic/s0000/c00/`` ... in the clip layout (:mod:`headrecon.data.layout`):

* per subject: a random FLAME shape (coefficients ~ N(0, shape_std)) and a procedural albedo texture
  [3, Ht, Wt] (:func:`make_subject_texture`: a skin tone, smooth multiplicative noise, darker lips, brows and
  optional hair, eyeballs with a random iris colour), built with numpy on the model's UV layout;
* per clip: a base lighting and background (a vertical two-colour gradient); per frame: random expression,
  jaw, eye gaze, eyelids, neck and head pose and a small translation, and lighting / background jittered
  around the clip's;
* per frame files: ``frames/NNNNN.png``, ``masks/NNNNN.png`` (the head's silhouette), rows of
  ``landmarks.npy`` [T, 68, 2] (the FLAME 68 landmarks projected into the frame, pixels; only when the model
  has landmark embeddings) and ``bboxes.npy`` [T, 4] (the landmarks' bounding box, else the silhouette's);
* ``gt/flame.npz``: the exact parameters (the :data:`~headrecon.data.layout.GT_FLAME_KEYS` arrays plus
  ``background_top`` / ``background_bottom`` [T, 3], ``fov_y_deg``, ``camera_distance`` and ``image_size``
  scalars) and ``gt/texture.png`` (the subject's texture, exactly as used: the texture is quantised to 8 bits
  before rendering). :func:`render_clip` re-renders a clip from these files.

The camera is the SHeaP default (:meth:`~headrecon.render.Cameras.sheap_default`). Everything is a function of
``seed`` (subject i uses ``(seed, i)``, its clip k ``(seed, i, k)``). ``meta.json`` is written last, so a clip
interrupted mid-write lacks it and is reported by ``headrecon data check``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headrecon.flame.preview import paint_eyeballs
from headrecon.io.atomic import atomic_write_bytes, save_image, save_npz

__all__ = [
    "SyntheticOptions",
    "make_subject_texture",
    "sample_clip_params",
    "ClipRender",
    "render_clip",
    "write_synthetic_dataset",
    "DATASET_NAME",
]

log = logging.getLogger(__name__)

DATASET_NAME = "synthetic"
FOV_Y_DEG = 14.25
CAMERA_DISTANCE = 1.0
SKIN_LIGHT = np.array([0.96, 0.80, 0.70])
SKIN_DARK = np.array([0.36, 0.23, 0.16])


@dataclass
class SyntheticOptions:
    """What :func:`write_synthetic_dataset` generates. Angles in radians, translations in metres."""

    subjects: int = 8
    clips: int = 2
    frames: int = 16
    size: int = 128
    seed: int = 0
    texture_size: int = 128
    shape_std: float = 1.0
    expression_std: float = 0.7
    yaw_max: float = 0.6
    pitch_max: float = 0.3
    roll_max: float = 0.15
    jaw_open_max: float = 0.3
    translation_max: float = 0.01
    fps: float = 25.0


# ------------------------------------------------------------------------------------------------ texture
def _smooth_field(
    points: np.ndarray, rng: np.random.Generator, n: int = 8, wl: tuple = (0.03, 0.1)
) -> np.ndarray:
    """Sum of `n` random 3D sinusoids at `points` [N, 3] (wavelengths in metres), normalised to ~[-1, 1]."""
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wl, size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    f = np.sin(points @ (dirs * k[:, None]).T + phase).sum(axis=1)
    return f / np.sqrt(n / 2)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _vertex_albedo(assets, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo [V, 3] of one subject, and its base skin colour [3]."""
    v = np.asarray(assets.v_template, dtype=np.float64)
    skin = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * rng.uniform() + rng.normal(0, 0.02, 3)
    skin = np.clip(skin, 0.05, 1.0)
    col = np.tile(skin, (len(v), 1)) * (1.0 + 0.07 * _smooth_field(v, rng))[:, None]
    col *= (1.0 + 0.05 * _smooth_field(v, rng, wl=(0.01, 0.03)))[:, None]
    masks = assets.masks
    hair = np.clip(rng.uniform(0.03, 0.35) * np.array([1.0, 0.8, 0.6]) + rng.normal(0, 0.02, 3), 0.02, 0.6)
    if "scalp" in masks and rng.uniform() < 0.7:
        col[masks["scalp"]] = (
            hair * (1.0 + 0.15 * _smooth_field(v[masks["scalp"]], rng, wl=(0.005, 0.02)))[:, None]
        )
    if "lips" in masks:
        lips = skin * np.array([0.78, 0.52, 0.52]) * rng.uniform(0.85, 1.05)
        col[masks["lips"]] = lips
    emb = assets.landmarks
    if emb is not None:  # brows: iBUG 17-21 and 22-26 are static landmarks 0-4 and 5-9
        faces = np.asarray(assets.faces, dtype=np.int64)
        lm = np.einsum("lk,lkc->lc", emb.static_bary[:10], v[faces[emb.static_faces[:10]]])
        dist = np.full(len(v), np.inf)
        for lo, hi in ((0, 5), (5, 10)):
            for a, b in zip(lm[lo : hi - 1], lm[lo + 1 : hi]):
                dist = np.minimum(dist, _segment_distance(v, a, b))
        width = rng.uniform(0.004, 0.007)
        w = np.clip(1.0 - (dist - width) / 0.003, 0.0, 1.0) * (v[:, 2] > lm[:, 2].min() - 0.02)
        col = col * (1 - w[:, None]) + (hair * 1.1)[None] * w[:, None]
    iris = np.clip(rng.choice([np.array([0.25, 0.15, 0.08]), np.array([0.3, 0.45, 0.6]),
                               np.array([0.3, 0.4, 0.2])]) * rng.uniform(0.7, 1.2), 0, 1)  # fmt: skip
    paint_eyeballs(col, v, masks, iris=iris, sclera=(0.93, 0.91, 0.88), pupil=0.04)
    return np.clip(col, 0.0, 1.0), skin


def make_subject_texture(assets, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A procedural albedo texture [3, size, size] float32 in [0, 1], quantised to multiples of 1/255.

    The per-vertex albedo of :func:`_vertex_albedo` is rasterised into the model's UV layout (texel centres,
    barycentric interpolation; v = 0 is the bottom row) and multiplied by smooth per-texel noise; texels no
    UV triangle covers get the base skin colour.
    """
    from headrecon.render.mesh_raster import rasterize_triangles_2d

    if assets.uv is None:
        raise ValueError("the FLAME model has no UV layout (head_template.obj / FLAME_texture.npz)")
    albedo, skin = _vertex_albedo(assets, rng)
    uvs = np.asarray(assets.uv.uvs, dtype=np.float64)
    pix = np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], axis=1)
    uv_faces = torch.as_tensor(np.asarray(assets.uv.uv_faces, dtype=np.int64))
    face_ids, bary = rasterize_triangles_2d(
        torch.tensor(pix, dtype=torch.float32)[None], None, uv_faces, size, size
    )
    face_ids, bary = face_ids[0].numpy(), bary[0].numpy().astype(np.float64)
    faces = np.asarray(assets.faces, dtype=np.int64)
    tex = np.tile(skin, (size, size, 1))
    hit = face_ids >= 0
    corner = albedo[faces[face_ids[hit]]]  # [N, 3 corners, 3 rgb]
    tex[hit] = np.einsum("nk,nkc->nc", bary[hit], corner)
    coarse = rng.normal(0, 1, (8, 8))
    import cv2

    noise = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    tex = tex * (1.0 + 0.04 * noise[..., None]) + rng.normal(0, 0.01, tex.shape)
    tex = np.round(np.clip(tex, 0.0, 1.0) * 255.0) / 255.0
    return tex.transpose(2, 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------------ params
def _euler_to_rotvec(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Head rotation R = R_y(yaw) R_x(pitch) R_z(roll) as axis-angle vectors [T, 3] (radians)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], axis=1)).as_rotvec()


def sample_clip_params(
    shape: np.ndarray, n_expression: int, T: int, rng: np.random.Generator, opts: SyntheticOptions
) -> dict[str, np.ndarray]:
    """Per-frame ground truth of one clip: FlameParams fields [T, D], ``sh_coeffs`` [T, 9, 3] and
    ``background_top`` / ``background_bottom`` [T, 3] (float32)."""
    from headrecon.render.sh import SH_C0, sh_basis_order2

    u = rng.uniform
    gaze = np.stack([u(-0.2, 0.2, T), u(-0.3, 0.3, T), np.zeros(T)], axis=1)
    jaw = np.stack([u(0.0, opts.jaw_open_max, T), rng.normal(0, 0.02, T), rng.normal(0, 0.02, T)], axis=1)
    eyelids = u(0.0, 0.3, (T, 2))
    blink = u(size=T) < 0.1
    eyelids[blink] = u(0.7, 1.0, (int(blink.sum()), 1))
    out = {
        "shape": np.tile(shape, (T, 1)),
        "expression": rng.normal(0, opts.expression_std, (T, n_expression)),
        "global_rotation": _euler_to_rotvec(
            u(-opts.yaw_max, opts.yaw_max, T),
            u(-opts.pitch_max, opts.pitch_max, T),
            u(-opts.roll_max, opts.roll_max, T),
        ),
        "neck_rotation": rng.normal(0, 0.04, (T, 3)),
        "jaw_rotation": jaw,
        "left_eye_rotation": gaze,
        "right_eye_rotation": gaze.copy(),
        "eyelids": eyelids,
        "translation": np.concatenate(
            [u(-opts.translation_max, opts.translation_max, (T, 2)), u(-3, 3, (T, 1)) * opts.translation_max],
            axis=1,
        ),
    }
    # lighting: a clip's ambient + directional light (tinted), jittered per frame
    amb = u(0.25, 0.5) * (1 + rng.normal(0, 0.05, 3))
    light_dir = rng.normal(0, 0.6, 3) + np.array([0.0, 0.3, 1.0])
    light_col = u(0.3, 0.75) * (1 + rng.normal(0, 0.08, 3))
    dirs = light_dir + rng.normal(0, 0.15, (T, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    basis = sh_basis_order2(torch.tensor(dirs)).numpy()  # [T, 9]
    cols = np.clip(light_col * u(0.85, 1.15, (T, 1)), 0.0, None)
    sh = basis[:, :, None] * cols[:, None, :]
    sh[:, 0, :] += (amb * u(0.9, 1.1, (T, 1))) / (np.pi * SH_C0)
    out["sh_coeffs"] = sh
    top, bottom = u(0.0, 1.0, 3), u(0.0, 1.0, 3)
    out["background_top"] = np.clip(top + rng.normal(0, 0.02, (T, 3)), 0, 1)
    out["background_bottom"] = np.clip(bottom + rng.normal(0, 0.02, (T, 3)), 0, 1)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------ render
@dataclass
class ClipRender:
    """rgb [T, S, S, 3] and alpha [T, S, S] float in [0, 1]; landmarks [T, 68, 2] pixels or None."""

    rgb: Tensor
    alpha: Tensor
    landmarks: Tensor | None


def render_clip(model, gt: dict[str, np.ndarray], texture: np.ndarray, size: int) -> ClipRender:
    """Render a clip from its ground truth (a :func:`sample_clip_params` dict or ``gt/flame.npz``) and the
    subject texture [3, Ht, Wt] in [0, 1] with a :class:`~headrecon.flame.FlameModel`."""
    from headrecon.flame.params import FlameParams
    from headrecon.render.camera import Cameras
    from headrecon.render.mesh_raster import render_mesh

    params = FlameParams.from_dict(gt)
    T = params.batch_size
    with torch.no_grad():
        out = model(params)
        cams = Cameras.sheap_default(T, size, size, fov_y_deg=FOV_Y_DEG, distance=CAMERA_DISTANCE)
        ramp = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # 0 top .. 1 bottom
        top = torch.as_tensor(gt["background_top"], dtype=torch.float32)[:, None, None, :]
        bottom = torch.as_tensor(gt["background_bottom"], dtype=torch.float32)[:, None, None, :]
        bg = (top * (1 - ramp[None, :, None, None]) + bottom * ramp[None, :, None, None]).expand(
            T, size, size, 3
        )
        r = render_mesh(
            out.vertices,
            model.faces,
            cams,
            texture=torch.as_tensor(texture, dtype=torch.float32)[None],
            uvs=model.uvs,
            uv_faces=model.uv_faces,
            sh_coeffs=torch.as_tensor(gt["sh_coeffs"], dtype=torch.float32),
            background=bg,
        )
        lmk = None if out.landmarks68 is None else cams.project(out.landmarks68)[0]
    return ClipRender(r.rgb, r.alpha, lmk)


def _boxes(render: ClipRender) -> np.ndarray:
    if render.landmarks is not None:
        lm = render.landmarks.numpy()
        return np.concatenate([lm.min(axis=1), lm.max(axis=1)], axis=1).astype(np.float32)
    out = np.zeros((render.alpha.shape[0], 4), dtype=np.float32)
    for t, a in enumerate(render.alpha.numpy() > 0.5):
        ys, xs = np.nonzero(a)
        if len(xs):
            out[t] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def write_synthetic_dataset(
    out: str | os.PathLike, flame_dir: str | os.PathLike, opts: SyntheticOptions | None = None
) -> dict[str, int]:
    """Write ``out/synthetic/<subject>/<clip>/`` for ``opts.subjects`` x ``opts.clips`` clips of
    ``opts.frames`` frames at ``opts.size`` pixels. Returns counts {"subjects", "clips", "frames"}."""
    from headrecon.flame.assets import FlameAssets
    from headrecon.flame.model import FlameModel

    opts = opts or SyntheticOptions()
    if min(opts.subjects, opts.clips, opts.frames, opts.size) < 1:
        raise ValueError(f"subjects, clips, frames and size must be >= 1: {opts}")
    assets = FlameAssets.load(flame_dir, require_uv=True)
    model = FlameModel(assets).eval()
    n_shape, n_expr = model.n_shape, model.n_expression
    root = Path(out) / DATASET_NAME
    t0 = time.perf_counter()
    n_frames = 0
    for i in range(opts.subjects):
        rng = np.random.default_rng([opts.seed, i])
        shape = rng.normal(0, opts.shape_std, n_shape)
        texture = make_subject_texture(assets, rng, opts.texture_size)
        tex_png = (texture.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
        for k in range(opts.clips):
            crng = np.random.default_rng([opts.seed, i, k])
            gt = sample_clip_params(shape, n_expr, opts.frames, crng, opts)
            render = render_clip(model, gt, texture, opts.size)
            clip_dir = root / f"s{i:04d}" / f"c{k:02d}"
            names = [f"{t:05d}.png" for t in range(opts.frames)]
            rgb, alpha = render.rgb.numpy(), render.alpha.numpy()
            for t, name in enumerate(names):
                save_image(clip_dir / "frames" / name, rgb[t])
                save_image(clip_dir / "masks" / name, (alpha[t] * 255).astype(np.uint8))
            if render.landmarks is not None:
                _save_npy(clip_dir / "landmarks.npy", render.landmarks.numpy().astype(np.float32))
            _save_npy(clip_dir / "bboxes.npy", _boxes(render))
            save_image(clip_dir / "gt" / "texture.png", tex_png)
            scalars = {"fov_y_deg": np.float32(FOV_Y_DEG), "camera_distance": np.float32(CAMERA_DISTANCE),
                       "image_size": np.int64(opts.size)}  # fmt: skip
            save_npz(clip_dir / "gt" / "flame.npz", **gt, **scalars)
            meta = {
                "dataset": DATASET_NAME,
                "source": f"procedural FLAME head ({Path(flame_dir).resolve()}), seed {opts.seed}",
                "fps": opts.fps,
                "camera": None,
                "crop_size": opts.size,
                "frame_count": opts.frames,
                "box_source": "synthetic",
                "seed": [opts.seed, i, k],
                "fov_y_deg": FOV_Y_DEG,
                "camera_distance": CAMERA_DISTANCE,
            }
            atomic_write_bytes(clip_dir / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
            n_frames += opts.frames
        log.info("synthetic: subject %d/%d done (%.1f s)", i + 1, opts.subjects, time.perf_counter() - t0)
    return {"subjects": opts.subjects, "clips": opts.subjects * opts.clips, "frames": n_frames}


def _save_npy(path: Path, array: np.ndarray) -> None:
    from headrecon.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
