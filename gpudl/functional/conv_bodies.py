"""The two bodies of the convolution primitives: im2col/col2im on CUDA and in NumPy.

Every convolution product here is ``unroll (im2col) -> GEMM -> fold``. The GEMMs are
``xp.matmul`` (BLAS on the CPU, cuBLAS on the GPU), one batched product over the groups.
Only the unrolling differs between devices:

* CUDA: ``conv2d_im2col`` / ``conv2d_col2im`` in ``kernels/conv2d.cu``;
* NumPy twin: ``as_strided`` windows of the padded input copied in one reshape (im2col),
  and a loop over the ``kH*kW`` kernel offsets adding strided slices (col2im).

Both use the same matrix layout, ``cols (C*kH*kW, N*Ho*Wo)``. Geometry arguments are
normalised tuples: ``stride (sH, sW)``, ``padding (top, bottom, left, right)``,
``dilation (dH, dW)``.

On the CPU the twin's products (``_*_cpu``, after the CUDA code) go further, because
there the GEMMs take most of the time and what surrounds them is memory traffic: a
3x-smaller unrolling for stride-1 rows, per-sample GEMMs straight into batch-major outputs,
the forward's unrolled x kept for backward-weight (:func:`keep_cols_for_backward`), reused
scratch buffers, and 1x1 convolutions as plain batched matmuls on x itself.

Example:
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> im2col(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (2, 2))[:, 0].tolist()
    [0.0, 1.0, 4.0, 5.0]
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.lib.stride_tricks import as_strided

from gpudl.backend import device_of, module_of
from gpudl.cuda import INT32_MAX, KernelSource, contiguous_inputs, launch, type_name
from gpudl.functional import conv_igemm  # version 2 (implicit GEMM), GPUDL_CONV_IMPL

CONV_KERNELS = KernelSource(
    "conv2d.cu",
    [f"conv2d_{k}<{t}>" for k in ("im2col", "col2im") for t in ("float", "double")],
)
_BLOCK = 256
_MAX_BLOCKS = 1 << 20  # grid-stride loops cover the rest
# At most this many cols elements per batch chunk (512 MiB in float32): bounds the
# temporary's memory and keeps every kernel argument under int32 indexing.
COLS_BUDGET = 1 << 27


def out_size(n: int, k: int, s: int, p_total: int, d: int) -> int:
    """``floor((n + p_total - d*(k-1) - 1) / s) + 1`` (may be < 1: callers check)."""
    return (n + p_total - d * (k - 1) - 1) // s + 1


def _blocks(total: int) -> tuple[int]:
    return (min((total + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS),)


def _is_pointwise(k_hw, stride, padding) -> bool:
    # A 1x1 kernel with stride 1 and no padding: cols is just x with N and C swapped.
    return tuple(k_hw) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)


def batch_chunks(n: int, per_sample_cols: int, per_sample_io: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` so a chunk's cols and its input/output slices fit the budgets."""
    per = max(per_sample_cols, 1)
    m = max(1, min(COLS_BUDGET // per, INT32_MAX // per, INT32_MAX // max(per_sample_io, 1)))
    return [(i, min(i + m, n)) for i in range(0, n, m)]


# ----------------------------------------------------------------------------- NumPy twin
def im2col_twin(x, k_hw, stride, padding, dilation, out_hw):
    """NumPy im2col: x (N, C, H, W) -> cols (C*kH*kW, N*Ho*Wo), zeros for padding."""
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = k_hw, stride, dilation, out_hw
    pt, pb, pl, pr = padding
    if any(padding):
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    s_n, s_c, s_h, s_w = x.strides
    # Every window lies inside x: the output-size formula guarantees it.
    view = as_strided(x, shape=(c, kh, kw, n, ho, wo),
                      strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw), writeable=False)
    return view.reshape(c * kh * kw, n * ho * wo)  # the one copy


def col2im_twin(dcols, x_shape, k_hw, stride, padding, dilation, out_hw):
    """NumPy col2im (adjoint of im2col): dcols (C*kH*kW, N*Ho*Wo) -> dx (N, C, H, W)."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = k_hw, stride, dilation, out_hw
    pt, pb, pl, pr = padding
    d = dcols.reshape(c, kh, kw, n, ho, wo)
    dxp = np.zeros((c, n, h + pt + pb, w + pl + pr), dtype=dcols.dtype)
    # Offsets in (kh, kw) order: the CUDA gather sums each pixel's terms in the same order.
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                j * dw:j * dw + sw * (wo - 1) + 1:sw] += d[:, i, j]
    return np.ascontiguousarray(dxp[:, :, pt:pt + h, pl:pl + w].transpose(1, 0, 2, 3))


# ----------------------------------------------------------------------------- CUDA body
def _geometry_args(n, c, h, w, out_hw, k_hw, stride, padding, dilation):
    return tuple(np.int32(v) for v in (n, c, h, w, *out_hw, *k_hw, *stride, padding[0],
                                       padding[2], *dilation))


def im2col_cuda(x, k_hw, stride, padding, dilation, out_hw):
    """CUDA im2col (kernels/conv2d.cu): same result as :func:`im2col_twin`."""
    cupy = module_of(x)
    t = type_name(x.dtype)
    (x,) = contiguous_inputs("conv2d im2col", x)
    n, c, h, w = x.shape
    cols = cupy.empty((c * k_hw[0] * k_hw[1], n * out_hw[0] * out_hw[1]), dtype=x.dtype)
    if cols.size:
        launch(CONV_KERNELS.get(f"conv2d_im2col<{t}>"), _blocks(cols.size), (_BLOCK,),
               (x, cols, *_geometry_args(n, c, h, w, out_hw, k_hw, stride, padding, dilation)))
    return cols


def col2im_cuda(dcols, x_shape, k_hw, stride, padding, dilation, out_hw):
    """CUDA col2im (gather form, deterministic): same result as :func:`col2im_twin`."""
    cupy = module_of(dcols)
    t = type_name(dcols.dtype)
    (dcols,) = contiguous_inputs("conv2d col2im", dcols)
    n, c, h, w = x_shape
    dx = cupy.empty((n, c, h, w), dtype=dcols.dtype)
    if dx.size:
        launch(CONV_KERNELS.get(f"conv2d_col2im<{t}>"), _blocks(dx.size), (_BLOCK,),
               (dcols, dx, *_geometry_args(n, c, h, w, out_hw, k_hw, stride, padding, dilation)))
    return dx


# ----------------------------------------------------------------------------- dispatch
def im2col(x, k_hw, stride, padding, dilation, out_hw):
    """x (N, C, H, W) -> cols (C*kH*kW, N*Ho*Wo) on x's device."""
    if _is_pointwise(k_hw, stride, padding):
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w).transpose(1, 0, 2).reshape(c, n * h * w)
    if device_of(x) == "cuda":
        return im2col_cuda(x, k_hw, stride, padding, dilation, out_hw)
    return im2col_twin(x, k_hw, stride, padding, dilation, out_hw)


def col2im(dcols, x_shape, k_hw, stride, padding, dilation, out_hw):
    """dcols (C*kH*kW, N*Ho*Wo) -> dx (N, C, H, W), the adjoint of :func:`im2col`."""
    if _is_pointwise(k_hw, stride, padding):
        n, c, h, w = x_shape
        xp = module_of(dcols)
        return xp.ascontiguousarray(dcols.reshape(c, n, h, w).transpose(1, 0, 2, 3))
    if device_of(dcols) == "cuda":
        return col2im_cuda(dcols, x_shape, k_hw, stride, padding, dilation, out_hw)
    return col2im_twin(dcols, x_shape, k_hw, stride, padding, dilation, out_hw)


def _grouped(a, groups: int, m: int):
    """a (m, O, Ho, Wo) -> (G, O/G, m*Ho*Wo): channels first, the GEMM's layout (a copy)."""
    o = a.shape[1]
    return a.reshape(m, o, -1).transpose(1, 0, 2).reshape(groups, o // groups, -1)


# ----------------------------------------------------------------------------- products
def conv2d_forward_raw(x, w, *, stride, padding, dilation, groups):
    """y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/G, kH, kW)); no bias."""
    # -- conv2d version 2 selector (conv_igemm.py): CUDA only, GPUDL_CONV_IMPL decides.
    if device_of(x) == "cuda" and conv_igemm.use_igemm(
            "forward", x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
            groups=groups):
        return conv_igemm.conv2d_forward_igemm(x, w, stride=stride, padding=padding,
                                               dilation=dilation, groups=groups)
    if device_of(x) == "cpu":
        return _forward_cpu(x, w, stride, padding, dilation, groups, keep=_KEEP_COLS.get())
    xp = module_of(x)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = out_size(h, kh, stride[0], padding[0] + padding[1], dilation[0])
    wo = out_size(wd, kw, stride[1], padding[2] + padding[3], dilation[1])
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    wm = w.reshape(groups, o // groups, cg * kh * kw)  # (G, Og, K)
    y = xp.empty((n, o, ho, wo), dtype=x.dtype)
    for n0, n1 in batch_chunks(n, c * kh * kw * ho * wo, max(c * h * wd, o * ho * wo)):
        cols = im2col(x[n0:n1], *geo)  # (C*kH*kW, m*L)
        ym = xp.matmul(wm, cols.reshape(groups, cg * kh * kw, -1))  # (G, Og, m*L)
        y[n0:n1] = ym.reshape(o, n1 - n0, ho, wo).transpose(1, 0, 2, 3)
    return y


def conv2d_backward_data_raw(gy, w, *, x_hw, stride, padding, dilation, groups):
    """dx (N, C, H, W) from gy (N, O, Ho, Wo) and w: the adjoint of conv2d in x."""
    # -- conv2d version 2 selector (conv_igemm.py): CUDA only, GPUDL_CONV_IMPL decides.
    if device_of(gy) == "cuda" and conv_igemm.use_igemm(
            "backward_data", (gy.shape[0], w.shape[1] * groups, *x_hw), w.shape, stride=stride,
            padding=padding, dilation=dilation, groups=groups):
        return conv_igemm.conv2d_backward_data_igemm(gy, w, x_hw=x_hw, stride=stride,
                                                     padding=padding, dilation=dilation,
                                                     groups=groups)
    if device_of(gy) == "cpu":
        fast = _backward_data_cpu(gy, w, x_hw, stride, padding, dilation, groups)
        if fast is not None:
            return fast
    xp = module_of(gy)
    n, o, ho, wo = gy.shape
    _, cg, kh, kw = w.shape
    c, (h, wd) = cg * groups, x_hw
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    wt = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)  # (G, K, Og)
    dx = xp.empty((n, c, h, wd), dtype=gy.dtype)
    for n0, n1 in batch_chunks(n, c * kh * kw * ho * wo, max(c * h * wd, o * ho * wo)):
        m = n1 - n0
        dcols = xp.matmul(wt, _grouped(gy[n0:n1], groups, m))  # (G, K, m*L)
        dx[n0:n1] = col2im(dcols.reshape(c * kh * kw, -1), (m, c, h, wd), *geo)
    return dx


def _backward_data_as_conv(gy, w, x_hw, stride, padding, dilation, groups):
    """CPU twin only: for stride 1, dx is a forward conv of gy with the flipped, transposed
    weights and padding d(k-1)-p, which replaces the col2im scatter passes by the forward's
    unrolling. Measured on 2 cores, batch 4 (col2im -> conv form): 64@56x56 12.1 -> 9.2 ms,
    128@28x28 9.7 -> 7.4 ms, 256@14x14 8.5 -> 7.1 ms; it loses when C < O (col2im is then
    the cheaper side: 3->64@32x32 0.5 -> 1.0 ms) and on small maps (512@7x7 8.2 -> 9.5 ms),
    hence the rule below. None when it does not apply."""
    o, cg, kh, kw = w.shape
    if tuple(stride) != (1, 1) or cg * groups < o or x_hw[0] * x_hw[1] < AS_CONV_MIN_HW:
        return None
    pt, pb, pl, pr = padding
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    pad = (eh - pt, eh - pb, ew - pl, ew - pr)
    if min(pad) < 0:
        return None
    og = o // groups
    # (O, Cg, kH, kW) -> (G, Og, Cg, ...) -> (G, Cg, Og, ...) -> (C, Og, kH, kW), flipped.
    wt = w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    wt = np.ascontiguousarray(wt.reshape(groups * cg, og, kh, kw)[:, :, ::-1, ::-1])
    # Output size: (Ho + pad - d(k-1)) = H for stride 1, so dx has x's shape.
    return _forward_cpu(gy, wt, (1, 1), pad, dilation, groups, keep=False)


def conv2d_backward_weight_raw(x, gy, *, k_hw, stride, padding, dilation, groups):
    """dw (O, C/G, kH, kW) from x (N, C, H, W) and gy (N, O, Ho, Wo): adjoint in w."""
    if device_of(x) == "cpu":
        return _backward_weight_cpu(x, gy, k_hw, stride, padding, dilation, groups)
    xp = module_of(x)
    n, c, h, wd = x.shape
    _, o, ho, wo = gy.shape
    kh, kw = k_hw
    cg = c // groups
    k = cg * kh * kw
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    dw = xp.zeros((groups, o // groups, k), dtype=x.dtype)
    for n0, n1 in batch_chunks(n, c * kh * kw * ho * wo, max(c * h * wd, o * ho * wo)):
        cols = im2col(x[n0:n1], *geo).reshape(groups, k, -1)  # (G, K, m*L)
        dw += xp.matmul(_grouped(gy[n0:n1], groups, n1 - n0), cols.transpose(0, 2, 1))
    return dw.reshape(o, cg, kh, kw)


# ----------------------------------------------------------------------------- CPU products
# The GEMMs take most of the time; what surrounds them is memory traffic, so:
# * Stride-1 rows with few output channels per group use the *rows* form instead of
#   im2col: ``rows (C*kW, N, Hp*Wo)`` unrolls only the kW column offsets, over every padded
#   row, so kernel row ``a`` reads the block starting at column ``a*dH*Wo`` as a plain BLAS
#   matrix and y is the sum of kH GEMMs with K = Cg*kW: 3x less copying for 3x3 kernels.
#   From ROWS_MAX_OG output channels per group on, the smaller-K GEMMs lose more than the
#   copy saves (2 cores, batch 4, fwd ms im2col -> rows: 64@56² 10.9 -> 7.8, 128@28² 6.9
#   -> 6.7, 256@14² 7.1 -> 8.5, 512@7² 7.2 -> 14.0).
# * From a per-sample Ho*Wo of PER_SAMPLE_MIN_L (rows) / COLS_PER_SAMPLE_MIN_L (im2col)
#   on, each sample is unrolled and multiplied at once, while its unrolled copy is still
#   in cache, straight into the batch-major output (no transpose copy): 128@28² fwd
#   7.2 -> 6.1 ms. Below, one GEMM spans the batch (GEMMs with few columns run slower).
# * The forward keeps its unrolled x for backward-weight (keep_cols_for_backward).
ROWS_MAX_OG = 128
ROWS_MIN_COLS = 1 << 16  # per-sample im2col size below which one GEMM's fewer calls win
PER_SAMPLE_MIN_L = 1024
COLS_PER_SAMPLE_MIN_L = 512
# Stride-1 backward-data as a forward conv (see _backward_data_as_conv) from this H*W on.
AS_CONV_MIN_HW = 128
# Bytes of unrolled inputs held for backward-weight at most (oldest dropped first).
KEEP_COLS_BUDGET = 1 << 28
_KEEP_COLS = contextvars.ContextVar("gpudl_conv_keep_cols", default=False)
_kept: dict[int, tuple] = {}  # id(x) -> (weakref to x, key, probe, unrolled x)


@contextmanager
def keep_cols_for_backward(enabled: bool = True) -> Iterator[None]:
    """CPU forwards run inside keep their unrolled x for a later backward-weight of that x.

    ``F.conv2d`` enables it when w is traced (its gradient will be asked for). The array is
    held until that backward-weight takes it, x is freed, or newer ones push it out of
    :data:`KEEP_COLS_BUDGET`.

    Example:
        >>> x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
        >>> with keep_cols_for_backward():
        ...     y = conv2d_forward_raw(x, w, stride=(1, 1), padding=(0,) * 4,
        ...                            dilation=(1, 1), groups=1)
        >>> len(_kept)
        1
    """
    token = _KEEP_COLS.set(enabled)
    try:
        yield
    finally:
        _KEEP_COLS.reset(token)


def clear_kept_cols() -> None:
    """Drop every kept unrolled input now (frees their memory).

    Example:
        >>> clear_kept_cols(); len(_kept)
        0
    """
    _kept.clear()


def _probe(x):
    # A few elements spread over x, compared at take time: catches x overwritten in place
    # between the forward and the backward (a new batch copied into the same buffer).
    return x.flat[::max(1, x.size // 16)]


def _keep(x, key, unrolled):
    if unrolled.nbytes > KEEP_COLS_BUDGET or not x.size:
        return
    _kept.pop(id(x), None)
    held = sum(e[3].nbytes for e in _kept.values())
    for old in list(_kept):  # insertion order: oldest first
        if held + unrolled.nbytes <= KEEP_COLS_BUDGET:
            break
        held -= _kept.pop(old)[3].nbytes

    def drop(ref, i=id(x)):  # x freed: its id may be reused, its entry is garbage
        if _kept.get(i, (None,))[0] is ref:
            del _kept[i]

    _kept[id(x)] = (weakref.ref(x, drop), key, _probe(x), unrolled)


def _take_kept(x, key):
    entry = _kept.pop(id(x), None)
    if (entry is None or entry[0]() is not x or entry[1] != key
            or not np.array_equal(entry[2], _probe(x), equal_nan=True)):
        return None
    return entry[3]


def _gemm_ready(a):
    """a, or a C-contiguous copy when its matrices are not BLAS-shaped (NumPy's matmul
    would otherwise copy them itself, or take its naive loop)."""
    s0, s1 = a.strides[-2:]
    if s1 == a.itemsize and s0 >= a.shape[-1] * a.itemsize and s0 % a.itemsize == 0:
        return a
    return np.ascontiguousarray(a)


class _Plan:
    """The CPU unrolling of one conv geometry: ``R`` rows per sample, ``P`` columns per
    sample (the output plane, or Hp*Wo for the rows form), and the column ``shifts`` at
    which each weight block (one per kernel row for the rows form, else one) reads."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups):
        n, c, h, wd = x_shape
        o, cg, self.kh, self.kw = w_shape
        self.ho = out_size(h, self.kh, stride[0], padding[0] + padding[1], dilation[0])
        self.wo = out_size(wd, self.kw, stride[1], padding[2] + padding[3], dilation[1])
        self.geo, self.groups, self.og, self.ell = (stride, padding, dilation), groups, \
            o // groups, self.ho * self.wo
        self.rows = (stride[0] == 1 and o // groups < ROWS_MAX_OG
                     and c * self.kh * self.kw * self.ell >= ROWS_MIN_COLS)
        hp = h + padding[0] + padding[1]
        if self.rows:
            self.r, self.p = c * self.kw, hp * self.wo
            self.shifts = [a * dilation[0] * self.wo for a in range(self.kh)]
        else:
            self.r, self.p, self.shifts = c * self.kh * self.kw, self.ell, [0]
        self.per_sample = self.ell >= (PER_SAMPLE_MIN_L if self.rows else COLS_PER_SAMPLE_MIN_L)
        self.chunks = batch_chunks(n, self.r * self.p, max(c * h * wd, o * self.ell))

    def windows(self, x):
        """x (m, C, H, W) -> strided view (R..., m, P...) of its padded windows."""
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = self.geo
        if pt or pb or pl or pr:
            x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        m, c, hp, _ = x.shape
        s_n, s_c, s_h, s_w = x.strides
        if self.rows:
            return as_strided(x, (c, self.kw, m, hp, self.wo),
                              (s_c, s_w * dw, s_n, s_h, s_w * sw), writeable=False)
        return as_strided(x, (c, self.kh, self.kw, m, self.ho, self.wo),
                          (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw), writeable=False)

    def fill(self, buf, view, i=None, into=0):
        """Copy sample i of ``view`` (all samples when None) into buf (R, m, P), at sample
        ``into``; returns buf as (G, R/G, m*P)."""
        if i is None:
            np.copyto(buf.reshape(view.shape), view)
        else:
            np.copyto(buf[:, into].reshape(view.shape[:-3] + view.shape[-2:]),
                      view[..., i, :, :])
        return buf.reshape(self.groups, self.r // self.groups, -1)

    def weights(self, w):
        """The weight blocks matching :meth:`windows`: each (G, Og, R/G)."""
        g, og = self.groups, self.og
        if self.rows:
            return [_gemm_ready(w[:, :, a].reshape(g, og, -1)) for a in range(self.kh)]
        return [_gemm_ready(w.reshape(g, og, -1))]

    def gemms(self, wb, src, width, out):
        """out (G, Og, width) = sum over blocks b of wb[b] @ src[..., shifts[b]:][:width]."""
        np.matmul(wb[0], src[..., :width], out=out)
        if len(wb) > 1:
            tmp = np.empty_like(out)
            for b, s in zip(wb[1:], self.shifts[1:], strict=True):
                out += np.matmul(b, src[..., s:s + width], out=tmp)
        return out


def _forward_cpu(x, w, stride, padding, dilation, groups, keep):
    """conv2d_forward_raw on NumPy arrays; ``keep``: hold the unrolled x for
    :func:`_backward_weight_cpu`."""
    n, c, h, wd = x.shape
    o, cg = w.shape[:2]
    if _is_pointwise(w.shape[2:], stride, padding):  # y[i] = W @ x[i]: x is the cols
        x4 = _gemm_ready(x.reshape(n, groups, cg, h * wd))
        return np.matmul(_gemm_ready(w.reshape(groups, o // groups, cg)), x4).reshape(
            n, o, h, wd)
    plan = _Plan(x.shape, w.shape, stride, padding, dilation, groups)
    g, og, ell, pp = groups, plan.og, plan.ell, plan.p
    keep = keep and len(plan.chunks) == 1 and n > 0
    wb = plan.weights(w)
    y = np.empty((n, o, plan.ho, plan.wo), dtype=x.dtype)
    y4 = y.reshape(n, g, og, ell)
    for n0, n1 in plan.chunks:
        m = n1 - n0
        view = plan.windows(x[n0:n1])
        if plan.per_sample:  # unroll a sample, multiply it while it is in cache
            buf = np.empty((plan.r, m if keep else 1, pp), x.dtype)
            for i in range(m):
                src = plan.fill(buf, view, i, into=i if keep else 0)
                src = src.reshape(g, -1, buf.shape[1], pp)[:, :, i if keep else 0]
                plan.gemms(wb, src, ell, out=y4[n0 + i])
        else:  # samples side by side: output row r of sample i is column i*P + r*Wo
            buf = np.empty((plan.r, m, pp), x.dtype)
            span = (m - 1) * pp + ell
            acc = plan.gemms(wb, plan.fill(buf, view), span, out=np.empty((g, og, span), x.dtype))
            st = acc.strides
            y4[n0:n1] = as_strided(acc, (g, og, m, ell), (st[0], st[1], pp * st[2], st[2]),
                                   writeable=False).transpose(2, 0, 1, 3)
    if keep:
        _keep(x, _kept_key(x, w.shape, stride, padding, dilation, groups),
              buf.reshape(g, plan.r // g, n * pp))
    return y


def _kept_key(x, w_shape, stride, padding, dilation, groups):
    return (x.shape, x.strides, x.dtype, x.__array_interface__["data"][0], w_shape[1:],
            tuple(stride), tuple(padding), tuple(dilation), groups)


def _backward_data_cpu(gy, w, x_hw, stride, padding, dilation, groups):
    """dx for 1x1 kernels (a batched matmul) and where the conv form wins; else None."""
    o, cg, kh, kw = w.shape
    if not _is_pointwise((kh, kw), stride, padding):
        return _backward_data_as_conv(gy, w, x_hw, stride, padding, dilation, groups)
    n = gy.shape[0]
    wt = _gemm_ready(w.reshape(groups, o // groups, cg).transpose(0, 2, 1))  # (G, Cg, Og)
    gy4 = _gemm_ready(gy.reshape(n, groups, o // groups, x_hw[0] * x_hw[1]))
    return np.matmul(wt, gy4).reshape(n, cg * groups, *x_hw)


def _backward_weight_cpu(x, gy, k_hw, stride, padding, dilation, groups):
    """conv2d_backward_weight_raw on NumPy arrays, taking the forward's unrolled x if kept.
    Computed transposed, unrolled x @ gy.T, which runs faster than gy @ unrolled.T."""
    n, c, h, wd = x.shape
    o = gy.shape[1]
    cg, (kh, kw) = c // groups, k_hw
    gy4 = gy.reshape(n, groups, o // groups, gy.shape[2] * gy.shape[3])  # (N, G, Og, L)
    if _is_pointwise(k_hw, stride, padding):  # sum over samples of x[i] @ gy[i].T
        x4 = _gemm_ready(x.reshape(n, groups, cg, h * wd))
        gyt = _gemm_ready(gy4).transpose(0, 1, 3, 2)
        dwt = np.zeros((groups, cg, o // groups), dtype=x.dtype)
        for i in range(n):
            dwt += np.matmul(x4[i], gyt[i])
        return dwt.transpose(0, 2, 1).reshape(o, cg, 1, 1)
    w_shape = (o, cg, kh, kw)
    plan = _Plan(x.shape, w_shape, stride, padding, dilation, groups)
    g, og, ell, pp = groups, plan.og, plan.ell, plan.p
    kept = _take_kept(x, _kept_key(x, w_shape, stride, padding, dilation, groups))
    dwt = np.zeros((len(plan.shifts), g, plan.r // g, og), dtype=x.dtype)  # per block
    for n0, n1 in [(0, n)] if kept is not None else plan.chunks:
        m = n1 - n0
        view = plan.windows(x[n0:n1]) if kept is None else None
        if plan.per_sample:
            gyt = _gemm_ready(gy4[n0:n1]).transpose(0, 1, 3, 2)  # (m, G, L, Og)
            buf = np.empty((plan.r, 1, pp), x.dtype) if kept is None else None
            for i in range(m):
                src = (kept.reshape(g, -1, m, pp)[:, :, i] if kept is not None
                       else plan.fill(buf, view, i))  # (G, R/G, P)
                for a, s in enumerate(plan.shifts):
                    dwt[a] += np.matmul(src[..., s:s + ell], gyt[i])
        else:  # gy laid out like the forward's side-by-side output, zeros between samples
            src = kept if kept is not None else plan.fill(np.empty((plan.r, m, pp), x.dtype),
                                                          view)  # (G, R/G, m*P)
            span = (m - 1) * pp + ell
            gyw = np.zeros((g, og, m, pp), x.dtype)
            gyw[..., :ell] = gy4[n0:n1].transpose(1, 2, 0, 3)
            gyt = gyw.reshape(g, og, m * pp)[:, :, :span].transpose(0, 2, 1)  # (G, span, Og)
            for a, s in enumerate(plan.shifts):
                dwt[a] += np.matmul(src[..., s:s + span], gyt)
    if plan.rows:  # (kH, G, Cg, kW, Og) -> (G, Og, Cg, kH, kW)
        return dwt.reshape(kh, g, cg, kw, og).transpose(1, 4, 2, 0, 3).reshape(w_shape)
    return dwt[0].transpose(0, 2, 1).reshape(w_shape)  # (G, Cg*kH*kW, Og)
