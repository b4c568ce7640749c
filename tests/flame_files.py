"""Builders of small files in FLAME's real on-disk formats, for loader tests.

`write_flame2020_pickle` writes the layout of FLAME 2020's ``generic_model.pkl``: a protocol-2 pickle of a dict
whose arrays are chumpy ``Ch`` objects (state dict with the value under ``x``) and whose ``J_regressor`` is a
``scipy.sparse.csc_matrix``. chumpy cannot be installed here, so a throwaway stand-in module named ``chumpy`` is put
on ``sys.modules`` only while pickling and removed afterwards: the reader must cope without it.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from headrecon.flame.procedural import FLAME_PICKLE_KEYS
from tests.meshes import icosphere

N_SHAPE, N_EXPR = 300, 100


def make_tiny_flame(seed: int = 0, subdiv: int = 2) -> dict:
    """A random but valid FLAME-layout model on an ico-sphere of radius 0.1 m (162 vertices at subdiv 2).

    Returns the pickle dict (plain numpy, J_regressor dense) plus the extra keys ``static_embedding``,
    ``dynamic_embedding``, ``uvs``/``uv_faces``, ``eyelids`` and ``masks``.
    """
    rng = np.random.default_rng(seed)
    v, f = icosphere(subdiv)
    v = v * 0.1
    V, F = len(v), len(f)
    shapedirs = rng.normal(0, 1e-3, (V, 3, N_SHAPE + N_EXPR))
    posedirs = rng.normal(0, 1e-3, (V, 3, 36))
    J_regressor = np.zeros((5, V))
    for j in range(5):
        idx = rng.choice(V, 6, replace=False)
        J_regressor[j, idx] = rng.dirichlet(np.ones(6))
    weights = rng.dirichlet(np.ones(5) * 0.5, size=V)
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    # UVs: one vt per face corner (a valid, if wasteful, layout).
    uvs = rng.uniform(0, 1, (F * 3, 2))
    uv_faces = np.arange(F * 3).reshape(F, 3)
    static = {
        "lmk_face_idx": rng.integers(0, F, 51).astype(np.int64),
        "lmk_b_coords": rng.dirichlet(np.ones(3), 51),
    }
    dynamic = {
        "lmk_face_idx": rng.integers(0, F, (79, 17)).astype(np.int64),
        "lmk_b_coords": rng.dirichlet(np.ones(3), (79, 17)),
    }
    return {
        "v_template": v,
        "f": f.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "J": J_regressor @ v,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "static_embedding": static,
        "dynamic_embedding": dynamic,
        "uvs": uvs,
        "uv_faces": uv_faces,
        "eyelids": rng.normal(0, 1e-3, (2, V, 3)),
        "masks": {"face": np.arange(0, V, 2), "scalp": np.arange(1, V, 2)},
    }


MODEL_KEYS = FLAME_PICKLE_KEYS  # the keys of the official FLAME pickle
CHUMPY_KEYS = ("shapedirs", "posedirs", "weights", "J", "v_template")


class _FakeChumpy:
    """Installs a minimal importable `chumpy` package while active (for writing pickles only)."""

    def __enter__(self):
        pkg = types.ModuleType("chumpy")
        ch = types.ModuleType("chumpy.ch")

        class Ch:  # what chumpy's leaf object pickles as: its __dict__ minus weakref caches, value in 'x'
            def __init__(self, x):
                self.x = np.asarray(x)
                self._dirty_vars = set()
                self._itr = None
                self._depends_on_deps = {}

            def __getstate__(self):
                return dict(self.__dict__)

        Ch.__module__ = "chumpy.ch"
        Ch.__qualname__ = "Ch"
        ch.Ch = Ch
        pkg.ch = ch
        pkg.Ch = Ch
        self._saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, ch
        return Ch

    def __exit__(self, *exc):
        for k, m in self._saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m


def write_flame2020_pickle(path: Path, model: dict, *, chumpy_keys=CHUMPY_KEYS) -> Path:
    """Write `model` in the official FLAME 2020/2023 pickle layout (chumpy arrays, sparse J_regressor)."""
    with _FakeChumpy() as Ch:
        d = {k: model[k] for k in MODEL_KEYS}
        for k in chumpy_keys:
            d[k] = Ch(d[k])
        d["J_regressor"] = scipy.sparse.csc_matrix(d["J_regressor"])
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    assert "chumpy" not in sys.modules
    return path


def write_flame_folder(
    folder: Path,
    model: dict,
    *,
    model_name: str = "generic_model.pkl",
    deca: bool = False,
    uv: str = "obj",
    eyelids: bool = True,
    masks: bool = True,
) -> Path:
    """A folder laid out like an official FLAME download (+ embeddings, UVs, eyelids, masks)."""
    from headrecon.io.mesh import write_obj

    folder.mkdir(parents=True, exist_ok=True)
    write_flame2020_pickle(folder / model_name, model)
    if deca:
        s, d = model["static_embedding"], model["dynamic_embedding"]
        full_idx = np.concatenate([d["lmk_face_idx"][0], s["lmk_face_idx"]])[None]
        full_bc = np.concatenate([d["lmk_b_coords"][0], s["lmk_b_coords"]])[None]
        np.save(
            folder / "landmark_embedding.npy",
            {
                "static_lmk_faces_idx": s["lmk_face_idx"],
                "static_lmk_bary_coords": s["lmk_b_coords"],
                "dynamic_lmk_faces_idx": d["lmk_face_idx"],
                "dynamic_lmk_bary_coords": d["lmk_b_coords"],
                "full_lmk_faces_idx": full_idx,
                "full_lmk_bary_coords": full_bc,
            },
            allow_pickle=True,
        )
    else:
        with open(folder / "flame_static_embedding.pkl", "wb") as fh:
            pickle.dump(model["static_embedding"], fh, protocol=2)
        np.save(folder / "flame_dynamic_embedding.npy", model["dynamic_embedding"], allow_pickle=True)
    if uv == "obj":
        write_obj(
            folder / "head_template.obj",
            model["v_template"],
            model["f"].astype(np.int64),
            uvs=model["uvs"],
            uv_faces=model["uv_faces"],
            precision=8,
        )
    elif uv == "npz":
        np.savez(folder / "FLAME_texture.npz", vt=model["uvs"], ft=model["uv_faces"], mean=np.zeros(3))
    if eyelids:
        np.save(folder / "l_eyelid.npy", model["eyelids"][0].astype(np.float32))
        np.save(folder / "r_eyelid.npy", model["eyelids"][1].astype(np.float32))
    if masks:
        with open(folder / "FLAME_masks.pkl", "wb") as fh:
            pickle.dump(model["masks"], fh, protocol=2)
    return folder
