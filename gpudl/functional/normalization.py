"""Normalization: batch norm (torch semantics, explicit running statistics), layer norm,
local response norm (AlexNet). Composites of ``gd.ops``; the gradient of the batch
statistics flows through ``mean``/``var`` like torch's training-mode backward.

Example:
    >>> import numpy as np
    >>> from gpudl.functional.normalization import layer_norm
    >>> layer_norm(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2)).round(3).tolist()
    [[-1.0, 1.0]]
"""

from __future__ import annotations

import numbers

import numpy as np

from gpudl import ops
from gpudl.autodiff import stop_gradient, unbox_all
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError


def _check_channel_vector(v, name: str, c: int, op: str) -> None:
    if v is not None and _shape(v) != (c,):
        raise ShapeError(
            f"{op}: {name} must have shape ({c},) (one value per channel, axis 1), got {_shape(v)}"
        )


def _check_scalar(op: str, name: str, value, low: float, high: float | None, hint: str) -> float:
    """A Python/NumPy real number in [low, high], or in (low, inf) when ``high`` is None
    (bools and arrays rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{op}: {name} must be a number, got {value!r} ({type(value).__name__}). "
                        f"{hint}")
    v = float(value)
    ok = (low <= v <= high) if high is not None else v > low  # False for NaN too
    if not ok:
        interval = f"[{low}, {high}]" if high is not None else f"({low}, inf)"
        raise ConfigError(f"{op}: {name} must be in {interval}, got {value!r}. {hint}")
    return v


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
    axes = (0,) + tuple(range(2, len(s)))
    bshape = (1, c) + (1,) * (len(s) - 2)
    use_batch = train or running_mean is None
    if use_batch:
        n = int(np.prod([s[a] for a in axes]))
        if train and n < 2:
            raise ShapeError(
                f"{op}: training needs more than one value per channel, got input shape {s}; "
                f"use a batch of 2 or more, or train=False"
            )
        mean = ops.mean(x, axis=axes)  # (C,)
        var = ops.var(x, axis=axes)  # biased, as used for normalization
    else:
        mean, var = running_mean, running_var
    y = (x - ops.reshape(mean, bshape)) / ops.sqrt(ops.reshape(var, bshape) + eps)
    if gamma is not None:
        y = y * ops.reshape(gamma, bshape)
    if beta is not None:
        y = y + ops.reshape(beta, bshape)
    if running_mean is None or not train:
        return y, (running_mean, running_var)
    batch_mean = stop_gradient(mean)
    unbiased = stop_gradient(var) * (n / max(n - 1, 1))
    rm, rv = unbox_all(running_mean), unbox_all(running_var)
    new_mean = ((1.0 - momentum) * rm + momentum * batch_mean).astype(rm.dtype, copy=False)
    new_var = ((1.0 - momentum) * rv + momentum * unbiased).astype(rv.dtype, copy=False)
    return y, (new_mean, new_var)


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
    axes = tuple(range(len(s) - k, len(s)))
    mean = ops.mean(x, axis=axes, keepdims=True)
    var = ops.var(x, axis=axes, keepdims=True)
    y = (x - mean) / ops.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


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
