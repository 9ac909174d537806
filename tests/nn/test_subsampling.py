"""nn.Subsampling2d (LeNet-5's trainable subsampling) and lenet5(pool="subsampling")."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import models, nn
from gpudl.nn.subsampling import lecun_tanh
from gpudl.testing import check_grad

R = np.random.default_rng(7)


def _reference(x, weight, bias, k, s, squash):
    """Naive float64 loops: f(weight[c] * mean(window) + bias[c]) per output cell."""
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, ho, wo))
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    total = 0.0
                    for di in range(k):
                        for dj in range(k):
                            total += x[b, ch, i * s + di, j * s + dj]
                    a = weight[ch] * (total / (k * k)) + (0.0 if bias is None else bias[ch])
                    out[b, ch, i, j] = squash(a)
    return out


def _lecun(a):
    return 1.7159 * math.tanh(2.0 * a / 3.0)


def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


@pytest.mark.parametrize("k, s, activation, squash", [
    (2, None, "lecun_tanh", _lecun),
    (3, 2, "sigmoid", _sigmoid),  # overlapping windows
    (2, 1, None, lambda a: a),
])
def test_matches_naive_loop_reference(k, s, activation, squash):
    x = R.standard_normal((2, 3, 7, 6))
    layer = nn.Subsampling2d(k, s, activation=activation)
    params, state = layer.init(gd.random.key(0), x)
    params = {"weight": R.standard_normal(3), "bias": R.standard_normal(3)}
    y, new_state = layer.apply(params, state, x)
    ref = _reference(x, params["weight"], params["bias"], k, s or k, squash)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert new_state == {}


def test_without_bias_and_initial_values():
    x = R.standard_normal((1, 2, 4, 4))
    layer = nn.Subsampling2d(2, activation="tanh", bias=False)
    params, _ = layer.init(gd.random.key(0), x)
    assert sorted(params) == ["weight"]
    # Untrained: coefficient 1 (plain average pooling, then the squashing function).
    np.testing.assert_array_equal(params["weight"], [1.0, 1.0])
    y, _ = layer.apply(params, {}, x)
    np.testing.assert_allclose(y, _reference(x, params["weight"], None, 2, 2, math.tanh),
                               rtol=1e-12)


def test_gradient_check_float64():
    x = R.standard_normal((2, 3, 6, 6))
    layer = nn.Subsampling2d(2)
    params = {"weight": R.standard_normal(3), "bias": R.standard_normal(3)}
    check_grad(lambda p, inp: layer.apply(p, {}, inp)[0], params, x, mode="full")
    overlapping = nn.Subsampling2d(3, 2, activation="sigmoid")
    check_grad(lambda p, inp: overlapping.apply(p, {}, inp)[0], params, x)


def test_two_parameters_per_channel():
    layer = nn.Subsampling2d(2)
    params, _ = layer.init(gd.random.key(0), np.zeros((1, 6, 28, 28), np.float32))
    assert nn.count_params(params) == 12  # LeNet-5's S2: 6 maps x (coefficient, bias)
    assert params["weight"].dtype == np.float32
    info = nn.Sequential([layer]).summary_dict(np.zeros((1, 6, 28, 28), np.float32))
    assert info["total_params"] == info["trainable_params"] == 12
    assert info["rows"][0]["output_shape"] == (1, 6, 14, 14)


def test_lecun_tanh_constants():
    # LeCun et al. 1998, Appendix A: A = 1.7159, S = 2/3, so that f(1) = 1.
    np.testing.assert_allclose(lecun_tanh(np.array([1.0, -1.0, 0.0])), [1.0, -1.0, 0.0],
                               atol=1e-4)


def test_errors_are_named():
    layer = nn.Subsampling2d(2)
    with pytest.raises(gd.ShapeError, match=r"nn.Subsampling2d: expects a 4-D input"):
        layer.init(gd.random.key(0), np.zeros((6, 28, 28)))
    params, _ = layer.init(gd.random.key(0), np.zeros((1, 6, 8, 8)))
    with pytest.raises(gd.ShapeError, match=r"'weight' has shape \(6,\), expected \(4,\)"):
        layer.apply(params, {}, np.zeros((1, 4, 8, 8)))
    with pytest.raises(nn.LayerArgumentError, match="activation"):
        nn.Subsampling2d(2, activation=3)
    with pytest.raises(nn.LayerArgumentError, match="kernel_size must be an int >= 1"):
        nn.Subsampling2d(0)
    with pytest.raises(nn.LayerArgumentError, match="takes 3 positional arguments"):
        nn.Subsampling2d(2, 2, 0, "sigmoid")


def test_lenet5_with_trainable_subsampling():
    net = models.lenet5(pool="subsampling")
    x = np.zeros((1, 1, 28, 28), np.float32)
    params, state = net.init(gd.random.key(0), x)
    # 61,706 for the average-pooling LeNet plus 2 per channel of S2 (6) and S4 (16).
    assert nn.count_params(params) == 61706 + 2 * 6 + 2 * 16
    assert params["2"]["weight"].shape == (6,)
    assert params["5"]["bias"].shape == (16,)
    y, _ = net.apply(params, state, np.ones((3, 1, 28, 28), np.float32))
    assert y.shape == (3, 10)
    # The default is unchanged.
    p_avg, _ = models.lenet5().init(gd.random.key(0), x)
    assert nn.count_params(p_avg) == 61706
    with pytest.raises(ValueError, match="subsampling"):
        models.lenet5(pool="stochastic")


def test_lenet5_subsampling_trains_its_coefficients():
    net = models.lenet5(pool="subsampling", activation="tanh")
    x = gd.asarray(R.standard_normal((4, 1, 28, 28)).astype(np.float32))
    labels = gd.asarray(np.array([0, 1, 2, 3]))
    params, state = net.init(gd.random.key(0), x)

    def loss(p):
        return gd.functional.softmax_cross_entropy(net.apply(p, state, x)[0], labels)

    grads = gd.grad(loss)(params)
    assert np.abs(grads["2"]["weight"]).max() > 0
    assert np.abs(grads["5"]["bias"]).max() > 0
