"""The canonical Gaussian set: which triangle each Gaussian lives on, where, and its learnable embedding.

Every Gaussian has a parent face (`face_ids` [N]), barycentric coordinates (`bary` [N, 3]), a learnable
embedding (`embeddings` [N, D]) and a unique id (`uids` [N], never reused) by which running statistics and
optimiser state follow it through densification. Its UV coordinate is derived from the face's UV corners.

The set changes size during training. Every edit installs a NEW `embeddings` parameter (resizing a parameter in
place through `.data` would leave autograd's cached gradient accumulator with the old shape); optimisers are
updated with :func:`~headrecon.gaussians.densify.remap_optimizer_state`. The set is part of the module's state
dict and restored exactly: loading a state dict with another N resizes the buffers and the parameter first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CanonicalGaussians", "initial_barycentrics"]


def _halton(i: Tensor, base: int) -> Tensor:
    """Radical inverse of integers i [n] in `base` (float64 in [0, 1))."""
    out = torch.zeros(i.shape, dtype=torch.float64)
    f = 1.0
    i = i.clone()
    while bool((i > 0).any()):
        f /= base
        out += f * (i % base)
        i = i // base
    return out


def initial_barycentrics(k: int) -> Tensor:
    """k well-spread barycentric points [k, 3] inside a triangle (k = 1: the centroid).

    A Halton (2, 3) sequence warped uniformly onto the triangle, deterministic for every k.
    """
    if k < 1:
        raise ValueError(f"need at least one Gaussian per face, got {k}")
    if k == 1:
        return torch.full((1, 3), 1.0 / 3.0, dtype=torch.float64)
    idx = torch.arange(1, k + 1)
    r1, r2 = _halton(idx, 2), _halton(idx, 3)
    s = r1.sqrt()
    return torch.stack([1 - s, s * (1 - r2), s * r2], dim=-1)


class CanonicalGaussians(nn.Module):
    """Canonical Gaussians on a mesh with `num_faces` faces, `per_face` of them on every face initially.

    Buffers (saved in checkpoints): face_ids [N] long, bary [N, 3], uids [N] long, next_uid [] long.
    Parameter: embeddings [N, embed_dim], initialised N(0, embed_init_std^2) from `seed`.
    """

    face_ids: Tensor
    bary: Tensor
    uids: Tensor
    next_uid: Tensor

    def __init__(
        self,
        num_faces: int,
        per_face: int = 2,
        embed_dim: int = 32,
        *,
        embed_init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_faces = num_faces
        self.embed_dim = embed_dim
        b = initial_barycentrics(per_face).float()
        face_ids = torch.arange(num_faces).repeat_interleave(per_face)
        n = face_ids.numel()
        self.register_buffer("face_ids", face_ids)
        self.register_buffer("bary", b.repeat(num_faces, 1))
        self.register_buffer("uids", torch.arange(n))
        self.register_buffer("next_uid", torch.tensor(n))
        g = torch.Generator().manual_seed(seed)
        self.embeddings = nn.Parameter(torch.randn(n, embed_dim, generator=g) * embed_init_std)

    def __len__(self) -> int:
        return self.face_ids.numel()

    @property
    def num_gaussians(self) -> int:
        return len(self)

    def per_face_counts(self) -> Tensor:
        """[num_faces] number of Gaussians on each face."""
        return torch.bincount(self.face_ids, minlength=self.num_faces)

    def uv(self, uvs: Tensor, uv_faces: Tensor) -> Tensor:
        """UV coordinates [N, 2] of the Gaussians, from the mesh's uvs [Vt, 2] and uv_faces [F, 3]."""
        corners = uvs[uv_faces[self.face_ids]]  # [N, 3, 2]
        return (corners * self.bary[:, :, None].to(uvs.dtype)).sum(dim=1)

    # ---------------------------------------------------------------------------------------------- editing
    @torch.no_grad()
    def edit_(self, keep: Tensor, parents: Tensor, new_bary: Tensor, new_embeddings: Tensor) -> Tensor:
        """Keep the rows `keep` [K] (in order) and append M new Gaussians after them.

        parents [M]: row each new Gaussian was copied from (it inherits the parent's face); new_bary [M, 3];
        new_embeddings [M, D]. Returns `source` [K + M]: for every row of the new set, the old row it continues
        (-1 for new Gaussians), which callers use to carry statistics and optimiser state. `embeddings` is a new
        parameter afterwards: hand the old one to `remap_optimizer_state`.
        """
        m = parents.numel()
        dev = self.face_ids.device
        self.face_ids = torch.cat([self.face_ids[keep], self.face_ids[parents]])
        self.bary = torch.cat([self.bary[keep], new_bary.to(self.bary)])
        new_uids = self.next_uid + torch.arange(m, device=dev)
        self.uids = torch.cat([self.uids[keep], new_uids])
        self.next_uid = self.next_uid + m
        old = self.embeddings
        self.embeddings = nn.Parameter(torch.cat([old.data[keep], new_embeddings.to(old)]), old.requires_grad)
        return torch.cat([keep, torch.full((m,), -1, device=dev, dtype=torch.long)])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:  # fmt: skip
        key = prefix + "face_ids"
        if key in state_dict and state_dict[key].numel() != self.face_ids.numel():
            n = state_dict[key].numel()  # resize before loading (the set was densified/pruned)
            dev = self.face_ids.device
            self.face_ids = torch.zeros(n, dtype=torch.long, device=dev)
            self.bary = torch.zeros(n, 3, dtype=self.bary.dtype, device=dev)
            self.uids = torch.zeros(n, dtype=torch.long, device=dev)
            self.embeddings = nn.Parameter(self.embeddings.data.new_zeros(n, self.embed_dim),
                                           self.embeddings.requires_grad)  # fmt: skip
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)  # fmt: skip

    def extra_repr(self) -> str:
        counts = self.per_face_counts()
        return (
            f"gaussians={len(self)}, faces={self.num_faces}, embed_dim={self.embed_dim}, "
            f"per_face=[{int(counts.min())}, {int(counts.max())}], mean={len(self) / max(1, self.num_faces):.2f}"
        )
