"""Every CUDA kernel, run on the CPU emulator through gpudl's real GPU code paths.

Each test computes an op's value and gradients twice: on the CPU (NumPy twins) and on the
emulated "cuda" device (``emulated_cuda`` fixture: the CUDA bodies, the launcher's checks
and the kernels compiled by g++ with cuda_shim.h). They must agree to the tolerances the
``gpu``-marked tests use on a real GPU (float32 rtol 1e-4, float64 rtol 1e-10), and the
test asserts which kernels were launched, so a silent fallback to a NumPy path would fail.
What this cannot show: GPU timing, memory-model races, or CUDA's libm ulps; those need the
``gpu`` tests on hardware (``make gpu-check``).
"""

from __future__ import annotations

import numpy as np
import pytest
from emulated_cupy import DeviceArray

import gpudl as gd
import gpudl.functional as F

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]


def _host(a):
    assert isinstance(a, DeviceArray), f"expected a device array, got {type(a).__name__}"
    return a.get()


def compare(emu, f, args, argnums, dtype, kernels, seed=0):
    """Value and grads of sum(f(*args) * r) on CPU and on the emulated GPU must agree."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(np.shape(f(*args))).astype(dtype)

    def loss(rr):
        return lambda *a: gd.ops.sum(f(*a) * rr)

    cpu = gd.value_and_grad(loss(r), argnums=argnums)(*args)
    gpu_args = [emu.to_gpu(a) if isinstance(a, np.ndarray) else a for a in args]
    emu.launched.clear()
    gpu = gd.value_and_grad(loss(emu.to_gpu(r)), argnums=argnums)(*gpu_args)
    for name in kernels:
        assert any(k.startswith(name) for k in emu.launched), (name, sorted(set(emu.launched)))
    tol = TOL[dtype]
    np.testing.assert_allclose(_host(gpu[0]), cpu[0], **tol)
    for g_gpu, g_cpu in zip(gpu[1], cpu[1], strict=True):
        assert g_gpu.dtype == g_cpu.dtype == dtype
        np.testing.assert_allclose(_host(g_gpu), g_cpu, **tol)


# ----------------------------------------------------------------------------- cross-entropy
CE_SHAPES = [(1, 1), (5, 10), (3, 33), (7, 1000), (4, 1030), (2, 4097)]


def _logits(shape, dtype, seed=1, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_fused_mean(emulated_cuda, shape, dtype):
    emu = emulated_cuda
    x = _logits(shape, dtype)
    y = np.random.default_rng(2).integers(0, shape[1], shape[0])
    yg = emu.to_gpu(y)
    cpu_v, cpu_g = gd.value_and_grad(lambda x: F.softmax_cross_entropy(x, y))(x)
    emu.launched.clear()
    v, g = gd.value_and_grad(lambda x: F.softmax_cross_entropy(x, yg))(emu.to_gpu(x))
    assert any(k.startswith("sce_forward_backward") for k in emu.launched), emu.launched
    np.testing.assert_allclose(_host(v), cpu_v, **TOL[dtype])
    np.testing.assert_allclose(_host(g), cpu_g, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [
    dict(reduction="none"), dict(reduction="sum", ignore_index=2),
    dict(reduction="mean", label_smoothing=0.1), dict(reduction="none", label_smoothing=0.2,
                                                      ignore_index=0),
], ids=str)
def test_cross_entropy_options_and_upstream_gradients(emulated_cuda, options, dtype):
    # A non-unit upstream gradient: the separate backward kernel ("none") or the scaled
    # fused gradient (reductions), with ignored rows and smoothing.
    x = _logits((6, 36), dtype)
    y = np.array([0, 2, 35, 2, 7, 0])
    kernels = ["sce_backward" if options["reduction"] == "none" else "sce_forward"]
    compare(emulated_cuda, lambda x, y: F.softmax_cross_entropy(x, y, **options), (x, y), 0,
            dtype, kernels)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_misaligned_rows_and_extremes(emulated_cuda, dtype):
    emu = emulated_cuda
    # Rows of 8 classes (a vector width) but starting 1 element off 16-byte alignment: the
    # kernels must take the scalar path; and rows with -inf, huge and NaN logits.
    buf = emu.to_gpu(_logits(4 * 8 + 1, dtype))
    x = buf[1:].reshape(4, 8)
    assert x.flags.c_contiguous and x.ctypes.data % 16
    x_host = x.get()
    x_host[1, :3] = -np.inf
    x_host[2] = [1e30 if dtype == np.float64 else 1e30, 0, 0, 0, 0, 0, 0, -1e30]
    x_host[3, 5] = np.nan
    x = buf[1:].reshape(4, 8)
    x[...] = x_host
    y = np.array([3, 4, 0, 1])
    v_cpu = F.softmax_cross_entropy(x_host, y, reduction="none")
    v_gpu = F.softmax_cross_entropy(x, emu.to_gpu(y), reduction="none")
    np.testing.assert_allclose(_host(v_gpu), v_cpu, **TOL[dtype])
    assert np.isnan(_host(v_gpu)[3])


# ----------------------------------------------------------------------------- conv2d
# (x shape, w shape, stride, padding, dilation, groups), crossing the igemm tiles.
CONV_CASES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1, 1, 1),
    ((1, 4, 9, 8), (6, 2, 3, 3), (2, 1), (1, 2), (2, 1), 2),
    ((2, 4, 6, 7), (4, 1, 3, 3), 1, 1, 1, 4),                 # depthwise
    ((2, 5, 5, 5), (3, 5, 1, 1), 2, 0, 1, 1),                 # 1x1 strided
    ((1, 2, 5, 6), (3, 2, 3, 3), 1, ((0, 2), (1, 0)), 1, 1),  # asymmetric padding
    ((1, 2, 7, 7), (2, 2, 3, 3), 1, "same", 2, 1),
    ((2, 3, 4, 4), (2, 3, 4, 4), 1, 0, 1, 1),                 # kernel covers the input
    ((2, 5, 9, 11), (70, 5, 3, 3), 1, 1, 1, 1),               # 2 column tiles
    ((1, 66, 5, 5), (130, 33, 3, 1), (2, 1), (0, 1), (1, 2), 2),  # Og 65, Cg 33
    ((4, 2, 16, 16), (3, 2, 2, 2), 2, 0, 1, 1),               # M = 256: whole tiles
]


@pytest.mark.parametrize("impl", ["im2col", "igemm"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d(emulated_cuda, monkeypatch, case, dtype, impl):
    monkeypatch.setenv("GPUDL_CONV_IMPL", impl)
    xs, ws, s, p, d, g = case
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    kernels = (["conv2d_igemm_forward", "conv2d_igemm_backward_data",
                "conv2d_igemm_backward_weight"]
               if impl == "igemm" else ["conv2d_im2col", "conv2d_col2im"])
    compare(emulated_cuda, lambda x, w, b: F.conv2d(x, w, b, s, p, d, g), (x, w, b), (0, 1, 2),
            dtype, kernels)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_and_conv1d(emulated_cuda, dtype):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 4, 5, 6)).astype(dtype), rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    compare(emulated_cuda, lambda x, w: F.conv_transpose2d(x, w, None, 2, 1, 1), (x, w), (0, 1),
            dtype, ["conv2d_col2im", "conv2d_im2col"])
    x1, w1 = rng.standard_normal((3, 2, 17)).astype(dtype), rng.standard_normal((5, 2, 4)).astype(dtype)
    compare(emulated_cuda, lambda x, w: F.conv1d(x, w, None, 2, 1, 2), (x1, w1), (0, 1), dtype,
            ["conv2d_im2col", "conv2d_col2im"])


# ----------------------------------------------------------------------------- pooling
POOL_CASES = [
    ((2, 3, 7, 7), 2, 2, 0),
    ((1, 2, 9, 8), 3, 2, 1),
    ((2, 1, 5, 6), (3, 2), (1, 2), (1, 1)),
    ((1, 3, 4, 4), 4, None, 0),
    ((2, 3, 40, 40), 3, 1, 1),  # many blocks
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pooling(emulated_cuda, case, dtype):
    shape, k, s, p = case
    x = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    compare(emulated_cuda, lambda x: F.max_pool2d(x, k, s, p), (x,), 0, dtype,
            ["max_pool2d_forward", "max_pool2d_backward"])
    for include in (True, False):
        compare(emulated_cuda, lambda x, inc=include: F.avg_pool2d(x, k, s, p, inc), (x,), 0, dtype,
                ["avg_pool2d_forward", "avg_pool2d_backward"])


def test_max_pool_ties_nan_and_indices(emulated_cuda):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    y_cpu, i_cpu = F.max_pool2d_with_indices(x, 2)
    y_gpu, i_gpu = F.max_pool2d_with_indices(emulated_cuda.to_gpu(x), 2)
    np.testing.assert_array_equal(_host(i_gpu), i_cpu)  # ties: the first maximum; NaN wins
    np.testing.assert_array_equal(_host(y_gpu), y_cpu)


# ----------------------------------------------------------------------------- LSTM and GRU
def _rnn_params(gates, i, h, dtype, seed=6):
    rng = np.random.default_rng(seed)
    shapes = [(gates * h, i), (gates * h, h), (gates * h,), (gates * h,)]
    return [(rng.standard_normal(s) * 0.5).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", [None, np.array([4, 1, 3])])
def test_lstm_sequence(emulated_cuda, dtype, lengths):
    t, n, i, h = 4, 3, 5, 7
    rng = np.random.default_rng(7)
    x, h0, c0 = (rng.standard_normal(s).astype(dtype) for s in ((t, n, i), (n, h), (n, h)))
    params = _rnn_params(4, i, h, dtype)

    def f(x, h0, c0, *p):
        y, (hn, cn) = F.lstm(x, h0, c0, tuple(p), lengths=lengths)
        return gd.ops.concatenate([y.reshape(-1), hn.reshape(-1), cn.reshape(-1)])

    compare(emulated_cuda, f, (x, h0, c0, *params), tuple(range(7)), dtype,
            ["lstm_pointwise_forward", "lstm_pointwise_backward"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_sequence_and_cells(emulated_cuda, dtype):
    t, n, i, h = 5, 2, 3, 33
    rng = np.random.default_rng(8)
    x, h0 = rng.standard_normal((t, n, i)).astype(dtype), rng.standard_normal((n, h)).astype(dtype)
    params = _rnn_params(3, i, h, dtype)

    def f(x, h0, *p):
        y, hn = F.gru(x, h0, tuple(p), reverse=True)
        return gd.ops.concatenate([y.reshape(-1), hn.reshape(-1)])

    compare(emulated_cuda, f, (x, h0, *params), tuple(range(6)), dtype,
            ["gru_pointwise_forward", "gru_pointwise_backward"])
    c0 = rng.standard_normal((n, h)).astype(dtype)
    lstm_p = _rnn_params(4, i, h, dtype)

    def cell(x, h, c, *p):
        h1, c1 = F.lstm_cell(x, h, c, *p)
        return h1 * c1

    compare(emulated_cuda, cell, (x[0], h0, c0, *lstm_p), (0, 1, 2, 3, 4), dtype,
            ["lstm_pointwise_forward", "lstm_pointwise_backward"])


# ----------------------------------------------------------------------------- every kernel
def test_every_kernel_file_compiles_and_is_covered(emulated_cuda):
    """Each registered kernel file builds under the emulator; this file tests each one."""
    from kernel_emulator import compile_all

    from gpudl import cuda

    assert compile_all(cuda.SOURCES) == {}
    tested = {"softmax_cross_entropy.cu", "conv2d.cu", "conv2d_igemm.cu", "pool2d.cu",
              "lstm_cell.cu", "gru_cell.cu", "philox.cu"}
    untested = set(cuda.SOURCES) - tested
    assert not untested, f"kernel files without an emulation test here: {untested}"


# ----------------------------------------------------------------------------- Philox
@pytest.mark.parametrize("max_grid", [None, 2])  # 2 blocks: every thread wraps the grid
@pytest.mark.parametrize("n", [1, 7, 1001, 4099])
def test_philox_streams_are_bit_identical_to_numpy(emulated_cuda, monkeypatch, n, max_grid):
    from gpudl import random_cuda

    if max_grid is not None:
        monkeypatch.setattr(random_cuda, "MAX_GRID", max_grid)
    key = gd.random.fold_in(gd.random.key(42), n)
    draws = [
        lambda dev, dt: gd.random.uniform(key, (n,), dt, device=dev),
        lambda dev, dt: gd.random.uniform(key, (n,), dt, minval=-2.0, maxval=3.0, device=dev),
        lambda dev, dt: gd.random.normal(key, (n,), dt, device=dev),
        lambda dev, dt: gd.random.normal(key, (n,), dt, mean=1.5, std=0.3, device=dev),
    ]
    for dt in DTYPES:
        for draw in draws:
            emulated_cuda.launched.clear()
            gpu = draw("cuda", dt)
            assert any(k.startswith("philox_") for k in emulated_cuda.launched)
            cpu = draw("cpu", dt)
            assert gpu.dtype == cpu.dtype == dt
            np.testing.assert_array_equal(_host(gpu).view(np.uint8), cpu.view(np.uint8))
    ints = [gd.random.randint(key, (n,), -5, 1 << 40, device=dev) for dev in ("cuda", "cpu")]
    np.testing.assert_array_equal(_host(ints[0]), ints[1])
    coins = [gd.random.bernoulli(key, 0.3, (n,), device=dev) for dev in ("cuda", "cpu")]
    np.testing.assert_array_equal(_host(coins[0]), coins[1])


# ----------------------------------------------------------------------------- conv2d igemm backward-weight
# conv2d_igemm_backward_weight (split-K over the N*Ho*Wo pixels) called directly on device
# arrays, against version 1 (conv_bodies) on the NumPy inputs: the heuristic split count,
# forced splits (partials combined by conv2d_igemm_sum_splits, a short last slice), and
# batch chunks accumulating into dw.
@pytest.mark.parametrize("splits", [None, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_backward_weight_igemm(emulated_cuda, case, dtype, splits):
    from gpudl.functional import conv_bodies, conv_igemm
    from gpudl.functional.conv_checks import check_conv_geometry

    xs, ws, s, p, d, g = case
    geo = check_conv_geometry("test", xs, ws, None, s, p, d, g)
    rng = np.random.default_rng(9)
    x = rng.standard_normal(xs).astype(dtype)
    gy_shape = conv_bodies.conv2d_forward_raw(x, rng.standard_normal(ws).astype(dtype), **geo).shape
    gy = rng.standard_normal(gy_shape).astype(dtype)
    want = conv_bodies.conv2d_backward_weight_raw(x, gy, k_hw=ws[2:], **geo)
    emulated_cuda.launched.clear()
    got = conv_igemm.conv2d_backward_weight_igemm(emulated_cuda.to_gpu(x), emulated_cuda.to_gpu(gy),
                                                  k_hw=ws[2:], splits=splits, **geo)
    assert emulated_cuda.launched[0].startswith("conv2d_igemm_backward_weight<")
    m = gy_shape[0] * gy_shape[2] * gy_shape[3]
    if splits == 3 and m > 32:  # more than one 32-pixel step: really split and combined
        assert emulated_cuda.launched[-1].startswith("conv2d_igemm_sum_splits<")
    assert got.shape == want.shape and got.dtype == dtype
    tol = dict(TOL[dtype], atol=TOL[dtype]["atol"] * max(1.0, float(np.abs(want).max())))
    np.testing.assert_allclose(_host(got), want, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_backward_weight_igemm_batch_chunks(emulated_cuda, monkeypatch, dtype):
    from gpudl.functional import conv_bodies, conv_igemm

    geo = dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    rng = np.random.default_rng(10)
    x, gy = rng.standard_normal((5, 3, 6, 6)).astype(dtype), rng.standard_normal((5, 4, 6, 6)).astype(dtype)
    want = conv_bodies.conv2d_backward_weight_raw(x, gy, k_hw=(3, 3), **geo)
    # Two samples per launch (3 chunks), and at most 2 splits for the (4, 27) workspace.
    monkeypatch.setattr(conv_igemm, "INT32_MAX", 2 * 4 * 36)
    for splits in (None, 1, 2):
        emulated_cuda.launched.clear()
        got = conv_igemm.conv2d_backward_weight_igemm(emulated_cuda.to_gpu(x), emulated_cuda.to_gpu(gy),
                                                      k_hw=(3, 3), splits=splits, **geo)
        kernels = [k.split("<")[0] for k in emulated_cuda.launched]
        assert kernels == ["conv2d_igemm_backward_weight", "conv2d_igemm_sum_splits"] * 3
        tol = dict(TOL[dtype], atol=TOL[dtype]["atol"] * max(1.0, float(np.abs(want).max())))
        np.testing.assert_allclose(_host(got), want, **tol)
    # Deterministic: the same call twice gives the same bits.
    again = conv_igemm.conv2d_backward_weight_igemm(emulated_cuda.to_gpu(x), emulated_cuda.to_gpu(gy),
                                                    k_hw=(3, 3), splits=2, **geo)
    np.testing.assert_array_equal(_host(again), _host(got))
