"""Array creation on the current device (or a given one): zeros, ones, full, eye, arange...

Floating results are float32 unless ``dtype`` says otherwise, like :func:`gpudl.asarray`.

Example:
    >>> from gpudl import ops
    >>> ops.eye(2, device="cpu").tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.autodiff import unbox_all
from gpudl.backend import get_device, module_of, xp_for


def _xp(device: str | None):
    return xp_for(get_device() if device is None else device)


def zeros(shape, dtype: Any = np.float32, device: str | None = None):
    """Zeros of ``shape`` (float32 by default) on ``device`` (default: the current one)."""
    return _xp(device).zeros(shape, dtype=dtype)


def ones(shape, dtype: Any = np.float32, device: str | None = None):
    """Ones of ``shape`` (float32 by default)."""
    return _xp(device).ones(shape, dtype=dtype)


def empty(shape, dtype: Any = np.float32, device: str | None = None):
    """Uninitialised array of ``shape`` (float32 by default)."""
    return _xp(device).empty(shape, dtype=dtype)


def full(shape, fill_value, dtype: Any = np.float32, device: str | None = None):
    """An array of ``shape`` filled with ``fill_value`` (float32 unless ``dtype`` says)."""
    return _xp(device).full(shape, fill_value, dtype=dtype)


def eye(
    n: int, m: int | None = None, k: int = 0, dtype: Any = np.float32, device: str | None = None
):
    """Identity-like matrix: ones on diagonal ``k`` (NumPy's signature, float32 default).

    Example:
        >>> eye(2, 3, k=1, device="cpu").tolist()
        [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    return _xp(device).eye(n, m, k, dtype=dtype)


def arange(start, stop=None, step=1, dtype: Any = None, device: str | None = None):
    """Evenly spaced values; integer arguments give int64, float ones float32 (not float64).

    Example:
        >>> arange(0.0, 1.0, 0.5, device="cpu").dtype
        dtype('float32')
    """
    if dtype is None and any(isinstance(v, float) for v in (start, stop, step)):
        dtype = np.float32
    return _xp(device).arange(start, stop, step, dtype=dtype)


def linspace(start, stop, num: int = 50, dtype: Any = np.float32, device: str | None = None):
    return _xp(device).linspace(start, stop, num, dtype=dtype)


def zeros_like(x, dtype: Any = None):
    raw = unbox_all(x)
    return module_of(raw).zeros(raw.shape, dtype=dtype or raw.dtype)


def ones_like(x, dtype: Any = None):
    raw = unbox_all(x)
    return module_of(raw).ones(raw.shape, dtype=dtype or raw.dtype)


def full_like(x, fill_value, dtype: Any = None):
    raw = unbox_all(x)
    return module_of(raw).full(raw.shape, fill_value, dtype=dtype or raw.dtype)
