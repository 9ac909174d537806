"""The two bodies of the pooling primitives: kernels/pool2d.cu on CUDA, NumPy twins.

The primitives, their vjps and argument checks are in :mod:`gpudl.functional.pooling`.

Geometry arguments are normalised pairs: ``kernel (kH, kW)``, ``stride (sH, sW)``,
``padding (pH, pW)`` (symmetric, at most half the kernel, as torch). Max pooling saves
the arg-max of each window as an int32 index ``h*W + w`` into its (H, W) plane.

Example:
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> y, idx = max_pool2d_twin(x, (2, 2), (2, 2), (0, 0))
    >>> y[0, 0].tolist(), idx[0, 0].tolist()
    ([[5.0, 7.0], [13.0, 15.0]], [[5, 7], [13, 15]])
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from gpudl.backend import device_of, module_of
from gpudl.cuda import DEFAULT_BLOCK, KernelSource, contiguous_inputs, grid_1d, launch, type_name

POOL_KERNELS = KernelSource(
    "pool2d.cu",
    [f"{k}_pool2d_{d}<{t}>" for k in ("max", "avg") for d in ("forward", "backward")
     for t in ("float", "double")],
)


def pool_output_hw(h: int, w: int, kernel, stride, padding) -> tuple[int, int]:
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def _windows(xp_, kernel, stride, out_hw):
    """(N, C, Ho, Wo, kH*kW) windows of a padded (N, C, Hp, Wp) array (a copy)."""
    n, c = xp_.shape[:2]
    s_n, s_c, s_h, s_w = xp_.strides
    view = as_strided(xp_, shape=(n, c, *out_hw, *kernel),
                      strides=(s_n, s_c, s_h * stride[0], s_w * stride[1], s_h, s_w),
                      writeable=False)
    return view.reshape(n, c, *out_hw, kernel[0] * kernel[1])


def _pad(x, padding, value):
    ph, pw = padding
    if not (ph or pw):
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def avg_divisor(x_hw, kernel, stride, padding, out_hw, count_include_pad: bool, dtype):
    """(Ho, Wo) divisors, torch's rule (no ceil_mode): kH*kW, or the in-bounds count."""
    per_axis = []
    for n, k, s, p, no in zip(x_hw, kernel, stride, padding, out_hw, strict=True):
        start = np.arange(no) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        per_axis.append(end - start)
    return np.multiply.outer(*per_axis).astype(dtype)


def _covered(n_in: int, n_out: int, offset: int, stride: int, pad: int) -> tuple[int, int]:
    """The outputs ``[o0, o1)`` whose window cell ``offset`` lies inside the input
    (``0 <= o*stride - pad + offset < n_in``): a window cell in the padding is skipped."""
    lo = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    hi = min(n_out, (n_in - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi)


def _offsets(x, kernel, stride, padding, out_hw):
    """For each window cell (i, j) in the kernels' scan order: ``(i, j, out, view)``, where
    ``view`` holds the input value at cell (i, j) of every window listed by the output
    slices ``out``; windows whose cell (i, j) is padding are left out. No padded copy.

    With overlapping columns (kW > sW) the input is first split into its sW column phases
    (one pass), so every view has unit stride along W: each phase serves several cells.
    """
    w, (kw, sw) = x.shape[3], (kernel[1], stride[1])
    split = sw > 1 and kw > sw
    phases = [np.ascontiguousarray(x[..., q::sw]) for q in range(min(sw, w))] if split else None
    for i, j, out, rows, cols, q, q_cols in _cells(x.shape[2:], kernel, stride, padding, out_hw):
        yield i, j, out, (phases[q][:, :, rows, q_cols] if split else x[:, :, rows, cols])


def _cells(x_hw, kernel, stride, padding, out_hw):
    """Each window cell (i, j) in scan order that lies in the input for some window, as
    ``(i, j, out, rows, cols, q, q_cols)``: the output slices ``out``, the strided input
    slices ``rows``/``cols`` holding that cell of those windows, and the same columns as
    unit-stride ``q_cols`` of column phase ``q`` (``x[..., q::sW]``)."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = x_hw, kernel, stride, padding
    for i in range(kh):
        oh0, oh1 = _covered(h, out_hw[0], i, sh, ph)
        h0 = oh0 * sh - ph + i
        rows = slice(h0, h0 + sh * (oh1 - oh0 - 1) + 1, sh)
        for j in range(kw):
            ow0, ow1 = _covered(w, out_hw[1], j, sw, pw)
            if oh1 == oh0 or ow1 == ow0:
                continue
            w0 = ow0 * sw - pw + j
            yield (i, j, (Ellipsis, slice(oh0, oh1), slice(ow0, ow1)), rows,
                   slice(w0, w0 + sw * (ow1 - ow0 - 1) + 1, sw), w0 % sw,
                   slice(w0 // sw, w0 // sw + ow1 - ow0))


def _window_origins(x_hw, stride, padding, out_hw):
    """(Ho, Wo) int32 flat index ``h*W + w`` of each window's cell (0, 0) (may be < 0)."""
    oh = np.arange(out_hw[0]) * stride[0] - padding[0]
    ow = np.arange(out_hw[1]) * stride[1] - padding[1]
    return (oh[:, None] * x_hw[1] + ow[None, :]).astype(np.int32)


# ----------------------------------------------------------------------------- NumPy twins
def max_pool2d_twin(x, kernel, stride, padding):
    """NumPy max pool: x (N, C, H, W) -> (y (N, C, Ho, Wo), argmax int32 (N, C, Ho, Wo)).

    Per window cell k = i*kW + j, over strided views, in the kernel's scan order: a strict
    ``>`` against the best so far (the first maximum wins), ``maximum`` for the value and
    ``cell = max(cell, taken * k)`` for the index (k grows along the scan, so the last
    cell taken is the largest; a masked copy costs ~40x more). A window whose cells are
    all -inf keeps its first in-bounds cell, as the kernel. NaN inputs (the first NaN
    wins) take the windowed path, :func:`_max_pool2d_windows`.
    """
    n, c, h, w = x.shape
    (kh, kw), out_hw = kernel, pool_output_hw(h, w, kernel, stride, padding)
    shape = (n, c, *out_hw)
    index_type = np.int8 if kh * kw < 128 else np.int32
    cells = _offsets(x, kernel, stride, padding, out_hw)
    if padding == (0, 0):  # cell (0, 0) is in every window: start from it
        best, cell = np.array(next(cells)[3], copy=True), np.zeros(shape, index_type)
    else:  # start at -inf and each window's first in-bounds cell
        best, cell = np.full(shape, -np.inf, dtype=x.dtype), np.empty(shape, index_type)
        first_h = np.maximum(0, padding[0] - np.arange(out_hw[0]) * stride[0])
        first_w = np.maximum(0, padding[1] - np.arange(out_hw[1]) * stride[1])
        cell[...] = first_h[:, None] * kw + first_w[None, :]
    taken, k_taken = np.empty(shape, bool), np.empty(shape, index_type)
    for i, j, out, view in cells:
        b, t, kt, ce = best[out], taken[out], k_taken[out], cell[out]
        np.greater(view, b, out=t)
        np.multiply(t, index_type(i * kw + j), out=kt)
        np.maximum(ce, kt, out=ce)
        np.maximum(b, view, out=b)
    if np.isnan(best).any():  # maximum propagated a NaN: the index needs NaN's rule
        return _max_pool2d_windows(x, kernel, stride, padding)
    cell_offset = (np.arange(kh)[:, None] * w + np.arange(kw)[None, :]).astype(np.int32)
    argmax = np.take(cell_offset.ravel(), cell)  # (N, C, Ho, Wo) int32: i*W + j
    argmax += _window_origins((h, w), stride, padding, out_hw)
    return best, argmax


def _max_pool2d_windows(x, kernel, stride, padding):
    """Max pool via a copy of every window and argmax (numpy.argmax: the first NaN wins)."""
    h, w = x.shape[2:]
    ho, wo = pool_output_hw(h, w, kernel, stride, padding)
    win = _windows(_pad(x, padding, -np.inf), kernel, stride, (ho, wo))
    a = win.argmax(axis=-1)  # the first maximum (first NaN), as the kernel's scan
    y = np.take_along_axis(win, a[..., None], axis=-1)[..., 0]
    base_h = (np.arange(ho) * stride[0] - padding[0])[:, None]  # (Ho, 1)
    base_w = (np.arange(wo) * stride[1] - padding[1])[None, :]  # (1, Wo)
    ih, iw = base_h + a // kernel[1], base_w + a % kernel[1]
    bad = (ih < 0) | (ih >= h) | (iw < 0) | (iw >= w)
    if bad.any():
        # The window's real values are all -inf and a padding cell came first: the kernel
        # skips padding, so it picks the first in-bounds cell. Do the same.
        valid = _pad(np.ones((1, 1, h, w), dtype=np.int8), padding, 0)
        first = _windows(valid, kernel, stride, (ho, wo)).argmax(axis=-1)[0, 0]  # (Ho, Wo)
        a = np.where(bad, first, a)
        ih, iw = base_h + a // kernel[1], base_w + a % kernel[1]
    return np.ascontiguousarray(y), (ih * w + iw).astype(np.int32)


def max_pool2d_backward_twin(g, argmax, x_hw, kernel, stride, padding):
    """NumPy max-pool backward: dy (N, C, Ho, Wo) scattered to the arg-max cells.

    Windows that cannot overlap (stride >= kernel on both axes) have distinct arg-max
    cells: a scatter by assignment. Overlapping ones add up in output order (bincount
    in float64, the order of the kernel's gather loop over (oh, ow)).
    """
    n, c, ho, wo = g.shape
    if g.size == 0:
        return np.zeros((n, c, *x_hw), dtype=g.dtype)
    if stride[0] >= kernel[0] and stride[1] >= kernel[1]:
        dx = np.zeros((n * c, x_hw[0] * x_hw[1]), dtype=g.dtype)
        np.put_along_axis(dx, argmax.reshape(n * c, -1), g.reshape(n * c, -1), axis=1)
        return dx.reshape(n, c, *x_hw)
    flat = (np.arange(n * c, dtype=np.int64)[:, None] * (x_hw[0] * x_hw[1])
            + argmax.reshape(n * c, -1)).ravel()
    # bincount adds in output order, as the kernel's gather loop over (oh, ow).
    dx = np.bincount(flat, weights=g.reshape(-1), minlength=n * c * x_hw[0] * x_hw[1])
    return dx.astype(g.dtype, copy=False).reshape(n, c, *x_hw)


def _scatter_cells(contribution, x_shape, dtype, kernel, stride, padding, out_hw):
    """dx (N, C, H, W) = the sum over window cells (i, j), in scan order, of
    ``contribution(i, j, out)`` (the (N, C, oh, ow) values of the windows ``out`` at
    their cell (i, j)) added to the input cells they cover.

    Overlapping columns (kW > sW) accumulate into the sW column phases of dx (unit
    stride along W), interleaved at the end; otherwise into strided slices of dx.
    """
    n, c, h, w = x_shape
    kw, sw = kernel[1], stride[1]
    split = sw > 1 and kw > sw
    if split:
        phases = [np.zeros((n, c, h, len(range(q, w, sw))), dtype) for q in range(min(sw, w))]
    dx = np.zeros(x_shape, dtype)
    for i, j, out, rows, cols, q, q_cols in _cells((h, w), kernel, stride, padding, out_hw):
        values = contribution(i, j, out)
        if split:
            phases[q][:, :, rows, q_cols] += values
        else:
            dx[:, :, rows, cols] += values
    if split:
        for q, phase in enumerate(phases):
            dx[..., q::sw] = phase
    return dx


@functools.lru_cache(maxsize=256)
def _divisor(x_hw, kernel, stride, padding, out_hw, count_include_pad, dtype):
    """:func:`avg_divisor` as one number when every window has the same divisor, else the
    (read-only) array; cached, as a model pools the same shapes every step."""
    div = avg_divisor(x_hw, kernel, stride, padding, out_hw, count_include_pad, dtype)
    if (div == div.flat[0]).all():
        return div.flat[0]
    div.flags.writeable = False
    return div


def _divide(y, x_hw, kernel, stride, padding, count_include_pad):
    """y / divisor in place: by one number when every window has the same divisor."""
    y /= _divisor(tuple(x_hw), tuple(kernel), tuple(stride), tuple(padding),
                  tuple(y.shape[2:]), bool(count_include_pad), y.dtype)
    return y


def avg_pool2d_twin(x, kernel, stride, padding, count_include_pad):
    """NumPy average pool: x (N, C, H, W) -> y (N, C, Ho, Wo).

    The window sum in the kernel's order (cells in scan order, padding skipped), then one
    division: bit for bit the kernel's ``sum / divisor``.
    """
    n, c, h, w = x.shape
    out_hw = pool_output_hw(h, w, kernel, stride, padding)
    y = np.zeros((n, c, *out_hw), dtype=x.dtype)
    for _, _, out, view in _offsets(x, kernel, stride, padding, out_hw):
        y[out] += view
    return _divide(y, (h, w), kernel, stride, padding, count_include_pad)


def _windows_tile(x_hw, kernel, stride, padding, out_hw) -> bool:
    """Windows side by side without overlap or padding: each input cell lies in one window
    at most (cells past the last window in none)."""
    return (tuple(kernel) == tuple(stride) and not any(padding)
            and out_hw[0] * kernel[0] <= x_hw[0] and out_hw[1] * kernel[1] <= x_hw[1])


def _tiled_backward(gd, x_hw, kernel):
    """dx (N, C, H, W) of windows that tile x: each window's ``gd`` value in all its cells,
    zero in the cells past the last window. Two ``np.repeat`` passes: ~2.6x faster than
    zeros and kH*kW strided adds on LeNet's (128, 6, 14, 14) -> 28x28 (measured, 2-core
    EPYC), with the same bits: ``gd + 0.0`` turns -0.0 into +0.0 as the adds into zeros do.
    """
    (kh, kw), (ho, wo) = kernel, gd.shape[2:]
    gd += 0.0
    blocks = np.repeat(np.repeat(gd, kw, axis=3), kh, axis=2)  # (N, C, kH*Ho, kW*Wo)
    if blocks.shape[2:] == tuple(x_hw):
        return blocks
    dx = np.zeros((*gd.shape[:2], *x_hw), gd.dtype)
    dx[:, :, :kh * ho, :kw * wo] = blocks
    return dx


def avg_pool2d_backward_twin(g, x_hw, kernel, stride, padding, count_include_pad):
    """NumPy average-pool backward (the adjoint): dy (N, C, Ho, Wo) -> dx (N, C, H, W).

    ``dy / divisor`` added to each window's in-bounds cells, cell by cell in scan order
    (:func:`_scatter_cells`; no padded buffer). Windows that tile the input (kernel ==
    stride, no padding: LeNet's 2x2 pools) each own their cells, so dx is ``dy / divisor``
    repeated over each window (:func:`_tiled_backward`: the same bits, 2.6x faster).
    """
    gd = _divide(np.array(g, copy=True), x_hw, kernel, stride, padding, count_include_pad)
    if _windows_tile(x_hw, kernel, stride, padding, g.shape[2:]):
        return _tiled_backward(gd, x_hw, kernel)
    return _scatter_cells(lambda i, j, out: gd[out], (*g.shape[:2], *x_hw), g.dtype, kernel,
                          stride, padding, g.shape[2:])


# ----------------------------------------------------------------------------- CUDA bodies
def _geo(nc, x_hw, out_hw, kernel, stride, padding):
    return tuple(np.int32(v) for v in (nc, *x_hw, *out_hw, *kernel, *stride, *padding))


def max_pool2d_cuda(x, kernel, stride, padding):
    cupy = module_of(x)
    t = type_name(x.dtype)
    (x,) = contiguous_inputs("max_pool2d", x)
    n, c, h, w = x.shape
    out_hw = pool_output_hw(h, w, kernel, stride, padding)
    y = cupy.empty((n, c, *out_hw), dtype=x.dtype)
    argmax = cupy.empty((n, c, *out_hw), dtype=cupy.int32)
    if y.size:
        launch(POOL_KERNELS.get(f"max_pool2d_forward<{t}>"), grid_1d(y.size), (DEFAULT_BLOCK,),
               (x, y, argmax, *_geo(n * c, (h, w), out_hw, kernel, stride, padding)))
    return y, argmax


def max_pool2d_backward_cuda(g, argmax, x_hw, kernel, stride, padding):
    cupy = module_of(g)
    t = type_name(g.dtype)
    (g,) = contiguous_inputs("max_pool2d backward", g)
    (argmax,) = contiguous_inputs("max_pool2d backward", argmax.astype(cupy.int32, copy=False))
    n, c = g.shape[:2]
    dx = cupy.empty((n, c, *x_hw), dtype=g.dtype)
    if dx.size:
        launch(POOL_KERNELS.get(f"max_pool2d_backward<{t}>"), grid_1d(dx.size), (DEFAULT_BLOCK,),
               (g, argmax, dx, *_geo(n * c, x_hw, g.shape[2:], kernel, stride, padding)))
    return dx


def avg_pool2d_cuda(x, kernel, stride, padding, count_include_pad):
    cupy = module_of(x)
    t = type_name(x.dtype)
    (x,) = contiguous_inputs("avg_pool2d", x)
    n, c, h, w = x.shape
    out_hw = pool_output_hw(h, w, kernel, stride, padding)
    y = cupy.empty((n, c, *out_hw), dtype=x.dtype)
    if y.size:
        launch(POOL_KERNELS.get(f"avg_pool2d_forward<{t}>"), grid_1d(y.size), (DEFAULT_BLOCK,),
               (x, y, *_geo(n * c, (h, w), out_hw, kernel, stride, padding),
                np.int32(bool(count_include_pad))))
    return y


def avg_pool2d_backward_cuda(g, x_hw, kernel, stride, padding, count_include_pad):
    cupy = module_of(g)
    t = type_name(g.dtype)
    (g,) = contiguous_inputs("avg_pool2d backward", g)
    n, c = g.shape[:2]
    dx = cupy.empty((n, c, *x_hw), dtype=g.dtype)
    if dx.size:
        launch(POOL_KERNELS.get(f"avg_pool2d_backward<{t}>"), grid_1d(dx.size), (DEFAULT_BLOCK,),
               (g, dx, *_geo(n * c, x_hw, g.shape[2:], kernel, stride, padding),
                np.int32(bool(count_include_pad))))
    return dx


# ----------------------------------------------------------------------------- dispatch
def max_pool2d_raw(x, kernel, stride, padding):
    if device_of(x) == "cuda":
        return max_pool2d_cuda(x, kernel, stride, padding)
    return max_pool2d_twin(x, kernel, stride, padding)


def max_pool2d_backward_raw(g, argmax, x_hw, kernel, stride, padding):
    if device_of(g) == "cuda":
        return max_pool2d_backward_cuda(g, argmax, x_hw, kernel, stride, padding)
    return max_pool2d_backward_twin(g, argmax, x_hw, kernel, stride, padding)


def avg_pool2d_raw(x, kernel, stride, padding, count_include_pad):
    if device_of(x) == "cuda":
        return avg_pool2d_cuda(x, kernel, stride, padding, count_include_pad)
    return avg_pool2d_twin(x, kernel, stride, padding, count_include_pad)


def avg_pool2d_backward_raw(g, x_hw, kernel, stride, padding, count_include_pad):
    if device_of(g) == "cuda":
        return avg_pool2d_backward_cuda(g, x_hw, kernel, stride, padding, count_include_pad)
    return avg_pool2d_backward_twin(g, x_hw, kernel, stride, padding, count_include_pad)
