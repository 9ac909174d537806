"""Convolutions: conv2d, conv_transpose2d, conv1d (torch shapes: NCHW, OIHW).

Three primitives, each with a CUDA body and a NumPy body (``_conv_kernels.py`` dispatches:
CUDA im2col there, implicit GEMM in ``_conv_igemm_kernels.py``, NumPy in ``_conv_cpu.py``;
argument and geometry checks in ``conv_checks.py``), closed under differentiation so
grad-of-grad works (for y = conv2d(x, w), <y, g> is bilinear):

* ``conv2d(x, w)``                     -> y;   vjp: dx = backward_data(g, w),
                                                     dw = backward_weight(x, g)
* ``conv2d_backward_data(g, w)``       -> dx;  vjp: dg = conv2d(gg, w),
                                                     dw = backward_weight(gg, g)
* ``conv2d_backward_weight(x, g)``     -> dw;  vjp: dx = backward_data(g, gw),
                                                     dg = conv2d(x, gw)

Bias is a broadcast add (a composite). ``conv_transpose2d`` is ``conv2d_backward_data``
with x in the role of the output gradient; ``conv1d`` is conv2d with H = 1.

Saved columns (CPU): when w is being differentiated and x is a plain array at that trace
level, conv2d runs as ``_conv2d_keeping`` (the same primitive, name and vjp, unregistered),
whose forward keeps the columns it unrolled x into (``_conv_saved.SAVED``, keyed by the
output y, within a byte budget). The vjp hands them to backward-weight when x and the
cotangent are plain arrays, so x is not unrolled a second time; anything else (a budget
exceeded, a chunked batch, grad-of-grad, the GPU) recomputes them.

Example:
    >>> x, w = np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3))
    >>> conv2d(x, w, padding=1)[0, 0].tolist()[0]
    [4.0, 6.0, 6.0, 4.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, Traced, is_traced, unbox_all
from gpudl.backend import check_same_device, shape_of
from gpudl.errors import ShapeError
from gpudl.functional._checks import check_float_operands, int_pair, positive_pair
from gpudl.functional._conv_kernels import (
    conv2d_backward_data_raw,
    conv2d_backward_weight_raw,
    conv2d_forward_raw,
    out_size,
)
from gpudl.functional._conv_saved import SAVED
from gpudl.functional.conv_checks import check_conv_geometry, check_transpose_geometry

Padding = Any  # int | (ph, pw) | ((top, bottom), (left, right)) | "same" | "valid"


# ----------------------------------------------------------------------------- primitives
def _common_dtype(a, b):
    dt = np.result_type(a.dtype, b.dtype)
    return a.astype(dt, copy=False), b.astype(dt, copy=False)


def _conv2d_impl(x, w, *, stride, padding, dilation, groups, keep_columns=False):
    check_same_device((x, w), "conv2d")
    x, w = _common_dtype(x, w)
    return conv2d_forward_raw(x, w, stride=stride, padding=padding, dilation=dilation,
                              groups=groups, keep_columns=keep_columns)


def _conv2d_keeping_impl(x, w, **geo):
    return _conv2d_impl(x, w, keep_columns=True, **geo)


def _backward_data_impl(g, w, *, x_hw, stride, padding, dilation, groups):
    check_same_device((g, w), "conv2d_backward_data")
    g, w = _common_dtype(g, w)
    kh, kw = w.shape[2:]
    expect = (out_size(x_hw[0], kh, stride[0], padding[0] + padding[1], dilation[0]),
              out_size(x_hw[1], kw, stride[1], padding[2] + padding[3], dilation[1]))
    if tuple(g.shape[2:]) != expect:
        raise ShapeError(f"conv2d_backward_data: g has spatial size {tuple(g.shape[2:])}, "
                         f"but a conv2d of a {tuple(x_hw)} input gives {expect}")
    return conv2d_backward_data_raw(g, w, x_hw=tuple(x_hw), stride=stride, padding=padding,
                                    dilation=dilation, groups=groups)


def _backward_weight_impl(x, g, *, k_hw, stride, padding, dilation, groups):
    check_same_device((x, g), "conv2d_backward_weight")
    x, g = _common_dtype(x, g)
    return conv2d_backward_weight_raw(x, g, k_hw=tuple(k_hw), stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)


def _conv2d_vjp(g, out, x, w, **geo):
    def dw():
        if not (is_traced(x) or is_traced(g)):  # first order: dw is a constant here
            cols = SAVED.take(unbox_all(out))
            if cols is not None:
                return conv2d_backward_weight_raw(x, g.astype(cols.dtype, copy=False),
                                                  k_hw=tuple(w.shape[2:]), cols=cols, **geo)
        return _backward_weight(x, g, k_hw=tuple(w.shape[2:]), **geo)

    return (lambda: _backward_data(g, w, x_hw=tuple(x.shape[2:]), **geo), dw)


def _backward_data_vjp(gg, out, g, w, *, x_hw, **geo):
    # <backward_data(g, w), gg> = <conv2d(gg, w), g>: differentiate that in g and in w.
    return (lambda: _conv2d(gg, w, **geo),
            lambda: _backward_weight(gg, g, k_hw=tuple(w.shape[2:]), **geo))


def _backward_weight_vjp(gw, out, x, g, *, k_hw, **geo):
    # <backward_weight(x, g), gw> = <conv2d(x, gw), g>.
    return (lambda: _backward_data(g, gw, x_hw=tuple(x.shape[2:]), **geo),
            lambda: _conv2d(x, gw, **geo))


_conv2d = Primitive("conv2d", _conv2d_impl, _conv2d_vjp)
# conv2d that keeps its columns for the vjp (see the module docstring): the same op to the
# tape, the ONNX export and the gradient checks, so it shares the name and stays unregistered.
_conv2d_keeping = Primitive("conv2d", _conv2d_keeping_impl, _conv2d_vjp, register=False)
_backward_data = Primitive("conv2d_backward_data", _backward_data_impl, _backward_data_vjp)
_backward_weight = Primitive("conv2d_backward_weight", _backward_weight_impl,
                             _backward_weight_vjp)


def _forward(x, w, **geo):
    """conv2d(x, w), keeping the columns when its vjp will be able to use them: w is traced
    at the innermost trace level and x, unboxed at that level, is a plain array."""
    if type(w) is Traced:
        top = w.trace
        inner_x = x.value if type(x) is Traced and x.trace is top else x
        if type(inner_x) is not Traced:
            return _conv2d_keeping(x, w, **geo)
    return _conv2d(x, w, **geo)


def _bias_impl(y, b):
    check_same_device((y, b), "conv2d")
    return y + b.reshape(1, b.shape[0], *(1,) * (y.ndim - 2))


def channel_sums(g):
    """(C,) sums of g (N, C, ...) over every axis but 1: the bias gradient. NumPy: the N
    samples added first (each a contiguous block), then each channel's run, ~2-3x faster
    than ``np.sum(axis=(0, 2, 3))`` on LeNet-5's maps; CuPy: one reduction."""
    if type(g) is np.ndarray and g.flags.c_contiguous and g.ndim > 1:
        per_channel = np.add.reduce(g, axis=0)  # (C, ...)
        return per_channel.reshape(per_channel.shape[0], -1).sum(axis=1)
    return g.sum(axis=(0, *range(2, g.ndim)))


def _bias_vjp(g, out, y, b):
    if is_traced(g):  # grad of grad: the same sums in gd.ops
        return (lambda: g, lambda: ops.sum(g, axis=(0, *range(2, len(shape_of(g))))))
    return (lambda: g, lambda: channel_sums(g))


# y (N, C, ...) + b (C,) along axis 1: conv's bias as one tape node (not a reshape and a
# broadcast add, whose vjp is a reshape and a generic (0, 2, 3) sum)
_conv_bias = Primitive("conv_bias", _bias_impl, _bias_vjp)


def _add_bias(y, b):
    return y if b is None else _conv_bias(y, b)


def _bias_shape(b):
    return None if b is None else shape_of(b)


# ----------------------------------------------------------------------------- public API
def conv2d(x, w, b=None, stride=1, padding: Padding = 0, dilation=1, groups: int = 1):
    """2-D convolution (cross-correlation, as torch): x (N, C, H, W), w (O, C/groups, kH, kW).

    ``padding``: an int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``"valid"`` or
    ``"same"`` (stride 1; an odd total puts the extra row/column at the bottom/right, as
    torch and TF). Output ``(N, O, Ho, Wo)`` with
    ``Ho = floor((H + pT + pB - d(kH-1) - 1)/s) + 1``. ``b`` (O,) or None. float32/float64.

    Example:
        >>> conv2d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), stride=2, padding="valid").shape
        (2, 4, 3, 3)
    """
    op = "F.conv2d"
    check_float_operands(op, {"x": x, "w": w, "b": b})
    geo = check_conv_geometry(op, shape_of(x), shape_of(w), _bias_shape(b), stride, padding,
                              dilation, groups)
    return _add_bias(_forward(x, w, **geo), b)


def conv2d_backward_data(g, w, x_hw, stride=1, padding: Padding = 0, dilation=1,
                         groups: int = 1):
    """Gradient of ``conv2d`` with respect to x: g (N, O, Ho, Wo), w -> dx (N, C, *x_hw).

    Differentiable (its vjp uses conv2d and conv2d_backward_weight).

    Example:
        >>> conv2d_backward_data(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), (4, 4))[0, 0, 0]
        array([1., 2., 2., 1.])
    """
    op = "F.conv2d_backward_data"
    check_float_operands(op, {"g": g, "w": w})
    gs, ws = shape_of(g), shape_of(w)
    if len(gs) != 4 or len(ws) != 4:
        raise ShapeError(f"{op}: g (N, O, Ho, Wo) and w (O, C/groups, kH, kW) must be 4-D, "
                         f"got {gs} and {ws}")
    x_hw = int_pair(x_hw, "x_hw", op)
    x_shape = (gs[0], ws[1] * (groups if isinstance(groups, int) else 1), *x_hw)
    geo = check_conv_geometry(op, x_shape, ws, None, stride, padding, dilation, groups,
                              g_shape=gs, x_name="x_hw")
    return _backward_data(g, w, x_hw=x_hw, **geo)


def conv2d_backward_weight(x, g, k_hw, stride=1, padding: Padding = 0, dilation=1,
                           groups: int = 1):
    """Gradient of ``conv2d`` with respect to w: x (N, C, H, W), g (N, O, Ho, Wo) -> dw.

    Differentiable (its vjp uses conv2d and conv2d_backward_data).

    Example:
        >>> conv2d_backward_weight(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), (3, 3))[0, 0]
        array([[4., 4., 4.],
               [4., 4., 4.],
               [4., 4., 4.]])
    """
    op = "F.conv2d_backward_weight"
    check_float_operands(op, {"x": x, "g": g})
    xs, gs = shape_of(x), shape_of(g)
    if len(xs) != 4 or len(gs) != 4:
        raise ShapeError(f"{op}: x (N, C, H, W) and g (N, O, Ho, Wo) must be 4-D, got {xs} "
                         f"and {gs}")
    k_hw = positive_pair(k_hw, "k_hw", op)
    cg = xs[1] // groups if isinstance(groups, int) and groups >= 1 else xs[1]
    geo = check_conv_geometry(op, xs, (gs[1], cg, *k_hw), None, stride, padding, dilation,
                              groups, g_shape=gs, w_name="dw")
    return _backward_weight(x, g, k_hw=k_hw, **geo)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups: int = 1):
    """Transposed convolution (torch layout): x (N, C_in, H, W), w (C_in, C_out/groups, kH, kW).

    Output ``(N, C_out, Ho, Wo)``, ``Ho = (H-1)s - pT - pB + d(kH-1) + output_padding + 1``;
    ``output_padding`` must be smaller than the stride or the dilation (as torch). It is the
    gradient of conv2d with respect to its input, so conv2d(y, w) has x's shape.

    Example:
        >>> conv_transpose2d(np.ones((1, 2, 3, 3)), np.ones((2, 4, 3, 3)), stride=2,
        ...                  padding=1, output_padding=1).shape
        (1, 4, 6, 6)
    """
    op = "F.conv_transpose2d"
    check_float_operands(op, {"x": x, "w": w, "b": b})
    if isinstance(padding, str):
        raise ShapeError(f"{op}: padding must be an int, a pair or ((top, bottom), (left, "
                         f"right)), got {padding!r} (string modes are for conv2d)")
    out_hw, geo, extra = check_transpose_geometry(op, shape_of(x), shape_of(w), _bias_shape(b),
                                                  stride, padding, output_padding, dilation,
                                                  groups)
    if any(extra):  # output_padding >= stride (allowed when < dilation): see the helper
        x = ops.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    return _add_bias(_backward_data(x, w, x_hw=out_hw, **geo), b)


def conv1d(x, w, b=None, stride=1, padding: Padding = 0, dilation=1, groups: int = 1):
    """1-D convolution: x (N, C, L), w (O, C/groups, k); conv2d with H = 1.

    ``padding``: an int, ``(left, right)``, ``"valid"`` or ``"same"`` (stride 1).

    Example:
        >>> conv1d(np.ones((2, 3, 10)), np.ones((5, 3, 3)), padding="same").shape
        (2, 5, 10)
    """
    op = "F.conv1d"
    check_float_operands(op, {"x": x, "w": w, "b": b})
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) != 3:
        raise ShapeError(f"{op}: x must be 3-D (N, C, L), got shape {xs}; for one sequence "
                         f"use x[None]")
    if len(ws) != 3:
        raise ShapeError(f"{op}: w must be 3-D (out_channels, in_channels/groups, k), got "
                         f"shape {ws}")

    def scalar(v, name):
        if isinstance(v, tuple | list) and len(v) == 1:
            v = v[0]
        if isinstance(v, tuple | list):
            raise ShapeError(f"{op}: {name} must be an int, got {v!r}")
        return int_pair(v, name, op)[1]

    s, d = scalar(stride, "stride"), scalar(dilation, "dilation")
    if isinstance(padding, str):
        pad2: Padding = padding
    elif isinstance(padding, tuple | list) and len(padding) == 2:
        pad2 = ((0, 0), tuple(padding))  # (left, right)
    else:
        pad2 = ((0, 0), (scalar(padding, "padding"),) * 2)
    # Shapes are checked on the (N, C, 1, L) view; messages still name F.conv1d.
    geo = check_conv_geometry(op, (xs[0], xs[1], 1, xs[2]), (ws[0], ws[1], 1, ws[2]),
                              _bias_shape(b), (1, s), pad2, (1, d), groups)
    y = _forward(ops.reshape(x, (xs[0], xs[1], 1, xs[2])),
                 ops.reshape(w, (ws[0], ws[1], 1, ws[2])), **geo)  # (N, O, 1, Lo)
    ys = shape_of(y)
    y = ops.reshape(y, (ys[0], ys[1], ys[3]))
    return y if b is None else y + ops.reshape(b, (1, ws[0], 1))


__all__ = ["conv1d", "conv2d", "conv2d_backward_data", "conv2d_backward_weight",
           "conv_transpose2d"]
