"""Timing: ``time.perf_counter`` on the CPU, CUDA events on the GPU; median and spread.

Warm-up runs are excluded; the first call (compile time included) is reported apart.
This is the one timing loop of gpudl: ``gpudl.bench.train_step`` and every script under
``benchmarks/`` call :func:`time_fn`.

GPU clocks (``clock=``, ignored on the CPU):

* ``"events"`` (default): a CuPy CUDA event pair around each call on the current stream;
* ``"cupyx"``: ``cupyx.profiler.benchmark`` (CUDA events, its own warm-up loop);
* ``"torch"``: ``torch.cuda`` event pairs, for timing PyTorch code on the GPU.

Example:
    >>> stats = time_fn(lambda: sum(range(1000)), device="cpu", warmup=1, repeats=5)
    >>> sorted(stats)[:3]
    ['first_call_s', 'iqr_s', 'max_s']
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from gpudl.backend import gpu_benchmark_times, xp_for
from gpudl.errors import ConfigError

CLOCKS = ("events", "cupyx", "torch")


def summarize(samples) -> dict[str, float]:
    """Median, interquartile range, min, max (seconds) and count of timing ``samples``.

    Example:
        >>> summarize([3.0, 1.0, 2.0])["median_s"]
        2.0
    """
    a = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1), "min_s": float(a.min()),
            "max_s": float(a.max()), "repeats": int(a.size)}


def _synchronize(clock: str) -> None:
    if clock == "torch":
        import torch

        torch.cuda.synchronize()
    else:
        xp_for("cuda").cuda.get_current_stream().synchronize()


def _perf_counter_samples(fn: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def _cupy_event_samples(fn: Callable[[], object], repeats: int) -> list[float]:
    cupy = xp_for("cuda")
    stream = cupy.cuda.get_current_stream()
    stream.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return samples


def _torch_event_samples(fn: Callable[[], object], repeats: int) -> list[float]:
    import torch

    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return samples


def time_fn(fn: Callable[[], object], device: str, warmup: int = 3, repeats: int = 20,
            clock: str = "events") -> dict:
    """Time ``fn()`` on ``device`` ("cpu" or "cuda"): first call apart, then warm-up, then
    ``repeats`` timed calls.

    ``warmup`` counts the first call, so ``warmup - 1`` further untimed calls run before
    the timed ones. On "cuda" the first call is synchronized before its time is taken and
    each sample comes from CUDA events chosen by ``clock`` (see the module docstring).
    Returns ``first_call_s`` plus :func:`summarize` of the samples.

    Example:
        >>> time_fn(lambda: None, device="cpu", warmup=2, repeats=3)["repeats"]
        3
    """
    if clock not in CLOCKS:
        raise ConfigError(f"time_fn: clock must be one of {CLOCKS}, got {clock!r}")
    if device not in ("cpu", "cuda"):  # "tpu" was timed on the CPU without a word
        raise ConfigError(f"time_fn: device must be 'cpu' or 'cuda', got {device!r}")
    for name, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            # repeats=0 failed inside summarize with a bare IndexError
            raise ConfigError(f"time_fn: {name} must be an int >= {least}, got {value!r}")
    cuda = device == "cuda"
    t0 = time.perf_counter()
    fn()
    if cuda:
        _synchronize(clock)
    first = time.perf_counter() - t0
    if cuda and clock == "cupyx":
        # benchmark() runs its own warm-up calls and CUDA-event timing per call.
        times = gpu_benchmark_times(fn, n_repeat=repeats, n_warmup=max(warmup - 1, 0))
        return {"first_call_s": first, **summarize(times)}
    for _ in range(max(warmup - 1, 0)):
        fn()
    if not cuda:
        samples = _perf_counter_samples(fn, repeats)
    elif clock == "torch":
        samples = _torch_event_samples(fn, repeats)
    else:
        samples = _cupy_event_samples(fn, repeats)
    return {"first_call_s": first, **summarize(samples)}
