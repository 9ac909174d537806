"""Freed host memory kept for reuse: glibc's malloc told not to hand it back to the OS at once.

A training step on the CPU allocates and frees the same large temporaries every step
(activations, gradients, the optimizer's scratch: hundreds of KiB to MiB each). glibc's
malloc gives the free top of its heap back to the OS once it exceeds ``M_TRIM_THRESHOLD``
and serves blocks above ``M_MMAP_THRESHOLD`` with fresh mappings; both thresholds adapt
as big blocks are freed, but how far depends on the order of earlier frees. So the same
step may find its memory kept in one process and, in another, returned and faulted in
again (zeroed by the kernel page by page) every step: in ``gd.fit``'s epoch of the MLP
784-256-128-10 of ``benchmarks/cpu_vs_torch.py`` that was ~8,000 extra page faults and
~25% more CPU time per epoch than the same steps in a bare loop.

:func:`keep_freed_host_memory` (``fit``, ``evaluate`` and ``predict`` call it) sets both
thresholds once per process to the values glibc's own adaptation tops out at on 64-bit
Linux: blocks up to 32 MiB come from the heap and are reused, and up to 64 MiB of free
heap top is kept. Memory use then settles at the run's working set plus at most 64 MiB,
as after glibc has adapted. Larger blocks are still mapped and unmapped each time.

Nothing is changed outside glibc (macOS, Windows, musl), nor where the user chose:
glibc's own settings (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``, ``glibc.malloc.*`` in ``GLIBC_TUNABLES``) or
``GPUDL_KEEP_HOST_MEMORY=0``.

Example:
    >>> isinstance(keep_freed_host_memory(), bool)   # True where glibc took the settings
    True
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc (4 MiB * sizeof(long)); the dynamic trim
# threshold is twice the mmap threshold.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_GLIBC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
              "MALLOC_MMAP_MAX_")
_OFF = ("0", "false", "no", "off")

_applied: bool | None = None  # None: not tried yet in this process


def user_chose() -> str | None:
    """The environment variable by which the user decided malloc's behaviour, or None."""
    if os.environ.get("GPUDL_KEEP_HOST_MEMORY", "").strip().lower() in _OFF:
        return "GPUDL_KEEP_HOST_MEMORY"
    for name in _GLIBC_ENV:
        if os.environ.get(name, "").strip():
            return name
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def keep_freed_host_memory() -> bool:
    """Set glibc's trim and mmap thresholds (see the module docstring), once per process;
    True when they are set (now or by an earlier call), False where nothing was changed."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if not sys.platform.startswith("linux") or user_chose() is not None:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such symbol)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting either one ends glibc's own adaptation, and a trim
    # threshold set alone would leave the mmap threshold wherever it had got to.
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


__all__ = ["keep_freed_host_memory", "user_chose", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]
