"""Turn a GPU out-of-memory error into one that says what to do."""

from __future__ import annotations

from gpudl.backend import get_device, memory_info
from gpudl.errors import GpudlError


class OutOfMemoryError(GpudlError, MemoryError):
    """The GPU ran out of memory during a training step."""


def is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower() or isinstance(
        exc, MemoryError)


def reraise_if_oom(exc: BaseException, batch_size: int) -> None:
    """Re-raise ``exc`` as :class:`OutOfMemoryError` with the batch size, pool stats and a hint."""
    if not is_oom(exc) or isinstance(exc, OutOfMemoryError):
        return
    try:
        info = memory_info()
    except Exception:  # the device may be in a bad state; the hint matters more
        info = {"device": get_device()}
    stats = ", ".join(f"{k}={v / 2**20:.0f} MiB" if isinstance(v, int) else f"{k}={v}"
                      for k, v in info.items())
    raise OutOfMemoryError(
        f"fit: out of memory in a training step with batch_size={batch_size} ({stats}). "
        f"Try a smaller batch size (e.g. {max(batch_size // 2, 1)}), a smaller model, or free "
        "arrays you no longer need (cupy.get_default_memory_pool().free_all_blocks())."
    ) from exc
