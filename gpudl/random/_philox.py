"""The Philox4x32-10 stream format behind :mod:`gpudl.random`, and its readable specification.

The format (fixed forever: seeded results must not change between versions):

* Output block ``i`` of a call is ``philox4x32(counter=(i, 0, 0, 0), key)``: four 32-bit
  words ``c0, c1, c2, c3``.
* 32-bit words (``n`` of them, ``nb = ceil(n / 4)`` blocks) are laid out by plane:
  element ``j`` is word ``j // nb`` of block ``j % nb``.
* 64-bit words (``nb = ceil(n / 2)``): element ``i < nb`` is ``c0 << 32 | c1`` of block ``i``,
  element ``nb + i`` is ``c2 << 32 | c3`` of block ``i``.
* Uniform floats keep the top p bits (p = 11, 24, 53 for float16/32/64) of a 32-bit (p <= 32)
  or 64-bit word and scale by ``2**-p``.
* Normal draws take one block per pair (``nb = ceil(n / 2)``): ``u1`` from ``c0:c1``, ``u2``
  from ``c2:c3``, Box-Muller ``r cos(2 pi u2)`` at ``i`` and ``r sin(2 pi u2)`` at ``nb + i``,
  in float64 with the exact-op series of :func:`log_reference` / :func:`sincos_2pi_reference`,
  then rounded to the dtype (float16 via float32).

The functions here are that specification, vectorised against any array module ``xp``
(numpy or cupy) and written for reading, not speed: every op makes a full-size temporary.
gpudl runs the fast bodies instead, :mod:`gpudl.random._cpu` (NumPy) and
:mod:`gpudl.random._cuda` (``kernels/philox.cu``); tests compare both with this module bit
for bit, gpudl.random falls back on it for CuPy arrays beyond the kernels' int32
indexing, and the NumPy body recomputes with :func:`normal_blocks_reference` the few float32
normals its fast path cannot round with certainty (gpudl/random/_cpu_normal.py).

Example:
    >>> import numpy as np
    >>> unit_reference((0, 0), 4, np.dtype(np.float64), np).shape
    (4,)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MASK32 = 0xFFFFFFFF
M0, M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
ROUNDS = 10


# ----------------------------------------------------------------------------- Philox core
def philox4x32(counter, key_words: tuple[int, int], rounds: int = ROUNDS):
    """Philox4x32 on four counter words (``uint64`` arrays or Python ints holding 32-bit values).

    ``key_words`` are two Python ints. Returns four words of the same kind. The 32x32->64
    multiply is exact in ``uint64``; ``>> 32`` and ``& 0xFFFFFFFF`` give mulhi/mullo.

    Example:
        >>> [hex(int(w)) for w in philox4x32((0, 0, 0, 0), (0, 0))]
        ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c0, c1, c2, c3 = counter
    k0, k1 = int(key_words[0]) & MASK32, int(key_words[1]) & MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
        p0 = c0 * M0
        p1 = c2 * M1
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
    return c0, c1, c2, c3


def round_keys(key_words: tuple[int, int]) -> list[tuple[int, int]]:
    """The key of each of the 10 rounds (the Weyl sequence)."""
    k0, k1 = key_words
    return [((k0 + r * W0) & MASK32, (k1 + r * W1) & MASK32) for r in range(ROUNDS)]


# ----------------------------------------------------------------------------- specification
def blocks(key_words: tuple[int, int], n_blocks: int, xp) -> tuple[Any, Any, Any, Any]:
    """Philox of counters ``(i, 0, 0, 0)`` for ``i < n_blocks``: four uint64 arrays (n_blocks,)."""
    ctr = xp.arange(n_blocks, dtype=xp.uint64)
    # Python 0 for the constant counter words lets the first rounds skip work.
    return philox4x32((ctr, 0, 0, 0), key_words)


def words32_reference(key_words, n: int, xp):
    """``n`` random 32-bit words (uint64 array holding values < 2**32), plane layout."""
    return xp.concatenate(blocks(key_words, -(-n // 4), xp))[:n]


def words64_reference(key_words, n: int, xp):
    """``n`` random 64-bit words (uint64 array); two Philox words make one."""
    c0, c1, c2, c3 = blocks(key_words, -(-n // 2), xp)
    return xp.concatenate([(c0 << 32) | c1, (c2 << 32) | c3])[:n]


def unit_reference(key_words, n: int, dt: np.dtype, xp):
    """``n`` floats in [0, 1) on the grid ``j * 2**-p`` (p = mantissa bits): both the integer
    and the power-of-two scaling are exact, so the value is the same on every device."""
    bits = np.finfo(dt).nmant + 1  # 11, 24, 53
    if bits <= 32:
        ints = words32_reference(key_words, n, xp) >> (32 - bits)
    else:
        ints = words64_reference(key_words, n, xp) >> (64 - bits)
    return ints.astype(dt) * dt.type(2.0 ** -bits)


# Why not xp.log / xp.sin / xp.cos: NumPy (glibc/SVML) and CUDA's libdevice may differ in the
# last ulp, which would break "same key, same numbers on CPU and GPU". The helpers below use
# only +, -, *, /, sqrt, frexp/ldexp, floor, where and comparisons, which IEEE 754 defines
# exactly, each as its own array op (a fused multiply-add would round differently), in
# float64. Accuracy: a few ulp (relative error ~1e-15), far below float32 resolution.
LN2_HI = 6.93147180369123816490e-01  # ln 2 split (fdlibm): e * LN2_HI is exact for |e| < 2**20
LN2_LO = 1.90821492927058770002e-10
ATANH_COEF = [1.0 / (2 * j + 1) for j in range(12)]  # 1, 1/3, 1/5, ... 1/23
SIN_COEF = [(-1) ** j / math.factorial(2 * j + 1) for j in range(10)]  # x, -x^3/3!, ... x^19
COS_COEF = [(-1) ** j / math.factorial(2 * j) for j in range(10)]  # 1, -x^2/2!, ... x^18
SQRT_HALF = math.sqrt(0.5)
HALF_PI = math.pi / 2


def horner(z, coef):
    acc = coef[-1] + z * 0.0  # array of the constant
    for c in reversed(coef[:-1]):
        acc = acc * z
        acc = acc + c
    return acc


def log_reference(x, xp):
    """Natural log of positive, finite, normal float64 ``x`` (exact-op series; see above).

    x = m * 2**e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s) = 2 (s + s^3/3 + ...) with
    s = (m-1)/(m+1), |s| <= 0.1716, so s^2 <= 0.0295 and 12 terms reach ~1e-19.
    """
    m, e = xp.frexp(x)  # m in [0.5, 1)
    small = m < SQRT_HALF
    m = xp.where(small, m * 2.0, m)
    e = (e - small.astype(e.dtype)).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)  # m - 1 is exact (Sterbenz)
    series = horner(s * s, ATANH_COEF)
    ln_m = (s * series) * 2.0
    return e * LN2_HI + (e * LN2_LO + ln_m)


def sin_cos_poly(x):
    """sin(x), cos(x) for float64 x in [0, pi/4] by Taylor polynomials (truncation < 1e-19)."""
    z = x * x
    return x * horner(z, SIN_COEF), horner(z, COS_COEF)


def sincos_2pi_reference(u, xp):
    """sin(2 pi u), cos(2 pi u) for float64 u in [0, 1).

    The quadrant is taken from u itself (4u and floor are exact), so no rounded 2*pi is ever
    reduced; within a quadrant, f in [0, 1) maps to [0, pi/4] by symmetry (1 - f is exact).
    """
    u4 = u * 4.0
    q = xp.floor(u4)
    f = u4 - q
    upper = f > 0.5
    g = xp.where(upper, 1.0 - f, f)  # [0, 0.5]
    s, c = sin_cos_poly(g * HALF_PI)
    sin_f, cos_f = xp.where(upper, c, s), xp.where(upper, s, c)  # angle f * pi/2
    # Rotate by q quarter turns: (sin, cos) -> (cos, -sin) -> (-sin, -cos) -> (-cos, sin).
    swap = (q == 1.0) | (q == 3.0)
    sin_out = xp.where(swap, cos_f, sin_f)
    cos_out = xp.where(swap, sin_f, cos_f)
    sin_out = xp.where(q >= 2.0, -sin_out, sin_out)
    cos_out = xp.where((q == 1.0) | (q == 2.0), -cos_out, cos_out)
    return sin_out, cos_out


def box_muller_reference(v1, v2, xp):
    """``(r cos, r sin)`` float64 of the 53-bit words ``v1 = c0:c1 >> 11``, ``v2 = c2:c3 >> 11``
    (uint64 arrays): ``u1 = (v1 + 1) 2**-53`` in (0, 1] so the log is finite, ``u2 = v2 2**-53``
    in [0, 1); 53-bit integers convert exactly."""
    scale = 2.0 ** -53
    u1 = (v1 + 1).astype(np.float64) * scale
    u2 = v2.astype(np.float64) * scale
    r = xp.sqrt(log_reference(u1, xp) * -2.0)
    sin_t, cos_t = sincos_2pi_reference(u2, xp)
    return r * cos_t, r * sin_t


def normal_blocks_reference(key_words, counters, xp):
    """The two float64 normals of each block ``counters`` (uint64 array): ``(r cos, r sin)``,
    which the stream puts at ``i`` and ``nb + i`` for block ``i``."""
    c0, c1, c2, c3 = philox4x32((counters, 0, 0, 0), key_words)
    return box_muller_reference(((c0 << 32) | c1) >> 11, ((c2 << 32) | c3) >> 11, xp)


def standard_normal64_reference(key_words, n: int, xp):
    """``n`` float64 N(0, 1) draws by Box-Muller; one Philox block (4 words) gives two."""
    z_cos, z_sin = normal_blocks_reference(key_words, xp.arange(-(-n // 2), dtype=xp.uint64), xp)
    return xp.concatenate([z_cos, z_sin])[:n]


def cast(z64, dt: np.dtype):
    """float64 -> dt; float16 goes via float32 explicitly so both devices round the same way."""
    return z64.astype(np.float32).astype(dt) if dt == np.float16 else z64.astype(dt)
