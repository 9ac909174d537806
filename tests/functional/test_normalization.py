"""Batch/layer/local-response normalization against per-channel float64 loops (torch
formulas) and torch; the fused primitives' NumPy twins (chunked row paths included), their
gradients (``GRAD_CASES``, run by tests/test_registry.py, grad-of-grad included), errors,
and on the ``cuda`` device (a GPU, or the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``)
kernels/batch_norm.cu and kernels/layer_norm.cu vs the twins."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError
from gpudl.functional import _normalization_kernels as NK
from gpudl.functional import normalization as NM
from gpudl.functional.normalization import batch_norm, layer_norm, local_response_norm
from gpudl.testing import check_grad


def host(a):
    return gd.to_numpy(a)


def bn_ref(x, gamma, beta, rm, rv, train, momentum=0.1, eps=1e-5):
    y = np.empty_like(x)
    new_m, new_v = rm.copy(), rv.copy()
    for c in range(x.shape[1]):
        vals = x[:, c].ravel()
        n = vals.size
        if train:
            mu = sum(vals) / n
            var = sum((v - mu) ** 2 for v in vals) / n
            new_m[c] = (1 - momentum) * rm[c] + momentum * mu
            new_v[c] = (1 - momentum) * rv[c] + momentum * var * n / (n - 1)
        else:
            mu, var = rm[c], rv[c]
        y[:, c] = (x[:, c] - mu) / math.sqrt(var + eps) * gamma[c] + beta[c]
    return y, new_m, new_v


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_matches_torch_formulas(shape, train, device, xp, rng):
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    y, (m, v) = batch_norm(
        xp.asarray(x),
        xp.asarray(gamma),
        xp.asarray(beta),
        xp.asarray(rm),
        xp.asarray(rv),
        train,
        momentum=0.2,
    )
    ry, rmn, rvn = bn_ref(x, gamma, beta, rm, rv, train, momentum=0.2)
    np.testing.assert_allclose(host(y), ry, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(m), rmn, rtol=1e-12)
    np.testing.assert_allclose(host(v), rvn, rtol=1e-12)


def test_batch_norm_float32_and_no_affine(device, xp, rng):
    x = rng.standard_normal((8, 2, 3)).astype(np.float32)
    y, (m, v) = batch_norm(
        xp.asarray(x), None, None, xp.zeros(2, np.float32), xp.ones(2, np.float32), True
    )
    assert y.dtype == np.float32 and m.dtype == np.float32 and v.dtype == np.float32
    ry, _, _ = bn_ref(x.astype(np.float64), np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), True)
    np.testing.assert_allclose(host(y), ry, rtol=1e-4, atol=1e-5)
    # No running statistics: batch statistics in both modes, and None returned.
    y2, stats = batch_norm(xp.asarray(x), None, None, None, None, False)
    assert stats == (None, None)
    np.testing.assert_allclose(host(y2), ry, rtol=1e-4, atol=1e-5)


def test_batch_norm_train_gradient_and_stats_are_constants(rng):
    x = rng.standard_normal((5, 3, 2))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = np.zeros(3), np.ones(3)
    check_grad(lambda a, g, b: batch_norm(a, g, b, rm, rv, True)[0], x, gamma, beta)
    check_grad(lambda a, g, b: batch_norm(a, g, b, rm, rv, False)[0], x, gamma, beta)

    def loss(a):
        y, (m, v) = batch_norm(a, gamma, beta, rm, rv, True)
        assert type(m) is np.ndarray and type(v) is np.ndarray  # state, not traced
        return (y * y).sum()

    gd.grad(loss)(x)


def test_batch_norm_errors():
    with pytest.raises(ShapeError, match=r"gamma must have shape \(3,\).*got \(4,\)"):
        batch_norm(np.ones((2, 3)), np.ones(4), None, None, None, True)
    with pytest.raises(ShapeError, match="more than one value per channel"):
        batch_norm(np.ones((1, 3)), None, None, np.zeros(3), np.ones(3), True)
    with pytest.raises(ShapeError, match=r"\(N, C\) or \(N, C, \.\.\.\)"):
        batch_norm(np.ones(3), None, None, None, None, True)


@pytest.mark.parametrize("momentum", [4, -0.1, 1.5, float("nan")])
def test_batch_norm_momentum_out_of_range_is_refused(momentum):
    # momentum=4 (a channel count in the momentum slot) used to drive the running
    # variance negative: (1 - 4) * 1 + 4 * small < 0.
    x = np.random.default_rng(0).standard_normal((8, 3))
    with pytest.raises(ValueError, match=r"batch_norm: momentum must be in \[0.0, 1.0\]"):
        batch_norm(x, None, None, np.zeros(3), np.ones(3), True, momentum=momentum)


def test_batch_norm_scalar_arguments_are_checked():
    x = np.random.default_rng(0).standard_normal((8, 3))
    stats = (np.zeros(3), np.ones(3))
    with pytest.raises(TypeError, match="momentum must be a number"):
        batch_norm(x, None, None, *stats, True, momentum=np.ones(3))
    with pytest.raises(ValueError, match=r"eps must be in \(0.0, inf\)"):
        batch_norm(x, None, None, *stats, True, eps=0.0)
    with pytest.raises(TypeError, match="train must be True or False"):
        batch_norm(x, None, None, *stats, "yes")
    # The ends of the range are valid: momentum 0 keeps the running statistics, 1 replaces
    # them by the batch's (unbiased variance, as torch).
    _, (m0, v0) = batch_norm(x, None, None, *stats, True, momentum=0)
    np.testing.assert_array_equal(m0, 0.0)
    np.testing.assert_array_equal(v0, 1.0)
    _, (m1, v1) = batch_norm(x, None, None, *stats, np.bool_(True), momentum=1.0)
    np.testing.assert_allclose(m1, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(v1, x.var(axis=0, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("norm_shape", [(5,), (4, 5)])
def test_layer_norm(norm_shape, device, xp, rng):
    x = rng.standard_normal((2, 3, 4, 5)) * 3
    gamma, beta = rng.standard_normal(norm_shape), rng.standard_normal(norm_shape)
    k = len(norm_shape)
    ref = np.empty_like(x)
    for idx in np.ndindex(x.shape[: 4 - k]):
        vals = x[idx].ravel()
        mu = sum(vals) / vals.size
        var = sum((v - mu) ** 2 for v in vals) / vals.size
        ref[idx] = (x[idx] - mu) / math.sqrt(var + 1e-5) * gamma + beta
    got = layer_norm(xp.asarray(x), xp.asarray(gamma), xp.asarray(beta))
    np.testing.assert_allclose(host(got), ref, rtol=1e-10, atol=1e-12)
    check_grad(layer_norm, x[:, :2], gamma, beta)


def test_layer_norm_without_affine_and_errors():
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(layer_norm(x, None, None), (x - 2) / math.sqrt(2 / 3 + 1e-5))
    with pytest.raises(
        ShapeError, match=r"trailing dims \(3,\) must equal the normalized shape \(4,\)"
    ):
        layer_norm(x, np.ones(4), np.zeros(4))


def test_local_response_norm(device, xp, rng):
    x = rng.standard_normal((2, 6, 3, 3))
    size, alpha, beta, k = 5, 1e-2, 0.75, 2.0
    ref = np.empty_like(x)
    for n, c, h, w in np.ndindex(x.shape):
        lo, hi = c - size // 2, c + (size - 1) // 2
        s = sum(x[n, j, h, w] ** 2 for j in range(max(lo, 0), min(hi, 5) + 1))
        ref[n, c, h, w] = x[n, c, h, w] / (k + alpha / size * s) ** beta
    got = local_response_norm(xp.asarray(x), size, alpha, beta, k)
    np.testing.assert_allclose(host(got), ref, rtol=1e-12)
    check_grad(lambda v: local_response_norm(v, 3, 0.1, 0.75, 1.0), x[:1, :4])


# ----------------------------------------------------------------------------- fused primitives
def ln_ref(x, gamma, beta, k, eps=1e-5):
    """Naive float64 loop over the rows of the trailing ``k`` dims."""
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[: x.ndim - k]):
        vals = x[idx].ravel()
        mu = sum(vals) / vals.size
        var = sum((v - mu) ** 2 for v in vals) / vals.size
        out[idx] = (x[idx] - mu) / math.sqrt(var + eps) * gamma + beta
    return out


@pytest.fixture(params=["whole", "chunked"])
def twin_path(request, monkeypatch):
    """Run the twins whole-array and in many small row blocks (the path of large inputs)."""
    if request.param == "chunked":
        monkeypatch.setattr(NK, "CHUNK", 96)
        monkeypatch.setattr(NK, "MIN_ROW", 4)  # (5, 3): samples first
    return request.param


@pytest.mark.parametrize("shape", [(3, 3, 5, 7), (5, 3), (2, 3, 36)])
def test_batch_norm_twin_matches_loops_and_torch(shape, twin_path, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 3 + 5  # a mean far from 0: no cancellation allowed
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    g = rng.standard_normal(shape)
    for train in (True, False):
        (y, _), vjp = gd.vjp(lambda a, w, b, m, v, t=train: batch_norm(a, w, b, m, v, t),
                             x, gamma, beta, rm, rv)
        ry, _, _ = bn_ref(x, gamma, beta, rm, rv, train)
        np.testing.assert_allclose(y, ry, rtol=1e-11, atol=1e-12)
        grads = vjp((g, (np.zeros(3), np.zeros(3))))
        ts = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
        ty = torch.nn.functional.batch_norm(ts[0], torch.tensor(rm), torch.tensor(rv), ts[1],
                                            ts[2], train)
        want = torch.autograd.grad(ty, ts, torch.tensor(g))
        for got, ref in zip(grads[:3], want, strict=True):  # torch has no running-stat grads
            np.testing.assert_allclose(got, ref.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("shape,k", [((3, 4, 36), 1), ((2, 3, 4, 6), 2), ((5, 33), 1)])
def test_layer_norm_twin_matches_loops_and_torch(shape, k, twin_path, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 2 - 7
    gamma, beta = rng.standard_normal(shape[-k:]), rng.standard_normal(shape[-k:])
    g = rng.standard_normal(shape)
    y, vjp = gd.vjp(layer_norm, x, gamma, beta)
    np.testing.assert_allclose(y, ln_ref(x, gamma, beta, k), rtol=1e-11, atol=1e-12)
    ts = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    ty = torch.nn.functional.layer_norm(ts[0], shape[-k:], ts[1], ts[2])
    for got, ref in zip(vjp(g), torch.autograd.grad(ty, ts, torch.tensor(g)), strict=True):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-9, atol=1e-11)


def test_float32_matches_float64(rng):
    x = (rng.standard_normal((6, 4, 9, 9)) * 4 + 100).astype(np.float32)  # |mean| >> std
    w, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    for f in (lambda a, w, b: batch_norm(a, w, b, None, None, True)[0],
              lambda a, w, b: layer_norm(a.reshape(24, 81), None, None)):
        y32, vjp32 = gd.vjp(f, x, w, b)
        y64, vjp64 = gd.vjp(f, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
        assert y32.dtype == np.float32
        np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=2e-4)
        g = rng.standard_normal(y32.shape).astype(np.float32)
        for a, r in zip(vjp32(g), vjp64(g.astype(np.float64)), strict=True):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, r, rtol=1e-3, atol=2e-3 * np.abs(r).max())


def test_row_dot_fallback_for_numpy_1(monkeypatch, rng):
    """Without np.vecdot (NumPy < 2) the twins use einsum: same results."""
    a, b = rng.standard_normal((5, 40)), rng.standard_normal((5, 40))
    np.testing.assert_allclose(NK._einsum_row_dot(a, b), (a * b).sum(1), rtol=1e-13)
    np.testing.assert_allclose(NK._einsum_row_dot(a, np.ones(40)), a.sum(1), rtol=1e-13)
    x = rng.standard_normal((3, 2, 50))
    want = NK.batch_norm_stats_twin(x)
    monkeypatch.setattr(NK, "row_dot", NK._einsum_row_dot)
    for got, ref in zip(NK.batch_norm_stats_twin(x), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_mixed_dtypes_promote_and_empty_batches(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y, (m, v) = batch_norm(x, np.ones(3), np.zeros(3), np.zeros(3, np.float32),
                           np.ones(3, np.float32), True)
    assert y.dtype == np.float64 and m.dtype == np.float32  # stats keep the state's dtype
    assert layer_norm(x, np.ones(3), None).dtype == np.float64
    y, (m, v) = batch_norm(np.zeros((0, 3, 4)), None, None, np.zeros(3), np.ones(3), False)
    assert y.shape == (0, 3, 4) and m.tolist() == [0.0] * 3
    assert layer_norm(np.zeros((0, 5)), np.ones(5), np.zeros(5)).shape == (0, 5)
    dx = gd.grad(lambda a: (layer_norm(a, None, None) ** 2).sum())(np.zeros((0, 5)))
    assert dx.shape == (0, 5)


def test_normalization_dtype_and_eps_errors():
    with pytest.raises(DTypeError, match=r"batch_norm: x has dtype int64; expected float32"):
        batch_norm(np.ones((2, 3), np.int64), None, None, None, None, True)
    with pytest.raises(DTypeError, match=r"batch_norm: gamma has dtype float16.*astype"):
        batch_norm(np.ones((2, 3)), np.ones(3, np.float16), None, None, None, True)
    with pytest.raises(DTypeError, match=r"layer_norm: x has dtype int32"):
        layer_norm(np.ones((2, 3), np.int32), None, None)
    with pytest.raises(ConfigError, match=r"layer_norm: eps must be in \[0.0, inf\)"):
        layer_norm(np.ones((2, 3)), None, None, eps=-1e-5)
    with pytest.raises(ArgumentTypeError, match=r"layer_norm: eps must be a number"):
        layer_norm(np.ones((2, 3)), None, None, eps="1e-5")
    with pytest.raises(ShapeError, match=r"beta must have gamma's shape \(3,\), got \(2,\)"):
        layer_norm(np.ones((2, 3)), np.ones(3), np.ones(2))


# ----------------------------------------------------------------------------- gradient cases
# Collected by tests/test_registry.py: float64, non-contiguous inputs, and grad-of-grad (the
# vjps switch to their gpudl.ops formulas, which send cotangents to the mean/var outputs).
def _x(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape) * 2 + 1


def _bn_train_case():
    return (lambda x, w, b: batch_norm(x, w, b, np.zeros(3), np.ones(3), True)[0],
            (_x((4, 3, 10), 40)[:, :, ::2], _x((3,), 41), _x((3,), 42)))


def _bn_train_2d_case():
    return (lambda x, w: batch_norm(x, w, None, None, None, False)[0], (_x((5, 3), 43), _x((3,), 44)))


def _bn_train_grad_of_grad_case():
    w = _x((3,), 46)
    return (gd.grad(lambda x: gd.ops.sum(batch_norm(x, w, None, None, None, True)[0] ** 3)),
            (_x((3, 3, 2), 45),))


def _bn_eval_case():
    return (lambda x, w, b, m, v: batch_norm(x, w, b, m, v, False)[0],
            (_x((3, 3, 2, 2), 47), _x((3,), 48), _x((3,), 49), _x((3,), 50),
             np.random.default_rng(51).uniform(0.5, 2, 3)))


def _bn_eval_grad_of_grad_case():
    m, v = _x((3,), 53), np.random.default_rng(54).uniform(0.5, 2, 3)
    return (gd.grad(lambda x, w: gd.ops.sum(batch_norm(x, w, None, m, v, False)[0] ** 3),
                    argnums=(0, 1)), (_x((2, 3, 2), 52), _x((3,), 55)))


def _ln_case():
    return (layer_norm, (_x((3, 4, 10), 56)[:, :, ::2], _x((4, 5), 57), _x((4, 5), 58)))


def _ln_grad_of_grad_case():
    w = _x((5,), 60)
    return (gd.grad(lambda x: gd.ops.sum(layer_norm(x, w, None) ** 3)), (_x((3, 5), 59),))


GRAD_CASES = {
    "batch_norm_train": [_bn_train_case, _bn_train_2d_case, _bn_train_grad_of_grad_case],
    "batch_norm_eval": [_bn_eval_case, _bn_eval_grad_of_grad_case],
    "layer_norm": [_ln_case, _ln_grad_of_grad_case],
}


def test_grad_of_grad_against_torch(rng):
    """Second derivatives through the ops formulas of the vjps, against torch's double backward."""
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal((4, 3, 5)), rng.standard_normal(3)

    def ours(a):
        return gd.ops.sum(batch_norm(a, w, None, None, None, True)[0] ** 3)

    tx = torch.tensor(x, requires_grad=True)
    (g1,) = torch.autograd.grad((torch.nn.functional.batch_norm(
        tx, None, None, torch.tensor(w), None, True) ** 3).sum(), tx, create_graph=True)
    (want,) = torch.autograd.grad((g1 ** 2).sum(), tx)
    got = gd.grad(lambda a: gd.ops.sum(gd.grad(ours)(a) ** 2))(x)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-8, atol=1e-10)
    xl = rng.standard_normal((4, 6))
    tl = torch.tensor(xl, requires_grad=True)
    (g1,) = torch.autograd.grad((torch.nn.functional.layer_norm(tl, (6,)) ** 3).sum(), tl,
                                create_graph=True)
    (want,) = torch.autograd.grad((g1 ** 2).sum(), tl)
    got = gd.grad(lambda a: gd.ops.sum(gd.grad(
        lambda b: gd.ops.sum(layer_norm(b, None, None) ** 3))(a) ** 2))(xl)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- devices
def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


# BN: N*L across the 256-thread block (a non-contiguous input), L = 1; LN: D across the
# 128-thread block and not a multiple of 32 (five column blocks), M > the 8 row lanes.
BN_DEVICE_SHAPES = [(3, 2, 10, 10), (7, 3)]
LN_DEVICE_SHAPES = [((9, 130), 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_matches_twin(device, dtype):
    """Train and eval batch norm and layer norm, forward and gradients, on `device` vs the
    NumPy twins (kernels: every instance of batch_norm.cu and layer_norm.cu)."""
    rng = np.random.default_rng(61)
    for shape in BN_DEVICE_SHAPES:
        c = shape[1]
        host = [(rng.standard_normal(shape) * 2 + 3).astype(dtype)] + [
            rng.uniform(0.5, 2, c).astype(dtype) for _ in range(4)]
        if len(shape) == 4:  # a strided view: the launch copies it contiguous first
            host[0] = (rng.standard_normal((*shape[:3], 2 * shape[3])) + 1).astype(dtype)[..., ::2]
        g = rng.standard_normal(shape).astype(dtype)
        on_dev = gd.to_device(host, device)
        for train in (True, False):
            def f(a, w, b, m, v, t=train):
                return batch_norm(a, w, b, m, v, t)
            (y_ref, stats_ref), vjp_ref = gd.vjp(f, *host)
            (y, stats), vjp = gd.vjp(f, *on_dev)
            assert gd.backend.device_of(y) == device and y.dtype == dtype
            np.testing.assert_allclose(gd.to_numpy(y), y_ref, **_tol(dtype))
            for a, r in zip(stats, stats_ref, strict=True):
                np.testing.assert_allclose(gd.to_numpy(a), r, **_tol(dtype))
            zeros = (np.zeros(c, dtype), np.zeros(c, dtype))
            got = vjp((gd.to_device(g, device), gd.to_device(zeros, device)))
            for a, r in zip(got, vjp_ref((g, zeros)), strict=True):
                np.testing.assert_allclose(gd.to_numpy(a), r, **_tol(dtype))
    for shape, k in LN_DEVICE_SHAPES:
        host = [(rng.standard_normal(shape) - 2).astype(dtype),
                rng.standard_normal(shape[-k:]).astype(dtype),
                rng.standard_normal(shape[-k:]).astype(dtype)]
        g = rng.standard_normal(shape).astype(dtype)
        y_ref, vjp_ref = gd.vjp(layer_norm, *host)
        y, vjp = gd.vjp(layer_norm, *gd.to_device(host, device))
        assert gd.backend.device_of(y) == device and y.dtype == dtype
        np.testing.assert_allclose(gd.to_numpy(y), y_ref, **_tol(dtype))
        for a, r in zip(vjp(gd.to_device(g, device)), vjp_ref(g), strict=True):
            np.testing.assert_allclose(gd.to_numpy(a), r, **_tol(dtype))


@pytest.mark.gpu
def test_gpu_grad_checks_and_empty_batches():
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(62)
    x, w = cupy.asarray(rng.standard_normal((3, 2, 3))), cupy.asarray(rng.standard_normal(2))
    check_grad(lambda a, b: batch_norm(a, b, None, None, None, True)[0], x, w)
    y, _ = batch_norm(cupy.zeros((0, 2, 3)), None, None, cupy.zeros(2), cupy.ones(2), False)
    assert y.shape == (0, 2, 3)
    assert layer_norm(cupy.zeros((0, 4)), None, None).shape == (0, 4)
    assert NK.BATCH_NORM_KERNELS.filename == "batch_norm.cu"
    assert NK.LAYER_NORM_KERNELS.filename == "layer_norm.cu"
    assert NM._bn_train.name == "batch_norm_train"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_takes_running_statistics_as_lists_in_training(dtype):
    # As gamma/beta and the eval path do: a list is float64 data (NumPy's promotion, so a
    # float32 x computes in float64) and the new statistics are arrays of that dtype. The
    # running update used to raise a bare TypeError on lists.
    x = np.random.default_rng(0).standard_normal((4, 3, 2)).astype(dtype)
    lists = batch_norm(x, None, None, [0.0, 0.5, 1.0], [1.0, 2.0, 3.0], train=True)
    arrays = batch_norm(x, None, None, np.array([0.0, 0.5, 1.0]), np.array([1.0, 2.0, 3.0]),
                        train=True)
    assert lists[0].dtype == np.float64
    np.testing.assert_array_equal(lists[0], arrays[0])
    for got, want in zip(lists[1], arrays[1]):
        assert type(got) is np.ndarray and got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
