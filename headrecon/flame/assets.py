"""Loading FLAME's files (official or procedural) into plain numpy arrays: :class:`FlameAssets`.

One loading path for every source, in the spirit of timm's checkpoint filters:

* the FLAME pickle: FLAME 2020 ``generic_model.pkl`` / ``male_model.pkl`` / ``female_model.pkl``, FLAME 2023
  ``flame2023.pkl`` / ``flame2023_no_jaw.pkl``, smplx's ``FLAME_NEUTRAL.pkl`` name, or our converted
  ``flame_model.npz``. chumpy objects and a scipy-sparse ``J_regressor`` are unwrapped without chumpy
  (:mod:`headrecon.flame.pickle_compat`);
* landmarks: ``flame_static_embedding.pkl`` (51 points) plus ``flame_dynamic_embedding.npy`` (17 contour points in
  79 yaw bins), or DECA's ``landmark_embedding.npy`` holding both;
* UVs: ``head_template.obj`` (``vt`` and ``f a/at ...``) or ``FLAME_texture.npz`` (``vt``, ``ft``);
* optional eyelid blendshapes (SMIRK's ``l_eyelid.npy`` / ``r_eyelid.npy``) and ``FLAME_masks.pkl`` regions.

Every missing or malformed file raises :class:`FlameFileError`, naming the file, what it should hold and where to
obtain FLAME.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headrecon.flame.pickle_compat import load_pickle, to_numpy
from headrecon.io.atomic import atomic_path

__all__ = [
    "FLAME_OBTAIN_HINT",
    "FlameAssets",
    "FlameFileError",
    "FlameLandmarkEmbedding",
    "FlameUV",
    "load_flame_assets",
    "MODEL_FILE_NAMES",
]

FLAME_OBTAIN_HINT = (
    "FLAME is distributed at https://flame.is.tue.mpg.de (register and accept the FLAME licence, then download "
    "FLAME 2020 or FLAME 2023; landmark embeddings come with the FLAME fitting code / DECA, UVs with the "
    "'FLAME texture space' download). For tests and demos without the licensed files run "
    "'headrecon assets procedural-flame --out DIR'."
)

#: Model files looked for, in this order, when a folder is given.
MODEL_FILE_NAMES = (
    "flame_model.npz",
    "FLAME_NEUTRAL.pkl",
    "generic_model.pkl",
    "flame2023.pkl",
    "flame2023_no_jaw.pkl",
    "FLAME2020_NEUTRAL.pkl",
    "male_model.pkl",
    "female_model.pkl",
)
N_JOINTS = 5
N_YAW_BINS = 79
CONVERTED_NAME = "flame_model.npz"


class FlameFileError(ValueError):
    """A FLAME file is missing or does not hold what it should. The message names the file."""

    def __init__(self, path: str | os.PathLike, problem: str, expected: str | None = None) -> None:
        msg = f"{path}: {problem}"
        if expected:
            msg += f"\n  expected: {expected}"
        msg += f"\n  {FLAME_OBTAIN_HINT}"
        super().__init__(msg)
        self.path = Path(path)


@dataclass
class FlameLandmarkEmbedding:
    """Landmarks as points on faces: face index plus barycentric coordinates.

    static_faces [51] / static_bary [51, 3]: iBUG-68 points 17..67 (brows, nose, eyes, mouth).
    dynamic_faces [79, 17] / dynamic_bary [79, 17, 3]: the jaw contour (iBUG 0..16) for 79 head-yaw bins from
    -39 to +39 degrees; None when only the static embedding is available.
    """

    static_faces: np.ndarray
    static_bary: np.ndarray
    dynamic_faces: np.ndarray | None = None
    dynamic_bary: np.ndarray | None = None


@dataclass
class FlameUV:
    """UV layout: uvs [Vt, 2] in [0, 1] (v up, OBJ convention) and uv_faces [F, 3] into `uvs`."""

    uvs: np.ndarray
    uv_faces: np.ndarray


@dataclass
class FlameAssets:
    """Everything a FLAME model is made of, as float64/int64 numpy arrays (V vertices, F faces, 5 joints).

    v_template [V, 3] metres; faces [F, 3]; shapedirs [V, 3, K] with the first `n_shape` columns identity and
    the rest expression (FLAME: 300 + 100); posedirs [V, 3, 36] pose correctives on (R - I) of the 4 non-root
    joints; J_regressor [5, V]; weights [V, 5] skinning weights; parents [5] (-1 for the root).
    Joint order: global (root), neck, jaw, left eye, right eye.
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    n_shape: int = 300
    landmarks: FlameLandmarkEmbedding | None = None
    uv: FlameUV | None = None
    eyelids: np.ndarray | None = None  # [2, V, 3]: left, right upper-eyelid closing offsets (SMIRK)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # region name -> vertex indices
    sources: dict[str, str] = field(default_factory=dict)  # what was read from where

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.shapedirs.shape[2] - self.n_shape)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        static_embedding: str | os.PathLike | None = None,
        dynamic_embedding: str | os.PathLike | None = None,
        landmark_embedding: str | os.PathLike | None = None,
        uv_file: str | os.PathLike | None = None,
        masks_file: str | os.PathLike | None = None,
        eyelid_files: tuple[str | os.PathLike, str | os.PathLike] | None = None,
        n_shape: int = 300,
        require_landmarks: bool = False,
        require_uv: bool = False,
    ) -> FlameAssets:
        """Load a FLAME model from a folder (files found by their official names) or a model file.

        Explicit paths override discovery. Optional parts that are absent stay None unless required.
        """
        path = Path(path)
        if not path.exists():
            raise FlameFileError(
                path,
                "no such file or folder",
                "a folder with a FLAME model file "
                f"({', '.join(MODEL_FILE_NAMES[:4])}, ...) or the model file itself",
            )
        folder = path if path.is_dir() else path.parent
        model_file = _find_model_file(path)
        if model_file.name.endswith(".npz"):
            return cls._load_converted(model_file)
        assets = cls._from_model_dict(_read_pickle(model_file), model_file, n_shape=n_shape)

        def pick(explicit, *names):
            if explicit is not None:
                p = Path(explicit)
                if not p.exists():
                    raise FlameFileError(p, "no such file")
                return p
            for n in names:
                if (folder / n).exists():
                    return folder / n
            return None

        static_p = pick(static_embedding, "flame_static_embedding.pkl")
        dyn_p = pick(dynamic_embedding, "flame_dynamic_embedding.npy")
        deca_p = pick(landmark_embedding, "landmark_embedding.npy")
        if static_p is not None and landmark_embedding is None:
            assets.landmarks = read_static_embedding(static_p)
            assets.sources["static_embedding"] = str(static_p)
            if dyn_p is not None:
                faces, bary = read_dynamic_embedding(dyn_p)
                assets.landmarks.dynamic_faces, assets.landmarks.dynamic_bary = faces, bary
                assets.sources["dynamic_embedding"] = str(dyn_p)
        elif deca_p is not None:
            assets.landmarks = read_deca_landmark_embedding(deca_p)
            assets.sources["landmark_embedding"] = str(deca_p)
        elif require_landmarks:
            raise FlameFileError(
                folder / "flame_static_embedding.pkl",
                "landmark embedding not found",
                "flame_static_embedding.pkl (+ flame_dynamic_embedding.npy) or landmark_embedding.npy",
            )

        uv_p = pick(uv_file, "head_template.obj", "FLAME_texture.npz")
        if uv_p is not None:
            assets.uv = read_uv_layout(uv_p, num_faces=assets.num_faces)
            assets.sources["uv"] = str(uv_p)
        elif require_uv:
            raise FlameFileError(
                folder / "head_template.obj",
                "UV layout not found",
                "head_template.obj with vt/f a/at lines, or FLAME_texture.npz with vt and ft",
            )

        masks_p = pick(masks_file, "FLAME_masks.pkl")
        if masks_p is not None:
            assets.masks = read_masks(masks_p, num_vertices=assets.num_vertices)
            assets.sources["masks"] = str(masks_p)

        if eyelid_files is not None:
            lp, rp = (Path(p) for p in eyelid_files)
        else:
            lp, rp = folder / "l_eyelid.npy", folder / "r_eyelid.npy"
        if lp.exists() and rp.exists():
            assets.eyelids = np.stack(
                [read_vertex_offsets(lp, assets.num_vertices), read_vertex_offsets(rp, assets.num_vertices)]
            )
            assets.sources["eyelids"] = f"{lp}, {rp}"
        elif eyelid_files is not None:
            missing = lp if not lp.exists() else rp
            raise FlameFileError(
                missing, "no such file", "an [V, 3] float array of eyelid offsets (SMIRK format)"
            )
        assets.validate()
        return assets

    @classmethod
    def _from_model_dict(cls, data: Any, path: Path, *, n_shape: int) -> FlameAssets:
        if not isinstance(data, dict):
            raise FlameFileError(path, f"holds a {type(data).__name__}, not a dict", _MODEL_EXPECTED)
        missing = [
            k
            for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
            if k not in data
        ]
        if missing:
            raise FlameFileError(path, f"missing keys {missing}", _MODEL_EXPECTED)
        try:
            arr = {
                k: to_numpy(data[k], what=f"{path.name}['{k}']")
                for k in (
                    "v_template",
                    "f",
                    "shapedirs",
                    "posedirs",
                    "J_regressor",
                    "weights",
                    "kintree_table",
                )
            }
        except TypeError as exc:
            raise FlameFileError(path, str(exc), _MODEL_EXPECTED) from exc
        parents = arr["kintree_table"][0].astype(np.int64)
        parents[parents >= len(parents)] = -1  # root parent stored as 2**32 - 1
        shapedirs = arr["shapedirs"].astype(np.float64)
        if shapedirs.ndim == 2:
            shapedirs = shapedirs[:, :, None]
        assets = cls(
            v_template=arr["v_template"].astype(np.float64),
            faces=arr["f"].astype(np.int64),
            shapedirs=shapedirs,
            posedirs=arr["posedirs"].astype(np.float64),
            J_regressor=arr["J_regressor"].astype(np.float64),
            weights=arr["weights"].astype(np.float64),
            parents=parents,
            n_shape=min(n_shape, shapedirs.shape[2]),
            sources={"model": str(path)},
        )
        assets.validate(path)
        return assets

    @classmethod
    def _load_converted(cls, path: Path) -> FlameAssets:
        try:
            z = dict(np.load(path, allow_pickle=False))
        except Exception as exc:
            raise FlameFileError(path, f"unreadable npz archive ({exc})", _CONVERTED_EXPECTED) from exc
        need = (
            "v_template",
            "faces",
            "shapedirs",
            "posedirs",
            "J_regressor",
            "weights",
            "parents",
            "n_shape",
        )
        missing = [k for k in need if k not in z]
        if missing:
            raise FlameFileError(path, f"missing arrays {missing}", _CONVERTED_EXPECTED)
        lm = None
        if "lmk_static_faces" in z:
            lm = FlameLandmarkEmbedding(
                z["lmk_static_faces"],
                z["lmk_static_bary"],
                z.get("lmk_dynamic_faces"),
                z.get("lmk_dynamic_bary"),
            )
        uv = FlameUV(z["uvs"], z["uv_faces"]) if "uvs" in z else None
        masks = {k[len("mask_") :]: v for k, v in z.items() if k.startswith("mask_")}
        assets = cls(
            v_template=z["v_template"],
            faces=z["faces"],
            shapedirs=z["shapedirs"],
            posedirs=z["posedirs"],
            J_regressor=z["J_regressor"],
            weights=z["weights"],
            parents=z["parents"],
            n_shape=int(z["n_shape"]),
            landmarks=lm,
            uv=uv,
            eyelids=z.get("eyelids"),
            masks=masks,
            sources={"model": str(path)},
        )
        assets.validate(path)
        return assets

    # ----------------------------------------------------------------------------------------------- checking
    def validate(self, path: str | os.PathLike | None = None) -> None:
        """Check shapes and index ranges; raise :class:`FlameFileError` naming `path` (or the model source)."""
        where = path if path is not None else self.sources.get("model", "<FLAME assets>")
        V = self.v_template.shape[0] if self.v_template.ndim == 2 else -1
        checks = [
            (
                self.v_template.ndim == 2 and self.v_template.shape[1] == 3,
                f"v_template {self.v_template.shape}, want [V, 3]",
            ),
            (self.faces.ndim == 2 and self.faces.shape[1] == 3, f"f {self.faces.shape}, want [F, 3]"),
            (
                self.shapedirs.ndim == 3 and self.shapedirs.shape[:2] == (V, 3),
                f"shapedirs {self.shapedirs.shape}, want [{V}, 3, K]",
            ),
            (
                self.posedirs.shape == (V, 3, 9 * (N_JOINTS - 1)),
                f"posedirs {self.posedirs.shape}, want [{V}, 3, 36]",
            ),
            (self.J_regressor.shape == (N_JOINTS, V), f"J_regressor {self.J_regressor.shape}, want [5, {V}]"),
            (self.weights.shape == (V, N_JOINTS), f"weights {self.weights.shape}, want [{V}, 5]"),
            (
                self.parents.shape == (N_JOINTS,) and self.parents[0] == -1,
                f"kintree_table parents {self.parents}, want 5 joints, root first",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise FlameFileError(where, f"wrong array shape: {msg}", _MODEL_EXPECTED)
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            raise FlameFileError(where, f"face indices out of range [0, {V})", _MODEL_EXPECTED)
        if not np.all(np.isfinite(self.v_template)) or not np.all(np.isfinite(self.shapedirs)):
            raise FlameFileError(where, "non-finite values in v_template or shapedirs", _MODEL_EXPECTED)
        F = self.faces.shape[0]
        if self.landmarks is not None:
            src = self.sources.get("static_embedding", self.sources.get("landmark_embedding", where))
            _check_embedding(src, self.landmarks.static_faces, self.landmarks.static_bary, (51,), F)
            if self.landmarks.dynamic_faces is not None:
                src = self.sources.get("dynamic_embedding", src)
                _check_embedding(
                    src, self.landmarks.dynamic_faces, self.landmarks.dynamic_bary, (N_YAW_BINS, 17), F
                )
        if self.uv is not None and self.uv.uv_faces.shape != self.faces.shape:
            raise FlameFileError(
                self.sources.get("uv", where),
                f"UV faces {self.uv.uv_faces.shape} do not match the model's faces {self.faces.shape}",
            )
        if self.eyelids is not None and self.eyelids.shape != (2, V, 3):
            raise FlameFileError(
                self.sources.get("eyelids", where), f"eyelids {self.eyelids.shape}, want [2, {V}, 3]"
            )

    # ------------------------------------------------------------------------------------------------ saving
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write a plain-numpy copy (`flame_model.npz`, no pickles, no chumpy) into `out_dir`; returns its path."""
        out = Path(out_dir) / CONVERTED_NAME
        arrays: dict[str, np.ndarray] = {
            "v_template": self.v_template,
            "faces": self.faces,
            "shapedirs": self.shapedirs,
            "posedirs": self.posedirs,
            "J_regressor": self.J_regressor,
            "weights": self.weights,
            "parents": self.parents,
            "n_shape": np.asarray(self.n_shape),
        }
        if self.landmarks is not None:
            arrays["lmk_static_faces"] = self.landmarks.static_faces
            arrays["lmk_static_bary"] = self.landmarks.static_bary
            if self.landmarks.dynamic_faces is not None:
                arrays["lmk_dynamic_faces"] = self.landmarks.dynamic_faces
                arrays["lmk_dynamic_bary"] = self.landmarks.dynamic_bary
        if self.uv is not None:
            arrays["uvs"], arrays["uv_faces"] = self.uv.uvs, self.uv.uv_faces
        if self.eyelids is not None:
            arrays["eyelids"] = self.eyelids
        for name, idx in self.masks.items():
            arrays[f"mask_{name}"] = idx
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return out


def load_flame_assets(path: str | os.PathLike, **kwargs: Any) -> FlameAssets:
    """Shorthand for :meth:`FlameAssets.load`."""
    return FlameAssets.load(path, **kwargs)


# ---------------------------------------------------------------------------------------------- file readers
_MODEL_EXPECTED = (
    "a FLAME model pickle: dict with v_template [V,3], f [F,3], shapedirs [V,3,400], posedirs [V,3,36], "
    "J_regressor [5,V] (dense or scipy sparse), weights [V,5], kintree_table [2,5]"
)
_CONVERTED_EXPECTED = "an npz written by 'headrecon assets convert-flame' (v_template, faces, shapedirs, ...)"


def _find_model_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in MODEL_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    raise FlameFileError(path, "no FLAME model file in this folder", "one of " + ", ".join(MODEL_FILE_NAMES))


def _read_pickle(path: Path) -> Any:
    try:
        return load_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError) as exc:
        raise FlameFileError(
            path, f"not a readable FLAME pickle ({type(exc).__name__}: {exc})", _MODEL_EXPECTED
        ) from exc


def _check_embedding(
    path, faces: np.ndarray, bary: np.ndarray, lead: tuple[int, ...], num_faces: int
) -> None:
    if faces.shape != lead or bary.shape != (*lead, 3):
        raise FlameFileError(
            path, f"landmark arrays {faces.shape} / {bary.shape}, want {lead} / {(*lead, 3)}"
        )
    if faces.min() < 0 or faces.max() >= num_faces:
        raise FlameFileError(path, f"landmark face indices out of range [0, {num_faces})")


def _dict_from(path: Path, loaded: Any, expected: str) -> dict:
    if isinstance(loaded, np.ndarray) and loaded.dtype == object and loaded.shape == ():
        loaded = loaded[()]
    if not isinstance(loaded, dict):
        raise FlameFileError(path, f"holds a {type(loaded).__name__}, not a dict", expected)
    return loaded


def _get(path: Path, d: dict, key: str, expected: str, dtype) -> np.ndarray:
    if key not in d:
        raise FlameFileError(path, f"missing key '{key}' (has {sorted(d)})", expected)
    return np.asarray(to_numpy(d[key], what=f"{path.name}['{key}']"), dtype=dtype)


def _load_npy_dict(path: Path, expected: str) -> dict:
    try:
        loaded = np.load(path, allow_pickle=True, encoding="latin1")
    except Exception as exc:
        raise FlameFileError(path, f"unreadable .npy file ({exc})", expected) from exc
    return _dict_from(path, loaded, expected)


def read_static_embedding(path: str | os.PathLike) -> FlameLandmarkEmbedding:
    """`flame_static_embedding.pkl`: dict with lmk_face_idx [51] and lmk_b_coords [51, 3]."""
    path = Path(path)
    exp = "a pickled dict with lmk_face_idx [51] and lmk_b_coords [51, 3]"
    d = _dict_from(path, _read_pickle(path), exp)
    return FlameLandmarkEmbedding(
        _get(path, d, "lmk_face_idx", exp, np.int64).reshape(-1),
        _get(path, d, "lmk_b_coords", exp, np.float64).reshape(-1, 3),
    )


def read_dynamic_embedding(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`flame_dynamic_embedding.npy`: dict with lmk_face_idx [79, 17] and lmk_b_coords [79, 17, 3]."""
    path = Path(path)
    exp = "np.save of a dict with lmk_face_idx [79, 17] and lmk_b_coords [79, 17, 3]"
    d = _load_npy_dict(path, exp)
    return _get(path, d, "lmk_face_idx", exp, np.int64), _get(path, d, "lmk_b_coords", exp, np.float64)


def read_deca_landmark_embedding(path: str | os.PathLike) -> FlameLandmarkEmbedding:
    """DECA's `landmark_embedding.npy`: static_lmk_faces_idx [51], static_lmk_bary_coords [51,3],
    dynamic_lmk_faces_idx [79,17], dynamic_lmk_bary_coords [79,17,3] (full_lmk_* are not needed)."""
    path = Path(path)
    exp = (
        "np.save of a dict with static_lmk_faces_idx, static_lmk_bary_coords, dynamic_lmk_faces_idx, "
        "dynamic_lmk_bary_coords"
    )
    d = _load_npy_dict(path, exp)
    return FlameLandmarkEmbedding(
        _get(path, d, "static_lmk_faces_idx", exp, np.int64).reshape(-1),
        _get(path, d, "static_lmk_bary_coords", exp, np.float64).reshape(-1, 3),
        _get(path, d, "dynamic_lmk_faces_idx", exp, np.int64),
        _get(path, d, "dynamic_lmk_bary_coords", exp, np.float64),
    )


def read_uv_layout(path: str | os.PathLike, *, num_faces: int | None = None) -> FlameUV:
    """UVs from `head_template.obj` (vt + f a/at) or `FLAME_texture.npz` (vt [Vt,2], ft [F,3])."""
    from headrecon.io.mesh import read_obj

    path = Path(path)
    if path.suffix == ".npz":
        exp = "an npz with vt [Vt, 2] and ft [F, 3]"
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise FlameFileError(path, f"unreadable npz ({exc})", exp) from exc
        if "vt" not in z or "ft" not in z:
            raise FlameFileError(path, f"missing vt/ft (has {sorted(z.files)})", exp)
        uv = FlameUV(np.asarray(z["vt"], np.float64), np.asarray(z["ft"], np.int64))
    else:
        try:
            mesh = read_obj(path)
        except (OSError, ValueError) as exc:
            raise FlameFileError(path, str(exc), "an OBJ with vt lines and f a/at b/bt c/ct faces") from exc
        if mesh.uvs is None:
            raise FlameFileError(path, "the OBJ has no UVs", "vt lines and f a/at b/bt c/ct faces")
        uv = FlameUV(mesh.uvs, mesh.uv_faces)
    if num_faces is not None and uv.uv_faces.shape != (num_faces, 3):
        raise FlameFileError(path, f"UV faces {uv.uv_faces.shape} do not match the model's {num_faces} faces")
    if uv.uv_faces.min() < 0 or uv.uv_faces.max() >= len(uv.uvs):
        raise FlameFileError(path, "UV face indices out of range")
    return uv


def read_masks(path: str | os.PathLike, *, num_vertices: int) -> dict[str, np.ndarray]:
    """`FLAME_masks.pkl`: dict region name -> vertex indices."""
    path = Path(path)
    d = _dict_from(path, _read_pickle(path), "a pickled dict: region name -> vertex index array")
    out = {}
    for name, idx in d.items():
        arr = np.asarray(to_numpy(idx, what=f"{path.name}['{name}']"), dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= num_vertices):
            raise FlameFileError(path, f"region '{name}' has vertex indices out of range [0, {num_vertices})")
        out[str(name)] = arr
    return out


def read_vertex_offsets(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
    """An [V, 3] float .npy of per-vertex offsets (e.g. SMIRK's eyelid blendshapes)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise FlameFileError(path, f"unreadable .npy ({exc})", f"a float array [{num_vertices}, 3]") from exc
    arr = np.asarray(arr, dtype=np.float64).reshape(-1, 3) if arr.size == num_vertices * 3 else arr
    if arr.shape != (num_vertices, 3):
        raise FlameFileError(path, f"shape {arr.shape}", f"a float array [{num_vertices}, 3]")
    return arr
