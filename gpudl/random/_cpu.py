"""The fast NumPy body of :mod:`gpudl.random`: the stream format of :mod:`gpudl.random._philox`,
bit for bit, many times faster than its vectorised reference.

Why the reference is slow: every op allocates a full-size temporary (~100 of them per
normal draw), so a 10M-element call streams gigabytes through memory. Here the counters are
walked in chunks of :data:`CHUNK` blocks whose buffers stay in L2 (kept per thread between
calls), every ufunc writes in place (``out=``) and takes 0-d constants on contiguous rows
(NumPy's cheapest dispatch), and a Philox round is seven such calls: two multiplies, mask
and shift of both products at once (mulhi/mullo are ``>> 32`` / ``& 0xFFFFFFFF`` of the exact
32x32->64-bit product in uint64), three xors. The float conversions, ``minval``/``maxval``
and ``mean``/``std`` are applied to each chunk while it is in cache, with the same ops in
the same dtype as the reference.

What is computed differently, and why it is still the same bits:

* Philox: rounds 0 and 1 use that counter words 1-3 are 0 (as the reference does with
  Python ints) and that ``ctr * M0 = i * M0 + b0 * M0`` (mod 2**64, as uint64 wraps); round
  2 folds the constant ``c3`` into its key; the other rounds are the same uint64 ops.
* Uniform floats: ``word >> (32 - p)`` as uint32, converted from int32 (exact below 2**24),
  or ``c0:c1 >> 11`` from int64 (exact below 2**53), then scaled by 2**-p, the reference's
  own ops. With ``minval``/``maxval``, ``u * width`` is computed as ``k * (width 2**-p)`` when
  that scaling is exact: the same real product, rounded once, so the same float.
* Normal draws: :mod:`gpudl.random._cpu_normal` (an exact float64 body, and a float32 body
  that rounds a fast accurate draw and recomputes the rare draws near a rounding boundary).

Example:
    >>> import numpy as np
    >>> from gpudl.random._philox import unit_reference
    >>> fast = NumpyStream((7, 0)).unit(10, np.dtype(np.float32))
    >>> bool((fast == unit_reference((7, 0), 10, np.dtype(np.float32), np)).all())
    True
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from gpudl.random._philox import M0, M1, MASK32, ROUNDS, round_keys

# Blocks per chunk: about 50 ufunc calls per chunk cost 0.5-1.5 us each to dispatch, so
# fewer blocks spend a growing share on dispatch; more and the ~2 MB of buffers (Philox's
# four (2, w) uint64 arrays, the float bodies' rows) fall out of L2. 16384 measured best.
CHUNK = 16384


def u64(v: int) -> np.ndarray:
    """A 0-d uint64 array: the cheapest ufunc operand to dispatch (a Python int is converted
    per call), reduced mod 2**64 as the uint64 arithmetic it stands in for."""
    return np.array(v % (1 << 64), dtype=np.uint64)


_MASK, _SH32, _M0, _M1 = u64(MASK32), u64(32), u64(M0), u64(M1)
_SH = {k: u64(k) for k in (8, 11, 21, 32)}
_SH_U32 = {k: np.array(k, np.uint32) for k in (8, 21)}  # uniform float32 / float16 shifts


class Scratch:
    """Contiguous buffers for chunks of ``w`` blocks, reused chunk after chunk.

    ``Scratch(w)`` owns its arrays; ``full.part(w)`` (w <= full.w) carves contiguous arrays
    for a shorter chunk out of ``full``'s memory (the tail of a call), so no call allocates
    once its thread has a full-size set (see ``_chunk_scratch``).
    """

    def __init__(self, w: int, full: Scratch | None = None):
        self.w, self.full = w, full
        self.extra: dict = {}  # buffers by name (the float bodies' too)
        self.parts: dict[int, Scratch] = {}  # shorter chunks carved from this one, by w
        self.base_m0 = (np.arange(w, dtype=np.uint64) * u64(M0) if full is None
                        else full.base_m0[:w])  # (w,) i * M0, round 0
        self.s = self.buffer("s", (2,), np.uint64)  # state [c0; c2]
        self.p = self.buffer("p", (2,), np.uint64)  # products, then their high words
        self.lows = [self.buffer(f"lo{i}", (2,), np.uint64) for i in range(2)]  # 2 rounds' lows

    def part(self, w: int) -> Scratch:
        """Buffers for a chunk of ``w <= self.w`` blocks, in this one's memory (kept for
        the next call of that size: carving costs a few microseconds per buffer)."""
        sc = self.parts.get(w)
        if sc is None:
            if len(self.parts) >= 32:
                self.parts.clear()
            sc = self.parts[w] = Scratch(w, self)
        return sc

    def buffer(self, name: str, lead: tuple[int, ...], dtype, per: int = 1) -> np.ndarray:
        """The named contiguous buffer of shape ``(*lead, per * w)`` (made on first use)."""
        buf = self.extra.get(name)
        if buf is None:
            shape = (*lead, per * self.w)
            if self.full is None:
                buf = np.empty(shape, dtype)
            else:
                flat = self.full.buffer(name, lead, dtype, per).reshape(-1)
                buf = flat[:int(np.prod(shape, dtype=np.int64))].reshape(shape)
            self.extra[name] = buf
        return buf


def _exact_scaling(width: np.ndarray, bits: int) -> bool:
    """Whether ``width * 2**-bits`` is exact in width's dtype (finite, stays normal)."""
    return bool(np.isfinite(width)) and abs(float(width)) * 2.0 ** -bits >= np.finfo(width.dtype).tiny


_LOCAL = threading.local()


def _chunk_scratch() -> Scratch:
    """This thread's full-chunk buffers (1-5 MB), kept between calls: fresh ones would be
    fresh pages (mmap), faulted in on every call. Bodies never call each other, so one set
    per thread is never used twice at once."""
    sc = getattr(_LOCAL, "scratch", None)
    if sc is None or sc.w != CHUNK:
        sc = _LOCAL.scratch = Scratch(CHUNK)
    return sc


class NumpyStream:
    """One key's stream (the format of :mod:`gpudl.random._philox`), computed on NumPy arrays."""

    def __init__(self, key_words: tuple[int, int]):
        self.key_words = (int(key_words[0]) & MASK32, int(key_words[1]) & MASK32)
        ks = round_keys(self.key_words)
        self.k0 = [u64(k0) for k0, _ in ks]
        self.k1 = [u64(k1) for _, k1 in ks]
        p0 = ks[0][0] * M0  # round 1's c0 * M0: c0 = k0 after round 0, a constant
        self.c2_1 = u64((p0 >> 32) ^ ks[1][1])  # round 1: c2'' = c3' ^ hi(p0) ^ k1
        self.k1_2 = u64((p0 & MASK32) ^ ks[2][1])  # round 2 reads c3'' = lo(p0): folded in

    # ------------------------------------------------------------------ Philox
    def philox(self, b0: int, sc: Scratch) -> tuple[np.ndarray, np.ndarray]:
        """Blocks ``b0 <= i < b0 + sc.w``: ``(s, lo)`` with ``s = [c0; c2]``, ``lo = [c1; c3]``
        (2, w) uint64, views into ``sc``.

        Each ufunc call is a plain one (contiguous rows, 0-d constants): NumPy's fast path,
        ~0.6 us to dispatch against ~1.5 us for broadcast columns or reversed rows, which
        matters for small calls."""
        s, p = sc.s, sc.p
        lo, spare = sc.lows
        x, y = p[0], p[1]
        # Round 0 on (i, 0, 0, 0): c0' = k0, c1' = 0, c2' = hi(i M0) ^ k1, c3' = lo(i M0).
        np.add(sc.base_m0, u64(b0 * M0), out=x)
        np.bitwise_and(x, _MASK, out=s[1])  # c3', becomes c2'' below
        np.right_shift(x, _SH32, out=y)
        np.bitwise_xor(y, self.k1[0], out=y)
        # Round 1: c0' M0 is a constant; p1 = c2' M1.
        np.multiply(y, _M1, out=y)
        np.bitwise_and(y, _MASK, out=lo[1])  # c1''
        np.right_shift(y, _SH32, out=s[0])
        np.bitwise_xor(s[0], self.k0[1], out=s[0])  # c0'' = hi(p1) ^ c1' ^ k0
        np.bitwise_xor(s[1], self.c2_1, out=s[1])  # c2'' = hi(p0) ^ c3' ^ k1
        # Rounds 2..9 on s = [c0; c2], lo = [c3; c1] (the low words of [c0 M0; c2 M1]):
        # c0 <- hi(c2 M1) ^ c1 ^ k0, c2 <- hi(c0 M0) ^ c3 ^ k1, lo <- [lo(c0 M0); lo(c2 M1)].
        # In round 2, c3 is the constant lo(k0 M0), folded into k1.
        for r in range(2, ROUNDS):
            np.multiply(s[0], _M0, out=x)
            np.multiply(s[1], _M1, out=y)
            np.bitwise_and(p, _MASK, out=spare)
            np.right_shift(p, _SH32, out=p)
            if r == 2:
                np.bitwise_xor(y, lo[1], out=y)
                np.bitwise_xor(x, self.k1_2, out=s[1])
            else:
                np.bitwise_xor(p, lo, out=p)  # [hi(c0 M0) ^ c3; hi(c2 M1) ^ c1]
                np.bitwise_xor(x, self.k1[r], out=s[1])
            np.bitwise_xor(y, self.k0[r], out=s[0])
            lo, spare = spare, lo
        return s, lo[::-1]

    def words53(self, b0: int, sc: Scratch) -> np.ndarray:
        """``[c0:c1 >> 11; c2:c3 >> 11]`` (2, w): the top 53 bits of the 64-bit words."""
        s, lo = self.philox(b0, sc)
        np.left_shift(s, _SH[21], out=s)
        np.right_shift(lo, _SH[11], out=lo)
        np.bitwise_or(s, lo, out=s)
        return s

    # ------------------------------------------------------------------ chunk driver
    @staticmethod
    def run(n_blocks: int, body: Callable[[int, Scratch], None]) -> None:
        """Call ``body(b0, scratch)`` for chunks covering the blocks ``[0, n_blocks)``."""
        full, tail = divmod(n_blocks, CHUNK)
        sc = _chunk_scratch()
        for c in range(full):
            body(c * CHUNK, sc)
        if tail:
            body(full * CHUNK, sc.part(tail))

    # ------------------------------------------------------------------ integer words
    def words32(self, n: int) -> np.ndarray:
        """``words32_reference`` as uint32: plane layout, ``nb = ceil(n / 4)``."""
        nb = -(-n // 4)
        out = np.empty((4, nb), np.uint32)

        def body(b0, sc):
            s, lo = self.philox(b0, sc)
            sl = slice(b0, b0 + sc.w)
            np.copyto(out[0::2, sl], s, casting="unsafe")  # < 2**32: exact
            np.copyto(out[1::2, sl], lo, casting="unsafe")

        self.run(nb, body)
        return out.reshape(-1)[:n]

    def words64(self, n: int) -> np.ndarray:
        """``words64_reference``: ``[c0:c1 (nb); c2:c3 (nb)]``, ``nb = ceil(n / 2)``."""
        nb = -(-n // 2)
        out = np.empty((2, nb), np.uint64)

        def body(b0, sc):
            s, lo = self.philox(b0, sc)
            np.left_shift(s, _SH32, out=s)
            np.bitwise_or(s, lo, out=out[:, b0:b0 + sc.w])

        self.run(nb, body)
        return out.reshape(-1)[:n]

    def below32(self, n: int, threshold: int) -> np.ndarray:
        """``words32(n) < threshold`` (bool, threshold <= 2**32) without keeping the words."""
        nb = -(-n // 4)
        out = np.empty((4, nb), np.bool_)
        t = u64(threshold)

        def body(b0, sc):
            s, lo = self.philox(b0, sc)
            sl = slice(b0, b0 + sc.w)
            np.less(s, t, out=out[0::2, sl])
            np.less(lo, t, out=out[1::2, sl])

        self.run(nb, body)
        return out.reshape(-1)[:n]

    # ------------------------------------------------------------------ floats
    def unit(self, n: int, dt: np.dtype, affine: tuple | None = None) -> np.ndarray:
        """``unit_reference``: ``n`` floats of dtype ``dt`` in [0, 1); with ``affine = (width,
        lo, top)`` (scalars of dtype ``dt``), ``min(u * width + lo, top)``, each op rounded
        to ``dt`` as separate array ops round it."""
        dt = np.dtype(dt)
        bits = np.finfo(dt).nmant + 1  # 11, 24, 53
        if bits > 32:  # float64: the top 53 bits of a 64-bit word, times 2**-53
            nb, rows = -(-n // 2), 2
        else:  # float16 / float32: the top bits of a 32-bit word, scaled in float32 (exact)
            nb, rows = -(-n // 4), 4
        out = np.empty((rows, nb), dt)
        work_dt = np.float64 if bits > 32 else np.float32
        scale = np.array(2.0 ** -bits, work_dt)
        consts = None if affine is None else [np.array(v, dt) for v in affine]
        if consts is not None and dt != np.float16 and _exact_scaling(consts[0], bits):
            # u * width = (k 2**-p) width rounds as k (width 2**-p): one multiply less
            consts[0], scale = consts[0] * scale, None

        def body(b0, sc):
            w = sc.w
            dst = out[:, b0:b0 + w]
            # float16 is computed in a float32 chunk (exact) and converted in cache.
            buf = dst if dt != np.float16 else sc.buffer("unit16", (rows,), np.float32)
            if bits > 32:
                v = self.words53(b0, sc)
                np.copyto(buf, v.view(np.int64), casting="unsafe")  # < 2**53: exact
            else:  # the words as uint32, shifted there, converted from int32 (< 2**24: exact)
                ints = sc.buffer("unit_ints", (rows,), np.uint32)
                s, lo = self.philox(b0, sc)
                np.copyto(ints[0::2], s, casting="unsafe")  # < 2**32: exact
                np.copyto(ints[1::2], lo, casting="unsafe")
                np.right_shift(ints, _SH_U32[32 - bits], out=ints)
                np.copyto(buf, ints.view(np.int32), casting="unsafe")
            if scale is not None:
                np.multiply(buf, scale, out=buf)
            if buf is not dst:
                np.copyto(dst, buf, casting="unsafe")  # 11-bit values: exact in float16
            if consts is not None:
                width, low, top = consts
                np.multiply(dst, width, out=dst)
                np.add(dst, low, out=dst)
                np.minimum(dst, top, out=dst)

        self.run(nb, body)
        return out.reshape(-1)[:n]

    def normal(self, n: int, dt: np.dtype, std=None, mean=None) -> np.ndarray:
        """``cast(standard_normal64_reference(key, n), dt)`` (float16 via float32), then
        ``* std`` and ``+ mean`` (scalars of dtype ``dt``, None to skip) in ``dt``."""
        from gpudl.random._cpu_normal import normal

        return normal(self, n, np.dtype(dt), std, mean)
