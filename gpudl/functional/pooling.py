"""Pooling: max, average, Lp, global average and global max (NCHW, torch semantics).

Four primitives, each with a CUDA body (kernels/pool2d.cu) and a NumPy twin
(both in ``_pool_kernels.py``); this module holds the primitives, their vjps and the
argument checks:

* ``max_pool2d(x) -> (y, argmax)``; vjp: ``max_pool2d_backward(g, argmax)`` (the gradient
  goes to the arg-max, the first maximum on ties, as torch);
* ``max_pool2d_backward(g, argmax) -> dx``; vjp: a gather of ``gg`` at ``argmax`` written
  with ``ops.take_along_axis``, so grad-of-grad works;
* ``avg_pool2d(x) -> y`` and ``avg_pool2d_backward(g) -> dx``: linear maps, each the
  other's vjp.

``lp_pool2d``, ``global_avg_pool2d`` and ``global_max_pool2d`` are composites.

Example:
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> max_pool2d(x, 2)[0, 0].tolist(), avg_pool2d(x, 2)[0, 0].tolist()
    ([[5.0, 7.0], [13.0, 15.0]], [[2.5, 4.5], [10.5, 12.5]])
"""

from __future__ import annotations

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, unbox_all
from gpudl.backend import check_same_device, shape_of
from gpudl.errors import ConfigError, ShapeError
from gpudl.functional._checks import check_float_operands, int_pair
from gpudl.functional._pool_kernels import (
    avg_pool2d_backward_raw,
    avg_pool2d_raw,
    max_pool2d_backward_raw,
    max_pool2d_raw,
    pool_output_hw,
)


# ----------------------------------------------------------------------------- primitives
def _max_impl(x, *, kernel, stride, padding):
    return max_pool2d_raw(x, kernel, stride, padding)


def _max_vjp(cots, out, x, *, kernel, stride, padding):
    argmax = unbox_all(out[1])  # integer indices: constants at every trace level
    return (lambda: _max_backward(cots[0], argmax, x_hw=tuple(x.shape[2:]), kernel=kernel,
                                  stride=stride, padding=padding),)


def _max_backward_impl(g, argmax, *, x_hw, kernel, stride, padding):
    check_same_device((g, argmax), "max_pool2d_backward")
    return max_pool2d_backward_raw(g, argmax, tuple(x_hw), kernel, stride, padding)


def _max_backward_vjp(gg, out, g, argmax, *, x_hw, kernel, stride, padding):
    def gather():
        n, c, ho, wo = shape_of(g)
        flat = ops.reshape(gg, (n, c, x_hw[0] * x_hw[1]))
        picked = ops.take_along_axis(flat, unbox_all(argmax).reshape(n, c, ho * wo), axis=2)
        return ops.reshape(picked, (n, c, ho, wo))

    return gather, None


def _avg_impl(x, *, kernel, stride, padding, count_include_pad):
    return avg_pool2d_raw(x, kernel, stride, padding, count_include_pad)


def _avg_vjp(g, out, x, **geo):
    return (lambda: _avg_backward(g, x_hw=tuple(x.shape[2:]), **geo),)


def _avg_backward_impl(g, *, x_hw, kernel, stride, padding, count_include_pad):
    return avg_pool2d_backward_raw(g, tuple(x_hw), kernel, stride, padding, count_include_pad)


def _avg_backward_vjp(gg, out, g, *, x_hw, **geo):
    return (lambda: _avg_pool(gg, **geo),)


_max_pool = Primitive("max_pool2d", _max_impl, _max_vjp, multiple_results=True)
_max_backward = Primitive("max_pool2d_backward", _max_backward_impl, _max_backward_vjp)
_avg_pool = Primitive("avg_pool2d", _avg_impl, _avg_vjp)
_avg_backward = Primitive("avg_pool2d_backward", _avg_backward_impl, _avg_backward_vjp)


# ----------------------------------------------------------------------------- checks
def _pool_geometry(op: str, x, kernel_size, stride, padding) -> dict:
    check_float_operands(op, {"x": x})
    xs = shape_of(x)
    if len(xs) != 4:
        raise ShapeError(f"{op}: x must be 4-D (N, C, H, W), got shape {xs}; for one image "
                         f"use x[None]")
    kernel = int_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else int_pair(stride, "stride", op)
    pads = int_pair(padding, "padding", op)
    if min(kernel) < 1:
        raise ShapeError(f"{op}: kernel_size must be >= 1, got {kernel_size!r}")
    if min(stride) < 1:
        raise ShapeError(f"{op}: stride must be >= 1, got {stride!r}")
    if min(pads) < 0 or any(2 * p > k for p, k in zip(pads, kernel, strict=True)):
        raise ShapeError(f"{op}: padding must be >= 0 and at most half the kernel size "
                         f"{kernel} (as torch), got {padding!r}")
    ho, wo = pool_output_hw(xs[2], xs[3], kernel, stride, pads)
    if ho < 1 or wo < 1:
        raise ShapeError(f"{op}: the {kernel[0]}x{kernel[1]} window is larger than the padded "
                         f"input ({xs[2] + 2 * pads[0]}x{xs[3] + 2 * pads[1]} from x {xs}); "
                         f"use a smaller kernel_size or more padding")
    return {"kernel": kernel, "stride": stride, "padding": pads}


# ----------------------------------------------------------------------------- public API
def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling (torch): x (N, C, H, W) -> (N, C, Ho, Wo), ``Ho = (H + 2p - k)//s + 1``.

    ``stride`` defaults to ``kernel_size``; padding counts as -inf and is at most half the
    kernel. Overlapping windows (3x3, stride 2) work. The gradient goes to each window's
    arg-max (the first maximum on ties, as torch).

    Example:
        >>> max_pool2d(np.arange(25.0).reshape(1, 1, 5, 5), 3, stride=2).tolist()
        [[[[12.0, 14.0], [22.0, 24.0]]]]
    """
    geo = _pool_geometry("F.max_pool2d", x, kernel_size, stride, padding)
    return _max_pool(x, **geo)[0]


def max_pool2d_with_indices(x, kernel_size, stride=None, padding=0):
    """``max_pool2d`` plus the arg-max indices ``h*W + w`` (int32, as torch's return_indices).

    Example:
        >>> y, idx = max_pool2d_with_indices(np.arange(4.0).reshape(1, 1, 2, 2), 2)
        >>> idx.tolist()
        [[[[3]]]]
    """
    geo = _pool_geometry("F.max_pool2d", x, kernel_size, stride, padding)
    y, argmax = _max_pool(x, **geo)
    return y, unbox_all(argmax)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
    """Average pooling (torch): the window mean; padding counts as zeros.

    ``count_include_pad=True`` divides by kH*kW, ``False`` by the number of input cells in
    the window. ``stride`` defaults to ``kernel_size``.

    Example:
        >>> avg_pool2d(np.ones((1, 1, 2, 2)), 2, stride=1, padding=1).tolist()
        [[[[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]]]
    """
    if not isinstance(count_include_pad, bool | np.bool_):  # bool("no") is True
        raise ConfigError(f"F.avg_pool2d: count_include_pad must be True or False, got "
                          f"{count_include_pad!r}")
    geo = _pool_geometry("F.avg_pool2d", x, kernel_size, stride, padding)
    return _avg_pool(x, count_include_pad=bool(count_include_pad), **geo)


def lp_pool2d(x, p: float, kernel_size, stride=None):
    """Power-average pooling (torch): ``(sum over the window of x**p) ** (1/p)``.

    p = 1 is sum pooling, p = 2 the L2 pool; large p approaches max pooling. Negative
    window sums (odd p, negative inputs) are clipped to 0 before the root, where torch
    gives NaN. A composite of avg_pool2d (no padding, as torch).

    Example:
        >>> lp_pool2d(np.full((1, 1, 2, 2), 3.0), 2, 2).tolist()
        [[[[6.0]]]]
    """
    op = "F.lp_pool2d"
    if not isinstance(p, int | float) or isinstance(p, bool) or p <= 0:
        raise ShapeError(f"{op}: p must be a positive number, got {p!r}")
    geo = _pool_geometry(op, x, kernel_size, stride, 0)
    kh, kw = geo["kernel"]
    total = _avg_pool(ops.power(x, float(p)), count_include_pad=True, **geo) * float(kh * kw)
    return ops.power(ops.maximum(total, 0.0), 1.0 / float(p))


def _global_check(op: str, x) -> None:
    check_float_operands(op, {"x": x})
    if len(shape_of(x)) != 4:
        raise ShapeError(f"{op}: x must be 4-D (N, C, H, W), got shape {shape_of(x)}")


def global_avg_pool2d(x, keepdims: bool = False):
    """Mean over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``.

    ``keepdims=True`` is torch's ``adaptive_avg_pool2d(x, 1)``.

    Example:
        >>> global_avg_pool2d(np.arange(8.0).reshape(1, 2, 2, 2)).tolist()
        [[1.5, 5.5]]
    """
    _global_check("F.global_avg_pool2d", x)
    return ops.mean(x, axis=(2, 3), keepdims=keepdims)


def global_max_pool2d(x, keepdims: bool = False):
    """Max over H and W: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``.

    Example:
        >>> global_max_pool2d(np.arange(8.0).reshape(1, 2, 2, 2)).tolist()
        [[3.0, 7.0]]
    """
    _global_check("F.global_max_pool2d", x)
    return ops.max(x, axis=(2, 3), keepdims=keepdims)


__all__ = ["avg_pool2d", "global_avg_pool2d", "global_max_pool2d", "lp_pool2d", "max_pool2d",
           "max_pool2d_with_indices"]
