"""Initializers: variances and bounds statistically, orthogonality, fans, names."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn import initializers as inits

SHAPE = (400, 500)  # fan_in 500, fan_out 400; 200k samples: std within ~0.5%
FAN_IN, FAN_OUT = 500, 400


def _draw(init, shape=SHAPE, dtype=np.float64):
    return np.asarray(init(gd.random.key(7), shape, dtype=dtype, device="cpu"))


@pytest.mark.parametrize("name, std", [
    ("he_normal", math.sqrt(2 / FAN_IN)),
    ("kaiming_normal", math.sqrt(2 / FAN_IN)),
    ("lecun_normal", math.sqrt(1 / FAN_IN)),
    ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("xavier_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
])
def test_normal_initializers_std(name, std):
    w = _draw(inits.get(name, None))
    assert abs(w.std() / std - 1) < 0.03
    assert abs(w.mean()) < 0.03 * std


@pytest.mark.parametrize("name, bound", [
    ("he_uniform", math.sqrt(6 / FAN_IN)),
    ("kaiming_uniform", math.sqrt(6 / FAN_IN)),
    ("lecun_uniform", math.sqrt(3 / FAN_IN)),
    ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("xavier_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("torch_default", 1 / math.sqrt(FAN_IN)),
])
def test_uniform_initializers_bounds(name, bound):
    w = _draw(inits.get(name, None))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.03


def test_basic_initializers():
    np.testing.assert_array_equal(_draw(inits.zeros(), (3, 2)), 0.0)
    np.testing.assert_array_equal(_draw(inits.ones(), (3, 2)), 1.0)
    np.testing.assert_array_equal(_draw(inits.constant(0.1), (2,)), 0.1)
    w = _draw(inits.normal(mean=2.0, std=0.5))
    assert abs(w.std() - 0.5) < 0.01 and abs(w.mean() - 2.0) < 0.01
    w = _draw(inits.uniform(-2.0, 3.0))
    assert w.min() >= -2.0 and w.max() < 3.0 and abs(w.mean() - 0.5) < 0.02
    assert _draw(inits.he_normal(), (4, 4), np.float32).dtype == np.float32


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (16, 4, 3, 3)])
def test_orthogonal(shape):
    w = _draw(inits.orthogonal(gain=2.0), shape)
    assert w.shape == shape
    m = w.reshape(shape[0], -1) / 2.0
    if m.shape[0] >= m.shape[1]:
        np.testing.assert_allclose(m.T @ m, np.eye(m.shape[1]), atol=1e-10)
    else:
        np.testing.assert_allclose(m @ m.T, np.eye(m.shape[0]), atol=1e-10)


def test_fans_follow_torch():
    assert inits.fans((8,)) == (8, 8)
    assert inits.fans((3, 4)) == (4, 3)  # Linear weight (out, in)
    assert inits.fans((16, 4, 3, 3)) == (36, 144)  # conv OIHW
    assert inits.fans((5, 2, 3)) == (6, 15)  # conv1d
    conv = _draw(inits.he_normal(), (64, 32, 5, 5))
    assert abs(conv.std() / math.sqrt(2 / (32 * 25)) - 1) < 0.03


def test_layer_defaults_match_torch():
    # torch: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    p, _ = nn.Dense(300).init(gd.random.key(0), np.zeros((1, 400)))
    bound = 1 / math.sqrt(400)
    for leaf in (p["weight"], p["bias"]):
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.95 * bound
    p, _ = nn.Conv2d(64, 3).init(gd.random.key(0), np.zeros((1, 32, 5, 5)))
    bound = 1 / math.sqrt(32 * 9)
    assert np.abs(p["weight"]).max() <= bound and np.abs(p["weight"]).max() > 0.99 * bound
    assert abs(p["weight"].std() / (bound / math.sqrt(3)) - 1) < 0.03
    p, _ = nn.ConvTranspose2d(16, 3).init(gd.random.key(0), np.zeros((1, 8, 5, 5)))
    assert p["weight"].shape == (8, 16, 3, 3)
    bound = 1 / math.sqrt(16 * 9)  # torch takes fan_in from weight.shape[1]
    assert np.abs(p["bias"]).max() <= bound


def test_layers_accept_initializers_by_name_or_function_and_are_deterministic():
    layer = nn.Dense(3, weight_init="zeros", bias_init=inits.constant(0.5))
    p, _ = layer.init(gd.random.key(0), np.zeros((1, 2)))
    np.testing.assert_array_equal(p["weight"], 0.0)
    np.testing.assert_array_equal(p["bias"], 0.5)
    a, _ = nn.Dense(3, weight_init="he_normal").init(gd.random.key(1), np.zeros((1, 2)))
    b, _ = nn.Dense(3, weight_init="he_normal").init(gd.random.key(1), np.zeros((1, 2)))
    c, _ = nn.Dense(3, weight_init="he_normal").init(gd.random.key(2), np.zeros((1, 2)))
    np.testing.assert_array_equal(a["weight"], b["weight"])
    assert not np.array_equal(a["weight"], c["weight"])


def test_params_dtype_follows_example():
    p, _ = nn.Dense(2).init(gd.random.key(0), np.zeros((1, 3), np.float64))
    assert p["weight"].dtype == np.float64
    p, _ = nn.Dense(2).init(gd.random.key(0), np.zeros((1, 3), np.float32))
    assert p["weight"].dtype == np.float32
    p, _ = nn.Dense(2).init(gd.random.key(0), np.zeros((1, 3), np.int64))
    assert p["weight"].dtype == np.float32  # integer examples give float32 params


def test_unknown_initializer_name():
    with pytest.raises(ValueError, match="unknown initializer 'he_gaussian'") as err:
        inits.get("he_gaussian", inits.zeros())
    assert "he_normal" in str(err.value) and "orthogonal" in str(err.value)
    with pytest.raises(ValueError, match="mode"):
        inits.variance_scaling(1.0, "fan_sum", "normal")
    with pytest.raises(ValueError, match="distribution"):
        inits.variance_scaling(1.0, "fan_in", "cauchy")
