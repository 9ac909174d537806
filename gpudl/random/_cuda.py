"""The CUDA body of :mod:`gpudl.random`: one launch of ``kernels/philox.cu`` per call.

Each function fills a new CuPy array with the stream format of :mod:`gpudl.random._philox`,
bit-identical to the NumPy body (:mod:`gpudl.random._cpu`); ``gpudl.random`` picks it for
``device="cuda"`` when :func:`fits` (the kernels index with int32). One thread computes one
Philox block (four words) per grid-stride step and writes its outputs in plane layout.

Example:
    >>> fits(10), fits(2**31)
    (True, False)
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import xp_for
from gpudl.cuda import INT32_MAX, KernelSource, launch

PHILOX = KernelSource("philox.cu", [
    "philox_words32", "philox_words64", "philox_uniform<float>", "philox_uniform<double>",
    "philox_normal<float>", "philox_normal<double>",
])
BLOCK = 256  # threads per block
MAX_GRID = 1 << 16  # beyond this the grid-stride loop takes over


def fits(n: int) -> bool:
    """Whether ``n`` outputs are within the kernels' int32 indexing (and not empty)."""
    return 0 < n <= INT32_MAX


def _run(name: str, dtype, n: int, per_block: int, words: tuple[int, int], *extra):
    out = xp_for("cuda").empty(n, dtype=dtype)
    nb = -(-n // per_block)  # Philox blocks; the last one may be partly dropped
    grid = min(-(-nb // BLOCK), MAX_GRID)
    launch(PHILOX.get(name), (grid,), (BLOCK,),
           (out, np.int32(n), np.int32(nb), np.uint32(words[0]), np.uint32(words[1]), *extra))
    return out


def _type(dt: np.dtype) -> str:
    return {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dt)]


def words32(words: tuple[int, int], n: int):
    """``n`` 32-bit words (uint32), plane layout over ``ceil(n / 4)`` blocks."""
    return _run("philox_words32", np.uint32, n, 4, words)


def words64(words: tuple[int, int], n: int):
    """``n`` 64-bit words (uint64): ``c0:c1`` of each block, then ``c2:c3``."""
    return _run("philox_words64", np.uint64, n, 2, words)


def uniform(words: tuple[int, int], n: int, dt: np.dtype, lo, width, top, affine: bool):
    """float32/float64 uniforms; when ``affine``, ``min(u * width + lo, top)`` rounded in dt.

    ``lo``, ``width``, ``top`` are scalars of dtype ``dt`` (passed widened to double).
    """
    return _run(f"philox_uniform<{_type(dt)}>", dt, n, 4 if dt == np.float32 else 2, words,
                np.float64(lo), np.float64(width), np.float64(top), np.int32(bool(affine)))


def normal(words: tuple[int, int], n: int, dt: np.dtype, mean=0.0, std=1.0,
           scale: bool = False, shift: bool = False):
    """float32/float64 N(0, 1) draws, then ``* std`` (``scale``) and ``+ mean`` (``shift``) in dt."""
    flags = np.int32(int(bool(scale)) | int(bool(shift)) << 1)
    return _run(f"philox_normal<{_type(dt)}>", dt, n, 2, words, np.float64(mean),
                np.float64(std), flags)
