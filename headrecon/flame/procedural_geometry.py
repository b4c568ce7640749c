"""Geometry of the procedural FLAME-format head: template surface, topology, eyeballs and UV layout.

The skin is the outer surface of an implicit head (a smooth union of ellipsoids: cranium, face block, jaw, chin,
cheekbones, brow ridge, nose, lips, ears and a neck tube, minus two eye cavities), sampled on a grid of rays: one
column per azimuth ``phi`` (0 = +z, the face; +90 deg = +x, the subject's left; denser on the face) and one row
per ray family member, from the crown down:

* crown cap: rays from one point above the brow, elevation 90 deg (a single pole vertex) down to 0;
* face band: horizontal rays from the head's vertical axis, from the forehead to just below the mouth (the brow
  ridge cannot hide the eyelids from such rays);
* chin fan: rays from one point below the mouth, elevation 0 down to -48 deg (chin, under the jaw, nape);
* neck: horizontal rays from the neck axis, down to the open neck base.

Rays of neighbouring rows never cross, so the grid never folds. The band row at the mouth height is the mouth
line: its vertices between the two mouth corners are duplicated (upper
lip copy above, lower lip copy below), which opens a slit; an inner mouth pocket (a bag of a few rings) is sewn to
the slit so that the skin stays closed except at the neck base. Two eyeballs are separate closed UV spheres in the
eye cavities.

All lengths are metres, in FLAME's frame: x to the subject's left, y up, z out of the face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["HeadParams", "HeadGeometry", "sample_head_params", "build_head_geometry"]


# ----------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class HeadParams:
    """Anatomical anchors of one procedural head (metres, FLAME frame). :func:`sample_head_params` jitters them."""

    width: float = 1.0  # scale factors of the whole head along x, y, z
    height: float = 1.0
    depth: float = 1.0
    nose_length: float = 1.0  # scale of the nose protrusion
    jaw_width: float = 1.0
    eye_x: float = 0.032  # eyeball centre |x|
    eye_y: float = 0.030
    eye_z: float = 0.061
    eye_radius: float = 0.0122
    mouth_y: float = -0.044  # the lips' meeting line
    mouth_half_width: float = 0.025
    neck_base_y: float = -0.135

    def eye_centre(self, side: int) -> np.ndarray:
        """Eyeball centre [3] for side +1 (subject's left, +x) or -1 (right)."""
        return np.array([side * self.eye_x * self.width, self.eye_y, self.eye_z * self.depth])


def sample_head_params(rng: np.random.Generator) -> HeadParams:
    """Jitter the default anatomy by a few percent (a plausible adult range)."""

    def j(scale: float) -> float:
        return float(1.0 + scale * np.clip(rng.standard_normal(), -2.0, 2.0))

    base = HeadParams()
    return HeadParams(
        width=j(0.025),
        height=j(0.02),
        depth=j(0.02),
        nose_length=j(0.06),
        jaw_width=j(0.04),
        eye_x=base.eye_x * j(0.03),
        eye_y=base.eye_y,
        eye_z=base.eye_z,
        eye_radius=base.eye_radius,
        mouth_y=base.mouth_y * j(0.02),
        mouth_half_width=base.mouth_half_width * j(0.04),
        neck_base_y=base.neck_base_y,
    )


# ------------------------------------------------------------------------------------------ implicit head
def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ellipsoid(
    p: np.ndarray, centre, radii, rot: np.ndarray | None = None, cull: float | None = None
) -> np.ndarray:
    """Approximate signed distance [N] of points p [N,3] to an ellipsoid (negative inside).

    With `cull`, points farther than max(radii) + cull from the centre along any axis are not evaluated and get
    1.0 (far outside): exact for smooth unions and differences whose blending width is below `cull`."""
    c = np.asarray(centre, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    out = np.ones(len(p))
    if cull is not None:
        near = np.all(np.abs(p - c) <= r.max() + cull, axis=-1)
        idx = np.nonzero(near)[0]
        if len(idx) == 0:
            return out
        out[idx] = _ellipsoid(p[idx], c, r, rot)
        return out
    q = p - c
    if rot is not None:
        q = q @ rot  # rotate the point into the ellipsoid's frame (rot is its local-to-world rotation)
    q1 = q / r
    q2 = q1 / r
    k0 = np.sqrt(np.einsum("...i,...i->...", q1, q1))
    k1 = np.sqrt(np.einsum("...i,...i->...", q2, q2))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _elliptic_cylinder_y(p: np.ndarray, centre_xz, radii_xz, y_min: float, y_max: float) -> np.ndarray:
    """Approximate signed distance of a vertical elliptic cylinder capped at y_min, y_max."""
    q = np.stack([(p[:, 0] - centre_xz[0]) / radii_xz[0], (p[:, 2] - centre_xz[1]) / radii_xz[1]], -1)
    d_side = (np.linalg.norm(q, axis=-1) - 1.0) * min(radii_xz)
    d_cap = np.maximum(y_min - p[:, 1], p[:, 1] - y_max)
    return np.maximum(d_side, d_cap)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union) with blending width k metres."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smin(-a, -b, k)


def head_sdf(p: np.ndarray, hp: HeadParams) -> np.ndarray:
    """Approximate signed distance [N] of points p [N,3] to the procedural head's skin (negative inside)."""
    s = np.array([hp.width, hp.height, hp.depth])
    q = p / s  # evaluate the canonical head in scaled coordinates
    jw = hp.jaw_width
    nl = hp.nose_length
    my = hp.mouth_y / hp.height  # the lips meet at y = mouth_y after scaling

    def _ell(pts, centre, radii, rot=None):  # local features: evaluated only near themselves
        return _ellipsoid(pts, centre, radii, rot, cull=CULL_MARGIN)

    # skull and face masses
    d = _ellipsoid(q, (0.0, 0.024, -0.014), (0.073, 0.087, 0.097))
    d = _smin(d, _ellipsoid(q, (0.0, -0.010, 0.016), (0.064, 0.072, 0.068)), 0.02)
    d = _smin(d, _ellipsoid(q, (0.0, my - 0.006, 0.020), (0.054 * jw, 0.042, 0.066)), 0.02)
    d = _smin(d, _ellipsoid(q, (0.0, my - 0.032, 0.071), (0.021 * jw, 0.016, 0.02)), 0.012)
    # cheekbones and brow ridge
    for side in (-1.0, 1.0):
        d = _smin(d, _ell(q, (side * 0.045, -0.002, 0.05), (0.022, 0.016, 0.02)), 0.025)
    d = _smin(d, _ell(q, (0.0, 0.05, 0.066), (0.056, 0.013, 0.02)), 0.014)
    # ears: flattened, slightly tilted ellipsoids
    for side in (-1.0, 1.0):
        d = _smin(d, _ell(q, (side * 0.073, 0.004, -0.014), (0.012, 0.029, 0.018), _rot_x(-0.2)), 0.006)
    # nose: bridge, tip, alae
    bridge = _ell(q, (0.0, 0.012, 0.078 + 0.01 * nl), (0.0085, 0.03, 0.012 * nl), _rot_x(-0.35))
    d = _smin(d, bridge, 0.01)
    d = _smin(d, _ell(q, (0.0, -0.010, 0.094 + 0.01 * nl), (0.0105, 0.0095, 0.0105)), 0.007)
    for side in (-1.0, 1.0):
        d = _smin(d, _ell(q, (side * 0.0115, -0.0145, 0.089), (0.0072, 0.0062, 0.0072)), 0.008)
    # lips
    d = _smin(d, _ell(q, (0.0, my + 0.0065, 0.087), (0.025, 0.0075, 0.0105)), 0.006)
    d = _smin(d, _ell(q, (0.0, my - 0.0075, 0.085), (0.022, 0.0078, 0.0105)), 0.006)
    d = _smax(d, -_ell(q, (0.0, my - 0.019, 0.095), (0.02, 0.0045, 0.007)), 0.005)  # groove above the chin
    # neck
    d = _smin(d, _elliptic_cylinder_y(q, (0.0, -0.014), (0.05, 0.049), -0.3, -0.02), 0.02)
    d = d * s.min()
    # eyes (in unscaled space so that the eyeballs fit exactly): orbital recess, eyelids wrapping the eyeball,
    # almond-shaped opening
    for side in (-1, 1):
        c = hp.eye_centre(side)
        r = hp.eye_radius
        d = _smax(d, -_ell(p, c + np.array([0.0, 0.001, 0.027]), (0.021, 0.015, 0.016)), 0.012)
        d = _smin(d, np.linalg.norm(p - c, axis=-1) - (r + 0.0016), 0.005)
        d = _smax(d, -_ell(p, c + np.array([0.0, 0.0005, 0.009]), (0.0165, 0.0078, 0.0125)), 0.0025)
    return d


# ------------------------------------------------------------------------------------------------- geometry
@dataclass
class HeadGeometry:
    """The procedural head's template mesh and everything derived from its construction.

    Attributes:
        vertices: [V, 3] float64 rest positions (metres).
        faces: [F, 3] int64 triangles, counter-clockwise seen from outside.
        uvs: [Vt, 2] float64 texture coordinates in [0, 1] (v up).
        uv_faces: [F, 3] int64 indices into ``uvs``.
        part: [V] int8 vertex part: 0 skin, 1 mouth pocket, 2 left eyeball, 3 right eyeball.
        face_part: [F] int8 part of each face (same codes).
        lip_side: [V] float64 +1 on upper-lip slit copies and the upper pocket half, -1 on lower ones, 0 elsewhere.
        grid_index: [V, 2] int64 (row, column) of skin grid vertices (-1 for others; the crown pole has row -1).
        grid_shape: (rows, columns) of the skin grid (crown pole excluded).
        mouth_row: grid row of the mouth line.
        slit_columns: columns of the duplicated slit vertices (corners excluded).
        slit_upper, slit_lower: [S] vertex ids of the upper / lower lip copies on the slit, by column.
        mouth_corners: (right, left) vertex ids of the mouth corners.
        neck_base: [C] vertex ids of the open neck-base ring.
        params: the anatomy used.
        extras: construction data: ``phis`` [C] column azimuths (rad), ``row_origins`` [R_head, 3] and
            ``row_elevations`` [R_head] (rad) of the head-zone rays, ``pocket_rings`` [K, L] pocket vertex ids.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray
    part: np.ndarray
    face_part: np.ndarray
    lip_side: np.ndarray
    grid_index: np.ndarray
    grid_shape: tuple[int, int]
    mouth_row: int
    slit_columns: np.ndarray
    slit_upper: np.ndarray
    slit_lower: np.ndarray
    mouth_corners: tuple[int, int]
    neck_base: np.ndarray
    params: HeadParams
    extras: dict[str, np.ndarray] = field(default_factory=dict)


CULL_MARGIN = 0.03  # local features are evaluated within this distance (m) of their box; blends are narrower
N_COLS = 64  # azimuth samples (even, symmetric about the face)
N_CAP_ROWS = 12  # crown cap rows (elevation 90 .. 0 deg from a point above the brow)
N_BAND_ROWS_ABOVE = 38  # horizontal rows from the forehead down to the mouth line
N_FAN_ROWS = 14  # chin fan rows (elevation 0 .. -48 deg)
BAND_TOP_Y = 0.062  # height of the crown-cap origin and of the top band row
BAND_BELOW_MOUTH = 0.012  # the band ends this far below the mouth line
AXIS_Z = -0.01  # z of the head's vertical axis (origin of the horizontal rays)
N_NECK_ROWS = 7
POCKET_RINGS = 3
EYE_LAT, EYE_LON = 10, 16
LIP_GAP = 0.0012  # rest-pose distance between the two lip copies at the mouth centre


def _azimuths(n: int) -> np.ndarray:
    """Column azimuths [n] in radians, -pi (back) .. pi, symmetric, denser at the face (phi = 0)."""
    u = -1.0 + 2.0 * np.arange(n) / n
    a = 0.4
    return np.pi * (a * u + (1.0 - a) * u**3)


def _row_rays(hp: HeadParams) -> tuple[np.ndarray, np.ndarray]:
    """Ray origin [R, 3] and elevation [R] (radians) of every head-zone grid row, crown to under the chin.

    Three families that never cross: a crown cap (rays from one point above the brow, elevation 90 deg .. 0),
    a cylindrical band (horizontal rays from the head's vertical axis, from the forehead down to just below the
    mouth; the mouth line is one of its rows) and a chin fan (rays from one point below the mouth, elevation
    0 .. -48 deg).
    """
    axis_z = AXIS_Z * hp.depth
    y_top = BAND_TOP_Y * hp.height
    y_bottom = hp.mouth_y - BAND_BELOW_MOUTH
    cap_e = np.radians(np.linspace(90.0, 0.0, N_CAP_ROWS + 1)[1:])
    band_y = np.concatenate(
        [np.linspace(y_top, hp.mouth_y, N_BAND_ROWS_ABOVE + 1)[1:], np.linspace(hp.mouth_y, y_bottom, 5)[1:]]
    )
    fan_e = np.radians(np.linspace(0.0, -48.0, N_FAN_ROWS + 1)[1:])
    origins = np.concatenate(
        [
            np.tile([0.0, y_top, axis_z], (N_CAP_ROWS, 1)),
            np.stack([np.zeros_like(band_y), band_y, np.full_like(band_y, axis_z)], -1),
            np.tile([0.0, y_bottom, axis_z], (N_FAN_ROWS, 1)),
        ]
    )
    elev = np.concatenate([cap_e, np.zeros_like(band_y), fan_e])
    return origins, elev


def _cast(
    origins: np.ndarray, dirs: np.ndarray, hp: HeadParams, t_min: float = 0.02, t_max: float = 0.22
) -> np.ndarray:
    """Distance [N] along each ray to the outermost crossing of the skin."""
    n_steps = 100
    ts = np.linspace(t_min, t_max, n_steps + 1)
    if not (head_sdf(origins, hp) < 0.0).all():
        raise RuntimeError("procedural head: a ray origin lies outside the head")
    pts = origins[:, None, :] + ts[None, :, None] * dirs[:, None, :]
    inside = head_sdf(pts.reshape(-1, 3), hp).reshape(len(origins), -1) < 0.0
    inside[:, 0] = True  # the skin is further than t_min from every origin
    last = n_steps - np.argmax(inside[:, ::-1], axis=1)  # index of the last inside sample
    lo, hi = ts[last], ts[np.minimum(last + 1, n_steps)]
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        ins = head_sdf(origins + mid[:, None] * dirs, hp) < 0.0
        lo = np.where(ins, mid, lo)
        hi = np.where(ins, hi, mid)
    return 0.5 * (lo + hi)


def _uv_sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit UV sphere with poles on +z (front) and -z (back).

    Returns unit positions [2 + n_lat*n_lon, 3] (front pole, rings, back pole), faces [F, 3] (outward),
    and an azimuthal-equidistant UV chart around the front pole (uvs [Vt, 2] in a unit disc, uv_faces [F, 3]).
    """
    alpha = np.pi * np.arange(1, n_lat + 1) / (n_lat + 1)
    beta = 2.0 * np.pi * np.arange(n_lon) / n_lon
    ring = np.stack(
        [
            np.sin(alpha)[:, None] * np.cos(beta)[None],
            np.sin(alpha)[:, None] * np.sin(beta)[None],
            np.cos(alpha)[:, None] * np.ones_like(beta)[None],
        ],
        -1,
    ).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
    back = len(verts) - 1

    def rv(i: int, j: int) -> int:
        return 1 + i * n_lon + (j % n_lon)

    faces, uv_faces, uvs = [], [], []
    # UV: vertex k of the rings -> uv index k (same order); extra uvs for the back-pole fan
    ring_uv = (alpha / np.pi)[:, None, None] * np.stack([np.cos(beta), np.sin(beta)], -1)[None]
    uvs.append(np.zeros((1, 2)))
    uvs.append(ring_uv.reshape(-1, 2))
    # rings wrap around: the chart is a disc, so the seam needs no duplicate except at the back pole
    for j in range(n_lon):
        faces.append((0, rv(0, j), rv(0, j + 1)))
        uv_faces.append((0, rv(0, j), rv(0, j + 1)))
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = rv(i, j), rv(i, j + 1), rv(i + 1, j + 1), rv(i + 1, j)
            faces += [(a, d, c), (a, c, b)]
            uv_faces += [(a, d, c), (a, c, b)]
    n_uv = 1 + n_lat * n_lon
    for j in range(n_lon):
        bm = 2.0 * np.pi * (j + 0.5) / n_lon
        uvs.append(np.array([[np.cos(bm), np.sin(bm)]]))
        faces.append((rv(n_lat - 1, j), back, rv(n_lat - 1, j + 1)))
        uv_faces.append((rv(n_lat - 1, j), n_uv + j, rv(n_lat - 1, j + 1)))
    faces = np.array(faces, dtype=np.int64)
    uv_faces = np.array(uv_faces, dtype=np.int64)
    # orient outward: the first fan must point along +z
    v0, v1, v2 = verts[faces[0]]
    if np.cross(v1 - v0, v2 - v0)[2] < 0:
        faces = faces[:, ::-1].copy()
        uv_faces = uv_faces[:, ::-1].copy()
    return verts, faces, np.concatenate(uvs), uv_faces


def build_head_geometry(hp: HeadParams) -> HeadGeometry:
    """Build the template mesh (skin grid, mouth slit and pocket, eyeballs) and its UV layout."""
    phis = _azimuths(N_COLS)
    axis_z = AXIS_Z * hp.depth
    rows_o, rows_e = _row_rays(hp)
    mouth_row = int(np.argmin(np.abs(rows_o[:, 1] - hp.mouth_y) + np.abs(rows_e)))
    n_head = len(rows_e)
    ce, se = np.cos(rows_e)[:, None], np.sin(rows_e)[:, None]
    dirs = np.stack([ce * np.sin(phis)[None], se * np.ones_like(phis)[None], ce * np.cos(phis)[None]], -1)
    dirs = dirs.reshape(-1, 3)
    origins = np.broadcast_to(rows_o[:, None], (n_head, N_COLS, 3)).reshape(-1, 3).copy()
    t = _cast(origins, dirs, hp)
    head = (origins + t[:, None] * dirs).reshape(n_head, N_COLS, 3)
    top = rows_o[0]
    pole = top + _cast(top[None], np.array([[0.0, 1.0, 0.0]]), hp)[0] * np.array([0.0, 1.0, 0.0])

    # neck zone: horizontal rays from the neck axis, from just below the last head row to the neck base
    y_last = head[-1, :, 1]
    frac = np.arange(1, N_NECK_ROWS + 1) / N_NECK_ROWS
    ys = y_last[None, :] + (hp.neck_base_y - y_last[None, :]) * frac[:, None]  # [N_NECK, C]
    n_dirs = np.stack([np.sin(phis), np.zeros_like(phis), np.cos(phis)], -1)
    origins = np.stack([np.zeros_like(ys), ys, np.full_like(ys, axis_z)], -1).reshape(-1, 3)
    nd = np.broadcast_to(n_dirs[None], (N_NECK_ROWS, N_COLS, 3)).reshape(-1, 3)
    tn = _cast(origins, nd, hp)
    neck = (origins + tn[:, None] * nd).reshape(N_NECK_ROWS, N_COLS, 3)

    grid = np.concatenate([head, neck], 0)  # [R, C, 3]
    n_rows = grid.shape[0]
    verts = [grid.reshape(-1, 3), pole[None]]
    pole_id = n_rows * N_COLS

    def gid(r: int, j: int) -> int:
        return r * N_COLS + (j % N_COLS)

    # mouth slit: columns strictly between the two corners
    x_mouth = grid[mouth_row, :, 0]
    front = np.abs(phis) < np.pi / 2
    half = hp.mouth_half_width
    j_left = int(np.where(front & (x_mouth > 0))[0][np.argmin(np.abs(x_mouth[front & (x_mouth > 0)] - half))])
    j_right = N_COLS - j_left  # mirror column (phi -> -phi)
    # columns run from phi = -pi, so the subject's right comes first
    slit_cols = np.arange(j_right + 1, j_left)
    n_v = pole_id + 1
    lower_copy = {int(j): n_v + k for k, j in enumerate(slit_cols)}
    slit_upper = np.array([gid(mouth_row, j) for j in slit_cols])
    slit_lower = np.array([lower_copy[int(j)] for j in slit_cols])
    profile = 1.0 - (grid[mouth_row, slit_cols, 0] / half) ** 2
    upper_pos = grid[mouth_row, slit_cols].copy()
    lower_pos = upper_pos.copy()
    upper_pos[:, 1] += 0.5 * LIP_GAP * np.clip(profile, 0, 1)
    lower_pos[:, 1] -= 0.5 * LIP_GAP * np.clip(profile, 0, 1)
    verts[0][slit_upper] = upper_pos
    verts.append(lower_pos)
    n_v += len(slit_cols)

    # skin faces and UVs
    faces, uv_faces = [], []
    u_cols = np.arange(N_COLS + 1) / N_COLS  # seam duplicated at the back
    v_top, v_bottom = 0.995, 0.27
    v_rows = v_top - (v_top - v_bottom) * np.arange(1, n_rows + 1) / n_rows
    uv_grid = np.stack(np.meshgrid(u_cols, v_rows, indexing="xy"), -1).reshape(-1, 2)  # [R*(C+1), 2]

    def uid(r: int, j: int) -> int:
        return r * (N_COLS + 1) + j

    uvs = [uv_grid]
    n_uv = len(uv_grid)
    for j in range(N_COLS):  # crown fan
        uvs.append(np.array([[(u_cols[j] + u_cols[j + 1]) / 2, v_top]]))
        faces.append((pole_id, gid(0, j), gid(0, j + 1)))
        uv_faces.append((n_uv, uid(0, j), uid(0, j + 1)))
        n_uv += 1
    for r in range(n_rows - 1):
        for j in range(N_COLS):
            a, b, c, d = gid(r, j), gid(r, j + 1), gid(r + 1, j + 1), gid(r + 1, j)
            if r == mouth_row:  # faces below the mouth line use the lower-lip copies
                a = lower_copy.get(j % N_COLS, a)
                b = lower_copy.get((j + 1) % N_COLS, b)
            ua, ub, uc, ud = uid(r, j), uid(r, j + 1), uid(r + 1, j + 1), uid(r + 1, j)
            faces += [(a, d, c), (a, c, b)]
            uv_faces += [(ua, ud, uc), (ua, uc, ub)]

    # mouth pocket: rings sewn to the slit loop, closing at a point behind the lips
    loop = [gid(mouth_row, j_right)] + list(slit_upper) + [gid(mouth_row, j_left)] + list(slit_lower[::-1])
    side = np.array([0.0] + [1.0] * len(slit_upper) + [0.0] + [-1.0] * len(slit_lower))
    all_v = np.concatenate(verts)
    loop_pos = all_v[loop]
    z_back = loop_pos[:, 2].max() - 0.03
    x_prof = np.clip(1.0 - (loop_pos[:, 0] / half) ** 2, 0.0, 1.0)
    rings = [np.array(loop)]
    pocket_pos = []
    for k in range(1, POCKET_RINGS + 1):
        f = k / (POCKET_RINGS + 1)
        pos = loop_pos.copy()
        pos[:, 0] *= 1.0 - 0.35 * f
        pos[:, 1] += side * 0.011 * np.sin(np.pi * f) * (0.3 + 0.7 * x_prof)
        pos[:, 2] = loop_pos[:, 2] * (1.0 - f) + z_back * f
        rings.append(n_v + np.arange(len(loop)))
        pocket_pos.append(pos)
        n_v += len(loop)
    pocket_centre = np.array([0.0, hp.mouth_y, z_back - 0.004])
    pocket_pos.append(pocket_centre[None])
    centre_id = n_v
    n_v += 1
    verts += pocket_pos
    L = len(loop)
    # pocket UV: concentric rings in a disc of radius 1 (mapped into its island below)
    ang = 2.0 * np.pi * np.arange(L) / L
    p_uv = [
        np.stack([np.cos(ang), np.sin(ang)], -1) * (1.0 - k / (POCKET_RINGS + 1))
        for k in range(POCKET_RINGS + 1)
    ]
    p_uv.append(np.zeros((1, 2)))
    p_uv = np.concatenate(p_uv)
    pocket_faces, pocket_uv_faces = [], []
    for k in range(POCKET_RINGS):
        for i in range(L):
            a, b = rings[k][i], rings[k][(i + 1) % L]
            c, d = rings[k + 1][(i + 1) % L], rings[k + 1][i]
            ua, ub, uc, ud = k * L + i, k * L + (i + 1) % L, (k + 1) * L + (i + 1) % L, (k + 1) * L + i
            pocket_faces += [(a, b, c), (a, c, d)]
            pocket_uv_faces += [(ua, ub, uc), (ua, uc, ud)]
    for i in range(L):
        a, b = rings[-1][i], rings[-1][(i + 1) % L]
        pocket_faces.append((a, b, centre_id))
        pocket_uv_faces.append((POCKET_RINGS * L + i, POCKET_RINGS * L + (i + 1) % L, (POCKET_RINGS + 1) * L))
    pocket_faces = np.array(pocket_faces, dtype=np.int64)
    pocket_uv_faces = np.array(pocket_uv_faces, dtype=np.int64)
    # orientation: the slit edge (corner_right -> first upper copy) is used by a skin face; the pocket face
    # sharing it must traverse it the other way
    skin = np.array(faces, dtype=np.int64)
    e0, e1 = loop[0], loop[1]
    skin_dir = _edge_direction(skin, e0, e1)
    pocket_dir = _edge_direction(pocket_faces, e0, e1)
    if skin_dir == pocket_dir:
        pocket_faces = pocket_faces[:, ::-1].copy()
        pocket_uv_faces = pocket_uv_faces[:, ::-1].copy()
    # UV disc orientation must be counter-clockwise like the 3D faces seen from inside the mouth
    if _signed_areas(p_uv, pocket_uv_faces[:1])[0] < 0:
        p_uv[:, 0] *= -1.0

    # eyeballs
    sph_v, sph_f, sph_uv, sph_uvf = _uv_sphere(EYE_LAT, EYE_LON)
    eye_parts = []
    for side_sign, code in ((1, 2), (-1, 3)):
        c = hp.eye_centre(side_sign)
        eye_parts.append((code, c + hp.eye_radius * sph_v, sph_f + 0))

    # assemble
    all_v = [np.concatenate(verts)]
    part = [
        np.zeros(pole_id + 1 + len(slit_cols), np.int8),
        np.ones(n_v - pole_id - 1 - len(slit_cols), np.int8),
    ]
    all_f = [skin, pocket_faces]
    face_part = [np.zeros(len(skin), np.int8), np.ones(len(pocket_faces), np.int8)]
    offset = n_v
    head_uv = np.concatenate(uvs)
    # islands: head strip v in [0.27, 1]; bottom row: left eye, right eye, pocket discs of radius 0.115
    island_r = 0.115
    uv_all = [head_uv]
    uvf_all = [np.array(uv_faces, dtype=np.int64)]
    uv_off = len(head_uv)
    for i, (code, ev, ef) in enumerate(eye_parts):
        all_v.append(ev)
        all_f.append(ef + offset)
        part.append(np.full(len(ev), code, np.int8))
        face_part.append(np.full(len(ef), code, np.int8))
        offset += len(ev)
        uv_all.append(np.array([0.125 + 0.25 * i, 0.125]) + island_r * sph_uv)
        uvf_all.append(sph_uvf + uv_off)
        uv_off += len(sph_uv)
    uv_all.append(np.array([0.625, 0.125]) + island_r * p_uv)
    # pocket uv faces are listed after the skin ones: put them in the same order as the 3D faces
    uvf_pocket = pocket_uv_faces + uv_off
    vertices = np.concatenate(all_v)
    faces_arr = np.concatenate([all_f[0], all_f[1]] + all_f[2:])
    uv_faces_arr = np.concatenate([uvf_all[0], uvf_pocket] + uvf_all[1:])
    face_part_arr = np.concatenate(face_part)
    part_arr = np.concatenate(part)
    lip_side = np.zeros(len(vertices))
    lip_side[slit_upper] = 1.0
    lip_side[slit_lower] = -1.0
    for k in range(1, POCKET_RINGS + 1):
        lip_side[rings[k]] = side
    grid_index = -np.ones((len(vertices), 2), np.int64)
    rr, cc = np.meshgrid(np.arange(n_rows), np.arange(N_COLS), indexing="ij")
    grid_index[: n_rows * N_COLS] = np.stack([rr.ravel(), cc.ravel()], -1)
    grid_index[pole_id] = (-1, 0)
    grid_index[slit_lower] = np.stack([np.full(len(slit_cols), mouth_row), slit_cols], -1)
    return HeadGeometry(
        vertices=vertices,
        faces=faces_arr,
        uvs=np.concatenate(uv_all),
        uv_faces=uv_faces_arr,
        part=part_arr,
        face_part=face_part_arr,
        lip_side=lip_side,
        grid_index=grid_index,
        grid_shape=(n_rows, N_COLS),
        mouth_row=mouth_row,
        slit_columns=slit_cols,
        slit_upper=slit_upper,
        slit_lower=slit_lower,
        mouth_corners=(gid(mouth_row, j_right), gid(mouth_row, j_left)),
        neck_base=np.array([gid(n_rows - 1, j) for j in range(N_COLS)]),
        params=hp,
        extras={
            "phis": phis,
            "row_origins": rows_o,
            "row_elevations": rows_e,
            "pocket_rings": np.stack(rings[1:]),
        },
    )


def _edge_direction(faces: np.ndarray, a: int, b: int) -> int:
    """+1 if some face traverses a -> b, -1 if b -> a, 0 if the edge is absent."""
    for i in range(3):
        u, v = faces[:, i], faces[:, (i + 1) % 3]
        if np.any((u == a) & (v == b)):
            return 1
        if np.any((u == b) & (v == a)):
            return -1
    return 0


def _signed_areas(uv: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:
    """Signed areas [F] of UV triangles (positive = counter-clockwise)."""
    a, b, c = uv[uv_faces[:, 0]], uv[uv_faces[:, 1]], uv[uv_faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
