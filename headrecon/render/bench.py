"""`headrecon bench render`: speed and memory of the 2DGS renderer, one JSON line per case.

Scenes are head-like: N surfels tangent to a sphere of radius 0.1 m at the origin (scales 2-5 mm, opacities
0.3-1), seen by `Cameras.sheap_default` (1 m away, vertical FOV 14.25 deg). Each case times `repeats` runs
(after one warm-up) of the forward pass alone and of forward + backward of a loss on colour, alpha, depth
and normals, and reports medians. Peak memory: on CUDA, `torch.cuda.max_memory_allocated` above the
baseline; on CPU, the growth of the process's peak resident set size (``ru_maxrss``) during the case,
which is exact only for the first case to reach a new peak, so every case can run in its own process
(``--case``, what ``--isolate`` does for all of them). The dense all-pairs reference (`splat_dense`) runs
in the same process where its estimated memory fits ``--dense-max-gb``, or pixel-chunked with
checkpointing under ``--dense-chunked``; otherwise only its estimated size is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from headrecon.benchmarking import peak_rss_bytes

from .camera import Cameras
from .rotations import quat_multiply
from .splat import render_surfels, resolve_backend
from .splat_dense import dense_pairs_bytes, render_dense
from .surfels import Surfels

__all__ = ["bench_render", "sphere_surfels", "random_surfels", "quat_from_z_to"]


# ------------------------------------------------------------------------------------------------- scenes
def quat_from_z_to(n: Tensor) -> Tensor:
    """Unit wxyz quaternions [..., 4] rotating +z onto the unit vectors n [..., 3] (the surfel normal)."""
    q = torch.stack([1 + n[..., 2], -n[..., 1], n[..., 0], torch.zeros_like(n[..., 0])], dim=-1)
    flip = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=n.dtype, device=n.device)
    return torch.where(q.norm(dim=-1, keepdim=True) < 1e-6, flip, F.normalize(q, dim=-1))


def sphere_surfels(
    batch: int,
    num: int,
    *,
    radius: float = 0.1,
    scale_range: tuple[float, float] = (0.002, 0.005),
    opacity_range: tuple[float, float] = (0.3, 1.0),
    feature_dim: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Surfels:
    """Head-like test scene: `num` surfels tangent to a sphere of `radius` metres at the origin, per image."""
    g = torch.Generator().manual_seed(seed)
    d = F.normalize(torch.randn(batch, num, 3, generator=g, dtype=torch.float64), dim=-1)
    spin = torch.rand(batch, num, generator=g, dtype=torch.float64) * math.pi
    qz = torch.stack([spin.cos(), torch.zeros_like(spin), torch.zeros_like(spin), spin.sin()], -1)
    quats = quat_multiply(quat_from_z_to(d), qz)
    lo, hi = scale_range
    scales = lo + (hi - lo) * torch.rand(batch, num, 2, generator=g, dtype=torch.float64)
    olo, ohi = opacity_range
    opac = olo + (ohi - olo) * torch.rand(batch, num, generator=g, dtype=torch.float64)
    feats = torch.rand(batch, num, feature_dim, generator=g, dtype=torch.float64)
    return Surfels(d * radius, quats, scales, opac, feats).to(device=device, dtype=dtype)


def random_surfels(
    batch: int,
    num: int,
    *,
    extent: float = 0.08,
    scale_range: tuple[float, float] = (0.001, 0.02),
    grazing_fraction: float = 0.25,
    feature_dim: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Surfels:
    """Cluttered test scene: surfels in a box of half-size `extent` around the origin, random orientations,
    strongly overlapping, a `grazing_fraction` of them nearly edge-on to the default camera (normals within
    ~0.5-3 degrees of perpendicular to the viewing axis), opacities up to 0.999."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(batch, num, 3, generator=g, dtype=torch.float64) * 2 - 1) * extent
    quats = F.normalize(torch.randn(batch, num, 4, generator=g, dtype=torch.float64), dim=-1)
    n_graze = int(round(grazing_fraction * num))
    if n_graze:
        phi = torch.rand(batch, n_graze, generator=g, dtype=torch.float64) * 2 * math.pi
        tilt = torch.deg2rad(0.5 + 2.5 * torch.rand(batch, n_graze, generator=g, dtype=torch.float64))
        n = torch.stack([phi.cos() * tilt.cos(), phi.sin() * tilt.cos(), tilt.sin()], -1)  # ~ in the xy plane
        quats[:, :n_graze] = quat_from_z_to(n)
    lo, hi = scale_range
    scales = lo * (hi / lo) ** torch.rand(batch, num, 2, generator=g, dtype=torch.float64)
    opac = torch.rand(batch, num, generator=g, dtype=torch.float64).clamp(0.02, 0.999)
    feats = torch.rand(batch, num, feature_dim, generator=g, dtype=torch.float64)
    return Surfels(means, quats, scales, opac, feats).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- measuring
def _loss(r) -> Tensor:
    return r.colors.mean() + r.alphas.mean() + r.depth_expected.mean() + r.normals.mean()


def _time_case(fn, surfels: Surfels, repeats: int, backward: bool, warmup: bool = True) -> list[float]:
    leaves = [surfels.means, surfels.quats, surfels.scales, surfels.opacities, surfels.features]
    times = []
    for _ in range(repeats + int(warmup)):
        for t in leaves:
            t.grad = None
        if surfels.device.type == "cuda":
            torch.cuda.synchronize(surfels.device)
        t0 = time.perf_counter()
        if backward:
            _loss(fn()).backward()
        else:
            with torch.no_grad():
                fn()
        if surfels.device.type == "cuda":
            torch.cuda.synchronize(surfels.device)
        times.append(time.perf_counter() - t0)
    return times[int(warmup) :]


def _measure(fn, surfels: Surfels, repeats: int, backward: bool, warmup: bool = True) -> dict:
    dev = surfels.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = peak_rss_bytes()
    times = _time_case(fn, surfels, repeats, backward, warmup)
    peak = torch.cuda.max_memory_allocated(dev) - base if dev.type == "cuda" else peak_rss_bytes() - base
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mem_mb": round(peak / 2**20, 1)}


def run_case(
    resolution: int,
    num_surfels: int,
    batch: int,
    mode: str,
    *,
    backend: str = "auto",
    device: str = "cpu",
    repeats: int = 3,
    dense: bool = True,
    dense_max_gb: float = 4.0,
    dense_repeats: int = 1,
    dense_chunked: bool = False,
    seed: int = 0,
) -> dict:
    """Measure one case; `mode` is "fwd" or "fwd+bwd". Returns the JSON-ready record."""
    backward = mode == "fwd+bwd"
    surfels = sphere_surfels(batch, num_surfels, seed=seed, device=device)
    for t in (surfels.means, surfels.quats, surfels.scales, surfels.opacities, surfels.features):
        t.requires_grad_(backward)
    cams = Cameras.sheap_default(batch, resolution, resolution, device=device)
    used = resolve_backend(surfels, backend)  # type: ignore[arg-type]
    rec = {
        "case": f"{resolution}x{resolution} N={num_surfels} B={batch} {mode}",
        "resolution": resolution,
        "num_surfels": num_surfels,
        "batch": batch,
        "mode": mode,
        "backend": used,
        "device": str(surfels.device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }
    rec.update(_measure(lambda: render_surfels(surfels, cams, backend=used), surfels, repeats, backward))
    est = dense_pairs_bytes(batch, resolution, resolution, num_surfels, backward)
    rec["dense_est_mem_gb"] = round(est / 2**30, 2)
    dense_kw = None
    if dense and est <= dense_max_gb * 2**30:
        dense_kw, rec["dense_mode"] = {}, "plain"
    elif dense and dense_chunked:
        # pixel chunks of ~0.5 GB of pairs; in backward each chunk is recomputed (checkpoint)
        chunk = max(1, int(0.5 * 2**30 / (num_surfels * 180)))
        dense_kw = dict(pixel_chunk=chunk, use_checkpoint=True)
        rec["dense_mode"] = f"pixel_chunk={chunk}+checkpoint"
    if dense_kw is not None:
        # no warm-up run for the (slow) dense reference: its first run is timed
        d = _measure(lambda: render_dense(surfels, cams, **dense_kw), surfels, dense_repeats, backward, False)
        rec["dense_median_s"] = d["median_s"]
        rec["dense_peak_mem_mb"] = d["peak_mem_mb"]
        rec["speedup_vs_dense"] = round(d["median_s"] / rec["median_s"], 1)
    else:
        rec["dense_mode"] = "skipped: does not fit --dense-max-gb" if dense else "skipped"
        rec["dense_median_s"] = None
        rec["speedup_vs_dense"] = None
    return rec


DEFAULT_CASES = [
    (r, n, b, m) for r in (128, 256) for n in (5000, 20000) for b in (1, 8) for m in ("fwd", "fwd+bwd")
]


def _parse_case(s: str) -> tuple[int, int, int, str]:
    try:
        res, n, b, mode = s.split(":")
        if mode not in ("fwd", "fwd+bwd"):
            raise ValueError
        return int(res), int(n), int(b), mode
    except ValueError:
        raise argparse.ArgumentTypeError(f"case must be RES:N:B:fwd|fwd+bwd, got {s!r}") from None


def bench_render(argv: list[str] | None = None) -> list[dict]:
    """Run the renderer benchmark; prints and returns one record per case.

    Options: ``--case RES:N:B:MODE`` (repeatable; default: 128 and 256 px, 5k and 20k surfels, batch 1 and 8,
    fwd and fwd+bwd), ``--backend auto|torch|gsplat``, ``--device cpu|cuda``, ``--repeats``,
    ``--no-dense``, ``--dense-max-gb`` (default 4), ``--dense-repeats``, ``--dense-chunked`` (when the plain
    dense reference does not fit, time it in pixel chunks with checkpointing instead: slow but bounded
    memory), ``--isolate`` (each case in a fresh process, so that CPU peak memory is exact), ``--threads``.
    """
    p = argparse.ArgumentParser(prog="headrecon bench render", description=bench_render.__doc__)
    p.add_argument("--case", action="append", type=_parse_case, default=None)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--dense-max-gb", type=float, default=4.0)
    p.add_argument("--dense-repeats", type=int, default=1)
    p.add_argument("--dense-chunked", action="store_true")
    p.add_argument("--isolate", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cases = a.case or DEFAULT_CASES
    records = []
    for res, n, b, mode in cases:
        if a.isolate:
            cmd = [
                sys.executable,
                "-c",
                "import sys; from headrecon.render.bench import bench_render; bench_render(sys.argv[1:])",
            ]
            cmd += [f"--case={res}:{n}:{b}:{mode}", f"--backend={a.backend}", f"--device={a.device}"]
            cmd += [
                f"--repeats={a.repeats}",
                f"--dense-max-gb={a.dense_max_gb}",
                f"--dense-repeats={a.dense_repeats}",
            ]
            cmd += [f"--seed={a.seed}"] + (["--no-dense"] if a.no_dense else [])
            cmd += ["--dense-chunked"] if a.dense_chunked else []
            cmd += [f"--threads={a.threads}"] if a.threads else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rec = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(rec), flush=True)
        else:
            rec = run_case(
                res, n, b, mode, backend=a.backend, device=a.device, repeats=a.repeats, dense=not a.no_dense,
                dense_max_gb=a.dense_max_gb, dense_repeats=a.dense_repeats, dense_chunked=a.dense_chunked,
                seed=a.seed,
            )  # fmt: skip
            print(json.dumps(rec), flush=True)
        records.append(rec)
    return records
