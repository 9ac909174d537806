"""Shared pieces of ``gpudl.random``: the per-device bodies that turn Philox words into
uniform and normal floats, and the argument checks every public function runs.

Example:
    >>> _shape(3, "normal"), _check_int(5, "split", "num")
    ((3,), 5)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from gpudl import backend
from gpudl.errors import ArgumentTypeError, DTypeError, ShapeError
from gpudl.random import _cuda, _philox
from gpudl.random._cpu import NumpyStream


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
