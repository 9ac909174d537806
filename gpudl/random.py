"""Explicit-key random numbers: the same key gives bit-identical numbers on CPU and GPU.

A *key* is a tiny NumPy ``uint32`` array of shape ``(2,)``. Keys always live on the CPU:
they are a few bytes, device-independent, and splitting them never touches the GPU.
Only the generated arrays go to a device (``device=None`` means :func:`gpudl.get_device`):
NumPy arrays on ``"cpu"``, CuPy arrays on ``"cuda"``.

The generator is counter-based Philox4x32-10 (Salmon et al., "Parallel random numbers:
as easy as 1, 2, 3", SC 2011). Output block ``i`` of a call is ``philox(counter=(i, 0, 0, 0),
key)``; the rounds are written once with vectorised ``uint64`` array ops against the array
module ``xp`` (numpy or cupy), so both devices compute the very same integers. Everything
derived from them uses only operations that IEEE 754 rounds exactly the same way everywhere
(integer ops, int->float conversion, +, -, *, /, sqrt, floor, comparisons); see
:func:`_log` / :func:`_sincos_2pi` for why ``normal`` avoids ``xp.log``/``xp.sin``.

Keys are never advanced implicitly: derive new ones with :func:`split` or :func:`fold_in`.
Two calls with one key reuse the same Philox blocks, so their outputs are correlated (as in
JAX): use each key once.

Example:
    >>> import gpudl as gd
    >>> key = gd.random.key(0)
    >>> k1, k2 = gd.random.split(key)
    >>> gd.random.normal(k1, (2, 3), device="cpu").shape
    (2, 3)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from gpudl import backend
from gpudl.errors import DTypeError, ShapeError

__all__ = [
    "key", "split", "fold_in", "uniform", "normal", "truncated_normal", "bernoulli",
    "randint", "permutation", "choice", "philox4x32",
]

Shape = int | tuple[int, ...]
_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
# Third counter word of the key-derivation streams, so child keys never coincide with the
# counters (i, 0, 0, 0) used for data.
_SPLIT_TAG, _FOLD_TAG = 0x53504C54, 0x464F4C44  # "SPLT", "FOLD"


# ----------------------------------------------------------------------------- Philox core
def philox4x32(counter, key_words: tuple[int, int], rounds: int = 10):
    """Philox4x32 on four counter words (``uint64`` arrays or Python ints holding 32-bit values).

    ``key_words`` are two Python ints. Returns four words of the same kind. The 32x32->64
    multiply is exact in ``uint64``; ``>> 32`` and ``& 0xFFFFFFFF`` give mulhi/mullo.

    Example:
        >>> [hex(int(w)) for w in philox4x32((0, 0, 0, 0), (0, 0))]
        ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c0, c1, c2, c3 = counter
    k0, k1 = int(key_words[0]) & _MASK32, int(key_words[1]) & _MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        p0 = c0 * _M0
        p1 = c2 * _M1
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & _MASK32
    return c0, c1, c2, c3


def _blocks(key_words: tuple[int, int], n_blocks: int, xp) -> tuple[Any, Any, Any, Any]:
    """Philox of counters ``(i, 0, 0, 0)`` for ``i < n_blocks``: four uint64 arrays (n_blocks,)."""
    ctr = xp.arange(n_blocks, dtype=xp.uint64)
    # The high counter word is zero for any array that fits in memory; a Python 0 lets the
    # first rounds skip work on constant words.
    return philox4x32((ctr, 0, 0, 0), key_words)


def _words32(key_words, n: int, xp):
    """``n`` random 32-bit words (uint64 array holding values < 2**32)."""
    blocks = _blocks(key_words, -(-n // 4), xp)
    return xp.concatenate(blocks)[:n]


def _words64(key_words, n: int, xp):
    """``n`` random 64-bit words (uint64 array); two Philox words make one."""
    c0, c1, c2, c3 = _blocks(key_words, -(-n // 2), xp)
    return xp.concatenate([(c0 << 32) | c1, (c2 << 32) | c3])[:n]


# ----------------------------------------------------------------------------- argument checks
def _key_words(k: Any, op: str) -> tuple[int, int]:
    arr = k
    if backend.device_of(k) == "cuda":
        arr = k.get()
    if not isinstance(arr, np.ndarray) or arr.shape != (2,) or arr.dtype != np.uint32:
        got = (f"array of shape {arr.shape}, dtype {arr.dtype}" if isinstance(arr, np.ndarray)
               else f"{type(k).__name__} {k!r}"[:80])
        raise TypeError(
            f"gpudl.random.{op}: argument 'key' must be a key (uint32 array of shape (2,)), "
            f"got {got}. Make one with gd.random.key(seed) and derive more with "
            f"gd.random.split(key) / gd.random.fold_in(key, i)."
        )
    return int(arr[0]), int(arr[1])


def _check_int(value: Any, op: str, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"gpudl.random.{op}: argument '{name}' must be an int, "
                        f"got {type(value).__name__} {value!r}")
    return int(value)


def _shape(shape: Any, op: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if dims is None or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral)
                           or d < 0 for d in dims):
        raise ShapeError(f"gpudl.random.{op}: argument 'shape' must be an int or a tuple of "
                         f"non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _float_dtype(dtype: Any, op: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float16, np.float32, np.float64):
        raise DTypeError(f"gpudl.random.{op}: argument 'dtype' must be float16, float32 or "
                         f"float64, got {dt}")
    return dt


def _device(device: str | None) -> str:
    return backend.get_device() if device is None else backend._resolve(device)[0]


# ----------------------------------------------------------------------------- keys
def key(seed: int) -> np.ndarray:
    """A new key from an integer seed (taken modulo 2**64): NumPy uint32 ``[low, high]``.

    Keys live on the CPU whatever the device; the numbers they generate do not depend on it.

    Example:
        >>> key(1).tolist()
        [1, 0]
    """
    seed = _check_int(seed, "key", "seed") % (1 << 64)
    return np.array([seed & _MASK32, seed >> 32], dtype=np.uint32)


def split(k: np.ndarray, num: int = 2) -> np.ndarray:
    """``num`` new independent keys, shape ``(num, 2)``: child ``i`` is Philox(k, (i, 0, SPLIT, 0)).

    Example:
        >>> k1, k2 = split(key(0))
        >>> bool((k1 != k2).any())
        True
    """
    words = _key_words(k, "split")
    num = _check_int(num, "split", "num")
    if num < 0:
        raise ValueError(f"gpudl.random.split: argument 'num' must be >= 0, got {num}")
    ctr = np.arange(num, dtype=np.uint64)
    c0, c1, _, _ = philox4x32((ctr & _MASK32, ctr >> 32, _SPLIT_TAG, 0), words)
    return np.stack([c0, c1], axis=1).astype(np.uint32)  # (num, 2)


def fold_in(k: np.ndarray, data: int) -> np.ndarray:
    """A new key from ``k`` and an integer (e.g. a step number), taken modulo 2**64.

    Example:
        >>> bool((fold_in(key(0), 1) != fold_in(key(0), 2)).any())
        True
    """
    words = _key_words(k, "fold_in")
    data = _check_int(data, "fold_in", "data") % (1 << 64)
    c0, c1, _, _ = philox4x32((data & _MASK32, data >> 32, _FOLD_TAG, 0), words)
    return np.array([c0, c1], dtype=np.uint32)


# ----------------------------------------------------------------------------- uniform floats
def _unit(key_words, n: int, dt: np.dtype, xp):
    """``n`` floats in [0, 1) on the grid ``j * 2**-p`` (p = mantissa bits): both the integer
    and the power-of-two scaling are exact, so the value is the same on every device."""
    bits = np.finfo(dt).nmant + 1  # 11, 24, 53
    if bits <= 32:
        ints = _words32(key_words, n, xp) >> (32 - bits)
    else:
        ints = _words64(key_words, n, xp) >> (64 - bits)
    return ints.astype(dt) * dt.type(2.0 ** -bits)


def uniform(k: np.ndarray, shape: Shape = (), dtype: Any = np.float32, minval: float = 0.0,
            maxval: float = 1.0, device: str | None = None):
    """Uniform floats in ``[minval, maxval)``.

    Example:
        >>> x = uniform(key(0), (1000,), minval=-1.0, maxval=1.0, device="cpu")
        >>> bool((x >= -1).all() and (x < 1).all()), x.dtype
        (True, dtype('float32'))
    """
    words, dims = _key_words(k, "uniform"), _shape(shape, "uniform")
    dt = _float_dtype(dtype, "uniform")
    lo, hi = dt.type(minval), dt.type(maxval)
    if not lo < hi:
        raise ValueError(f"gpudl.random.uniform: need minval < maxval, got {minval} and {maxval}")
    xp = backend.xp_for(_device(device))
    u = _unit(words, math.prod(dims), dt, xp)
    out = u * (hi - lo) + lo  # two separately rounded array ops, identical on both devices
    # Rounding can land exactly on maxval; keep the interval half-open.
    out = xp.minimum(out, np.nextafter(hi, lo))
    return out.reshape(dims)


# ----------------------------------------------------------------------------- exact math
# Why not xp.log / xp.sin / xp.cos: NumPy (glibc/SVML) and CUDA's libdevice may differ in the
# last ulp, which would break "same key, same numbers on CPU and GPU". The helpers below use
# only +, -, *, /, sqrt, frexp/ldexp, floor, where and comparisons, which IEEE 754 defines
# exactly, each as its own array op (a fused multiply-add would round differently), in
# float64. Accuracy: a few ulp (relative error ~1e-15), far below float32 resolution.
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split (fdlibm): e * _LN2_HI is exact for |e| < 2**20
_LN2_LO = 1.90821492927058770002e-10
_ATANH_COEF = [1.0 / (2 * j + 1) for j in range(12)]  # 1, 1/3, 1/5, ... 1/23
_SIN_COEF = [(-1) ** j / math.factorial(2 * j + 1) for j in range(10)]  # x, -x^3/3!, ... x^19
_COS_COEF = [(-1) ** j / math.factorial(2 * j) for j in range(10)]  # 1, -x^2/2!, ... x^18
_SQRT_HALF = math.sqrt(0.5)
_HALF_PI = math.pi / 2


def _horner(z, coef):
    acc = coef[-1] + z * 0.0  # array of the constant
    for c in reversed(coef[:-1]):
        acc = acc * z
        acc = acc + c
    return acc


def _log(x, xp):
    """Natural log of positive, finite, normal float64 ``x`` (exact-op series; see above).

    x = m * 2**e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s) = 2 (s + s^3/3 + ...) with
    s = (m-1)/(m+1), |s| <= 0.1716, so s^2 <= 0.0295 and 12 terms reach ~1e-19.
    """
    m, e = xp.frexp(x)  # m in [0.5, 1)
    small = m < _SQRT_HALF
    m = xp.where(small, m * 2.0, m)
    e = (e - small.astype(e.dtype)).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)  # m - 1 is exact (Sterbenz)
    series = _horner(s * s, _ATANH_COEF)
    ln_m = (s * series) * 2.0
    return e * _LN2_HI + (e * _LN2_LO + ln_m)


def _sin_cos_poly(x):
    """sin(x), cos(x) for float64 x in [0, pi/4] by Taylor polynomials (truncation < 1e-19)."""
    z = x * x
    return x * _horner(z, _SIN_COEF), _horner(z, _COS_COEF)


def _sincos_2pi(u, xp):
    """sin(2 pi u), cos(2 pi u) for float64 u in [0, 1).

    The quadrant is taken from u itself (4u and floor are exact), so no rounded 2*pi is ever
    reduced; within a quadrant, f in [0, 1) maps to [0, pi/4] by symmetry (1 - f is exact).
    """
    u4 = u * 4.0
    q = xp.floor(u4)
    f = u4 - q
    upper = f > 0.5
    g = xp.where(upper, 1.0 - f, f)  # [0, 0.5]
    s, c = _sin_cos_poly(g * _HALF_PI)
    sin_f, cos_f = xp.where(upper, c, s), xp.where(upper, s, c)  # angle f * pi/2
    # Rotate by q quarter turns: (sin, cos) -> (cos, -sin) -> (-sin, -cos) -> (-cos, sin).
    swap = (q == 1.0) | (q == 3.0)
    sin_out = xp.where(swap, cos_f, sin_f)
    cos_out = xp.where(swap, sin_f, cos_f)
    sin_out = xp.where(q >= 2.0, -sin_out, sin_out)
    cos_out = xp.where((q == 1.0) | (q == 2.0), -cos_out, cos_out)
    return sin_out, cos_out


def _standard_normal64(key_words, n: int, xp):
    """``n`` float64 N(0, 1) draws by Box-Muller; one Philox block (4 words) gives two."""
    c0, c1, c2, c3 = _blocks(key_words, -(-n // 2), xp)
    scale = 2.0 ** -53
    # u1 in (0, 1] so the log is finite; u2 in [0, 1). 53-bit integers convert exactly.
    u1 = ((((c0 << 32) | c1) >> 11) + 1).astype(np.float64) * scale
    u2 = (((c2 << 32) | c3) >> 11).astype(np.float64) * scale
    r = xp.sqrt(_log(u1, xp) * -2.0)
    sin_t, cos_t = _sincos_2pi(u2, xp)
    return xp.concatenate([r * cos_t, r * sin_t])[:n]


def _cast(z64, dt: np.dtype):
    # float64 -> float16 goes via float32 explicitly so both devices round the same way.
    return z64.astype(np.float32).astype(dt) if dt == np.float16 else z64.astype(dt)


def normal(k: np.ndarray, shape: Shape = (), dtype: Any = np.float32, mean: float = 0.0,
           std: float = 1.0, device: str | None = None):
    """Normal draws ``mean + std * N(0, 1)``, bit-identical on CPU and GPU.

    Example:
        >>> z = normal(key(0), (10000,), device="cpu")
        >>> abs(float(z.mean())) < 0.05, abs(float(z.std()) - 1) < 0.05
        (True, True)
    """
    words, dims = _key_words(k, "normal"), _shape(shape, "normal")
    dt = _float_dtype(dtype, "normal")
    xp = backend.xp_for(_device(device))
    z = _cast(_standard_normal64(words, math.prod(dims), xp), dt)
    if std != 1.0:
        z = z * dt.type(std)
    if mean != 0.0:
        z = z + dt.type(mean)
    return z.reshape(dims)


def truncated_normal(k: np.ndarray, shape: Shape = (), lower: float = -2.0, upper: float = 2.0,
                     dtype: Any = np.float32, device: str | None = None):
    """Standard normal draws conditioned on ``lower <= z <= upper`` (rejection sampling).

    Rejected positions are refilled from ``fold_in(k, round)`` with growing batches; the
    result is a deterministic function of the key, the same on CPU and GPU. The interval
    must hold at least 1e-6 of the normal's mass.

    Example:
        >>> z = truncated_normal(key(0), (1000,), device="cpu")
        >>> bool((abs(z) <= 2).all())
        True
    """
    words, dims = _key_words(k, "truncated_normal"), _shape(shape, "truncated_normal")
    dt = _float_dtype(dtype, "truncated_normal")
    if not lower < upper:
        raise ValueError(f"gpudl.random.truncated_normal: need lower < upper, got {lower}, {upper}")
    mass = 0.5 * (math.erf(upper / math.sqrt(2)) - math.erf(lower / math.sqrt(2)))
    if mass < 1e-6:
        raise ValueError(f"gpudl.random.truncated_normal: [{lower}, {upper}] holds only {mass:.2g}"
                         f" of the normal's mass; rejection sampling needs >= 1e-6")
    xp = backend.xp_for(_device(device))
    n = math.prod(dims)
    lo, hi = _cast(np.float64(lower), dt), _cast(np.float64(upper), dt)
    out = _cast(_standard_normal64(words, n, xp), dt)
    todo = xp.nonzero((out < lo) | (out > hi))[0]  # (m,) positions still to fill
    rnd = 0
    while todo.size:
        rnd += 1
        n_cand = min(todo.size << min(rnd, 30), max(todo.size, 1 << 24))
        cand = _cast(_standard_normal64(_key_words(fold_in(k, rnd), "fold_in"), n_cand, xp), dt)
        good = cand[(cand >= lo) & (cand <= hi)]
        take = min(good.size, todo.size)
        out[todo[:take]] = good[:take]
        todo = todo[take:]
    return out.reshape(dims)


# ----------------------------------------------------------------------------- discrete
def bernoulli(k: np.ndarray, p: Any = 0.5, shape: Shape | None = None, device: str | None = None):
    """Boolean array, True with probability ``p`` (a scalar or an array broadcast to ``shape``).

    A 32-bit word w gives True when ``w < p * 2**32`` (exact: a power-of-two scaling), so the
    rate is exact up to 2**-32. ``shape=None`` uses ``p``'s shape.

    Example:
        >>> bernoulli(key(0), 0.0, (3,), device="cpu").tolist()
        [False, False, False]
    """
    words = _key_words(k, "bernoulli")
    dev = _device(device)
    xp = backend.xp_for(dev)
    p_arr = backend.asarray(p, dtype=np.float64, device=dev)
    if bool(xp.isnan(p_arr).any()) or bool((p_arr < 0).any()) or bool((p_arr > 1).any()):
        raise ValueError(f"gpudl.random.bernoulli: argument 'p' must be within [0, 1], got "
                         f"{p if np.ndim(p) == 0 else 'an array with values outside it'}")
    dims = p_arr.shape if shape is None else _shape(shape, "bernoulli")
    try:
        threshold = xp.broadcast_to(p_arr * 2.0 ** 32, dims)
    except ValueError:
        raise ShapeError(f"gpudl.random.bernoulli: p of shape {p_arr.shape} does not broadcast "
                         f"to shape {dims}") from None
    w = _words32(words, math.prod(dims), xp).astype(np.float64).reshape(dims)
    return w < threshold


def randint(k: np.ndarray, shape: Shape, low: int, high: int, dtype: Any = np.int64,
            device: str | None = None):
    """Integers uniform in ``[low, high)``.

    Method: a 64-bit word modulo ``high - low`` (uint64 ops, exact on both devices). The
    modulo bias is below ``(high - low) / 2**64``, i.e. < 2**-32 for ranges up to 2**32.

    Example:
        >>> x = randint(key(0), (1000,), 0, 10, device="cpu")
        >>> int(x.min()), int(x.max()), x.dtype
        (0, 9, dtype('int64'))
    """
    words, dims = _key_words(k, "randint"), _shape(shape, "randint")
    low, high = _check_int(low, "randint", "low"), _check_int(high, "randint", "high")
    dt = np.dtype(dtype)
    if dt.kind not in "iu":
        raise DTypeError(f"gpudl.random.randint: argument 'dtype' must be an integer dtype, "
                         f"got {dt}")
    if low >= high:
        raise ValueError(f"gpudl.random.randint: need low < high, got low={low}, high={high}")
    info = np.iinfo(dt)
    if low < info.min or high - 1 > info.max:
        raise ValueError(f"gpudl.random.randint: [{low}, {high}) does not fit dtype {dt} "
                         f"([{info.min}, {info.max}]); use a wider dtype")
    xp = backend.xp_for(_device(device))
    r = _words64(words, math.prod(dims), xp)
    if high - low < (1 << 64):  # the full 64-bit range needs no reduction
        r = r % np.uint64(high - low)
    # low + r wraps modulo 2**64; reading the bits as int64 gives the signed value.
    vals = (r + np.uint64(low % (1 << 64))).view(np.int64)
    return vals.astype(dt).reshape(dims)


def _dtype_of(x: Any) -> np.dtype:
    # backend.asarray would turn float64 lists into float32; keep what the caller gave.
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def permutation(k: np.ndarray, x: Any, device: str | None = None):
    """A random permutation of ``arange(x)`` (int ``x``) or of array ``x`` along axis 0.

    Sorts 64-bit random words with a stable argsort: ties have probability < n**2 / 2**65
    and, being stable, still sort identically on both devices. ``device=None`` means the
    array's own device for an array ``x``, else :func:`gpudl.get_device`.

    Example:
        >>> sorted(permutation(key(0), 5, device="cpu").tolist())
        [0, 1, 2, 3, 4]
    """
    words = _key_words(k, "permutation")
    if isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)):
        n, arr = int(x), None
        if n < 0:
            raise ValueError(f"gpudl.random.permutation: n must be >= 0, got {n}")
    else:
        if device is None:
            device = backend.device_of(x)
        arr = backend.asarray(x, dtype=_dtype_of(x), device=device)
        if arr.ndim == 0:
            raise ShapeError("gpudl.random.permutation: x must be an int or an array with at "
                             "least one dimension, got a 0-d array")
        n = arr.shape[0]
    xp = backend.xp_for(_device(device))
    order = xp.argsort(_words64(words, n, xp), kind="stable")
    return order if arr is None else arr[order]


def choice(k: np.ndarray, a: Any, shape: Shape = (), replace: bool = True,
           device: str | None = None):
    """Draw from ``arange(a)`` (int) or array ``a`` (axis 0), with or without replacement.

    Example:
        >>> sorted(choice(key(0), 5, (5,), replace=False, device="cpu").tolist())
        [0, 1, 2, 3, 4]
    """
    dims = _shape(shape, "choice")
    n_out = math.prod(dims)
    is_int = isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_))
    if not is_int and device is None:
        device = backend.device_of(a)
    n = int(a) if is_int else len(a)
    if n <= 0:
        raise ValueError("gpudl.random.choice: cannot choose from an empty population")
    if replace:
        idx = randint(k, dims, 0, n, device=device)
    else:
        if n_out > n:
            raise ValueError(f"gpudl.random.choice: cannot take {n_out} samples from {n} "
                             f"without replacement")
        idx = permutation(k, n, device=device)[:n_out].reshape(dims)
    if is_int:
        return idx
    return backend.asarray(a, dtype=_dtype_of(a), device=backend.device_of(idx))[idx]
