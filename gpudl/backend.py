"""Device choice, the array module (``xp``), transfers, synchronisation and memory.

This is the ONLY module in gpudl that imports CuPy. Everything else asks it for the
array module (:func:`get_array_module`, :func:`xp`) or moves data with
:func:`asarray` / :func:`to_device` / :func:`to_numpy`.

Device names are ``"cpu"`` (NumPy) and ``"cuda"`` (CuPy). ``"auto"`` picks CUDA only
when CuPy imports, reports a GPU, and a tiny real kernel (compiled by NVRTC) runs;
otherwise it falls back to NumPy and logs one line with the reason (the diagnosis is
``gpudl/_cuda_probe.py``, handed the module imported here).

Example:
    >>> import gpudl as gd
    >>> gd.set_device("cpu")
    'cpu'
    >>> gd.asarray([1.0, 2.0]).dtype
    dtype('float32')
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpudl._arrays import dlpack_to_array, foreign_to_array, numeric_source, target_dtype

# The diagnosis moved to _cuda_probe; its old private names stay importable from here.
from gpudl._cuda_probe import cuda_version as _cuda_version  # noqa: F401
from gpudl._cuda_probe import diagnose_cuda
from gpudl._cuda_probe import insufficient_driver_reason as _insufficient_driver_reason  # noqa: F401
from gpudl.errors import (
    ArgumentTypeError,
    DeviceMismatchError,
    DeviceUnavailableError,
    DTypeError,
    UnknownDeviceError,
)

log = logging.getLogger("gpudl")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("gpudl: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

DEVICE_NAMES = ("auto", "cpu", "cuda")

# Resolved device ("cpu" | "cuda") or None before first use; the reason says why.
# "fallback_logged" keeps the auto -> cpu line to one per process (or per reset of _state).
_state: dict[str, Any] = {"device": None, "reason": "", "probe": None, "fallback_logged": False}


# ----------------------------------------------------------------------------- CuPy probe
def _cupy_module():
    """Return the cupy module if it is importable, else None (never raises)."""
    try:
        import cupy  # noqa: PLC0415 - the one import of cupy in gpudl

        return cupy
    except Exception:  # ImportError, or a broken install raising something else
        return None


def nccl_module():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``), or None without CuPy or NCCL (the
    ``gpudl[nccl12|13]`` extras bring the NCCL library); never raises."""
    if _cupy_module() is None:
        return None
    try:
        from cupy.cuda import nccl  # noqa: PLC0415 - part of CuPy, still imported only here
    except Exception:  # noqa: BLE001 - no NCCL library: the caller falls back
        return None
    return nccl


def _extra_hint() -> str:
    return (
        "install a CuPy wheel that matches your driver: `pip install 'gpudl[cuda13]'` "
        "(driver CUDA >= 13) or `pip install 'gpudl[cuda12]'` (CUDA 12.x); "
        "`gpudl doctor` shows what is missing"
    )


def probe_cuda() -> tuple[bool, str]:
    """Check once whether CUDA is usable. Returns ``(usable, reason)``.

    The reason is a one-line explanation: CuPy not installed, no GPU, driver too old,
    NVRTC missing, or ``"CUDA GPU <name>"`` when usable.
    """
    if _state["probe"] is not None:
        return _state["probe"]
    result = _probe_cuda_uncached()
    _state["probe"] = result
    return result


def _probe_cuda_uncached() -> tuple[bool, str]:
    cupy = _cupy_module()
    if cupy is None:
        return False, "CuPy is not installed"
    return diagnose_cuda(cupy)


# ----------------------------------------------------------------------------- device choice
def _resolve(name: str, source: str = "gpudl.set_device") -> tuple[str, str]:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DEVICE_NAMES:
        raise UnknownDeviceError(
            f"{source}: unknown device {name!r}; expected one of "
            f"{', '.join(map(repr, DEVICE_NAMES))} (env GPUDL_DEVICE takes the same names)"
        )
    if key == "cpu":
        return "cpu", "requested"
    usable, reason = probe_cuda()
    if key == "cuda":
        if not usable:
            raise DeviceUnavailableError(
                f"{source}: 'cuda' was requested but is unusable: {reason}. "
                f"Fix: {_extra_hint()}; or use set_device('cpu') / 'auto'."
            )
        return "cuda", reason
    if usable:
        return "cuda", f"auto: {reason}"
    if not _state.get("fallback_logged"):
        _state["fallback_logged"] = True
        log.info("device auto -> cpu (%s)", reason)
    return "cpu", f"auto: {reason}; using NumPy"


def set_device(name: str) -> str:
    """Choose the default device: ``"auto"``, ``"cpu"`` or ``"cuda"``. Returns the resolved one.

    Example:
        >>> set_device("cpu")
        'cpu'
    """
    device_name, reason = _resolve(name)
    _state["device"], _state["reason"] = device_name, reason
    return device_name


def get_device() -> str:
    """The current device, ``"cpu"`` or ``"cuda"`` (resolved from env GPUDL_DEVICE on first use)."""
    dev = _state["device"]
    if dev is None:
        name = os.environ.get("GPUDL_DEVICE", "").strip() or "auto"
        dev, reason = _resolve(name, source=f"GPUDL_DEVICE={name}")
        if name.lower() != "auto":
            reason = f"{reason} (env GPUDL_DEVICE={name})"
        _state["device"], _state["reason"] = dev, reason
    return dev


def device_reason() -> str:
    """Why the current device was chosen (one line)."""
    get_device()
    return _state["reason"]


@contextlib.contextmanager
def device(name: str) -> Iterator[str]:
    """Temporarily switch the default device.

    Example:
        >>> with device("cpu"):
        ...     x = asarray([1, 2])
    """
    saved = (_state["device"], _state["reason"])
    try:
        yield set_device(name)
    finally:
        _state["device"], _state["reason"] = saved


# ----------------------------------------------------------------------------- array module
def _cuda_array_types() -> tuple[type, ...]:
    # Only look if cupy was imported by someone: no cupy in sys.modules -> no cupy arrays.
    cupy = sys.modules.get("cupy")
    return (cupy.ndarray,) if cupy is not None else ()


# Types that wrap an array in a ``.value`` attribute (autodiff's Traced registers itself),
# so device questions about a value being differentiated are answered for its array.
BOXED_TYPES: tuple[type, ...] = ()


def _unboxed(a: Any) -> Any:
    """The plain array inside any boxing (autodiff.unbox_all, without importing autodiff)."""
    while BOXED_TYPES and isinstance(a, BOXED_TYPES):
        a = a.value
    return a


def shape_of(x: Any) -> tuple:
    """The shape of an array, a traced value or anything ``np.shape`` understands.

    Example:
        >>> shape_of(np.zeros((2, 3))), shape_of([1.0, 2.0]), shape_of(3.0)
        ((2, 3), (2,), ())
    """
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def device_of(a: Any) -> str:
    """``"cuda"`` for a CuPy array (traced or not), ``"cpu"`` for anything else."""
    a = _unboxed(a)
    types = _cuda_array_types()
    return "cuda" if types and isinstance(a, types) else "cpu"


def check_same_device(arrays: Any, op: str = "op") -> str:
    """Raise :class:`DeviceMismatchError` when NumPy and CuPy arrays are mixed."""
    seen: dict[str, int] = {}
    cuda_types = _cuda_array_types()
    for i, a in enumerate(arrays):
        # Only arrays count: scalars (NumPy's too) and static args mix with either device.
        if cuda_types and isinstance(a, cuda_types):
            seen.setdefault("cuda", i)
        elif isinstance(a, np.ndarray):
            seen.setdefault("cpu", i)
    if len(seen) > 1:
        raise DeviceMismatchError(
            f"{op}: arguments live on different devices: argument {seen['cpu']} is on cpu "
            f"(NumPy) and argument {seen['cuda']} is on cuda (CuPy). Move them to one device "
            f"first, e.g. gd.to_device(x, 'cuda') or gd.to_numpy(x)."
        )
    return next(iter(seen), get_device())


def xp_for(device_name: str):
    """The array module for a device name: numpy for "cpu", cupy for "cuda"."""
    if device_name == "cpu":
        return np
    cupy = _cupy_module()
    if cupy is None:
        raise DeviceUnavailableError(f"CuPy is not installed; {_extra_hint()}")
    return cupy


def xp():
    """The array module of the current device."""
    return xp_for(get_device())


def get_array_module(*arrays: Any):
    """numpy or cupy, for the given arrays (raises DeviceMismatchError when mixed).

    Example:
        >>> get_array_module(np.zeros(3)) is np
        True
    """
    dev = check_same_device([_unboxed(a) for a in arrays], "get_array_module")
    return np if dev == "cpu" else xp_for("cuda")


# ----------------------------------------------------------------------------- transfers
def _cuda_for(op: str):
    """The CuPy module, or DeviceUnavailableError when CUDA arrays cannot be made here."""
    usable, reason = probe_cuda()
    if not usable:
        raise DeviceUnavailableError(f"{op}: the data is on a CUDA GPU, unusable here: {reason}. "
                                     f"Fix: {_extra_hint()}; or copy it to the CPU (torch: x.cpu())")
    return xp_for("cuda")


def asarray(x: Any, dtype: Any = None, device: str | None = None):
    """An array on ``device`` (default: current). Floats become float32 unless ``dtype`` says.

    Ints and bools keep their dtype. ``x``: an array, list or scalar, a torch tensor, or any
    object with ``__dlpack__`` (JAX, CuPy) or ``__array__``. DLPack data already on
    ``device`` in the target dtype is shared, not copied (a CPU float32 torch tensor gives
    a NumPy view of it; a CUDA one, with ``device="cuda"``, a CuPy view); else it is copied.
    A torch tensor that requires grad is detached (torch's autograd graph does not follow;
    gpudl differentiates with ``gd.grad``); bfloat16 becomes float32 (exact). Not numbers
    (None, strings, dicts, object arrays): :class:`~gpudl.errors.DTypeError`.

    Example:
        >>> asarray([1.5, 2.5]).dtype, asarray([1, 2]).dtype
        (dtype('float32'), dtype('int64'))
    """
    dev = get_device() if device is None else _resolve(device)[0]
    x = _unboxed(x)
    if not isinstance(x, np.ndarray) and device_of(x) != "cuda":
        x = foreign_to_array(x, dev, lambda: _cuda_for("asarray"))
    x = numeric_source(x)
    target = target_dtype(x, dtype)
    if target.kind in "OUSV":
        raise DTypeError(f"asarray: dtype must be numeric (float, int, bool), got {target}")
    if dev == "cpu":
        if device_of(x) == "cuda":
            x = x.get()
        return np.asarray(x, dtype=target)
    return xp_for("cuda").asarray(x, dtype=target)


def from_dlpack(x: Any):
    """The array behind a DLPack producer (torch, JAX, CuPy, NumPy), shared, dtype kept:
    NumPy for data on the CPU, CuPy on a CUDA GPU (the producer's device decides). A torch
    tensor that requires grad is detached; bfloat16 cannot be shared (use :func:`asarray`).
    Back to torch: ``torch.from_dlpack(a)`` (gpudl arrays implement ``__dlpack__``).

    Example:
        >>> a = np.zeros(2, np.float32); from_dlpack(a)[0] = 7.0; a.tolist()
        [7.0, 0.0]
    """
    x = _unboxed(x)
    if device_of(x) == "cuda":
        return xp_for("cuda").from_dlpack(x)
    return dlpack_to_array(x, lambda: _cuda_for("from_dlpack"))


def to_dlpack(a: Any):
    """A DLPack capsule of ``a`` for legacy consumers (``torch.utils.dlpack.from_dlpack``);
    ``torch.from_dlpack(a)`` needs none. Example:

        >>> type(to_dlpack(np.ones(2))).__name__
        'PyCapsule'
    """
    a = _unboxed(a)
    if isinstance(a, np.ndarray) or device_of(a) == "cuda":
        return a.__dlpack__()
    raise ArgumentTypeError(f"to_dlpack: argument 'a' must be a gpudl (NumPy or CuPy) array, "
                            f"got {type(a).__name__}; make one with gd.asarray(a)")


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view) of ``x``, from either device.

    Example:
        >>> to_numpy(asarray([1.0])).tolist()
        [1.0]
    """
    x = _unboxed(x)
    if device_of(x) == "cuda":
        return x.get()
    return np.asarray(x)


def to_device(tree: Any, device: str):
    """Move every array leaf of a pytree (dict/list/tuple) to ``device``; dtypes are kept.

    Example:
        >>> to_device({"w": np.ones(2)}, "cpu")["w"].dtype
        dtype('float64')
    """
    from gpudl.tree import tree_map

    dev = _resolve(device)[0]

    def move(leaf):
        if isinstance(leaf, (np.ndarray, np.generic)) or device_of(leaf) == "cuda":
            if dev == "cpu":
                return to_numpy(leaf)
            return xp_for("cuda").asarray(leaf)
        return leaf

    return tree_map(move, tree)


def synchronize() -> None:
    """Wait for all queued GPU work (no-op on the CPU). Call before reading a timer."""
    cupy = sys.modules.get("cupy")
    # Not tied to the default device: CuPy arrays may be in use under device("cpu") too.
    if cupy is not None and probe_cuda()[0]:
        cupy.cuda.get_current_stream().synchronize()


def memory_info() -> dict[str, Any]:
    """Memory figures for the current device, in bytes.

    On CUDA: ``free``, ``total`` (driver) and ``pool_used``, ``pool_total`` (CuPy's pool).
    On the CPU: ``device: "cpu"``, ``rss`` and ``peak_rss`` (resident set size of this
    process, now and at its peak), where the OS tells them.

    Example:
        >>> memory_info()["device"]
        'cpu'
    """
    dev = get_device()
    if dev == "cuda":
        cupy = xp_for("cuda")
        free, total = cupy.cuda.runtime.memGetInfo()
        pool = cupy.get_default_memory_pool()
        return {
            "device": "cuda",
            "free": int(free),
            "total": int(total),
            "pool_used": int(pool.used_bytes()),
            "pool_total": int(pool.total_bytes()),
        }
    info: dict[str, Any] = {"device": "cpu"}
    try:  # Linux: the second field of statm is resident pages
        with open("/proc/self/statm") as f:
            info["rss"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except Exception:  # pragma: no cover - not Linux
        pass
    try:
        import resource

        # ru_maxrss is KiB on Linux.
        info["peak_rss"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:  # pragma: no cover - non-POSIX
        pass
    return info


def scatter_add_(target, index, values) -> None:
    """``target[index] += values`` with repeated indices accumulated, on either device."""
    if device_of(target) == "cuda":
        import cupyx  # noqa: PLC0415 - part of CuPy, still only imported here

        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def gpu_benchmark_times(fn, n_repeat: int, n_warmup: int):
    """Per-call GPU times (seconds, CUDA events) of ``fn()`` from ``cupyx.profiler.benchmark``."""
    from cupyx.profiler import benchmark  # noqa: PLC0415 - part of CuPy, still only imported here

    return benchmark(fn, n_repeat=n_repeat, n_warmup=n_warmup).gpu_times[0]


def module_of(a: Any):
    """numpy or cupy for one plain array (no checks; the fast internal version)."""
    return xp_for("cuda") if device_of(a) == "cuda" else np
