"""A procedural head in FLAME's exact file formats, so that demos and tests run without the licensed FLAME.

:func:`make_procedural_flame` builds, from a seed, everything the official FLAME release (plus the usual companion
files) holds; :func:`write_procedural_flame` writes it to a folder under the official names:

==============================  ==========================================================================
file                            content (shapes for V vertices, F faces)
==============================  ==========================================================================
``generic_model.pkl``           pickle (protocol 2) of the FLAME dict: ``v_template`` [V,3] f64, ``f`` [F,3]
                                u32, ``shapedirs`` [V,3,400] f64 (300 shape + 100 expression),
                                ``posedirs`` [V,3,36] f64, ``J_regressor`` scipy csc [5,V], ``weights``
                                [V,5] f64, ``kintree_table`` [2,5] i64, ``J`` [5,3], ``bs_style`` "lbs",
                                ``bs_type`` "lrotmin"
``flame_static_embedding.pkl``  ``lmk_face_idx`` [51] i64, ``lmk_b_coords`` [51,3] f64 (iBUG 17..67)
``flame_dynamic_embedding.npy`` np.save of a dict: ``lmk_face_idx`` [79,17], ``lmk_b_coords`` [79,17,3]
``landmark_embedding.npy``      DECA's dict: ``static_lmk_faces_idx`` [51], ``static_lmk_bary_coords``
                                [51,3], ``dynamic_lmk_faces_idx`` [79,17], ``dynamic_lmk_bary_coords``
                                [79,17,3], ``full_lmk_faces_idx`` [1,68], ``full_lmk_bary_coords`` [1,68,3]
``head_template.obj``           ``v``, ``vt``, ``f a/at b/bt c/ct`` (UV seams: more ``vt`` than ``v``)
``FLAME_masks.pkl``             region name -> i64 vertex indices (FLAME's 14 region names)
``l_eyelid.npy``/``r_eyelid.npy``  [V,3] f64 offsets closing the left / right upper eyelid (SMIRK)
==============================  ==========================================================================

Joints (smplx's FLAME order): 0 global (root, at the neck base), 1 neck, 2 jaw, 3 left eye, 4 right eye. Left is
the subject's left (+x). Units are metres; y up, z out of the face; the face is centred near the origin so that
:meth:`headrecon.render.camera.Cameras.sheap_default` frames the head.

The model follows FLAME's conventions: shape and expression coefficients are ~N(0, 1) and every component is
scaled by its standard deviation; the 36 pose correctives are indexed like smplx's ``lbs``
(``posedirs[v, c, 9 * (j - 1) + 3 * row + col]`` multiplies ``(R_j - I)[row, col]`` for joints j = 1..4). The
procedural correctives act on the neck (throat) and the jaw (lower cheeks) only.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from headrecon.flame.procedural_geometry import (
    N_FAN_ROWS,
    N_NECK_ROWS,
    HeadGeometry,
    build_head_geometry,
    sample_head_params,
)
from headrecon.io.atomic import atomic_path

__all__ = [
    "make_procedural_flame",
    "write_procedural_flame",
    "N_SHAPE",
    "N_EXPRESSION",
    "EXPRESSION_REGIONS",
    "YAW_BINS_DEG",
]

N_SHAPE = 300
N_EXPRESSION = 100
N_JOINTS = 5
ROOT, NECK, JAW, LEFT_EYE, RIGHT_EYE = range(5)
KINTREE = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
#: Head yaw (degrees, rotation about +y) of each of the 79 dynamic-contour bins, as smplx indexes them:
#: bin k <= 39 holds yaw -k, bin 39 + m holds yaw +m.
YAW_BINS_DEG = np.concatenate([-np.arange(40.0), np.arange(1.0, 40.0)])
#: Regions that carry the expression components (each component is supported on exactly one).
EXPRESSION_REGIONS = ("mouth", "left_eye", "right_eye", "brows", "left_cheek", "right_cheek")
SHAPE_STD0 = 0.004  # per-vertex RMS displacement (m) of the first shape component at 1 std
SHAPE_MIN_RESIDUAL = 0.2  # a new shape component must be at least this new (see _shape_basis)
SHAPE_MIN_WAVELENGTH = 0.06  # metres
SHAPE_PEAK_TO_RMS = 3.5  # largest allowed peak / RMS displacement ratio of a shape component
EXPR_MAX0 = 0.006  # largest vertex displacement (m) of the first expression component at 1 std


# ------------------------------------------------------------------------------------------------ utilities
def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bump(d: np.ndarray) -> np.ndarray:
    """Compactly supported smooth bump of a normalised distance: (1 - d^2)^2 for d < 1, else 0."""
    return np.where(d < 1.0, (1.0 - np.minimum(d, 1.0) ** 2) ** 2, 0.0)


class _Anatomy:
    """Landmark-level measurements of the template (metres), shared by skinning, bases and landmarks."""

    def __init__(self, g: HeadGeometry) -> None:
        hp = g.params
        v = g.vertices
        skin = g.part == 0
        self.eye = {1: hp.eye_centre(1), -1: hp.eye_centre(-1)}
        self.eye_radius = hp.eye_radius
        self.mouth_y = hp.mouth_y
        self.mouth_half_width = float(abs(v[g.mouth_corners[1], 0]))
        self.first_neck_row = g.grid_shape[0] - N_NECK_ROWS
        mid = skin & (np.abs(v[:, 0]) < 0.004)
        tip = np.where(mid)[0][np.argmax(v[mid, 2])]
        self.nose_tip = v[tip].copy()
        chin = skin & (np.abs(v[:, 0]) < 0.006) & (v[:, 2] > 0.055) & (v[:, 1] < hp.mouth_y)
        self.chin_bottom_y = float(v[chin, 1].min())
        self.mouth_z = float(v[g.slit_upper, 2].max())
        self.neck_base_y = hp.neck_base_y


# ------------------------------------------------------------------------------------------------- skinning
def _skinning(g: HeadGeometry, an: _Anatomy) -> np.ndarray:
    """Skinning weights [V, 5]: smooth functions of the rest position, rows summing to 1."""
    v = g.vertices
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    V = len(v)
    W = np.zeros((V, N_JOINTS))
    hw, my = an.mouth_half_width, an.mouth_y
    row = g.grid_index[:, 0]
    below = (row > g.mouth_row) | (g.lip_side < 0)
    a_gen = _smoothstep(-0.004, 0.028, (my - y) - 0.3 * np.maximum(np.abs(x) - hw, 0.0))
    a_lip = 1.0 - _smoothstep(0.3 * hw, 1.1 * hw, np.abs(x))
    a = np.where(below, np.maximum(a_gen, a_lip * (y < my + 0.001)), 0.0)
    b = _smoothstep(-0.012, 0.03, z)  # in front of the hinge
    c = _smoothstep(an.chin_bottom_y - 0.018, an.chin_bottom_y + 0.004, y)  # not the throat
    jaw = a * b * c
    pocket = g.part == 1
    jaw[pocket] = 0.5 * (1.0 - g.lip_side[pocket])
    root = 1.0 - _smoothstep(an.neck_base_y, an.neck_base_y + 0.035, y)
    root[pocket] = 0.0
    W[:, ROOT] = root
    W[:, JAW] = (1.0 - root) * jaw
    W[:, NECK] = (1.0 - root) * (1.0 - jaw)
    for code, j in ((2, LEFT_EYE), (3, RIGHT_EYE)):
        eye = g.part == code
        W[eye] = 0.0
        W[eye, j] = 1.0
    return W


def _joint_regressor(g: HeadGeometry, an: _Anatomy) -> scipy.sparse.csc_matrix:
    """J_regressor [5, V]: each row averages a vertex set (rows sum to 1)."""
    v = g.vertices
    rows: list[np.ndarray] = []
    n_rows, n_cols = g.grid_shape
    gi = g.grid_index
    grid = (gi[:, 0] >= 0) & (g.lip_side == 0) & (g.part == 0)
    rows.append(np.where(grid & (gi[:, 0] == n_rows - 1))[0])  # root: the neck-base ring
    band_last = n_rows - N_NECK_ROWS - N_FAN_ROWS - 1  # last horizontal band row, below the mouth
    rows.append(np.where(grid & (gi[:, 0] == band_last))[0])  # neck: a horizontal ring below the mouth
    phis = g.extras["phis"]
    hinge_row = int(np.argmin(np.abs(g.extras["row_origins"][:, 1] - (an.mouth_y + 0.026))))
    side_cols = np.where((np.abs(phis) > np.radians(78)) & (np.abs(phis) < np.radians(96)))[0]
    rows.append(np.where(grid & (gi[:, 0] == hinge_row) & np.isin(gi[:, 1], side_cols))[0])  # jaw hinge
    rows.append(np.where(g.part == 2)[0])
    rows.append(np.where(g.part == 3)[0])
    data, ri, ci = [], [], []
    for j, idx in enumerate(rows):
        data.append(np.full(len(idx), 1.0 / len(idx)))
        ri.append(np.full(len(idx), j))
        ci.append(idx)
    return scipy.sparse.csc_matrix(
        (np.concatenate(data), (np.concatenate(ri), np.concatenate(ci))), shape=(N_JOINTS, len(v))
    )


# ----------------------------------------------------------------------------------------------- shape basis
def _proxy_positions(g: HeadGeometry) -> np.ndarray:
    """Rest positions with every eyeball vertex replaced by its eyeball's centre (so fields move eyes rigidly)."""
    p = g.vertices.copy()
    for code, side in ((2, 1), (3, -1)):
        p[g.part == code] = g.params.eye_centre(side)
    return p


def _fourier_params(
    rng: np.random.Generator, freq: float, n_feat: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random plane waves of angular frequency ~``freq`` rad/m: wave vectors [n,3], phases [n], amplitudes [n,3]."""
    dirs = rng.standard_normal((n_feat, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    omega = dirs * (freq * rng.uniform(0.7, 1.3, size=(n_feat, 1)))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_feat)
    amp = rng.standard_normal((n_feat, 3))
    return omega, phase, amp


def _fourier_field(p: np.ndarray, params: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """A smooth vector field [N, 3] at points p [N, 3]: the sum of the plane waves `params`."""
    omega, phase, amp = params
    return np.cos(p @ omega.T + phase) @ amp


def _symmetrised_field(p: np.ndarray, params, sign: float) -> np.ndarray:
    """(f(p) + sign * M f(M p)) / 2 with M the mirror x -> -x: symmetric (+1) or antisymmetric (-1)."""
    m = np.array([-1.0, 1.0, 1.0])
    return 0.5 * (_fourier_field(p, params) + sign * _fourier_field(p * m, params) * m)


def _shape_basis(g: HeadGeometry, an: _Anatomy, rng: np.random.Generator) -> np.ndarray:
    """300 smooth global shape components [V, 3, 300] with decaying std (FLAME scaling: coefficients ~N(0, 1)).

    The first few are designed (head width, height, depth, nose, jaw width, chin), the rest are random smooth
    fields (sums of plane waves, wavelengths from 50 cm down to about 6 cm, mostly left-right symmetric),
    orthonormalised as they are drawn."""
    p = _proxy_positions(g)
    centre = np.array([0.0, -0.01, 0.0])
    q = p - centre
    designed = [
        q * np.array([1.0, 0.0, 0.0]),  # head width
        q * np.array([0.0, 1.0, 0.0]),  # head height
        q * np.array([0.0, 0.0, 1.0]),  # head depth
        np.stack(
            [0 * q[:, 0], 0 * q[:, 0], _bump(np.linalg.norm((p - an.nose_tip) / [0.03, 0.04, 0.04], axis=1))],
            1,
        ),
        q
        * np.array([1.0, 0.0, 0.0])
        * _smoothstep(0.0, 0.05, an.mouth_y + 0.01 - p[:, 1])[:, None],  # jaw width
        np.stack(
            [
                0 * q[:, 0],
                -_bump(np.linalg.norm((p - [0, an.chin_bottom_y, 0.07]) / 0.05, axis=1)),
                0 * q[:, 0],
            ],
            1,
        ),
    ]
    # Gram-Schmidt as the components are drawn: a random field joins only if at least SHAPE_MIN_RESIDUAL of it
    # is new (orthogonal to the components so far); otherwise it is dropped and the wavelength shrinks a little.
    # The residual of a field that is mostly new is as smooth as the field, so the basis is orthonormal *and*
    # smooth. Candidates are projected in blocks (matrix-matrix products) for speed.
    Qt = np.zeros((N_SHAPE, p.size))  # components as rows
    n = 0
    for d in designed:
        r = d.reshape(-1) / np.linalg.norm(d)
        for _ in range(2):
            r = r - (Qt[:n] @ r) @ Qt[:n]
        Qt[n] = r / np.linalg.norm(r)
        n += 1
    lam = 0.5  # wavelength (m), shrinking from head scale towards SHAPE_MIN_WAVELENGTH
    shrink = (SHAPE_MIN_WAVELENGTH / lam) ** (1.0 / (N_SHAPE - len(designed)))
    block = 32
    while n < N_SHAPE:
        lams = np.maximum(lam * shrink ** np.arange(block), SHAPE_MIN_WAVELENGTH)
        signs = [1.0 if (n + i < 40 or (n + i) % 3) else -1.0 for i in range(block)]  # mostly symmetric
        C = np.stack(
            [
                _symmetrised_field(p, _fourier_params(rng, 2.0 * np.pi / lm), sg).reshape(-1)
                for lm, sg in zip(lams, signs)
            ]
        )
        C /= np.sqrt(np.einsum("bp,bp->b", C, C))[:, None]
        # one classical Gram-Schmidt pass suffices: an accepted residual keeps >= SHAPE_MIN_RESIDUAL of its norm,
        # so rounding errors are not amplified
        C -= (C @ Qt[:n].T) @ Qt[:n]
        n0, accepted = n, 0
        for i in range(block):
            # small products: einsum, not BLAS (thread start-up dominates at this size)
            r = C[i] - np.einsum("k,kp->p", np.einsum("kp,p->k", Qt[n0:n], C[i]), Qt[n0:n])
            norm = float(np.sqrt(np.einsum("p,p->", r, r)))
            if norm < SHAPE_MIN_RESIDUAL:
                continue
            Qt[n] = r / norm
            n += 1
            accepted += 1
            if n == N_SHAPE:
                break
        lam = max(lam * shrink**accepted * 0.99 ** (block - accepted), SHAPE_MIN_WAVELENGTH)
    Q = Qt.T
    V = len(p)
    # per-vertex RMS of component k = std[k]; localised components (a high peak-to-RMS ratio) are damped so that
    # no single one dents the face, then all are ordered by decreasing std
    peak = np.linalg.norm(Q.reshape(V, 3, N_SHAPE), axis=1).max(axis=0) * np.sqrt(V)
    std = SHAPE_STD0 * (np.arange(N_SHAPE) + 1.0) ** -0.8 * np.minimum(1.0, SHAPE_PEAK_TO_RMS / peak)
    order = np.argsort(-std, kind="stable")
    basis = Q[:, order] * np.sqrt(V) * std[order][None]
    return basis.reshape(V, 3, N_SHAPE)


# ------------------------------------------------------------------------------------------ expression basis
def _region_weights(g: HeadGeometry, an: _Anatomy) -> dict[str, np.ndarray]:
    """Compactly supported smooth weights [V] of each expression region (zero on eyeballs)."""
    v = g.vertices
    soft = g.part <= 1
    my, hw = an.mouth_y, an.mouth_half_width
    out = {
        "mouth": _bump(
            np.linalg.norm((v - [0.0, my - 0.004, an.mouth_z]) / [hw + 0.022, 0.03, 0.05], axis=1)
        ),
        "brows": _bump(
            np.linalg.norm((v - [0.0, an.eye[1][1] + 0.024, 0.075]) / [0.07, 0.024, 0.05], axis=1)
        ),
    }
    for name, side in (("left", 1), ("right", -1)):
        c = an.eye[side]
        out[f"{name}_eye"] = _bump(
            np.linalg.norm((v - c - [0.0, 0.002, 0.006]) / [0.024, 0.02, 0.024], axis=1)
        )
        cheek = np.array([side * 0.047, my + 0.02, 0.06])
        out[f"{name}_cheek"] = _bump(np.linalg.norm((v - cheek) / [0.026, 0.026, 0.04], axis=1))
    for k in out:
        out[k] = out[k] * soft
    out["mouth"] = out["mouth"] * (1.0 - _smoothstep(an.nose_tip[1] - 0.018, an.nose_tip[1] - 0.004, v[:, 1]))
    # the whole mouth pocket belongs to the mouth region, so mouth components may move it with the lips
    out["mouth"][g.part == 1] = np.maximum(out["mouth"][g.part == 1], 1e-3)
    return out


def _eyelid_offsets(g: HeadGeometry, an: _Anatomy, side: int) -> np.ndarray:
    """[V, 3] offsets that close one upper eyelid: lid skin rotates down over the eyeball about the eye's x-axis."""
    v = g.vertices
    c = an.eye[side]
    r = an.eye_radius
    d = v - c
    rho_yz = np.hypot(d[:, 1], d[:, 2])
    theta = np.arctan2(d[:, 1], d[:, 2])
    t_mid, t_rim, t_top = np.radians(-26.0), np.radians(36.0), np.radians(80.0)
    new_theta = np.where(
        theta < t_rim,
        t_mid + (theta - t_mid) * (np.radians(3.0) / (t_rim - t_mid)),
        t_mid + np.radians(3.0) + (theta - t_rim) * (t_top - t_mid - np.radians(3.0)) / (t_top - t_rim),
    )
    rho_min = np.sqrt(np.maximum(r * r - d[:, 0] ** 2, 0.0)) + 0.0015
    new_rho = np.maximum(rho_yz, rho_min)
    target = np.stack([v[:, 0], c[1] + new_rho * np.sin(new_theta), c[2] + new_rho * np.cos(new_theta)], 1)
    w = (
        (theta > t_mid)
        * (theta < t_top)
        * (d[:, 2] > -0.004)
        * (1.0 - _smoothstep(r + 0.006, r + 0.013, np.linalg.norm(d, axis=1)))
        * (1.0 - _smoothstep(0.014, 0.021, np.abs(d[:, 0])))
        * (g.part == 0)
    )
    return (target - v) * w[:, None]


def _expression_basis(
    g: HeadGeometry, an: _Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """100 localised expression components [V, 3, 100], the region of each, and the region weights."""
    v = g.vertices
    regions = _region_weights(g, an)
    my, hw = an.mouth_y, an.mouth_half_width
    side = g.lip_side
    x, y = v[:, 0], v[:, 1]
    xn = np.clip(x / hw, -2.0, 2.0)
    zero = np.zeros(len(v))
    corner = np.exp(-((np.abs(x) - hw) ** 2 + (y - my) ** 2) / 0.012**2)  # around both mouth corners
    lower = (side < 0) | ((g.grid_index[:, 0] > g.mouth_row) & (g.part == 0))
    upper_lip = np.where(lower, 0.0, 1.0)
    # terms that differ between the upper and the lower lip fade out towards the mouth corners, where the two
    # sides are connected: no crease beside the mouth
    slit = np.clip(1.0 - (x / hw) ** 2, 0.0, 1.0) ** 2
    to_left = _smoothstep(-0.015, 0.015, x)
    side_x = 2.0 * to_left - 1.0  # a smooth sign(x)
    lid_l, lid_r = _eyelid_offsets(g, an, 1), _eyelid_offsets(g, an, -1)
    m = regions["mouth"][:, None]
    designed: list[tuple[str, np.ndarray]] = [
        ("mouth", m * np.stack([zero, np.where(lower, -1.0, 0.5) * slit, zero], 1)),  # lips apart
        (
            "mouth",
            m * corner[:, None] * np.stack([0.6 * side_x, np.ones_like(x), -0.5 * np.ones_like(x)], 1),
        ),
        ("mouth", m * np.stack([-0.6 * xn, zero, 1.0 - 0.5 * xn**2], 1)),  # pucker
        ("brows", regions["brows"][:, None] * np.array([0.0, 1.0, 0.1])),  # brows up
        ("left_eye", lid_l),
        ("right_eye", lid_r),
        ("mouth", m * corner[:, None] * np.array([0.0, -1.0, 0.0])),  # frown
        ("brows", regions["brows"][:, None] * np.stack([-side_x * 0.6, -np.ones_like(x), zero], 1)),
        ("left_cheek", regions["left_cheek"][:, None] * np.array([1.0, 0.0, 0.6])),  # puff
        ("right_cheek", regions["right_cheek"][:, None] * np.array([-1.0, 0.0, 0.6])),
        ("mouth", m * corner[:, None] * np.stack([side_x, zero, -0.3 * np.ones_like(x)], 1)),  # stretch
        ("mouth", m * (upper_lip * slit)[:, None] * np.array([0.0, 1.0, 0.3])),  # upper lip raise
        ("mouth", m * (lower * slit)[:, None] * np.array([0.0, -1.0, 0.3])),  # lower lip down
        ("mouth", m * np.array([1.0, 0.0, 0.0])),  # mouth to the left
        ("mouth", m * np.stack([zero, 0.6 * xn, zero], 1)),  # lopsided
        ("left_eye", -0.5 * lid_l),  # widen
        ("right_eye", -0.5 * lid_r),
        ("brows", (regions["brows"] * to_left)[:, None] * np.array([0.0, 1.0, 0.0])),  # left brow up
        ("brows", (regions["brows"] * (1.0 - to_left))[:, None] * np.array([0.0, 1.0, 0.0])),
        ("left_cheek", regions["left_cheek"][:, None] * np.array([0.0, 1.0, 0.2])),
        ("right_cheek", regions["right_cheek"][:, None] * np.array([0.0, 1.0, 0.2])),
    ]
    comps = designed
    cycle = ("mouth", "left_eye", "right_eye", "mouth", "brows", "left_cheek", "right_cheek")
    k = 0
    while len(comps) < N_EXPRESSION:
        region = cycle[k % len(cycle)]
        freq = 2.0 * np.pi / rng.uniform(0.03, 0.08)
        f = _fourier_field(v, _fourier_params(rng, freq, 4))
        if region == "mouth":  # the lips may part: an extra field that flips sign across the slit
            flip = np.where(lower, -1.0, 1.0) * slit
            f = f + _fourier_field(v, _fourier_params(rng, freq, 3)) * flip[:, None]
        comps.append((region, regions[region][:, None] * f))
        k += 1
    # every component: zero on the eyeballs, unit peak displacement times its decaying magnitude
    basis = np.zeros((len(v), 3, N_EXPRESSION))
    names = []
    mag = EXPR_MAX0 * 0.965 ** np.arange(N_EXPRESSION)
    for i, (region, d) in enumerate(comps):
        d = d * (g.part <= 1)[:, None]
        peak = np.linalg.norm(d, axis=1).max()
        basis[:, :, i] = d / peak * mag[i]
        names.append(region)
    return basis, names, regions


# ----------------------------------------------------------------------------------------- pose correctives
def _posedirs(g: HeadGeometry, an: _Anatomy, W: np.ndarray) -> np.ndarray:
    """Pose correctives [V, 3, 36] (smplx layout): throat for neck pitch, lower cheeks for jaw opening."""
    v = g.vertices
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    P = np.zeros((len(v), 3, 36))
    # neck pitch: (R - I)[2, 1] = sin(pitch) for a rotation about x; compress the throat, zero at the base ring
    s = np.clip((y - an.neck_base_y) / (an.chin_bottom_y + 0.01 - an.neck_base_y), 0.0, 1.0)
    throat = np.sin(np.pi * s) ** 2 * _smoothstep(-0.01, 0.03, z) * (g.part == 0)
    P[:, 2, 9 * (NECK - 1) + 3 * 2 + 1] = -0.008 * throat
    P[:, 1, 9 * (NECK - 1) + 3 * 2 + 1] = 0.003 * throat
    # jaw opening: lower cheeks pulled in and back, only where the jaw weight lives
    wj = W[:, JAW] * (g.part <= 1)
    P[:, 0, 9 * (JAW - 1) + 3 * 2 + 1] = -0.06 * x * wj
    P[:, 2, 9 * (JAW - 1) + 3 * 2 + 1] = -0.004 * wj * _smoothstep(0.0, 0.04, np.abs(x))
    return P


# -------------------------------------------------------------------------------------------------- landmarks
def _frontal_hits(
    v: np.ndarray, f: np.ndarray, face_ok: np.ndarray, xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast rays along -z at points xy [N, 2]; return the front-most hit's face [N], barycentrics [N, 3], z [N].
    Faces with face_ok False are ignored; a miss gives face -1."""
    idx = np.where(face_ok)[0]
    tri = v[f[idx]]  # [F', 3, 3]
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok = np.abs(den) > 1e-14
    den = np.where(ok, den, 1.0)
    faces_out = np.full(len(xy), -1, np.int64)
    bary_out = np.zeros((len(xy), 3))
    z_out = np.full(len(xy), -np.inf)
    for i, (px, py) in enumerate(xy):
        l0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
        l1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
        l2 = 1.0 - l0 - l1
        inside = ok & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        if not inside.any():
            continue
        zs = l0 * tri[:, 0, 2] + l1 * tri[:, 1, 2] + l2 * tri[:, 2, 2]
        zs = np.where(inside, zs, -np.inf)
        k = int(np.argmax(zs))
        bc = np.clip(np.array([l0[k], l1[k], l2[k]]), 0.0, 1.0)
        faces_out[i] = idx[k]
        bary_out[i] = bc / bc.sum()
        z_out[i] = zs[k]
    return faces_out, bary_out, z_out


def _vertex_embedding(f: np.ndarray, face_ok: np.ndarray, vid: int) -> tuple[int, np.ndarray]:
    """A face (among face_ok) containing vertex vid, and the one-hot barycentrics selecting it."""
    rows, cols = np.where((f == vid) & face_ok[:, None])
    bc = np.zeros(3)
    bc[cols[0]] = 1.0
    return int(rows[0]), bc


def _eye_outline(v, f, skin_faces, c: np.ndarray, r: float) -> dict[str, float]:
    """Extent of an eye opening seen from the front: how far (m) from the eyeball centre the lids start."""

    def visible_lid(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        _, _, zs = _frontal_hits(v, f, skin_faces, np.stack([px, py], 1))
        dx, dy = px - c[0], py - c[1]
        z_eye = c[2] + np.sqrt(np.maximum(r * r - dx * dx - dy * dy, 0.0))
        return zs > np.maximum(z_eye, c[2] + 0.006)

    steps = np.arange(0.0, 0.025, 0.0003)
    out = {}
    for name, (ux, uy) in {"up": (0, 1), "down": (0, -1), "lat": (1, 0), "med": (-1, 0)}.items():
        sx = np.sign(c[0]) if ux else 0.0
        hit = visible_lid(c[0] + ux * sx * steps, c[1] + uy * steps)
        out[name] = float(steps[np.argmax(hit)]) if hit.any() else 0.012
    return out


def _contour_points(g: HeadGeometry, an: _Anatomy, yaw_deg: float) -> np.ndarray:
    """The 17 jaw-contour vertex ids (iBUG 0..16) on the silhouette seen with the head turned by yaw_deg."""
    v = g.vertices
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    pr = v @ R.T
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    # the jaw line: a parabola from the chin's lowest point up to the jaw angles (gonion) below the ears; the
    # neck is about as wide as the jaw, so the contour is bounded by this line rather than by the silhouette
    gonion_x, gonion_y = 0.052 * g.params.width * g.params.jaw_width, an.mouth_y - 0.02
    jaw_line = an.chin_bottom_y + (gonion_y - an.chin_bottom_y) * np.minimum(np.abs(x) / gonion_x, 1.0) ** 2
    cand = (
        (g.part == 0)
        & (g.grid_index[:, 0] < an.first_neck_row)
        & (g.grid_index[:, 0] >= 0)
        & (y < an.eye[1][1] - 0.004)
        & (y > jaw_line - 0.002)
        & (z > 0.0)
        & ~((np.abs(x) < 0.036) & (y > an.mouth_y - 0.018))
        & ~((np.abs(x) > 0.064) & (z < 0.02))  # ears
    )
    ids = np.where(cand)[0]
    c2 = R @ np.array([0.0, an.eye[1][1] - 0.01, 0.03])
    d = pr[ids, :2] - c2[:2]
    d[:, 1] *= 0.6
    ang = np.arctan2(d[:, 0], -d[:, 1])  # 0 = straight down (chin), +90 deg = image right (+x)
    rad = np.linalg.norm(d, axis=1)
    out = np.zeros(17, np.int64)
    for i, target in enumerate(np.radians(np.linspace(-90.0, 90.0, 17))):
        for tol in np.radians([2.5, 5.0, 10.0, 20.0]):
            sel = np.abs(ang - target) < tol
            if sel.any():
                break
        reach = rad[sel] * np.cos(ang[sel] - target)  # how far out along the target direction
        out[i] = ids[sel][np.argmax(reach)]
    return out


def _landmarks(g: HeadGeometry, an: _Anatomy) -> dict[str, np.ndarray]:
    """The 68 iBUG landmarks (face index + barycentrics) and the 79 x 17 dynamic contour table."""
    v, f = g.vertices, g.faces
    skin_faces = g.face_part == 0
    hw, my = an.mouth_half_width, an.mouth_y
    pts: dict[int, tuple[float, float]] = {}
    # eyes: 36..41 right (-x), 42..47 left; corners and lid points from the visible opening
    for side, base, order in ((-1, 36, "right"), (1, 42, "left")):
        c = an.eye[side]
        o = _eye_outline(v, f, skin_faces, c, an.eye_radius)
        lat, med = c[0] + side * (o["lat"] + 0.0008), c[0] - side * (o["med"] + 0.0008)
        up, dn = c[1] + o["up"] + 0.0008, c[1] - o["down"] - 0.0008
        xs = np.linspace(lat, med, 4) if order == "right" else np.linspace(med, lat, 4)
        # iBUG goes clockwise in the image: right eye outer->inner on top; left eye inner->outer on top
        pts[base + 0] = (xs[0], c[1])
        pts[base + 1] = (xs[1], up - 0.001)
        pts[base + 2] = (xs[2], up - 0.001)
        pts[base + 3] = (xs[3], c[1])
        pts[base + 4] = (xs[2], dn + 0.001)
        pts[base + 5] = (xs[1], dn + 0.001)
    # brows 17..21 (right, outer -> inner), 22..26 (left, inner -> outer)
    ey = an.eye[1][1]
    for i in range(5):
        t = i / 4.0
        bx = 0.052 - 0.04 * t  # outer -> inner
        by = ey + 0.017 + 0.006 * np.sin(np.pi * (0.25 + 0.6 * t))
        pts[17 + i] = (-bx, by)
        pts[26 - i] = (bx, by)
    # nose 27..30 bridge to tip, 31..35 nostril base right -> left
    tip = an.nose_tip
    for i in range(4):
        pts[27 + i] = (0.0, ey + (tip[1] - ey) * i / 3.0)
    _, _, zmid = _frontal_hits(v, f, skin_faces, np.stack([np.zeros(60), np.linspace(tip[1], my, 60)], 1))
    sn_y = float(np.linspace(tip[1], my, 60)[np.argmax(zmid < tip[2] - 0.014)])
    for i, dx in enumerate((-0.0125, -0.0065, 0.0, 0.0065, 0.0125)):
        pts[31 + i] = (dx, sn_y + 0.0025 * (abs(dx) > 0.01) + 0.001)
    # outer lips: 48 right corner, 49..53 upper (right -> left), 54 left corner, 55..59 lower (left -> right)
    pts[48] = (-(hw + 0.0015), my)
    pts[54] = (hw + 0.0015, my)
    for i, t in enumerate((-0.6, -0.3, 0.0, 0.3, 0.6)):
        pts[49 + i] = (t * hw, my + 0.0115 * (1.0 - 0.45 * t * t) - 0.002 * (abs(t) < 0.1))
    for i, t in enumerate((0.6, 0.3, 0.0, -0.3, -0.6)):
        pts[55 + i] = (t * hw, my - 0.0125 * (1.0 - 0.45 * t * t))
    keys = sorted(pts)
    fi, bc, _ = _frontal_hits(v, f, skin_faces, np.array([pts[k] for k in keys]))
    if (fi < 0).any():
        raise RuntimeError(f"procedural head: landmarks {np.array(keys)[fi < 0]} missed the surface")
    lmk_f = np.zeros(68, np.int64)
    lmk_b = np.zeros((68, 3))
    for k, fk, bk in zip(keys, fi, bc):
        lmk_f[k], lmk_b[k] = fk, bk
    # inner lips on the slit: 60 / 64 corners, 61..63 upper copies, 65..67 lower copies
    xs_up = v[g.slit_upper, 0]
    xs_lo = v[g.slit_lower, 0]
    inner = {60: g.mouth_corners[0], 64: g.mouth_corners[1]}
    for k, t in zip((61, 62, 63), (-0.5, 0.0, 0.5)):
        inner[k] = int(g.slit_upper[np.argmin(np.abs(xs_up - t * hw))])
    for k, t in zip((65, 66, 67), (0.5, 0.0, -0.5)):
        inner[k] = int(g.slit_lower[np.argmin(np.abs(xs_lo - t * hw))])
    for k, vid in inner.items():
        lmk_f[k], lmk_b[k] = _vertex_embedding(f, skin_faces, vid)
    # jaw contour: frontal bin for the full 68, every yaw bin for the dynamic table
    dyn_f = np.zeros((len(YAW_BINS_DEG), 17), np.int64)
    dyn_b = np.zeros((len(YAW_BINS_DEG), 17, 3))
    for bi, yaw in enumerate(YAW_BINS_DEG):
        for i, vid in enumerate(_contour_points(g, an, float(yaw))):
            dyn_f[bi, i], dyn_b[bi, i] = _vertex_embedding(f, skin_faces, int(vid))
    lmk_f[:17], lmk_b[:17] = dyn_f[0], dyn_b[0]
    return {"full_f": lmk_f, "full_b": lmk_b, "dyn_f": dyn_f, "dyn_b": dyn_b}


# ------------------------------------------------------------------------------------------------------ masks
def _masks(g: HeadGeometry, an: _Anatomy) -> dict[str, np.ndarray]:
    """FLAME_masks-style regions: name -> sorted int64 vertex indices."""
    v = g.vertices
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    skin = g.part == 0
    ey = an.eye[1][1]
    ear = skin & (np.abs(x) > 0.062) & (np.abs(z + 0.014) < 0.03) & (np.abs(y - 0.004) < 0.038)
    neck = skin & ((g.grid_index[:, 0] >= an.first_neck_row) | ((y < an.chin_bottom_y) & (z < 0.03)))
    face = skin & (z > 0.015) & (y > an.chin_bottom_y - 0.003) & (y < ey + 0.05) & ~ear & ~neck
    eye_reg = {
        s: skin & (np.linalg.norm((v - an.eye[s] - [0.0, 0.002, 0.0]) / [0.024, 0.02, 0.03], axis=1) < 1.0)
        for s in (1, -1)
    }
    nose = skin & (np.abs(x) < 0.02) & (y > an.nose_tip[1] - 0.014) & (y < ey) & (z > 0.075)
    hw = an.mouth_half_width
    lip_h = np.where(y > an.mouth_y, 0.0115, 0.0125) * (1.0 - 0.45 * np.clip(x / hw, -1.0, 1.0) ** 2)
    in_lips = (np.abs(x) < hw + 0.0015) & (np.abs(y - an.mouth_y) < lip_h) & (z > 0.06)
    lips = (skin & in_lips) | (g.part == 1)
    forehead = skin & (y > ey + 0.024) & (y < ey + 0.075) & (z > 0.035) & (np.abs(x) < 0.06)
    scalp = skin & ~forehead & ~face & ~ear & ~neck & (y > -0.06)
    boundary = np.zeros(len(v), bool)
    boundary[g.neck_base] = True
    m = {
        "eye_region": eye_reg[1] | eye_reg[-1],
        "neck": neck,
        "left_eyeball": g.part == 2,
        "right_eyeball": g.part == 3,
        "right_ear": ear & (x < 0),
        "right_eye_region": eye_reg[-1],
        "forehead": forehead,
        "lips": lips,
        "nose": nose,
        "scalp": scalp,
        "boundary": boundary,
        "face": face,
        "left_ear": ear & (x > 0),
        "left_eye_region": eye_reg[1],
    }
    return {k: np.where(val)[0].astype(np.int64) for k, val in m.items()}


# ------------------------------------------------------------------------------------------------- public API
def make_procedural_flame(seed: int = 0) -> dict[str, object]:
    """Build a procedural FLAME-format head from a seed (deterministic: same seed, bytes-identical arrays).

    Returns a dict with
      * the FLAME pickle's keys: ``v_template`` [V,3] f64, ``f`` [F,3] u32, ``shapedirs`` [V,3,400] f64,
        ``posedirs`` [V,3,36] f64, ``J_regressor`` scipy.sparse.csc_matrix [5,V], ``weights`` [V,5] f64,
        ``kintree_table`` [2,5] i64, ``J`` [5,3] f64, ``bs_style`` "lbs", ``bs_type`` "lrotmin";
      * ``static_embedding``: {``lmk_face_idx`` [51] i64, ``lmk_b_coords`` [51,3] f64} (iBUG 17..67);
      * ``dynamic_embedding``: {``lmk_face_idx`` [79,17] i64, ``lmk_b_coords`` [79,17,3] f64};
      * ``landmark_embedding``: DECA's dict (static, dynamic and ``full_lmk_*`` [1,68] for all 68 points);
      * ``uv``: {``vt`` [Vt,2] f64 in [0,1], ``ft`` [F,3] i64};
      * ``masks``: FLAME_masks regions, name -> i64 vertex ids;
      * ``eyelids``: {``l_eyelid``, ``r_eyelid``} [V,3] f64 offsets closing each upper eyelid;
      * ``vertex_part`` [V] i8 (0 skin, 1 mouth pocket, 2 left eyeball, 3 right eyeball), ``face_part`` [F] i8;
      * ``expression_regions``: the region name of each expression component (see ``EXPRESSION_REGIONS``),
        ``region_weights``: region name -> [V] f64 support weights;
      * ``seed``.
    """
    rng = np.random.default_rng(seed)
    hp = sample_head_params(rng)
    g = build_head_geometry(hp)
    an = _Anatomy(g)
    W = _skinning(g, an)
    Jreg = _joint_regressor(g, an)
    shape = _shape_basis(g, an, rng)
    expr, expr_regions, region_w = _expression_basis(g, an, rng)
    posedirs = _posedirs(g, an, W)
    lm = _landmarks(g, an)
    masks = _masks(g, an)
    static_f, static_b = lm["full_f"][17:].copy(), lm["full_b"][17:].copy()
    return {
        "v_template": g.vertices.astype(np.float64),
        "f": g.faces.astype(np.uint32),
        "shapedirs": np.concatenate([shape, expr], axis=2),
        "posedirs": posedirs,
        "J_regressor": Jreg,
        "weights": W,
        "kintree_table": KINTREE.copy(),
        "J": np.asarray(Jreg @ g.vertices),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "static_embedding": {"lmk_face_idx": static_f, "lmk_b_coords": static_b},
        "dynamic_embedding": {"lmk_face_idx": lm["dyn_f"], "lmk_b_coords": lm["dyn_b"]},
        "landmark_embedding": {
            "static_lmk_faces_idx": static_f,
            "static_lmk_bary_coords": static_b,
            "dynamic_lmk_faces_idx": lm["dyn_f"],
            "dynamic_lmk_bary_coords": lm["dyn_b"],
            "full_lmk_faces_idx": lm["full_f"][None],
            "full_lmk_bary_coords": lm["full_b"][None],
        },
        "uv": {"vt": g.uvs.astype(np.float64), "ft": g.uv_faces.astype(np.int64)},
        "masks": masks,
        "eyelids": {"l_eyelid": _eyelid_offsets(g, an, 1), "r_eyelid": _eyelid_offsets(g, an, -1)},
        "vertex_part": g.part.copy(),
        "face_part": g.face_part.copy(),
        "expression_regions": list(expr_regions),
        "region_weights": region_w,
        "seed": int(seed),
    }


FLAME_PICKLE_KEYS = (
    "v_template",
    "f",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
    "J",
    "bs_style",
    "bs_type",
)


def _write_pickle(path: Path, obj: object) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _write_npy(path: Path, obj: object) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, obj, allow_pickle=True)


def write_procedural_flame(
    out_dir: str | os.PathLike, seed: int = 0, preview: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Write the procedural head's files (official FLAME names and formats) into `out_dir`, atomically.

    Returns name -> path for ``generic_model.pkl``, ``flame_static_embedding.pkl``,
    ``flame_dynamic_embedding.npy``, ``landmark_embedding.npy``, ``head_template.obj``, ``FLAME_masks.pkl``,
    ``l_eyelid.npy``, ``r_eyelid.npy`` and, when `preview` is given, ``preview`` (a PNG rendered by
    :func:`headrecon.flame.preview.render_preview`).
    """
    from headrecon.io.mesh import write_obj

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = make_procedural_flame(seed)
    paths = {
        "generic_model.pkl": out / "generic_model.pkl",
        "flame_static_embedding.pkl": out / "flame_static_embedding.pkl",
        "flame_dynamic_embedding.npy": out / "flame_dynamic_embedding.npy",
        "landmark_embedding.npy": out / "landmark_embedding.npy",
        "head_template.obj": out / "head_template.obj",
        "FLAME_masks.pkl": out / "FLAME_masks.pkl",
        "l_eyelid.npy": out / "l_eyelid.npy",
        "r_eyelid.npy": out / "r_eyelid.npy",
    }
    _write_pickle(paths["generic_model.pkl"], {k: m[k] for k in FLAME_PICKLE_KEYS})
    _write_pickle(paths["flame_static_embedding.pkl"], m["static_embedding"])
    _write_npy(paths["flame_dynamic_embedding.npy"], m["dynamic_embedding"])
    _write_npy(paths["landmark_embedding.npy"], m["landmark_embedding"])
    write_obj(
        paths["head_template.obj"],
        m["v_template"],
        m["f"].astype(np.int64),
        uvs=m["uv"]["vt"],
        uv_faces=m["uv"]["ft"],
        precision=8,
    )
    _write_pickle(paths["FLAME_masks.pkl"], m["masks"])
    _write_npy(paths["l_eyelid.npy"], m["eyelids"]["l_eyelid"])
    _write_npy(paths["r_eyelid.npy"], m["eyelids"]["r_eyelid"])
    if preview is not None:
        from headrecon.flame.preview import render_preview

        paths["preview"] = render_preview(out, preview, seed=seed)
    return paths
