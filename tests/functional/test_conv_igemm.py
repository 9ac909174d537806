"""conv2d version 2 (implicit GEMM, kernels/conv2d_igemm.cu): the GPUDL_CONV_IMPL selector
(CPU tests) and, on a GPU, the kernels vs the NumPy twin and vs naive float64 loops.

Whole-suite check of version 2 on a GPU:
``GPUDL_CONV_IMPL=igemm pytest -q tests/functional/test_conv.py tests/functional/test_conv_igemm.py``
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.cuda import SOURCES
from gpudl.errors import GpudlError
from gpudl.functional import _conv_igemm_kernels as IK
from gpudl.functional import _conv_kernels as CK
from gpudl.functional.conv import (
    conv2d,
    conv2d_backward_data,
    conv2d_backward_weight,
    conv_transpose2d,
)
from gpudl.functional.conv_checks import check_conv_geometry

# (x shape, w shape, stride, padding, dilation, groups): conv2d's grid (test_conv.py) plus
# shapes that cross the kernel's 64 x 64 x 16 tiles.
CASES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1, 1, 1),
    ((1, 4, 9, 8), (6, 2, 3, 3), (2, 1), (1, 2), (2, 1), 2),
    ((2, 4, 6, 7), (4, 1, 3, 3), 1, 1, 1, 4),                 # depthwise
    ((1, 3, 5, 5), (6, 1, 3, 3), 1, "same", 1, 3),            # depthwise, multiplier 2
    ((2, 5, 4, 3), (3, 5, 1, 1), 1, 0, 1, 1),                 # 1x1
    ((2, 5, 5, 5), (3, 5, 1, 1), 2, 0, 1, 1),                 # 1x1 strided
    ((1, 2, 3, 3), (2, 2, 1, 1), 1, 1, 1, 1),                 # 1x1 padded
    ((1, 2, 5, 6), (3, 2, 3, 3), 1, ((0, 2), (1, 0)), 1, 1),  # asymmetric padding
    ((1, 2, 6, 5), (2, 2, 4, 2), 1, "same", 1, 1),
    ((1, 2, 7, 7), (2, 2, 3, 3), 1, "same", 2, 1),
    ((1, 2, 8, 10), (3, 2, 3, 2), 3, 1, 1, 1),                # stride leaves rows unused
    ((2, 3, 4, 4), (2, 3, 4, 4), 1, 0, 1, 1),                 # kernel covers the input
    ((1, 2, 9, 9), (2, 2, 3, 3), 2, 2, 2, 1),
    ((3, 6, 5, 4), (4, 3, 2, 3), (1, 2), (2, 1), 1, 2),
    ((2, 5, 9, 11), (70, 5, 3, 3), 1, 1, 1, 1),               # 2 column tiles, K = 45
    ((3, 17, 6, 7), (9, 17, 1, 1), 1, 0, 1, 1),               # K = 17: a 1-wide last step
    ((1, 66, 5, 5), (130, 33, 3, 1), (2, 1), (0, 1), (1, 2), 2),  # Og 65, Cg 33
    ((2, 8, 13, 10), (8, 1, 5, 3), (3, 2), 2, (2, 1), 8),     # depthwise, strided, dilated
    ((1, 3, 1, 100), (4, 3, 1, 7), 1, ((0, 0), (3, 3)), 1, 1),  # conv1d-like, M = 100
    ((4, 2, 16, 16), (3, 2, 2, 2), 2, 0, 1, 1),               # M = 256: whole tiles
]
GEO = dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)


def _geometry(case):
    xs, ws, s, p, d, g = case
    return check_conv_geometry("test", xs, ws, None, s, p, d, g)


def ref_conv2d(x, w, stride, padding, dilation, groups):
    """Naive float64 loops over the output (padding (top, bottom, left, right))."""
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = stride, dilation, padding
    ho = (h_ + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w_ + pl + pr - dw * (kw - 1) - 1) // sw + 1
    og = o_ // groups
    y = np.zeros((n_, o_, ho, wo))
    for n in range(n_):
        for o in range(o_):
            c0 = (o // og) * cg
            for oh in range(ho):
                for ow in range(wo):
                    acc = 0.0
                    for i in range(kh):
                        h = oh * sh - pt + i * dh
                        for j in range(kw):
                            v = ow * sw - pl + j * dw
                            if 0 <= h < h_ and 0 <= v < w_:
                                acc += float(np.dot(x[n, c0:c0 + cg, h, v], w[o, :, i, j]))
                    y[n, o, oh, ow] = acc
    return y


def _tol(dtype, ref):
    scale = max(float(np.abs(ref).max()), 1.0)
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=1e-5 * scale)
    return dict(rtol=1e-10, atol=1e-13 * scale)


# ----------------------------------------------------------------------------- selector (CPU)
def test_default_is_im2col(monkeypatch):
    monkeypatch.delenv(IK.ENV_VAR, raising=False)
    assert IK.conv_impl() == "im2col"
    monkeypatch.setenv(IK.ENV_VAR, "  ")
    assert IK.conv_impl() == "im2col"


@pytest.mark.parametrize("raw, name", [("im2col", "im2col"), ("igemm", "igemm"),
                                       ("auto", "auto"), (" IGemm\n", "igemm")])
def test_env_var_parsing(monkeypatch, raw, name):
    monkeypatch.setenv(IK.ENV_VAR, raw)
    assert IK.conv_impl() == name
    assert IK.conv_impl(raw) == name  # an explicit value is parsed the same way


def test_unknown_impl_is_a_named_error(monkeypatch):
    monkeypatch.setenv(IK.ENV_VAR, "cudnn")
    with pytest.raises(IK.ConvImplError, match=r"GPUDL_CONV_IMPL='cudnn'.*im2col, igemm, auto"):
        IK.conv_impl()
    with pytest.raises(ValueError, match=r"impl='winograd'"):
        IK.conv_impl("winograd")
    assert issubclass(IK.ConvImplError, GpudlError)
    with pytest.raises(IK.ConvImplError):
        IK.use_igemm("forward", (1, 3, 8, 8), (4, 3, 3, 3), **GEO)


def test_use_igemm_follows_the_selection(monkeypatch):
    args = ((2, 3, 8, 8), (4, 3, 3, 3))
    assert not IK.use_igemm("forward", *args, **GEO, impl="im2col")
    assert IK.use_igemm("forward", *args, **GEO, impl="igemm")
    assert IK.use_igemm("backward_data", *args, **GEO, impl="igemm")
    assert IK.use_igemm("backward_weight", *args, **GEO, impl="igemm")
    assert not IK.use_igemm("backward_weight", *args, **GEO, impl="im2col")
    # auto: only shapes in the (shipped empty) table, keyed independently of the batch.
    assert IK.AUTO_IGEMM == frozenset()
    assert not IK.use_igemm("forward", *args, **GEO, impl="auto")
    key = IK.auto_key("forward", (64, 3, 8, 8), (4, 3, 3, 3), **GEO)
    assert key == ("forward", 3, 8, 8, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    monkeypatch.setattr(IK, "AUTO_IGEMM", frozenset({key}))
    assert IK.use_igemm("forward", *args, **GEO, impl="auto")
    assert not IK.use_igemm("backward_data", *args, **GEO, impl="auto")
    assert not IK.use_igemm("backward_weight", *args, **GEO, impl="auto")
    assert not IK.use_igemm("forward", (2, 3, 8, 9), (4, 3, 3, 3), **GEO, impl="auto")
    wkey = IK.auto_key("backward_weight", (1, 3, 8, 8), (4, 3, 3, 3), **GEO)
    monkeypatch.setattr(IK, "AUTO_IGEMM", frozenset({wkey}))
    assert IK.use_igemm("backward_weight", *args, **GEO, impl="auto")
    assert not IK.use_igemm("forward", *args, **GEO, impl="auto")
    with pytest.raises(ValueError, match="backward_weight"):
        IK.use_igemm("backward_input", *args, **GEO, impl="igemm")


def test_grid_limits_fall_back_to_im2col():
    geo = dict(GEO, padding=(0, 0, 0, 0))
    assert IK.grid_fits((1, 65535, 4, 4), (65535, 1, 1, 1), 65535)
    assert not IK.grid_fits((1, 65536, 4, 4), (65536, 1, 1, 1), 65536)
    assert not IK.use_igemm("forward", (1, 65536, 4, 4), (65536, 1, 1, 1),
                            **dict(geo, groups=65536), impl="igemm")
    assert not IK.grid_fits((1, 1, 4, 4), (64 * 65535 + 1, 1, 1, 1), 1)  # column tiles


def test_batch_chunks_cover_the_batch_under_int32(monkeypatch):
    monkeypatch.setattr(IK, "INT32_MAX", 100)
    chunks = IK._batch_chunks(7, 30)  # 3 samples per chunk
    assert chunks == [(0, 3), (3, 6), (6, 7)]
    assert IK._batch_chunks(2, 500) == [(0, 1), (1, 2)]  # one sample over the limit: still 1


def test_kernel_source_is_registered():
    src = SOURCES["conv2d_igemm.cu"]
    assert src is IK.IGEMM_KERNELS
    assert set(src.name_expressions) == {
        f"conv2d_igemm_{k}<{t}>" for k in ("forward", "backward_data", "backward_weight",
                                          "sum_splits") for t in ("float", "double")}
    assert "__global__" in src.source()


def test_weight_splits_heuristic(monkeypatch):
    """About TARGET_BLOCKS blocks, splits of at least MIN_SPLIT_STEPS steps, workspace and
    split slices within int32; _split_chunk never launches an empty split."""
    step = IK.MIN_SPLIT_STEPS * IK._WK
    # VGG 64->64 3x3 at 56x56, batch 32: 9 k tiles x 1 o tile -> 30 splits (270 blocks).
    assert IK.weight_splits(32 * 56 * 56, 64 * 9, 64, 1) == 30
    # 512->512 at 7x7, batch 32: 72 x 8 = 576 tiles already fill the GPU.
    assert IK.weight_splits(32 * 49, 512 * 9, 512, 1) == 1
    # LeNet c1 (1->6 5x5 at 28x28): 1 tile; 25088 pixels allow 98 splits of 256.
    assert IK.weight_splits(32 * 28 * 28, 25, 6, 1) == min(IK.TARGET_BLOCKS, 32 * 784 // step)
    assert IK.weight_splits(step - 1, 25, 6, 1) == 1
    # Depthwise 256 channels: 256 tiles, 2 splits.
    assert IK.weight_splits(10 ** 6, 9, 256, 256) == 2
    monkeypatch.setattr(IK, "INT32_MAX", 1000)
    assert IK.weight_splits(10 ** 6, 25, 6, 1) == 1000 // 150  # workspace (splits, O, K)
    for m in (1, 31, 32, 33, 100, 257, 10 ** 5 + 7):
        for want in (1, 2, 3, 7, 64, 10 ** 6):
            chunk, s = IK._split_chunk(m, want)
            assert chunk % IK._WK == 0 and 1 <= s <= want and (s - 1) * chunk < m <= s * chunk


def test_cpu_path_ignores_the_selection(monkeypatch):
    """The twin runs on NumPy arrays whatever GPUDL_CONV_IMPL says (even an invalid value)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    monkeypatch.delenv(IK.ENV_VAR, raising=False)
    want = conv2d(x, w, padding=1)
    for raw in ("igemm", "auto", "nonsense"):
        monkeypatch.setenv(IK.ENV_VAR, raw)
        np.testing.assert_array_equal(conv2d(x, w, padding=1), want)


def test_version_1_routes_cuda_products_to_igemm(monkeypatch):
    """_conv_kernels' CUDA branch hands forward and backward-data, with their geometry, to
    version 2 when selected (device faked; the launchers stubbed with the twin)."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2))
    geo = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
    want = CK.conv2d_forward_raw(x, w, **geo)
    gy = rng.standard_normal(want.shape)
    want_dx = CK.conv2d_backward_data_raw(gy, w, x_hw=(7, 6), **geo)
    seen = []
    monkeypatch.setattr(IK, "conv2d_forward_igemm",
                        lambda x, w, **k: seen.append(("forward", k)) or want)
    monkeypatch.setattr(IK, "conv2d_backward_data_igemm",
                        lambda g, w, **k: seen.append(("backward_data", k)) or want_dx)
    monkeypatch.setattr(CK, "device_of", lambda a: "cuda")
    monkeypatch.setenv(IK.ENV_VAR, "igemm")
    assert CK.conv2d_forward_raw(x, w, **geo) is want
    assert CK.conv2d_backward_data_raw(gy, w, x_hw=(7, 6), **geo) is want_dx
    assert seen == [("forward", geo), ("backward_data", dict(geo, x_hw=(7, 6)))]


def test_version_1_routes_backward_weight_to_igemm(monkeypatch):
    rng = np.random.default_rng(7)
    x, gy = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((2, 6, 4, 7))
    geo = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
    want = CK.conv2d_backward_weight_raw(x, gy, k_hw=(3, 2), **geo)
    seen = []
    monkeypatch.setattr(IK, "conv2d_backward_weight_igemm",
                        lambda x, g, **k: seen.append(k) or want)
    monkeypatch.setattr(CK, "device_of", lambda a: "cuda")
    monkeypatch.setenv(IK.ENV_VAR, "igemm")
    assert CK.conv2d_backward_weight_raw(x, gy, k_hw=(3, 2), **geo) is want
    assert seen == [dict(geo, k_hw=(3, 2))]


# ----------------------------------------------------------------------------- kernels (GPU)
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_igemm_kernels_match_twin(case, dtype):
    """Forward (+ bias in the epilogue) and backward-data vs the twin and a naive loop."""
    cupy = gd.backend.xp_for("cuda")
    geo = _geometry(case)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(case[0])
    w = rng.standard_normal(case[1])
    b = rng.standard_normal(case[1][0])
    xd, wd, bd = (cupy.asarray(a.astype(dtype)) for a in (x, w, b))
    ref = CK.conv2d_forward_raw(x, w, **geo)
    np.testing.assert_allclose(ref, ref_conv2d(x, w, **geo), rtol=1e-12, atol=1e-12)
    y = IK.conv2d_forward_igemm(xd, wd, **geo)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_allclose(y.get(), ref, **_tol(dtype, ref))
    yb = IK.conv2d_forward_igemm(xd, wd, bd, **geo).get()
    np.testing.assert_allclose(yb, ref + b[None, :, None, None], **_tol(dtype, ref))

    gy = rng.standard_normal(ref.shape)
    ref_dx = CK.conv2d_backward_data_raw(gy, w, x_hw=case[0][2:], **geo)
    dx = IK.conv2d_backward_data_igemm(cupy.asarray(gy.astype(dtype)), wd, x_hw=case[0][2:],
                                       **geo)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx.get(), ref_dx, **_tol(dtype, ref_dx))


def ref_conv2d_backward_weight(x, gy, k_hw, stride, padding, dilation, groups):
    """Naive float64 loops: dw[o, c, i, j] = sum over n, oh, ow of gy * the input it saw."""
    n_, c_, h_, w_ = x.shape
    _, o_, ho, wo = gy.shape
    kh, kw = k_hw
    (sh, sw), (dh, dw), (pt, _, pl, _) = stride, dilation, padding
    cg, og = c_ // groups, o_ // groups
    out = np.zeros((o_, cg, kh, kw))
    for o in range(o_):
        c0 = (o // og) * cg
        for i in range(kh):
            for j in range(kw):
                for oh in range(ho):
                    h = oh * sh - pt + i * dh
                    if not 0 <= h < h_:
                        continue
                    for ow in range(wo):
                        v = ow * sw - pl + j * dw
                        if 0 <= v < w_:
                            out[o, :, i, j] += gy[:, o, oh, ow] @ x[:, c0:c0 + cg, h, v]
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("splits", [None, 1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_igemm_backward_weight_matches_twin(case, dtype, splits):
    """Backward-weight (split-K) vs the twin and a naive loop: the heuristic split count,
    one split (written straight to dw), and 3 (partials combined, a short last split)."""
    cupy = gd.backend.xp_for("cuda")
    geo = _geometry(case)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(case[0])
    gy = rng.standard_normal(CK.conv2d_forward_raw(x, rng.standard_normal(case[1]), **geo).shape)
    k_hw = case[1][2:]
    ref = CK.conv2d_backward_weight_raw(x, gy, k_hw=k_hw, **geo)
    if splits is None:  # the loop reference once per case
        np.testing.assert_allclose(ref, ref_conv2d_backward_weight(x, gy, k_hw, **geo),
                                   rtol=1e-12, atol=1e-12)
    dw = IK.conv2d_backward_weight_igemm(cupy.asarray(x.astype(dtype)),
                                         cupy.asarray(gy.astype(dtype)), k_hw=k_hw,
                                         splits=splits, **geo)
    assert dw.shape == case[1] and dw.dtype == dtype and dw.flags.c_contiguous
    np.testing.assert_allclose(dw.get(), ref, **_tol(dtype, ref))


@pytest.mark.gpu
def test_igemm_backward_weight_is_deterministic():
    """Split-K without atomics: the same inputs give the same bits, run after run."""
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(6)
    x = cupy.asarray(rng.standard_normal((8, 16, 20, 20)).astype(np.float32))
    gy = cupy.asarray(rng.standard_normal((8, 32, 20, 20)).astype(np.float32))
    runs = [IK.conv2d_backward_weight_igemm(x, gy, k_hw=(3, 3), **GEO).get() for _ in range(3)]
    assert IK.weight_splits(8 * 400, 16 * 9, 32, 1) > 1  # the combine kernel ran
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.gpu
def test_selected_igemm_runs_the_public_ops(monkeypatch):
    """With GPUDL_CONV_IMPL=igemm, conv2d, its gradients and conv_transpose2d use version 2."""
    cupy = gd.backend.xp_for("cuda")
    calls = {"forward": 0, "backward_data": 0}
    fwd, bwd = IK.conv2d_forward_igemm, IK.conv2d_backward_data_igemm

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(IK, "conv2d_forward_igemm", count("forward", fwd))
    monkeypatch.setattr(IK, "conv2d_backward_data_igemm", count("backward_data", bwd))
    monkeypatch.setenv(IK.ENV_VAR, "igemm")
    rng = np.random.default_rng(2)
    x, w, g = (rng.standard_normal(s) for s in ((3, 4, 9, 8), (6, 2, 3, 3), (3, 6, 4, 10)))
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    xd, wd, gd_ = (cupy.asarray(a) for a in (x, w, g))
    xt = cupy.asarray(np.asfortranarray(x))  # non-contiguous: the launcher copies
    for xin in (xd, xt):
        y, vjp = gd.vjp(lambda x, w: conv2d(x, w, **kw), xin, wd)
        gx, gw = vjp(gd_)
        np.testing.assert_allclose(y.get(), conv2d(x, w, **kw), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gx.get(), conv2d_backward_data(g, w, (9, 8), **kw),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gw.get(), conv2d_backward_weight(x, g, (3, 3), **kw),
                                   rtol=1e-10, atol=1e-12)
    xs = rng.standard_normal((2, 4, 5, 5))
    wt = rng.standard_normal((4, 3, 3, 3))
    ct = conv_transpose2d(cupy.asarray(xs), cupy.asarray(wt), stride=2, padding=1,
                          output_padding=1)
    np.testing.assert_allclose(ct.get(), conv_transpose2d(xs, wt, stride=2, padding=1,
                                                          output_padding=1),
                               rtol=1e-10, atol=1e-12)
    assert calls["forward"] >= 2 and calls["backward_data"] >= 3


@pytest.mark.gpu
def test_igemm_batch_chunks(monkeypatch):
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    geo = dict(GEO)
    want = CK.conv2d_forward_raw(x, w, **geo)
    gy = rng.standard_normal(want.shape)
    want_dx = CK.conv2d_backward_data_raw(gy, w, x_hw=(6, 6), **geo)
    want_dw = CK.conv2d_backward_weight_raw(x, gy, k_hw=(3, 3), **geo)
    monkeypatch.setattr(IK, "INT32_MAX", 2 * 4 * 36)  # two samples per launch
    y = IK.conv2d_forward_igemm(cupy.asarray(x), cupy.asarray(w), **geo)
    np.testing.assert_allclose(y.get(), want, rtol=1e-10, atol=1e-12)
    dx = IK.conv2d_backward_data_igemm(cupy.asarray(gy), cupy.asarray(w), x_hw=(6, 6), **geo)
    np.testing.assert_allclose(dx.get(), want_dx, rtol=1e-10, atol=1e-12)
    for splits in (None, 1, 2):  # dw accumulates over the 3 chunks (+ split partials)
        dw = IK.conv2d_backward_weight_igemm(cupy.asarray(x), cupy.asarray(gy), k_hw=(3, 3),
                                             splits=splits, **geo)
        np.testing.assert_allclose(dw.get(), want_dw, rtol=1e-10, atol=1e-12)
