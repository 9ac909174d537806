"""BatchNorm and Dropout behave differently in training and evaluation."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn


def _bn_reference(x, axes, mean, var, w, b, eps=1e-5):
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) \
        + b.reshape(shape)


@pytest.mark.parametrize("cls, shape, axes", [
    (nn.BatchNorm1d, (16, 3), (0,)),
    (nn.BatchNorm1d, (8, 3, 5), (0, 2)),
    (nn.BatchNorm2d, (4, 3, 5, 5), (0, 2, 3)),
])
def test_batchnorm_train_updates_running_stats_and_eval_uses_them(cls, shape, axes):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3.0 + 2.0
    bn = cls(momentum=0.1)
    params, state = bn.init(gd.random.key(0), x)
    params = {"weight": rng.uniform(0.5, 1.5, 3), "bias": rng.standard_normal(3)}
    np.testing.assert_allclose(state["running_mean"], 0.0)
    np.testing.assert_allclose(state["running_var"], 1.0)

    # eval: running statistics used and left unchanged
    y_eval, same = bn.apply(params, state, x, train=False)
    np.testing.assert_allclose(same["running_mean"], state["running_mean"])
    np.testing.assert_allclose(same["running_var"], state["running_var"])
    np.testing.assert_allclose(
        y_eval, _bn_reference(x, axes, np.zeros(3), np.ones(3), params["weight"], params["bias"]),
        rtol=1e-10)

    # train: batch statistics (biased var) normalise; running stats move with momentum,
    # using the unbiased batch variance (torch)
    y, new = bn.apply(params, state, x, train=True)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    n = x.size // 3
    np.testing.assert_allclose(
        y, _bn_reference(x, axes, mean, var, params["weight"], params["bias"]), rtol=1e-9)
    np.testing.assert_allclose(new["running_mean"], 0.9 * 0.0 + 0.1 * mean, rtol=1e-10)
    np.testing.assert_allclose(new["running_var"], 0.9 * 1.0 + 0.1 * var * n / (n - 1),
                               rtol=1e-10)

    # eval after training uses the updated running statistics
    y2, after = bn.apply(params, new, x, train=False)
    np.testing.assert_allclose(after["running_mean"], new["running_mean"])
    np.testing.assert_allclose(
        y2, _bn_reference(x, axes, new["running_mean"], new["running_var"], params["weight"],
                          params["bias"]), rtol=1e-10)


def test_batchnorm_state_flows_through_sequential():
    rng = np.random.default_rng(1)
    net = nn.Sequential([nn.Dense(4), nn.BatchNorm1d(), nn.ReLU(), nn.Dense(2)])
    x = rng.standard_normal((10, 3))
    params, state = net.init(gd.random.key(0), x)
    assert sorted(state) == ["1"]
    _, s_eval = net.apply(params, state, x)
    np.testing.assert_allclose(s_eval["1"]["running_mean"], 0.0)
    _, s_train = net.apply(params, state, x, train=True)
    h = x @ params["0"]["weight"].T + params["0"]["bias"]
    np.testing.assert_allclose(s_train["1"]["running_mean"], 0.1 * h.mean(0), rtol=1e-6)
    # the input state is not mutated (pure functions)
    np.testing.assert_allclose(state["1"]["running_mean"], 0.0)


def test_batchnorm_missing_state_is_a_clear_error():
    bn = nn.BatchNorm1d()
    x = np.ones((4, 2))
    params, _ = bn.init(gd.random.key(0), x)
    with pytest.raises(KeyError, match="running_mean"):
        bn.apply(params, {}, x)


def test_dropout_train_zeroes_rate_fraction_and_scales():
    rate = 0.3
    x = np.ones((200, 250))
    drop = nn.Dropout(rate)
    y, _ = drop.apply({}, {}, x, train=True, key=gd.random.key(0))
    zero = float((y == 0).mean())
    assert abs(zero - rate) < 0.01  # 50,000 draws: std of the fraction ~0.002
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - rate))
    assert abs(float(y.mean()) - 1.0) < 0.02  # inverted dropout keeps the expectation


def test_dropout_eval_is_identity_and_keys_decide_the_mask():
    x = np.random.default_rng(0).standard_normal((20, 20))
    drop = nn.Dropout(0.5)
    y, _ = drop.apply({}, {}, x, train=False)
    np.testing.assert_array_equal(y, x)
    a, _ = drop.apply({}, {}, x, train=True, key=gd.random.key(1))
    b, _ = drop.apply({}, {}, x, train=True, key=gd.random.key(1))
    c, _ = drop.apply({}, {}, x, train=True, key=gd.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_without_key_in_training_raises():
    drop = nn.Dropout(0.5)
    with pytest.raises(ValueError, match="key"):
        drop.apply({}, {}, np.ones(4), train=True)
    net = nn.Sequential([nn.Dense(3), nn.Dropout(0.2)])
    params, state = net.init(gd.random.key(0), np.ones((2, 2)))
    with pytest.raises(ValueError, match="train=True needs a random key"):
        net.apply(params, state, np.ones((2, 2)), train=True)
    net.apply(params, state, np.ones((2, 2)), train=True, key=gd.random.key(3))


def test_dropout_rate_validated():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)


def test_sequential_gives_each_dropout_its_own_key():
    net = nn.Sequential([nn.Dropout(0.5), nn.Dropout(0.5)])
    x = np.ones((50, 50))
    y, _ = net.apply({}, {}, x, train=True, key=gd.random.key(0))
    # two independent masks: about 1/4 of the elements survive, scaled by 4
    assert abs(float((y != 0).mean()) - 0.25) < 0.03
    np.testing.assert_allclose(y[y != 0], 4.0)
