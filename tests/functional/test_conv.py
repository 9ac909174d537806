"""conv2d and its two backward products: the NumPy twin vs naive float64 loops, gradients
(incl. grad of grad; ``GRAD_CASES``, run by tests/test_registry.py), and on the ``cuda``
device (a GPU, or the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``) the CUDA
im2col/col2im kernels vs the twin.

The rest of the convolution family has modules of its own: test_conv_transpose.py
(conv_transpose2d, conv1d), test_conv_checks.py (argument errors), test_conv_igemm.py
(version 2, implicit GEMM) and test_conv_backward_data_paths.py (the twin's two paths)."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.functional import _conv_kernels as CK
from gpudl.functional import conv as C
from gpudl.functional._conv_saved import SAVED
from gpudl.functional.conv import conv2d, conv2d_backward_data, conv2d_backward_weight
from gpudl.testing import check_grad


# ----------------------------------------------------------------------------- references
def _pads(padding, k_hw, dilation):
    """Reference padding rules, written out independently of conv_checks.py."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for k, d in zip(k_hw, dilation, strict=True):
            t = d * (k - 1)
            out += [t // 2, t - t // 2]
        return tuple(out)
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding[0], tuple):
        return (*padding[0], *padding[1])
    return (padding[0], padding[0], padding[1], padding[1])


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv2d(x, w, b, stride, padding, dilation, groups, g=None):
    """Naive float64 loops. Returns y, and with a cotangent g also (dx, dw) of <y, g>."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    (sh, sw), (dh, dw_) = _pair(stride), _pair(dilation)
    pt, pb, pl, pr = _pads(padding, (kh, kw), (dh, dw_))
    ho = (h_ + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w_ + pl + pr - dw_ * (kw - 1) - 1) // sw + 1
    og = o_ // groups
    y = np.zeros((n_, o_, ho, wo))
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(n_):
        for o in range(o_):
            for oh in range(ho):
                for ow in range(wo):
                    acc = 0.0 if b is None else float(b[o])
                    for ci in range(cg):
                        c = (o // og) * cg + ci
                        for i in range(kh):
                            h = oh * sh - pt + i * dh
                            if not 0 <= h < h_:
                                continue
                            for j in range(kw):
                                v = ow * sw - pl + j * dw_
                                if not 0 <= v < w_:
                                    continue
                                acc += x[n, c, h, v] * w[o, ci, i, j]
                                if g is not None:
                                    dx[n, c, h, v] += g[n, o, oh, ow] * w[o, ci, i, j]
                                    dw[o, ci, i, j] += g[n, o, oh, ow] * x[n, c, h, v]
                    y[n, o, oh, ow] = acc
    return y if g is None else (y, dx, dw)


# ----------------------------------------------------------------------------- the grid
# (x shape, w shape, stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1, 1, 1),                 # odd sizes, non-square kernel
    ((1, 4, 9, 8), (6, 2, 3, 3), (2, 1), (1, 2), (2, 1), 2),   # groups, mixed stride/dilation
    ((2, 4, 6, 7), (4, 1, 3, 3), 1, 1, 1, 4),                 # depthwise
    ((1, 3, 5, 5), (6, 1, 3, 3), 1, "same", 1, 3),            # depthwise, multiplier 2
    ((2, 5, 4, 3), (3, 5, 1, 1), 1, 0, 1, 1),                 # 1x1 (pointwise fast path)
    ((2, 5, 5, 5), (3, 5, 1, 1), 2, 0, 1, 1),                 # 1x1 strided
    ((1, 2, 3, 3), (2, 2, 1, 1), 1, 1, 1, 1),                 # 1x1 padded
    ((1, 2, 5, 6), (3, 2, 3, 3), 1, ((0, 2), (1, 0)), 1, 1),  # asymmetric padding
    ((1, 2, 6, 5), (2, 2, 4, 2), 1, "same", 1, 1),            # "same", even kernel
    ((1, 2, 7, 7), (2, 2, 3, 3), 1, "same", 2, 1),            # "same" with dilation
    ((1, 2, 6, 6), (2, 2, 3, 3), 1, "valid", 1, 1),
    ((1, 2, 8, 10), (3, 2, 3, 2), 3, 1, 1, 1),                # stride leaves rows unused
    ((2, 3, 4, 4), (2, 3, 4, 4), 1, 0, 1, 1),                 # kernel covers the input
    ((1, 2, 9, 9), (2, 2, 3, 3), 2, 2, 2, 1),                 # dilation and stride 2
    ((3, 6, 5, 4), (4, 3, 2, 3), (1, 2), (2, 1), 1, 2),
]
IDS = [f"case{i}" for i in range(len(CONV_CASES))]


def _make(xs, ws, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
            rng.standard_normal(ws[0]).astype(dtype))


@pytest.mark.parametrize("case", CONV_CASES, ids=IDS)
def test_conv2d_twin_matches_loops(case):
    xs, ws, stride, padding, dilation, groups = case
    x, w, b = _make(xs, ws)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = conv2d(x, w, b, **geo)
    g = np.random.default_rng(1).standard_normal(y.shape)
    ref_y, ref_dx, ref_dw = ref_conv2d(x, w, b, g=g, **geo)
    assert y.shape == ref_y.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
    # The backward primitives directly, and through gd.grad.
    dx = conv2d_backward_data(g, w, xs[2:], **geo)
    dw = conv2d_backward_weight(x, g, ws[2:], **geo)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-12, atol=1e-12)
    gx, gw, gb = gd.grad(lambda x, w, b: (conv2d(x, w, b, **geo) * g).sum(),
                         argnums=(0, 1, 2))(x, w, b)
    np.testing.assert_allclose(gx, ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, ref_dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=IDS[:6])
def test_conv2d_float32(case):
    xs, ws, stride, padding, dilation, groups = case
    x, w, b = _make(xs, ws, dtype=np.float32)
    y = conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert y.dtype == np.float32
    ref = ref_conv2d(x, w, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_noncontiguous_inputs_and_batch_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    big = rng.standard_normal((3, 4, 9, 14))
    x = big[:, ::2, :, ::2]  # (3, 2, 9, 7), strided view
    w = rng.standard_normal((3, 2, 3, 3)).transpose(0, 1, 3, 2)  # non-contiguous weight
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    geo = dict(stride=2, padding=1)
    ref, ref_dx, ref_dw = ref_conv2d(x, w, None, 2, 1, 1, 1, g=np.ones((3, 3, 5, 4)))
    np.testing.assert_allclose(conv2d(x, w, **geo), ref, rtol=1e-12, atol=1e-12)
    # A tiny cols budget forces one sample per chunk: same results.
    monkeypatch.setattr(CK, "COLS_BUDGET", 10)
    assert len(CK.batch_chunks(3, 100, 100)) == 3
    np.testing.assert_allclose(conv2d(x, w, **geo), ref, rtol=1e-12, atol=1e-12)
    gx, gw = gd.grad(lambda x, w: conv2d(x, w, **geo).sum(), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(gx, ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, ref_dw, rtol=1e-12, atol=1e-12)


def test_empty_batch():
    y = conv2d(np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3)))
    assert y.shape == (0, 3, 3, 3)
    gw = gd.grad(lambda w: conv2d(np.zeros((0, 2, 5, 5)), w).sum())(np.ones((3, 2, 3, 3)))
    assert gw.shape == (3, 2, 3, 3) and not gw.any()


# ----------------------------------------------------------------------------- gradients
CHECK_GRAD_CASES = [CONV_CASES[i] for i in (1, 2, 4, 5, 8, 9, 14)]


@pytest.mark.parametrize("case", CHECK_GRAD_CASES, ids=[f"g{i}" for i in range(len(CHECK_GRAD_CASES))])
def test_grad_checks_every_primitive(case):
    xs, ws, stride, padding, dilation, groups = case
    x, w, b = _make(xs, ws, seed=9)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = conv2d(x, w, **geo)
    g = np.random.default_rng(10).standard_normal(y.shape)
    check_grad(lambda x, w, b: conv2d(x, w, b, **geo), x, w, b)
    check_grad(lambda g, w: conv2d_backward_data(g, w, xs[2:], **geo), g, w)
    check_grad(lambda x, g: conv2d_backward_weight(x, g, ws[2:], **geo), x, g)


# GRAD_CASES: collected by tests/test_registry.py. Inputs are float64 strided views
# (non-contiguous), which the ops accept.
_GEO = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)


def _conv2d_case():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 4, 7, 12))[:, :, :, ::2]  # (2, 4, 7, 6), non-contiguous
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    return (lambda x, w, b: conv2d(x, w, b, **_GEO)), (x, w, b)


def _conv2d_same_case():
    rng = np.random.default_rng(22)
    return (lambda x, w: conv2d(x, w, padding="same")), (
        rng.standard_normal((1, 3, 5, 6)), rng.standard_normal((2, 3, 2, 3)))


def _backward_data_case():
    rng = np.random.default_rng(23)
    g = rng.standard_normal((2, 6, 3, 7))  # conv2d's output for a (7, 6) input with _GEO
    w = rng.standard_normal((6, 2, 3, 2))
    return (lambda g, w: conv2d_backward_data(g, w, (7, 6), **_GEO)), (g, w)


def _backward_weight_case():
    rng = np.random.default_rng(25)
    x = rng.standard_normal((2, 4, 7, 6))
    g = rng.standard_normal((2, 6, 3, 7))
    return (lambda x, g: conv2d_backward_weight(x, g, (3, 2), **_GEO)), (x, g)


def _bias_case():
    rng = np.random.default_rng(27)
    y = rng.standard_normal((3, 4, 5, 2))[:, :, ::2]  # (N, C, H, W), not contiguous
    return C._conv_bias, (y, rng.standard_normal(4))


def _bias_second_order_case():
    rng = np.random.default_rng(29)
    y, b = rng.standard_normal((2, 3, 4, 1)), rng.standard_normal(3)
    return (lambda y, b: gd.grad(lambda b: gd.ops.sum(gd.ops.tanh(C._conv_bias(y, b))))(b)), (y, b)


GRAD_CASES = {
    "conv_bias": [_bias_case, _bias_second_order_case],
    "conv2d": [_conv2d_case, _conv2d_same_case],
    "conv2d_backward_data": [_backward_data_case],
    "conv2d_backward_weight": [_backward_weight_case],
}


def test_grad_of_grad():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((4, 2, 3, 2)) * 0.5
    geo = dict(stride=(2, 1), padding=((1, 0), (1, 1)), dilation=(1, 2), groups=2)

    def loss(x, w):
        return gd.ops.sum(gd.ops.tanh(conv2d(x, w, **geo)))

    # The gradient (dx, dw) is itself checked: it runs backward_data/backward_weight, whose
    # vjps use conv2d and each other.
    check_grad(gd.grad(loss, argnums=(0, 1)), x, w)
    # Input gradient penalty (the contractive / WGAN-GP pattern): d/dw of |dL/dx|^2.
    check_grad(lambda w: gd.ops.sum(gd.grad(loss)(x, w) ** 2), w)


def test_constant_inputs_skip_their_gradient(monkeypatch):
    """The vjp entries are deferred: a constant weight costs no backward-weight product
    (by the primitive or from the forward's saved columns), and keeps no columns."""
    calls = []
    real = C.conv2d_backward_weight_raw
    monkeypatch.setattr(C, "conv2d_backward_weight_raw",
                        lambda *a, **k: calls.append(k.get("cols") is not None) or real(*a, **k))
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))
    before = len(SAVED)
    gd.grad(lambda x: conv2d(x, w).sum())(x)
    assert not calls and len(SAVED) == before
    gd.grad(lambda w: conv2d(x, w).sum())(w)
    assert calls == [True]  # from the saved columns


# ----------------------------------------------------------------------------- devices
def _tol(dtype, ref):
    scale = float(np.abs(ref).max()) if ref.size else 1.0
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=1e-5 * scale)
    return dict(rtol=1e-10, atol=1e-13 * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=IDS)
def test_device_matches_twin(device, dtype, case):
    """conv2d and both backward products on `device` vs the NumPy twin (on cpu: itself)."""
    xs, ws, stride, padding, dilation, groups = case
    x, w, b = _make(xs, ws, seed=12, dtype=dtype)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref_y = conv2d(x, w, b, **geo)
    g = np.random.default_rng(13).standard_normal(ref_y.shape).astype(dtype)
    ref_dx = conv2d_backward_data(g, w, xs[2:], **geo)
    ref_dw = conv2d_backward_weight(x, g, ws[2:], **geo)
    xd, wd, bd, gd_ = gd.to_device((x, w, b, g), device)
    for got, ref in ((conv2d(xd, wd, bd, **geo), ref_y),
                     (conv2d_backward_data(gd_, wd, xs[2:], **geo), ref_dx),
                     (conv2d_backward_weight(xd, gd_, ws[2:], **geo), ref_dw)):
        assert gd.backend.device_of(got) == device and got.dtype == dtype
        np.testing.assert_allclose(gd.to_numpy(got), ref, **_tol(dtype, ref))
    # the bias gradient (conv_bias's channel sums) on the device
    ref_db = g.sum(axis=(0, 2, 3), dtype=np.float64)
    got_db = gd.grad(lambda b: gd.ops.sum(conv2d(xd, wd, b, **geo) * gd_))(bd)
    assert gd.backend.device_of(got_db) == device and got_db.dtype == dtype
    np.testing.assert_allclose(gd.to_numpy(got_db), ref_db, **_tol(dtype, ref_db))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_col2im_kernels_match_twins(dtype):
    """The raw kernels, on shapes where padding, stride and dilation all matter."""
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(14)
    for xs, k, s, p, d in [((2, 3, 7, 6), (3, 2), (2, 1), (1, 0, 2, 1), (1, 2)),
                           ((1, 2, 9, 9), (3, 3), (3, 3), (2, 2, 2, 2), (2, 2)),
                           ((3, 1, 5, 4), (1, 1), (2, 2), (1, 0, 0, 1), (1, 1)),
                           ((1, 4, 4, 4), (4, 4), (1, 1), (0, 0, 0, 0), (1, 1))]:
        out = CK.out_size(xs[2], k[0], s[0], p[0] + p[1], d[0]), CK.out_size(
            xs[3], k[1], s[1], p[2] + p[3], d[1])
        x = rng.standard_normal(xs).astype(dtype)
        ref = CK.im2col_twin(x, k, s, p, d, out)
        got = CK.im2col_cuda(cupy.asarray(x), k, s, p, d, out)
        np.testing.assert_array_equal(got.get(), ref)  # a pure copy: exact
        dcols = rng.standard_normal(ref.shape).astype(dtype)
        ref_dx = CK.col2im_twin(dcols, xs, k, s, p, d, out)
        got_dx = CK.col2im_cuda(cupy.asarray(dcols), xs, k, s, p, d, out)
        # Same summation order per pixel as the twin: float64 agrees to the last bits.
        np.testing.assert_allclose(got_dx.get(), ref_dx, rtol=1e-6 if dtype == np.float32
                                   else 1e-14, atol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.gpu
def test_gpu_grad_checks_and_chunks(monkeypatch):
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(15)
    x, w = (cupy.asarray(rng.standard_normal(s)) for s in ((3, 4, 7, 6), (6, 2, 3, 3)))
    geo = dict(stride=2, padding=((1, 0), (0, 2)), dilation=(1, 2), groups=2)
    check_grad(lambda x, w: conv2d(x, w, **geo), x, w)
    check_grad(gd.grad(lambda x, w: gd.ops.sum(gd.ops.tanh(conv2d(x, w, **geo))),
                       argnums=(0, 1)), x, w)
    ref = conv2d(x, w, **geo)
    monkeypatch.setattr(CK, "COLS_BUDGET", 10)  # one sample per chunk
    cupy.testing.assert_allclose(conv2d(x, w, **geo), ref, rtol=1e-12, atol=1e-12)
    xt = x[:, :, ::-1, :]  # non-contiguous view: copied before the kernel
    cupy.testing.assert_allclose(conv2d(xt, w, **geo),
                                 conv2d(cupy.ascontiguousarray(xt), w, **geo), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_sums_against_a_float64_reference(dtype):
    """The bias gradient's order (the samples first, then each channel's run) against
    float64 sums: contiguous 4-D and 3-D (conv1d) maps, a strided view (NumPy's own sum)."""
    rng = np.random.default_rng(31)
    for shape in ((128, 6, 28, 28), (7, 5, 1, 9), (4, 3, 11)):
        g = rng.standard_normal(shape).astype(dtype) + 3.0
        want = g.astype(np.float64).sum(axis=(0, *range(2, g.ndim)))
        got = C.channel_sums(g)
        assert got.dtype == dtype and got.shape == (shape[1],)
        np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == np.float32 else 1e-13)
        strided = g[:, :, ::2]
        np.testing.assert_allclose(C.channel_sums(strided),
                                   strided.astype(np.float64).sum(axis=(0, *range(2, g.ndim))),
                                   rtol=2e-6 if dtype == np.float32 else 1e-13)


def test_conv_bias_values_and_gradient():
    rng = np.random.default_rng(33)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y = conv2d(x, w, b, padding=1)
    np.testing.assert_array_equal(y, conv2d(x, w, padding=1) + b[:, None, None])
    gb = gd.grad(lambda b: gd.ops.sum(conv2d(x, w, b, padding=1) ** 2))(b)
    np.testing.assert_allclose(gb, (2 * y).sum(axis=(0, 2, 3)), rtol=1e-12)
    with pytest.raises(gd.ShapeError, match="bias"):
        conv2d(x, w, np.ones(3), padding=1)


@pytest.mark.gpu
def test_conv_bias_on_another_device_is_a_named_error():
    x, w = gd.to_device((np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))), "cuda")
    with pytest.raises(gd.errors.DeviceMismatchError, match=r"conv2d: .*different devices"):
        conv2d(x, w, np.ones(3))
