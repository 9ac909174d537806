"""What machine a timing came from: CPU, BLAS threads, GPU name, driver and memory (NVML).

NVML comes from nvidia-ml-py (``import pynvml``), optional: without it the GPU memory
figures are left out and the reason is given.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

from gpudl.backend import probe_cuda, xp_for


def blas_info() -> dict[str, Any]:
    """BLAS library and thread count (threadpoolctl when installed, else env vars)."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return {"blas": pools[0].get("internal_api"), "blas_threads": pools[0].get("num_threads")}
    except Exception:  # threadpoolctl is optional
        pass
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
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

    return {
        "gpudl_version": gpudl.__version__,
        "python": sys.version.split()[0],
        "numpy_version": np.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        **blas_info(),
        **cuda_info(),
    }
