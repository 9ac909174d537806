"""Activation functions (torch names, defaults and derivative conventions).

Each is registered with ``@activation(name, layer=...)`` (see
:mod:`gpudl.functional.activation_registry`): that one line makes it ``F.<name>``, a
name for :func:`get_activation` and, in ``gpudl.nn``, a layer class whose constructor
takes the function's hyper-parameters (``nn.LeakyReLU(0.2)``).

The memory-bound ones are primitives with two bodies (``_activation_kernels.py``): one
launch of kernels/activation.cu each way on the GPU, a NumPy twin on the CPU that makes
the fewest passes with reused buffers and no ``np.where`` (``_activation_twins.py``):
``relu``, ``leaky_relu``, ``elu`` (and ``selu``), ``hardtanh``, ``silu``, ``gelu`` (both
forms), and ``sigmoid``/``tanh``, which are ``gd.ops``' own primitives. Their vjps run the
backward body directly and switch to the same derivative written with ``gd.ops`` when an
outer ``gd.grad`` traces them (grad of grad). Other primitives exist where a composite
would be wrong or unstable: ``softplus`` (no overflow, torch's linear threshold),
``softmax``/``log_softmax`` (max subtracted; one fused vjp) and ``erf`` (NumPy has none).
The derivatives at the kinks are torch's: relu'(0) = 0, leaky_relu'(0) = slope,
elu'(0) = alpha, hardtanh' = 0 at the bounds.

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
from gpudl.autodiff import Primitive, is_traced, nondifferentiable
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, ShapeError
from gpudl.functional._activation_kernels import activation_backward_raw, activation_raw
from gpudl.functional._activation_twins import INV_SQRT_2PI, SQRT1_2, erf_twin
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

# ------------------------------------------------------------------------ fused primitives
def _fused(name: str, op, params: tuple[str, ...], traced_vjp: Callable) -> Primitive:
    """The Primitive of a fused activation: ``impl(x, **static)`` runs the forward body of
    ``op`` (a name, or a function of the static arguments giving it) with the static
    arguments ``params`` as (p0, p1); the vjp runs its backward body, or ``traced_vjp(g,
    out, x, **static)`` written with gd.ops when an outer gd.grad traces it."""
    def body(static):
        return (op(static) if callable(op) else op), tuple(float(static[p]) for p in params)

    def impl(x, **static):
        kind, ps = body(static)
        return activation_raw(kind, x, *ps)

    def vjp(g, out, x, **static):
        if is_traced(g) or is_traced(out) or is_traced(x):
            return (lambda: traced_vjp(g, out, x, **static),)
        kind, ps = body(static)
        return (lambda: activation_backward_raw(kind, g, x, out, *ps),)

    return Primitive(name, impl, vjp)


relu_p = _fused("relu", "relu", (), lambda g, out, x: ops.where(ops.greater(x, 0), g, 0.0))


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


def _hardtanh_traced_vjp(g, out, x, *, min_val, max_val):
    inside = ops.logical_and(ops.greater(x, min_val), ops.less(x, max_val))
    return ops.where(inside, g, 0.0)


hardtanh_p = _fused("hardtanh", "hardtanh", ("min_val", "max_val"), _hardtanh_traced_vjp)


@activation("hardtanh", layer="Hardtanh", layer_check=_min_below_max)
def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0):
    """``clip(x, min_val, max_val)``; gradient 1 strictly inside, 0 elsewhere (at the bounds
    too, as torch's hardtanh; ``ops.clip`` keeps 1 at the bounds, as ``torch.clamp``)."""
    if min_val > max_val:
        raise ConfigError(f"hardtanh: min_val ({min_val}) must be <= max_val ({max_val})")
    return hardtanh_p(x, min_val=float(min_val), max_val=float(max_val))


leaky_relu_p = _fused(
    "leaky_relu", "leaky_relu", ("negative_slope",),
    lambda g, out, x, *, negative_slope: ops.where(ops.greater(x, 0), g, g * negative_slope))


@activation("leaky_relu", layer="LeakyReLU")
def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` for x > 0, ``negative_slope * x`` otherwise (torch default slope 0.01)."""
    return leaky_relu_p(x, negative_slope=float(negative_slope))


def prelu(x, weight):
    """Leaky ReLU with a learned slope: one per channel (axis 1) or a single one.

    ``weight`` has shape (C,) with C = x.shape[1], or (1,)/() to share one slope (torch).

    Example:
        >>> prelu(np.array([[-1.0, -1.0]]), np.array([0.1, 0.5])).tolist()
        [[-0.1, -0.5]]
    """
    xs, ws = _shape(x), _shape(weight)
    n = math.prod(ws)
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


def _elu_traced_vjp(g, out, x, *, alpha, scale):
    # x <= 0: d/dx scale*alpha*expm1(x) = scale*alpha*exp(x) = out + scale*alpha
    return ops.where(ops.greater(x, 0), g * scale, g * (out + scale * alpha))


elu_p = _fused("elu", "elu", ("alpha", "scale"), _elu_traced_vjp)


@activation("elu", layer="ELU")
def elu(x, alpha: float = 1.0):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise."""
    return elu_p(x, alpha=float(alpha), scale=1.0)


@activation("selu", layer="SELU")
def selu(x):
    """``scale * elu(x, alpha)`` with torch's constants (self-normalising networks)."""
    return elu_p(x, alpha=SELU_ALPHA, scale=SELU_SCALE)


def _silu_traced_vjp(g, out, x):
    s = ops.sigmoid(x)
    return g * (s * (1.0 + x * (1.0 - s)))


silu_p = _fused("silu", "silu", (), _silu_traced_vjp)


@activation("silu", "swish", layer=("SiLU", "Swish"))
def silu(x):
    """``x * sigmoid(x)`` (SiLU, a.k.a. Swish with beta = 1)."""
    return silu_p(x)


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
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
# NumPy has no erf: two Chebyshev fits, branch-free (_activation_twins.erf_twin), on both
# devices (its NumPy-named passes run on CuPy too).
erf = Primitive("erf", erf_twin, lambda g, out, x: (g * (_TWO_OVER_SQRT_PI * ops.exp(-(x * x))),))


def _gelu_traced_vjp(g, out, x, *, approximate):
    if approximate == "none":
        cdf = 0.5 * (1.0 + erf(x * SQRT1_2))
        return g * (cdf + x * (ops.exp(-0.5 * (x * x)) * INV_SQRT_2PI))
    k, c = math.sqrt(2.0 / math.pi), 0.044715
    t = ops.tanh(k * (x + c * x * x * x))
    return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x * x))


gelu_p = _fused("gelu", lambda static: "gelu" if static["approximate"] == "none" else "gelu_tanh",
                (), _gelu_traced_vjp)


@activation("gelu", layer="GELU")
def gelu(x, approximate: Literal["none", "tanh"] = "none"):
    """``x * Phi(x)``: exact (``"none"``, via erf) or torch's ``"tanh"`` approximation.

    Example:
        >>> round(float(gelu(np.array(1.0))), 6)
        0.841345
    """
    if approximate not in ("none", "tanh"):
        raise ConfigError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return gelu_p(x, approximate=approximate)


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
