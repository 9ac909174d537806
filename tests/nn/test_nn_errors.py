"""Bad inputs give named errors that say what was expected."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn


def test_conv2d_wrong_rank_names_layout():
    with pytest.raises(gd.ShapeError, match=r"nn.Conv2d: expects a 4-D input \(N, C, H, W\)"):
        nn.Conv2d(4, 3).init(gd.random.key(0), np.zeros((3, 8, 8)))
    with pytest.raises(gd.ShapeError, match=r"\(N, C, L\)"):
        nn.Conv1d(4, 3).init(gd.random.key(0), np.zeros((1, 3, 8, 8)))
    with pytest.raises(gd.ShapeError, match="groups=2 must divide"):
        nn.Conv2d(4, 3, groups=2).init(gd.random.key(0), np.zeros((1, 3, 8, 8)))
    with pytest.raises(gd.ShapeError, match=r"\(N, C, H, W\)"):
        nn.MaxPool2d(2).apply({}, {}, np.zeros((8, 8)))
    with pytest.raises(gd.ShapeError, match="rank"):
        nn.BatchNorm2d().init(gd.random.key(0), np.zeros((2, 3)))


def _seq():
    net = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(2)])
    params, state = net.init(gd.random.key(0), np.zeros((1, 4)))
    return net, params, state


def test_sequential_params_mismatch_names_missing_and_extra():
    net, params, state = _seq()
    bad = {"0": params["0"], "bogus": params["2"]}
    with pytest.raises(gd.TreeMismatchError) as err:
        net.apply(bad, state, np.zeros((1, 4)))
    assert "missing keys ['2']" in str(err.value)
    assert "extra keys ['bogus']" in str(err.value)
    bad = dict(params, **{"0": {"weight": params["0"]["weight"], "b": params["0"]["bias"]}})
    with pytest.raises(gd.TreeMismatchError, match=r"missing keys \['bias'\], extra keys \['b'\]"):
        net.apply(bad, state, np.zeros((1, 4)))


def test_model_params_mismatch_names_missing_and_extra():
    x = nn.Input((4,))
    model = nn.Model(x, nn.Dense(2)(nn.Dense(3)(x)))
    params, state = model.init(gd.random.key(0))
    bad = {"dense1": params["dense1"], "dense9": params["dense2"]}
    with pytest.raises(gd.TreeMismatchError) as err:
        model.apply(bad, state, np.zeros((1, 4), np.float32))
    assert "missing keys ['dense2']" in str(err.value)
    assert "extra keys ['dense9']" in str(err.value)


def test_dense_feature_mismatch():
    layer = nn.Dense(3)
    params, _ = layer.init(gd.random.key(0), np.zeros((2, 4)))
    with pytest.raises(gd.ShapeError, match="input has 5 features but the weight expects 4"):
        layer.apply(params, {}, np.zeros((2, 5)))


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="nope") as err:
        nn.Activation("nope")
    assert "relu" in str(err.value) and "sigmoid" in str(err.value)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match="nn.Lambda"):
        nn.Sequential([nn.Dense(2), lambda x: x])
    with pytest.raises(ValueError, match="features"):
        nn.Dense(0)
    block = nn.Residual(nn.Dense(5))
    with pytest.raises(gd.ShapeError, match="projection"):
        block.init(gd.random.key(0), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unknown initializer 'nope'"):
        nn.Dense(3, weight_init="nope").init(gd.random.key(0), np.zeros((1, 2)))
    with pytest.raises(gd.ShapeError, match="does not end in"):
        nn.LayerNorm(4).init(gd.random.key(0), np.zeros((2, 5)))
    with pytest.raises(gd.ShapeError, match="vectors must be"):
        nn.Embedding.from_pretrained(np.zeros(3))
