"""Latent-space interpolation: linear (lerp) and spherical (slerp) paths between codes.

Spherical interpolation (Shoemake 1985; White 2016 for generative models) follows the
great circle between two codes, so a Gaussian prior's typical norm is kept along the
path, where a straight line passes through the low-norm (atypical) middle.

Example:
    >>> import numpy as np
    >>> path = interpolate(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 3, method="spherical")
    >>> np.round(np.linalg.norm(path, axis=-1), 6).tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpudl as gd
from gpudl.errors import ConfigError

Array = Any  # a NumPy or CuPy array

#: accepted ``method`` names of :func:`interpolate`, the function names as aliases
_METHODS = {"linear": "linear", "lerp": "linear", "spherical": "spherical", "slerp": "spherical"}


def _ts(t: Any, like: Array, xp) -> Array:
    """``t`` as (T, 1, ..., 1) broadcasting against a code of ``like``'s shape (plus T)."""
    t = xp.asarray(t, dtype=like.dtype)
    return t.reshape(t.shape + (1,) * like.ndim)


def lerp(z0: Array, z1: Array, t: float | Any) -> Array:
    """``(1 - t) z0 + t z1``; an array ``t`` of shape (T,) gives (T, *z0.shape).

    Example:
        >>> lerp(np.zeros(2), np.ones(2), 0.25).tolist()
        [0.25, 0.25]
    """
    xp = gd.get_array_module(z0, z1)
    t = _ts(t, z0, xp)
    return (1 - t) * z0 + t * z1


def slerp(z0: Array, z1: Array, t: float | Any, eps: float = 1e-7) -> Array:
    """Spherical interpolation along the last axis (a batch (N, D) interpolates row-wise).

    ``sin((1-t) w) / sin(w) z0 + sin(t w) / sin(w) z1`` with ``w`` the angle between the
    codes; nearly parallel codes (``sin w < eps``) fall back to :func:`lerp`. Codes of equal
    norm keep that norm for every ``t``; ``t=0`` gives ``z0`` and ``t=1`` gives ``z1``.

    Example:
        >>> np.round(slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5), 4).tolist()
        [0.7071, 0.7071]
    """
    xp = gd.get_array_module(z0, z1)
    n0 = xp.linalg.norm(z0, axis=-1, keepdims=True)
    n1 = xp.linalg.norm(z1, axis=-1, keepdims=True)
    cos = (z0 * z1).sum(axis=-1, keepdims=True) / xp.maximum(n0 * n1, eps)
    omega = xp.arccos(xp.clip(cos, -1.0, 1.0))  # (..., 1)
    sin = xp.sin(omega)
    t = _ts(t, z0, xp)
    safe = xp.where(sin < eps, 1.0, sin)
    a = xp.where(sin < eps, 1 - t, xp.sin((1 - t) * omega) / safe)
    b = xp.where(sin < eps, t, xp.sin(t * omega) / safe)
    return (a * z0 + b * z1).astype(z0.dtype)


def interpolate(z0: Array, z1: Array, steps: int, method: str = "linear") -> Array:
    """``steps`` codes from ``z0`` to ``z1`` inclusive, shape (steps, *z0.shape).

    ``method`` is ``"linear"`` (alias ``"lerp"``) or ``"spherical"`` (alias ``"slerp"``).
    Decode the result in one batch, e.g. ``decoder(params, path.reshape(-1, D))``, to see
    the generated images morph.

    Example:
        >>> interpolate(np.zeros(3), np.ones(3), 5).shape
        (5, 3)
        >>> path = interpolate(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 3, method="slerp")
        >>> np.round(path[1], 4).tolist()
        [0.7071, 0.7071]
    """
    if method not in _METHODS:
        raise ConfigError(f"interpolate: method must be 'linear' (alias 'lerp') or "
                          f"'spherical' (alias 'slerp'), got {method!r}")
    method = _METHODS[method]
    if z0.shape != z1.shape:
        raise gd.ShapeError(f"interpolate: z0 and z1 must have one shape, got {z0.shape} and "
                            f"{z1.shape}")
    t = np.linspace(0.0, 1.0, steps)
    return lerp(z0, z1, t) if method == "linear" else slerp(z0, z1, t)
