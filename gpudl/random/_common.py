"""Shared pieces of ``gpudl.random``: the per-device bodies that turn Philox words into
uniform and normal floats, the argument checks every public function runs, and
:func:`no_draw` (samplers that return zeros, for shape-only init).

Example:
    >>> _shape(3, "normal"), _check_int(5, "split", "num")
    ((3,), 5)
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpudl import backend
from gpudl.errors import ArgumentTypeError, DTypeError, ShapeError
from gpudl.random import _cuda, _philox
from gpudl.random._cpu import NumpyStream

# ----------------------------------------------------------------------------- drawing off
_LOCAL = threading.local()


@contextlib.contextmanager
def no_draw() -> Iterator[None]:
    """Within this block (in this thread), gd.random's samplers draw nothing: after checking
    their arguments as usual they return zeros of the right shape, dtype and device (lazily
    allocated pages, so a 100M-element "draw" is free); ``randint`` returns ``low``,
    ``permutation`` the identity. Keys still split and fold as usual. This is what
    ``model.init_shapes`` runs ``init`` under.

    Example:
        >>> import gpudl as gd
        >>> with gd.random.no_draw():
        ...     w = gd.random.normal(gd.random.key(0), (2, 3), device="cpu")
        >>> w.shape, float(abs(w).max())
        ((2, 3), 0.0)
    """
    depth = getattr(_LOCAL, "depth", 0)
    _LOCAL.depth = depth + 1
    try:
        yield
    finally:
        _LOCAL.depth = depth


def _drawing_off() -> bool:
    return getattr(_LOCAL, "depth", 0) > 0


# ----------------------------------------------------------------------------- bodies
def _words32(words, n: int, xp):
    """``n`` 32-bit words, plane layout (uint32 from the fast bodies)."""
    if xp is np:
        return NumpyStream(words).words32(n)
    return _cuda.words32(words, n) if _cuda.fits(n) else _philox.words32_reference(words, n, xp)


def _words64(words, n: int, xp):
    """``n`` 64-bit words (uint64)."""
    if xp is np:
        return NumpyStream(words).words64(n)
    return _cuda.words64(words, n) if _cuda.fits(n) else _philox.words64_reference(words, n, xp)


def _unit_generic(words, n: int, dt: np.dtype, xp):
    """_philox.unit_reference on the words of the fastest body (CuPy float16)."""
    bits = np.finfo(dt).nmant + 1
    if bits <= 32:
        ints = _words32(words, n, xp) >> (32 - bits)
    else:
        ints = _words64(words, n, xp) >> (64 - bits)
    return ints.astype(dt) * dt.type(2.0 ** -bits)


def _std_normal(words, n: int, dt: np.dtype, xp):
    """``n`` N(0, 1) draws of dtype ``dt`` (the float64 Box-Muller draw rounded to dt)."""
    if xp is np:
        return NumpyStream(words).normal(n, dt)
    if _cuda.fits(n):  # float16 via float32, as _philox.cast
        return _cuda.normal(words, n, np.dtype(np.float64 if dt == np.float64 else np.float32)
                                ).astype(dt, copy=False)
    return _philox.cast(_philox.standard_normal64_reference(words, n, xp), dt)


# ----------------------------------------------------------------------------- argument checks
def _key_words(k: Any, op: str) -> tuple[int, int]:
    arr = k
    if backend.device_of(k) == "cuda":
        arr = k.get()
    if not isinstance(arr, np.ndarray) or arr.shape != (2,) or arr.dtype != np.uint32:
        got = (f"array of shape {arr.shape}, dtype {arr.dtype}" if isinstance(arr, np.ndarray)
               else f"{type(k).__name__} {k!r}"[:80])
        raise ArgumentTypeError(
            f"gpudl.random.{op}: argument 'key' must be a key (uint32 array of shape (2,)), "
            f"got {got}. Make one with gd.random.key(seed) and derive more with "
            f"gd.random.split(key) / gd.random.fold_in(key, i)."
        )
    return int(arr[0]), int(arr[1])


def _check_int(value: Any, op: str, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"gpudl.random.{op}: argument '{name}' must be an int, "
                        f"got {type(value).__name__} {value!r}")
    return int(value)


def _shape(shape: Any, op: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if dims is None or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral)
                           or d < 0 for d in dims):
        raise ShapeError(f"gpudl.random.{op}: argument 'shape' must be an int or a tuple of "
                         f"non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _float_dtype(dtype: Any, op: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float16, np.float32, np.float64):
        raise DTypeError(f"gpudl.random.{op}: argument 'dtype' must be float16, float32 or "
                         f"float64, got {dt}")
    return dt


def _device(device: str | None) -> str:
    return backend.get_device() if device is None else backend._resolve(device)[0]
