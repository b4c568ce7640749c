"""Triangle-mesh files: OBJ (with UVs) and PLY, written atomically, and an OBJ reader for FLAME's UV layout.

Conventions: vertices [V, 3] float (metres), faces [F, 3] int (0-based in memory, 1-based in OBJ),
UV coordinates [Vt, 2] in [0, 1] with v = 0 at the bottom of the texture image (the OBJ convention),
uv_faces [F, 3] indexing the UV coordinates (seams make Vt differ from V).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headrecon.io.atomic import atomic_path

__all__ = ["ObjMesh", "read_obj", "write_obj", "write_ply"]


@dataclass
class ObjMesh:
    """What an OBJ file holds. `uvs`/`uv_faces` are None when the file has no `vt` / no `f a/at` indices."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64, 0-based
    uvs: np.ndarray | None = None  # [Vt, 2] float64
    uv_faces: np.ndarray | None = None  # [F, 3] int64, 0-based


def read_obj(path: str | os.PathLike) -> ObjMesh:
    """Read vertices, triangles and UVs from an OBJ file. Polygons with more than 3 corners are fanned.

    Raises ``ValueError`` naming the file and line for malformed content.
    """
    path = Path(path)
    verts: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[list[int]] = []
    uv_faces: list[list[int]] = []
    faces_without_uv = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            try:
                if parts[0] == "v":
                    verts.append([float(x) for x in parts[1:4]])
                elif parts[0] == "vt":
                    uvs.append([float(x) for x in parts[1:3]])
                elif parts[0] == "f":
                    corners = [c.split("/") for c in parts[1:]]
                    if len(corners) < 3:
                        raise ValueError("a face needs at least 3 corners")
                    vi = [_obj_index(c[0], len(verts)) for c in corners]
                    has_uv = all(len(c) > 1 and c[1] != "" for c in corners)
                    ti = [_obj_index(c[1], len(uvs)) for c in corners] if has_uv else None
                    faces_without_uv += not has_uv
                    for k in range(1, len(corners) - 1):
                        faces.append([vi[0], vi[k], vi[k + 1]])
                        if ti is not None:
                            uv_faces.append([ti[0], ti[k], ti[k + 1]])
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{lineno}: malformed OBJ line {line.strip()!r}: {exc}") from exc
    if not verts or not faces:
        raise ValueError(
            f"{path}: an OBJ mesh needs 'v' and 'f' lines; found {len(verts)} vertices, {len(faces)} faces"
        )
    v = np.asarray(verts, dtype=np.float64)
    fa = np.asarray(faces, dtype=np.int64)
    if fa.max() >= len(v) or fa.min() < 0:
        raise ValueError(f"{path}: face indices out of range for {len(v)} vertices")
    if uvs and uv_faces and faces_without_uv == 0:
        t = np.asarray(uvs, dtype=np.float64)
        tf = np.asarray(uv_faces, dtype=np.int64)
        if tf.max() >= len(t) or tf.min() < 0:
            raise ValueError(f"{path}: UV indices out of range for {len(t)} UV coordinates")
        return ObjMesh(v, fa, t, tf)
    return ObjMesh(v, fa)


def _obj_index(token: str, count: int) -> int:
    i = int(token)
    return i - 1 if i > 0 else count + i  # OBJ allows negative (relative) indices


def write_obj(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    uvs: np.ndarray | None = None,
    uv_faces: np.ndarray | None = None,
    vertex_colors: np.ndarray | None = None,
    precision: int = 6,
) -> Path:
    """Write an OBJ atomically. vertices [V,3], faces [F,3] 0-based, optional uvs [Vt,2] + uv_faces [F,3],
    optional vertex_colors [V,3] in [0,1] (written as the common `v x y z r g b` extension)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    _check_mesh(vertices, faces)
    if (uvs is None) != (uv_faces is None):
        raise ValueError("write_obj: give both uvs and uv_faces, or neither")
    fmt = f"%.{precision}f"
    lines: list[str] = ["# written by headrecon"]
    if vertex_colors is not None:
        vc = np.asarray(vertex_colors, dtype=np.float64)
        block = np.concatenate([vertices, vc], axis=1)
        lines += ["v " + " ".join([fmt] * 6) % tuple(row) for row in block]
    else:
        lines += ["v " + " ".join([fmt] * 3) % tuple(row) for row in vertices]
    if uvs is not None:
        uvs = np.asarray(uvs, dtype=np.float64)
        uv_faces = np.asarray(uv_faces, dtype=np.int64)
        if uv_faces.shape != faces.shape:
            raise ValueError(f"write_obj: uv_faces {uv_faces.shape} must match faces {faces.shape}")
        lines += ["vt " + " ".join([fmt] * 2) % tuple(row) for row in uvs]
        f1, t1 = faces + 1, uv_faces + 1
        lines += [
            f"f {a}/{at} {b}/{bt} {c}/{ct}" for (a, b, c), (at, bt, ct) in zip(f1.tolist(), t1.tolist())
        ]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in (faces + 1).tolist()]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def write_ply(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray | None = None,
    *,
    vertex_colors: np.ndarray | None = None,
    vertex_scalars: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a binary little-endian PLY atomically: vertices [V,3] float32, optional faces [F,3],
    optional colours [V,3] (uint8, or float in [0,1]) and named per-vertex float scalars (e.g. error in mm)."""
    vertices = np.asarray(vertices, dtype=np.float32)
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int64)
        _check_mesh(vertices, faces)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    cols = [vertices[:, 0], vertices[:, 1], vertices[:, 2]]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by headrecon",
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if vertex_colors is not None:
        vc = np.asarray(vertex_colors)
        if vc.dtype != np.uint8:
            vc = (np.clip(vc, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        for i, name in enumerate(("red", "green", "blue")):
            fields.append((name, "u1"))
            cols.append(vc[:, i])
            header.append(f"property uchar {name}")
    for name, values in (vertex_scalars or {}).items():
        fields.append((name, "<f4"))
        cols.append(np.asarray(values, dtype=np.float32).reshape(len(vertices)))
        header.append(f"property float {name}")
    n_faces = 0 if faces is None else len(faces)
    header += [f"element face {n_faces}", "property list uchar int vertex_indices", "end_header"]
    vrec = np.empty(len(vertices), dtype=fields)
    for (name, _), col in zip(fields, cols):
        vrec[name] = col
    payload = [("\n".join(header) + "\n").encode("ascii"), vrec.tobytes()]
    if n_faces:
        frec = np.empty(n_faces, dtype=[("n", "u1"), ("idx", "<i4", (3,))])
        frec["n"] = 3
        frec["idx"] = faces
        payload.append(frec.tobytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(payload))
    return Path(path)


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"face indices out of range for {len(vertices)} vertices")
