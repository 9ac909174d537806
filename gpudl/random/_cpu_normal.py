"""Normal draws of the NumPy body (:mod:`gpudl.random._cpu`): the Box-Muller of
:mod:`gpudl.random._philox`, bit for bit, on chunks of 53-bit word pairs ``[v1; v2]`` (2, w).

Two bodies:

* :func:`exact_box_muller` (float64 results): the reference's exact-op series, rewritten
  with integer tricks that give the same bits:

  - ``frexp`` + ``where(m < sqrt(1/2))`` in the log become integer arithmetic on the bits of
    the exactly converted ``v1 + 1`` (musl's reduction): the same m and e, see ``_log_prep``;
  - ``floor(4 u2)``, ``1 - f`` and the quadrant ``where``\\ s of sin/cos become integer ops
    on ``v2 = u2 * 2**53``: f = (v2 mod 2**51) 2**-51 and 1 - f = (2**51 - (v2 mod 2**51))
    2**-51 are exact, ``g * (pi/2)`` equals ``g_int * (pi/2 * 2**-51)`` (same real product,
    one rounding), and swaps / negations are xors of sign and value bits;
  - the three Horner polynomials (ln series, sin, cos) run as rows of one (3, w) array: the
    same multiply and add per row, in the same order.

* :func:`fast_box_muller` (float32 and float16 results, ~3x less work): a float64 draw
  accurate to ~1e-13 relative (``np.log``, a 4096-entry table of e^(i a) times a short
  series for the remainder angle, one complex multiply), rounded to float32. The
  reference's float64 draw differs from it by less than :data:`REL_BOUND` relative, so both
  round to the same float32 unless a float32 rounding boundary lies within that distance.
  Those draws (~1 in 500, flagged with three integer ops on the float64 bits, along with
  exact zeros, whose sign only the reference's operation order fixes) are recomputed with
  the reference at the end of the call. :func:`log_is_accurate` checks ``np.log`` once per
  process; on a NumPy whose log were not accurate enough, float32 uses the exact body.

Example:
    >>> import numpy as np
    >>> from gpudl.random._cpu import NumpyStream
    >>> from gpudl.random._philox import cast, standard_normal64_reference
    >>> fast = NumpyStream((5, 0)).normal(1001, np.dtype(np.float32))
    >>> ref = cast(standard_normal64_reference((5, 0), 1001, np), np.dtype(np.float32))
    >>> bool((fast.view(np.uint32) == ref.view(np.uint32)).all())
    True
"""

from __future__ import annotations

import math

import numpy as np

from gpudl.random import _cpu
from gpudl.random._cpu import NumpyStream, Scratch, u64
from gpudl.random._philox import (
    ATANH_COEF,
    COS_COEF,
    HALF_PI,
    LN2_HI,
    LN2_LO,
    SIN_COEF,
    SQRT_HALF,
    log_reference,
    normal_blocks_reference,
)


def _f64(v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


# ----------------------------------------------------------------------------- exact body
_SH = {k: u64(k) for k in (11, 12, 52)}
_ONE_U, _SIGN, _SAR63 = u64(1), u64(1 << 63), np.array(63, dtype=np.int64)
_FRAC51, _TWO51, _HALF_M1 = u64((1 << 51) - 1), u64(1 << 51), u64((1 << 50) - 1)
_MANT = u64((1 << 52) - 1)
_SQRT_HALF_BITS = int(np.float64(SQRT_HALF).view(np.uint64))  # 0x3FE6A09E667F3BCD
# Adding this to the bits of x >= 1 carries into the exponent exactly when x's mantissa
# m2 in [1, 2) is >= 2 sqrt(1/2) (musl's log reduction), see _log_prep.
_LOG_ADJ = u64(0x3FF0000000000000 - _SQRT_HALF_BITS)
_SQRT_HALF_U = u64(_SQRT_HALF_BITS)
_EXP_BIAS = np.array(1023 + 53, dtype=np.int64)  # u1 = x 2**-53
_HALF_PI_2M51 = _f64(HALF_PI * 2.0 ** -51)  # exact: a power-of-two scaling
_ONE, _TWO, _MINUS_TWO = _f64(1.0), _f64(2.0), _f64(-2.0)
_LN2_HI, _LN2_LO = _f64(LN2_HI), _f64(LN2_LO)
_ATANH = [_f64(c) for c in ATANH_COEF]
# Horner coefficient columns for the (3, w) accumulator, rows: ln series, sin, cos.
_POLY_COLS = [np.array([[ATANH_COEF[j]], [SIN_COEF[j]], [COS_COEF[j]]]) for j in range(10)]
_TRIG_START = np.array([[SIN_COEF[9]], [COS_COEF[9]]])


def exact_box_muller(v: np.ndarray, sc: Scratch, dst: np.ndarray) -> None:
    """``dst = [r cos; r sin]`` (2, w) from ``v = [v1; v2]`` (2, w) uint64 (< 2**53, modified),
    computed exactly as ``_philox.box_muller_reference`` (then cast to dst's dtype)."""
    zz = sc.buffer("zz", (3,), np.float64)  # Horner arguments
    acc = sc.buffer("acc", (3,), np.float64)  # Horner accumulators
    ints = sc.buffer("ints", (3,), np.uint64)
    sx = sc.buffer("sx", (2,), np.float64)
    e, m = _log_prep(v[0], ints, sc.buffer("e", (), np.float64))
    # ln m = 2 atanh(s), s = (m - 1) / (m + 1), series argument s^2.
    s = sx[0]
    np.subtract(m, _ONE, out=s)
    np.add(m, _ONE, out=m)
    np.divide(s, m, out=s)
    # sin/cos argument: the angle g pi/2 with g = min(f, 1 - f), f the fraction of 4 u2.
    gi, t = ints[1], ints[2]
    np.bitwise_and(v[1], _FRAC51, out=gi)  # f 2**51
    np.subtract(_TWO51, gi, out=t)  # (1 - f) 2**51
    np.minimum(gi, t, out=gi)
    x = sx[1]
    np.multiply(gi.view(np.int64), _HALF_PI_2M51, out=x)  # g_int < 2**51: exact convert
    np.multiply(x, x, out=zz[1])
    zz[2] = zz[1]
    np.multiply(s, s, out=zz[0])
    # Horner as _philox.horner: the ln series has 12 terms, sin/cos join at 10.
    a0 = acc[0]
    np.multiply(zz[0], _ATANH[11], out=a0)
    np.add(a0, _ATANH[10], out=a0)
    np.multiply(a0, zz[0], out=a0)
    np.add(a0, _ATANH[9], out=a0)
    acc[1:] = _TRIG_START
    for j in range(8, -1, -1):
        np.multiply(acc, zz, out=acc)
        np.add(acc, _POLY_COLS[j], out=acc)
    np.multiply(acc[1], x, out=acc[1])  # sin poly = x * series
    # log u1 = e LN2_HI + (e LN2_LO + (s series) 2); r = sqrt(-2 log u1), into e.
    np.multiply(s, a0, out=a0)
    np.multiply(a0, _TWO, out=a0)
    lo = zz[0]
    np.multiply(e, _LN2_LO, out=lo)
    np.add(lo, a0, out=lo)
    np.multiply(e, _LN2_HI, out=e)
    np.add(e, lo, out=e)
    np.multiply(e, _MINUS_TWO, out=e)
    np.sqrt(e, out=e)
    sin_bits, cos_bits = acc[1].view(np.uint64), acc[2].view(np.uint64)
    _rotate(v[1], sin_bits, cos_bits, ints)
    np.multiply(e, acc[2], out=dst[0])  # r cos (cast to dst's dtype)
    np.multiply(e, acc[1], out=dst[1])  # r sin


def _log_prep(v1, ints, e):
    """``frexp`` of the reference's log, on integers: returns ``(e, m)`` float64 rows.

    x = v1 + 1 converts exactly (<= 2**53) and u1 = x 2**-53. With ix = bits(x) +
    _LOG_ADJ, the exponent field of ix is x's exponent plus 1 iff x's mantissa (in
    [1, 2)) is >= 2 sqrt(1/2), i.e. iff the reference's ``m >= sqrt(1/2)``; then
    ``(ix & MANT) + bits(sqrt(1/2))`` is the reference's reduced m in [sqrt(1/2),
    sqrt(2)) and ``e = exponent field - 1023 - 53``.
    """
    ix, ebits = ints[0], ints[1]
    np.add(v1, _ONE_U, out=v1)
    np.copyto(ix.view(np.float64), v1.view(np.int64), casting="unsafe")
    np.add(ix, _LOG_ADJ, out=ix)
    np.right_shift(ix, _SH[52], out=ebits)
    np.subtract(ebits.view(np.int64), _EXP_BIAS, out=ebits.view(np.int64))
    np.copyto(e, ebits.view(np.int64), casting="unsafe")  # small ints: exact
    np.bitwise_and(ix, _MANT, out=ix)
    np.add(ix, _SQRT_HALF_U, out=ix)
    return e, ix.view(np.float64)


def _rotate(v2, sin_bits, cos_bits, ints) -> None:
    """The quadrant logic of ``sincos_2pi_reference`` on the bits of ``v2 = u2 2**53``.

    q = v2 >> 51 (bits 52, 51); upper = (f > 1/2) = (v2 mod 2**51 > 2**50). sin and cos
    of the reduced angle trade places when upper != (q odd), which is bit 51 of
    v2 + 2**50 - 1; sin is negated when q >= 2 (bit 52 of v2), cos when q is 1 or 2
    (bit 52 of v2 + 2**51). Negating before the multiply by r gives the same bits.
    """
    t, sel = ints[0], ints[1]
    np.add(v2, _HALF_M1, out=sel)
    np.left_shift(sel, _SH[12], out=sel)  # bit 51 -> sign bit
    sel64 = sel.view(np.int64)
    np.right_shift(sel64, _SAR63, out=sel64)  # all ones or all zeros
    np.bitwise_xor(sin_bits, cos_bits, out=t)
    np.bitwise_and(t, sel, out=t)
    np.bitwise_xor(sin_bits, t, out=sin_bits)  # swapped where sel
    np.bitwise_xor(cos_bits, t, out=cos_bits)
    np.left_shift(v2, _SH[11], out=t)  # bit 52 -> sign bit
    np.bitwise_and(t, _SIGN, out=t)
    np.bitwise_xor(sin_bits, t, out=sin_bits)
    np.add(v2, _TWO51, out=t)
    np.left_shift(t, _SH[11], out=t)
    np.bitwise_and(t, _SIGN, out=t)
    np.bitwise_xor(cos_bits, t, out=cos_bits)


# ----------------------------------------------------------------------------- fast float32 body
#: Bound on |fast / reference - 1| that the flagging assumes. The fast draw's error is below
#: ~3e-13 (tests/test_random_golden.py measures it) and the reference's ~1e-15: ~20x margin.
REL_BOUND = 2.0 ** -37
# A relative change below REL_BOUND moves a double's bit pattern by at most REL_BOUND * 2**54
# (ulps of the smaller binade). The float32 rounding of a double is decided by its low 29
# bits; midpoints sit at 2**28 mod 2**29. Flag the bits within D of 0 mod 2**28: every
# midpoint neighbourhood (and, harmlessly, every float32 value's, zero included).
_D = int(REL_BOUND * 2.0 ** 54)
_CHECK_ADD, _CHECK_MASK, _CHECK_MAX = u64(_D), u64((1 << 28) - 1), u64(2 * _D)
TABLE_BITS = 12  # e^(i a) at a = 2 pi j / 4096: remainder |b| <= pi / 4096


def _unit_circle_table(bits: int) -> np.ndarray:
    """``e^(2 pi i j / 2**bits)`` for j = 0..2**bits (the last repeats the first), each part
    the double nearest the true value: computed on the first octant, where the rounded
    angle costs < 1 ulp, and mirrored exactly (swaps and negations)."""
    n = 1 << bits
    eighth = n // 8
    oct_c = [math.cos(2 * math.pi * k / n) for k in range(eighth + 1)]
    oct_s = [math.sin(2 * math.pi * k / n) for k in range(eighth + 1)]
    c, s = [0.0] * (n + 1), [0.0] * (n + 1)
    for j in range(n + 1):
        q, k = divmod(j % n, n // 4)  # quadrant, position in it
        ck, sk = (oct_c[k], oct_s[k]) if k <= eighth else (oct_s[n // 4 - k], oct_c[n // 4 - k])
        c[j], s[j] = [(ck, sk), (-sk, ck), (-ck, -sk), (sk, -ck)][q]
    return np.array(c) + 1j * np.array(s)


_TABLE = _unit_circle_table(TABLE_BITS)
_J_SHIFT = u64(53 - TABLE_BITS)  # j = round(u2 2**bits) = (v2 + half) >> (53 - bits)
_J_HALF, _J_REM = u64(1 << (52 - TABLE_BITS)), u64((1 << (53 - TABLE_BITS)) - 1)
_B_SCALE = _f64(2 * math.pi * 2.0 ** -53)  # b = 2 pi (v2 - j 2**41) 2**-53
# cos b = 1 - b^2/2 (+ b^4/24 < 1.5e-14), sin b = b (1 - b^2/6) (+ b^5/120, relative 3e-15)
_SERIES = np.array([[-0.5], [-1.0 / 6.0]])
_U1_SCALE, _LOG_SCALE = _f64(2.0 ** -53), _f64(-2.0)
_LOG_OK: list[bool] = []
_NONE = np.empty(0, np.int64)
#: Calls of fewer blocks than FAST_MIN_CHUNKS chunks take the exact body: the recomputation
#: of flagged draws costs ~0.1 ms per call whatever their number.
FAST_MIN_CHUNKS = 1


def log_is_accurate() -> bool:
    """Whether ``np.log`` is within 2**-45 relative of the exact series (tested once): the
    fast body's error budget counts on a few ulp (every libm gets < 4 ulp)."""
    if not _LOG_OK:
        rng = np.random.default_rng(0)
        u = np.concatenate([rng.random(4000), 1.0 - rng.random(1000) * 2.0 ** -30,
                            np.exp(-rng.uniform(0, 37, 1000)), [2.0 ** -53, 0.5, 1 - 2.0 ** -53]])
        ref, got = log_reference(u, np), np.log(u)
        _LOG_OK.append(bool(np.all(np.abs(got - ref) <= 2.0 ** -45 * np.abs(ref))))
    return _LOG_OK[0]


def fast_box_muller(v: np.ndarray, sc: Scratch, dst: np.ndarray) -> np.ndarray:
    """``dst = [r cos; r sin]`` (2, w) float32, accurate to REL_BOUND before the rounding to
    float32; returns the positions (< w) whose draws may round differently from the
    reference's (to recompute with it). ``v = [v1; v2]`` (2, w) uint64 < 2**53, modified."""
    w = v.shape[1]
    r = sc.buffer("r", (), np.float64)
    b = sc.buffer("b", (), np.float64)
    z = sc.buffer("z", (), np.float64)
    q = sc.buffer("q", (2,), np.float64)
    j = sc.buffer("j", (), np.int64)
    rot = sc.buffer("rot", (), np.complex128)  # e^(i a_j), then the draws r e^(i 2 pi u2)
    part = sc.buffer("part", (), np.complex128)  # r e^(i b)
    check = sc.buffer("check", (), np.uint64, per=2)
    flag = sc.buffer("flag", (), np.bool_, per=2)
    v1, v2 = v[0], v[1]
    # r = sqrt(-2 log u1), u1 = (v1 + 1) 2**-53 (exact; np.log is relatively accurate near 1)
    np.add(v1, _ONE_U, out=v1)
    np.multiply(v1.view(np.int64), _U1_SCALE, out=r)
    np.log(r, out=r)
    np.multiply(r, _LOG_SCALE, out=r)
    np.sqrt(r, out=r)
    # angle 2 pi u2 = a_j + b, j = round(4096 u2) (4096 is 0 again: the table repeats it)
    np.add(v2, _J_HALF, out=v2)
    np.right_shift(v2, _J_SHIFT, out=j.view(np.uint64))
    np.bitwise_and(v2, _J_REM, out=v2)
    np.subtract(v2, _J_HALF, out=v2)  # wraps below 0: the int64 view is the signed value
    np.multiply(v2.view(np.int64), _B_SCALE, out=b)
    # part = r (cos b + i sin b): rows [1 - b^2/2; 1 - b^2/6], the second times b
    np.multiply(b, b, out=z)
    np.multiply(z, _SERIES, out=q)
    np.add(q, _ONE, out=q)
    np.multiply(q[1], b, out=q[1])
    np.multiply(q, r, out=part.view(np.float64).reshape(w, 2).T)
    np.take(_TABLE, j, out=rot, mode="clip")  # j <= 4096 by construction: clip checks nothing
    np.multiply(rot, part, out=rot)
    # Flag the draws within REL_BOUND of a float32 rounding boundary (or zero).
    bits = rot.view(np.uint64)  # (2w,) r cos, r sin of each block, interleaved
    np.add(bits, _CHECK_ADD, out=check)
    np.bitwise_and(check, _CHECK_MASK, out=check)
    np.less_equal(check, _CHECK_MAX, out=flag)
    np.copyto(dst, rot.view(np.float64).reshape(w, 2).T, casting="unsafe")
    if not flag.any():
        return _NONE
    return np.flatnonzero(flag) >> 1  # a block flagged twice is recomputed twice: harmless


# ----------------------------------------------------------------------------- driver
def _affine(z: np.ndarray, std, mean) -> None:
    """``z * std + mean`` in z's dtype, as the reference's separate array ops (in place)."""
    if std is not None:
        np.multiply(z, std, out=z)
    if mean is not None:
        np.add(z, mean, out=z)


def normal(stream: NumpyStream, n: int, dt: np.dtype, std=None, mean=None) -> np.ndarray:
    """``n`` draws of dtype ``dt``: ``cast(standard_normal64_reference(key, n), dt)`` (float16
    via float32), then ``* std`` and ``+ mean`` (dt scalars, None to skip) in dt."""
    nb = -(-n // 2)
    out = np.empty((2, nb), dt)
    std = None if std is None else np.array(std, dt)
    mean = None if mean is None else np.array(mean, dt)
    fast = dt != np.float64 and nb >= FAST_MIN_CHUNKS * _cpu.CHUNK and log_is_accurate()
    redo: list[np.ndarray] = []

    def body(b0, sc):
        dst = out[:, b0:b0 + sc.w]
        buf = dst if dt != np.float16 else sc.buffer("normal16", (2,), np.float32)
        v = stream.words53(b0, sc)
        if fast:
            flagged = fast_box_muller(v, sc, buf)
            if flagged.size:
                redo.append(flagged + b0)
        else:
            exact_box_muller(v, sc, buf)
        if buf is not dst:
            np.copyto(dst, buf, casting="unsafe")  # float16 via float32, as _philox.cast
        _affine(dst, std, mean)

    stream.run(nb, body)
    if redo:  # the flagged blocks, from the reference (float16 via float32)
        blocks = np.concatenate(redo)
        z_cos, z_sin = normal_blocks_reference(stream.key_words, blocks.astype(np.uint64), np)
        fixed = np.stack([z_cos, z_sin]).astype(np.float32).astype(dt)
        _affine(fixed, std, mean)
        out[:, blocks] = fixed
    return out.reshape(-1)[:n]
