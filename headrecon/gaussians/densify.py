"""Densify / prune rules for the canonical Gaussian set (SHeaP's t_densify, n_prune, n_densify, t_history).

Our reading of the supplementary's numbers (t_densify = 1, n_prune = 1, n_densify = 1, t_history = 256):

* every `t_densify` steps, the `n_prune` Gaussians with the lowest running mean opacity are removed and the
  `n_densify` with the highest running mean screen-space position gradient are duplicated (same face, jittered
  barycentric, embedding plus noise);
* running statistics cover the last `t_history` steps (an exact sliding window per Gaussian, not an EMA);
* every face keeps between `min_per_face` (1) and `max_per_face` (6) Gaussians: a Gaussian is not pruned if it is
  the last one its face may keep, and not duplicated if its face is full;
* a Gaussian is not judged (neither pruned nor duplicated) before it has `min_observations` steps of statistics
  of its own (new Gaussians start with none);
* ties are broken by the Gaussians' unique ids, so decisions are deterministic.

The statistics are per-step sums over the batch (and, under DDP, over ranks before they are pushed), so every rank
holds the same window and takes the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headrecon.gaussians.canonical import CanonicalGaussians

__all__ = [
    "densify_signal",
    "DensifyStatistics",
    "DensifyDecision",
    "choose_edits",
    "apply_edits",
    "remap_optimizer_state",
]


def densify_signal(opacities: Tensor, means2d_grad: Tensor | None) -> tuple[Tensor, Tensor]:
    """One step's statistics per canonical Gaussian, summed over the batch.

    opacities [B, N] (predicted); means2d_grad [B, N, 2] (the renderer's `means2d_grad_handle.grad`, pixels) or
    None (no gradient this step: zeros). Returns (opacity_sum [N], grad_norm_sum [N]). Row i is canonical
    Gaussian i in every image, since all heads of a batch share the canonical set.
    """
    op = opacities.detach().sum(dim=0)
    if means2d_grad is None:
        return op, torch.zeros_like(op)
    return op, means2d_grad.detach().norm(dim=-1).sum(dim=0).to(op)


class DensifyStatistics(nn.Module):
    """Sliding-window statistics per Gaussian over the last `t_history` steps (saved in checkpoints).

    Buffers: opacity [N, T], grad [N, T], valid [N, T] bool, cursor [] long (next column to write).
    """

    opacity: Tensor
    grad: Tensor
    valid: Tensor
    cursor: Tensor

    def __init__(self, num_gaussians: int, t_history: int = 256) -> None:
        super().__init__()
        if t_history < 1:
            raise ValueError(f"t_history must be >= 1, got {t_history}")
        self.t_history = t_history
        self.register_buffer("opacity", torch.zeros(num_gaussians, t_history))
        self.register_buffer("grad", torch.zeros(num_gaussians, t_history))
        self.register_buffer("valid", torch.zeros(num_gaussians, t_history, dtype=torch.bool))
        self.register_buffer("cursor", torch.tensor(0))

    def __len__(self) -> int:
        return self.opacity.shape[0]

    @torch.no_grad()
    def push(self, opacity: Tensor, grad: Tensor) -> None:
        """Record one step: opacity [N] and gradient magnitude [N] (already summed over batch and ranks)."""
        if opacity.shape != (len(self),) or grad.shape != (len(self),):
            raise ValueError(
                f"expected [{len(self)}] statistics, got {tuple(opacity.shape)} and {tuple(grad.shape)}"
            )
        c = int(self.cursor)
        self.opacity[:, c] = opacity.to(self.opacity)
        self.grad[:, c] = grad.to(self.grad)
        self.valid[:, c] = True
        self.cursor.fill_((c + 1) % self.t_history)

    def observations(self) -> Tensor:
        """[N] number of steps in the window with statistics of this Gaussian."""
        return self.valid.sum(dim=1)

    def mean_opacity(self) -> Tensor:
        return (self.opacity * self.valid).sum(1) / self.observations().clamp_min(1)

    def mean_grad(self) -> Tensor:
        return (self.grad * self.valid).sum(1) / self.observations().clamp_min(1)

    @torch.no_grad()
    def remap_(self, source: Tensor) -> None:
        """Rows follow their Gaussians after an edit: source [N'] old row per new row, -1 = new (no statistics)."""
        old = source >= 0
        src = source.clamp_min(0)
        for name in ("opacity", "grad", "valid"):
            t = getattr(self, name)
            new = t[src].clone()
            new[~old] = 0
            setattr(self, name, new)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "opacity"
        if key in state_dict and state_dict[key].shape != self.opacity.shape:
            n, t = state_dict[key].shape
            self.t_history = t
            self.opacity = self.opacity.new_zeros(n, t)
            self.grad = self.grad.new_zeros(n, t)
            self.valid = self.valid.new_zeros(n, t)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@dataclass
class DensifyDecision:
    """Rows to remove (`prune` [P]) and rows to duplicate (`densify` [D]) of the current set."""

    prune: Tensor
    densify: Tensor


def choose_edits(
    mean_opacity: Tensor,
    mean_grad: Tensor,
    observations: Tensor,
    face_ids: Tensor,
    uids: Tensor,
    num_faces: int,
    *,
    n_prune: int = 1,
    n_densify: int = 1,
    min_per_face: int = 1,
    max_per_face: int = 6,
    min_observations: int = 1,
) -> DensifyDecision:
    """Pick the Gaussians to prune and to duplicate (see the module docstring). All inputs are [N]."""
    dev = face_ids.device
    counts = torch.bincount(face_ids, minlength=num_faces).clone()
    eligible = observations >= min_observations
    prune: list[int] = []
    if n_prune > 0:
        cand = torch.nonzero(eligible).squeeze(1)
        order = _lexsort(mean_opacity[cand], uids[cand], descending=False)
        for i in cand[order].tolist():
            if len(prune) == n_prune:
                break
            f = int(face_ids[i])
            if counts[f] > min_per_face:
                counts[f] -= 1
                prune.append(i)
    densify: list[int] = []
    if n_densify > 0:
        mask = eligible.clone()
        mask[prune] = False
        cand = torch.nonzero(mask).squeeze(1)
        order = _lexsort(mean_grad[cand], uids[cand], descending=True)
        for i in cand[order].tolist():
            if len(densify) == n_densify:
                break
            f = int(face_ids[i])
            if counts[f] < max_per_face:
                counts[f] += 1
                densify.append(i)
    as_t = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
    return DensifyDecision(as_t(prune), as_t(densify))


def _lexsort(values: Tensor, uids: Tensor, *, descending: bool) -> Tensor:
    """Order by value (ascending or descending), ties by ascending uid. Returns indices into `values`."""
    by_uid = torch.argsort(uids, stable=True)
    by_val = torch.argsort(values[by_uid], stable=True, descending=descending)
    return by_uid[by_val]


@torch.no_grad()
def apply_edits(
    canonical: CanonicalGaussians,
    stats: DensifyStatistics | None,
    decision: DensifyDecision,
    *,
    generator: torch.Generator,
    bary_jitter: float = 0.1,
    embedding_noise: float = 0.01,
    min_bary: float = 0.02,
) -> Tensor:
    """Apply a decision: remove pruned rows, append copies of the densified ones. Returns `source` (see
    :meth:`CanonicalGaussians.edit_`). New barycentrics: the parent's plus zero-sum Gaussian noise of std
    `bary_jitter`, clamped to >= `min_bary` and renormalised; new embeddings: the parent's plus noise of std
    `embedding_noise`. `generator` (CPU) must be seeded identically on every rank."""
    n = len(canonical)
    keep_mask = torch.ones(n, dtype=torch.bool, device=canonical.face_ids.device)
    keep_mask[decision.prune] = False
    keep = torch.nonzero(keep_mask).squeeze(1)
    parents = decision.densify
    m = parents.numel()
    noise = torch.randn(m, 3, generator=generator, dtype=torch.float64).to(canonical.bary)
    noise = (noise - noise.mean(dim=1, keepdim=True)) * bary_jitter
    b = (canonical.bary[parents] + noise).clamp_min(min_bary)
    b = b / b.sum(dim=1, keepdim=True)
    e_noise = torch.randn(m, canonical.embed_dim, generator=generator, dtype=torch.float64)
    emb = canonical.embeddings.data[parents] + e_noise.to(canonical.embeddings) * embedding_noise
    source = canonical.edit_(keep, parents, b, emb)
    if stats is not None:
        stats.remap_(source)
    return source


@torch.no_grad()
def remap_optimizer_state(
    optimizer: torch.optim.Optimizer, old_param: nn.Parameter, new_param: nn.Parameter, source: Tensor
) -> None:
    """Swap `old_param` for `new_param` in the optimiser after an edit, with per-row state following its rows.

    Rows with source >= 0 carry their state (e.g. Adam's exp_avg, exp_avg_sq); new rows (source = -1) start at
    zero. Scalar state (step) is kept. A no-op for optimisers that do not hold `old_param`.
    """
    found = False
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old_param:
                group["params"][i] = new_param
                found = True
    if not found:
        return
    state = optimizer.state.pop(old_param, None)
    if not state:
        return
    old_n = old_param.shape[0]
    keep = source >= 0
    src = source.clamp_min(0)
    for key, value in list(state.items()):
        if torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == old_n:
            new = value[src].clone()
            new[~keep] = 0
            state[key] = new
    optimizer.state[new_param] = state
