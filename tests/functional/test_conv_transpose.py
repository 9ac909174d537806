"""conv_transpose2d and conv1d (built on the conv2d primitives): the NumPy twin vs naive
float64 loops, gradients (``GRAD_CASES``, run by tests/test_registry.py), and on the
``cuda`` device (a GPU, or the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``) both CUDA
versions vs the CPU."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.functional.conv import conv1d, conv2d, conv_transpose2d
from gpudl.testing import check_grad


# ----------------------------------------------------------------------------- references
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding):
    """(top, bottom, left, right) from an int, (ph, pw) or ((top, bottom), (left, right))."""
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding[0], tuple):
        return (*padding[0], *padding[1])
    return (padding[0], padding[0], padding[1], padding[1])


def ref_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Naive scatter loops: every input pixel adds x * w to a stride-spaced output patch."""
    n_, cin, h_, w_ = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (dh, dw_), (oph, opw) = _pair(stride), _pair(dilation), _pair(output_padding)
    pt, pb, pl, pr = _pads(padding)
    ho = (h_ - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1
    wo = (w_ - 1) * sw - pl - pr + dw_ * (kw - 1) + opw + 1
    cing = cin // groups
    y = np.zeros((n_, cog * groups, ho, wo))
    for n in range(n_):
        for ci in range(cin):
            grp = ci // cing
            for h in range(h_):
                for v in range(w_):
                    for co in range(cog):
                        for i in range(kh):
                            oh = h * sh - pt + i * dh
                            if not 0 <= oh < ho:
                                continue
                            for j in range(kw):
                                ow = v * sw - pl + j * dw_
                                if 0 <= ow < wo:
                                    y[n, grp * cog + co, oh, ow] += x[n, ci, h, v] * w[ci, co, i, j]
    if b is not None:
        y += np.asarray(b)[None, :, None, None]
    return y


def ref_conv1d(x, w, stride, padding, dilation, groups):
    n_, c_, l_ = x.shape
    o_, cg, k = w.shape
    if padding == "same":
        t = dilation * (k - 1)
        pl, pr = t // 2, t - t // 2
    else:
        pl, pr = (padding, padding) if isinstance(padding, int) else padding
    lo = (l_ + pl + pr - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n_, o_, lo))
    og = o_ // groups
    for n in range(n_):
        for o in range(o_):
            for t in range(lo):
                for ci in range(cg):
                    for j in range(k):
                        p = t * stride - pl + j * dilation
                        if 0 <= p < l_:
                            y[n, o, t] += x[n, (o // og) * cg + ci, p] * w[o, ci, j]
    return y


def _make(xs, ws, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
            rng.standard_normal(ws[0]).astype(dtype))


# ----------------------------------------------------------------------------- transpose
# (x shape, w shape, stride, padding, output_padding, dilation, groups)
TRANSPOSE_CASES = [
    ((2, 3, 3, 4), (3, 2, 3, 3), 2, 1, 1, 1, 1),
    ((1, 4, 3, 3), (4, 1, 3, 3), 2, 0, 0, 1, 2),
    ((1, 2, 4, 3), (2, 3, 2, 3), (2, 3), (0, 1), (1, 2), 1, 1),
    ((1, 2, 3, 3), (2, 2, 3, 3), 1, 0, 1, 2, 1),  # output_padding >= stride, < dilation
    ((2, 2, 5, 5), (2, 3, 3, 3), 1, 1, 0, 1, 1),
    ((1, 2, 3, 4), (2, 2, 3, 2), 2, ((1, 0), (0, 1)), 0, 1, 1),
    ((1, 4, 2, 2), (4, 1, 4, 4), 2, 1, 0, 1, 4),  # depthwise upsampling (DCGAN-like k4 s2 p1)
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=[f"t{i}" for i in range(7)])
def test_conv_transpose2d_matches_loops(case):
    xs, ws, stride, padding, out_pad, dilation, groups = case
    x, w, _ = _make(xs, ws, seed=5)
    b = np.random.default_rng(6).standard_normal(ws[1] * groups)
    kw = dict(stride=stride, padding=padding, output_padding=out_pad, dilation=dilation,
              groups=groups)
    y = conv_transpose2d(x, w, b, **kw)
    ref = ref_conv_transpose2d(x, w, b, **kw)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    check_grad(lambda x, w, b: conv_transpose2d(x, w, b, **kw), x, w, b)


def test_conv_transpose_is_the_adjoint_of_conv2d():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 8, 7)), rng.standard_normal((4, 3, 3, 3))
    geo = dict(stride=2, padding=1, dilation=1, groups=1)
    y = conv2d(x, w, **geo)
    u = rng.standard_normal(y.shape)
    xt = conv_transpose2d(u, w, output_padding=(1, 0), **geo)
    assert xt.shape == x.shape
    np.testing.assert_allclose((y * u).sum(), (x * xt).sum(), rtol=1e-12)


# ----------------------------------------------------------------------------- conv1d
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", [
    ((2, 3, 10), (4, 3, 3), 2, 1, 1, 1),
    ((1, 2, 9), (2, 2, 4), 1, "same", 2, 1),
    ((2, 3, 8), (3, 1, 3), 1, (2, 0), 1, 3),
    ((1, 2, 7), (4, 1, 2), 3, 0, 2, 2),
])
def test_conv1d_matches_loops(xs, ws, stride, padding, dilation, groups):
    x, w, b = _make(xs, ws, seed=8)
    y = conv1d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref = ref_conv1d(x, w, stride, padding, dilation, groups) + b[None, :, None]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    check_grad(lambda x, w, b: conv1d(x, w, b, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups), x, w, b)


# ----------------------------------------------------------------------------- gradient cases
# Collected by tests/test_registry.py: float64.
def _conv_transpose_case():
    rng = np.random.default_rng(24)
    x, w = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(6)
    return (lambda x, w, b: conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                             groups=2)), (x, w, b)


def _conv1d_case():
    rng = np.random.default_rng(26)
    return (lambda x, w: conv1d(x, w, stride=2, padding=(2, 1), dilation=2)), (
        rng.standard_normal((2, 3, 11)), rng.standard_normal((4, 3, 3)))


GRAD_CASES = {
    "conv2d": [_conv1d_case],
    "conv2d_backward_data": [_conv_transpose_case],
}


# ----------------------------------------------------------------------------- devices
def _tol(dtype, ref):
    scale = float(np.abs(ref).max()) if ref.size else 1.0
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=1e-5 * scale)
    return dict(rtol=1e-10, atol=1e-13 * scale)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["im2col", "igemm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_transpose_and_conv1d_match_cpu(monkeypatch, impl, dtype):
    """conv_transpose2d and conv1d with bias, value and every gradient, on either version."""
    monkeypatch.setenv("GPUDL_CONV_IMPL", impl)
    rng = np.random.default_rng(16)
    cases = [
        (lambda x, w, b: conv_transpose2d(x, w, b, 2, 1, 1),
         [(2, 4, 5, 6), (4, 3, 3, 3), (3,)]),
        (lambda x, w, b: conv1d(x, w, b, 2, 1, 2), [(3, 2, 17), (5, 2, 4), (5,)]),
    ]
    for f, shapes in cases:
        args = [rng.standard_normal(s).astype(dtype) for s in shapes]
        r = rng.standard_normal(f(*args).shape).astype(dtype)

        def loss(*a, f=f):
            return gd.ops.sum(f(*a[:3]) * a[3])

        want = gd.value_and_grad(loss, argnums=(0, 1, 2))(*args, r)
        got = gd.value_and_grad(loss, argnums=(0, 1, 2))(*gd.to_device((*args, r), "cuda"))
        for a, b in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
            assert a.dtype == dtype
            np.testing.assert_allclose(gd.to_numpy(a), b, **_tol(dtype, b))
