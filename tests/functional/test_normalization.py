"""Batch/layer/local-response normalization against per-channel float64 loops (torch formulas)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ShapeError
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
