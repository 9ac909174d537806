"""Pooling: the NumPy twins vs naive float64 loops (incl. overlapping windows, padding,
ties), gradients (``GRAD_CASES``, run by tests/test_registry.py), errors, and on the
``cuda`` device (a GPU, or the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``) the
pool2d.cu kernels vs the twins."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError, ShapeError
from gpudl.functional import _pool_kernels as PK
from gpudl.functional import pooling as P
from gpudl.functional.pooling import (
    avg_pool2d,
    global_avg_pool2d,
    global_max_pool2d,
    lp_pool2d,
    max_pool2d,
    max_pool2d_with_indices,
)
from gpudl.testing import check_grad


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ----------------------------------------------------------------------------- references
def ref_max_pool(x, k, s, p):
    """Loops: (y, argmax h*W + w) with torch's rule: the first maximum in scan order."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(k if s is None else s), _pair(p)
    n_, c_, h_, w_ = x.shape
    ho, wo = (h_ + 2 * ph - kh) // sh + 1, (w_ + 2 * pw - kw) // sw + 1
    y = np.zeros((n_, c_, ho, wo))
    idx = np.zeros((n_, c_, ho, wo), dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    best, at = None, None
                    for i in range(kh):
                        for j in range(kw):
                            h, v = oh * sh - ph + i, ow * sw - pw + j
                            if not (0 <= h < h_ and 0 <= v < w_):
                                continue  # padding never wins
                            if best is None or x[n, c, h, v] > best:  # strict: first max
                                best, at = x[n, c, h, v], h * w_ + v
                    y[n, c, oh, ow], idx[n, c, oh, ow] = best, at
    return y, idx


def ref_max_pool_grad(g, idx, x_shape):
    dx = np.zeros(x_shape)
    n_, c_, ho, wo = g.shape
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    a = idx[n, c, oh, ow]
                    dx[n, c, a // x_shape[3], a % x_shape[3]] += g[n, c, oh, ow]
    return dx


def ref_avg_pool(x, k, s, p, count_include_pad, g=None):
    """Loops: y, and with a cotangent g also dx of <y, g>."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(k if s is None else s), _pair(p)
    n_, c_, h_, w_ = x.shape
    ho, wo = (h_ + 2 * ph - kh) // sh + 1, (w_ + 2 * pw - kw) // sw + 1
    y = np.zeros((n_, c_, ho, wo))
    dx = np.zeros(x.shape)
    for n in range(n_):
        for c in range(c_):
            for oh in range(ho):
                for ow in range(wo):
                    cells = [(oh * sh - ph + i, ow * sw - pw + j)
                             for i in range(kh) for j in range(kw)]
                    inside = [(h, v) for h, v in cells if 0 <= h < h_ and 0 <= v < w_]
                    div = kh * kw if count_include_pad else len(inside)
                    y[n, c, oh, ow] = sum(x[n, c, h, v] for h, v in inside) / div
                    for h, v in inside:
                        if g is not None:
                            dx[n, c, h, v] += g[n, c, oh, ow] / div
    return y if g is None else (y, dx)


# (x shape, kernel, stride, padding)
POOL_CASES = [
    ((2, 3, 6, 6), 2, None, 0),
    ((2, 2, 7, 7), 3, 2, 0),          # overlapping (AlexNet 3x3/2)
    ((1, 3, 6, 7), 3, 2, 1),          # overlapping with padding
    ((1, 2, 5, 7), (2, 3), (1, 2), (1, 1)),
    ((2, 2, 5, 5), 3, 1, 1),          # stride 1: every cell in up to 9 windows
    ((1, 2, 5, 7), 2, None, 0),       # floor drops the last row/column
    ((1, 2, 7, 8), 3, 3, 1),
    ((1, 1, 4, 4), 1, None, 0),
    ((1, 2, 4, 6), (4, 2), (2, 2), (2, 1)),  # padding = half the kernel
]
IDS = [f"case{i}" for i in range(len(POOL_CASES))]


def _distinct(shape, seed, dtype=np.float64):
    """Distinct values (a shuffled grid) so no window has a tie: max pool is smooth there."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size * 4 - 2).astype(dtype)


@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_max_pool_matches_loops(case):
    xs, k, s, p = case
    x = np.random.default_rng(0).standard_normal(xs)
    y, idx = max_pool2d_with_indices(x, k, s, p)
    ref_y, ref_idx = ref_max_pool(x, k, s, p)
    assert y.shape == ref_y.shape and idx.dtype == np.int32
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(idx, ref_idx)
    g = np.random.default_rng(1).standard_normal(y.shape)
    dx = gd.grad(lambda x: (max_pool2d(x, k, s, p) * g).sum())(x)
    np.testing.assert_allclose(dx, ref_max_pool_grad(g, ref_idx, xs), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_avg_pool_matches_loops(case, count_include_pad):
    xs, k, s, p = case
    x = np.random.default_rng(2).standard_normal(xs)
    y = avg_pool2d(x, k, s, p, count_include_pad=count_include_pad)
    g = np.random.default_rng(3).standard_normal(y.shape)
    ref_y, ref_dx = ref_avg_pool(x, k, s, p, count_include_pad, g=g)
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-15)
    dx = gd.grad(lambda x: (avg_pool2d(x, k, s, p, count_include_pad) * g).sum())(x)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-15)


def test_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = -1.0
    dx = gd.grad(lambda x: max_pool2d(x, 3, 2).sum())(x)
    # Windows start at rows/cols 0 and 2; each window's first cell wins (torch's rule).
    expect = np.zeros((5, 5))
    expect[0, 0] = expect[0, 2] = expect[2, 0] = 1.0
    expect[2, 3] = 1.0  # window (1, 1) starts at (2, 2), which holds -1: next cell wins
    np.testing.assert_array_equal(dx[0, 0], expect)


def test_minus_inf_inputs_and_nan():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = max_pool2d_with_indices(x, 3, 2, 1)  # windows start in the padding
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])  # first in-bounds cell
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y, idx = max_pool2d_with_indices(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1 and y[0, 0, 1, 1] == 15.0


def test_float32_and_noncontiguous():
    base = _distinct((2, 3, 9, 16), 4, np.float32)
    x = base[:, :, :, ::2]  # (2, 3, 9, 8) strided view
    assert not x.flags.c_contiguous
    for f in (lambda v: max_pool2d(v, 3, 2, 1), lambda v: avg_pool2d(v, 2, 1, 1)):
        y = f(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, f(np.ascontiguousarray(x).astype(np.float64)), rtol=1e-6,
                                   atol=1e-6)


def test_composites():
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 2.0, (2, 3, 6, 5))
    ref = np.zeros((2, 3, 3, 2))
    for i in range(3):
        for j in range(2):
            ref[:, :, i, j] = (x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] ** 3).sum(axis=(2, 3))
    np.testing.assert_allclose(lp_pool2d(x, 3, 2), ref ** (1 / 3), rtol=1e-12)
    np.testing.assert_allclose(lp_pool2d(x, 1, (2, 3), 1)[0, 0, 0, 0], x[0, 0, :2, :3].sum())
    np.testing.assert_allclose(global_avg_pool2d(x), x.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_allclose(global_max_pool2d(x, keepdims=True), x.max(axis=(2, 3),
                               keepdims=True))
    assert global_avg_pool2d(x, keepdims=True).shape == (2, 3, 1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_twins_are_exact(dtype):
    """The strided-view twins give the windowed path's max/arg-max bit for bit (ties, -inf,
    padding, a > 127-cell window's int32 index), and the average in the kernel's order: a
    sequential sum over the in-bounds cells in scan order, then one division."""
    rng = np.random.default_rng(12)
    cases = [*POOL_CASES, ((1, 1, 13, 12), (12, 11), 1, 0), ((1, 1, 9, 9), 5, 3, 2)]
    for xs, k, s, p in cases:
        x = np.round(rng.standard_normal(xs) * 2).astype(dtype)  # many ties
        x[..., 0, :] = -np.inf
        geo = (_pair(k), _pair(k if s is None else s), _pair(p))
        y, idx = PK.max_pool2d_twin(x, *geo)
        y_ref, idx_ref = PK._max_pool2d_windows(x, *geo)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        assert idx.dtype == np.int32 and y.dtype == dtype
        x = rng.standard_normal(xs).astype(dtype)
        for cip in (True, False):
            got = PK.avg_pool2d_twin(x, *geo, cip)
            (kh, kw), (sh, sw), (ph, pw) = geo
            want = np.empty_like(got)
            for idx_ in np.ndindex(got.shape):
                n, c, oh, ow = idx_
                total, cells = dtype(0), 0
                for i in range(kh):
                    for j in range(kw):
                        h, w = oh * sh - ph + i, ow * sw - pw + j
                        if 0 <= h < xs[2] and 0 <= w < xs[3]:
                            total, cells = dtype(total + x[n, c, h, w]), cells + 1
                h1, w1 = min(oh * sh - ph + kh, xs[2] + ph), min(ow * sw - pw + kw, xs[3] + pw)
                div = (h1 - oh * sh + ph) * (w1 - ow * sw + pw) if cip else cells
                want[idx_] = total / dtype(div)
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("case", [POOL_CASES[i] for i in (1, 2, 3, 4)],
                         ids=[f"g{i}" for i in range(4)])
def test_grad_checks(case):
    xs, k, s, p = case
    x = _distinct(xs, 6)
    geo = dict(kernel=_pair(k), stride=_pair(s if s is not None else k), padding=_pair(p))
    check_grad(lambda x: max_pool2d(x, k, s, p), x)
    check_grad(lambda x: avg_pool2d(x, k, s, p), x)
    check_grad(lambda x: avg_pool2d(x, k, s, p, count_include_pad=False), x)
    _, idx = max_pool2d_with_indices(x, k, s, p)
    g = np.random.default_rng(7).standard_normal(idx.shape)
    check_grad(lambda g: P._max_backward(g, idx, x_hw=xs[2:], **geo), g)
    check_grad(lambda g: P._avg_backward(g, x_hw=xs[2:], count_include_pad=False, **geo), g)
    # grad of grad through both pools
    check_grad(gd.grad(lambda x: gd.ops.sum(max_pool2d(x, k, s, p) ** 3)), x)
    check_grad(gd.grad(lambda x: gd.ops.sum(avg_pool2d(x, k, s, p) ** 3)), x)


def test_composite_grad_checks():
    x = np.random.default_rng(8).uniform(0.5, 2.0, (2, 2, 5, 4))
    check_grad(lambda x: lp_pool2d(x, 2, 2, 1), x)
    check_grad(lambda x: lp_pool2d(x, 3.5, (3, 2)), x)
    check_grad(global_avg_pool2d, x)
    check_grad(global_max_pool2d, _distinct((2, 2, 5, 4), 9))


# ----------------------------------------------------------------------------- gradient cases
# Collected by tests/test_registry.py (every registered primitive needs one): float64,
# distinct values for max pooling so no window has a tie (away from kinks).
def _max_pool_case():
    return (lambda x: max_pool2d(x, 3, 2, 1)), (_distinct((2, 3, 7, 6), 27),)


def _max_pool_backward_case():
    x = _distinct((2, 2, 7, 6), 28)
    _, idx = max_pool2d_with_indices(x, 3, 2, 1)
    g = np.random.default_rng(29).standard_normal(idx.shape)
    geo = dict(x_hw=(7, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1))
    return (lambda g: P._max_backward(g, idx, **geo)), (g,)


def _max_pool_grad_of_grad_case():
    # The gradient of max_pool2d is max_pool2d_backward: check it through gd.grad.
    f = gd.grad(lambda x: gd.ops.sum(max_pool2d(x, (2, 3), (1, 2), (1, 1)) ** 3))
    return f, (_distinct((1, 2, 5, 7), 30),)


def _avg_pool_case():
    return (lambda x: avg_pool2d(x, 3, 2, 1, count_include_pad=False)), (
        np.random.default_rng(31).standard_normal((2, 2, 7, 6)),)


def _avg_pool_backward_case():
    g = np.random.default_rng(32).standard_normal((2, 2, 4, 3))
    geo = dict(x_hw=(7, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1), count_include_pad=True)
    return (lambda g: P._avg_backward(g, **geo)), (g,)


def _lp_pool_case():
    return (lambda x: lp_pool2d(x, 2, 2, 1)), (
        np.random.default_rng(33).uniform(0.5, 2.0, (1, 2, 4, 5)),)


GRAD_CASES = {
    "max_pool2d": [_max_pool_case],
    "max_pool2d_backward": [_max_pool_backward_case, _max_pool_grad_of_grad_case],
    "avg_pool2d": [_avg_pool_case, _lp_pool_case],
    "avg_pool2d_backward": [_avg_pool_backward_case],
}


# ----------------------------------------------------------------------------- errors
def test_errors():
    x = np.ones((2, 3, 6, 6))
    with pytest.raises(ShapeError, match=r"F.max_pool2d: x must be 4-D"):
        max_pool2d(x[0], 2)
    with pytest.raises(ShapeError, match=r"F.avg_pool2d: padding must be >= 0 and at most half"):
        avg_pool2d(x, 2, padding=2)
    with pytest.raises(ShapeError, match=r"at most half"):
        max_pool2d(x, 3, padding=-1)
    with pytest.raises(ValueError, match="count_include_pad must be True or False, got 'no'"):
        avg_pool2d(x, 3, 1, 1, count_include_pad="no")  # bool("no") counted the padding
    with pytest.raises(ShapeError, match=r"window is larger than the padded input"):
        max_pool2d(x, 7)
    with pytest.raises(ShapeError, match=r"stride must be >= 1"):
        max_pool2d(x, 2, stride=0)
    with pytest.raises(ShapeError, match=r"kernel_size must be >= 1"):
        avg_pool2d(x, (0, 2))
    with pytest.raises(ShapeError, match=r"kernel_size must be an int or a pair"):
        avg_pool2d(x, 2.5)
    with pytest.raises(DTypeError, match=r"x is float16.*astype\('float32'\)"):
        max_pool2d(x.astype(np.float16), 2)
    with pytest.raises(DTypeError, match=r"x has dtype int64"):
        avg_pool2d(x.astype(np.int64), 2)
    with pytest.raises(ShapeError, match=r"F.lp_pool2d: p must be a positive number"):
        lp_pool2d(x, 0, 2)
    with pytest.raises(ShapeError, match=r"F.global_avg_pool2d: x must be 4-D"):
        global_avg_pool2d(x[0])


# ----------------------------------------------------------------------------- devices
def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-14)


# Enough output cells for many 256-thread blocks too.
DEVICE_CASES = [*POOL_CASES, ((2, 3, 40, 40), 3, 1, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DEVICE_CASES, ids=[*IDS, "many_blocks"])
def test_device_matches_twin(device, dtype, case):
    """Forward and backward of max and avg pooling on `device` vs the NumPy twin."""
    xs, k, s, p = case
    x = _distinct(xs, 10, dtype)
    y_ref, idx_ref = max_pool2d_with_indices(x, k, s, p)
    g = np.random.default_rng(11).standard_normal(y_ref.shape).astype(dtype)
    xd, gd_ = gd.to_device((x, g), device)
    y, idx = max_pool2d_with_indices(xd, k, s, p)
    np.testing.assert_array_equal(gd.to_numpy(y), y_ref)
    np.testing.assert_array_equal(gd.to_numpy(idx), idx_ref)
    dx = gd.vjp(lambda v: max_pool2d(v, k, s, p), xd)[1](gd_)[0]
    dx_ref = gd.vjp(lambda v: max_pool2d(v, k, s, p), x)[1](g)[0]
    np.testing.assert_allclose(gd.to_numpy(dx), dx_ref, **_tol(dtype))
    for cip in (True, False):
        f = lambda v, cip=cip: avg_pool2d(v, k, s, p, count_include_pad=cip)  # noqa: E731
        np.testing.assert_allclose(gd.to_numpy(f(xd)), f(x), **_tol(dtype))
        got = gd.vjp(f, xd)[1](gd_)[0]
        assert gd.backend.device_of(got) == device and got.dtype == dtype
        np.testing.assert_allclose(gd.to_numpy(got), gd.vjp(f, x)[1](g)[0], **_tol(dtype))


@pytest.mark.gpu
def test_gpu_ties_nan_and_grad_checks():
    cupy = gd.backend.xp_for("cuda")
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = -1.0
    x[0, 0, 4, 0] = np.nan
    y_ref, idx_ref = max_pool2d_with_indices(x, 3, 2, 1)
    y, idx = max_pool2d_with_indices(cupy.asarray(x), 3, 2, 1)
    np.testing.assert_array_equal(idx.get(), idx_ref)
    np.testing.assert_array_equal(y.get(), y_ref)  # NaN positions equal too
    xm = cupy.full((1, 1, 3, 3), -cupy.inf)
    np.testing.assert_array_equal(max_pool2d_with_indices(xm, 3, 2, 1)[1].get()[0, 0],
                                  [[0, 1], [3, 4]])
    xd = cupy.asarray(_distinct((2, 2, 7, 6), 12))
    check_grad(lambda v: max_pool2d(v, 3, 2, 1), xd)
    check_grad(lambda v: avg_pool2d(v, 3, 2, 1, count_include_pad=False), xd)
    check_grad(gd.grad(lambda v: gd.ops.sum(max_pool2d(v, 3, 2) ** 3)), xd)
    assert PK.POOL_KERNELS.filename == "pool2d.cu"


@pytest.mark.parametrize("xs, k", [((2, 3, 6, 6), (2, 2)), ((1, 2, 5, 7), (2, 2)),
                                   ((2, 2, 9, 8), (3, 2)), ((1, 1, 4, 4), (1, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_backward_of_tiling_windows_gives_the_scatters_bits(xs, k, dtype):
    """Windows that tile x take the repeat path (_tiled_backward): the scatter's bits, a
    -0.0 gradient included (the scatter's adds into zeros make it +0.0), and zeros in the
    rows and columns past the last window."""
    h, w = xs[2:]
    out_hw = (h // k[0], w // k[1])
    assert PK._windows_tile((h, w), k, k, (0, 0), out_hw)
    assert not PK._windows_tile((h, w), k, (1, 1), (0, 0), out_hw) or k == (1, 1)
    g = np.random.default_rng(5).standard_normal((*xs[:2], *out_hw)).astype(dtype)
    g.flat[::3] = -0.0
    got = PK.avg_pool2d_backward_twin(g, (h, w), k, k, (0, 0), True)
    gd_ = PK._divide(g.copy(), (h, w), k, k, (0, 0), True)
    want = PK._scatter_cells(lambda i, j, out: gd_[out], xs, dtype, k, k, (0, 0), out_hw)
    assert got.shape == xs and got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    assert not np.signbit(got[got == 0]).any()  # no -0.0 left, as the scatter's
    assert not got[:, :, out_hw[0] * k[0]:].any() and not got[..., out_hw[1] * k[1]:].any()
