"""Elementwise ops with NumPy names and broadcasting.

Forwards call NumPy ufuncs, which dispatch to CuPy for CuPy arrays (``__array_ufunc__``),
so one body serves both devices. vjp rules return cotangents of the broadcast shape;
``autodiff`` sums them back to each input's shape. A vjp entry may be a zero-argument
function: it is called only when that input needs a gradient (saves work for constants).

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.sigmoid(np.zeros(2)).tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

import math

import numpy as np

from gpudl.autodiff import Primitive, nondifferentiable, unbox_all
from gpudl.errors import ConfigError

# --------------------------------------------------------------------------- arithmetic
add = Primitive("add", np.add, lambda g, out, x, y: (g, g))
subtract = Primitive("subtract", np.subtract, lambda g, out, x, y: (g, lambda: -g))
multiply = Primitive("multiply", np.multiply, lambda g, out, x, y: (lambda: g * y, lambda: g * x))
divide = Primitive(
    "divide",
    np.true_divide,
    lambda g, out, x, y: (lambda: g / y, lambda: -g * out / y),
)
negative = Primitive("negative", np.negative, lambda g, out, x: (-g,))


def _power_vjp(g, out, x, y):
    def dx():
        return g * y * power(x, y - 1)

    def dy():
        # d/dy x**y = x**y log x, defined for x > 0; 0 elsewhere (as torch does for x == 0).
        if isinstance(x, int | float):  # a Python base (2.0 ** t): keep the log weakly typed
            return g * out * math.log(x) if x > 0 else g * 0.0
        positive = greater(x, 0)
        safe_x = where(positive, x, 1.0)
        return where(positive, g * out * log(safe_x), 0.0)

    return dx, dy


power = Primitive("power", np.power, _power_vjp)


def square(x):
    """``x * x`` (composite: its gradient comes from multiply)."""
    return multiply(x, x)


def reciprocal(x):
    return divide(1.0, x)


# --------------------------------------------------------------------------- transcendental
exp = Primitive("exp", np.exp, lambda g, out, x: (g * out,))
expm1 = Primitive("expm1", np.expm1, lambda g, out, x: (g * (out + 1.0),))
log = Primitive("log", np.log, lambda g, out, x: (g / x,))
log1p = Primitive("log1p", np.log1p, lambda g, out, x: (g / (x + 1.0),))
sqrt = Primitive("sqrt", np.sqrt, lambda g, out, x: (g / (2.0 * out),))
sin = Primitive("sin", np.sin, lambda g, out, x: (g * cos(x),))
cos = Primitive("cos", np.cos, lambda g, out, x: (-(g * sin(x)),))
tanh = Primitive("tanh", np.tanh, lambda g, out, x: (g * (1.0 - out * out),))


def _sigmoid_impl(x):
    # exp(-|x|) never overflows, and the two branches keep full relative precision in both
    # tails (0.5 * tanh(x / 2) + 0.5 would round sigmoid(-50) to 0).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


sigmoid = Primitive("sigmoid", _sigmoid_impl, lambda g, out, x: (g * out * (1.0 - out),))


def _abs_vjp(g, out, x):
    return (g * sign(x),)


abs = Primitive("abs", np.abs, _abs_vjp)  # noqa: A001 - NumPy's name
absolute = abs

# --------------------------------------------------------------------------- comparisons (no grad)
sign = nondifferentiable("sign", np.sign)
equal = nondifferentiable("equal", np.equal)
not_equal = nondifferentiable("not_equal", np.not_equal)
less = nondifferentiable("less", np.less)
less_equal = nondifferentiable("less_equal", np.less_equal)
greater = nondifferentiable("greater", np.greater)
greater_equal = nondifferentiable("greater_equal", np.greater_equal)
logical_and = nondifferentiable("logical_and", np.logical_and)
logical_or = nondifferentiable("logical_or", np.logical_or)
logical_not = nondifferentiable("logical_not", np.logical_not)
isnan = nondifferentiable("isnan", np.isnan)
isfinite = nondifferentiable("isfinite", np.isfinite)
floor = nondifferentiable("floor", np.floor)
ceil = nondifferentiable("ceil", np.ceil)
round = nondifferentiable("round", np.round)  # noqa: A001 - NumPy's name


# --------------------------------------------------------------------------- selection
def _where_vjp(g, out, cond, x, y):
    return None, lambda: where(cond, g, 0.0), lambda: where(cond, 0.0, g)


_where = Primitive("where", np.where, _where_vjp)


def _typed_scalar(v, other):
    """A Python scalar as a NumPy scalar of ``other``'s float dtype (float32 stays float32)."""
    dtype = getattr(other, "dtype", None)
    if isinstance(v, int | float) and not isinstance(v, bool) and dtype is not None \
            and np.dtype(dtype).kind == "f":
        return np.dtype(dtype).type(v)
    return v


def where(condition, x, y):
    """``x`` where ``condition`` else ``y`` (``condition`` gets no gradient).

    A Python scalar branch takes the other branch's float dtype, so float32 stays float32.

    Example:
        >>> where(np.array([True, False]), 1.0, 2.0).tolist()
        [1.0, 2.0]
    """
    return _where(unbox_all(condition), _typed_scalar(x, y), _typed_scalar(y, x))


def _maximum_vjp(g, out, x, y):
    # Ties send the gradient to x, like torch.maximum's subgradient choice documented here.
    mask = greater_equal(x, y)
    return lambda: where(mask, g, 0.0), lambda: where(mask, 0.0, g)


def _minimum_vjp(g, out, x, y):
    mask = less_equal(x, y)
    return lambda: where(mask, g, 0.0), lambda: where(mask, 0.0, g)


maximum = Primitive("maximum", np.maximum, _maximum_vjp)
minimum = Primitive("minimum", np.minimum, _minimum_vjp)


def _clip_vjp(g, out, x, *, a_min, a_max):
    inside = x == out  # where clipping did not change x
    return (where(inside, g, 0.0),)


_clip = Primitive("clip", lambda x, *, a_min, a_max: np.clip(x, a_min, a_max), _clip_vjp)


def clip(x, a_min=None, a_max=None, *, min=None, max=None):  # noqa: A002 - NumPy 2.1 names
    """Limit values to ``[a_min, a_max]`` (scalars); the gradient is 0 where clipped.

    Example:
        >>> clip(np.array([-2.0, 0.5, 3.0]), -1, 1).tolist()
        [-1.0, 0.5, 1.0]
    """
    a_min = min if a_min is None else a_min
    a_max = max if a_max is None else a_max
    if a_min is None and a_max is None:
        raise ConfigError("ops.clip: give a_min, a_max or both (both are None)")
    return _clip(x, a_min=_typed_scalar(a_min, x), a_max=_typed_scalar(a_max, x))


def _astype_vjp(g, out, x, *, dtype):
    return (astype(g, x.dtype),)


_astype = Primitive("astype", lambda x, *, dtype: x.astype(dtype, copy=False), _astype_vjp)


def astype(x, dtype):
    """Cast to ``dtype``; the gradient is cast back to the input's dtype."""
    dtype = np.dtype(dtype)
    if getattr(x, "dtype", None) == dtype:
        return x
    return _astype(x, dtype=dtype)
