"""Why CUDA is or is not usable: the diagnosis behind ``backend.probe_cuda()`` (and so
``gd.device_reason()``), one line a user can act on.

:func:`diagnose_cuda` is handed the cupy module by :func:`gpudl.backend.probe_cuda`
(this module never imports CuPy: ``backend`` stays the only module that does) and tells
apart: no GPU, no driver, a driver older than CuPy's CUDA, NVRTC missing, a kernel that
fails to run, or ``"CUDA GPU <name>"`` when a tiny real kernel runs and gives the right
result.

Example:
    >>> cuda_version(12040)
    '12.4'
"""

from __future__ import annotations

from typing import Any


def diagnose_cuda(cupy: Any) -> tuple[bool, str]:
    """``(usable, reason)`` for an imported cupy module; failures become the reason."""
    try:
        available = bool(cupy.is_available())
    except Exception as exc:  # pragma: no cover - depends on the driver
        return False, f"CuPy could not query the driver ({exc})"
    if not available:
        reason = "no CUDA GPU or driver was found"
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            text = str(exc)
            if "InsufficientDriver" in text or "driver version is insufficient" in text:
                reason = insufficient_driver_reason(cupy)
            elif "NoDevice" in text or "no CUDA-capable device" in text:
                reason = "no CUDA GPU was found"
            else:
                reason = f"no usable CUDA GPU ({text.splitlines()[0][:120]})"
        return False, reason
    try:  # a tiny real kernel: needs the driver, the runtime and NVRTC
        kernel = cupy.RawKernel(
            r'extern "C" __global__ void gpudl_probe(float* x) { x[threadIdx.x] += 1.0f; }',
            "gpudl_probe",
        )
        x = cupy.zeros(4, dtype=cupy.float32)
        kernel((1,), (4,), (x,))
        if float(x.sum()) != 4.0:
            return False, "a test kernel ran but gave a wrong result"
    except Exception as exc:  # pragma: no cover - depends on the machine
        text = str(exc)
        if "nvrtc" in text.lower():
            return False, f"NVRTC (the CUDA runtime compiler) is missing ({text[:120]})"
        return False, f"a test kernel failed to run ({text[:160]})"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    return True, f"CUDA GPU {name}"


def cuda_version(v: int) -> str:
    """CUDA's integer version (``major * 1000 + minor * 10``) as ``"major.minor"``."""
    return f"{v // 1000}.{v % 1000 // 10}"


def insufficient_driver_reason(cupy) -> str:
    """'No driver at all' and 'driver older than CuPy's CUDA' raise the same CUDA error."""
    try:
        driver = int(cupy.cuda.runtime.driverGetVersion())
    except Exception:
        driver = 0
    if driver == 0:
        return "no NVIDIA driver is installed (no GPU on this machine)"
    try:
        runtime = f" (CUDA {cuda_version(int(cupy.cuda.runtime.runtimeGetVersion()))})"
    except Exception:
        runtime = ""
    return (
        f"the NVIDIA driver is too old: it supports CUDA {cuda_version(driver)} but this "
        f"CuPy build needs a newer one{runtime}; update the driver or install the CuPy wheel "
        f"for CUDA {driver // 1000}"
    )


