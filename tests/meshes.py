"""Small test meshes shared by the test modules."""

from __future__ import annotations

import numpy as np


def icosphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Unit ico-sphere: vertices [V, 3] float64, faces [F, 3] int64 wound counter-clockwise seen from outside."""
    t = (1.0 + 5.0**0.5) / 2.0
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t]]
    v += [[0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2]]
    f += [[10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11]]
    f += [[6, 2, 10], [8, 6, 7], [9, 8, 1]]
    verts = [np.asarray(p, dtype=np.float64) / np.linalg.norm(p) for p in v]
    faces = f

    def mid(a: int, b: int, cache: dict[tuple[int, int], int]) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b, cache), mid(b, c, cache), mid(c, a, cache)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new
    return np.stack(verts), np.asarray(faces, dtype=np.int64)
