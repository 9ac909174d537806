"""Timing: ``time.perf_counter`` on the CPU, CUDA events on the GPU; median and spread.

Warm-up runs are excluded; the first call (compile time included) is reported apart.

Example:
    >>> stats = time_fn(lambda: sum(range(1000)), device="cpu", warmup=1, repeats=5)
    >>> sorted(stats)[:3]
    ['first_call_s', 'iqr_s', 'max_s']
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from gpudl.backend import xp_for


def summarize(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1), "min_s": float(a.min()),
            "max_s": float(a.max()), "repeats": int(a.size)}


def time_fn(fn: Callable[[], object], device: str, warmup: int = 3, repeats: int = 20) -> dict:
    """Time ``fn()`` on ``device``. GPU timings come from CUDA events around each call."""
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        xp_for("cuda").cuda.get_current_stream().synchronize()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn()
    samples: list[float] = []
    if device == "cuda":
        cupy = xp_for("cuda")
        stream = cupy.cuda.get_current_stream()
        stream.synchronize()
        for _ in range(repeats):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    else:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
    return {"first_call_s": first, **summarize(samples)}
