"""What ``gd.asarray`` and ``gd.from_dlpack`` accept, turned into NumPy (or CuPy) arrays.

The conversion helpers of :mod:`gpudl.backend`. Lists and scalars go through NumPy; torch
tensors and any other object with ``__dlpack__`` are taken over by DLPack, zero-copy where
the dtype allows; objects with ``__array__`` go through ``np.asarray``. This module never
imports CuPy (backend is the only one that does): where a CuPy array must be made, the
caller hands in a function returning the CuPy module.

Example:
    >>> import numpy as np
    >>> dlpack_device_of(np.zeros(2)), dlpack_device_of([1.0])
    ('cpu', None)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl.errors import ArgumentTypeError, DTypeError, ShapeError

# DLPack device types (dlpack.h): those NumPy can read and those CuPy can.
_DLPACK_HOST = {1: "cpu", 3: "cpu"}  # kDLCPU, kDLCUDAHost (pinned host memory)
_DLPACK_CUDA = {2: "cuda", 13: "cuda"}  # kDLCUDA, kDLCUDAManaged

_NOT_NUMBERS = (str, bytes, dict, set, frozenset)


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` (torch is never imported here: no torch loaded, no tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def dlpack_device_of(x: Any) -> str | None:
    """``"cpu"`` or ``"cuda"`` for a DLPack producer by its ``__dlpack_device__``,
    ``"DLPack device type <n>"`` for other devices, None for objects without DLPack."""
    if not hasattr(x, "__dlpack__"):
        return None
    try:
        kind = int(x.__dlpack_device__()[0])
    except Exception:  # no __dlpack_device__: the producer is older than DLPack 0.6
        return "cpu"
    return _DLPACK_HOST.get(kind) or _DLPACK_CUDA.get(kind) or f"DLPack device type {kind}"


def exportable_tensor(t: Any, op: str, upcast_bfloat16: bool):
    """A torch tensor DLPack can export: detached (sharing memory), the lazy conjugate and
    negative bits resolved; bfloat16 upcast to float32 (a copy) or refused."""
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if str(t.dtype) == "torch.bfloat16":
        if not upcast_bfloat16:
            raise DTypeError(f"{op}: argument 'x' is a torch.bfloat16 tensor, which NumPy and CuPy "
                             "cannot hold, so it cannot be shared; use gd.asarray(x) (upcasts to "
                             "float32, a copy) or x.float() first")
        t = t.float()
    return t


def _host_from_dlpack(x: Any, op: str) -> np.ndarray:
    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise DTypeError(f"{op}: argument 'x' ({type(x).__module__}.{type(x).__name__}, dtype "
                         f"{getattr(x, 'dtype', '?')}) cannot be shared with NumPy by DLPack "
                         f"({exc}); convert it to float32/float64/int/bool first") from None


def foreign_to_array(x: Any, device: str, cuda: Callable[[], Any], op: str = "asarray") -> Any:
    """``x`` as a NumPy or CuPy array when it is a torch tensor or another DLPack producer
    (zero-copy where it already lives on ``device``); anything else is returned as it is.

    ``device`` is where the caller will put the result; ``cuda()`` returns the CuPy module.
    """
    if is_torch_tensor(x):
        t = exportable_tensor(x, op, upcast_bfloat16=True)
        if t.device.type == "cuda" and device == "cuda":
            return cuda().from_dlpack(t)
        if t.device.type != "cpu":  # a CUDA (or other accelerator) tensor asked for the host
            t = t.cpu()
        return _host_from_dlpack(t, op)
    where = dlpack_device_of(x)
    if where == "cpu":
        try:
            return _host_from_dlpack(x, op)
        except DTypeError:
            if hasattr(x, "__array__"):
                return x  # np.asarray reads it instead
            raise
    if where == "cuda":
        array = cuda().from_dlpack(x)
        return array if device == "cuda" else array.get()
    if where is not None and not hasattr(x, "__array__"):
        raise ArgumentTypeError(f"{op}: argument 'x' lives on {where}, which gpudl has no arrays "
                                "for (NumPy: CPU, CuPy: CUDA); copy it to the CPU first")
    return x


def dlpack_to_array(x: Any, cuda: Callable[[], Any]) -> Any:
    """``gd.from_dlpack`` of a producer that is not a CuPy array: NumPy for data on the
    CPU, CuPy (``cuda()``) for data on a CUDA GPU, dtype kept, memory shared."""
    if is_torch_tensor(x):
        x = exportable_tensor(x, "from_dlpack", upcast_bfloat16=False)
    where = dlpack_device_of(x)
    if where is None:
        raise ArgumentTypeError(f"from_dlpack: argument 'x' must have __dlpack__ (a torch tensor, "
                                f"a NumPy, CuPy or JAX array), got {type(x).__name__}; for lists "
                                "and other array-likes use gd.asarray(x)")
    if where == "cuda":
        return cuda().from_dlpack(x)
    if where != "cpu":
        raise ArgumentTypeError(f"from_dlpack: argument 'x' lives on {where}, which gpudl has no "
                                "arrays for (NumPy: CPU, CuPy: CUDA); copy it to the CPU first")
    return _host_from_dlpack(x, "from_dlpack")


def numeric_source(x: Any) -> Any:
    """``x``, or a NumPy array of a list/scalar; not numbers (None, text, dicts, objects)
    raise DTypeError, ragged nested lists ShapeError."""
    if x is None or isinstance(x, _NOT_NUMBERS):
        raise DTypeError(f"asarray: argument 'x' must be numbers (an array, a list of numbers or "
                         f"a scalar), got {type(x).__name__} {repr(x)[:60]}. Convert it first "
                         "(a dict of arrays is a tree: use gd.to_device).")
    if getattr(x, "dtype", None) is None or not isinstance(x.dtype, np.dtype):
        try:  # lists, scalars, and objects with __array__ whose dtype is not NumPy's
            x = np.asarray(x)
        except ValueError as exc:  # ragged nested lists
            raise ShapeError(f"asarray: argument 'x' is not rectangular ({exc}); every row of "
                             "a nested list needs the same length") from None
    if x.dtype.kind in "OUSV":
        raise DTypeError(f"asarray: argument 'x' must hold numbers, got dtype {x.dtype} (Python "
                         "objects, text or records); convert it first, e.g. np.asarray(x, "
                         "dtype=np.float32), or encode text with a vocabulary")
    return x


def target_dtype(x: Any, dtype: Any) -> np.dtype:
    """``dtype`` when given; otherwise ``x``'s, with every float made float32."""
    if dtype is not None:
        return np.dtype(dtype)
    kind = np.dtype(x.dtype)
    return np.dtype(np.float32) if kind.kind == "f" else kind
