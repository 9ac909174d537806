"""Activation functions (torch names, defaults and derivative conventions).

Each is registered with ``@activation(name, layer=...)`` (see
:mod:`gpudl.functional.activation_registry`): that one line makes it ``F.<name>``, a
name for :func:`get_activation` and, in ``gpudl.nn``, a layer class whose constructor
takes the function's hyper-parameters (``nn.LeakyReLU(0.2)``).

Most are composites of ``gd.ops`` and get their gradients for free. Primitives exist
where a composite would be wrong or unstable: ``relu`` (derivative exactly 0 at 0, where
``maximum(x, 0)`` would give 1), ``softplus`` (no overflow, torch's linear threshold),
``softmax``/``log_softmax`` (max subtracted; one fused vjp) and ``erf`` (NumPy has none;
exact GELU needs it).

Example:
    >>> import numpy as np
    >>> from gpudl.functional import activations as A
    >>> A.relu(np.array([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    >>> A.get_activation("gelu") is A.gelu
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, nondifferentiable, stop_gradient
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, ShapeError
from gpudl.functional.activation_registry import activation, by_name
from gpudl.functional.activation_registry import functions as _registry_functions

# torch.nn.SELU's constants (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ------------------------------------------------------------------------ simple ones
@activation("identity", lookup_aliases=("linear",))
def identity(x):
    """``x`` unchanged (the "linear" activation)."""
    return x


_step = nondifferentiable(
    "step",
    lambda x, *, at_zero: np.where(x > 0, 1.0, np.where(x == 0, at_zero, 0.0)).astype(x.dtype),
)


@activation("step", layer="Step")
def step(x, at_zero: float = 1.0):
    """Heaviside step: 1 for x > 0, 0 for x < 0, ``at_zero`` at 0 (the perceptron's rule).

    Forward only: the output is a constant to ``gd.grad`` (the true derivative is 0
    almost everywhere, so nothing could learn through it anyway).

    Example:
        >>> step(np.array([-1.0, 0.0, 3.0])).tolist()
        [0.0, 1.0, 1.0]
    """
    return _step(x, at_zero=float(at_zero))


# ops' own primitives (their docstrings describe Primitive, hence doc=).
sigmoid = activation("sigmoid", layer="Sigmoid", doc="``1 / (1 + exp(-x))``.")(ops.sigmoid)
tanh = activation("tanh", layer="Tanh", doc="Hyperbolic tangent.")(ops.tanh)

relu_p = Primitive(
    "relu",
    lambda x: np.maximum(x, 0),
    # x > 0, not >= 0: derivative 0 at the kink, as torch.
    lambda g, out, x: (ops.where(ops.greater(x, 0), g, 0.0),),
)


@activation("relu", layer="ReLU")
def relu(x):
    """``max(x, 0)``; its derivative at 0 is 0 (torch's convention).

    Example:
        >>> relu(np.array([-2.0, 3.0])).tolist()
        [0.0, 3.0]
    """
    return relu_p(x)


def _min_below_max(args: Mapping[str, Any]) -> str | None:
    """The layer refuses an empty range (the function accepts min_val == max_val)."""
    if args["min_val"] < args["max_val"]:
        return None
    return (f"min_val must be below max_val, got min_val={args['min_val']}, "
            f"max_val={args['max_val']}")


@activation("hardtanh", layer="Hardtanh", layer_check=_min_below_max)
def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0):
    """``clip(x, min_val, max_val)``; gradient 1 strictly inside, 0 elsewhere (at the bounds
    too, as torch's hardtanh; ``ops.clip`` keeps 1 at the bounds, as ``torch.clamp``)."""
    if min_val > max_val:
        raise ConfigError(f"hardtanh: min_val ({min_val}) must be <= max_val ({max_val})")
    inside = ops.logical_and(ops.greater(x, min_val), ops.less(x, max_val))
    return ops.where(inside, x, stop_gradient(ops.clip(x, min_val, max_val)))


@activation("leaky_relu", layer="LeakyReLU")
def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` for x > 0, ``negative_slope * x`` otherwise (torch default slope 0.01)."""
    return ops.where(ops.greater(x, 0), x, x * negative_slope)


def prelu(x, weight):
    """Leaky ReLU with a learned slope: one per channel (axis 1) or a single one.

    ``weight`` has shape (C,) with C = x.shape[1], or (1,)/() to share one slope (torch).

    Example:
        >>> prelu(np.array([[-1.0, -1.0]]), np.array([0.1, 0.5])).tolist()
        [[-0.1, -0.5]]
    """
    xs, ws = _shape(x), _shape(weight)
    n = int(np.prod(ws)) if ws else 1
    if len(ws) > 1:
        raise ShapeError(f"prelu: weight must be 1-D (C,) or a scalar, got shape {ws}")
    if n != 1:
        if len(xs) < 2 or xs[1] != n:
            raise ShapeError(
                f"prelu: weight has {n} slopes but input of shape {xs} has "
                f"{xs[1] if len(xs) > 1 else 'no'} channels on axis 1; give one slope per "
                f"channel or a single shared slope"
            )
        weight = ops.reshape(weight, (n,) + (1,) * (len(xs) - 2))
    elif ws:
        weight = ops.reshape(weight, ())
    return ops.where(ops.greater(x, 0), x, x * weight)


@activation("elu", layer="ELU")
def elu(x, alpha: float = 1.0):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise."""
    # expm1 of min(x, 0): the unused branch never overflows (inf * 0 would poison grads).
    return ops.where(ops.greater(x, 0), x, alpha * ops.expm1(ops.minimum(x, 0.0)))


@activation("selu", layer="SELU")
def selu(x):
    """``scale * elu(x, alpha)`` with torch's constants (self-normalising networks)."""
    return SELU_SCALE * elu(x, SELU_ALPHA)


@activation("silu", "swish", layer=("SiLU", "Swish"))
def silu(x):
    """``x * sigmoid(x)`` (SiLU, a.k.a. Swish with beta = 1)."""
    return x * ops.sigmoid(x)


swish = silu


# ------------------------------------------------------------------------ softplus
def _softplus_impl(x, *, beta, threshold):
    z = x * beta
    smooth = (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / beta
    return np.where(z > threshold, x, smooth).astype(x.dtype, copy=False)


def _softplus_vjp(g, out, x, *, beta, threshold):
    z = x * beta
    return (ops.where(ops.greater(z, threshold), g, g * ops.sigmoid(z)),)


softplus_p = Primitive("softplus", _softplus_impl, _softplus_vjp)


@activation("softplus", layer="Softplus", positive=("beta",))
def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """``log(1 + exp(beta x)) / beta``, computed without overflow; linear where beta x > threshold.

    Example:
        >>> float(softplus(np.array(1000.0)))  # no overflow
        1000.0
    """
    if beta <= 0:
        raise ConfigError(f"softplus: beta must be > 0, got {beta}")
    return softplus_p(x, beta=float(beta), threshold=float(threshold))


# ------------------------------------------------------------------------ erf and GELU
# Chebyshev coefficients fitted (float64, against math.erf/erfc) for this module:
#   |x| < 1:      erf(x) = x * T(2x^2 - 1)                         max rel. error ~6e-16
#   1 <= |x| < 6: erfc(x) = t exp(-x^2 + U(u)), t = 2/(2+x), u in [-1, 1]   max abs ~3e-16
#   |x| >= 6:     erf(x) = sign(x)  (erfc(6) = 2e-17 is below float64 resolution at 1)
_ERF_SMALL = (
    0.9754769393826541,
    -0.14226120510371354,
    0.010035582187599763,
    -0.0005768764699767588,
    2.7419931252141826e-05,
    -1.1043175507034089e-06,
    3.84887554363847e-08,
    -1.1808582119381384e-09,
    3.2334190450919696e-11,
    -7.990698569084373e-13,
    1.7952561409221776e-14,
    -3.6335263121621663e-16,
)
_ERFC_LARGE = (
    -0.7225506374061089,
    0.2743072087845946,
    0.0048938741789529465,
    -0.0007494557113350515,
    -4.730434508254708e-05,
    5.513677106311979e-06,
    4.6498468442856185e-07,
    -6.245716691120835e-08,
    -4.407154138730507e-09,
    8.579688962330471e-10,
    3.032902822191352e-11,
    -1.2114200586674473e-11,
    9.844717046312686e-14,
    1.5488861827550324e-13,
    -9.029286394944315e-15,
    -1.5341390896504432e-15,
    3.668565942608629e-16,
)
_T_LO, _T_HI = 0.25, 2.0 / 3.0  # t = 2/(2+x) for x in [1, 6]


def _clenshaw(u, coefs):
    """sum_k coefs[k] T_k(u) on plain arrays."""
    b1 = b2 = 0.0
    for c in coefs[:0:-1]:
        b1, b2 = 2.0 * u * b1 - b2 + c, b1
    return u * b1 - b2 + coefs[0]


def _erf_impl(x):
    xp = module_of(x)
    x = xp.asarray(x)
    a = xp.abs(x)
    out = xp.array(xp.sign(x), dtype=x.dtype)  # the |x| >= 6 (and NaN) answer
    small = a < 1.0
    if small.any():
        s = a[small]
        out[small] = (x[small] * _clenshaw(2.0 * s * s - 1.0, _ERF_SMALL)).astype(x.dtype)
    mid = (a >= 1.0) & (a < 6.0)
    if mid.any():
        m = a[mid]
        t = 2.0 / (2.0 + m)
        u = (2.0 * t - (_T_HI + _T_LO)) / (_T_HI - _T_LO)
        erfc = t * xp.exp(-m * m + _clenshaw(u, _ERFC_LARGE))
        out[mid] = (xp.sign(x[mid]) * (1.0 - erfc)).astype(x.dtype)
    return out


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
erf = Primitive("erf", _erf_impl, lambda g, out, x: (g * (_TWO_OVER_SQRT_PI * ops.exp(-(x * x))),))


@activation("gelu", layer="GELU")
def gelu(x, approximate: Literal["none", "tanh"] = "none"):
    """``x * Phi(x)``: exact (``"none"``, via erf) or torch's ``"tanh"`` approximation.

    Example:
        >>> round(float(gelu(np.array(1.0))), 6)
        0.841345
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + ops.tanh(inner))
    raise ConfigError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ------------------------------------------------------------------------ softmax family
def _softmax_impl(x, *, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


softmax_p = Primitive(
    "softmax",
    _softmax_impl,
    lambda g, out, x, *, axis: (out * (g - ops.sum(g * out, axis=axis, keepdims=True)),),
)


def _log_softmax_impl(x, *, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


log_softmax_p = Primitive(
    "log_softmax",
    _log_softmax_impl,
    lambda g, out, x, *, axis: (g - ops.exp(out) * ops.sum(g, axis=axis, keepdims=True),),
)


def _check_axis(x, axis: int, op: str) -> int:
    ndim = len(_shape(x))
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ShapeError(f"{op}: axis {axis} is out of range for an input of shape {_shape(x)}")
    return axis % max(ndim, 1)


@activation("softmax", layer="Softmax", positional=1, positive=("temperature",),
            torch_names={"dim": "axis"})
def softmax(x, axis: int = -1, temperature: float = 1.0):
    """``exp(x/T) / sum(exp(x/T))`` over ``axis``, stable (the max is subtracted first).

    ``temperature`` T > 1 flattens the distribution, T < 1 sharpens it.

    Example:
        >>> softmax(np.array([1000.0, 1000.0])).tolist()  # no overflow
        [0.5, 0.5]
    """
    if temperature <= 0:
        raise ConfigError(f"softmax: temperature must be > 0, got {temperature}")
    if temperature != 1.0:
        x = x / float(temperature)
    return softmax_p(x, axis=_check_axis(x, axis, "softmax"))


@activation("log_softmax", layer="LogSoftmax", positional=1, positive=("temperature",),
            torch_names={"dim": "axis"})
def log_softmax(x, axis: int = -1, temperature: float = 1.0):
    """``log(softmax(x))`` computed as ``x - max - log(sum(exp(x - max)))`` (no log of 0)."""
    if temperature <= 0:
        raise ConfigError(f"log_softmax: temperature must be > 0, got {temperature}")
    if temperature != 1.0:
        x = x / float(temperature)
    return log_softmax_p(x, axis=_check_axis(x, axis, "log_softmax"))


@activation("maxout", layer="Maxout", positive=("num_pieces",))
def maxout(x, num_pieces: int, axis: int = -1):
    """Max over groups of ``num_pieces`` consecutive features along ``axis`` (Goodfellow et al.).

    An axis of size ``k * num_pieces`` becomes size ``k``: ``out[j] = max(x[j*p:(j+1)*p])``.

    Example:
        >>> maxout(np.array([[1.0, 5.0, 3.0, 2.0]]), 2).tolist()
        [[5.0, 3.0]]
    """
    shape = _shape(x)
    axis = _check_axis(x, axis, "maxout")
    if num_pieces < 1 or shape[axis] % num_pieces:
        raise ShapeError(
            f"maxout: axis {axis} has size {shape[axis]}, which is not a multiple of "
            f"num_pieces={num_pieces}; make the preceding layer output k * num_pieces features"
        )
    grouped = shape[:axis] + (shape[axis] // num_pieces, num_pieces) + shape[axis + 1 :]
    return ops.max(ops.reshape(x, grouped), axis=axis + 1)


# ------------------------------------------------------------------------ lookup by name
def get_activation(name: str) -> Callable:
    """The activation function called ``name`` (case-insensitive; ``-`` or ``_`` alike).

    Example:
        >>> get_activation("ReLU") is relu
        True
    """
    key = str(name).lower().replace("-", "_")
    table = by_name()
    if key not in table:
        raise ConfigError(
            f"get_activation: unknown activation {name!r}; valid names are "
            f"{', '.join(sorted(table))} (prelu needs a weight: use functional.prelu "
            f"or nn.PReLU)"
        )
    return table[key]


# F.<name>: every registered activation (sigmoid and tanh come from gpudl.ops) and the
# helpers around them.
__all__ = ["erf", "get_activation", "prelu", *_registry_functions()]
