"""The two bodies of the batch-norm and layer-norm primitives: kernels/batch_norm.cu and
kernels/layer_norm.cu on CuPy arrays, NumPy twins on NumPy arrays.

Batch norm works on x viewed as (N, C, L) (L = H*W, or 1 for (N, C)); the (C,) vectors
are folded into per-channel coefficients by :func:`bn_scale_shift` and
:func:`bn_backward_coefficients` (plain array arithmetic, shared by both bodies), so the
bodies only reduce (:func:`batch_norm_stats_raw`, :func:`batch_norm_backward_reduce_raw`)
and apply (:func:`batch_norm_apply_raw`, :func:`batch_norm_backward_apply_raw`). Layer
norm works on x viewed as (M, D) (:func:`layer_norm_raw`, :func:`layer_norm_backward_raw`).

The twins are memory-bound NumPy, so they count passes: they walk the array in blocks of
about :data:`CHUNK` elements (the second and later passes over a block hit the cache),
write into preallocated outputs (``out=``), never build a full-size temporary, and reduce
with row dot products (:data:`row_dot`). The variance is two-pass, as the kernels' (no
E[x^2] - E[x]^2 cancellation). The primitives, vjps and argument checks are in
:mod:`gpudl.functional.normalization`.

Example:
    >>> mean, var = batch_norm_stats_twin(np.array([[[1.0, 3.0]], [[5.0, 7.0]]]))
    >>> mean.tolist(), var.tolist()
    ([4.0], [5.0])
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.cuda import DEFAULT_BLOCK, KernelSource, contiguous_inputs, grid_1d, launch, type_name

_TYPES = ("float", "double")
BATCH_NORM_KERNELS = KernelSource(
    "batch_norm.cu",
    [f"batch_norm_{k}<{t}>" for k in ("stats", "apply", "backward_reduce", "backward_apply")
     for t in _TYPES],
)
LAYER_NORM_KERNELS = KernelSource(
    "layer_norm.cu",
    [f"layer_norm_{k}<{t}>" for k in ("forward", "backward", "backward_params") for t in _TYPES],
)
BN_BLOCK, LN_BLOCK, LN_PARAM_COLS = 256, 128, 32  # BN_BLOCK, LN_BLOCK, LN_COLS in the .cu files
# Elements per block of rows in the twins: a block and its scratch stay in a core's L2.
CHUNK = 1 << 17
# Rows shorter than this make row-wise reductions (one vecdot call per row) slow: batch
# norms with short rows ((N, C), (N, C, small L)) reduce over the samples first instead.
MIN_ROW = 32


def _blocks(rows: int, length: int):
    """Row slices of about CHUNK elements each (at least one row)."""
    step = max(1, CHUNK // max(length, 1))
    return [slice(r, min(r + step, rows)) for r in range(0, rows, step)]


def _einsum_row_dot(a, b, out=None):
    return np.einsum("ij,ij->i", a, np.broadcast_to(b, a.shape), out=out)


# Row dot products (a (R, L), b (R, L) or (L,) -> (R,)): NumPy 2's vecdot is a SIMD dot per
# row, 2-3x faster than np.add.reduce/einsum along rows and BLAS-free (a multi-threaded BLAS
# gemv is slower on small blocks). A row sum is the dot with ones.
row_dot = getattr(np, "vecdot", _einsum_row_dot)


# ----------------------------------------------------------------------------- shared math
def bn_scale_shift(mean, var, gamma, beta, eps: float):
    """(C,) ``invstd, scale, shift`` with ``y = x * scale + shift`` (torch's CPU form)."""
    invstd = 1.0 / module_of(var).sqrt(var + eps)
    scale = gamma * invstd
    return invstd, scale, beta - mean * scale


def bn_backward_coefficients(invstd, gamma, sum_g, sum_gd, dmean, dvar, count: int):
    """(C,) ``k1, k2, k3`` of the training backward ``dx = k1*g + k2*(x - mean) + k3``.

    ``dx = gamma*invstd/n * (n*g - sum_g - xhat*sum(g*xhat))`` plus the cotangents of the
    batch mean (``dmean/n``) and biased variance (``2*dvar*(x - mean)/n``). Operators
    only: it runs on NumPy, CuPy and traced values alike.
    """
    k1 = gamma * invstd
    k2 = (2.0 * dvar - k1 * invstd * invstd * sum_gd) / count
    k3 = (dmean - k1 * sum_g) / count
    return k1, k2, k3


# ----------------------------------------------------------------------------- NumPy twins
# Batch norm twins see x (N, C, L) as (N, C*L) and walk it in blocks of whole samples.
# Per-channel vectors are expanded to (C*L,) (np.repeat, one sample's size) so that every
# elementwise pass has one long inner loop: broadcasting a (C, 1) column instead costs a
# NumPy inner-loop call per row of L, ~1.7x slower at L = 256.
def _sample_blocks(x):
    """(N, C*L) view of x (N, C, L) and slices of about CHUNK elements (whole samples)."""
    n, c, length = x.shape
    return x.reshape(n, c * length), _blocks(n, c * length)


def _channel_dot(a, b, c: int, length: int):
    """(C,) per-channel sums of ``a * b`` over a block (nb, C*L); ``b=None``: of ``a``.

    Rows of L >= MIN_ROW: row dot products (vecdot), then a sum over the block's samples;
    shorter rows: a sum over the samples per position, then over L.
    """
    if length >= MIN_ROW:
        rows = a.reshape(-1, length)
        other = np.ones(length, a.dtype) if b is None else b.reshape(-1, length)
        return row_dot(rows, other).reshape(-1, c).sum(axis=0)
    cols = np.add.reduce(a, axis=0) if b is None else np.einsum("nk,nk->k", a, b)
    return cols.reshape(c, length).sum(axis=1)


def batch_norm_stats_twin(x):
    """x (N, C, L) C-contiguous -> (mean (C,), biased var (C,)): two passes (the sum, then
    the squared deviations from the mean), the kernel's formula."""
    n, c, length = x.shape
    x2, blocks = _sample_blocks(x)
    total = np.zeros(c, x.dtype)
    for sl in blocks:
        total += _channel_dot(x2[sl], None, c, length)
    mean = total / (n * length)
    mean_cl = mean.repeat(length)  # (C*L,); the method: np.repeat's wrapper costs ~1 us
    scratch = np.empty((blocks[0].stop, c * length), x.dtype) if blocks else None
    m2 = np.zeros(c, x.dtype)
    for sl in blocks:
        d = np.subtract(x2[sl], mean_cl, out=scratch[:sl.stop - sl.start])
        m2 += _channel_dot(d, d, c, length)
    return mean, m2 / (n * length)


def batch_norm_apply_twin(x, scale, shift=None):
    """x (N, C, L) -> ``x * scale[c] + shift[c]`` (no shift: ``x * scale[c]``)."""
    n, c, length = x.shape
    y = np.empty_like(x)
    x2, blocks = _sample_blocks(x)
    y2 = y.reshape(x2.shape)
    scale_cl = scale.repeat(length)
    shift_cl = None if shift is None else shift.repeat(length)
    for sl in blocks:
        np.multiply(x2[sl], scale_cl, out=y2[sl])
        if shift_cl is not None:
            y2[sl] += shift_cl
    return y


def batch_norm_backward_reduce_twin(g, x, mean):
    """g, x (N, C, L) -> (sum_g (C,), sum_gd (C,) = sum of g * (x - mean))."""
    n, c, length = x.shape
    x2, blocks = _sample_blocks(x)
    g2 = g.reshape(x2.shape)
    mean_cl = mean.repeat(length)
    scratch = np.empty((blocks[0].stop, c * length), x.dtype) if blocks else None
    sum_g, sum_gd = np.zeros(c, x.dtype), np.zeros(c, x.dtype)
    for sl in blocks:
        sum_g += _channel_dot(g2[sl], None, c, length)
        d = np.subtract(x2[sl], mean_cl, out=scratch[:sl.stop - sl.start])
        sum_gd += _channel_dot(g2[sl], d, c, length)
    return sum_g, sum_gd


def batch_norm_backward_apply_twin(g, x, mean, k1, k2, k3):
    """g, x (N, C, L) -> ``dx = (k1*g + k2*(x - mean)) + k3`` per channel."""
    n, c, length = x.shape
    dx = np.empty_like(x)
    x2, blocks = _sample_blocks(x)
    g2, dx2 = g.reshape(x2.shape), dx.reshape(x2.shape)
    k1c, k2c, k3c, mean_cl = (v.repeat(length) for v in (k1, k2, k3, mean))
    scratch = np.empty((blocks[0].stop, c * length), x.dtype) if blocks else None
    for sl in blocks:
        o, d = dx2[sl], scratch[:sl.stop - sl.start]
        np.multiply(g2[sl], k1c, out=o)
        np.subtract(x2[sl], mean_cl, out=d)
        d *= k2c
        o += d
        o += k3c
    return dx


def layer_norm_twin(x, gamma, beta, eps: float):
    """x (M, D), gamma, beta (D,) -> (y (M, D), mean (M,), rstd (M,))."""
    m, d = x.shape
    y = np.empty_like(x)
    mean, rstd = np.empty(m, x.dtype), np.empty(m, x.dtype)
    ones = np.ones(d, x.dtype)
    for sl in _blocks(m, d):
        block, out, mu, r = x[sl], y[sl], mean[sl], rstd[sl]
        row_dot(block, ones, out=mu)
        mu /= d
        np.subtract(block, mu[:, None], out=out)
        row_dot(out, out, out=r)
        r /= d
        r += eps
        np.sqrt(r, out=r)
        np.divide(1.0, r, out=r)
        out *= r[:, None]  # xhat
        out *= gamma
        out += beta
    return y, mean, rstd


def layer_norm_backward_twin(g, x, mean, rstd, gamma, dmean, drstd):
    """-> (dx (M, D), dgamma (D,), dbeta (D,)); dmean, drstd (M,): the cotangents of the
    forward's mean and rstd outputs (zeros at first order), folded into c1 and c2.

    With xc = x - mean: c1 = rstd * sum(g*gamma*xc) / D, dgamma = sum over rows of
    rstd * g * xc, and dx = (g*gamma - xc * (rstd*c1) - c2) * rstd: eleven passes per
    block, the kernel's formula regrouped.
    """
    m, d = x.shape
    dx = np.empty_like(x)
    dgamma, dbeta = np.zeros(d, x.dtype), np.zeros(d, x.dtype)
    blocks = _blocks(m, d)
    if not blocks:
        return dx, dgamma, dbeta
    xc, gxc = np.empty((2, blocks[0].stop, d), x.dtype)
    for sl in blocks:
        k = sl.stop - sl.start
        xcb, gxcb, out, r, gb = xc[:k], gxc[:k], dx[sl], rstd[sl], g[sl]
        np.subtract(x[sl], mean[sl][:, None], out=xcb)
        np.multiply(gb, xcb, out=gxcb)
        dgamma += np.einsum("i,ij->j", r, gxcb)
        dbeta += np.add.reduce(gb, axis=0)
        c1 = r * row_dot(gxcb, gamma) / d + drstd[sl] * r / d  # (rows,)
        c2 = row_dot(gb, gamma) / d - dmean[sl] / (d * r)
        np.multiply(gb, gamma, out=out)
        xcb *= (r * c1)[:, None]
        out -= xcb
        out -= c2[:, None]
        out *= r[:, None]
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- CUDA bodies
def _bn_dims(x):
    return tuple(np.int32(v) for v in x.shape)


def batch_norm_stats_cuda(x):
    cupy = module_of(x)
    (x,) = contiguous_inputs("F.batch_norm", x)
    c = x.shape[1]
    mean, var = cupy.empty(c, x.dtype), cupy.empty(c, x.dtype)
    if c:
        launch(BATCH_NORM_KERNELS.get(f"batch_norm_stats<{type_name(x.dtype)}>"), (c,),
               (BN_BLOCK,), (x, mean, var, *_bn_dims(x)))
    return mean, var


def batch_norm_apply_cuda(x, scale, shift=None):
    cupy = module_of(x)
    if shift is None:
        shift = cupy.zeros_like(scale)
    x, scale, shift = contiguous_inputs("F.batch_norm", x, scale, shift, dtype=x.dtype)
    y = cupy.empty_like(x)
    if x.size:
        launch(BATCH_NORM_KERNELS.get(f"batch_norm_apply<{type_name(x.dtype)}>"),
               grid_1d(x.size), (DEFAULT_BLOCK,), (x, scale, shift, y, *_bn_dims(x)))
    return y


def batch_norm_backward_reduce_cuda(g, x, mean):
    cupy = module_of(x)
    g, x, mean = contiguous_inputs("F.batch_norm backward", g, x, mean, dtype=x.dtype)
    c = x.shape[1]
    sum_g, sum_gd = cupy.empty(c, x.dtype), cupy.empty(c, x.dtype)
    if c:
        launch(BATCH_NORM_KERNELS.get(f"batch_norm_backward_reduce<{type_name(x.dtype)}>"),
               (c,), (BN_BLOCK,), (g, x, mean, sum_g, sum_gd, *_bn_dims(x)))
    return sum_g, sum_gd


def batch_norm_backward_apply_cuda(g, x, mean, k1, k2, k3):
    cupy = module_of(x)
    g, x, mean, k1, k2, k3 = contiguous_inputs("F.batch_norm backward", g, x, mean, k1, k2, k3,
                                               dtype=x.dtype)
    dx = cupy.empty_like(x)
    if x.size:
        launch(BATCH_NORM_KERNELS.get(f"batch_norm_backward_apply<{type_name(x.dtype)}>"),
               grid_1d(x.size), (DEFAULT_BLOCK,), (g, x, mean, k1, k2, k3, dx, *_bn_dims(x)))
    return dx


def layer_norm_cuda(x, gamma, beta, eps: float):
    cupy = module_of(x)
    x, gamma, beta = contiguous_inputs("F.layer_norm", x, gamma, beta, dtype=x.dtype)
    m, d = x.shape
    y = cupy.empty_like(x)
    mean, rstd = cupy.empty(m, x.dtype), cupy.empty(m, x.dtype)
    if m and d:
        launch(LAYER_NORM_KERNELS.get(f"layer_norm_forward<{type_name(x.dtype)}>"), (m,),
               (LN_BLOCK,), (x, gamma, beta, y, mean, rstd, np.int32(m), np.int32(d),
                             x.dtype.type(eps)))
    return y, mean, rstd


def layer_norm_backward_cuda(g, x, mean, rstd, gamma, dmean, drstd):
    cupy = module_of(x)
    g, x, mean, rstd, gamma, dmean, drstd = contiguous_inputs(
        "F.layer_norm backward", g, x, mean, rstd, gamma, dmean, drstd, dtype=x.dtype)
    m, d = x.shape
    dx = cupy.empty_like(x)
    dgamma, dbeta = cupy.zeros(d, x.dtype), cupy.zeros(d, x.dtype)
    t = type_name(x.dtype)
    dims = (np.int32(m), np.int32(d))
    if m and d:
        launch(LAYER_NORM_KERNELS.get(f"layer_norm_backward<{t}>"), (m,), (LN_BLOCK,),
               (g, x, mean, rstd, gamma, dmean, drstd, dx, *dims))
        launch(LAYER_NORM_KERNELS.get(f"layer_norm_backward_params<{t}>"),
               ((d + LN_PARAM_COLS - 1) // LN_PARAM_COLS,), (256,),
               (g, x, mean, rstd, dgamma, dbeta, *dims))
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- dispatch
def _on_cuda(x) -> bool:
    return device_of(x) == "cuda"


def batch_norm_stats_raw(x):
    """x (N, C, L) -> (mean, biased var) (C,) on x's device."""
    return (batch_norm_stats_cuda if _on_cuda(x) else batch_norm_stats_twin)(x)


def batch_norm_apply_raw(x, scale, shift=None):
    """x (N, C, L) -> x * scale[c] (+ shift[c])."""
    return (batch_norm_apply_cuda if _on_cuda(x) else batch_norm_apply_twin)(x, scale, shift)


def batch_norm_backward_reduce_raw(g, x, mean):
    """-> (sum_g, sum_gd) (C,)."""
    body = batch_norm_backward_reduce_cuda if _on_cuda(x) else batch_norm_backward_reduce_twin
    return body(g, x, mean)


def batch_norm_backward_apply_raw(g, x, mean, k1, k2, k3):
    """-> dx (N, C, L) = (k1*g + k2*(x - mean)) + k3 per channel."""
    body = batch_norm_backward_apply_cuda if _on_cuda(x) else batch_norm_backward_apply_twin
    return body(g, x, mean, k1, k2, k3)


def layer_norm_raw(x, gamma, beta, eps: float):
    """x (M, D) -> (y, mean (M,), rstd (M,))."""
    return (layer_norm_cuda if _on_cuda(x) else layer_norm_twin)(x, gamma, beta, eps)


def layer_norm_backward_raw(g, x, mean, rstd, gamma, dmean, drstd):
    """-> (dx (M, D), dgamma (D,), dbeta (D,))."""
    body = layer_norm_backward_cuda if _on_cuda(x) else layer_norm_backward_twin
    return body(g, x, mean, rstd, gamma, dmean, drstd)
