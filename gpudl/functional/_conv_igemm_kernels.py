"""conv2d version 2: the implicit-GEMM CUDA kernels (``kernels/conv2d_igemm.cu``) and the
choice between them and version 1 (im2col/col2im + cuBLAS, ``_conv_kernels.py``).

Which implementation runs the CUDA forward, backward-data and backward-weight products is
chosen by the environment variable ``GPUDL_CONV_IMPL``, read at every call:

* ``im2col`` (default, also when unset or empty): version 1 everywhere.
* ``igemm``: version 2 for conv2d's forward, backward-data (conv_transpose2d's forward
  included) and backward-weight.
* ``auto``: version 2 only for the (product, shape) keys in :data:`AUTO_IGEMM`, where it
  measured faster than version 1 on a GPU; version 1 elsewhere.

:data:`AUTO_IGEMM` is empty until GPU measurements (``benchmarks/kernels_conv.py``, rows
``gpudl`` vs ``gpudl-igemm``) justify entries; add the keys that :func:`auto_key` prints for
the layers where version 2 won, with the device and the measurement in a comment. The
default stays ``im2col`` until then. Version 2 is also skipped when its grid would exceed
CUDA's limits (more than 65535 groups or 4 million channels per group); the NumPy twin
(CPU) is unaffected by any of this.

Backward-weight reduces over all N*Ho*Wo output pixels into a small (O, C/G*kH*kW) result,
so it splits that reduction (split-K): :func:`weight_splits` picks the count, each split
writes a partial dw to a workspace, and a second kernel adds the partials in a fixed order
(deterministic, no atomics).

Example:
    >>> conv_impl("auto")
    'auto'
    >>> auto_key("forward", (8, 3, 32, 32), (64, 3, 3, 3), stride=(1, 1),
    ...          padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    ('forward', 3, 32, 32, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)
"""

from __future__ import annotations

import os

import numpy as np

from gpudl.backend import module_of
from gpudl.cuda import INT32_MAX, KernelSource, contiguous_inputs, launch, type_name
from gpudl.errors import ConfigError, GpudlError

IGEMM_KERNELS = KernelSource(
    "conv2d_igemm.cu",
    [f"conv2d_igemm_{k}<{t}>" for k in ("forward", "backward_data", "backward_weight",
                                        "sum_splits") for t in ("float", "double")],
)

ENV_VAR = "GPUDL_CONV_IMPL"
IMPLS = ("im2col", "igemm", "auto")
DEFAULT_IMPL = "im2col"
_TILE_M, _TILE_N, _THREADS = 64, 64, 256  # BM, BN and the block size in conv2d_igemm.cu
_GRID_YZ_MAX = 65535
OPS = ("forward", "backward_data", "backward_weight")
# Backward-weight split-K (weight_splits): WK pixels per kernel step (conv2d_igemm.cu); aim
# for TARGET_BLOCKS blocks, two waves of an H100 SXM's 132 SMs, so every SM has work and a
# straggler wave is short, but never give a split fewer than MIN_SPLIT_STEPS steps: each
# split costs a partial tile written to the workspace and read back by the combine, which
# must stay small next to its share of the reduction (8 * 32 pixels per 64 x 64 tile).
_WK = 32
TARGET_BLOCKS = 2 * 132
MIN_SPLIT_STEPS = 8

# Shapes for which GPUDL_CONV_IMPL=auto runs version 2: keys as auto_key() returns them.
# Empty on purpose: nothing is listed before a GPU measurement shows version 2 faster.
AUTO_IGEMM: frozenset[tuple] = frozenset()


class ConvImplError(GpudlError, ValueError):
    """GPUDL_CONV_IMPL (or an ``impl`` argument) names no convolution implementation."""


def conv_impl(value: str | None = None) -> str:
    """The selected implementation: ``value``, else ``$GPUDL_CONV_IMPL``, else ``im2col``.

    Example:
        >>> conv_impl(" IGEMM ")
        'igemm'
    """
    raw = os.environ.get(ENV_VAR, "") if value is None else value
    name = raw.strip().lower()
    if not name:
        return DEFAULT_IMPL
    if name not in IMPLS:
        source = f"{ENV_VAR}={raw!r}" if value is None else f"impl={raw!r}"
        raise ConvImplError(f"conv2d: {source} names no convolution implementation; expected "
                            f"one of {', '.join(IMPLS)} (default {DEFAULT_IMPL})")
    return name


def auto_key(op: str, x_shape, w_shape, *, stride, padding, dilation, groups) -> tuple:
    """The :data:`AUTO_IGEMM` key of one product: batch-size independent.

    ``op`` is one of :data:`OPS`; ``x_shape`` is conv2d's input shape (for backward-data the
    shape of dx), ``w_shape`` the weight's (for backward-weight the shape of dw), geometry
    as the primitives normalise it.
    """
    _, c, h, w = x_shape
    o, _, kh, kw = w_shape
    return (op, int(c), int(h), int(w), int(o), int(kh), int(kw), tuple(stride),
            tuple(padding), tuple(dilation), int(groups))


def grid_fits(x_shape, w_shape, groups: int) -> bool:
    """Whether version 2's grid (M tiles, column tiles, groups) is within CUDA's limits."""
    c, o = x_shape[1], w_shape[0]
    widest = max(c, o) // groups  # columns: Og (forward, backward-weight) or Cg (backward-data)
    return groups <= _GRID_YZ_MAX and -(-widest // _TILE_N) <= _GRID_YZ_MAX


def use_igemm(op: str, x_shape, w_shape, *, stride, padding, dilation, groups,
              impl: str | None = None) -> bool:
    """Whether the CUDA body of ``op`` (one of :data:`OPS`) runs version 2.

    ``im2col``: never; ``igemm``: always (within CUDA's grid limits); ``auto``: when
    :func:`auto_key` of the product is in :data:`AUTO_IGEMM`.

    Example:
        >>> use_igemm("backward_weight", (8, 3, 32, 32), (64, 3, 3, 3), stride=(1, 1),
        ...           padding=(1, 1, 1, 1), dilation=(1, 1), groups=1, impl="igemm")
        True
    """
    if op not in OPS:
        raise ConfigError(f"use_igemm: op must be one of {', '.join(OPS)}, got {op!r}")
    name = conv_impl(impl)
    if name == "im2col" or not grid_fits(x_shape, w_shape, groups):
        return False
    if name == "igemm":
        return True
    return auto_key(op, x_shape, w_shape, stride=stride, padding=padding, dilation=dilation,
                    groups=groups) in AUTO_IGEMM


# ----------------------------------------------------------------------------- launchers
def _batch_chunks(n: int, per_sample: int) -> list[tuple[int, int]]:
    """Split the batch so every operand slice stays under int32 indexing."""
    m = max(1, INT32_MAX // max(per_sample, 1))
    return [(i, min(i + m, n)) for i in range(0, n, m)]


def _geometry(n, c, h, w, o, ho, wo, k_hw, stride, padding, dilation, groups):
    return tuple(np.int32(v) for v in (n, c, h, w, o, ho, wo, *k_hw, *stride, padding[0],
                                       padding[2], *dilation, groups))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _grid(rows: int, cols: int, groups: int) -> tuple[int, int, int]:
    return (_cdiv(rows, _TILE_M), _cdiv(cols, _TILE_N), groups)


def weight_splits(m: int, k: int, o: int, groups: int) -> int:
    """Split count for backward-weight's reduction over ``m`` pixels into (G, O/G, k).

    Enough splits that the grid has about :data:`TARGET_BLOCKS` blocks, none shorter than
    :data:`MIN_SPLIT_STEPS` steps, and the workspace (splits, O, k) under int32 indexing.

    Example:
        >>> weight_splits(32 * 56 * 56, 64 * 9, 64, 1)  # VGG 64->64 at 56x56, batch 32
        30
        >>> weight_splits(100, 27, 64, 1)  # too few pixels to split
        1
    """
    tiles = _cdiv(k, _TILE_N) * _cdiv(o // groups, _TILE_M) * groups
    want = _cdiv(TARGET_BLOCKS, tiles)
    longest = max(1, m // (MIN_SPLIT_STEPS * _WK))
    fits = max(1, INT32_MAX // max(o * k, 1))
    return max(1, min(want, longest, fits))


def _split_chunk(m: int, splits: int) -> tuple[int, int]:
    """(pixels per split, a multiple of the kernel's step; splits actually launched)."""
    chunk = _cdiv(_cdiv(m, splits), _WK) * _WK
    return chunk, _cdiv(m, chunk)


def conv2d_forward_igemm(x, w, b=None, *, stride, padding, dilation, groups):
    """y (N, O, Ho, Wo) = conv2d(x, w) (+ b) with the implicit-GEMM kernel (CuPy arrays).

    Same geometry arguments as ``_conv_kernels.conv2d_forward_raw`` (padding is (top, bottom,
    left, right)); ``b`` (O,) or None is added in the kernel's epilogue.
    """
    cupy = module_of(x)
    t = type_name(x.dtype)
    operands = (x, w) if b is None else (x, w, b)
    x, w, *rest = contiguous_inputs("conv2d (igemm)", *operands, dtype=x.dtype)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = cupy.empty((n, o, ho, wo), dtype=x.dtype)
    bias, has_bias = (rest[0], 1) if rest else (w, 0)  # w: a placeholder pointer, never read
    kernel = IGEMM_KERNELS.get(f"conv2d_igemm_forward<{t}>")
    for n0, n1 in _batch_chunks(n, max(c * h * wd, o * ho * wo)):
        m = n1 - n0
        if m * ho * wo == 0 or o == 0:
            continue
        geo = _geometry(m, c, h, wd, o, ho, wo, (kh, kw), stride, padding, dilation, groups)
        launch(kernel, _grid(m * ho * wo, o // groups, groups), (_THREADS,),
               (x[n0:n1], w, bias, y[n0:n1], np.int32(has_bias), *geo))
    return y


def conv2d_backward_data_igemm(gy, w, *, x_hw, stride, padding, dilation, groups):
    """dx (N, C, H, W) from gy (N, O, Ho, Wo) and w with the implicit-GEMM kernel."""
    cupy = module_of(gy)
    t = type_name(gy.dtype)
    gy, w = contiguous_inputs("conv2d_backward_data (igemm)", gy, w, dtype=gy.dtype)
    n, o, ho, wo = gy.shape
    _, cg, kh, kw = w.shape
    c, (h, wd) = cg * groups, x_hw
    dx = cupy.empty((n, c, h, wd), dtype=gy.dtype)
    kernel = IGEMM_KERNELS.get(f"conv2d_igemm_backward_data<{t}>")
    for n0, n1 in _batch_chunks(n, max(c * h * wd, o * ho * wo)):
        m = n1 - n0
        if m * h * wd == 0 or c == 0:
            continue
        geo = _geometry(m, c, h, wd, o, ho, wo, (kh, kw), stride, padding, dilation, groups)
        launch(kernel, _grid(m * h * wd, cg, groups), (_THREADS,), (gy[n0:n1], w, dx[n0:n1], *geo))
    return dx


def conv2d_backward_weight_igemm(x, gy, *, k_hw, stride, padding, dilation, groups,
                                 splits: int | None = None):
    """dw (O, C/G, kH, kW) from x (N, C, H, W) and gy (N, O, Ho, Wo), implicit GEMM.

    Same geometry arguments as ``_conv_kernels.conv2d_backward_weight_raw`` (padding is (top,
    bottom, left, right)). The reduction over N*Ho*Wo is split ``splits`` ways (default:
    :func:`weight_splits`; fewer where the pixels run out) and the partials combined in a
    fixed order, so the result is deterministic.

    Example:
        >>> dw = conv2d_backward_weight_igemm(x, gy, k_hw=(3, 3), stride=(1, 1),
        ...                                   padding=(1, 1, 1, 1), dilation=(1, 1),
        ...                                   groups=1)  # doctest: +SKIP
    """
    cupy = module_of(x)
    t = type_name(x.dtype)
    x, gy = contiguous_inputs("conv2d_backward_weight (igemm)", x, gy, dtype=x.dtype)
    n, c, h, wd = x.shape
    _, o, ho, wo = gy.shape
    kh, kw = k_hw
    cg = c // groups
    k = cg * kh * kw
    chunks = [(n0, n1) for n0, n1 in _batch_chunks(n, max(c * h * wd, o * ho * wo))
              if (n1 - n0) * ho * wo and o * k]
    alloc = cupy.empty if chunks else cupy.zeros  # every launch below overwrites or adds
    dw = alloc((o, cg, kh, kw), dtype=x.dtype)  # = (G, Og, K)
    kernel = IGEMM_KERNELS.get(f"conv2d_igemm_backward_weight<{t}>")
    combine = IGEMM_KERNELS.get(f"conv2d_igemm_sum_splits<{t}>")
    for i, (n0, n1) in enumerate(chunks):
        m = (n1 - n0) * ho * wo
        want = weight_splits(m, k, o, groups) if splits is None else int(splits)
        m_chunk, s = _split_chunk(m, max(1, min(want, INT32_MAX // (o * k))))
        direct = s == 1 and len(chunks) == 1  # the kernel writes dw itself
        ws = dw if direct else cupy.empty((s, o * k), dtype=x.dtype)  # (splits, G, Og, K)
        geo = _geometry(n1 - n0, c, h, wd, o, ho, wo, (kh, kw), stride, padding, dilation,
                        groups)
        launch(kernel, (_cdiv(k, _TILE_N) * s, _cdiv(o // groups, _TILE_M), groups), (_THREADS,),
               (x[n0:n1], gy[n0:n1], ws, np.int32(m_chunk), *geo))
        if not direct:  # dw (+)= ws[0] + ws[1] + ..., in that order
            launch(combine, (_cdiv(o * k, _THREADS),), (_THREADS,),
                   (ws, dw, np.int32(s), np.int32(o * k), np.int32(i > 0)))
    return dw
