"""Normalization: batch norm (torch semantics, explicit running statistics), layer norm,
local response norm (AlexNet).

Batch norm and layer norm are primitives with two bodies (DESIGN principle 3): CUDA
kernels (kernels/batch_norm.cu, kernels/layer_norm.cu) on CuPy arrays, NumPy twins on the
CPU, both in ``_normalization_kernels.py``; this module holds the argument checks, the
primitives and their vjps:

* ``batch_norm_train(x, gamma, beta) -> (y, mean, var)``: batch statistics (biased
  variance), one fused backward ``dx = gamma*invstd/n * (n*g - sum(g) - xhat*sum(g*xhat))``
  (plus the cotangents of ``mean`` and ``var``), ``dgamma``, ``dbeta`` from the same two
  reductions, as torch's training-mode backward;
* ``batch_norm_eval(x, gamma, beta, mean, var) -> y``: the running statistics, folded into
  one per-channel ``y = x * scale + shift``;
* ``layer_norm(x, gamma, beta) -> (y, mean, rstd)`` over the trailing ``gamma.ndim`` dims.

The vjps call the backward bodies directly at first order; when an outer ``gd.grad``
traces them they switch to the same formulas written with ``gpudl.ops``, so higher
derivatives are exact. ``local_response_norm`` is a composite of ``gpudl.ops``.

Example:
    >>> import numpy as np
    >>> from gpudl.functional.normalization import layer_norm
    >>> layer_norm(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2)).round(3).tolist()
    [[-1.0, 1.0]]
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced, stop_gradient, unbox_all
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError
from gpudl.functional._normalization_kernels import (
    batch_norm_apply_raw,
    batch_norm_backward_apply_raw,
    batch_norm_backward_reduce_raw,
    batch_norm_stats_raw,
    bn_backward_coefficients,
    bn_scale_shift,
    layer_norm_backward_raw,
    layer_norm_raw,
)


def _check_channel_vector(v, name: str, c: int, op: str) -> None:
    if v is not None and _shape(v) != (c,):
        raise ShapeError(
            f"{op}: {name} must have shape ({c},) (one value per channel, axis 1), got {_shape(v)}"
        )


def _check_scalar(op: str, name: str, value, low: float, high: float | None, hint: str,
                  closed_low: bool = False) -> float:
    """A Python/NumPy real number in [low, high], or in (low, inf) when ``high`` is None
    ([low, inf) with ``closed_low``; bools and arrays rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{op}: {name} must be a number, got {value!r} ({type(value).__name__}). "
                        f"{hint}")
    v = float(value)
    if high is not None:
        ok = low <= v <= high  # False for NaN too
    else:
        ok = v >= low if closed_low else v > low
    if not ok:
        interval = (f"[{low}, {high}]" if high is not None
                    else f"{'[' if closed_low else '('}{low}, inf)")
        raise ConfigError(f"{op}: {name} must be in {interval}, got {value!r}. {hint}")
    return v


def _float_dtype(op: str, named: dict) -> np.dtype:
    """The float32/float64 dtype the primitive computes in: the operands' common one (a
    float32 input with float64 parameters computes in float64, as NumPy promotes)."""
    dtypes = []
    for name, v in named.items():
        if v is None:
            continue
        raw = unbox_all(v)
        dt = np.dtype(raw.dtype if hasattr(raw, "dtype") else np.asarray(raw).dtype)
        if dt not in (np.float32, np.float64):
            raise DTypeError(f"{op}: {name} has dtype {dt}; expected float32 or float64 (the "
                             f"normalization kernels have no other). Cast it with "
                             f".astype('float32').")
        dtypes.append(dt)
    return np.result_type(*dtypes)


def _cast(v, dtype):
    raw = unbox_all(v)
    if not hasattr(raw, "dtype"):  # a list or a number: an array of the computing dtype
        return np.asarray(raw, dtype)
    return v if raw.dtype == dtype else ops.astype(v, dtype)


def _ncl(a, shape):
    """A C-contiguous (N, C, L) view (or copy) of an (N, C, ...) plain array."""
    n, c = shape[:2]
    length = math.prod(shape[2:])  # np.prod: ~4 us a call, twice per BatchNorm
    return module_of(a).ascontiguousarray(a).reshape(n, c, length)


def _bn_geometry(shape):
    """Reduced axes, the (1, C, 1, ...) broadcast shape and the count per channel."""
    axes = (0,) + tuple(range(2, len(shape)))
    bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    return axes, bshape, math.prod(shape[a] for a in axes)


# ----------------------------------------------------------------------------- batch norm
def _bn_train_impl(x, gamma, beta, *, eps):
    x3 = _ncl(x, x.shape)
    if x3.size == 0:  # nothing to average: NaN statistics, as numpy's mean of nothing
        xp = module_of(x)
        nan = xp.full(x3.shape[1], xp.nan, dtype=x.dtype)
        return xp.empty(x.shape, x.dtype), nan, nan.copy()
    mean, var = batch_norm_stats_raw(x3)
    _, scale, shift = bn_scale_shift(mean, var, gamma, beta, eps)
    return batch_norm_apply_raw(x3, scale, shift).reshape(x.shape), mean, var


def _bn_train_backward_composite(g, dmean, dvar, x, gamma, mean, var, eps):
    # The raw backward's formulas with differentiable ops (an outer grad traces them).
    axes, bshape, count = _bn_geometry(_shape(x))
    invstd = 1.0 / ops.sqrt(var + eps)
    xc = x - ops.reshape(mean, bshape)
    sum_g, sum_gd = ops.sum(g, axis=axes), ops.sum(g * xc, axis=axes)
    k1, k2, k3 = bn_backward_coefficients(invstd, gamma, sum_g, sum_gd, dmean, dvar, count)
    dx = (ops.reshape(k1, bshape) * g + ops.reshape(k2, bshape) * xc) + ops.reshape(k3, bshape)
    return dx, sum_gd * invstd, sum_g


def _bn_train_vjp(cots, out, x, gamma, beta, *, eps):
    g, dmean, dvar = cots
    mean, var = out[1], out[2]
    if any(is_traced(v) for v in (g, dmean, dvar, x, gamma, mean, var)):
        return _bn_train_backward_composite(g, dmean, dvar, x, gamma, mean, var, eps)
    xp = module_of(x)
    x3 = _ncl(x, x.shape)
    g3 = _ncl(g.astype(x.dtype, copy=False), x.shape)
    count = max(x3.shape[0] * x3.shape[2], 1)
    invstd = 1.0 / xp.sqrt(var + eps)
    sum_g, sum_gd = batch_norm_backward_reduce_raw(g3, x3, mean)
    k1, k2, k3 = bn_backward_coefficients(invstd, gamma, sum_g, sum_gd, dmean, dvar, count)
    return (lambda: batch_norm_backward_apply_raw(g3, x3, mean, k1, k2, k3).reshape(x.shape),
            sum_gd * invstd, sum_g)


def _bn_eval_impl(x, gamma, beta, mean, var, *, eps):
    _, scale, shift = bn_scale_shift(mean, var, gamma, beta, eps)
    return batch_norm_apply_raw(_ncl(x, x.shape), scale, shift).reshape(x.shape)


def _bn_eval_vjp(g, out, x, gamma, beta, mean, var, *, eps):
    traced = any(is_traced(v) for v in (g, x, gamma, mean, var))
    axes, bshape, _ = _bn_geometry(_shape(x))
    if traced:
        invstd = 1.0 / ops.sqrt(var + eps)
    else:
        invstd = 1.0 / module_of(x).sqrt(var + eps)
        g = g.astype(x.dtype, copy=False)
    scale = gamma * invstd
    sums = []  # (sum_g, sum_gd), computed once, only when a parameter needs a gradient

    def reduced():
        if not sums:
            if traced:
                sums.extend((ops.sum(g, axis=axes),
                             ops.sum(g * (x - ops.reshape(mean, bshape)), axis=axes)))
            else:
                sums.extend(batch_norm_backward_reduce_raw(_ncl(g, x.shape), _ncl(x, x.shape),
                                                           mean))
        return sums

    def dx():
        if traced:
            return g * ops.reshape(scale, bshape)
        return batch_norm_apply_raw(_ncl(g, x.shape), scale).reshape(x.shape)

    return (dx, lambda: reduced()[1] * invstd, lambda: reduced()[0],
            lambda: -reduced()[0] * scale,
            lambda: -0.5 * reduced()[1] * scale * invstd * invstd)


_bn_train = Primitive("batch_norm_train", _bn_train_impl, _bn_train_vjp, multiple_results=True)
_bn_eval = Primitive("batch_norm_eval", _bn_eval_impl, _bn_eval_vjp)


def batch_norm(
    x, gamma, beta, running_mean, running_var, train: bool, momentum: float = 0.1, eps: float = 1e-5
):
    """Batch normalization over every axis but the channel axis 1: (N, C), (N, C, L), (N, C, H, W).

    Training (``train=True``): normalize with the batch mean and biased variance; the
    running statistics are updated as torch does, ``new = (1 - momentum) old + momentum
    batch`` with the *unbiased* batch variance. Evaluation: normalize with the running
    statistics, which are returned unchanged. ``gamma``/``beta`` may be None (no affine);
    running statistics may be None (batch statistics are then used in both modes).

    Returns ``(y, (new_running_mean, new_running_var))``; the new statistics are constants
    (no gradient) to store in the layer's state.

    Example:
        >>> x = np.array([[1.0], [3.0]])
        >>> y, (m, v) = batch_norm(x, None, None, np.zeros(1), np.ones(1), train=True)
        >>> y.round(3).tolist(), m.tolist(), v.tolist()
        ([[-1.0], [1.0]], [0.2], [1.1])
    """
    op = "batch_norm"
    momentum = _check_scalar(
        op, "momentum", momentum, 0.0, 1.0,
        "It is the weight of the batch statistics in the running update, as torch's "
        "(Keras's momentum=0.99 is momentum=0.01 here); a value > 1 makes the running "
        "variance negative.")
    eps = _check_scalar(op, "eps", eps, 0.0, None, "Use a small positive value such as 1e-5.")
    if not isinstance(train, (bool, np.bool_)):
        raise ArgumentTypeError(
            f"{op}: train must be True or False, got {train!r} ({type(train).__name__}). "
            "The signature is batch_norm(x, gamma, beta, running_mean, running_var, train, "
            "momentum=0.1, eps=1e-5)."
        )
    s = _shape(x)
    if len(s) < 2:
        raise ShapeError(f"{op}: input must be (N, C) or (N, C, ...), got shape {s}")
    c = s[1]
    for v, name in (
        (gamma, "gamma"),
        (beta, "beta"),
        (running_mean, "running_mean"),
        (running_var, "running_var"),
    ):
        _check_channel_vector(v, name, c, op)
    if (running_mean is None) != (running_var is None):
        raise ConfigError(f"{op}: give both running_mean and running_var, or neither")
    dtype = _float_dtype(op, {"x": x, "gamma": gamma, "beta": beta,
                              "running_mean": running_mean, "running_var": running_var})
    _, _, n = _bn_geometry(s)
    use_batch = train or running_mean is None
    if train and n < 2:
        raise ShapeError(
            f"{op}: training needs more than one value per channel, got input shape {s}; "
            f"use a batch of 2 or more, or train=False"
        )
    xp = module_of(unbox_all(x))
    # No affine: gamma = 1, beta = 0 (exact), so each primitive has one form (and ONNX
    # export sees arrays, not None).
    gamma = xp.ones(c, dtype) if gamma is None else _cast(gamma, dtype)
    beta = xp.zeros(c, dtype) if beta is None else _cast(beta, dtype)
    x = _cast(x, dtype)
    if not use_batch:
        y = _bn_eval(x, gamma, beta, _cast(running_mean, dtype), _cast(running_var, dtype),
                     eps=eps)
        return y, (running_mean, running_var)
    y, mean, var = _bn_train(x, gamma, beta, eps=eps)
    if running_mean is None or not train:
        return y, (running_mean, running_var)
    batch_mean = stop_gradient(mean)
    unbiased = stop_gradient(var) * (n / max(n - 1, 1))
    # lists or numbers (the eval path casts them too) become arrays of the computing dtype
    rm, rv = (v if hasattr(v, "dtype") else xp.asarray(v, dtype)
              for v in (unbox_all(running_mean), unbox_all(running_var)))
    new_mean = ((1.0 - momentum) * rm + momentum * batch_mean).astype(rm.dtype, copy=False)
    new_var = ((1.0 - momentum) * rv + momentum * unbiased).astype(rv.dtype, copy=False)
    return y, (new_mean, new_var)


# ----------------------------------------------------------------------------- layer norm
def _ln_rows(shape, k: int) -> tuple[int, int]:
    return math.prod(shape[:len(shape) - k]), math.prod(shape[len(shape) - k:])


def _ln_impl(x, gamma, beta, *, eps):
    k = gamma.ndim
    m, d = _ln_rows(x.shape, k)
    lead = x.shape[:x.ndim - k]
    xp = module_of(x)
    if d == 0:  # an empty normalized shape: nothing to average (NaN statistics)
        nan = xp.full(lead, xp.nan, dtype=x.dtype)
        return xp.empty(x.shape, x.dtype), nan, nan.copy()
    y, mean, rstd = layer_norm_raw(xp.ascontiguousarray(x).reshape(m, d), gamma.reshape(d),
                                   beta.reshape(d), eps)
    return y.reshape(x.shape), mean.reshape(lead), rstd.reshape(lead)


def _ln_backward_composite(g, dmean, drstd, x, gamma, mean, rstd):
    # The raw backward's formulas with differentiable ops (an outer grad traces them).
    k = len(_shape(gamma))
    axes = tuple(range(len(_shape(x)) - k, len(_shape(x))))
    lead_axes = tuple(range(len(_shape(x)) - k))
    d = _ln_rows(_shape(x), k)[1]
    keep = tuple(_shape(mean)) + (1,) * k
    mean_b, rstd_b = ops.reshape(mean, keep), ops.reshape(rstd, keep)
    xhat = (x - mean_b) * rstd_b
    dxhat = g * gamma
    c1 = ops.sum(dxhat * xhat, axis=axes) / d + drstd * rstd / d
    c2 = ops.sum(dxhat, axis=axes) / d - dmean / (d * rstd)
    dx = ((dxhat - xhat * ops.reshape(c1, keep)) - ops.reshape(c2, keep)) * rstd_b
    return dx, ops.sum(g * xhat, axis=lead_axes), ops.sum(g, axis=lead_axes)


def _ln_vjp(cots, out, x, gamma, beta, *, eps):
    g, dmean, drstd = cots
    mean, rstd = out[1], out[2]
    if any(is_traced(v) for v in (g, dmean, drstd, x, gamma, mean, rstd)):
        return _ln_backward_composite(g, dmean, drstd, x, gamma, mean, rstd)
    m, d = _ln_rows(x.shape, gamma.ndim)
    xp = module_of(x)
    if d == 0:
        return xp.zeros(x.shape, x.dtype), xp.zeros(gamma.shape, x.dtype), xp.zeros(
            beta.shape, x.dtype)
    def rows(a):  # (M, D), x's dtype, C-contiguous
        return xp.ascontiguousarray(a.astype(x.dtype, copy=False)).reshape(m, d)

    def flat(a):  # (M,)
        return a.astype(x.dtype, copy=False).reshape(m)

    dx, dgamma, dbeta = layer_norm_backward_raw(rows(g), rows(x), flat(mean), flat(rstd),
                                                gamma.reshape(d), flat(dmean), flat(drstd))
    return dx.reshape(x.shape), dgamma.reshape(gamma.shape), dbeta.reshape(beta.shape)


_layer_norm = Primitive("layer_norm", _ln_impl, _ln_vjp, multiple_results=True)


def layer_norm(x, gamma, beta, eps: float = 1e-5, normalized_shape=None):
    """Normalize over the trailing dims given by ``gamma``'s shape, then scale and shift.

    ``gamma``/``beta`` have shape ``normalized_shape`` (e.g. (D,) for (N, T, D) input).
    With ``gamma=None`` pass ``normalized_shape`` (default: the last dim). Biased variance,
    as torch.

    Example:
        >>> layer_norm(np.array([[0.0, 2.0]]), None, None).round(3).tolist()
        [[-1.0, 1.0]]
    """
    s = _shape(x)
    if gamma is not None:
        shape = _shape(gamma)
    elif normalized_shape is not None:
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
    else:
        shape = s[-1:]
    k = len(shape)
    if k == 0 or k > len(s) or tuple(s[len(s) - k :]) != tuple(shape):
        raise ShapeError(
            f"layer_norm: the input's trailing dims {s[len(s) - k :] if k <= len(s) else s} "
            f"must equal the normalized shape {shape} (gamma's shape); input shape {s}"
        )
    if beta is not None and _shape(beta) != shape:
        raise ShapeError(f"layer_norm: beta must have gamma's shape {shape}, got {_shape(beta)}")
    eps = _check_scalar("layer_norm", "eps", eps, 0.0, None,
                        "Use a small positive value such as 1e-5.", closed_low=True)
    dtype = _float_dtype("layer_norm", {"x": x, "gamma": gamma, "beta": beta})
    xp = module_of(unbox_all(x))
    gamma = xp.ones(shape, dtype) if gamma is None else _cast(gamma, dtype)
    beta = xp.zeros(shape, dtype) if beta is None else _cast(beta, dtype)
    return _layer_norm(_cast(x, dtype), gamma, beta, eps=eps)[0]


def local_response_norm(x, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """AlexNet's local response normalization across channels (torch's formula).

    ``b_c = a_c / (k + alpha/size * sum_{c' near c} a_{c'}^2)^beta``; the window of ``size``
    channels is centred on c (zero-padded at the ends, still divided by ``size``).

    Example:
        >>> x = np.ones((1, 3, 1, 1))
        >>> local_response_norm(x, size=3, alpha=3.0, beta=1.0, k=0.0)[0, :, 0, 0].tolist()
        [0.5, 0.3333333333333333, 0.5]
    """
    s = _shape(x)
    if len(s) < 3:
        raise ShapeError(f"local_response_norm: input must be (N, C, ...) with 3+ dims, got {s}")
    if size < 1:
        raise ConfigError(f"local_response_norm: size must be >= 1, got {size}")
    c = s[1]
    sq = x * x
    width = [(0, 0)] * len(s)
    width[1] = (size // 2, (size - 1) // 2)
    padded = ops.pad(sq, width)
    window = None
    for i in range(size):
        index = (slice(None), slice(i, i + c))
        part = padded[index]
        window = part if window is None else window + part
    div = ops.power(k + (alpha / size) * window, beta)
    return x / div


__all__ = ["batch_norm", "layer_norm", "local_response_norm"]
