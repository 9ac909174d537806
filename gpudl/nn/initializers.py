"""Weight initializers: ``init(key, shape, dtype=float32, device=None) -> array``.

``key`` is a key or an int seed (``gd.random.as_key``), as for a layer's ``init``.

Fans follow PyTorch: for a weight of shape (out, in, *kernel), fan_in = in * prod(kernel)
and fan_out = out * prod(kernel). Layer defaults (documented on each layer) follow PyTorch:
Dense and Conv weights and biases are uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is
what torch's ``kaiming_uniform_(a=sqrt(5))`` works out to.

Example:
    >>> import gpudl as gd
    >>> w = he_normal()(gd.random.key(0), (64, 32), device="cpu")
    >>> w.shape, w.dtype
    ((64, 32), dtype('float32'))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.backend import get_device, xp_for
from gpudl.errors import ConfigError
from gpudl.nn.arguments import LayerArgumentError, check_float, positional_limit

Initializer = Callable[..., Any]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shaped (out, in, *kernel) (or (n,) for vectors)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _dev(device):
    return get_device() if device is None else device


def constant(value: float) -> Initializer:
    def init(key, shape, dtype=np.float32, device=None):
        return xp_for(_dev(device)).full(shape, value, dtype=dtype)

    return init


def zeros() -> Initializer:
    return constant(0.0)


def ones() -> Initializer:
    return constant(1.0)


@positional_limit(0, lambda label, args: (
    f"Give mean and std by keyword: {label}(mean=..., std=...). Positional order differs "
    "between libraries (torch's normal_(mean, std), Keras's RandomNormal(mean, stddev)); "
    f"for {label}{args!r} in torch's order write {label}(mean={args[0]!r}"
    + (f", std={args[1]!r})" if len(args) > 1 else ")")), label="nn.initializers.normal")
def normal(*, mean: float = 0.0, std: float = 1.0) -> Initializer:
    """Gaussian ``N(mean, std^2)``; both keyword-only (torch and Keras disagree on order).

    Example:
        >>> import gpudl as gd
        >>> w = normal(mean=0.0, std=0.02)(gd.random.key(0), (256, 256), device="cpu")
        >>> round(float(w.std()), 2)
        0.02
    """
    mean = check_float("nn.initializers.normal", "mean", mean)
    std = check_float("nn.initializers.normal", "std", std, low=0.0, low_open=True, hint=(
        "std is the standard deviation (> 0); for a constant use nn.initializers.constant."))

    def init(key, shape, dtype=np.float32, device=None):
        key = gdr.as_key(key, "nn.initializers.normal")
        # std applied inside the sampler (chunk by chunk, the same rounding as `* std`):
        # one full pass and one allocation fewer
        w = gdr.normal(key, shape, dtype=dtype, device=_dev(device), std=std)
        w += mean
        return w

    return init


def uniform(low: float = -1.0, high: float = 1.0) -> Initializer:
    """Uniform on ``[low, high)`` (the order of torch's ``uniform_(a, b)`` and Keras's
    ``RandomUniform(minval, maxval)``)."""
    low = check_float("nn.initializers.uniform", "low", low)
    high = check_float("nn.initializers.uniform", "high", high)
    if not low < high:
        raise LayerArgumentError(
            f"nn.initializers.uniform: low must be below high, got low={low}, high={high}; "
            "for a constant use nn.initializers.constant")

    def init(key, shape, dtype=np.float32, device=None):
        key = gdr.as_key(key, "nn.initializers.uniform")
        return gdr.uniform(key, shape, dtype=dtype, minval=low, maxval=high, device=_dev(device))

    return init


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """Var(w) = scale / n with n = fan_in, fan_out or their mean (Keras/JAX naming)."""
    check_float("nn.initializers.variance_scaling", "scale", scale, low=0.0, low_open=True)
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ConfigError(f"variance_scaling: mode must be fan_in/fan_out/fan_avg, got {mode!r}")
    if distribution not in ("normal", "uniform"):
        raise ConfigError(
            f"variance_scaling: distribution must be normal/uniform, got {distribution!r}")

    def init(key, shape, dtype=np.float32, device=None):
        fan_in, fan_out = fans(tuple(shape))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / max(n, 1)
        if distribution == "normal":
            return normal(std=math.sqrt(var))(key, shape, dtype, device)
        limit = math.sqrt(3.0 * var)
        return uniform(-limit, limit)(key, shape, dtype, device)

    return init


def lecun_normal() -> Initializer:
    return variance_scaling(1.0, "fan_in", "normal")


def lecun_uniform() -> Initializer:
    return variance_scaling(1.0, "fan_in", "uniform")


def glorot_normal() -> Initializer:
    return variance_scaling(1.0, "fan_avg", "normal")


def glorot_uniform() -> Initializer:
    return variance_scaling(1.0, "fan_avg", "uniform")


def he_normal() -> Initializer:
    return variance_scaling(2.0, "fan_in", "normal")


def he_uniform() -> Initializer:
    return variance_scaling(2.0, "fan_in", "uniform")


xavier_normal, xavier_uniform = glorot_normal, glorot_uniform
kaiming_normal, kaiming_uniform = he_normal, he_uniform


def torch_default() -> Initializer:
    """uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's Linear/Conv weight default."""
    return variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias(fan_in: int) -> Initializer:
    """PyTorch's Linear/Conv bias default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return uniform(-bound, bound)


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix from the QR of a Gaussian (sign-fixed), times ``gain``."""

    def init(key, shape, dtype=np.float32, device=None):
        rows = shape[0]
        cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        key = gdr.as_key(key, "nn.initializers.orthogonal")
        a = gdr.normal(key, (max(rows, cols), min(rows, cols)), dtype=np.float64, device="cpu")
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return xp_for(_dev(device)).asarray((gain * q[:rows, :cols]).reshape(shape), dtype=dtype)

    return init


_BY_NAME = {
    "zeros": zeros, "ones": ones, "normal": normal, "uniform": uniform,
    "lecun_normal": lecun_normal, "lecun_uniform": lecun_uniform,
    "glorot_normal": glorot_normal, "glorot_uniform": glorot_uniform,
    "xavier_normal": xavier_normal, "xavier_uniform": xavier_uniform,
    "he_normal": he_normal, "he_uniform": he_uniform,
    "kaiming_normal": kaiming_normal, "kaiming_uniform": kaiming_uniform,
    "orthogonal": orthogonal, "torch_default": torch_default,
}


def get(init: str | Initializer | None, default: Initializer) -> Initializer:
    """Resolve an initializer given by name, as a function, or None (the default)."""
    if init is None:
        return default
    if callable(init):
        return init
    if init in _BY_NAME:
        return _BY_NAME[init]()
    raise ConfigError(
        f"unknown initializer {init!r}; expected one of {sorted(_BY_NAME)} or a function"
    )
