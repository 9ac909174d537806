"""NumPy bodies (twins) of the fused activations, dropout's mask apply and ``erf``.

The CUDA bodies are kernels/activation.cu, launched from ``_activation_kernels.py``, which
also dispatches between the two; sigmoid's and tanh's twins are in gpudl/ops/elementwise.py.
Every twin computes the kernel's formula in the kernel's operation order:

* in blocks of ``BLOCK`` elements (``ops.elementwise.blockwise``) whose temporaries come
  from a per-thread pool (``Scratch``): the passes over a block stay in the cache and no
  temporary is a fresh allocation the OS has to fault in; each body writes into ``out``;
* no ``numpy.where``: with a random mask it runs ~20x slower than a multiply of the same
  size here (3 ms vs 0.13 ms on a (128, 6, 28, 28) float32 array), and boolean-mask
  subsets cost ~6 ms each. Selections are integer operations on the bit patterns instead
  (:func:`keep_where`, :func:`select`, :func:`scalar_select`): exact, the bits np.where
  would give;
* the forward results are the bits of the composites they replace (same operations, same
  order; tests/functional/test_activation_kernels.py pins it), except float32 erf (so
  exact GELU), which uses shorter fits as accurate as before, and the sign of some zeros.

Twins take NumPy arrays (CuPy arrays work too, in one piece: the fallback for a GPU
without the kernels) and return new arrays; integer inputs are computed in float64, as
NumPy's ufuncs would.

erf: two Chebyshev fits (float64, against math.erf/erfc):
  |x| < 1:      erf(x) = x * T(2x^2 - 1)                         max rel. error ~6e-16
  1 <= |x| < 6: erfc(x) = t exp(-x^2 + U(u)), t = 2/(2+x), u in [-1, 1]   max abs ~3e-16
  |x| >= 6:     erf(x) = sign(x)  (erfc(6) = 2e-17 is below float64 resolution at 1)
Every element goes through both fits, each on its argument clamped into the fit's range
(|x| to at most 1; into [1, 6], where 6 gives exactly +-1 in every float dtype), and a bit
select keeps the right one. The CUDA GELU uses CUDA's erf; the two agree to rounding.

Example:
    >>> relu_backward_twin(np.array([1.0, 2.0]), np.array([-1.0, 3.0])).tolist()
    [0.0, 2.0]
    >>> round(float(erf_twin(np.array(0.5))), 12)
    0.520499877813
"""

from __future__ import annotations

import math

import numpy as np

from gpudl.ops.elementwise import Scratch, blockwise, float_array, relu_into, sigmoid_body

SQRT1_2 = 1.0 / math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_CUBIC = 0.044715  # torch's tanh-GELU coefficient

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


# ----------------------------------------------------------------------------- bit selects
def keep_where(mask, v, out):
    """``out = where(mask, v, +0.0)`` exactly: v's bit pattern times the 0/1 mask (1 pass).

    A float product ``v * mask`` would turn an inf or NaN ``v`` into NaN where the mask is
    False, and keep the sign of a negative v's zero.
    """
    uint = _UINT[v.dtype.itemsize]
    return np.multiply(v.view(uint), mask, out=out.view(uint)).view(out.dtype)


def select(mask, a, b, sc: Scratch):
    """``b = where(mask, a, b)`` bit for bit, in place (``a``: an array of b's dtype or a
    number): ``b ^ ((a ^ b) * mask)`` on the bit patterns, 3 passes."""
    uint = _UINT[b.dtype.itemsize]
    bits = b.view(uint)
    a_bits = a.view(uint) if np.ndim(a) else np.asarray(a, dtype=b.dtype).view(uint)[()]
    diff = np.bitwise_xor(bits, a_bits, out=sc.take(uint))
    np.multiply(diff, mask, out=diff)
    np.bitwise_xor(bits, diff, out=bits)
    return b


def scalar_select(mask, a: float, b: float, out):
    """``out = where(mask, a, b)`` for two numbers, exactly: the words ``b + mask * (a - b)``
    in unsigned arithmetic modulo 2^bits (2 passes)."""
    uint = _UINT[out.dtype.itemsize]
    a_bits, b_bits = (int(np.asarray(v, dtype=out.dtype).view(uint)) for v in (a, b))
    words = out.view(uint)
    np.multiply(mask, uint((a_bits - b_bits) % (1 << (8 * out.dtype.itemsize))), out=words)
    np.add(words, uint(b_bits), out=words)
    return out


def _mask(op, x, value, sc: Scratch):
    return op(x, value, out=sc.take(np.bool_))


# ----------------------------------------------------------------------------- erf
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


def _power_series(cheb, shift: tuple[float, float]):
    """Chebyshev coefficients in u -> power coefficients in z, where u = shift[0] + shift[1] z."""
    from numpy.polynomial import chebyshev, polynomial

    out = np.zeros(1)
    for k, c in enumerate(chebyshev.cheb2poly(np.asarray(cheb, dtype=np.float64))):
        out = polynomial.polyadd(out, c * polynomial.polypow(list(shift), k))
    return tuple(float(c) for c in out)


# float32 needs fewer terms: the first 7 and 8 Chebyshev coefficients (the next ones are
# below 2e-9 and 5e-9); the second fit as a power series in u for Horner's 2 passes per
# term (the first stays a Chebyshev sum: as a power series in x^2 it loses 0.6 ulp). Over
# [-7, 7] this is within 1.9 ulp of math.erf, as the full fits evaluated in float32 are,
# in about 60% of the passes.
_ERF32_SMALL = _ERF_SMALL[:7]
_ERF32_LARGE = _power_series(_ERFC_LARGE[:8], (0.0, 1.0))


def clenshaw(u, coefs, sc: Scratch):
    """``sum_k coefs[k] T_k(u)``: 3 passes per coefficient, in 4 scratch buffers.

    The recurrence ``b_k = ((2u) b_{k+1} - b_{k+2}) + c_k``, in that order; its first step
    from ``b = b' = 0`` gives ``c`` (a NaN u shows one step later, with the same result).
    """
    two_u = np.multiply(u, 2.0, out=sc.take())
    b1, b2, t = sc.take(), sc.take(), sc.take()
    b1.fill(coefs[-1])
    first = True  # b2 is still 0: "- b2" changes nothing, skip that pass
    for c in coefs[-2:0:-1]:
        np.multiply(two_u, b1, out=t)
        if not first:
            np.subtract(t, b2, out=t)
        np.add(t, c, out=t)
        b1, b2, t = t, b1, b2
        first = False
    np.multiply(u, b1, out=t)
    np.subtract(t, b2, out=t)
    return np.add(t, coefs[0], out=t)


def horner(z, coefs, sc: Scratch):
    """``sum_k coefs[k] z^k``: 2 passes per coefficient, one scratch buffer."""
    r = np.multiply(z, coefs[-1], out=sc.take())
    for c in coefs[-2:0:-1]:
        np.add(r, c, out=r)
        np.multiply(r, z, out=r)
    return np.add(r, coefs[0], out=r)


def erf_body(x, *, out, sc: Scratch):
    """erf of a float block into ``out``: the full fits (~110 passes), or for float32 the
    shortened ones (~70)."""
    short = x.dtype == np.float32
    a = np.abs(x, out=sc.take())
    # |x| < 1: x * T(2 s^2 - 1), s = min(|x|, 1)
    s = np.minimum(a, 1.0, out=sc.take())
    u = np.multiply(s, 2.0, out=sc.take())
    np.multiply(u, s, out=u)
    np.subtract(u, 1.0, out=u)
    small = clenshaw(u, _ERF32_SMALL if short else _ERF_SMALL, sc)
    np.multiply(x, small, out=small)
    # |x| >= 1: sign(x) (1 - t exp(-m^2 + U(v))), m = clip(|x|, 1, 6)
    m = np.clip(a, 1.0, 6.0, out=s)
    t = np.add(m, 2.0, out=sc.take())
    np.divide(2.0, t, out=t)
    np.multiply(t, 2.0, out=u)
    np.subtract(u, _T_HI + _T_LO, out=u)
    np.divide(u, _T_HI - _T_LO, out=u)
    large = horner(u, _ERF32_LARGE, sc) if short else clenshaw(u, _ERFC_LARGE, sc)
    np.negative(m, out=u)
    np.multiply(u, m, out=u)
    np.add(u, large, out=large)
    np.exp(large, out=large)
    np.multiply(t, large, out=large)  # erfc(m)
    np.subtract(1.0, large, out=large)
    np.multiply(np.sign(x, out=u), large, out=out)
    return select(_mask(np.less, a, 1.0, sc), small, out, sc)


def erf_twin(x):
    """erf of an array (NumPy or CuPy), in its float dtype; integers become float64."""
    x = float_array(x)
    return blockwise(erf_body, x, dtype=x.dtype)


# ----------------------------------------------------------------------------- activations
# Bodies: f(x, *params, out=, sc=) and f(g, x, [y,] *params, out=, sc=) -> out.
def relu_backward_body(g, x, *, out, sc):
    """``where(x > 0, g, 0)``: 0 at the kink (torch), and 0 for an inf/NaN g of a dead unit."""
    return keep_where(_mask(np.greater, x, 0, sc), g, out)


def leaky_relu_body(x, slope, *, out, sc):
    """``x if x > 0 else slope * x`` as ``max(x, slope x)`` (slope <= 1) or ``min`` (> 1).

    Exact for every x but +inf when slope == 0 (inf * 0 = NaN): that slope takes a select.
    """
    np.multiply(x, slope, out=out)
    if slope == 0.0:
        return select(_mask(np.greater, x, 0, sc), x, out, sc)
    return (np.maximum if slope <= 1.0 else np.minimum)(x, out, out=out)


def leaky_relu_backward_body(g, x, slope, *, out, sc):
    """``g * (1 if x > 0 else slope)``: g itself where x > 0 (g * 1), slope there otherwise."""
    scalar_select(_mask(np.greater, x, 0, sc), 1.0, slope, out)
    return np.multiply(out, g, out=out)


def elu_body(x, alpha, scale, *, out, sc):
    """``scale * (x if x > 0 else alpha * expm1(x))`` (SELU: scale != 1).

    ``alpha * expm1(min(x, 0))`` is 0 for x > 0 (no overflow in the unused branch), so
    adding x there, and +0 elsewhere, selects without a select.
    """
    np.minimum(x, 0.0, out=out)
    np.expm1(out, out=out)
    np.multiply(out, alpha, out=out)
    np.add(out, keep_where(_mask(np.greater, x, 0, sc), x, sc.take()), out=out)
    if scale != 1.0:
        np.multiply(out, scale, out=out)
    return out


def elu_backward_body(g, x, y, alpha, scale, *, out, sc):
    """``g * (scale if x > 0 else y + scale * alpha)`` (the output saves an exp, as torch)."""
    np.add(y, scale * alpha, out=out)
    select(_mask(np.greater, x, 0, sc), scale, out, sc)
    return np.multiply(out, g, out=out)


def hardtanh_backward_body(g, x, lo, hi, *, out, sc):
    """``g`` strictly inside (lo, hi), 0 outside and at the bounds (torch's hardtanh)."""
    inside = _mask(np.greater, x, lo, sc)
    np.logical_and(inside, _mask(np.less, x, hi, sc), out=inside)
    return keep_where(inside, g, out)


def silu_body(x, *, out, sc):
    """``x * sigmoid(x)``."""
    return np.multiply(x, sigmoid_body(x, out=out, sc=sc), out=out)


def silu_backward_body(g, x, *, out, sc):
    """``g * s * (1 + x (1 - s))``, s = sigmoid(x) recomputed (torch's formula)."""
    s = sigmoid_body(x, out=sc.take(), sc=sc)
    np.subtract(1.0, s, out=out)
    np.multiply(out, x, out=out)
    np.add(out, 1.0, out=out)
    np.multiply(out, s, out=out)
    return np.multiply(out, g, out=out)


def gelu_body(x, *, out, sc):
    """``0.5 x (1 + erf(x / sqrt 2))`` (exact GELU)."""
    z = np.multiply(x, SQRT1_2, out=sc.take())
    erf_body(z, out=out, sc=sc)
    np.add(out, 1.0, out=out)
    return np.multiply(out, np.multiply(x, 0.5, out=z), out=out)


def gelu_backward_body(g, x, *, out, sc):
    """``g * (Phi(x) + x phi(x))``: the normal cdf and density."""
    z = np.multiply(x, SQRT1_2, out=sc.take())
    cdf = erf_body(z, out=sc.take(), sc=sc)
    np.add(cdf, 1.0, out=cdf)
    np.multiply(cdf, 0.5, out=cdf)
    np.multiply(x, x, out=out)
    np.multiply(out, -0.5, out=out)
    np.exp(out, out=out)
    np.multiply(out, INV_SQRT_2PI, out=out)
    np.multiply(out, x, out=out)
    np.add(out, cdf, out=out)
    return np.multiply(out, g, out=out)


def gelu_tanh_body(x, *, out, sc):
    """torch's ``gelu(approximate="tanh")``: ``0.5 x (1 + tanh(k (x + 0.044715 x^3)))``."""
    np.multiply(x, GELU_CUBIC, out=out)
    np.multiply(out, x, out=out)
    np.multiply(out, x, out=out)
    np.add(x, out, out=out)
    np.multiply(out, SQRT_2_OVER_PI, out=out)
    np.tanh(out, out=out)
    np.add(out, 1.0, out=out)
    return np.multiply(out, np.multiply(x, 0.5, out=sc.take()), out=out)


def gelu_tanh_backward_body(g, x, *, out, sc):
    """torch's tanh-GELU backward: ``g * (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3c x^2))``."""
    xx = np.multiply(x, x, out=sc.take())
    t = np.multiply(xx, GELU_CUBIC, out=out)
    np.multiply(t, x, out=t)
    np.add(t, x, out=t)
    np.multiply(t, SQRT_2_OVER_PI, out=t)
    np.tanh(t, out=t)
    inner_d = xx  # k (1 + 3c x^2), in xx's buffer
    np.multiply(inner_d, 3.0 * GELU_CUBIC, out=inner_d)
    np.add(inner_d, 1.0, out=inner_d)
    np.multiply(inner_d, SQRT_2_OVER_PI, out=inner_d)
    right = np.multiply(t, t, out=sc.take())
    np.subtract(1.0, right, out=right)
    np.multiply(right, inner_d, out=right)
    np.multiply(right, np.multiply(x, 0.5, out=inner_d), out=right)
    np.add(t, 1.0, out=t)
    np.multiply(t, 0.5, out=t)
    np.add(t, right, out=t)
    return np.multiply(t, g, out=t)


# ----------------------------------------------------------------------------- twins
# Forward twins: f(x, p0, p1) -> y. Backward twins: f(g, x, y, p0, p1) -> dx, with g and x
# of one float dtype (the dispatcher casts). (p0, p1): leaky_relu (slope, -), elu (alpha,
# scale), hardtanh (min, max); unused otherwise.
def _forward(body, n_params=0):
    def twin(x, p0=0.0, p1=0.0):
        x = float_array(x)
        return blockwise(body, x, dtype=x.dtype, static=(p0, p1)[:n_params])
    twin.__doc__ = body.__doc__
    return twin


def _backward(body, n_params=0, uses_y=False):
    def twin(g, x, y=None, p0=0.0, p1=0.0):
        arrays = (g, x, y) if uses_y else (g, x)
        return blockwise(body, *arrays, dtype=g.dtype, static=(p0, p1)[:n_params])
    twin.__doc__ = body.__doc__
    return twin


def relu_twin(x, p0=0.0, p1=0.0):
    """``max(x, 0)``: NaN stays NaN (one pass; integers stay integers, as np.maximum)."""
    if type(x) is np.ndarray and x.dtype.kind == "f":
        return relu_into(x, np.empty(x.shape, x.dtype))
    return np.maximum(x, 0)


def hardtanh_twin(x, lo, hi):
    """``clip(x, lo, hi)`` (NaN stays NaN; one pass)."""
    return np.clip(x, lo, hi)


relu_backward_twin = _backward(relu_backward_body)
FORWARD_TWINS = {"relu": relu_twin, "leaky_relu": _forward(leaky_relu_body, 1),
                 "elu": _forward(elu_body, 2), "hardtanh": hardtanh_twin,
                 "silu": _forward(silu_body), "gelu": _forward(gelu_body),
                 "gelu_tanh": _forward(gelu_tanh_body)}
BACKWARD_TWINS = {"relu": relu_backward_twin,
                  "leaky_relu": _backward(leaky_relu_backward_body, 1),
                  "elu": _backward(elu_backward_body, 2, uses_y=True),
                  "hardtanh": _backward(hardtanh_backward_body, 2),
                  "silu": _backward(silu_backward_body), "gelu": _backward(gelu_backward_body),
                  "gelu_tanh": _backward(gelu_tanh_backward_body)}


def dropout_twin(x, keep, scale):
    """Inverted dropout's one fused step: ``(x * keep) * scale`` (2 passes, one buffer).

    ``keep`` is the boolean mask; ``scale = 1 / (1 - rate)`` in x's dtype. x * 0 keeps x's
    sign and makes inf/NaN NaN, bit for bit as ``x * (keep * scale)``, the composite's form.
    """
    y = np.multiply(x, keep)
    return np.multiply(y, scale, out=y)

