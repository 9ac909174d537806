"""Explicit-key random numbers: the same key gives bit-identical numbers on CPU and GPU.

A *key* is a tiny NumPy ``uint32`` array of shape ``(2,)``. Keys always live on the CPU:
they are a few bytes, device-independent, and splitting them never touches the GPU.
Only the generated arrays go to a device (``device=None`` means :func:`gpudl.get_device`):
NumPy arrays on ``"cpu"``, CuPy arrays on ``"cuda"``.

The generator is counter-based Philox4x32-10 (Salmon et al., "Parallel random numbers:
as easy as 1, 2, 3", SC 2011). Output block ``i`` of a call is ``philox(counter=(i, 0, 0, 0),
key)``; how blocks become words, uniform floats and normal floats is the stream format of
:mod:`gpudl.random._philox`, fixed forever (tests/test_random_golden.py pins it). Everything
derived from the words uses only operations that IEEE 754 rounds exactly the same way
everywhere (integer ops, int->float conversion, +, -, *, /, sqrt, floor, comparisons);
``normal`` uses exact-op series instead of ``xp.log``/``xp.sin`` (see gpudl.random._philox).

Three bodies compute that format and give the same bits: on the CPU,
:mod:`gpudl.random._cpu` (chunked, in-place NumPy; ~190M float32 uniforms/s and ~60M
normals/s on one core, whose float32 normals round a fast accurate draw and recompute the
few near a rounding boundary exactly, :mod:`gpudl.random._cpu_normal`); on the GPU,
:mod:`gpudl.random._cuda` (one launch of ``kernels/philox.cu`` per call: words, uniform or
normal floats); and, for CuPy arrays beyond the kernel's int32 indexing, the vectorised
reference of _philox.

Inside ``with gd.random.no_draw():`` the samplers check their arguments and return zeros
(``randint``: ``low``; ``permutation``: the identity) instead of drawing: ``model.init_shapes``
uses it to build parameter trees without drawing.

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
from gpudl.errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError
from gpudl.random import _cuda, _philox
from gpudl.random._common import (
    _check_int,
    _device,
    _drawing_off,
    _float_dtype,
    _key_words,
    _shape,
    _std_normal,
    _unit_generic,
    _words32,
    _words64,
    no_draw,
)
from gpudl.random._cpu import NumpyStream
from gpudl.random._philox import philox4x32

__all__ = [
    "key", "as_key", "split", "fold_in", "uniform", "normal", "truncated_normal", "bernoulli",
    "randint", "permutation", "choice", "philox4x32", "no_draw",
]

Shape = int | tuple[int, ...]
_MASK32 = _philox.MASK32
# Third counter word of the key-derivation streams, so child keys never coincide with the
# counters (i, 0, 0, 0) used for data.
_SPLIT_TAG, _FOLD_TAG = 0x53504C54, 0x464F4C44  # "SPLT", "FOLD"


# ----------------------------------------------------------------------------- keys
def key(seed: int) -> np.ndarray:
    """A new key from an integer seed in ``[0, 2**64)``: NumPy uint32 ``[low, high]``.

    Keys live on the CPU whatever the device; the numbers they generate do not depend on it.
    Seeds outside the range (negative, or 2**64 and above) raise ConfigError rather than
    wrapping onto another seed's key; non-integers (floats, bools) raise ArgumentTypeError.

    Example:
        >>> key(1).tolist()
        [1, 0]
    """
    seed = _check_int(seed, "key", "seed")
    if not 0 <= seed < 1 << 64:
        raise ConfigError(f"gpudl.random.key: argument 'seed' must be in [0, 2**64), got {seed}; "
                          "it would wrap onto the key of another seed (key(2**64) == key(0)). "
                          "Use a non-negative seed below 2**64, or gd.random.fold_in(key, i) "
                          "to derive keys from a large number.")
    return np.array([seed & _MASK32, seed >> 32], dtype=np.uint32)


def as_key(key_or_seed: Any, where: str = "gpudl.random.as_key") -> Any:
    """A key from a key or an int seed: an int ``s`` gives ``key(s)``, a key is returned as is.

    This is how every public function of gpudl that takes a key also takes an int seed
    (``model.init(0, x)`` is ``model.init(gd.random.key(0), x)``). Seeds are checked as
    :func:`key` checks them: negative or >= 2**64 raise ConfigError, floats and bools
    ArgumentTypeError; anything else that is not a key raises ArgumentTypeError naming
    ``where`` (the caller, e.g. ``"F.dropout"``).

    Example:
        >>> as_key(3).tolist() == key(3).tolist(), as_key(key(3)).tolist()
        (True, [3, 0])
    """
    if isinstance(key_or_seed, numbers.Integral) and not isinstance(key_or_seed, (bool, np.bool_)):
        if not 0 <= int(key_or_seed) < 1 << 64:
            raise ConfigError(f"{where}: an int seed must be in [0, 2**64), got "
                              f"{int(key_or_seed)} (as for gd.random.key); use a non-negative "
                              "seed below 2**64")
        return key(key_or_seed)
    arr = key_or_seed
    if backend.device_of(arr) == "cuda":  # a key moved to the GPU still works (_key_words)
        arr = arr.get()
    if not (isinstance(arr, np.ndarray) and arr.shape == (2,) and arr.dtype == np.uint32):
        got = (f"an array of shape {arr.shape}, dtype {arr.dtype}" if isinstance(arr, np.ndarray)
               else f"{type(key_or_seed).__name__} {key_or_seed!r}"[:80])
        raise ArgumentTypeError(
            f"{where}: key must be a key (gd.random.key(seed), a uint32 array of shape (2,)) "
            f"or an int seed, got {got}. Pass an int such as 0, or gd.random.key(0).")
    return key_or_seed


# Up to this many keys, split runs Philox on Python ints (same bits; measured faster than
# the vectorised form below ~16 keys, e.g. 2 keys 10 us vs 65 us)
_SPLIT_IN_PYTHON = 8


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
        raise ConfigError(f"gpudl.random.split: argument 'num' must be >= 0, got {num}")
    if num <= _SPLIT_IN_PYTHON:  # a layer's few keys: Python ints beat ~80 tiny NumPy calls
        return np.array([philox4x32((i, 0, _SPLIT_TAG, 0), words)[:2] for i in range(num)],
                        dtype=np.uint32).reshape(num, 2)
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


# ----------------------------------------------------------------------------- floats
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
    with np.errstate(over="ignore"):  # a bound or width beyond dt: refused just below
        lo, hi = dt.type(minval), dt.type(maxval)
        width = hi - lo  # rounded in dt, as every body uses it
    if not lo < hi:
        raise ConfigError(f"gpudl.random.uniform: need minval < maxval, got {minval} and {maxval}")
    if not np.isfinite(width):  # an infinite bound, or maxval - minval beyond dt's range
        raise ConfigError(
            f"gpudl.random.uniform: maxval - minval must be finite in {dt}, got minval "
            f"{minval} and maxval {maxval} (width {width}); every draw would be maxval's "
            f"neighbour or NaN. Use finite bounds whose difference {dt} holds, or float64")
    xp = backend.xp_for(_device(device))
    if _drawing_off():
        return xp.zeros(dims, dt)
    n = math.prod(dims)
    top = np.nextafter(hi, lo)  # rounding can land exactly on maxval; keep [minval, maxval)
    affine = not (lo == 0 and hi == 1)  # [0, 1): u * 1 + 0 and the clamp change no bit
    if xp is np:  # the same rounded array ops as below, on each chunk while in cache
        out = NumpyStream(words).unit(n, dt, (width, lo, top) if affine else None)
    elif _cuda.fits(n) and dt != np.float16:
        out = _cuda.uniform(words, n, dt, lo, width, top, affine)
    else:
        out = _unit_generic(words, n, dt, xp)
        if affine:
            out = xp.minimum(out * width + lo, top)  # two separately rounded array ops
    return out.reshape(dims)


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
    for name, v in (("mean", mean), ("std", std)):
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real) \
                or not math.isfinite(v) or (name == "std" and v < 0):
            # torch refuses std < 0; a NaN or inf would make every draw NaN or inf
            raise ConfigError(f"gpudl.random.normal: {name} must be a finite number"
                              f"{' >= 0' if name == 'std' else ''}, got {v!r}")
    xp = backend.xp_for(_device(device))
    if _drawing_off():
        return xp.zeros(dims, dt)
    n = math.prod(dims)
    scale, shift = std != 1.0, mean != 0.0  # z * 1 is z, but -0.0 + 0.0 is not -0.0
    if xp is not np and _cuda.fits(n) and dt != np.float16:
        z = _cuda.normal(words, n, dt, dt.type(mean), dt.type(std), scale, shift)
        return z.reshape(dims)
    if xp is np:  # * std and + mean on each chunk while in cache
        return NumpyStream(words).normal(n, dt, dt.type(std) if scale else None,
                                          dt.type(mean) if shift else None).reshape(dims)
    z = _std_normal(words, n, dt, xp)
    if scale:  # in place: z is a fresh array
        z *= dt.type(std)
    if shift:
        z += dt.type(mean)
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
        raise ConfigError(f"gpudl.random.truncated_normal: need lower < upper, got {lower}, {upper}")
    mass = 0.5 * (math.erf(upper / math.sqrt(2)) - math.erf(lower / math.sqrt(2)))
    if mass < 1e-6:
        raise ConfigError(f"gpudl.random.truncated_normal: [{lower}, {upper}] holds only {mass:.2g}"
                         f" of the normal's mass; rejection sampling needs >= 1e-6")
    xp = backend.xp_for(_device(device))
    if _drawing_off():
        return xp.zeros(dims, dt)
    n = math.prod(dims)
    lo, hi = _philox.cast(np.float64(lower), dt), _philox.cast(np.float64(upper), dt)
    out = _std_normal(words, n, dt, xp)
    todo = xp.nonzero((out < lo) | (out > hi))[0]  # (m,) positions still to fill
    rnd = 0
    while todo.size:
        rnd += 1
        n_cand = min(todo.size << min(rnd, 30), max(todo.size, 1 << 24))
        cand = _std_normal(_key_words(fold_in(k, rnd), "fold_in"), n_cand, dt, xp)
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
    if isinstance(p, bool | np.bool_):  # True is the probability 1.0 to NumPy
        raise ConfigError(f"gpudl.random.bernoulli: argument 'p' must be a probability in "
                          f"[0, 1] (a number or an array of them), got {p!r}")
    p_arr = backend.asarray(p, dtype=np.float64, device=dev)
    if bool(xp.isnan(p_arr).any()) or bool((p_arr < 0).any()) or bool((p_arr > 1).any()):
        raise ConfigError(f"gpudl.random.bernoulli: argument 'p' must be within [0, 1], got "
                         f"{p if np.ndim(p) == 0 else 'an array with values outside it'}")
    dims = p_arr.shape if shape is None else _shape(shape, "bernoulli")
    try:
        threshold = xp.broadcast_to(p_arr * 2.0 ** 32, dims)
    except ValueError:
        raise ShapeError(f"gpudl.random.bernoulli: p of shape {p_arr.shape} does not broadcast "
                         f"to shape {dims}") from None
    n = math.prod(dims)
    if _drawing_off():
        return xp.zeros(dims, dtype=np.bool_)
    if p_arr.ndim == 0:  # integer words: w < t  <=>  w < ceil(t), t = p 2**32 <= 2**32
        t = math.ceil(float(p_arr) * 2.0 ** 32)
        if xp is np:
            return NumpyStream(words).below32(n, t).reshape(dims)
        if t >= 1 << 32:
            return xp.ones(dims, dtype=np.bool_)
        return (_words32(words, n, xp) < np.uint32(t)).reshape(dims)
    w = _words32(words, n, xp).astype(np.float64).reshape(dims)
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
        raise ConfigError(f"gpudl.random.randint: need low < high, got low={low}, high={high}")
    info = np.iinfo(dt)
    if low < info.min or high - 1 > info.max:
        raise ConfigError(f"gpudl.random.randint: [{low}, {high}) does not fit dtype {dt} "
                         f"([{info.min}, {info.max}]); use a wider dtype")
    xp = backend.xp_for(_device(device))
    if _drawing_off():
        return xp.full(dims, low, dtype=dt)
    r = _words64(words, math.prod(dims), xp)  # a fresh array: updated in place
    if high - low < (1 << 64):  # the full 64-bit range needs no reduction
        r %= np.uint64(high - low)
    # low + r wraps modulo 2**64; reading the bits as int64 gives the signed value.
    r += np.uint64(low % (1 << 64))
    return r.view(np.int64).astype(dt, copy=False).reshape(dims)


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
            raise ConfigError(f"gpudl.random.permutation: n must be >= 0, got {n}")
    else:
        if device is None:
            device = backend.device_of(x)
        arr = backend.asarray(x, dtype=_dtype_of(x), device=device)
        if arr.ndim == 0:
            raise ShapeError("gpudl.random.permutation: x must be an int or an array with at "
                             "least one dimension, got a 0-d array")
        n = arr.shape[0]
    xp = backend.xp_for(_device(device))
    if _drawing_off():
        order = xp.arange(n)
    else:
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
    if not is_int and not np.ndim(a):
        raise ConfigError(f"gpudl.random.choice: a must be an int (choose from arange(a)) or "
                          f"an array with a first axis of choices, got {a!r}")
    n = int(a) if is_int else len(a)
    if n <= 0:
        raise ConfigError("gpudl.random.choice: cannot choose from an empty population")
    if replace:
        idx = randint(k, dims, 0, n, device=device)
    else:
        if n_out > n:
            raise ConfigError(f"gpudl.random.choice: cannot take {n_out} samples from {n} "
                             f"without replacement")
        idx = permutation(k, n, device=device)[:n_out].reshape(dims)
    if is_int:
        return idx
    return backend.asarray(a, dtype=_dtype_of(a), device=backend.device_of(idx))[idx]
