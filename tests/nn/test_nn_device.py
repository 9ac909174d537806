"""Layers init and apply on each device; params live where the example lives."""

from __future__ import annotations

import numpy as np

import gpudl as gd
from gpudl import nn


def test_sequential_inits_and_applies_on_device(device, xp):
    net = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.LayerNorm(), nn.Dense(2)])
    x = gd.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    params, state = net.init(gd.random.key(0), x)
    for leaf in gd.tree.tree_leaves(params):
        assert gd.get_array_module(leaf) is xp
    y, _ = net.apply(params, state, x)
    assert gd.get_array_module(y) is xp and y.shape == (4, 2)
    # the same key gives the same params on every device
    cpu_params, _ = net.init(gd.random.key(0), np.zeros((1, 3), np.float32))
    np.testing.assert_allclose(gd.to_numpy(params["0"]["weight"]),
                               cpu_params["0"]["weight"], rtol=1e-6)
    grads = gd.grad(lambda p: net.apply(p, state, x)[0].sum())(params)
    assert gd.get_array_module(grads["3"]["weight"]) is xp


def test_batchnorm_and_dropout_on_device(device, xp):
    net = nn.Sequential([nn.Dense(4), nn.BatchNorm1d(), nn.Dropout(0.5)])
    x = gd.asarray(np.random.default_rng(1).standard_normal((6, 3)))
    params, state = net.init(gd.random.key(0), x)
    y, new_state = net.apply(params, state, x, train=True, key=gd.random.key(1))
    assert gd.get_array_module(y) is xp
    assert gd.get_array_module(new_state["1"]["running_mean"]) is xp


def test_save_load_on_device(device, xp, tmp_path):
    net = nn.Sequential([nn.Dense(3)])
    params, _ = net.init(gd.random.key(0), gd.asarray(np.zeros((1, 2))))
    for ext in ("npz", "safetensors"):
        path = tmp_path / f"p.{ext}"
        gd.save(path, params)
        back = gd.load(path, like=params)
        assert gd.get_array_module(back["0"]["weight"]) is xp
        np.testing.assert_array_equal(gd.to_numpy(back["0"]["weight"]),
                                      gd.to_numpy(params["0"]["weight"]))
