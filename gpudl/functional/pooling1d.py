"""1-D pooling over (N, C, L), torch semantics, on the 2-D pooling primitives.

``max_pool1d`` and ``avg_pool1d`` check their arguments as 1-D ops (messages name
``F.max_pool1d``, the length, the 1-D kernel), then run ``F.max_pool2d``/``F.avg_pool2d``
on the (N, C, 1, L) view with a (1, k) window: the CUDA kernels, NumPy twins and vjps of
``pooling.py`` serve both, and nothing here needs backward code.

Example:
    >>> x = np.arange(6.0).reshape(1, 1, 6)
    >>> max_pool1d(x, 2).tolist(), avg_pool1d(x, 3).tolist()
    ([[[1.0, 3.0, 5.0]]], [[[1.0, 4.0]]])
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (the docstring examples use np)

from gpudl import ops
from gpudl.backend import shape_of
from gpudl.errors import ShapeError
from gpudl.functional._checks import check_float_operands, is_int
from gpudl.functional.pooling import avg_pool2d, max_pool2d, max_pool2d_with_indices


def _one_int(v, name: str, op: str, minimum: int) -> int:
    """An int, or torch's 1-tuple spelling of one, ``>= minimum``."""
    if isinstance(v, tuple | list) and len(v) == 1:
        v = v[0]
    if not is_int(v) or int(v) < minimum:
        raise ShapeError(f"{op}: {name} must be an int >= {minimum} (or a 1-tuple), got {v!r}")
    return int(v)


def _geometry_1d(op: str, x, kernel_size, stride, padding) -> tuple[tuple, int, int, int]:
    """Checks of a 1-D pool; returns (x's shape, kernel, stride, padding)."""
    check_float_operands(op, {"x": x})
    xs = shape_of(x)
    if len(xs) != 3:
        raise ShapeError(f"{op}: x must be 3-D (N, C, L), got shape {xs}; for one sequence "
                         f"use x[None]")
    k = _one_int(kernel_size, "kernel_size", op, 1)
    s = k if stride is None else _one_int(stride, "stride", op, 1)
    p = _one_int(padding, "padding", op, 0)
    if 2 * p > k:
        raise ShapeError(f"{op}: padding must be at most half the kernel size {k} (as torch), "
                         f"got {padding!r}")
    if xs[2] + 2 * p < k:
        raise ShapeError(f"{op}: the window of {k} is longer than the padded input "
                         f"({xs[2] + 2 * p} from x {xs}); use a smaller kernel_size or more "
                         f"padding")
    return xs, k, s, p


def _as_2d(x, xs):
    return ops.reshape(x, (xs[0], xs[1], 1, xs[2]))  # (N, C, 1, L)


def _as_1d(y):
    ys = shape_of(y)
    return ops.reshape(y, (ys[0], ys[1], ys[3]))  # (N, C, Lo)


def max_pool1d(x, kernel_size, stride=None, padding=0):
    """Max pooling (torch): x (N, C, L) -> (N, C, Lo), ``Lo = (L + 2p - k)//s + 1``.

    ``stride`` defaults to ``kernel_size``; padding counts as -inf and is at most half the
    kernel. The gradient goes to each window's arg-max (the first maximum on ties).

    Example:
        >>> max_pool1d(np.array([[[1.0, 3.0, 2.0, 5.0, 4.0]]]), 3, stride=2).tolist()
        [[[3.0, 5.0]]]
    """
    xs, k, s, p = _geometry_1d("F.max_pool1d", x, kernel_size, stride, padding)
    return _as_1d(max_pool2d(_as_2d(x, xs), (1, k), (1, s), (0, p)))


def max_pool1d_with_indices(x, kernel_size, stride=None, padding=0):
    """``max_pool1d`` plus the arg-max positions along L (int32, as torch's return_indices).

    Example:
        >>> max_pool1d_with_indices(np.array([[[1.0, 3.0, 2.0, 0.0]]]), 2)[1].tolist()
        [[[1, 2]]]
    """
    xs, k, s, p = _geometry_1d("F.max_pool1d", x, kernel_size, stride, padding)
    y, idx = max_pool2d_with_indices(_as_2d(x, xs), (1, k), (1, s), (0, p))
    return _as_1d(y), idx.reshape(idx.shape[0], idx.shape[1], idx.shape[3])  # h = 0: w


def avg_pool1d(x, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
    """Average pooling (torch): the window mean over (N, C, L); padding counts as zeros.

    ``count_include_pad=True`` divides by ``kernel_size``, ``False`` by the number of input
    cells in the window. ``stride`` defaults to ``kernel_size``.

    Example:
        >>> avg_pool1d(np.ones((1, 1, 3)), 2, stride=1, padding=1).tolist()
        [[[0.5, 1.0, 1.0, 0.5]]]
    """
    xs, k, s, p = _geometry_1d("F.avg_pool1d", x, kernel_size, stride, padding)
    return _as_1d(avg_pool2d(_as_2d(x, xs), (1, k), (1, s), (0, p),
                             count_include_pad=count_include_pad))


def _global_check(op: str, x) -> None:
    check_float_operands(op, {"x": x})
    if len(shape_of(x)) != 3:
        raise ShapeError(f"{op}: x must be 3-D (N, C, L), got shape {shape_of(x)}")


def global_avg_pool1d(x, keepdims: bool = False):
    """Mean over L: (N, C, L) -> (N, C), or (N, C, 1) with ``keepdims`` (torch's
    ``adaptive_avg_pool1d(x, 1)``).

    Example:
        >>> global_avg_pool1d(np.arange(6.0).reshape(1, 2, 3)).tolist()
        [[1.0, 4.0]]
    """
    _global_check("F.global_avg_pool1d", x)
    return ops.mean(x, axis=2, keepdims=keepdims)


def global_max_pool1d(x, keepdims: bool = False):
    """Max over L: (N, C, L) -> (N, C), or (N, C, 1) with ``keepdims``.

    Example:
        >>> global_max_pool1d(np.arange(6.0).reshape(1, 2, 3)).tolist()
        [[2.0, 5.0]]
    """
    _global_check("F.global_max_pool1d", x)
    return ops.max(x, axis=2, keepdims=keepdims)


__all__ = ["avg_pool1d", "global_avg_pool1d", "global_max_pool1d", "max_pool1d",
           "max_pool1d_with_indices"]
