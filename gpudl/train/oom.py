"""Turn a GPU out-of-memory error into one that says what to do.

Example:
    >>> try:
    ...     reraise_if_oom(MemoryError("out of memory"), batch_size=256)
    ... except OutOfMemoryError as e:
    ...     "batch_size=256" in str(e)
    True
"""

from __future__ import annotations

from gpudl.backend import get_device, memory_info
from gpudl.errors import GpudlError


class OutOfMemoryError(GpudlError, MemoryError):
    """The device ran out of memory during a training or evaluation step."""


def is_oom(exc: BaseException) -> bool:
    """CuPy's ``OutOfMemoryError``, a ``MemoryError``, or a CUDA "out of memory" error."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cudaerrormemoryallocation" in text


def _stats() -> str:
    try:
        info = memory_info()
    except Exception:  # the device may be in a bad state; the hint matters more
        info = {"device": get_device()}
    return ", ".join(f"{k}={v / 2**20:.0f} MiB" if isinstance(v, int) else f"{k}={v}"
                     for k, v in info.items())


def reraise_if_oom(exc: BaseException, batch_size: int, where: str = "fit") -> None:
    """Re-raise ``exc`` as :class:`OutOfMemoryError` with the batch size, pool stats and a hint.

    Does nothing (returns) when ``exc`` is not an out-of-memory error.
    """
    if not is_oom(exc) or isinstance(exc, OutOfMemoryError):
        return
    step = "a training step" if where == "fit" else "an evaluation step"
    raise OutOfMemoryError(
        f"{where}: out of memory in {step} with batch_size={batch_size} "
        f"(memory: {_stats()}; original error: {type(exc).__name__}: {exc}). "
        f"Try a smaller batch size (e.g. batch_size={max(batch_size // 2, 1)}), a smaller "
        "model, or free arrays you no longer need "
        "(cupy.get_default_memory_pool().free_all_blocks())."
    ) from exc
