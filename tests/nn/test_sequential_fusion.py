"""nn.Sequential runs a plain Dense followed by a plain ReLU as one ``linear_relu`` node:
the same bits as the two layers one by one (values and gradients, float32 and float64),
the same errors, and no fusion where a layer is not plain (no bias, a subclass, a wrapped
``apply`` as nn.summary sets, a ReLU with a different function)."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.errors import ParamShapeError, ShapeError
from gpudl.nn import core
from gpudl.nn import sequential as seq_mod


def _loss_and_grads(net, params, x):
    def loss(p):
        y, _ = net.apply(p, {}, x, train=True)
        return gd.ops.sum(y * y)
    return gd.value_and_grad(loss)(params)


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    real = core.linear_relu

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(core, "linear_relu", spy)  # what Dense.apply_then_relu calls
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_dense_relu_gives_the_layers_bits(dtype, fused_calls, monkeypatch):
    net = nn.Sequential([nn.Flatten(), nn.Dense(7), nn.ReLU(), nn.Dense(5),
                         nn.Activation("relu"), nn.Dense(3)])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 4)).astype(dtype)
    x[0, 0, :2] = 0.0  # rows whose pre-activations sit at the kink come out as 0 either way
    params, _ = net.init(gd.random.key(0), x)
    fused_loss, fused_grads = _loss_and_grads(net, params, x)
    assert len(fused_calls) == 2  # both Dense + ReLU pairs
    monkeypatch.setattr(seq_mod, "_dense_then_relu", lambda a, b: False)
    loss, grads = _loss_and_grads(net, params, x)
    assert len(fused_calls) == 2  # the unfused run did not call it
    assert np.array_equal(fused_loss, loss)
    for a, b in zip(gd.tree.tree_leaves(fused_grads), gd.tree.tree_leaves(grads), strict=True):
        assert a.dtype == dtype and np.array_equal(a, b)


def test_fused_pair_keeps_the_errors():
    net = nn.Sequential([nn.Dense(4), nn.ReLU()])
    params, _ = net.init(gd.random.key(0), np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match="input has 5 features but the weight expects 3"):
        net.apply(params, {}, np.zeros((2, 5), np.float32))
    bad = {"0": {"weight": np.zeros((4, 3), np.float32), "bias": np.zeros(5, np.float32)}}
    with pytest.raises(ParamShapeError, match=r"0\.bias"):
        net.apply(bad, {}, np.zeros((2, 3), np.float32))


def test_no_fusion_where_a_layer_is_not_plain(fused_calls):
    class MyDense(nn.Dense):
        def apply(self, params, state, x, *, train=False, key=None):
            y, s = super().apply(params, state, x)
            return y + 1.0, s

    x = np.ones((2, 3), np.float32)
    for layers in ([nn.Dense(4, bias=False), nn.ReLU()], [MyDense(4), nn.ReLU()],
                   [nn.Dense(4), nn.LeakyReLU(0.1)], [nn.Dense(4), nn.Activation(np.tanh)]):
        net = nn.Sequential(layers)
        params, _ = net.init(gd.random.key(1), x)
        y, _ = net.apply(params, {}, x)
        h, _ = layers[0].apply(params["0"], {}, x)
        assert np.array_equal(y, layers[1].apply({}, {}, h)[0])
    assert fused_calls == []
    net = nn.Sequential([nn.Dense(4), nn.ReLU()])
    params, _ = net.init(gd.random.key(1), x)
    seen = []
    net.layers[1].apply = lambda p, s, h, **kw: (seen.append(h.shape), (h, s))[1]
    y, _ = net.apply(params, {}, x)  # a wrapped ReLU (nn.summary's way) is called
    assert seen == [(2, 4)] and fused_calls == []


def test_fused_pair_ignores_non_finite_cotangents_of_dead_units(monkeypatch):
    """relu's vjp is where(x > 0, g, 0): an inf or NaN cotangent of a unit the ReLU zeroed
    gives 0, fused or not (a product g * mask would give NaN)."""
    net = nn.Sequential([nn.Dense(6), nn.ReLU()])
    x = np.random.default_rng(2).standard_normal((5, 3))
    params, _ = net.init(gd.random.key(2), x)

    def pullback():
        y, back = gd.vjp(lambda p: net.apply(p, {}, x)[0], params)
        g = np.ones_like(y)
        g[y == 0] = np.nan
        g[(y == 0) & (np.arange(y.size).reshape(y.shape) % 2 == 0)] = np.inf
        assert (y == 0).any() and (y > 0).any()
        return back(g)[0]

    fused = pullback()
    monkeypatch.setattr(seq_mod, "_dense_then_relu", lambda a, b: False)
    plain = pullback()
    for a, b in zip(gd.tree.tree_leaves(fused), gd.tree.tree_leaves(plain), strict=True):
        assert np.isfinite(a).all() and np.array_equal(a, b)
