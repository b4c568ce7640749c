"""`headrecon bench estimator`: images/s of the FLAME estimator and the fraction of this machine's matmul peak.

For every case (precision x batch size x attention implementation) the network (random initialisation, eval
mode, ``torch.inference_mode``) runs ``--repeats`` timed repeats (each at least ``--min-repeat-s``) after
``--warmup`` untimed calls. Every repeat is *paired* with a matrix-multiply measurement taken right before it
(square ``--matmul-size`` products in the case's precision for ``--matmul-min-s`` seconds; fp32: sgemm; bf16: a
bf16 matmul, which uses AMX / tensor cores where present), so that both see the same machine load. FLOPs are
counted once per batch size with ``torch.utils.flop_counter`` (:func:`headrecon.nets.estimator.count_flops`;
a multiply-add counts 2; bf16 autocast executes the same FLOPs).

One JSON line per case, medians over the repeats: ``images_per_s``, ``ms_per_batch``, ``gflop_per_image``,
``achieved_gflop_s``, ``matmul_gflop_s`` (the paired reference, wall clock), ``fraction_of_matmul`` (median of
the per-repeat ratios achieved / matmul, wall clock). On CPU also ``fraction_of_matmul_cpu_time``, the same ratio
per CPU-second this process received (``time.process_time``), which stays meaningful when other processes
share the cores, and ``cpu_share``, the CPU time received / (wall time x threads): 1.0 means the threads had
their cores to themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from headrecon.nets.estimator import DEFAULT_BACKBONE, FlameEstimatorNet, count_flops

__all__ = ["bench_estimator", "matmul_gflops"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _matmul_fn(n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], Any]:
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    return lambda: torch.mm(a, b)


def matmul_gflops(n: int, dtype: torch.dtype, device: torch.device, min_s: float = 1.0) -> float:
    """Sustained throughput (GFLOP/s, 2 n^3 per product) of [n, n] @ [n, n] matmuls in ``dtype`` over at least
    ``min_s`` seconds of wall time."""
    fn = _matmul_fn(n, dtype, device)
    fn()
    wall, _ = _time_call(fn, device, min_s)
    return 2.0 * n**3 / wall / 1e9


@contextlib.contextmanager
def _attention(net: FlameEstimatorNet, impl: str) -> Iterator[None]:
    """Switch timm's attention between ``F.scaled_dot_product_attention`` ("sdpa") and its explicit
    softmax(QK^T)V ("math")."""
    attns = [b.attn for b in net.backbone.blocks if hasattr(b.attn, "fused_attn")]
    before = [a.fused_attn for a in attns]
    for a in attns:
        a.fused_attn = impl == "sdpa"
    try:
        yield
    finally:
        for a, f in zip(attns, before):
            a.fused_attn = f


def _time_call(fn: Callable[[], Any], device: torch.device, min_s: float) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call of ``fn``, run as often as needed to last ``min_s``."""
    n, elapsed = 0, 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    while n == 0 or elapsed < min_s:
        fn()
        _sync(device)
        n += 1
        elapsed = time.perf_counter() - t0
    return elapsed / n, (time.process_time() - c0) / n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headrecon bench estimator", description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="timm ViT name (default %(default)s)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument(
        "--timm-kwargs", default="{}", help="JSON dict for timm.create_model, e.g. '{\"depth\": 2}'"
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--dtypes", nargs="+", choices=sorted(_DTYPES), default=["fp32", "bf16"])
    p.add_argument("--attention", nargs="+", choices=["sdpa", "math"], default=["sdpa"])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per case (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-repeat-s", type=float, default=0.5, help="each repeat lasts at least this long")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square reference matmul")
    p.add_argument("--matmul-min-s", type=float, default=1.0, help="seconds of matmuls per measurement")
    p.add_argument(
        "--timm-mlp", action="store_true", help="use timm's QuickGELU MLP instead of the fused QuickGeluMlp"
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    p.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cuda when available)")
    return p


def bench_estimator(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark (arguments as on the command line); print and return one dict per case."""
    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    net = FlameEstimatorNet(
        backbone=args.backbone,
        img_size=args.img_size,
        init="deferred",  # random weights on purpose: speed does not depend on them
        fast_mlp=not args.timm_mlp,
        timm_kwargs=json.loads(args.timm_kwargs),
    )
    net = net.to(device).eval()
    results: list[dict] = []
    for bs in args.batch_sizes:
        x = torch.rand(bs, 3, args.img_size, args.img_size, device=device)
        flops = count_flops(net, x)
        for impl in args.attention:
            for dname in args.dtypes:
                dtype = _DTYPES[dname]
                autocast = (
                    torch.autocast(device.type, dtype=dtype)
                    if dtype != torch.float32
                    else contextlib.nullcontext()
                )

                def run(x: torch.Tensor = x, autocast: Any = autocast) -> None:
                    with autocast:
                        net(x)

                mm = _matmul_fn(args.matmul_size, dtype, device)
                mm_flops = 2.0 * args.matmul_size**3
                threads = torch.get_num_threads() if device.type == "cpu" else 1
                with _attention(net, impl), torch.inference_mode():
                    mm()
                    for _ in range(args.warmup):
                        run()
                    _sync(device)
                    walls, peaks, ratios, cpu_ratios, shares = [], [], [], [], []
                    for _ in range(args.repeats):
                        mm_wall, mm_cpu = _time_call(mm, device, args.matmul_min_s)
                        wall, cpu = _time_call(run, device, args.min_repeat_s)
                        walls.append(wall)
                        peaks.append(mm_flops / mm_wall / 1e9)
                        ratios.append((flops / wall) / (mm_flops / mm_wall))
                        if device.type == "cpu":
                            cpu_ratios.append((flops / cpu) / (mm_flops / mm_cpu))
                            shares.append(cpu / (wall * threads))
                s = statistics.median(walls)
                row = {
                    "bench": "estimator",
                    "device": str(device),
                    "threads": threads if device.type == "cpu" else None,
                    "backbone": args.backbone,
                    "img_size": args.img_size,
                    "dtype": dname,
                    "batch": bs,
                    "attention": impl,
                    "mlp": "timm" if args.timm_mlp else "fast",
                    "repeats": args.repeats,
                    "images_per_s": round(bs / s, 3),
                    "ms_per_batch": round(s * 1e3, 2),
                    "gflop_per_image": round(flops / bs / 1e9, 3),
                    "achieved_gflop_s": round(flops / s / 1e9, 2),
                    "matmul_gflop_s": round(statistics.median(peaks), 2),
                    "matmul_size": args.matmul_size,
                    "fraction_of_matmul": round(statistics.median(ratios), 3),
                    "fraction_of_matmul_cpu_time": round(statistics.median(cpu_ratios), 3)
                    if cpu_ratios
                    else None,
                    "cpu_share": round(statistics.median(shares), 3) if shares else None,
                }
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


if __name__ == "__main__":
    bench_estimator()
