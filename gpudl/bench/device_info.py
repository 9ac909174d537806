"""What machine a timing came from: CPU, BLAS threads, GPU name, driver and memory (NVML).

NVML comes from nvidia-ml-py (``import pynvml``), optional: without it the GPU memory
figures are left out and the reason is given.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from typing import Any

import numpy as np

from gpudl.backend import probe_cuda, xp_for

# The variables each threading library reads, most specific first.
THREAD_VARIABLES = {
    "openblas": ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"),
    "mkl": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
    "blis": ("BLIS_NUM_THREADS", "OMP_NUM_THREADS"),
    "openmp": ("OMP_NUM_THREADS",),
}
ALL_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                        "BLIS_NUM_THREADS")


def _cgroup_cpu_limit() -> float | None:
    """The container's CPU quota in cores (cgroup v2 ``cpu.max`` or v1 CFS), None if unset."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a container quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def thread_pools() -> list[dict[str, Any]]:
    """The BLAS and OpenMP thread pools of this process.

    Each: ``{"api": "blas" | "openmp", "library": "openblas" | "mkl" | ..., "threads": n,
    "source": "threadpoolctl" | "env VAR"}``. With threadpoolctl installed these are the
    loaded libraries' own counts; without it, the thread variables that are set (an
    unset one leaves the library's own default, usually one thread per core).
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pools = []
        for var in ALL_THREAD_VARIABLES:
            if var in os.environ:
                value = os.environ[var].strip()
                threads = int(value) if value.isdigit() else value
                openmp = var == "OMP_NUM_THREADS"
                pools.append({"api": "openmp" if openmp else "blas",
                              "library": "openmp" if openmp else var.split("_")[0].lower(),
                              "threads": threads, "source": f"env {var}"})
        return pools
    return [{"api": p.get("user_api"), "library": p.get("internal_api"),
             "threads": p.get("num_threads"), "source": "threadpoolctl"}
            for p in threadpool_info()]


def blas_info() -> dict[str, Any]:
    """BLAS library and thread count (threadpoolctl when installed, else env vars)."""
    pools = thread_pools()
    blas = [p for p in pools if p["api"] == "blas" and p["source"] == "threadpoolctl"]
    if blas:
        return {"blas": blas[0]["library"], "blas_threads": blas[0]["threads"]}
    env = {k: os.environ[k] for k in ALL_THREAD_VARIABLES if k in os.environ}
    return {"blas": "unknown (install threadpoolctl to see)", "blas_threads": env or os.cpu_count()}


def nvml_info(index: int = 0) -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py not installed (pip install 'gpudl[monitor]')"}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        info = {
            "nvml_name": pynvml.nvmlDeviceGetName(handle),
            "driver_version": pynvml.nvmlSystemGetDriverVersion(),
            "memory_total_mib": int(mem.total) // 2**20,
            "memory_used_mib": int(mem.used) // 2**20,
        }
        pynvml.nvmlShutdown()
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
    except Exception as exc:
        return {"nvml": f"NVML unavailable ({exc})"}


def cuda_info() -> dict[str, Any]:
    usable, reason = probe_cuda()
    info: dict[str, Any] = {"cuda_usable": usable, "cuda_reason": reason}
    try:
        cupy = xp_for("cuda")
    except Exception as exc:
        info["cupy"] = f"not installed ({exc})"
        return info
    info["cupy_version"] = cupy.__version__
    try:
        rt = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_runtime"] = f"{rt // 1000}.{rt % 1000 // 10}"
        drv = cupy.cuda.runtime.driverGetVersion()
        info["driver_cuda"] = f"{drv // 1000}.{drv % 1000 // 10}" if drv else "no driver"
    except Exception as exc:
        info["cuda_runtime"] = f"unknown ({exc})"
    if usable:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["gpu_name"] = name.decode() if isinstance(name, bytes) else name
        info["compute_capability"] = f"{props['major']}.{props['minor']}"
        info.update(nvml_info())
    return info


def machine_info() -> dict[str, Any]:
    import gpudl
    from gpudl.bench import blas_kernels

    cores = blas_kernels.loaded_cores()
    cpu = blas_kernels.read_cpu()
    slow = blas_kernels.slow_kernel_problem(cpu, cores)
    return {
        "gpudl_version": gpudl.__version__,
        "python": sys.version.split()[0],
        "numpy_version": np.__version__,
        "platform": platform.platform(),
        "cpu": (cpu and cpu.name) or platform.processor() or platform.machine(),
        # vendor, family and model: hypervisors give many CPUs one name ("AMD EPYC")
        "cpu_id": cpu.describe() if cpu else None,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        **blas_info(),
        "openblas_kernels": cores,
        "blas_kernels_problem": slow[0] if slow else None,  # timings at up to half speed
        **cuda_info(),
    }
