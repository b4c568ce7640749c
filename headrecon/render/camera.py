"""Batched pinhole cameras in the OpenCV convention.

Camera space: x right, y down, z forward (looking along +z). Image space: pixel (row i, column j) covers
[j, j+1) x [i, i+1) and its centre is at (j + 0.5, i + 0.5), as in gsplat. World space is FLAME's: x to the
subject's left, y up, z out of the face towards the viewer; units are metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["Cameras", "look_at_world_to_cam", "intrinsics_from_fov"]

# FLAME world (y up, z towards viewer) to OpenCV camera axes (y down, z forward): a rotation of pi about x.
_FLIP_YZ = (1.0, -1.0, -1.0)


def intrinsics_from_fov(
    fov_y_deg: float, width: int, height: int, *, device=None, dtype=torch.float32
) -> Tensor:
    """Intrinsics [3, 3] in pixels for a vertical field of view, square pixels, principal point at the centre."""
    if not 0.0 < fov_y_deg < 180.0:
        raise ValueError(f"vertical field of view must lie in (0, 180) degrees, got {fov_y_deg}")
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return torch.tensor(
        [[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], device=device, dtype=dtype
    )


def look_at_world_to_cam(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World-to-camera matrices [B, 4, 4] (OpenCV axes) for cameras at `eye` [B, 3] looking at `target` [B, 3].

    `up` [B, 3] is the world direction that appears upwards in the image (default +y, FLAME's up).
    """
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], device=eye.device, dtype=eye.dtype).expand_as(eye)
    z = torch.nn.functional.normalize(target - eye, dim=-1)  # forward
    x = torch.nn.functional.normalize(torch.cross(z, up, dim=-1), dim=-1)  # right: x = y_down x z = z x up
    y = torch.cross(z, x, dim=-1)  # down
    R = torch.stack([x, y, z], dim=-2)  # rows are camera axes in world coordinates
    t = -(R @ eye.unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(eye.shape[0], 4, 4, device=eye.device, dtype=eye.dtype)
    out[:, :3, :3] = R
    out[:, :3, 3] = t
    out[:, 3, 3] = 1.0
    return out


@dataclass
class Cameras:
    """B pinhole cameras sharing one image size.

    Attributes:
        K: [B, 3, 3] intrinsics in pixels.
        world_to_cam: [B, 4, 4] rigid world-to-camera transforms (OpenCV axes), the `viewmats` of gsplat.
        width, height: image size in pixels.
    """

    K: Tensor
    world_to_cam: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.K.ndim != 3 or self.K.shape[-2:] != (3, 3):
            raise ValueError(f"Cameras.K must be [B, 3, 3], got {tuple(self.K.shape)}")
        if self.world_to_cam.ndim != 3 or self.world_to_cam.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras.world_to_cam must be [B, 4, 4], got {tuple(self.world_to_cam.shape)}")
        if self.K.shape[0] != self.world_to_cam.shape[0]:
            raise ValueError(
                f"Cameras: K has batch {self.K.shape[0]} but world_to_cam has {self.world_to_cam.shape[0]}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras: image size must be positive, got {self.width}x{self.height}")

    # ----------------------------------------------------------------------------------------------- builders
    @classmethod
    def sheap_default(
        cls,
        batch_size: int = 1,
        width: int = 224,
        height: int = 224,
        *,
        fov_y_deg: float = 14.25,
        distance: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Cameras:
        """The camera of the released SHeaP models: vertical FOV 14.25 deg, `distance` metres in front of the
        origin on FLAME's +z axis, looking at the origin. Head motion is carried by the FLAME translation."""
        K = intrinsics_from_fov(fov_y_deg, width, height, device=device, dtype=dtype)
        w2c = torch.eye(4, device=device, dtype=dtype)
        w2c[:3, :3] = torch.diag(torch.tensor(_FLIP_YZ, device=device, dtype=dtype))
        w2c[2, 3] = distance
        return cls(K.expand(batch_size, 3, 3).clone(), w2c.expand(batch_size, 4, 4).clone(), width, height)

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def batch_size(self) -> int:
        return self.K.shape[0]

    def __len__(self) -> int:
        return self.batch_size

    @property
    def device(self) -> torch.device:
        return self.K.device

    def to(self, *args, **kwargs) -> Cameras:
        return replace(self, K=self.K.to(*args, **kwargs), world_to_cam=self.world_to_cam.to(*args, **kwargs))

    def __getitem__(self, idx) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return replace(self, K=self.K[idx], world_to_cam=self.world_to_cam[idx])

    def resized(self, width: int, height: int) -> Cameras:
        """Same cameras at another resolution (intrinsics scaled with the image)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.clone()
        K[:, 0] *= sx
        K[:, 1] *= sy
        return replace(self, K=K, width=width, height=height)

    def world_to_camera(self, points: Tensor) -> Tensor:
        """[B, N, 3] world points to [B, N, 3] camera-space points (metres)."""
        R = self.world_to_cam[:, :3, :3]
        t = self.world_to_cam[:, :3, 3]
        return points @ R.transpose(-1, -2) + t.unsqueeze(-2)

    def camera_to_pixels(self, points_cam: Tensor) -> Tensor:
        """[B, N, 3] camera-space points to [B, N, 2] pixel coordinates (x right, y down)."""
        z = points_cam[..., 2:3]
        xy = points_cam[..., :2] / z
        fxy = torch.stack([self.K[:, 0, 0], self.K[:, 1, 1]], dim=-1).unsqueeze(-2)
        cxy = torch.stack([self.K[:, 0, 2], self.K[:, 1, 2]], dim=-1).unsqueeze(-2)
        return xy * fxy + cxy

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """[B, N, 3] world points to pixel coordinates [B, N, 2] and camera depth z [B, N] (metres)."""
        pc = self.world_to_camera(points)
        return self.camera_to_pixels(pc), pc[..., 2]

    def camera_centres(self) -> Tensor:
        """[B, 3] camera centres in world coordinates."""
        R = self.world_to_cam[:, :3, :3]
        t = self.world_to_cam[:, :3, 3]
        return -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)

    def pixel_rays(self) -> tuple[Tensor, Tensor]:
        """Rays through pixel centres: origins [B, 3] and unit world directions [B, H, W, 3]."""
        B, H, W = self.batch_size, self.height, self.width
        dev, dt = self.K.device, self.K.dtype
        ys, xs = torch.meshgrid(
            torch.arange(H, device=dev, dtype=dt) + 0.5,
            torch.arange(W, device=dev, dtype=dt) + 0.5,
            indexing="ij",
        )
        pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)  # [1, HW, 3]
        d_cam = pix @ torch.linalg.inv(self.K).transpose(-1, -2)  # [B, HW, 3] with z = 1
        R = self.world_to_cam[:, :3, :3]
        d_world = torch.nn.functional.normalize(d_cam @ R, dim=-1)  # R^T d for row vectors
        return self.camera_centres(), d_world.reshape(B, H, W, 3)
