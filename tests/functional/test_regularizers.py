"""L1/L2 weight penalties: every leaf by default (as weight decay), biases out on request."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import optim
from gpudl.functional import regularizers as R


def _params(rng):
    return {
        "fc1": {"weight": rng.standard_normal((3, 2)), "bias": rng.standard_normal(3)},
        "fc2": {"weight": rng.standard_normal((1, 3))},
        "bn": {"weight": rng.standard_normal(3), "bias": rng.standard_normal(3)},
    }


def _leaves(params, skip_bias):
    return [v for layer in params.values() for k, v in layer.items()
            if not (skip_bias and k == "bias")]


def test_l2_and_l1_include_biases_by_default(rng):
    params = _params(rng)
    all_sq = sum(float((v ** 2).sum()) for v in _leaves(params, False))
    w_sq = sum(float((v ** 2).sum()) for v in _leaves(params, True))
    np.testing.assert_allclose(R.l2_penalty(params), all_sq, rtol=1e-12)
    np.testing.assert_allclose(R.l2_penalty(params, exclude_bias=True), w_sq, rtol=1e-12)
    all_abs = sum(float(np.abs(v).sum()) for v in _leaves(params, False))
    w_abs = sum(float(np.abs(v).sum()) for v in _leaves(params, True))
    np.testing.assert_allclose(R.l1_penalty(params), all_abs, rtol=1e-12)
    np.testing.assert_allclose(R.l1_penalty(params, exclude_bias=True), w_abs, rtol=1e-12)
    assert F.l2_penalty is R.l2_penalty and F.l1_penalty is R.l1_penalty


def test_l2_gradient_matches_coupled_weight_decay(rng):
    # lam/2 * l2_penalty adds lam * w to every gradient: what sgd(weight_decay=lam) does to
    # every parameter, biases included, so the two agree by default.
    params = _params(rng)
    lam, lr = 0.1, 0.5
    grads = gd.grad(lambda p: 0.5 * lam * R.l2_penalty(p))(params)
    zero = gd.tree.tree_map(np.zeros_like, params)
    opt = optim.sgd(lr, weight_decay=lam)
    updates, _ = opt.update(zero, opt.init(params), params)
    for layer in params:
        for k in params[layer]:
            np.testing.assert_allclose(grads[layer][k], lam * params[layer][k], rtol=1e-12)
            np.testing.assert_allclose(updates[layer][k], -lr * grads[layer][k], rtol=1e-12)
    g = gd.grad(lambda p: R.l2_penalty(p, exclude_bias=True))(params)
    assert not g["fc1"]["bias"].any() and not g["bn"]["bias"].any()
    np.testing.assert_allclose(g["fc2"]["weight"], 2 * params["fc2"]["weight"])


def test_exclude_bias_must_be_a_bool():
    with pytest.raises(TypeError, match="exclude_bias must be True or False"):
        R.l2_penalty({"w": np.ones(2)}, 0.01)  # a strength in the flag's slot
    with pytest.raises(TypeError, match="l1_penalty: exclude_bias"):
        R.l1_penalty({"w": np.ones(2)}, "yes")
