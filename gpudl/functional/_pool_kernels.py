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


# ----------------------------------------------------------------------------- NumPy twins
def max_pool2d_twin(x, kernel, stride, padding):
    """NumPy max pool: x (N, C, H, W) -> (y (N, C, Ho, Wo), argmax int32 (N, C, Ho, Wo))."""
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


def max_pool2d_backward_twin(g, argmax, x_hw):
    """NumPy max-pool backward: dy (N, C, Ho, Wo) scattered to the arg-max cells."""
    n, c = g.shape[:2]
    hw = x_hw[0] * x_hw[1]
    if g.size == 0:
        return np.zeros((n, c, *x_hw), dtype=g.dtype)
    flat = (np.arange(n * c, dtype=np.int64)[:, None] * hw
            + argmax.reshape(n * c, -1)).ravel()
    # bincount adds in output order, as the kernel's gather loop over (oh, ow).
    dx = np.bincount(flat, weights=g.reshape(-1), minlength=n * c * hw)
    return dx.astype(g.dtype, copy=False).reshape(n, c, *x_hw)


def avg_pool2d_twin(x, kernel, stride, padding, count_include_pad):
    """NumPy average pool: x (N, C, H, W) -> y (N, C, Ho, Wo)."""
    h, w = x.shape[2:]
    out_hw = pool_output_hw(h, w, kernel, stride, padding)
    win = _windows(_pad(x, padding, 0), kernel, stride, out_hw)
    div = avg_divisor((h, w), kernel, stride, padding, out_hw, count_include_pad, x.dtype)
    return win.sum(axis=-1) / div


def avg_pool2d_backward_twin(g, x_hw, kernel, stride, padding, count_include_pad):
    """NumPy average-pool backward (the adjoint): dy (N, C, Ho, Wo) -> dx (N, C, H, W)."""
    n, c, ho, wo = g.shape
    (h, w), (kh, kw), (sh, sw), (ph, pw) = x_hw, kernel, stride, padding
    gd = g / avg_divisor(x_hw, kernel, stride, padding, (ho, wo), count_include_pad, g.dtype)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += gd
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])


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
    return max_pool2d_backward_twin(g, argmax, x_hw)


def avg_pool2d_raw(x, kernel, stride, padding, count_include_pad):
    if device_of(x) == "cuda":
        return avg_pool2d_cuda(x, kernel, stride, padding, count_include_pad)
    return avg_pool2d_twin(x, kernel, stride, padding, count_include_pad)


def avg_pool2d_backward_raw(g, x_hw, kernel, stride, padding, count_include_pad):
    if device_of(g) == "cuda":
        return avg_pool2d_backward_cuda(g, x_hw, kernel, stride, padding, count_include_pad)
    return avg_pool2d_backward_twin(g, x_hw, kernel, stride, padding, count_include_pad)
