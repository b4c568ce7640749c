"""Identity stability through time (supplementary section 2, Figures 1 and 2).

    headrecon eval stability --ckpt GAUSSIAN_REGRESSOR_CKPT --videos DIR_OR_VIDEO... --out DIR

For every frame of every video: the estimator's shape code beta [n_shape] and the UV feature map
M [C, R, R] of the Gaussian regressor's UV generator, driven by that frame's identity features (and its DINOv2
tokens when the checkpoint was trained with them). SHeaP's claim is that both are nearly constant within a video
and differ between videos. Outputs, under ``--out``:

* ``pca/<video>.png`` (Figure 1): the input crops of ``image_frames`` evenly spaced frames (top row) over the
  first three principal components of their UV features as RGB (bottom row). The PCA is fitted to the
  C-dimensional feature vectors of *all texels of all frames of all videos* (the paper's "256 x 256 x 1000 UV
  feature vectors"), exactly, from the streamed C x C covariance (``torch.linalg.eigh``, equal to the SVD of the
  centred data); component i is mapped to a colour channel by ``0.5 + p_i / (5 sqrt(lambda_i))`` (+-2.5 standard
  deviations of the whole data span [0, 1]), so colours are comparable across videos. Only the first
  ``max_image_videos`` videos get an image (their frames' M are kept until the PCA is known).
* ``shape_coefficient_0.png`` (Figure 2): beta_0 against the frame index for the first ``plot_videos`` videos.
* ``stability.json``: per video name, path and frame count; the explained-variance ratios of the three PCA
  components; and :func:`variance_ratio` (within-video over between-video variance) of the flattened UV feature
  maps (``uv_features``, C x R x R values per frame) and of the shape codes (``shape``).
  Lower is more stable; ~0 means identical within videos, ~1 or more means no identity signal.
* ``shape_codes.npz``: ``shape`` [N, n_shape], ``video_index`` [N], ``frame_index`` [N], ``names`` [V].

Videos are video files, folders of frames, or clip folders of the headrecon layout (``frames/`` plus optional
``bboxes.npy``, see :mod:`headrecon.data.layout`); folders are searched recursively. Frames are cropped with the
clip's boxes (square, ``crop_scale`` x the box) when present, else the centred square, and resized to the
estimator's input size. Unreadable frames are skipped and counted.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from headrecon.data.crop import FaceBox, centre_box, crop_image, square_box
from headrecon.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, iter_video, read_image
from headrecon.io.atomic import atomic_write_bytes, save_image, save_npz

__all__ = [
    "VideoSource",
    "discover_videos",
    "iter_crops",
    "IdentityFeatureExtractor",
    "VarianceAccumulator",
    "variance_ratio",
    "TexelPCA",
    "plot_lines",
    "run_stability",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- inputs
@dataclass
class VideoSource:
    """One video: a video file, a folder of frames, or a clip folder (``frames/`` + optional ``bboxes.npy``)."""

    name: str
    path: Path
    kind: str  # "video" | "frames" | "clip"
    boxes: np.ndarray | None = None  # [T, 4] x0, y0, x1, y1 per frame (clips)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def discover_videos(paths: Sequence[str | os.PathLike]) -> tuple[list[VideoSource], list[MediaError]]:
    """Video sources under `paths` (recursively, sorted) and the problems found. Names are the paths relative to
    the argument they came from, joined with ``_`` (made unique)."""
    found: list[tuple[Path, Path, str]] = []
    problems: list[MediaError] = []

    def walk(folder: Path, base: Path) -> None:
        if (folder / "frames").is_dir() and _images_in(folder / "frames"):
            found.append((folder, base, "clip"))
            return
        if _images_in(folder):
            found.append((folder, base, "frames"))
        for child in sorted(folder.iterdir()):
            if child.is_file() and child.suffix.lower() in VIDEO_SUFFIXES:
                found.append((child, base, "video"))
            elif child.is_dir() and not child.name.startswith("."):
                walk(child, base)

    for p in map(Path, paths):
        n_before = len(found)
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            found.append((p, p.parent, "video"))
        elif p.is_dir():
            walk(p, p.parent if ((p / "frames").is_dir() or _images_in(p)) else p)
        elif not p.exists():
            problems.append(MediaError(p, "no such file or folder"))
        else:
            problems.append(MediaError(p, f"not a video file or folder ({p.suffix!r})"))
        if p.exists() and len(found) == n_before:
            problems.append(MediaError(p, "holds no videos, frame folders or clips"))
    sources: list[VideoSource] = []
    names: set[str] = set()
    for path, base, kind in found:
        rel = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
        stem = rel.with_suffix("") if kind == "video" else rel
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(stem.parts)) or "video"
        unique, k = name, 1
        while unique in names:
            unique, k = f"{name}_{k}", k + 1
        names.add(unique)
        boxes = None
        if kind == "clip" and (path / "bboxes.npy").is_file():
            boxes = np.load(path / "bboxes.npy")
        sources.append(VideoSource(unique, path, kind, boxes))
    return sources, problems


def iter_crops(
    source: VideoSource,
    size: int,
    *,
    crop_scale: float = 1.5,
    stride: int = 1,
    max_frames: int | None = None,
    skipped: list[str] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, crop [size, size, 3] uint8) for every `stride`-th frame, at most `max_frames`.

    Box crops (square, `crop_scale` x the clip's per-frame box) where the clip has boxes, else centre crops.
    Unreadable frames are skipped and appended to `skipped` (as messages)."""
    if source.kind == "video":
        frames: Iterator[tuple[int, np.ndarray | MediaError]] = (
            (i * stride, f)
            for i, f in enumerate(iter_video(source.path, stride=stride, max_frames=max_frames))
        )
    else:
        files = _images_in(source.path / "frames" if source.kind == "clip" else source.path)
        idx = list(range(0, len(files), stride))[:max_frames]

        def read(i: int) -> np.ndarray | MediaError:
            try:
                return read_image(files[i])
            except MediaError as exc:
                return exc

        frames = ((i, read(i)) for i in idx)
    for i, frame in frames:
        if isinstance(frame, MediaError):
            log.warning("stability: skipping %s", frame)
            if skipped is not None:
                skipped.append(str(frame))
            continue
        h, w = frame.shape[:2]
        if source.boxes is not None and i < len(source.boxes):
            box = square_box(FaceBox(*map(float, source.boxes[i][:4])), crop_scale)
        else:
            box = centre_box(h, w)
        yield (
            i,
            crop_image(frame, box, size, source="box-file" if source.boxes is not None else "centre").image,
        )


# --------------------------------------------------------------------------------------------- the model
class IdentityFeatureExtractor(nn.Module):
    """A trained GaussianRegressor's estimator and UV generator: images -> (M, shape code).

    forward(images [B, 3, S, S] in [0, 1]) -> M [B, C, R, R], shape [B, n_shape].
    """

    def __init__(self, estimator: nn.Module, uv_generator: nn.Module, dino: nn.Module | None = None) -> None:
        super().__init__()
        if getattr(uv_generator, "use_dino", False) and dino is None:
            raise ValueError(
                "this checkpoint's UV generator was trained with DINOv2 tokens: pass the DINOv2 module "
                "(headrecon eval stability --dino-weights FILE [--dino-model NAME])"
            )
        self.estimator, self.uv_generator, self.dino = estimator, uv_generator, dino

    @property
    def image_size(self) -> int:
        return int(self.estimator.config["img_size"])

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        flame_dir: str | None = None,
        dino: nn.Module | None = None,
        map_location: str = "cpu",
    ) -> IdentityFeatureExtractor:
        """From a GaussianRegressor checkpoint (the estimator via :meth:`FlameEstimator.from_checkpoint`, the UV
        generator rebuilt from the checkpoint's ``head_kwargs``; densification does not matter here)."""
        from headrecon.gaussians.head import GaussianHead
        from headrecon.modules.flame_estimator import FlameEstimator
        from headrecon.nets.uv_generator import UVMapGenerator

        estimator = FlameEstimator.from_checkpoint(path, flame_dir=flame_dir, map_location=map_location)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        prefix = "head.uv_generator."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path}: not a GaussianRegressor checkpoint (no '{prefix}*' weights)")
        head_kwargs = dict(ckpt.get("hyper_parameters", {}).get("head_kwargs") or {})
        defaults = {k: p.default for k, p in inspect.signature(GaussianHead.__init__).parameters.items()}
        generator = UVMapGenerator(
            latent_dim=head_kwargs.get("latent_dim", estimator.config["identity_dim"]),
            out_channels=head_kwargs.get("uv_channels", defaults["uv_channels"]),
            use_dino=any(k.startswith("cross_attn.") for k in state),
            dino_dim=head_kwargs.get("dino_dim", defaults["dino_dim"]),
            **dict(head_kwargs.get("uv_generator_kwargs") or {}),
        )
        generator.load_state_dict(state)
        return cls(estimator, generator, dino).to(map_location).eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.estimator(images)
        tokens = self.dino(images) if self.dino is not None and self.uv_generator.use_dino else None
        return self.uv_generator(out.identity, tokens), out.flame.shape


# ------------------------------------------------------------------------------------------- statistics
class VarianceAccumulator:
    """Streaming within- versus between-video variance of D-dimensional features (float64 sums).

    within = (1/N) sum_v sum_{i in v} ||x_i - mu_v||^2  (mean squared distance of a frame to its video's mean);
    between = (1/V) sum_v ||mu_v - mu||^2, mu = the mean of the V video means (videos weigh the same);
    ratio = within / between (None with fewer than two videos or no between-video spread).
    """

    def __init__(self) -> None:
        self.sums: dict[int, Tensor] = {}
        self.counts: dict[int, int] = {}
        self.sumsq = 0.0

    def add(self, video: int, features: Tensor) -> None:
        """features [B, D] of frames of video `video`."""
        x = features.detach().reshape(features.shape[0], -1).to("cpu", torch.float64)
        self.sums[video] = self.sums.get(video, torch.zeros(x.shape[1], dtype=torch.float64)) + x.sum(0)
        self.counts[video] = self.counts.get(video, 0) + x.shape[0]
        self.sumsq += float((x * x).sum())

    def result(self) -> dict[str, float | None]:
        n = sum(self.counts.values())
        if n == 0:
            raise ValueError("VarianceAccumulator: no features added")
        means = torch.stack([self.sums[v] / self.counts[v] for v in sorted(self.sums)])
        counts = torch.tensor([self.counts[v] for v in sorted(self.sums)], dtype=torch.float64)
        within = max(self.sumsq - float((counts * (means * means).sum(1)).sum()), 0.0) / n
        between = float(((means - means.mean(0)) ** 2).sum(1).mean())
        ratio = within / between if len(means) > 1 and between > 0 else None
        return {"within": within, "between": between, "ratio": ratio, "videos": len(means), "frames": n}


def variance_ratio(features: Tensor, video_ids: Tensor) -> dict[str, float | None]:
    """Within- vs between-video variance (see :class:`VarianceAccumulator`) of features [N, ...] with video ids
    [N]. Returns {"within", "between", "ratio", "videos", "frames"}."""
    acc = VarianceAccumulator()
    ids = torch.as_tensor(video_ids)
    for v in torch.unique(ids).tolist():
        acc.add(int(v), features[ids == v])
    return acc.result()


class TexelPCA:
    """Exact PCA of C-dimensional texel features from streamed sums (float64).

    ``add(M [B, C, R, R])`` accumulates every texel; ``fit(k)`` gives mean [C], components [k, C] (rows, unit
    norm, sign fixed so the largest-magnitude entry is positive), eigenvalues [k] and explained-variance ratios.
    """

    def __init__(self) -> None:
        self.n = 0
        self.s: Tensor | None = None
        self.ss: Tensor | None = None

    def add(self, M: Tensor) -> None:
        x = M.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).reshape(-1, M.shape[1])
        if self.s is None:
            self.s, self.ss = (
                torch.zeros(x.shape[1], dtype=torch.float64),
                torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64),
            )
        self.s += x.sum(0)
        self.ss += x.T @ x
        self.n += x.shape[0]

    def fit(self, k: int = 3) -> dict[str, Tensor]:
        if self.s is None or self.n < 2:
            raise ValueError("TexelPCA: needs at least two texels")
        mean = self.s / self.n
        cov = (self.ss - self.n * torch.outer(mean, mean)) / (self.n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        evals, evecs = evals[order].clamp_min(0.0), evecs[:, order]
        comps = evecs[:, :k].T.clone()
        flip = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).clamp_min(0) * 2 - 1
        comps *= flip
        if comps.shape[0] < k:  # fewer channels than components: pad with zeros
            comps = torch.cat([comps, torch.zeros(k - comps.shape[0], comps.shape[1], dtype=comps.dtype)])
            evals = torch.cat([evals, torch.zeros(k - len(evals), dtype=evals.dtype)])
        total = evals.sum().clamp_min(1e-30)
        return {"mean": mean, "components": comps, "eigenvalues": evals[:k], "explained": evals[:k] / total}

    @staticmethod
    def to_rgb(M: Tensor, pca: dict[str, Tensor]) -> np.ndarray:
        """M [B, C, R, R] -> the first three components as RGB [B, R, R, 3] in [0, 1] (+-2.5 std -> [0, 1])."""
        x = M.detach().to("cpu", torch.float64).permute(0, 2, 3, 1) - pca["mean"]
        p = x @ pca["components"][:3].T
        std = pca["eigenvalues"][:3].sqrt().clamp_min(1e-12)
        return (0.5 + p / (5.0 * std)).clamp(0.0, 1.0).numpy()


# ------------------------------------------------------------------------------------------------- plots
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot_lines(
    series: dict[str, np.ndarray],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (720, 420),
) -> np.ndarray:
    """Line plot of named 1-D series against their index as an RGB uint8 image [H, W, 3] (matplotlib when
    installed, else drawn with OpenCV)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_lines_cv2(series, title=title, xlabel=xlabel, ylabel=ylabel, size=size)
    fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    for name, y in series.items():
        ax.plot(np.arange(len(y)), y, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def _plot_lines_cv2(series: dict[str, np.ndarray], *, title: str, xlabel: str, ylabel: str,
                    size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    import cv2

    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 40, 50
    values = [np.asarray(y, dtype=np.float64) for y in series.values() if len(y)]
    allv = np.concatenate(values) if values else np.zeros(1)
    allv = allv[np.isfinite(allv)] if np.isfinite(allv).any() else np.zeros(1)
    lo, hi = float(allv.min()), float(allv.max())
    pad = 0.1 * (hi - lo) if hi > lo else max(abs(lo), 1.0) * 0.1
    lo, hi = lo - pad, hi + pad
    n = max((len(v) for v in values), default=1)
    xmax = max(n - 1, 1)

    def px(i: float, v: float) -> tuple[int, int]:
        return (
            int(round(left + i / xmax * (W - left - right))),
            int(round(top + (hi - v) / (hi - lo) * (H - top - bottom))),
        )

    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (200, 200, 200)
    step = (hi - lo) / 4
    decimals = max(0, int(-np.floor(np.log10(step))) + 1)
    for t in np.linspace(lo, hi, 5):
        y = px(0, t)[1]
        cv2.line(img, (left, y), (W - right, y), grey, 1)
        cv2.putText(img, f"{t:.{decimals}f}", (5, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    for t in np.unique(np.round(np.linspace(0, xmax, min(6, xmax + 1)))):
        x = px(t, lo)[0]
        cv2.putText(img, f"{t:.0f}", (x - 8, H - bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (W - right, H - bottom), black, 1)
    for k, (name, y) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        pts = np.array(
            [px(i, v) for i, v in enumerate(np.asarray(y, dtype=np.float64)) if np.isfinite(v)], np.int32
        )
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        elif len(pts) == 1:
            cv2.circle(img, tuple(int(c) for c in pts[0]), 3, colour, -1)
        cv2.line(img, (left + 10, top + 14 + 16 * k), (left + 30, top + 14 + 16 * k), colour, 2)
        cv2.putText(img, name[:40], (left + 36, top + 18 + 16 * k), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 25), font, 0.55, black, 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (W // 2 - 4 * len(xlabel), H - 12), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (5, top - 8), font, 0.4, black, 1, cv2.LINE_AA)
    return img


# -------------------------------------------------------------------------------------------- the command
def _batched(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    """Lists of up to `n` consecutive items."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _figure1(crops: list[np.ndarray], rgb: np.ndarray, cell: int) -> np.ndarray:
    """Input crops (top row) over their PCA RGB UV maps (bottom row), each cell `cell` pixels."""
    import cv2

    top = [cv2.resize(c, (cell, cell), interpolation=cv2.INTER_AREA) for c in crops]
    bottom = [cv2.resize((r * 255.0 + 0.5).astype(np.uint8), (cell, cell), interpolation=cv2.INTER_NEAREST)
              for r in rgb]  # fmt: skip
    return np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)


def run_stability(
    extractor: IdentityFeatureExtractor,
    videos: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    crop_scale: float = 1.5,
    stride: int = 1,
    max_frames: int | None = 100,
    batch_size: int = 16,
    image_frames: int = 4,
    max_image_videos: int = 16,
    plot_videos: int = 3,
    device: str | torch.device = "cpu",
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Run the analysis (see the module docstring) and return the summary written to ``out/stability.json``.

    max_frames: per video (paper: 100); stride: every stride-th frame; image_frames: frames per Figure 1 image.
    """
    out = Path(out)
    sources, problems = discover_videos(videos)
    for p in problems:
        log.warning("stability: %s", p)
    if not sources:
        raise ValueError(f"no videos found under {[str(v) for v in videos]}")
    extractor = extractor.to(device).eval()
    size = extractor.image_size
    uv_acc, shape_acc, texels = VarianceAccumulator(), VarianceAccumulator(), TexelPCA()
    shapes, video_index, frame_index, skipped = [], [], [], []
    kept: dict[int, tuple[list[np.ndarray], list[Tensor]]] = {}
    per_video = []
    for v, src in enumerate(sources):
        n = 0
        keep = v < max_image_videos
        crops_kept: list[np.ndarray] = []
        maps_kept: list[Tensor] = []
        frames = iter_crops(
            src, size, crop_scale=crop_scale, stride=stride, max_frames=max_frames, skipped=skipped
        )
        try:
            for batch in _batched(frames, batch_size):
                idx, crops = [i for i, _ in batch], [c for _, c in batch]
                x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).to(device)
                M, beta = extractor(x)
                M, beta = M.float().cpu(), beta.float().cpu()
                uv_acc.add(v, M.flatten(1))
                shape_acc.add(v, beta)
                texels.add(M)
                shapes.append(beta.numpy())
                video_index.extend([v] * len(idx))
                frame_index.extend(idx)
                n += len(idx)
                if keep:
                    crops_kept.extend(crops)
                    maps_kept.extend(M.unbind(0))
        except MediaError as exc:
            log.warning("stability: %s", exc)
            skipped.append(str(exc))
        if keep and crops_kept:
            pick = np.unique(
                np.linspace(0, len(crops_kept) - 1, min(image_frames, len(crops_kept))).round().astype(int)
            )
            kept[v] = ([crops_kept[j] for j in pick], [maps_kept[j] for j in pick])
        per_video.append({"name": src.name, "path": str(src.path), "kind": src.kind, "frames": n})
        log.info("stability: %s: %d frames", src.name, n)
    if not video_index:
        raise ValueError("no readable frames in any video")

    pca = texels.fit(3)
    for v, (crops, maps) in kept.items():
        rgb = TexelPCA.to_rgb(torch.stack(maps), pca)
        save_image(out / "pca" / f"{sources[v].name}.png", _figure1(crops, rgb, max(128, rgb.shape[1])))
    shape_all = np.concatenate(shapes)
    vid, fid = np.asarray(video_index), np.asarray(frame_index)
    series = {
        sources[v].name: shape_all[vid == v, 0]
        for v in range(min(plot_videos, len(sources)))
        if (vid == v).any()
    }
    save_image(out / "shape_coefficient_0.png", plot_lines(series, title="first shape coefficient over frames",
                                                           xlabel="frame", ylabel="beta_0"))  # fmt: skip
    save_npz(out / "shape_codes.npz", shape=shape_all, video_index=vid, frame_index=fid,
             names=np.array([s.name for s in sources]))  # fmt: skip
    summary = {
        "checkpoint": checkpoint,
        "videos": per_video,
        "frames": int(len(vid)),
        "skipped_frames": len(skipped),
        "skipped": skipped[:100],
        "problems": [str(p) for p in problems],
        "uv_features": uv_acc.result(),
        "shape": shape_acc.result(),
        "pca_explained_variance_ratio": [float(x) for x in pca["explained"]],
        "uv_map_shape": list(next(iter(kept.values()))[1][0].shape) if kept else None,
        "definition": "ratio = within-video variance / between-video variance (lower is more stable); see "
        "headrecon/eval/stability.py",
    }
    atomic_write_bytes(out / "stability.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary
