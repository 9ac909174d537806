"""``gpudl doctor``: versions, the device choice and why, GPU, driver, memory, BLAS threads.

Each problem found ends in a ``fix:`` line that says what to do. Besides the GPU checks,
it warns when the BLAS or OpenMP thread pools run more threads than the cores this
process may use (CPU affinity, capped by a container quota): the threads then take turns
on the cores and every matrix product slows down, often by several times; and when NumPy's
OpenBLAS runs kernels without AVX-512 on a CPU that has it (a pinned ``OPENBLAS_CORETYPE``:
up to half the matrix-product speed, ``gpudl/bench/blas_kernels.py``).

Example:
    >>> thread_warnings([{"api": "blas", "library": "openblas", "threads": 8,
    ...                   "source": "threadpoolctl"}], cores=2)[0][1][:47]
    'export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpudl.bench.device_info import ALL_THREAD_VARIABLES, THREAD_VARIABLES


def thread_warnings(pools: list[dict[str, Any]], cores: int) -> list[tuple[str, str]]:
    """``(problem, fix)`` for each thread pool with more threads than ``cores``."""
    warnings = []
    for pool in pools:
        threads, library = pool["threads"], pool["library"] or "unknown"
        if not isinstance(threads, int):  # an env variable that is not a number
            var = pool["source"].removeprefix("env ")
            warnings.append((f"{var}={threads!r} is not a thread count",
                             f"export {var}={cores}"))
            continue
        if threads <= cores:
            continue
        setting = " ".join(f"{v}={cores}" for v in THREAD_VARIABLES.get(library,
                                                                        ALL_THREAD_VARIABLES))
        name = "BLAS" if pool["api"] == "blas" else "OpenMP"
        warnings.append((
            f"{name} ({library}) runs {threads} threads on {cores} usable CPU cores (from "
            f"{pool['source']}): the threads compete for the cores and slow CPU training down",
            f"export {setting} before starting Python (or run the work inside "
            f"threadpoolctl.threadpool_limits({cores}))",
        ))
    return warnings


def _gpu_problems(info: dict[str, Any], out: Callable[[str], None]) -> list[str]:
    if info.get("cuda_usable"):
        out(f"GPU: {info.get('gpu_name')} (compute {info.get('compute_capability')}), "
            f"driver CUDA {info.get('driver_cuda')}, CuPy runtime {info.get('cuda_runtime')}")
        if "memory_total_mib" in info:
            out(f"GPU memory (NVML): {info['memory_used_mib']} / {info['memory_total_mib']} MiB used")
        else:
            out(f"GPU memory: {info.get('nvml')}")
        return []
    reason = info["cuda_reason"]
    out(f"GPU: none usable ({reason})")
    if "not installed" in reason:
        return ["CuPy is missing: pip install 'gpudl[cuda13]' (or [cuda12] for a CUDA 12 driver)"]
    if "too old" in reason:
        return ["update the NVIDIA driver, or install cupy-cuda12x for an older one"]
    if "NVRTC" in reason:
        return ["install the NVRTC wheel: pip install nvidia-cuda-nvrtc"]
    if "driver" in reason or "no CUDA GPU" in reason:
        return ["gpudl runs on the CPU (NumPy). To use an NVIDIA GPU, install its driver "
                "(`nvidia-smi` must work), then `pip install 'gpudl[cuda13]'` (or [cuda12])"]
    return ["see the reason above; `pip install 'gpudl[cuda13]'` needs a working NVIDIA "
            "driver and GPU"]


def doctor(out: Callable[[str], None] = print) -> int:
    """Print versions, the device choice and why, GPU, driver, memory, BLAS; name each fix."""
    import gpudl as gd
    from gpudl.bench import blas_kernels, device_info

    info = device_info.machine_info()
    out(f"gpudl {info['gpudl_version']}   Python {info['python']}   NumPy {info['numpy_version']}")
    out(f"CuPy: {info.get('cupy_version', info.get('cupy'))}")
    out(f"device: {gd.get_device()} ({gd.device_reason()})")
    problems = _gpu_problems(info, out)
    cores = device_info.usable_cores()
    cpu_id = f" ({info['cpu_id']})" if info.get("cpu_id") else ""
    out(f"CPU: {info['cpu']}{cpu_id}, {info['cpu_count']} cores ({cores} usable by this process); "
        f"BLAS {info['blas']} threads {info['blas_threads']}")
    pools = device_info.thread_pools()
    if not any(p["source"] == "threadpoolctl" for p in pools):
        out("thread pools: install threadpoolctl to see the BLAS library's own thread count")
    warnings = thread_warnings(pools, cores)
    if info["openblas_kernels"]:  # machine_info read them (blas_kernels.loaded_cores)
        out(f"OpenBLAS kernels: {', '.join(info['openblas_kernels'])}")
    slow_kernels = blas_kernels.slow_kernel_problem(blas_kernels.read_cpu(),
                                                    info["openblas_kernels"])
    for problem, fix in warnings + ([slow_kernels] if slow_kernels else []):
        out(f"warning: {problem}")
        problems.append(fix)
    try:
        from gpudl.cuda import kernel_dir

        out(f"kernels: {kernel_dir()}")
    except Exception as exc:  # a broken install
        problems.append(f"kernel sources not found ({exc}); reinstall gpudl")
    for p in problems:
        out(f"fix: {p}")
    if not problems:
        out("no problems found")
    return 0
