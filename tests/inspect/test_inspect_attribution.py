"""Saliency, SmoothGrad and Grad-CAM against closed forms and float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import inspect, ops


def _linear(seed=0, n_in=4, n_out=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)


def _mlp(xp):
    rng = np.random.default_rng(1)
    w1, w2 = xp.asarray(rng.standard_normal((6, 4))), xp.asarray(rng.standard_normal((3, 6)))
    return lambda x: ops.tanh(x @ w1.T) @ w2.T


def _finite_diff_score_grad(fn, x, target, h=1e-6):
    """Central differences of sum_n fn(x)[n, target[n]], one input element at a time."""
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    rows = np.arange(x.shape[0])
    for idx in np.ndindex(x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += h
        xm[idx] -= h
        g[idx] = (fn(xp_)[rows, target].sum() - fn(xm)[rows, target].sum()) / (2 * h)
    return g


def test_saliency_of_linear_model_is_the_weight_row(device, xp):
    w, b = _linear()
    x = np.random.default_rng(2).standard_normal((3, 4))
    target = np.array([0, 2, 4])
    fn = lambda x: x @ xp.asarray(w).T + xp.asarray(b)  # noqa: E731
    g = inspect.saliency(fn, xp.asarray(x), target=xp.asarray(target))
    assert gd.get_array_module(g) is xp
    np.testing.assert_allclose(gd.to_numpy(g), w[target], rtol=1e-12)
    fd = _finite_diff_score_grad(lambda v: v @ w.T + b, x, target)
    np.testing.assert_allclose(gd.to_numpy(g), fd, atol=1e-7)


def test_saliency_nonlinear_matches_finite_differences_and_defaults_to_argmax(device, xp):
    fn = _mlp(xp)
    x = np.random.default_rng(3).standard_normal((4, 4))
    predicted = gd.to_numpy(fn(xp.asarray(x))).argmax(axis=1)
    g = gd.to_numpy(inspect.saliency(fn, xp.asarray(x)))  # target=None: the argmax class
    host = _mlp(np)
    np.testing.assert_allclose(g, _finite_diff_score_grad(host, x, predicted), atol=1e-6)
    # one int target means that class for every sample
    g1 = gd.to_numpy(inspect.saliency(fn, xp.asarray(x), target=1))
    np.testing.assert_allclose(g1, _finite_diff_score_grad(host, x, np.ones(4, int)), atol=1e-6)


def test_saliency_reductions():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 2 * 3 * 3))
    fn = lambda x: x.reshape(x.shape[0], -1) @ w.T  # noqa: E731  (N, C=2, 3, 3) -> (N, 3)
    x = rng.standard_normal((2, 2, 3, 3))
    raw = inspect.saliency(fn, x, target=[1, 2])
    expected = w[[1, 2]].reshape(2, 2, 3, 3)
    np.testing.assert_allclose(raw, expected)
    np.testing.assert_allclose(inspect.saliency(fn, x, [1, 2], reduce="abs"), np.abs(expected))
    np.testing.assert_allclose(inspect.saliency(fn, x, [1, 2], reduce="abs_max"),
                               np.abs(expected).max(axis=1))
    with pytest.raises(ValueError, match="reduce"):
        inspect.saliency(fn, x, 0, reduce="mean")
    with pytest.raises(gd.ShapeError, match="target"):
        inspect.saliency(fn, x, 7)


def test_smoothgrad_zero_noise_equals_saliency(device, xp):
    fn = _mlp(xp)
    x = xp.asarray(np.random.default_rng(5).standard_normal((3, 4)))
    key = gd.random.key(0)
    sg = inspect.smoothgrad(fn, x, key, target=2, n_samples=4, noise=0.0)
    np.testing.assert_allclose(gd.to_numpy(sg), gd.to_numpy(inspect.saliency(fn, x, 2)),
                               rtol=1e-12, atol=1e-14)


def test_smoothgrad_is_an_average_over_keyed_noise():
    fn = _mlp(np)
    x = np.random.default_rng(6).standard_normal((2, 4))
    key = gd.random.key(3)
    a = inspect.smoothgrad(fn, x, key, target=0, n_samples=8, noise=0.3)
    np.testing.assert_array_equal(a, inspect.smoothgrad(fn, x, key, 0, n_samples=8, noise=0.3))
    assert not np.allclose(a, inspect.smoothgrad(fn, x, gd.random.key(4), 0, 8, 0.3))
    # Rebuild the average by hand from the documented noise: sigma = noise * (max - min).
    sigma = 0.3 * (x.max(axis=1) - x.min(axis=1))[:, None]
    grads = [inspect.saliency(fn, x + sigma * gd.random.normal(k, x.shape, dtype=x.dtype), 0)
             for k in gd.random.split(key, 8)]
    np.testing.assert_allclose(a, np.mean(grads, axis=0), rtol=1e-12)


def test_grad_cam_on_a_hand_made_model(device, xp):
    # features: identity on (N, C, H, W); head: global average pool then a linear layer.
    # dS_k/dA[c, h, w] = V[k, c] / (H W), so the Grad-CAM weights are V[k] / (H W) and the
    # map is relu(sum_c V[k, c] / (H W) * A[c]).
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 3, 4, 5))
    v = rng.standard_normal((2, 3))

    def head(feats):
        return ops.mean(feats, axis=(2, 3)) @ xp.asarray(v).T

    target = np.array([1, 0])
    cam = inspect.grad_cam(lambda x: x, head, xp.asarray(a), target=xp.asarray(target))
    expected = np.zeros((2, 4, 5))
    for n in range(2):
        for c in range(3):
            expected[n] += v[target[n], c] / 20 * a[n, c]
    np.testing.assert_allclose(gd.to_numpy(cam), np.maximum(expected, 0), rtol=1e-12)
    assert (expected < 0).any()  # the relu mattered
    raw = inspect.grad_cam(lambda x: x, head, xp.asarray(a), target=xp.asarray(target),
                           relu=False)
    np.testing.assert_allclose(gd.to_numpy(raw), expected, rtol=1e-12)
    normed = gd.to_numpy(inspect.grad_cam(lambda x: x, head, xp.asarray(a), target=xp.asarray(
        target), normalize=True))
    np.testing.assert_allclose(normed.max(axis=(1, 2)), 1.0)
    big = inspect.grad_cam(lambda x: x, head, xp.asarray(a), target=xp.asarray(target),
                           size=(8, 10))
    assert big.shape == (2, 8, 10)


def test_grad_cam_through_a_conv_features_function():
    # features = conv2d; check the weights are the pooled gradient by comparing with an
    # explicit computation of dS/dA through the head.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 6, 6))
    k = rng.standard_normal((4, 2, 3, 3))
    lin = rng.standard_normal((3, 4 * 4 * 4))
    feats = lambda x: gd.functional.conv2d(x, k)  # noqa: E731  (1, 4, 4, 4)
    head = lambda a: ops.reshape(a, (a.shape[0], -1)) @ lin.T  # noqa: E731
    a = feats(x)
    cam = inspect.grad_cam(feats, head, x, target=2, relu=False)
    w = lin[2].reshape(4, 4, 4).mean(axis=(1, 2))  # dS/dA is lin[2] reshaped
    np.testing.assert_allclose(cam[0], np.tensordot(w, a[0], axes=1), rtol=1e-10)


def test_resize_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(9).standard_normal((2, 3, 5))
    ours = inspect.resize_bilinear(maps, (7, 4))
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(7, 4),
                                          mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inspect.resize_bilinear(maps, (3, 5)), maps)
