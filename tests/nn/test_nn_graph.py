"""Keras-style graphs (nn.Input / nn.Model), combinators and weight sharing."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.testing import check_grad


def _dense(p, x):
    return x @ p["weight"].T + p["bias"]


def test_multi_input_multi_output_model_init_from_input_shapes():
    a, b = nn.Input((3,), dtype=np.float64), nn.Input((2,), dtype=np.float64)
    ha, hb = nn.Dense(4, name="fa")(a), nn.Dense(4, name="fb")(b)
    s = nn.Add()([ha, hb])
    out1 = nn.Dense(1, name="head")(nn.Tanh()(s))
    out2 = nn.Concatenate(axis=1)([s, a])
    model = nn.Model([a, b], [out1, out2])
    params, state = model.init(gd.random.key(0))  # no example: built from the Input shapes
    assert sorted(params) == ["fa", "fb", "head"]
    assert params["fa"]["weight"].shape == (4, 3)
    assert params["fb"]["weight"].shape == (4, 2)
    assert params["head"]["weight"].shape == (1, 4)
    assert params["fa"]["weight"].dtype == np.float64
    assert state == {}

    rng = np.random.default_rng(0)
    xa, xb = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    (y1, y2), _ = model.apply(params, state, (xa, xb))
    s_ref = _dense(params["fa"], xa) + _dense(params["fb"], xb)
    np.testing.assert_allclose(y1, _dense(params["head"], np.tanh(s_ref)), rtol=1e-12)
    np.testing.assert_allclose(y2, np.concatenate([s_ref, xa], axis=1), rtol=1e-12)

    check_grad(lambda p, u, v: model.apply(p, state, (u, v))[0], params, xa, xb)


def test_skip_connection():
    x = nn.Input((4,), dtype=np.float64)
    h = nn.Dense(4)(x)
    y = nn.Add()([nn.Dense(4)(nn.ReLU()(h)), h])
    model = nn.Model(x, nn.Dense(2)(y))
    params, state = model.init(gd.random.key(1))
    assert sorted(params) == ["dense1", "dense2", "dense3"]
    xv = np.random.default_rng(1).standard_normal((3, 4))
    out, _ = model.apply(params, state, xv)
    h_ref = _dense(params["dense1"], xv)
    ref = _dense(params["dense3"], _dense(params["dense2"], np.maximum(h_ref, 0)) + h_ref)
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_layer_called_with_several_positional_inputs_gets_them_all():
    a, b = nn.Input((2,)), nn.Input((2,))
    model = nn.Model([a, b], nn.Add()(a, b))  # same as nn.Add()([a, b])
    (params, state) = model.init(gd.random.key(0))
    y, _ = model.apply(params, state, (np.ones((1, 2)), 2 * np.ones((1, 2))))
    np.testing.assert_allclose(y, 3.0)


def test_model_with_integer_input_and_embedding():
    tokens = nn.Input((3,), dtype="int64")
    h = nn.Flatten()(nn.Embedding(10, 4)(tokens))
    model = nn.Model(tokens, nn.Dense(2)(h))
    params, state = model.init(gd.random.key(0))
    assert params["embedding1"]["weight"].shape == (10, 4)
    assert params["dense1"]["weight"].shape == (2, 12)
    y, _ = model.apply(params, state, np.array([[1, 2, 3], [9, 0, 0]]))
    assert y.shape == (2, 2)


def test_model_nested_in_sequential_and_graph_errors():
    x = nn.Input((3,))
    inner = nn.Model(x, nn.Dense(4)(x))
    net = nn.Sequential([inner, nn.ReLU(), nn.Dense(1)])
    params, state = net.init(gd.random.key(0), np.zeros((2, 3), np.float32))
    assert sorted(params) == ["0", "2"]
    assert params["0"]["dense1"]["weight"].shape == (4, 3)
    assert net.apply(params, state, np.ones((5, 3), np.float32))[0].shape == (5, 1)

    with pytest.raises(ValueError, match="expected 1 inputs, got 2"):
        inner.apply(params["0"], {}, (np.ones((1, 3)), np.ones((1, 3))))
    other = nn.Input((3,))
    with pytest.raises(ValueError, match="inputs not listed"):
        nn.Model(x, nn.Add()([nn.Dense(2)(x), nn.Dense(2)(other)]))
    with pytest.raises(TypeError, match="apply"):
        nn.Dense(2)(np.ones((1, 3)))


def test_shared_dense_in_sequential_counts_once():
    shared = nn.Dense(4)
    net = nn.Sequential([shared, nn.Tanh(), shared])
    x = np.random.default_rng(0).standard_normal((2, 4))
    params, state = net.init(gd.random.key(0), x)
    assert list(params) == ["0"]
    y, _ = net.apply(params, state, x)
    p = params["0"]
    np.testing.assert_allclose(y, _dense(p, np.tanh(_dense(p, x))), rtol=1e-12)
    data = net.summary_dict(x)
    assert data["total_params"] == 4 * 4 + 4
    dense_rows = [r for r in data["rows"] if r["type"] == "Dense"]
    assert [r["params"] for r in dense_rows] == [20, 0]  # second use adds nothing
    # the gradient accumulates over both uses
    check_grad(lambda q, v: net.apply(q, state, v)[0], params, x)


def test_shared_dense_in_graph_model_counts_once():
    x = nn.Input((4,), dtype=np.float64)
    shared = nn.Dense(4)
    model = nn.Model(x, shared(nn.Tanh()(shared(x))))
    params, state = model.init(gd.random.key(0))
    assert list(params) == ["dense1"]
    xv = np.random.default_rng(2).standard_normal((3, 4))
    y, _ = model.apply(params, state, xv)
    p = params["dense1"]
    np.testing.assert_allclose(y, _dense(p, np.tanh(_dense(p, xv))), rtol=1e-12)
    data = model.summary_dict()
    assert data["total_params"] == 20
    assert sum(r["params"] for r in data["rows"]) == 20
    assert gd.nn.count_params(params) == 20


def test_residual_with_and_without_projection():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3))
    block = nn.Residual(nn.Dense(3))
    p, s = block.init(gd.random.key(0), x)
    np.testing.assert_allclose(block.apply(p, s, x)[0], _dense(p["body"], x) + x, rtol=1e-12)

    proj = nn.Residual(nn.Sequential([nn.Dense(5), nn.ReLU()]), projection=nn.Dense(5))
    p, s = proj.init(gd.random.key(1), x)
    assert sorted(p) == ["body", "projection"]
    ref = np.maximum(_dense(p["body"]["0"], x), 0) + _dense(p["projection"], x)
    np.testing.assert_allclose(proj.apply(p, s, x)[0], ref, rtol=1e-12)
    check_grad(lambda q, v: proj.apply(q, s, v)[0], p, x)


def test_parallel_and_concat():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3))
    par = nn.Parallel([nn.Dense(2), nn.Dense(4)])
    p, s = par.init(gd.random.key(0), x)
    ys, _ = par.apply(p, s, x)
    np.testing.assert_allclose(ys[0], _dense(p["dense1"], x), rtol=1e-12)
    np.testing.assert_allclose(ys[1], _dense(p["dense2"], x), rtol=1e-12)

    cat = nn.Concat([nn.Dense(2), nn.Identity()], axis=-1)
    p, s = cat.init(gd.random.key(0), x)
    assert sorted(p) == ["dense1"]
    y, _ = cat.apply(p, s, x)
    np.testing.assert_allclose(y, np.concatenate([_dense(p["dense1"], x), x], -1), rtol=1e-12)


def test_children_names_and_explicit_names():
    net = nn.Sequential([nn.Dense(2, name="fc"), nn.Dense(2), nn.Dense(2, name="dense1")])
    params, _ = net.init(gd.random.key(0), np.zeros((1, 2)))
    assert list(params) == ["fc", "1", "dense1"]  # unnamed children keyed by position, as torch
    net = nn.Sequential({"conv": nn.Dense(2), "act": nn.ReLU(), "head": nn.Dense(1)})
    params, _ = net.init(gd.random.key(0), np.zeros((1, 2)))
    assert list(params) == ["conv", "head"] and net["head"] is net[2]  # torch's OrderedDict form
    with pytest.raises(ValueError, match="both named '1'"):
        nn.Sequential([nn.Dense(2, name="1"), nn.Dense(3)])
    with pytest.raises(ValueError, match="both named 'fc'"):
        nn.Sequential([nn.Dense(2, name="fc"), nn.Dense(3, name="fc")])


def test_trainable_mask_and_frozen_layers():
    frozen = nn.Dense(3)
    frozen.trainable = False
    net = nn.Sequential([frozen, nn.ReLU(), nn.Dense(2)])
    params, _ = net.init(gd.random.key(0), np.zeros((1, 4)))
    mask = net.trainable_mask(params)
    assert mask == {"0": {"weight": False, "bias": False},
                    "2": {"weight": True, "bias": True}}
    gd.tree.assert_same_structure(mask, params)


def test_init_runs_each_layer_forward_once_however_deeply_nested():
    calls = {"n": 0}

    class Counting(nn.Layer):
        def apply(self, params, state, x, *, train=False, key=None):
            calls["n"] += 1
            return x, state

    leaf = Counting()
    nested = nn.Sequential([nn.Sequential([nn.Residual(nn.Sequential([leaf]))])])
    nested.init(gd.random.key(0), np.zeros((2, 3)))
    assert calls["n"] == 1
    calls["n"] = 0
    x = nn.Input((3,))
    nn.Model(x, nn.Sequential([leaf])(x)).init(gd.random.key(0))
    assert calls["n"] == 1
