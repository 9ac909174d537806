"""Copy-bandwidth probe: the device's measured memory ceiling, for the kernel benchmarks.

On a GPU it copies one large float32 buffer (1 GiB by default) to another on the device,
two ways, and reports GB/s counting one read and one write of every byte
(2 * nbytes / time), the same accounting the kernel benchmarks use:

* ``memcpy-d2d``: ``cudaMemcpyAsync`` device to device;
* ``copy-kernel``: CuPy's elementwise copy (``cupy.copyto``), what a plain kernel gets.

Times are CUDA events (``cupyx.profiler.benchmark``), median and IQR after warm-up. The
``ceiling_gbps`` is the best of the two medians. On a machine without a GPU the GPU figure
is absent (with the reason) and a NumPy copy (``np.copyto``, perf_counter) is reported for
information only: it is not a ceiling for any GPU kernel. ``--tiny`` copies 1 MiB twice
on both sides: the code-path check the CPU kernel emulator's tests run, no real figure.

Usage:
    python benchmarks/bandwidth.py [--json out.json] [--size-mib 1024] [--quick] [--tiny]

From a harness:
    >>> result = measure(quick=True)  # doctest: +SKIP
    >>> result["gpu"]["ceiling_gbps"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

from common import TINY_HELP, TINY_REPEATS, machine_or_error, write_json  # noqa: E402

from gpudl.backend import probe_cuda, xp_for  # noqa: E402
from gpudl.bench.timing import time_fn  # noqa: E402

GPU_SIZE_MIB = 1024
GPU_QUICK_MIB = 256
CPU_SIZE_MIB = 256
CPU_QUICK_MIB = 64
TINY_MIB = 1


def _copy_stats(fn, device: str, warmup: int, repeats: int,
                clock: str = "events") -> dict[str, float]:
    """``time_fn`` figures of a copy; its first call is a warm-up, not reported."""
    stats = time_fn(fn, device, warmup=warmup, repeats=repeats, clock=clock)
    del stats["first_call_s"]  # the first copy only faults pages in; not a compile time
    return stats


def gpu_copy_bandwidth(size_mib: int = GPU_SIZE_MIB, repeats: int = 20) -> dict[str, Any]:
    """Device-to-device copy bandwidth (GB/s, read + write) of a ``size_mib`` float32 buffer."""
    cupy = xp_for("cuda")
    free, _total = cupy.cuda.runtime.memGetInfo()
    size_mib_used = size_mib
    # Two buffers plus headroom; halve the buffer rather than fail on a busy or small GPU.
    while 2 * size_mib_used * 2**20 > 0.8 * free and size_mib_used > 16:
        size_mib_used //= 2
    n = size_mib_used * 2**20 // 4
    src = cupy.arange(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    nbytes = src.nbytes

    def memcpy():
        dst.data.copy_from_device_async(src.data, nbytes)

    def copy_kernel():
        cupy.copyto(dst, src)

    methods: dict[str, dict] = {}
    for name, fn in (("memcpy-d2d", memcpy), ("copy-kernel", copy_kernel)):
        stats = _copy_stats(fn, "cuda", warmup=4, repeats=repeats, clock="cupyx")
        methods[name] = {**stats, "gbps": 2 * nbytes / stats["median_s"] / 1e9,
                         "gbps_best": 2 * nbytes / stats["min_s"] / 1e9}
    ok = bool((dst[:: max(n // 1024, 1)] == src[:: max(n // 1024, 1)]).all())
    src = dst = None  # release both buffers (the closures hold the same cells)
    cupy.get_default_memory_pool().free_all_blocks()
    best = max(methods, key=lambda k: methods[k]["gbps"])
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {"device": "cuda", "device_name": name, "dtype": "float32",
            "size_mib": size_mib_used, "requested_size_mib": size_mib, "bytes_moved": 2 * nbytes,
            "methods": methods, "ceiling_gbps": methods[best]["gbps"], "ceiling_method": best,
            "copy_verified": ok, "timing": "CUDA events (cupyx.profiler.benchmark), median"}


def cpu_copy_bandwidth(size_mib: int = CPU_SIZE_MIB, repeats: int = 10) -> dict[str, Any]:
    """NumPy ``copyto`` bandwidth (GB/s, read + write); informational, not a GPU ceiling."""
    n = size_mib * 2**20 // 4
    src = np.arange(n, dtype=np.float32)
    dst = np.empty_like(src)
    # Two warm-up copies: page faults on first touch of dst.
    stats = _copy_stats(lambda: np.copyto(dst, src), "cpu", warmup=2, repeats=repeats)
    return {"device": "cpu", "device_name": "cpu", "dtype": "float32", "size_mib": size_mib,
            "bytes_moved": 2 * src.nbytes, **stats,
            "gbps": 2 * src.nbytes / stats["median_s"] / 1e9,
            "timing": "time.perf_counter, median", "note": "informational only"}


def measure(quick: bool = False, size_mib: int | None = None,
            tiny: bool = False) -> dict[str, Any]:
    """GPU copy ceiling when a GPU is usable (else the reason), plus a CPU copy figure.

    ``tiny``: 1 MiB buffers, 2 repeats (a code-path check; the figures mean nothing).
    """
    usable, reason = probe_cuda()
    out: dict[str, Any] = {"benchmark": "copy_bandwidth", "quick": quick,
                           "accounting": "GB/s = 2 * buffer bytes / time (one read + one write)"}
    if tiny:
        out["tiny"] = True
    gpu_mib = TINY_MIB if tiny else GPU_QUICK_MIB if quick else GPU_SIZE_MIB
    if usable:
        try:
            out["gpu"] = gpu_copy_bandwidth(size_mib or gpu_mib, repeats=TINY_REPEATS if tiny
                                            else 10 if quick else 20)
        except Exception as exc:  # record, never fabricate
            out["gpu"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    else:
        out["gpu"] = {"status": "unavailable", "reason": reason}
    cpu_mib = TINY_MIB if tiny else CPU_QUICK_MIB if quick else CPU_SIZE_MIB
    if size_mib is not None and not usable:
        cpu_mib = size_mib
    out["cpu"] = cpu_copy_bandwidth(cpu_mib, repeats=TINY_REPEATS if tiny else 5 if quick else 10)
    return out


def ceiling_gbps(result: dict[str, Any]) -> float | None:
    """The GPU copy ceiling from a :func:`measure` result, or None when it was not measured."""
    gpu = result.get("gpu") or {}
    value = gpu.get("ceiling_gbps")
    return float(value) if value is not None else None


def describe(result: dict[str, Any]) -> str:
    gpu, cpu = result["gpu"], result["cpu"]
    lines = ["copy bandwidth (GB/s counts one read + one write of the buffer)"]
    if "ceiling_gbps" in gpu:
        for name, m in gpu["methods"].items():
            lines.append(f"  {gpu['device_name']}: {name:12s} {m['gbps']:8.1f} GB/s median "
                         f"(best {m['gbps_best']:.1f}; {m['median_s'] * 1e3:.3f} ms, "
                         f"IQR {m['iqr_s'] * 1e3:.3f} ms, {gpu['size_mib']} MiB)")
        lines.append(f"  GPU ceiling: {gpu['ceiling_gbps']:.1f} GB/s ({gpu['ceiling_method']})"
                     + ("" if gpu["copy_verified"] else "  WARNING: copy did not verify"))
    else:
        lines.append(f"  GPU: {gpu.get('status', 'unavailable')} ({gpu.get('reason')})")
    lines.append(f"  CPU numpy copyto: {cpu['gbps']:.1f} GB/s median ({cpu['size_mib']} MiB, "
                 f"IQR {cpu['iqr_s'] * 1e3:.3f} ms; informational)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller buffers, fewer repeats")
    parser.add_argument("--tiny", action="store_true", help=TINY_HELP)
    parser.add_argument("--size-mib", type=int, default=None, help="buffer size in MiB")
    ns = parser.parse_args(argv)
    result = measure(quick=ns.quick, size_mib=ns.size_mib, tiny=ns.tiny)
    print(describe(result))
    if ns.json:
        result["machine"] = machine_or_error()
        print(f"wrote {write_json(ns.json, result, newline=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
