"""The two bodies of the convolution primitives: im2col/col2im on CUDA, and the dispatch to
the NumPy bodies (``_conv_cpu.py``).

The primitives, their vjps and the argument checks are in :mod:`gpudl.functional.conv`
(geometry in ``conv_checks.py``); version 2 of the CUDA products (implicit GEMM) is in
``_conv_igemm_kernels.py``, chosen per product by ``GPUDL_CONV_IMPL``.

Every convolution product is ``unroll (im2col) -> GEMM -> fold``, with ``xp.matmul`` (BLAS
on the CPU, cuBLAS on the GPU) for the GEMMs. The layouts differ by device:

* CUDA: ``conv2d_im2col`` / ``conv2d_col2im`` in ``kernels/conv2d.cu`` on the matrix
  ``cols (C*kH*kW, N*Ho*Wo)``: one large GEMM per group, the batch in its columns;
* CPU (``_conv_cpu.py``): per-sample columns (unrolled along W only for vertical stride
  1, im2col's ``(N, C*kH*kW, Ho*Wo)`` otherwise) written without a padded copy, batched
  GEMMs whose outputs are NCHW as they stand, the forward's columns kept for
  backward-weight, backward-data as a conv of dy (stride 1) or col2im by strided-slice adds.

:func:`im2col_twin` / :func:`col2im_twin` are the NumPy twins of the two CUDA kernels (the
CPU unroll/fold, re-laid out as ``(C*kH*kW, N*Ho*Wo)``): the kernels' tests compare them
entry for entry. Geometry arguments are normalised tuples: ``stride (sH, sW)``,
``padding (top, bottom, left, right)``, ``dilation (dH, dW)``.

Example:
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> im2col(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (2, 2))[:, 0].tolist()
    [0.0, 1.0, 4.0, 5.0]
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.cuda import (
    DEFAULT_BLOCK,
    INT32_MAX,
    KernelSource,
    contiguous_inputs,
    grid_1d,
    launch,
    type_name,
)
from gpudl.functional import _conv_cpu as cpu  # the NumPy bodies
from gpudl.functional import _conv_igemm_kernels as igemm  # version 2, GPUDL_CONV_IMPL

CONV_KERNELS = KernelSource(
    "conv2d.cu",
    [f"conv2d_{k}<{t}>" for k in ("im2col", "col2im") for t in ("float", "double")],
)
# At most this many cols elements per batch chunk (512 MiB in float32): bounds the
# temporary's memory and keeps every kernel argument under int32 indexing.
COLS_BUDGET = 1 << 27


def out_size(n: int, k: int, s: int, p_total: int, d: int) -> int:
    """``floor((n + p_total - d*(k-1) - 1) / s) + 1`` (may be < 1: callers check)."""
    return (n + p_total - d * (k - 1) - 1) // s + 1


def batch_chunks(n: int, per_sample_cols: int, per_sample_io: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` so a chunk's cols and its input/output slices fit the budgets."""
    per = max(per_sample_cols, 1)
    m = max(1, min(COLS_BUDGET // per, INT32_MAX // per, INT32_MAX // max(per_sample_io, 1)))
    return [(i, min(i + m, n)) for i in range(0, n, m)]


def conv_chunks(x_shape, w_shape, out_hw) -> list[tuple[int, int]]:
    """:func:`batch_chunks` for a conv2d of x (N, C, H, W) and w (O, C/G, kH, kW) with
    output size ``out_hw``, as the CUDA version lays out its cols."""
    n, c, h, w = x_shape
    o, _, kh, kw = w_shape
    ho, wo = out_hw
    return batch_chunks(n, c * kh * kw * ho * wo, max(c * h * w, o * ho * wo))


# ----------------------------------------------------------------------------- NumPy twins
def im2col_twin(x, k_hw, stride, padding, dilation, out_hw):
    """NumPy twin of ``conv2d_im2col``: x (N, C, H, W) -> cols (C*kH*kW, N*Ho*Wo)."""
    cols = cpu.im2col_cpu(x, k_hw, stride, padding, dilation, out_hw)  # (N, K, L)
    return np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(cols.shape[1], -1)


def col2im_twin(dcols, x_shape, k_hw, stride, padding, dilation, out_hw):
    """NumPy twin of ``conv2d_col2im`` (the adjoint of im2col): dcols (C*kH*kW, N*Ho*Wo)
    -> dx (N, C, H, W), each pixel's terms summed in the kernel's (kh, kw) order."""
    n = x_shape[0]
    per_sample = dcols.reshape(dcols.shape[0], n, -1).transpose(1, 0, 2)  # (N, K, L) view
    return cpu.col2im_cpu(per_sample, x_shape, k_hw, stride, padding, dilation, out_hw)


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
        launch(CONV_KERNELS.get(f"conv2d_im2col<{t}>"), grid_1d(cols.size), (DEFAULT_BLOCK,),
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
        launch(CONV_KERNELS.get(f"conv2d_col2im<{t}>"), grid_1d(dx.size), (DEFAULT_BLOCK,),
               (dcols, dx, *_geometry_args(n, c, h, w, out_hw, k_hw, stride, padding, dilation)))
    return dx


# ----------------------------------------------------------------------------- dispatch
def im2col(x, k_hw, stride, padding, dilation, out_hw):
    """x (N, C, H, W) -> cols (C*kH*kW, N*Ho*Wo) on x's device (the CUDA layout)."""
    if cpu.is_pointwise(k_hw, stride, padding):
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w).transpose(1, 0, 2).reshape(c, n * h * w)
    if device_of(x) == "cuda":
        return im2col_cuda(x, k_hw, stride, padding, dilation, out_hw)
    return im2col_twin(x, k_hw, stride, padding, dilation, out_hw)


def col2im(dcols, x_shape, k_hw, stride, padding, dilation, out_hw):
    """dcols (C*kH*kW, N*Ho*Wo) -> dx (N, C, H, W), the adjoint of :func:`im2col`."""
    if cpu.is_pointwise(k_hw, stride, padding):
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
def conv2d_forward_raw(x, w, *, stride, padding, dilation, groups, keep_columns=False):
    """y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/G, kH, kW)); no bias.

    ``keep_columns`` (CPU): keep the columns for backward-weight (``_conv_cpu.SAVED``,
    looked up by the returned y) when memory allows.
    """
    # -- version 2 selector (_conv_igemm_kernels.py): CUDA only, GPUDL_CONV_IMPL decides.
    if device_of(x) == "cuda" and igemm.use_igemm(
            "forward", x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
            groups=groups):
        return igemm.conv2d_forward_igemm(x, w, stride=stride, padding=padding,
                                          dilation=dilation, groups=groups)
    if device_of(x) != "cuda":
        return cpu.conv2d_forward_cpu(x, w, stride=stride, padding=padding, dilation=dilation,
                                      groups=groups, chunker=batch_chunks, keep=keep_columns)
    xp = module_of(x)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = out_size(h, kh, stride[0], padding[0] + padding[1], dilation[0])
    wo = out_size(wd, kw, stride[1], padding[2] + padding[3], dilation[1])
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    wm = w.reshape(groups, o // groups, cg * kh * kw)  # (G, Og, K)
    y = xp.empty((n, o, ho, wo), dtype=x.dtype)
    for n0, n1 in conv_chunks(x.shape, w.shape, (ho, wo)):
        cols = im2col(x[n0:n1], *geo)  # (C*kH*kW, m*L)
        ym = xp.matmul(wm, cols.reshape(groups, cg * kh * kw, -1))  # (G, Og, m*L)
        y[n0:n1] = ym.reshape(o, n1 - n0, ho, wo).transpose(1, 0, 2, 3)
    return y


def conv2d_backward_data_raw(gy, w, *, x_hw, stride, padding, dilation, groups):
    """dx (N, C, H, W) from gy (N, O, Ho, Wo) and w: the adjoint of conv2d in x."""
    # -- version 2 selector (_conv_igemm_kernels.py): CUDA only, GPUDL_CONV_IMPL decides.
    if device_of(gy) == "cuda" and igemm.use_igemm(
            "backward_data", (gy.shape[0], w.shape[1] * groups, *x_hw), w.shape, stride=stride,
            padding=padding, dilation=dilation, groups=groups):
        return igemm.conv2d_backward_data_igemm(gy, w, x_hw=x_hw, stride=stride,
                                                padding=padding, dilation=dilation,
                                                groups=groups)
    if device_of(gy) != "cuda":
        return cpu.conv2d_backward_data_cpu(gy, w, x_hw=x_hw, stride=stride, padding=padding,
                                            dilation=dilation, groups=groups,
                                            chunker=batch_chunks)
    xp = module_of(gy)
    n, o, ho, wo = gy.shape
    _, cg, kh, kw = w.shape
    c, (h, wd) = cg * groups, x_hw
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    wt = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)  # (G, K, Og)
    dx = xp.empty((n, c, h, wd), dtype=gy.dtype)
    for n0, n1 in conv_chunks((n, c, h, wd), w.shape, (ho, wo)):
        m = n1 - n0
        dcols = xp.matmul(wt, _grouped(gy[n0:n1], groups, m))  # (G, K, m*L)
        dx[n0:n1] = col2im(dcols.reshape(c * kh * kw, -1), (m, c, h, wd), *geo)
    return dx


def conv2d_backward_weight_raw(x, gy, *, k_hw, stride, padding, dilation, groups, cols=None):
    """dw (O, C/G, kH, kW) from x (N, C, H, W) and gy (N, O, Ho, Wo): adjoint in w.

    ``cols`` (CPU): the forward's columns of x, when it kept them (else recomputed); consumed
    (they go back to ``_conv_saved.POOL``).
    """
    # -- version 2 selector (_conv_igemm_kernels.py): CUDA only, GPUDL_CONV_IMPL decides.
    if device_of(x) == "cuda" and igemm.use_igemm(
            "backward_weight", x.shape, (gy.shape[1], x.shape[1] // groups, *k_hw),
            stride=stride, padding=padding, dilation=dilation, groups=groups):
        return igemm.conv2d_backward_weight_igemm(x, gy, k_hw=k_hw, stride=stride,
                                                  padding=padding, dilation=dilation,
                                                  groups=groups)
    if device_of(x) != "cuda":
        return cpu.conv2d_backward_weight_cpu(x, gy, k_hw=k_hw, stride=stride, padding=padding,
                                              dilation=dilation, groups=groups,
                                              chunker=batch_chunks, cols=cols)
    xp = module_of(x)
    n, c, h, wd = x.shape
    _, o, ho, wo = gy.shape
    kh, kw = k_hw
    cg = c // groups
    k = cg * kh * kw
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    dw = xp.zeros((groups, o // groups, k), dtype=x.dtype)
    for n0, n1 in conv_chunks(x.shape, (o, cg, kh, kw), (ho, wo)):
        cols = im2col(x[n0:n1], *geo).reshape(groups, k, -1)  # (G, K, m*L)
        dw += xp.matmul(_grouped(gy[n0:n1], groups, n1 - n0), cols.transpose(0, 2, 1))
    return dw.reshape(o, cg, kh, kw)
