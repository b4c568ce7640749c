"""(source, target) frame pairs of the same subject, drawn deterministically from (seed, epoch, index).

A draw picks a dataset by its mix weight, then a subject of that dataset uniformly, then two different frames
of that subject: uniformly over all its frames (``same_clip=False``), or inside one clip chosen with probability
proportional to its frame count (``same_clip=True``; then every frame of the subject is equally likely as the
source, as in the other mode). Every draw has its own random generator seeded by
``(seed, epoch, index, attempt)``, so a pair does not depend on which worker draws it or in which order, and a
replacement for a pair whose frame failed to load is simply ``attempt + 1``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from headrecon.data.layout import ClipInfo

__all__ = ["FrameRef", "Pair", "PairSampler", "split_subjects", "match_subjects"]

log = logging.getLogger(__name__)


class FrameRef(NamedTuple):
    """A frame: index of its clip in :attr:`PairSampler.clips` and the frame's index in that clip."""

    clip: int
    frame: int


class Pair(NamedTuple):
    source: FrameRef
    target: FrameRef


@dataclass
class _Subject:
    key: str
    clips: list[int]  # indices into PairSampler.clips
    cum_frames: np.ndarray  # [n_clips] cumulative frame counts over `clips`
    pair_clips: list[int]  # clips with >= 2 frames (same-clip mode)
    pair_cum: np.ndarray


def match_subjects(names: Sequence[str], clips: Sequence[ClipInfo]) -> set[str]:
    """Resolve eval-subject names (``"dataset/subject"`` or a bare ``"subject"``) to subject keys.

    A bare name matches that subject in every dataset. Raises ``ValueError`` listing each unknown name with the
    closest existing subject names.
    """
    keys = sorted({c.subject_key for c in clips})
    bare: dict[str, list[str]] = {}
    for k in keys:
        bare.setdefault(k.split("/", 1)[1], []).append(k)
    out: set[str] = set()
    unknown: list[str] = []
    for name in names:
        name = str(name).strip().strip("/")
        if name in keys:
            out.add(name)
        elif name in bare:
            out.update(bare[name])
        else:
            unknown.append(name)
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, keys + sorted(bare), n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            lines.append(f"  {name!r}{hint}")
        raise ValueError(
            f"unknown evaluation subject(s) (known: {len(keys)} subjects, named 'dataset/subject' or "
            "'subject'):\n" + "\n".join(lines)
        )
    return out


def split_subjects(
    clips: Sequence[ClipInfo], eval_subjects: Sequence[str] | None
) -> tuple[list[ClipInfo], list[ClipInfo]]:
    """Split clips into (train, eval) by subject; unknown eval names raise (see :func:`match_subjects`)."""
    held = match_subjects(list(eval_subjects or []), clips)
    train = [c for c in clips if c.subject_key not in held]
    evals = [c for c in clips if c.subject_key in held]
    return train, evals


class PairSampler:
    """Draws (source, target) frames of one subject; see the module docstring.

    Args:
        clips: the clips to draw from (their order defines :class:`FrameRef` ``.clip``).
        mix: dataset name -> weight (normalised here; 0 disables a dataset). None: equal weights for every
            dataset present. Naming a dataset without any usable subject raises ``ValueError``; datasets
            present but absent from `mix` are not drawn (a warning says so).
        same_clip: draw both frames from one clip (else from any clips of the subject).
        seed: base seed.

    Subjects without two frames to pair (in one clip when `same_clip`) are left out and listed in
    :attr:`dropped`.
    """

    def __init__(
        self,
        clips: Sequence[ClipInfo],
        mix: Mapping[str, float] | None = None,
        *,
        same_clip: bool = False,
        seed: int = 0,
    ) -> None:
        self.clips = list(clips)
        self.same_clip = same_clip
        self.seed = int(seed)
        by_subject: dict[str, list[int]] = {}
        for i, c in enumerate(self.clips):
            by_subject.setdefault(c.subject_key, []).append(i)
        self.subjects: dict[str, list[_Subject]] = {}
        self.dropped: list[str] = []
        for key in sorted(by_subject):
            idx = by_subject[key]
            counts = np.array([self.clips[i].num_frames for i in idx])
            pair_clips = [i for i in idx if self.clips[i].num_frames >= 2]
            usable = bool(pair_clips) if same_clip else counts.sum() >= 2
            if not usable:
                self.dropped.append(key)
                continue
            subj = _Subject(key, idx, np.cumsum(counts), pair_clips,
                            np.cumsum([self.clips[i].num_frames for i in pair_clips]))  # fmt: skip
            self.subjects.setdefault(key.split("/", 1)[0], []).append(subj)
        if self.dropped:
            log.warning("pair sampler: %d subject(s) without two frames to pair are left out: %s",
                        len(self.dropped), ", ".join(self.dropped[:10]))  # fmt: skip
        present = sorted(self.subjects)
        if mix is None:
            weights = {d: 1.0 for d in present}
        else:
            weights = {str(k): float(v) for k, v in mix.items()}
            bad = [k for k, v in weights.items() if v < 0 or not np.isfinite(v)]
            if bad:
                raise ValueError(f"mix weights must be finite and >= 0: {bad}")
            missing = [k for k, v in weights.items() if v > 0 and k not in self.subjects]
            if missing:
                raise ValueError(f"mix names dataset(s) {missing} with no usable subject; datasets with data: "
                                 f"{present}")  # fmt: skip
            ignored = [d for d in present if d not in weights]
            if ignored:
                log.warning("pair sampler: dataset(s) %s are not in the mix and will not be drawn", ignored)
        self.datasets = [d for d in present if weights.get(d, 0.0) > 0]
        total = sum(weights[d] for d in self.datasets)
        if not self.datasets or total <= 0:
            raise ValueError(f"no subject to draw pairs from (datasets with data: {present}, mix: {mix})")
        self.weights = np.array([weights[d] / total for d in self.datasets])
        self.subject_list = [s for d in self.datasets for s in self.subjects[d]]

    @property
    def num_subjects(self) -> int:
        return len(self.subject_list)

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *(int(k) for k in keys)])

    def _pair_in(self, subj: _Subject, rng: np.random.Generator) -> Pair:
        if self.same_clip:
            n = int(subj.pair_cum[-1])
            flat = int(rng.integers(n))
            k = int(np.searchsorted(subj.pair_cum, flat, side="right"))
            clip = subj.pair_clips[k]
            T = self.clips[clip].num_frames
            s = flat - (int(subj.pair_cum[k - 1]) if k else 0)
            t = int(rng.integers(T - 1))
            t += t >= s
            return Pair(FrameRef(clip, s), FrameRef(clip, t))
        n = int(subj.cum_frames[-1])
        s = int(rng.integers(n))
        t = int(rng.integers(n - 1))
        t += t >= s
        return Pair(self._locate(subj, s), self._locate(subj, t))

    def _locate(self, subj: _Subject, flat: int) -> FrameRef:
        k = int(np.searchsorted(subj.cum_frames, flat, side="right"))
        return FrameRef(subj.clips[k], flat - (int(subj.cum_frames[k - 1]) if k else 0))

    def pair(self, epoch: int, index: int, attempt: int = 0) -> Pair:
        """The `index`-th pair of `epoch` (its `attempt`-th replacement when > 0). Deterministic."""
        rng = self._rng(epoch, index, attempt)
        d = int(rng.choice(len(self.datasets), p=self.weights))
        subjects = self.subjects[self.datasets[d]]
        return self._pair_in(subjects[int(rng.integers(len(subjects)))], rng)

    def subject_pair(self, subject: int, index: int, attempt: int = 0) -> Pair:
        """A pair of subject number `subject` (in :attr:`subject_list` order), deterministic in
        (seed, subject, index, attempt). Used for validation, which cycles through the subjects."""
        rng = self._rng(1 << 30, subject, index, attempt)
        return self._pair_in(self.subject_list[subject], rng)

    def cyclic_pairs(self, n: int) -> list[tuple[int, int]]:
        """(subject, index) keys of `n` validation pairs cycling through every subject."""
        return [(i % self.num_subjects, i // self.num_subjects) for i in range(n)]
