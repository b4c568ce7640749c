"""Shared helpers for `headrecon bench ...`: timed repeats with medians, peak memory, one JSON line per case."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["time_repeats", "peak_rss_bytes", "emit", "machine_info", "synchronize"]


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued CUDA work (no-op on CPU) so that wall-clock timings are honest."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def time_repeats(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device=None) -> list[float]:
    """Seconds per call of `fn` over `repeats` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if sys.platform == "darwin" else 1024)


def machine_info() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}  # fmt: skip
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def emit(record: dict[str, Any]) -> dict[str, Any]:
    """Print one JSON line (medians rounded for reading) and return the record."""
    print(
        json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}), flush=True
    )
    return record


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))
