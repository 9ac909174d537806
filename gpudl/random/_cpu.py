"""The fast NumPy body of :mod:`gpudl.random`: the stream format of :mod:`gpudl.random._philox`,
bit for bit, several times faster than its vectorised reference.

Why the reference is slow: every op allocates a full-size temporary (~100 of them per
normal draw), so a 10M-element call streams gigabytes through memory. Here the counters are
walked in chunks of :data:`CHUNK` blocks whose buffers stay in L2, and every ufunc writes
in place into 1-D contiguous rows (2-D strided or reversed views and Python-scalar operands
cost NumPy 2-5x the dispatch time of a contiguous row with a 0-d array constant).

What is computed differently, and why it is still the same bits:

* Philox: rounds 0 and 1 use that counter words 1-3 are 0 (as the reference does with
  Python ints); the other rounds are the same uint64 multiply / shift / mask / xor.
* Uniform float32: ``word >> 8`` converted by int64 -> float32 (exact below 2**24) then
  scaled by 2**-24 in float32, the reference's own ops.
* ``frexp`` + ``where(m < sqrt(1/2))`` in the log becomes integer arithmetic on the bits of
  the exactly converted ``v1 + 1`` (musl's reduction): the same m and e, see ``_log_prep``.
* ``floor(4 u2)``, ``1 - f`` and the quadrant ``where``\\ s of sin/cos become integer ops on
  ``v2 = u2 * 2**53``: f = (v2 mod 2**51) 2**-51 and 1 - f = (2**51 - (v2 mod 2**51)) 2**-51 are
  exact, ``g * (pi/2)`` equals ``g_int * (pi/2 * 2**-51)`` (same real product, one rounding),
  and swaps / negations are xors of sign and value bits (``-(r x) == r (-x)`` in IEEE).
* The three Horner polynomials (ln series, sin, cos) run as rows of one (3, chunk) array:
  the same multiply and add per row, in the same order.

Example:
    >>> import numpy as np
    >>> from gpudl.random._philox import unit_reference
    >>> fast = NumpyStream((7, 0)).unit(10, np.dtype(np.float32))
    >>> bool((fast == unit_reference((7, 0), 10, np.dtype(np.float32), np)).all())
    True
"""

from __future__ import annotations

import numpy as np

from gpudl.random._philox import (
    ATANH_COEF,
    COS_COEF,
    HALF_PI,
    LN2_HI,
    LN2_LO,
    M0,
    M1,
    MASK32,
    ROUNDS,
    SIN_COEF,
    SQRT_HALF,
    round_keys,
)

# Blocks per chunk: the normal path's 17 rows of 8-byte words (1.1 MB) stay in L2; fewer
# blocks and NumPy's ~0.5 us dispatch per ufunc call starts to dominate.
CHUNK = 8192


def _u64(v: int) -> np.ndarray:
    # 0-d arrays: the cheapest ufunc operand to dispatch (a Python int is converted per call).
    return np.array(v, dtype=np.uint64)


def _f64(v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


_M0, _M1, _MASK = _u64(M0), _u64(M1), _u64(MASK32)
_SH = {k: _u64(k) for k in (11, 12, 21, 32, 52)}
_ONE_U, _SIGN, _SAR63 = _u64(1), _u64(1 << 63), np.array(63, dtype=np.int64)
_FRAC51, _TWO51, _HALF_M1 = _u64((1 << 51) - 1), _u64(1 << 51), _u64((1 << 50) - 1)
_MANT = _u64((1 << 52) - 1)
_SQRT_HALF_BITS = int(np.float64(SQRT_HALF).view(np.uint64))  # 0x3FE6A09E667F3BCD
# Adding this to the bits of x >= 1 carries into the exponent exactly when x's mantissa
# m2 in [1, 2) is >= 2 sqrt(1/2) (musl's log reduction), see NumpyStream._log_prep.
_LOG_ADJ = _u64(0x3FF0000000000000 - _SQRT_HALF_BITS)
_SQRT_HALF_U = _u64(_SQRT_HALF_BITS)
_EXP_BIAS = np.array(1023 + 53, dtype=np.int64)  # u1 = x 2**-53
_HALF_PI_2M51 = _f64(HALF_PI * 2.0 ** -51)  # exact: a power-of-two scaling
_ONE, _TWO, _MINUS_TWO = _f64(1.0), _f64(2.0), _f64(-2.0)
_LN2_HI, _LN2_LO = _f64(LN2_HI), _f64(LN2_LO)
_ATANH = [_f64(c) for c in ATANH_COEF]
# Horner coefficient columns for the (3, w) accumulator, rows: ln series, sin, cos.
_POLY_COLS = [np.array([[ATANH_COEF[j]], [SIN_COEF[j]], [COS_COEF[j]]]) for j in range(10)]
_TRIG_START = np.array([[SIN_COEF[9]], [COS_COEF[9]]])


class _Scratch:
    """Contiguous buffers for chunks of exactly ``w`` blocks, reused chunk after chunk."""

    def __init__(self, w: int):
        self.w = w
        self.base = np.arange(w, dtype=np.uint64)
        self.s = np.empty((2, w), np.uint64)  # state [c0; c2]
        self.p = np.empty((2, w), np.uint64)  # products [c0 M0; c2 M1]
        self.lows = [np.empty((2, w), np.uint64) for _ in range(2)]  # [c3; c1], 2 rounds
        self.i = np.empty((3, w), np.uint64)
        self.zz = np.empty((3, w), np.float64)  # Horner arguments
        self.acc = np.empty((3, w), np.float64)  # Horner accumulators


class NumpyStream:
    """One key's stream (the format of :mod:`gpudl.random._philox`), computed on NumPy arrays."""

    def __init__(self, key_words: tuple[int, int]):
        self.keys = round_keys(key_words)
        self.k0 = [_u64(k0) for k0, _ in self.keys]
        self.k1 = [_u64(k1) for _, k1 in self.keys]

    # ------------------------------------------------------------------ Philox
    def philox(self, b0: int, sc: _Scratch):
        """Blocks ``b0 <= i < b0 + sc.w``: rows ``(c0, c1, c2, c3)``, views into ``sc``."""
        s, p = sc.s, sc.p
        lo, spare = sc.lows
        ks = self.keys
        x, y = p[0], p[1]
        np.add(sc.base, _u64(b0), out=x)  # counter word 0; words 1..3 are 0
        # Round 0: p0 = c0 M0, p1 = 0, so c0' = k0 and c1' = 0.
        np.multiply(x, _M0, out=x)
        np.bitwise_and(x, _MASK, out=s[1])  # c3' = lo(p0), moved into c2's row below
        np.right_shift(x, _SH[32], out=y)
        np.bitwise_xor(y, self.k1[0], out=y)  # c2' = hi(p0) ^ k1
        # Round 1: p0 = k0 M0 is a constant; p1 = c2' M1.
        p0 = ks[0][0] * M0
        np.multiply(y, _M1, out=y)
        np.bitwise_and(y, _MASK, out=lo[1])  # c1'' = lo(p1)
        np.right_shift(y, _SH[32], out=s[0])
        np.bitwise_xor(s[0], self.k0[1], out=s[0])  # c0'' = hi(p1) ^ 0 ^ k0
        np.bitwise_xor(s[1], _u64((p0 >> 32) ^ ks[1][1]), out=s[1])  # c2'' = hi(p0) ^ c3' ^ k1
        lo[0] = p0 & MASK32  # c3'' = lo(p0), a constant
        # Rounds 2..9: c0 <- hi(c2 M1) ^ c1 ^ k0, c2 <- hi(c0 M0) ^ c3 ^ k1, c1 <- lo(c2 M1),
        # c3 <- lo(c0 M0). lo rows [c3; c1] line up with p's rows [c0 M0; c2 M1].
        for r in range(2, ROUNDS):
            np.multiply(s[0], _M0, out=p[0])
            np.multiply(s[1], _M1, out=p[1])
            np.bitwise_and(p, _MASK, out=spare)
            np.right_shift(p, _SH[32], out=p)
            np.bitwise_xor(p, lo, out=p)  # [hi(p0) ^ c3; hi(p1) ^ c1]
            np.bitwise_xor(p[1], self.k0[r], out=s[0])
            np.bitwise_xor(p[0], self.k1[r], out=s[1])
            lo, spare = spare, lo
        return s[0], lo[1], s[1], lo[0]

    def _words53(self, b0: int, sc: _Scratch):
        """Rows ``[c0:c1 >> 11; c2:c3 >> 11]`` (2, w): the top 53 bits of the 64-bit words."""
        c0, c1, c2, c3 = self.philox(b0, sc)
        np.left_shift(sc.s, _SH[21], out=sc.s)  # rows c0, c2
        np.right_shift(c1, _SH[11], out=c1)
        np.right_shift(c3, _SH[11], out=c3)
        np.bitwise_or(c0, c1, out=c0)
        np.bitwise_or(c2, c3, out=c2)
        return sc.s

    # ------------------------------------------------------------------ chunk driver
    @staticmethod
    def run(n_blocks: int, body) -> None:
        """Call ``body(b0, scratch)`` for chunks covering the blocks ``[0, n_blocks)``."""
        full, tail = divmod(n_blocks, CHUNK)
        if full:
            sc = _Scratch(CHUNK)
            for c in range(full):
                body(c * CHUNK, sc)
        if tail:
            body(full * CHUNK, _Scratch(tail))

    # ------------------------------------------------------------------ integer words
    def words32(self, n: int) -> np.ndarray:
        """``words32_reference`` as uint32: plane layout, ``nb = ceil(n / 4)``."""
        nb = -(-n // 4)
        out = np.empty((4, nb), np.uint32)

        def body(b0, sc):
            for row, words in enumerate(self.philox(b0, sc)):
                np.copyto(out[row, b0:b0 + sc.w], words, casting="unsafe")  # < 2**32: exact

        self.run(nb, body)
        return out.reshape(-1)[:n]

    def words64(self, n: int) -> np.ndarray:
        """``words64_reference``: ``[c0:c1 (nb); c2:c3 (nb)]``, ``nb = ceil(n / 2)``."""
        nb = -(-n // 2)
        out = np.empty((2, nb), np.uint64)

        def body(b0, sc):
            c0, c1, c2, c3 = self.philox(b0, sc)
            np.left_shift(sc.s, _SH[32], out=sc.s)
            np.bitwise_or(c0, c1, out=out[0, b0:b0 + sc.w])
            np.bitwise_or(c2, c3, out=out[1, b0:b0 + sc.w])

        self.run(nb, body)
        return out.reshape(-1)[:n]

    def below32(self, n: int, threshold: int) -> np.ndarray:
        """``words32(n) < threshold`` (bool, threshold <= 2**32) without keeping the words."""
        nb = -(-n // 4)
        out = np.empty((4, nb), np.bool_)
        t = _u64(threshold)

        def body(b0, sc):
            for row, words in enumerate(self.philox(b0, sc)):
                np.less(words, t, out=out[row, b0:b0 + sc.w])

        self.run(nb, body)
        return out.reshape(-1)[:n]

    # ------------------------------------------------------------------ floats
    def unit(self, n: int, dt: np.dtype) -> np.ndarray:
        """``unit_reference``: ``n`` floats of dtype ``dt`` in [0, 1)."""
        bits = np.finfo(dt).nmant + 1
        if bits > 32:  # float64: the top 53 bits of a 64-bit word, times 2**-53
            nb = -(-n // 2)
            out = np.empty((2, nb), np.float64)
            scale = _f64(2.0 ** -53)

            def body(b0, sc):
                v = self._words53(b0, sc)
                for row in range(2):
                    dst = out[row, b0:b0 + sc.w]
                    np.copyto(dst, v[row].view(np.int64), casting="unsafe")  # < 2**53: exact
                    np.multiply(dst, scale, out=dst)
        else:  # float16 / float32: the top bits of a 32-bit word, scaled in float32 (exact)
            nb = -(-n // 4)
            out = np.empty((4, nb), np.float32)
            scale, shift = np.array(2.0 ** -bits, np.float32), _u64(32 - bits)

            def body(b0, sc):
                for row, words in enumerate(self.philox(b0, sc)):
                    dst = out[row, b0:b0 + sc.w]
                    np.right_shift(words, shift, out=words)
                    np.copyto(dst, words.view(np.int64), casting="unsafe")  # < 2**24: exact
                    np.multiply(dst, scale, out=dst)

        self.run(nb, body)
        flat = out.reshape(-1)[:n]
        return flat if flat.dtype == dt else flat.astype(dt)  # float16: exact from float32

    def normal(self, n: int, dt: np.dtype) -> np.ndarray:
        """``cast(standard_normal64_reference(key, n), dt)``: float16 via float32."""
        nb = -(-n // 2)
        out = np.empty((2, nb), np.float64 if dt == np.float64 else np.float32)

        def body(b0, sc):
            self.box_muller(self._words53(b0, sc), sc, out[:, b0:b0 + sc.w])

        self.run(nb, body)
        flat = out.reshape(-1)[:n]
        return flat if flat.dtype == dt else flat.astype(dt)

    def box_muller(self, v, sc: _Scratch, dst) -> None:
        """``dst = [r cos; r sin]`` (2, w) from ``v = [v1; v2]`` (2, w) uint64 (< 2**53, modified).

        ``u1 = (v1 + 1) 2**-53``, ``u2 = v2 2**-53``, exactly as
        ``standard_normal64_reference``. Uses every buffer of ``sc`` except ``sc.s``.
        """
        zz, acc = sc.zz, sc.acc
        e, m = self._log_prep(v[0], sc)
        # ln m = 2 atanh(s), s = (m - 1) / (m + 1), series argument s^2.
        s = sc.p[0].view(np.float64)
        np.subtract(m, _ONE, out=s)
        np.add(m, _ONE, out=m)
        np.divide(s, m, out=s)
        # sin/cos argument: the angle g pi/2 with g = min(f, 1 - f), f the fraction of 4 u2.
        gi, t = sc.i[1], sc.i[2]
        np.bitwise_and(v[1], _FRAC51, out=gi)  # f 2**51
        np.subtract(_TWO51, gi, out=t)  # (1 - f) 2**51
        np.minimum(gi, t, out=gi)
        x = sc.p[1].view(np.float64)
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
        self._rotate(v[1], sin_bits, cos_bits, sc)
        np.multiply(e, acc[2], out=dst[0])  # r cos (cast to dst's dtype: float32 or float64)
        np.multiply(e, acc[1], out=dst[1])  # r sin

    @staticmethod
    def _log_prep(v1, sc: _Scratch):
        """``frexp`` of the reference's log, on integers: returns ``(e, m)`` float64 rows.

        x = v1 + 1 converts exactly (<= 2**53) and u1 = x 2**-53. With ix = bits(x) +
        _LOG_ADJ, the exponent field of ix is x's exponent plus 1 iff x's mantissa (in
        [1, 2)) is >= 2 sqrt(1/2), i.e. iff the reference's ``m >= sqrt(1/2)``; then
        ``(ix & MANT) + bits(sqrt(1/2))`` is the reference's reduced m in [sqrt(1/2),
        sqrt(2)) and ``e = exponent field - 1023 - 53``.
        """
        ix, ebits = sc.i[0], sc.i[1]
        np.add(v1, _ONE_U, out=v1)
        np.copyto(ix.view(np.float64), v1.view(np.int64), casting="unsafe")
        np.add(ix, _LOG_ADJ, out=ix)
        np.right_shift(ix, _SH[52], out=ebits)
        e = sc.lows[0][0].view(np.float64)  # free once the words are made
        np.subtract(ebits.view(np.int64), _EXP_BIAS, out=ebits.view(np.int64))
        np.copyto(e, ebits.view(np.int64), casting="unsafe")  # small ints: exact
        np.bitwise_and(ix, _MANT, out=ix)
        np.add(ix, _SQRT_HALF_U, out=ix)
        return e, ix.view(np.float64)

    @staticmethod
    def _rotate(v2, sin_bits, cos_bits, sc: _Scratch) -> None:
        """The quadrant logic of ``sincos_2pi_reference`` on the bits of ``v2 = u2 2**53``.

        q = v2 >> 51 (bits 52, 51); upper = (f > 1/2) = (v2 mod 2**51 > 2**50). sin and cos
        of the reduced angle trade places when upper != (q odd), which is bit 51 of
        v2 + 2**50 - 1; sin is negated when q >= 2 (bit 52 of v2), cos when q is 1 or 2
        (bit 52 of v2 + 2**51). Negating before the multiply by r gives the same bits.
        """
        t, sel = sc.i[0], sc.i[1]
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
