"""Typed FLAME parameters and outputs (batched tensors)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FlameParams", "FlameOutput", "NOW_LANDMARK_INDICES", "ROTATION_FIELDS"]

#: iBUG-68 indices of the 7 NoW challenge landmarks, in NoW's order: right-eye outer, right-eye inner, left-eye
#: inner, left-eye outer, nose bottom, right mouth corner, left mouth corner ("right" = the subject's right).
NOW_LANDMARK_INDICES = (36, 39, 42, 45, 33, 48, 54)

#: Rotation fields of :class:`FlameParams`, in FLAME's joint order (global, neck, jaw, left eye, right eye).
ROTATION_FIELDS = (
    "global_rotation",
    "neck_rotation",
    "jaw_rotation",
    "left_eye_rotation",
    "right_eye_rotation",
)


@dataclass
class FlameParams:
    """FLAME parameters for B heads. Rotations are axis-angle vectors (radians) relative to the parent joint.

    shape [B, S] (FLAME: S=300, unit-variance PCA coefficients), expression [B, E] (E=100), global_rotation,
    neck_rotation, jaw_rotation, left_eye_rotation, right_eye_rotation [B, 3] each, eyelids [B, 2] (left, right
    upper-eyelid closure, 0 open .. 1 closed; used only by models with eyelid blendshapes), translation [B, 3]
    metres. "Left" is the subject's left (+x).
    """

    shape: Tensor
    expression: Tensor
    global_rotation: Tensor
    neck_rotation: Tensor
    jaw_rotation: Tensor
    left_eye_rotation: Tensor
    right_eye_rotation: Tensor
    eyelids: Tensor
    translation: Tensor

    def __post_init__(self) -> None:
        B = self.shape.shape[0]
        for f in fields(self):
            t = getattr(self, f.name)
            if not isinstance(t, Tensor) or t.ndim != 2 or t.shape[0] != B:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"FlameParams.{f.name}: expected a [B={B}, D] tensor, got {got}")
        for name in (*ROTATION_FIELDS, "translation"):
            if getattr(self, name).shape[1] != 3:
                raise ValueError(
                    f"FlameParams.{name}: expected [B, 3], got {tuple(getattr(self, name).shape)}"
                )
        if self.eyelids.shape[1] != 2:
            raise ValueError(f"FlameParams.eyelids: expected [B, 2], got {tuple(self.eyelids.shape)}")

    # ----------------------------------------------------------------------------------------------- builders
    @classmethod
    def zeros(
        cls,
        batch_size: int = 1,
        n_shape: int = 300,
        n_expression: int = 100,
        *,
        device=None,
        dtype=torch.float32,
    ) -> FlameParams:
        """The neutral head: all parameters zero."""

        def z(d: int) -> Tensor:
            return torch.zeros(batch_size, d, device=device, dtype=dtype)

        return cls(z(n_shape), z(n_expression), z(3), z(3), z(3), z(3), z(3), z(2), z(3))

    @classmethod
    def random(
        cls,
        batch_size: int = 1,
        n_shape: int = 300,
        n_expression: int = 100,
        *,
        shape_std: float = 1.0,
        expression_std: float = 1.0,
        rotation_std: float = 0.2,
        generator: torch.Generator | None = None,
        device=None,
        dtype=torch.float32,
    ) -> FlameParams:
        """Random parameters for tests and synthetic data (Gaussian; the jaw only opens; translation zero)."""

        def n(d: int, std: float) -> Tensor:
            return torch.randn(batch_size, d, generator=generator, dtype=dtype).to(device) * std

        jaw = n(3, rotation_std)
        jaw[:, 0] = jaw[:, 0].abs()  # positive rotation about x opens the mouth
        jaw[:, 1:] *= 0.1
        eyelids = torch.rand(batch_size, 2, generator=generator, dtype=dtype).to(device) * 0.5
        return cls(
            n(n_shape, shape_std),
            n(n_expression, expression_std),
            n(3, rotation_std),
            n(3, rotation_std * 0.5),
            jaw,
            n(3, rotation_std),
            n(3, rotation_std),
            eyelids,
            torch.zeros(batch_size, 3, dtype=dtype, device=device),
        )

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    @property
    def device(self) -> torch.device:
        return self.shape.device

    def to(self, *args: Any, **kwargs: Any) -> FlameParams:
        return self.apply(lambda t: t.to(*args, **kwargs))

    def detach(self) -> FlameParams:
        return self.apply(Tensor.detach)

    def apply(self, fn) -> FlameParams:
        """A new container with `fn` applied to every tensor."""
        return type(self)(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def __getitem__(self, idx) -> FlameParams:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return self.apply(lambda t: t[idx])

    def replace(self, **changes: Tensor) -> FlameParams:
        """A copy with some fields replaced, e.g. ``p.replace(expression=torch.zeros_like(p.expression))``."""
        d = self.to_dict()
        d.update(changes)
        return type(self)(**d)

    @classmethod
    def cat(cls, items: list[FlameParams]) -> FlameParams:
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(cls)})

    def to_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.to_dict().items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, device=None, dtype=torch.float32) -> FlameParams:
        """From a dict of arrays/tensors with this class's field names (e.g. an npz written by `to_numpy`)."""
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise KeyError(f"FlameParams.from_dict: missing {missing}")
        return cls(
            **{
                f.name: torch.as_tensor(np.asarray(d[f.name]), dtype=dtype, device=device)
                for f in fields(cls)
            }
        )


@dataclass
class FlameOutput:
    """What :class:`~headrecon.flame.model.FlameModel` returns (metres, FLAME world frame).

    vertices [B, V, 3]; joints [B, 5, 3] (global, neck, jaw, left eye, right eye);
    landmarks68 [B, 68, 3] in iBUG order (0-16 the pose-dependent jaw contour, 17-67 static), None when the model
    has no dynamic (contour) embedding; landmarks51 [B, 51, 3] the static ones (iBUG 17..67), None without a
    landmark embedding; landmarks_now7 [B, 7, 3] the NoW landmarks (see ``NOW_LANDMARK_INDICES``).
    """

    vertices: Tensor
    joints: Tensor
    landmarks68: Tensor | None = None
    landmarks51: Tensor | None = None
    landmarks_now7: Tensor | None = None
