"""Mesh-only rendering: the ablation of the Gaussian head (a textured FLAME mesh instead of surfels).

The same identity -> UV map path as :class:`~headrecon.gaussians.head.GaussianHead`, but the UV map becomes an
albedo texture on the posed mesh itself, rendered by the mesh rasteriser:

    M = UVMapGenerator(identity [, DINOv2 tokens])                  [B, C, S, S] UV feature map
    albedo texture = sigmoid(conv1x1(M) + canonical logits)          [B, 3, S, S]
    rgb = albedo(uv) * SH-irradiance(SH(lighting latent), mesh normal), composited over the background

It answers "what do the Gaussians buy?" with everything else equal (estimator, UV generator, lighting map,
losses). What it cannot do, by construction: move anything off the mesh surface (no offsets, no hair or mouth
interior beyond FLAME's surface) and pass gradients through the silhouette (the rasteriser's visibility is
discrete, see `headrecon.render.mesh_raster`); normal and depth consistency are identically zero (the render is
the mesh).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headrecon.gaussians.head import LightingMap
from headrecon.nets.uv_generator import UVMapGenerator
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import MeshFragments, render_mesh

__all__ = ["MeshImage", "TexturedMeshHead", "TexturedMeshOutput"]


@dataclass
class TexturedMeshOutput:
    """albedo: [B, 3, S, S] albedo texture in [0, 1] (row 0 is v = 1); uv_features: M [B, C, S, S];
    sh_coeffs: [B, 9, 3] radiance SH coefficients."""

    albedo: Tensor
    uv_features: Tensor
    sh_coeffs: Tensor


@dataclass
class MeshImage:
    """A mesh render under the field names of :class:`~headrecon.render.surfels.SurfelRender`, so that losses,
    metrics and image logging treat both renderers alike.

    Attributes:
        colors: [B, H, W, 3] RGB in [0, 1], composited over the background.
        alphas: [B, H, W, 1] 1 on the mesh, 0 elsewhere (no gradient: visibility is discrete).
        depth_expected: [B, H, W, 1] camera z in metres, 0 on background.
        normals: [B, H, W, 3] unit world-space normals of the visible surface, 0 on background.
        fragments: the rasteriser's `MeshFragments`.
    """

    colors: Tensor
    alphas: Tensor
    depth_expected: Tensor
    normals: Tensor
    fragments: MeshFragments


class TexturedMeshHead(nn.Module):
    """UV generator + a per-texel albedo texture + SH lighting on the FLAME mesh (see the module docstring).

    Args:
        faces [F, 3], uvs [Vt, 2], uv_faces [F, 3]: FLAME's topology and UV layout.
        latent_dim: identity feature size (the estimator's); uv_channels: C of M.
        lighting_dim: the estimator's lighting latent size.
        use_dino, dino_dim: cross-attention to DINOv2 tokens in the UV generator.
        uv_generator_kwargs: further arguments of `UVMapGenerator` (its output size S is the texture's).
        canonical_texture: a learned albedo-logit texture shared by all identities, added to the identity's
            (the mesh counterpart of the Gaussian head's `embedding_albedo`); off: the texture comes from M only.
    """

    faces: Tensor
    uvs: Tensor
    uv_faces: Tensor

    def __init__(
        self,
        faces: Tensor,
        uvs: Tensor,
        uv_faces: Tensor,
        *,
        latent_dim: int = 1024,
        uv_channels: int = 32,
        lighting_dim: int = 27,
        use_dino: bool = True,
        dino_dim: int = 384,
        uv_generator_kwargs: dict | None = None,
        canonical_texture: bool = True,
    ) -> None:
        super().__init__()
        self.register_buffer("faces", torch.as_tensor(faces, dtype=torch.long), persistent=False)
        self.register_buffer("uvs", torch.as_tensor(uvs, dtype=torch.float32), persistent=False)
        self.register_buffer("uv_faces", torch.as_tensor(uv_faces, dtype=torch.long), persistent=False)
        self.uv_generator = UVMapGenerator(latent_dim=latent_dim, out_channels=uv_channels, use_dino=use_dino,
                                           dino_dim=dino_dim, **(uv_generator_kwargs or {}))  # fmt: skip
        self.to_albedo = nn.Conv2d(uv_channels, 3, kernel_size=1)
        size = self.uv_generator.output_size
        self.canonical_logits = nn.Parameter(torch.zeros(1, 3, size, size)) if canonical_texture else None
        self.lighting_map = LightingMap(lighting_dim)

    def forward(
        self, identity: Tensor, lighting: Tensor, dino_tokens: Tensor | None = None
    ) -> TexturedMeshOutput:
        """identity [B, latent_dim] (source image), lighting [B, lighting_dim] (target), dino_tokens [B, T, D]
        (source; when `use_dino`)."""
        M = self.uv_generator(identity, dino_tokens)
        logits = self.to_albedo(M)
        if self.canonical_logits is not None:
            logits = logits + self.canonical_logits.to(logits.dtype)
        return TexturedMeshOutput(torch.sigmoid(logits), M, self.lighting_map(lighting))

    def render(
        self, out: TexturedMeshOutput, vertices: Tensor, cameras: Cameras, background: Tensor
    ) -> MeshImage:
        """Render `out` on the posed mesh: vertices [B, V, 3] (metres), B cameras, background [B, 3]."""
        r = render_mesh(vertices, self.faces, cameras, texture=out.albedo, uvs=self.uvs.to(vertices.dtype),
                        uv_faces=self.uv_faces, sh_coeffs=out.sh_coeffs, background=background)  # fmt: skip
        return MeshImage(r.rgb, r.alpha[..., None], r.depth[..., None], r.normals, r.fragments)
