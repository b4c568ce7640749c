"""A contact sheet of a FLAME-format model: neutral, shape samples, expressions, open jaw, eye and neck rotation.

Works on any folder :func:`headrecon.flame.assets.load_flame_assets` reads (the procedural head or the official
FLAME files); posing uses smplx's ``lbs`` directly and the pictures come from
:func:`headrecon.render.mesh_raster.render_mesh` with the camera of the released SHeaP models.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["render_preview", "TILE_SIZE"]

TILE_SIZE = 256
SKIN = (0.86, 0.69, 0.58)
LIPS = (0.72, 0.40, 0.40)
SCLERA = (0.95, 0.94, 0.92)
IRIS = (0.30, 0.42, 0.55)
PUPIL = (0.04, 0.04, 0.05)
MOUTH = (0.35, 0.12, 0.12)


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _vertex_colors(assets, v: np.ndarray) -> np.ndarray:
    """Albedo [V, 3]: skin, lips, mouth interior, eyeballs with an iris and pupil facing +z at rest."""
    col = np.tile(np.array(SKIN), (len(v), 1))
    masks = assets.masks
    if "lips" in masks:
        col[masks["lips"]] = LIPS
    paint_eyeballs(col, v, masks, iris=IRIS, sclera=SCLERA, pupil=PUPIL)
    return col


def paint_eyeballs(col: np.ndarray, v: np.ndarray, masks: dict, *, iris, sclera, pupil) -> None:
    """Colour the eyeball vertices of col [V, 3] in place: sclera, an iris and a pupil facing +z at rest.

    v [V, 3] rest-pose vertices; masks: FLAME region masks with `left_eyeball` / `right_eyeball`.
    """
    for name in ("left_eyeball", "right_eyeball"):
        idx = masks.get(name)
        if idx is None or len(idx) == 0:
            continue
        p = v[idx] - v[idx].mean(axis=0)
        cos = p[:, 2] / np.maximum(np.linalg.norm(p, axis=1), 1e-12)
        c = np.tile(np.asarray(sclera, dtype=float), (len(idx), 1))
        c[cos > 0.80] = iris
        c[cos > 0.95] = pupil
        col[idx] = c


def render_preview(model_dir: str | os.PathLike, out_png: str | os.PathLike, seed: int = 0) -> Path:
    """Render a 2 x 5 grid of TILE_SIZE px tiles of the model in `model_dir` and save it to `out_png` (atomic).

    Top row: neutral (front, with the 68 landmarks as red dots), neutral at 35 deg yaw, three random shapes
    (coefficients ~N(0, 1), seeded by `seed`). Bottom row: two expressions, jaw opened 0.35 rad, eyes turned
    (and the left eyelid closed when eyelid blendshapes exist), head turned and tilted by the neck joint.
    """
    from smplx.lbs import lbs, vertices2landmarks

    from headrecon.flame.assets import load_flame_assets
    from headrecon.io.atomic import save_image
    from headrecon.render.camera import Cameras
    from headrecon.render.mesh_raster import render_mesh
    from headrecon.render.sh import default_sh_coeffs, sh_directional_light

    a = load_flame_assets(model_dir)
    rng = np.random.default_rng(seed)
    n_shape, n_expr = a.n_shape, a.n_expression
    V = a.num_vertices
    T = 10
    betas = np.zeros((T, n_shape + n_expr))
    pose = np.tile(np.eye(3), (T, 5, 1, 1))  # rotation matrices per joint
    eyelid = np.zeros((T, 2))
    betas[2:5, :n_shape] = rng.standard_normal((3, n_shape))
    # expressions: the strongest components, one smiling-like mix and one random mix
    betas[5, n_shape : n_shape + 3] = [1.2, 2.5, 0.0]
    betas[5, n_shape + 3] = 1.5
    betas[6, n_shape : n_shape + n_expr] = rng.standard_normal(n_expr)
    pose[7, 2] = _rot("x", 0.35)
    pose[8, 3] = pose[8, 4] = _rot("y", 0.45)
    eyelid[8, 0] = 1.0
    pose[9, 1] = _rot("y", 0.5) @ _rot("x", 0.25)
    view_yaw = np.zeros(T)
    view_yaw[1] = np.radians(35.0)

    dt = torch.float64
    v_shaped_out, _ = lbs(
        torch.tensor(betas, dtype=dt),
        torch.tensor(pose, dtype=dt),
        torch.tensor(a.v_template, dtype=dt)[None].expand(T, V, 3),
        torch.tensor(a.shapedirs, dtype=dt),
        torch.tensor(a.posedirs.reshape(V * 3, -1).T, dtype=dt),
        torch.tensor(np.asarray(a.J_regressor), dtype=dt),
        torch.tensor(a.parents, dtype=torch.long),
        torch.tensor(a.weights, dtype=dt),
        pose2rot=False,
    )
    verts = v_shaped_out
    if a.eyelids is not None:
        verts = verts + torch.einsum(
            "tk,kvc->tvc", torch.tensor(eyelid, dtype=dt), torch.tensor(a.eyelids, dtype=dt)
        )
    verts = verts.numpy()
    rot = np.stack([_rot("y", y) for y in view_yaw])
    verts = np.einsum("tij,tvj->tvi", rot, verts)

    faces = torch.tensor(np.asarray(a.faces, dtype=np.int64))
    colors = torch.tensor(_vertex_colors(a, a.v_template), dtype=torch.float32)
    cams = Cameras.sheap_default(T, TILE_SIZE, TILE_SIZE)
    sh = 0.55 * default_sh_coeffs(T) + sh_directional_light(
        torch.tensor([[-0.45, 0.55, 0.7]]).expand(T, 3), torch.full((T, 3), 0.55)
    )
    out = render_mesh(
        torch.tensor(verts, dtype=torch.float32),
        faces,
        cams,
        vertex_colors=colors,
        sh_coeffs=sh,
        background=1.0,
    )
    tiles = out.rgb.numpy()
    if a.landmarks is not None:  # the 68 landmarks (frontal contour bin + static points) on the first tile
        emb = a.landmarks
        lmk_f, lmk_b = emb.static_faces, emb.static_bary
        if emb.dynamic_faces is not None and emb.dynamic_bary is not None:
            lmk_f = np.concatenate([emb.dynamic_faces[0], lmk_f])
            lmk_b = np.concatenate([emb.dynamic_bary[0], lmk_b])
        lm = vertices2landmarks(
            torch.tensor(verts[:1]),
            faces,
            torch.tensor(lmk_f, dtype=torch.long)[None],
            torch.tensor(lmk_b, dtype=torch.float64)[None],
        )[0].numpy()
        K = cams.K[0].double().numpy()
        w2c = cams.world_to_cam[0].double().numpy()
        x_cam = lm @ w2c[:3, :3].T + w2c[:3, 3]
        uv = (x_cam @ K.T)[:, :2] / x_cam[:, 2:3]
        for px, py in uv:
            i, j = int(py), int(px)
            tiles[0, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2] = (0.9, 0.05, 0.05)
    grid = (
        tiles.reshape(2, 5, TILE_SIZE, TILE_SIZE, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(2 * TILE_SIZE, 5 * TILE_SIZE, 3)
    )
    return save_image(Path(out_png), grid)
