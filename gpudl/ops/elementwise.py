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
import threading
from collections.abc import Callable

import numpy as np

from gpudl.autodiff import Primitive, is_traced, nondifferentiable, unbox_all
from gpudl.backend import device_of
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


# --------------------------------------------------------------------------- sigmoid and tanh
# Both are activations too (F.sigmoid is ops.sigmoid). Their NumPy bodies below make the
# fewest passes with reused buffers and no np.where (which costs ~20x a multiply over a
# full array here); on CuPy arrays they run one kernel launch each way: the CUDA bodies
# come from gpudl.functional._activation_kernels (kernels/activation.cu), which registers
# them in CUDA_BODIES when it is imported (``import gpudl`` imports it). ops sits below the
# kernel loader and never imports it; without a registered body (or for a traced
# cotangent, so grad-of-grad works) the NumPy-named formulas run on either device.
CUDA_BODIES: dict[str, Callable] = {}  # "sigmoid", "sigmoid_backward", "tanh", "tanh_backward"


def _cuda_body(name: str, x):
    """The registered CUDA body ``name`` when ``x`` is a CUDA array, else None."""
    if type(x) is np.ndarray or not CUDA_BODIES or device_of(x) != "cuda":
        return None
    return CUDA_BODIES.get(name)


# The NumPy bodies run in blocks of BLOCK elements whose temporaries come from a
# per-thread pool (Scratch): no temporary is a fresh allocation, which glibc returns to
# the OS when freed and the OS faults in again on the next use (that costs more than the
# arithmetic of a cheap op). The activations of gpudl.functional use the same machinery.
# Blocks are large: each NumPy call costs ~1-2 us of its own and, on the 2-core EPYC of
# benchmarks/cpu_vs_torch.py, passes over cache-sized blocks were no faster per element
# than over whole arrays. Sigmoid fwd on (128, 6, 28, 28) float32: 0.59 ms in blocks of
# 64K elements, 0.46 ms in one block (backward 0.31 -> 0.22 ms).
BLOCK = 1 << 20  # elements


class Scratch:
    """The temporaries of one block: ``take(dtype)`` hands out distinct buffers of the
    block's length; NumPy ones come from a per-thread pool and are reused by every block
    and call. For other arrays (CuPy, ``like``) each is a new ``empty_like``."""

    _local = threading.local()

    def __init__(self, n: int, dtype, like=None):
        self.n, self.dtype, self.like = n, np.dtype(dtype), like
        self.taken: dict[str, int] = {}

    def take(self, dtype=None):
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if self.like is not None:
            return np.empty_like(self.like, dtype=dtype)
        pools = self._local.__dict__
        pool = pools.get(dtype.str)
        if pool is None:  # first use of this dtype on this thread
            pool = pools[dtype.str] = []
        k = self.taken.get(dtype.str, 0)
        self.taken[dtype.str] = k + 1
        if k == len(pool):
            pool.append(np.empty(self.n, dtype))
        elif pool[k].size < self.n:  # grown to the largest block asked for
            pool[k] = np.empty(self.n, dtype)
        return pool[k][:self.n]


def blockwise(body: Callable, *arrays, dtype, static: tuple = ()):
    """``body(*blocks, *static, out=, sc=)`` over consecutive blocks of the arrays (one
    shape), into a new array of ``dtype``; the body writes its result into ``out``.

    CuPy arrays (the CPU body as a GPU fallback) go through in one piece.
    """
    arrays = [np.asarray(a) if isinstance(a, np.generic | int | float) else a for a in arrays]
    first = arrays[0]
    if any(type(a) is not np.ndarray for a in arrays):
        out = np.empty_like(first, dtype=dtype)
        body(*arrays, *static, out=out, sc=Scratch(first.size, dtype, like=first))
        return out
    out = np.empty(first.shape, dtype)
    n = out.size
    if n <= BLOCK:  # one block (most calls on small arrays): no slicing loop
        body(*(np.ascontiguousarray(a).reshape(-1) for a in arrays), *static,
             out=out.reshape(-1), sc=Scratch(n, dtype))
        return out
    flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    flat_out = out.reshape(-1)
    for i in range(0, n, BLOCK):
        j = min(n, i + BLOCK)
        body(*(f[i:j] for f in flat), *static, out=flat_out[i:j], sc=Scratch(j - i, dtype))
    return out


# np.maximum(x, 0) broadcasts the scalar through NumPy's strided loop, about twice the
# time of its SIMD loop on two contiguous arrays; relu_into feeds it a zero block instead
ZERO_BLOCK = 1 << 16  # elements: 256 KB of float32 zeros, cache-resident
_ZEROS: dict = {}


def relu_into(x, out):
    """``out = maximum(x, 0)`` (NaN stays NaN; the same bits as ``np.maximum(x, 0)``), for
    NumPy float arrays; ``out`` may be x. Contiguous arrays take the SIMD loop against a
    cached zero block, others ``np.maximum(x, 0)``.

    Example:
        >>> relu_into(np.array([-1.0, 2.0]), np.empty(2)).tolist()
        [0.0, 2.0]
    """
    dt = x.dtype
    if not (type(x) is np.ndarray and type(out) is np.ndarray and dt.kind == "f"
            and out.dtype == dt and x.flags.c_contiguous and out.flags.c_contiguous
            and x.shape == out.shape):
        return np.maximum(x, dt.type(0), out=out)
    zeros = _ZEROS.get(dt.str)
    if zeros is None:
        zeros = _ZEROS[dt.str] = np.zeros(ZERO_BLOCK, dt)
    xf, of, n = x.reshape(-1), out.reshape(-1), x.size
    for i in range(0, n, ZERO_BLOCK):
        j = min(n, i + ZERO_BLOCK)
        np.maximum(xf[i:j], zeros[:j - i], out=of[i:j])
    return out


def float_array(x):
    """x as an array of a float dtype: numbers become arrays, integers float64 (np.exp's)."""
    if isinstance(x, np.generic) or not hasattr(x, "shape"):
        x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


# float64 sigmoid's fast form needs exp(-x) finite: x >= -log(max double), with a margin
_EXP_SAFE_F64 = -709.0


def sigmoid_body(x, *, out, sc):
    """sigmoid of a float block into ``out``: ``1 / (1 + exp(-x))``, or two-branch where that
    overflows.

    float32: ``1 / (2 + expm1(-x))`` (4 passes; NumPy's float32 expm1 runs ~25 % faster
    than its exp and the form is as accurate: within ~3.2 ulp of the exact value, as the
    exp form). A block whose ``expm1(-x)`` overflows (an x below -88.7) is redone with
    :func:`sigmoid_two_branch`, told by NumPy's overflow flag, so no pass checks the range.
    float64: ``1 / (1 + exp(-x))`` (4 passes and a min) where no element is below -709,
    else the two-branch form; for x >= 0 that is the two-branch form's bits.

    Either form keeps full relative precision in both tails (sigmoid(-50) is 1.9e-22,
    not 0: ``0.5 * tanh(x / 2) + 0.5`` would round it to 0). A NaN x gives NaN on every
    path, -inf gives 0; float16 always takes the two-branch form.
    """
    if x.dtype == np.float32:
        np.negative(x, out=out)
        try:
            with np.errstate(over="raise"):
                np.expm1(out, out=out)
        except FloatingPointError:  # an x below -88.7 in this block
            return sigmoid_two_branch(x, out=out, sc=sc)
        np.add(out, 2.0, out=out)
        return np.divide(1.0, out, out=out)
    if x.dtype != np.float64 or (x.size and not x.min() >= _EXP_SAFE_F64):
        # not min() < limit: a NaN min (a NaN in x) takes the two-branch form, to be safe
        return sigmoid_two_branch(x, out=out, sc=sc)
    np.negative(x, out=out)
    np.exp(out, out=out)  # finite: -x <= 709
    np.add(out, 1.0, out=out)
    return np.divide(1.0, out, out=out)


def sigmoid_two_branch(x, *, out, sc):
    """``(x >= 0 ? 1 : e) / (1 + e)`` with ``e = exp(-|x|)``, into ``out`` (6 passes).

    ``exp(-|x|)`` never overflows and ``e / (1 + e)`` keeps full relative precision in the
    lower tail. The numerator is ``maximum(e, x >= 0)`` (e <= 1): bit for bit the
    two-branch form, without np.where. Also the CUDA kernel's formula.
    """
    e = np.abs(x, out=sc.take())
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = exp(-|x|) in (0, 1]
    np.add(e, 1.0, out=out)  # the denominator
    np.maximum(e, np.greater_equal(x, 0, out=sc.take(np.bool_)), out=e)  # the numerator
    return np.divide(e, out, out=out)


def sigmoid_twin(x):
    """NumPy body of sigmoid (:func:`sigmoid_body`, in blocks).

    Example:
        >>> sigmoid_twin(np.array([-50.0, 0.0])).tolist()
        [1.928749847963918e-22, 0.5]
    """
    x = float_array(x)
    return blockwise(sigmoid_body, x, dtype=x.dtype)


def _sigmoid_backward_body(g, y, *, out, sc):
    np.multiply(g, y, out=out)
    return np.multiply(out, np.subtract(1.0, y, out=sc.take(y.dtype)), out=out)


def sigmoid_backward_twin(g, out):
    """NumPy body of sigmoid's vjp: ``(g * out) * (1 - out)`` (the saved output, 3 passes)."""
    if np.shape(g) != np.shape(out):  # a broadcast g (not from autodiff): the plain formula
        return g * out * (1.0 - out)
    return blockwise(_sigmoid_backward_body, g, out, dtype=np.result_type(g, out))


def _tanh_backward_body(g, y, *, out, sc):
    d = np.multiply(y, y, out=sc.take(y.dtype))
    np.subtract(1.0, d, out=d)
    return np.multiply(g, d, out=out)


def tanh_backward_twin(g, out):
    """NumPy body of tanh's vjp: ``g * (1 - out * out)`` (3 passes)."""
    if np.shape(g) != np.shape(out):
        return g * (1.0 - out * out)
    return blockwise(_tanh_backward_body, g, out, dtype=np.result_type(g, out))


def _sigmoid_impl(x):
    body = _cuda_body("sigmoid", x)
    return sigmoid_twin(x) if body is None else body(x)


def _sigmoid_vjp(g, out, x):
    if is_traced(g) or is_traced(out):  # an outer grad differentiates this: stay in ops
        return (g * out * (1.0 - out),)
    body = _cuda_body("sigmoid_backward", out)
    return (sigmoid_backward_twin(g, out) if body is None else body(g, out),)


def _tanh_impl(x):
    body = _cuda_body("tanh", x)
    return np.tanh(x) if body is None else body(x)


def _tanh_vjp(g, out, x):
    if is_traced(g) or is_traced(out):
        return (g * (1.0 - out * out),)
    body = _cuda_body("tanh_backward", out)
    return (tanh_backward_twin(g, out) if body is None else body(g, out),)


tanh = Primitive("tanh", _tanh_impl, _tanh_vjp)
sigmoid = Primitive("sigmoid", _sigmoid_impl, _sigmoid_vjp)


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
