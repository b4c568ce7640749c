"""FLAME as an `nn.Module` on top of smplx's `FLAMELayer` (all parameters are inputs; buffers hold the model).

    model = FlameModel.from_path("assets/flame")                       # official FLAME or procedural head
    out = model(FlameParams.zeros(4))                                  # FlameOutput
    out.vertices  # [4, V, 3] metres

Details worth knowing:

* smplx's `FLAME` only reads its model from files on disk (``FLAME_NEUTRAL.{pkl,npz}`` plus
  ``flame_static_embedding.pkl`` / ``flame_dynamic_embedding.npy`` in one folder). We hand it a private temporary
  folder written from :class:`~headrecon.flame.assets.FlameAssets` (plain npz, no chumpy), so the official files,
  converted copies and the procedural head all take the same path.
* `FLAMELayer.forward` always reads rotations as matrices [B, 1, 3, 3]; we convert axis-angle with Rodrigues and
  always pass the eyes as ``leye_pose`` / ``reye_pose`` (an ``eye_pose=`` keyword would be silently ignored).
* Eyelid blendshapes (SMIRK's) are added before skinning, like SMIRK does, by appending them to smplx's expression
  directions and the eyelid parameters to the expression vector.
* smplx returns landmarks as [51 static, 17 contour]; we reorder to iBUG-68 (contour first).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import smplx
import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor, nn

from headrecon.flame.assets import FlameAssets
from headrecon.flame.params import NOW_LANDMARK_INDICES, FlameOutput, FlameParams

__all__ = ["FlameModel"]

log = logging.getLogger(__name__)


class FlameModel(nn.Module):
    """FLAME head model. Stateless: every parameter is an input (see :class:`FlameParams`).

    Args:
        assets: loaded :class:`FlameAssets` (see :meth:`from_path` for a folder or file).
        n_shape: identity components used (<= 300).
        n_expression: expression components used (<= 100).
        dtype: float dtype of the buffers (float32; float64 for numerical tests).

    Buffers: ``faces`` [F, 3] long; ``uvs`` [Vt, 2] and ``uv_faces`` [F, 3] when the assets have UVs;
    ``v_template`` etc. inside ``self.layer`` (the smplx `FLAMELayer`).
    """

    faces: Tensor

    def __init__(
        self,
        assets: FlameAssets,
        *,
        n_shape: int = 300,
        n_expression: int = 100,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if n_shape > assets.n_shape:
            raise ValueError(f"n_shape={n_shape} but the FLAME model has {assets.n_shape} shape components")
        if n_expression > assets.n_expression:
            raise ValueError(
                f"n_expression={n_expression} but the model has {assets.n_expression} expression components"
            )
        self.n_shape, self.n_expression = n_shape, n_expression
        self.num_vertices = assets.num_vertices
        self.has_contour = assets.landmarks is not None and assets.landmarks.dynamic_faces is not None
        self.has_landmarks = assets.landmarks is not None
        self.has_eyelids = assets.eyelids is not None
        self._warned_eyelids = False
        self.layer = _build_flame_layer(assets, n_shape, n_expression, dtype)
        if self.has_eyelids:
            eyelid_dirs = torch.as_tensor(assets.eyelids, dtype=dtype).permute(1, 2, 0)  # [V, 3, 2]
            self.layer.expr_dirs = torch.cat([self.layer.expr_dirs, eyelid_dirs], dim=-1)
        # The model's arrays are not part of checkpoints: they come from the user's FLAME files (licence) and a
        # checkpoint then loads with any FLAME path.
        for module in self.layer.modules():
            module._non_persistent_buffers_set.update(name for name, _ in module.named_buffers(recurse=False))
        self.register_buffer("faces", torch.as_tensor(assets.faces, dtype=torch.long), persistent=False)
        if assets.uv is not None:
            self.register_buffer("uvs", torch.as_tensor(assets.uv.uvs, dtype=dtype), persistent=False)
            self.register_buffer(
                "uv_faces", torch.as_tensor(assets.uv.uv_faces, dtype=torch.long), persistent=False
            )
        else:
            self.uvs = self.uv_faces = None
        self.masks = {k: torch.as_tensor(v) for k, v in assets.masks.items()}

    @classmethod
    def from_path(cls, path: str | os.PathLike, **kwargs) -> FlameModel:
        """Load from a folder or model file (official FLAME, converted npz or procedural head)."""
        loader_keys = {
            "static_embedding",
            "dynamic_embedding",
            "landmark_embedding",
            "uv_file",
            "masks_file",
            "eyelid_files",
            "require_landmarks",
            "require_uv",
        }
        load_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in loader_keys}
        return cls(FlameAssets.load(path, **load_kwargs), **kwargs)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, params: FlameParams) -> FlameOutput:
        """Pose and shape the head. Returns vertices [B, V, 3], joints [B, 5, 3] and landmarks (metres)."""
        B = params.batch_size
        dtype = self.layer.shapedirs.dtype
        p = params.to(dtype=dtype)
        rots = [
            batch_rodrigues(getattr(p, name)).view(B, 1, 3, 3)
            for name in (
                "global_rotation",
                "neck_rotation",
                "jaw_rotation",
                "left_eye_rotation",
                "right_eye_rotation",
            )
        ]
        expression = p.expression[:, : self.n_expression]
        if p.expression.shape[1] < self.n_expression:
            expression = torch.nn.functional.pad(expression, (0, self.n_expression - p.expression.shape[1]))
        if self.has_eyelids:
            expression = torch.cat([expression, p.eyelids], dim=1)
        elif not self._warned_eyelids and bool((p.eyelids != 0).any()):
            log.warning(
                "FlameModel: eyelid parameters given but the model has no eyelid blendshapes; ignored"
            )
            self._warned_eyelids = True
        shape = p.shape[:, : self.n_shape]
        if shape.shape[1] < self.n_shape:
            shape = torch.nn.functional.pad(shape, (0, self.n_shape - shape.shape[1]))
        out = self.layer(
            betas=shape,
            expression=expression,
            global_orient=rots[0],
            neck_pose=rots[1],
            jaw_pose=rots[2],
            leye_pose=rots[3],
            reye_pose=rots[4],
            transl=p.translation,
        )
        joints = out.joints[:, :5]
        lm51 = lm68 = now7 = None
        if self.has_landmarks:
            lm51 = out.joints[:, 5:56]
            if self.has_contour:
                lm68 = torch.cat([out.joints[:, 56:73], lm51], dim=1)
                now7 = lm68[:, list(NOW_LANDMARK_INDICES)]
            else:
                now7 = lm51[:, [i - 17 for i in NOW_LANDMARK_INDICES]]
        return FlameOutput(
            vertices=out.vertices, joints=joints, landmarks68=lm68, landmarks51=lm51, landmarks_now7=now7
        )

    def extra_repr(self) -> str:
        return (
            f"vertices={self.num_vertices}, faces={self.faces.shape[0]}, n_shape={self.n_shape}, "
            f"n_expression={self.n_expression}, contour={self.has_contour}, eyelids={self.has_eyelids}"
        )


def _build_flame_layer(
    assets: FlameAssets, n_shape: int, n_expression: int, dtype: torch.dtype
) -> smplx.FLAMELayer:
    """Construct smplx's FLAMELayer from in-memory assets via a private temporary folder (see module doc)."""
    # smplx takes identity from columns [0, 300) and expression from [300, 400): pad each part to that layout.
    n_id = assets.n_shape
    shapedirs = np.concatenate(
        [_pad_columns(assets.shapedirs[:, :, :n_id], 300), _pad_columns(assets.shapedirs[:, :, n_id:], 100)],
        axis=2,
    )
    kintree = np.stack(
        [np.where(assets.parents < 0, 2**32 - 1, assets.parents), np.arange(len(assets.parents))]
    )
    lm = assets.landmarks
    with tempfile.TemporaryDirectory(prefix="headrecon_flame_") as tmp:
        tmp_path = Path(tmp)
        np.savez(
            tmp_path / "FLAME_NEUTRAL.npz",
            v_template=assets.v_template,
            f=assets.faces.astype(np.int64),
            shapedirs=shapedirs,
            posedirs=assets.posedirs,
            J_regressor=assets.J_regressor,
            weights=assets.weights,
            kintree_table=kintree.astype(np.int64),
        )
        static = {"lmk_face_idx": np.zeros(1, np.int64), "lmk_b_coords": np.full((1, 3), 1 / 3)}
        if lm is not None:
            static = {"lmk_face_idx": lm.static_faces.astype(np.int64), "lmk_b_coords": lm.static_bary}
        with open(tmp_path / "flame_static_embedding.pkl", "wb") as f:
            pickle.dump(static, f)
        contour = lm is not None and lm.dynamic_faces is not None
        if contour:
            np.save(
                tmp_path / "flame_dynamic_embedding.npy",
                {"lmk_face_idx": lm.dynamic_faces.astype(np.int64), "lmk_b_coords": lm.dynamic_bary},
                allow_pickle=True,
            )
        return smplx.FLAMELayer(
            model_path=str(tmp_path),
            ext="npz",
            num_betas=n_shape,
            num_expression_coeffs=n_expression,
            use_face_contour=contour,
            dtype=dtype,
            create_body_pose=False,
            create_transl=False,
        )


def _pad_columns(dirs: np.ndarray, k: int) -> np.ndarray:
    """[V, 3, n] -> [V, 3, max(n, k)] with zero columns appended."""
    if dirs.shape[2] >= k:
        return dirs
    return np.concatenate([dirs, np.zeros((*dirs.shape[:2], k - dirs.shape[2]))], axis=2)
