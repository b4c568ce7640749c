"""The Gaussian head: from a source image's identity features to surfels rigged to a posed FLAME mesh.

    M = UVMapGenerator(identity [, DINOv2 tokens])                  [B, C, S, S] UV feature map
    x_i = embedding_i ++ M(uv_i)                                     per canonical Gaussian i
    offsets, rotations, scales, albedo, opacity = GCN(x, graph)      local to the parent triangle
        (with `embedding_albedo`: albedo logits + embedding_i[:3])
    surfels = bind_to_mesh(posed vertices, ...)                      world means, rotations, scales, normals
    colour_i = albedo_i * SH-irradiance(SH(lighting latent), normal_i)

The graph links Gaussians on the same face and on faces up to `k_ring` rings apart; it is rebuilt (and cached)
whenever the canonical set changes size or content (densify/prune).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headrecon.flame.topology import k_ring_face_neighbours
from headrecon.gaussians.binding import BoundGaussians, bind_to_mesh
from headrecon.gaussians.canonical import CanonicalGaussians
from headrecon.nets.gcn import GaussianAttributes, GaussianGCN, gaussian_graph, gcn_inputs
from headrecon.nets.uv_generator import UVMapGenerator
from headrecon.render.sh import default_sh_coeffs, sh_irradiance
from headrecon.render.surfels import Surfels

__all__ = ["GaussianHead", "GaussianHeadOutput", "LightingMap"]


class LightingMap(nn.Module):
    """Learned map from the estimator's lighting latent [B, L] to order-2 SH coefficients [B, 9, 3].

    Initialised to the default light (`default_sh_coeffs`) plus a small linear term, so training starts lit.
    """

    def __init__(self, lighting_dim: int = 27, init_std: float = 1e-3) -> None:
        super().__init__()
        self.linear = nn.Linear(lighting_dim, 27)
        nn.init.normal_(self.linear.weight, std=init_std)
        with torch.no_grad():
            self.linear.bias.copy_(default_sh_coeffs(1)[0].reshape(27))

    def forward(self, lighting: Tensor) -> Tensor:
        return self.linear(lighting).view(-1, 9, 3)


@dataclass
class GaussianHeadOutput:
    """surfels: world-space surfels with RGB features [B, N, 3]; attributes: the GCN's local outputs;
    bound: world means/rotations/scales/normals; uv_features: M [B, C, S, S]; sh_coeffs [B, 9, 3]."""

    surfels: Surfels
    attributes: GaussianAttributes
    bound: BoundGaussians
    uv_features: Tensor
    sh_coeffs: Tensor


class GaussianHead(nn.Module):
    """Canonical Gaussians + UV generator + GCN + binding + SH shading (see the module docstring).

    Args:
        faces [F, 3], uvs [Vt, 2], uv_faces [F, 3]: FLAME's topology and UV layout.
        per_face: initial Gaussians per face; embed_dim: canonical embedding size.
        latent_dim: identity feature size (the estimator's, 1024); uv_channels: C of M.
        lighting_dim: the estimator's lighting latent size.
        use_dino, dino_dim: cross-attention to DINOv2 tokens in the UV generator.
        gcn_hidden, gcn_blocks: GCN width and residual blocks (paper: 4).
        k_ring, k_ring_by: the graph links Gaussians whose faces are within `k_ring` rings, rings grown across
            shared edges ("edge", ~19 neighbour faces at k=2 on FLAME) or shared vertices ("vertex", ~76).
        uv_generator_kwargs / gcn_kwargs: further arguments of `UVMapGenerator` / `GaussianGCN`.
        embedding_albedo: our addition, off by default (the paper's head): the first 3 channels of each canonical
            embedding are also added to that Gaussian's albedo logits, a per-Gaussian colour shared by all
            identities that the optimiser moves directly. Through the GCN alone the canonical texture takes far
            longer to appear (no eyes or lips after 300 CPU steps on ground-truth geometry; docs/results.md).
    """

    faces: Tensor
    uvs: Tensor
    uv_faces: Tensor
    face_neighbours: Tensor

    def __init__(
        self,
        faces: Tensor,
        uvs: Tensor,
        uv_faces: Tensor,
        *,
        per_face: int = 2,
        embed_dim: int = 32,
        latent_dim: int = 1024,
        uv_channels: int = 32,
        lighting_dim: int = 27,
        use_dino: bool = True,
        dino_dim: int = 384,
        gcn_hidden: int = 128,
        gcn_blocks: int = 4,
        k_ring: int = 2,
        k_ring_by: str = "edge",
        uv_generator_kwargs: dict | None = None,
        gcn_kwargs: dict | None = None,
        embedding_albedo: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        faces = torch.as_tensor(faces, dtype=torch.long)
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("uvs", torch.as_tensor(uvs, dtype=torch.float32), persistent=False)
        self.register_buffer("uv_faces", torch.as_tensor(uv_faces, dtype=torch.long), persistent=False)
        self.register_buffer(
            "face_neighbours", k_ring_face_neighbours(faces, k_ring, by=k_ring_by), persistent=False
        )
        self.canonical_gaussians = CanonicalGaussians(faces.shape[0], per_face, embed_dim, seed=seed)
        self.uv_generator = UVMapGenerator(latent_dim=latent_dim, out_channels=uv_channels, use_dino=use_dino,
                                           dino_dim=dino_dim, **(uv_generator_kwargs or {}))  # fmt: skip
        self.gcn = GaussianGCN(
            embed_dim + uv_channels, hidden=gcn_hidden, num_blocks=gcn_blocks, **(gcn_kwargs or {})
        )
        if embedding_albedo and embed_dim < 3:
            raise ValueError(f"embedding_albedo needs embed_dim >= 3, got {embed_dim}")
        self.embedding_albedo = embedding_albedo
        self.lighting_map = LightingMap(lighting_dim)
        self._graph_key: tuple[int, int, int] | None = None
        self._graph: Tensor | None = None

    def graph(self) -> Tensor:
        """edge_index [2, E] of the current canonical set (cached until the set changes)."""
        c = self.canonical_gaussians
        key = (len(c), int(c.next_uid), int(c.uids.sum()))
        if self._graph is None or key != self._graph_key or self._graph.device != c.face_ids.device:
            self._graph = gaussian_graph(c.face_ids, self.face_neighbours.to(c.face_ids.device), c.num_faces)
            self._graph_key = key
        return self._graph

    def forward(
        self, identity: Tensor, vertices: Tensor, lighting: Tensor, dino_tokens: Tensor | None = None
    ) -> GaussianHeadOutput:
        """identity [B, latent_dim] (source image), vertices [B, V, 3] (target pose, metres), lighting
        [B, lighting_dim] (target), dino_tokens [B, T, D] (source; when `use_dino`)."""
        c = self.canonical_gaussians
        M = self.uv_generator(identity, dino_tokens)
        uv = c.uv(self.uvs, self.uv_faces).to(M.dtype)
        albedo_bias = c.embeddings[:, :3] if self.embedding_albedo else None
        attrs = self.gcn(gcn_inputs(c.embeddings, M, uv), self.graph(), albedo_bias)
        bound = bind_to_mesh(vertices, self.faces, c.face_ids, c.bary.to(vertices.dtype), attrs.offsets,
                             attrs.rotations, attrs.scales)  # fmt: skip
        sh = self.lighting_map(lighting)
        colours = attrs.albedo * sh_irradiance(bound.normals, sh).clamp_min(0.0)
        surfels = Surfels(bound.means, bound.quats, bound.scales, attrs.opacities, colours)
        return GaussianHeadOutput(surfels, attrs, bound, M, sh)
