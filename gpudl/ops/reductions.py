"""Reductions: sum, mean, var, std, max/min, logsumexp, argmax/argmin, cumsum.

``max``/``min`` send the gradient to the arg-max, split evenly between exact ties (the
subgradient NumPy-style ``amax`` uses; with distinct values it is the arg-max alone).

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> round(float(ops.logsumexp(np.array([0.0, 0.0]))), 4)
    0.6931
"""

from __future__ import annotations

import builtins

import numpy as np

from gpudl.autodiff import Primitive, nondifferentiable
from gpudl.backend import get_array_module
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError
from gpudl.ops.elementwise import equal, exp, sqrt, where
from gpudl.ops.shape import broadcast_to, reshape


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def _keepdims_shape(shape: tuple, axis) -> tuple:
    axes = _axes(axis, len(shape))
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_back(g, x, axis, keepdims: bool):
    """Broadcast a reduced cotangent ``g`` back to ``x``'s shape."""
    if not keepdims:
        g = reshape(g, _keepdims_shape(x.shape, axis))
    return broadcast_to(g, x.shape)


def _sum_impl(x, *, axis=None, keepdims=False):
    return np.sum(x, axis=axis, keepdims=keepdims)


_sum = Primitive(
    "sum",
    _sum_impl,
    lambda g, out, x, *, axis=None, keepdims=False: (_expand_back(g, x, axis, keepdims),),
)


def _check_out(out, op: str) -> None:
    if out is not None:
        raise ArgumentTypeError(f"ops.{op}: out= is not supported (gpudl ops return new arrays)")


def _cast(x, dtype):
    if dtype is None:
        return x
    from gpudl.ops.elementwise import astype

    return astype(x, dtype)


def sum(x, axis=None, dtype=None, out=None, keepdims: bool = False):  # noqa: A001 - NumPy's name
    """Sum over ``axis`` (None: all), with NumPy's signature (``out`` must be None).

    Example:
        >>> sum(np.ones((2, 3)), axis=0).tolist()
        [2.0, 2.0, 2.0]
    """
    _check_out(out, "sum")
    return _sum(_cast(x, dtype), axis=_norm_axis(axis, x), keepdims=keepdims)


def _norm_axis(axis, x=None):
    """None, or a sorted tuple of non-negative axes (checked against ``x``'s rank)."""
    if axis is None:
        return None
    if type(axis) is int:  # the common case, checked without a generator
        axes = (axis,)
    else:
        axes = (axis,) if isinstance(axis, int | np.integer | float | np.bool_) else tuple(axis)
        if any(isinstance(a, bool | np.bool_) or not isinstance(a, int | np.integer)
               for a in axes):
            # True is the int 1 to Python: axis=True would sum over axis 1
            raise ArgumentTypeError(f"axis must be None, an int or a tuple of ints, got "
                                    f"{axis!r}")
    if x is None:
        return axes if len(axes) != 1 else axes[0]
    shape = _shape(x)
    ndim = len(shape)
    if axes and not ndim:  # NumPy: a 0-d array has no axis to reduce
        raise ShapeError(f"axis {axis!r} is out of range for a 0-d array (it has no axes); "
                         "use axis=None")
    for a in axes:
        if not -ndim <= int(a) < ndim:
            raise ShapeError(f"axis {a} is out of range for an array of shape {shape}")
    return tuple(sorted(int(a) % ndim for a in axes))


def _count(shape: tuple, axis) -> int:
    n = 1
    for a in _axes(axis, len(shape)):
        n *= shape[a]
    return n


def mean(x, axis=None, dtype=None, out=None, keepdims: bool = False):
    """Arithmetic mean over ``axis``.

    Example:
        >>> mean(np.array([[1.0, 2.0], [3.0, 5.0]]), axis=1).tolist()
        [1.5, 4.0]
    """
    _check_out(out, "mean")
    x = _cast(x, dtype)
    axis = _norm_axis(axis, x)
    # an empty slice: 0 / 0 = NaN, as NumPy and torch (never a made-up 0)
    n = _count(_shape(x), axis)
    return sum(x, axis=axis, keepdims=keepdims) / float(n)


def var(x, axis=None, dtype=None, out=None, ddof: int = 0, keepdims: bool = False):
    """Variance (``ddof=0``: population, as NumPy; ``ddof=1``: unbiased, as torch.var).

    Example:
        >>> float(var(np.array([1.0, 3.0]), ddof=1))
        2.0
    """
    _check_out(out, "var")
    x = _cast(x, dtype)
    axis = _norm_axis(axis, x)
    centred = x - mean(x, axis=axis, keepdims=True)
    # ddof >= the count: a divisor of 0, NaN (inf for a nonzero sum), as NumPy and torch
    n = builtins.max(_count(_shape(x), axis) - ddof, 0)
    return sum(centred * centred, axis=axis, keepdims=keepdims) / float(n)


def std(x, axis=None, dtype=None, out=None, ddof: int = 0, keepdims: bool = False):
    """Standard deviation, ``sqrt(var)`` (same arguments as :func:`var`)."""
    return sqrt(var(x, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims))


def _extreme_vjp(g, out, x, *, axis=None, keepdims=False):
    out_k = out if keepdims else reshape(out, _keepdims_shape(x.shape, axis))
    hit = equal(x, out_k)
    count = np.sum(hit, axis=axis, keepdims=True)
    g_k = _expand_back(g, x, axis, keepdims)
    return (where(hit, g_k, 0.0) / count.astype(out.dtype),)


_max = Primitive(
    "max", lambda x, *, axis=None, keepdims=False: np.max(x, axis=axis, keepdims=keepdims),
    _extreme_vjp,
)
_min = Primitive(
    "min", lambda x, *, axis=None, keepdims=False: np.min(x, axis=axis, keepdims=keepdims),
    _extreme_vjp,
)


def max(x, axis=None, out=None, keepdims: bool = False):  # noqa: A001 - NumPy's name
    """Maximum over ``axis``; the gradient goes to the arg-max (ties share it).

    Example:
        >>> max(np.array([[1.0, 4.0], [3.0, 2.0]]), axis=0).tolist()
        [3.0, 4.0]
    """
    _check_out(out, "max")
    return _max(x, axis=_norm_axis(axis, x), keepdims=keepdims)


def min(x, axis=None, out=None, keepdims: bool = False):  # noqa: A001 - NumPy's name
    """Minimum over ``axis``; the gradient goes to the arg-min (ties share it)."""
    _check_out(out, "min")
    return _min(x, axis=_norm_axis(axis, x), keepdims=keepdims)


amax, amin = max, min


def _logsumexp_impl(x, *, axis=None, keepdims=False):
    if x.size == 0:  # an empty sum is 0, its log -inf (torch); np.max has no identity
        out = get_array_module(x).full(_keepdims_shape(x.shape, axis), -np.inf, x.dtype)
        return out if keepdims else np.squeeze(out, axis=axis if axis is not None else None)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros_like(m))  # rows of -inf stay -inf, not NaN
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer for -inf rows
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis if axis is not None else None)


def _logsumexp_vjp(g, out, x, *, axis=None, keepdims=False):
    out_k = out if keepdims else reshape(out, _keepdims_shape(x.shape, axis))
    return (_expand_back(g, x, axis, keepdims) * exp(x - out_k),)


_logsumexp = Primitive("logsumexp", _logsumexp_impl, _logsumexp_vjp)


def logsumexp(x, axis=None, keepdims: bool = False):
    """``log(sum(exp(x)))`` computed stably (the max is subtracted first).

    Example:
        >>> float(logsumexp(np.array([1000.0, 1000.0])))  # no overflow
        1000.6931471805599
    """
    return _logsumexp(x, axis=_norm_axis(axis, x), keepdims=keepdims)


_argmax = nondifferentiable(
    "argmax", lambda x, *, axis=None, keepdims=False: np.argmax(x, axis=axis, keepdims=keepdims)
)
_argmin = nondifferentiable(
    "argmin", lambda x, *, axis=None, keepdims=False: np.argmin(x, axis=axis, keepdims=keepdims)
)


def argmax(x, axis=None, out=None, *, keepdims: bool = False):
    """Index of the maximum (no gradient; first occurrence on ties).

    Example:
        >>> argmax(np.array([[1.0, 3.0], [2.0, 0.0]]), axis=1).tolist()
        [1, 0]
    """
    _check_out(out, "argmax")
    return _argmax(x, axis=axis, keepdims=keepdims)


def argmin(x, axis=None, out=None, *, keepdims: bool = False):
    """Index of the minimum (no gradient)."""
    _check_out(out, "argmin")
    return _argmin(x, axis=axis, keepdims=keepdims)


def _top_k_mask_impl(x, *, k, axis):
    xp = get_array_module(x)
    # a stable sort of -x: on ties the lower index wins, as ONNX's TopK decides
    order = xp.argsort(-x, axis=axis, kind="stable")
    rank = xp.argsort(order, axis=axis, kind="stable")  # each entry's place in that order
    return rank < k


_top_k_mask = nondifferentiable("top_k_mask", _top_k_mask_impl)


def top_k_mask(x, k: int, axis: int = -1):
    """Boolean mask of the ``k`` largest entries along ``axis`` (no gradient; on ties the
    lower index is kept, as ONNX's TopK). An ONNX export computes it with TopK.

    Example:
        >>> top_k_mask(np.array([[0.1, 3.0, -1.0, 2.0]]), 2).tolist()
        [[False, True, False, True]]
    """
    k, n = int(k), _shape(x)[axis]
    if not 1 <= k <= n:
        raise ConfigError(f"top_k_mask: k must be in [1, {n}] (the size of axis {axis}), "
                          f"got {k}")
    return _top_k_mask(x, k=k, axis=_norm_axis(axis, x)[0])


# --------------------------------------------------------------------------- scans
def _cumsum_vjp(g, out, x, *, axis):
    from gpudl.ops.shape import flip

    # d out[j] / d x[i] = 1 for j >= i: a reversed cumulative sum of g.
    return (flip(_cumsum(flip(g, axis), axis=axis), axis),)


_cumsum = Primitive("cumsum", lambda x, *, axis: np.cumsum(x, axis=axis), _cumsum_vjp)


def cumsum(x, axis: int | None = None, dtype=None, out=None):
    """Cumulative sum along ``axis`` (over the flattened array when None).

    Example:
        >>> cumsum(np.array([1.0, 2.0, 3.0])).tolist()
        [1.0, 3.0, 6.0]
    """
    from gpudl.ops.shape import ravel

    _check_out(out, "cumsum")
    x = _cast(x, dtype)
    if axis is None:
        x, axis = ravel(x), 0
    return _cumsum(x, axis=_norm_axis(axis, x)[0])

