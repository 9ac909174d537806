"""Building blocks: chain, apply_updates, clipping, weight decay, masks, frozen params,
parameter groups, structure errors, checkpointable state, and the docstring examples."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.errors import TreeMismatchError


def net():
    return {"fc1": {"weight": np.array([[1.0, -2.0], [3.0, 0.5]]), "bias": np.array([0.1, -0.1])},
            "fc2": {"weight": np.array([[2.0, 1.0]]), "bias": np.array([0.3])}}


def ones_like(tree, value=1.0):
    return gd.tree.tree_map(lambda a: np.full_like(a, value), tree)


def step(opt, params, grads, state=None):
    state = opt.init(params) if state is None else state
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), updates, state


# ----------------------------------------------------------------------------- basics
def test_apply_updates_adds_and_keeps_dtype():
    p = {"w": np.array([1.0, 2.0], np.float32)}
    out = optim.apply_updates(p, {"w": np.array([0.25, -0.5])})
    assert out["w"].dtype == np.float32 and out["w"].tolist() == [1.25, 1.5]
    assert p["w"].tolist() == [1.0, 2.0]  # inputs untouched


def test_chain_threads_updates_and_states():
    opt = optim.chain(optim.clip(1.0), optim.sgd(0.5, momentum=0.5))
    p = {"w": np.zeros(2)}
    state = opt.init(p)
    assert isinstance(state, tuple) and len(state) == 2
    u, state = opt.update({"w": np.array([4.0, -0.2])}, state, p)
    np.testing.assert_allclose(u["w"], [-0.5, 0.1])
    u, state = opt.update({"w": np.array([4.0, -0.2])}, state, p)
    np.testing.assert_allclose(u["w"], [-0.75, 0.15])  # buf = 0.5*buf + clipped g


def test_chain_rejects_non_transformations_and_foreign_state():
    with pytest.raises(TypeError, match="argument 1"):
        optim.chain(optim.clip(1.0), lambda g: g)
    opt = optim.chain(optim.clip(1.0), optim.adam())
    with pytest.raises(TreeMismatchError, match="tuple of 2 states"):
        opt.update({"w": np.ones(1)}, optim.adam().init({"w": np.ones(1)})[1:], None)


# ----------------------------------------------------------------------------- clipping
def test_clip_by_value():
    u, _ = optim.clip(0.5).update({"a": np.array([-2.0, 0.1, 0.7])}, optim.EmptyState())
    assert u["a"].tolist() == [-0.5, 0.1, 0.5]


def test_global_norm_and_clip_by_global_norm():
    g = {"a": np.array([[1.0, 2.0], [2.0, 0.0]]), "b": [np.array([4.0]), np.array(0.0)]}
    assert float(optim.global_norm(g)) == pytest.approx(5.0)  # sqrt(1+4+4+16)
    t = optim.clip_by_global_norm(2.0)
    u, _ = t.update(g, t.init(g))
    scale = 2.0 / (5.0 + 1e-6)  # torch's clip_grad_norm_ coefficient
    np.testing.assert_allclose(u["a"], g["a"] * scale)
    np.testing.assert_allclose(u["b"][0], g["b"][0] * scale)
    assert float(optim.global_norm(u)) == pytest.approx(2.0, rel=1e-6)
    # Under the limit: unchanged.
    u, _ = optim.clip_by_global_norm(10.0).update(g, optim.EmptyState())
    np.testing.assert_allclose(u["a"], g["a"])


def test_clip_by_global_norm_keeps_float32():
    g = {"a": np.full(4, 3.0, np.float32)}
    u, _ = optim.clip_by_global_norm(1.0).update(g, optim.EmptyState())
    assert u["a"].dtype == np.float32
    np.testing.assert_allclose(u["a"], np.full(4, 0.5), rtol=1e-5)


def test_clip_by_global_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(3, 2)), rng.normal(size=5)]
    ts = [torch.zeros(a.shape, dtype=torch.float64, requires_grad=True) for a in g]
    for t, a in zip(ts, g, strict=True):
        t.grad = torch.tensor(a)
    torch.nn.utils.clip_grad_norm_(ts, 1.5)
    u, _ = optim.clip_by_global_norm(1.5).update(g, optim.EmptyState())
    for t, a in zip(ts, u, strict=True):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------- decay, L1
def test_weight_decay_mask_excludes_biases_and_1d():
    p = {"conv": {"weight": np.ones((2, 1, 3, 3)), "bias": np.ones(2)},
         "ln": {"weight": np.ones(4), "bias": np.ones(4)},
         "lstm": {"w_ih": np.ones((8, 2)), "b_ih": np.ones(8)}, "b": np.ones((2, 2))}
    assert optim.weight_decay_mask(p) == {
        "conv": {"weight": True, "bias": False}, "ln": {"weight": False, "bias": False},
        "lstm": {"w_ih": True, "b_ih": False}, "b": False}


def test_add_decayed_weights_with_mask():
    p = net()
    t = optim.add_decayed_weights(0.1, mask=optim.weight_decay_mask)
    _, u, _ = step(t, p, ones_like(p, 0.0))
    np.testing.assert_allclose(u["fc1"]["weight"], 0.1 * p["fc1"]["weight"])
    np.testing.assert_allclose(u["fc1"]["bias"], 0.0)


def test_sgd_decay_mask_leaves_bias_undecayed():
    p = net()
    new, _, _ = step(optim.sgd(0.1, weight_decay=0.5, decay_mask=optim.weight_decay_mask),
                     p, ones_like(p, 0.0))
    np.testing.assert_allclose(new["fc1"]["weight"], p["fc1"]["weight"] * (1 - 0.05))
    np.testing.assert_allclose(new["fc2"]["bias"], p["fc2"]["bias"])


def test_add_l1_adds_l1_times_sign():
    p = {"w": np.array([2.0, -3.0, 0.0])}
    _, u, _ = step(optim.add_l1(0.25), p, {"w": np.array([1.0, 1.0, 1.0])})
    assert u["w"].tolist() == [1.25, 0.75, 1.0]


def test_decay_needs_params():
    t = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs the current params"):
        t.update({"w": np.ones(1)}, t.init({"w": np.ones(1)}))


# ----------------------------------------------------------------------------- frozen, masked
def test_frozen_params_unchanged_and_no_state():
    p = net()
    opt = optim.freeze({"fc1": True, "fc2": False}, optim.adamw(0.1, weight_decay=0.5))
    state = opt.init(p)
    inner_adam = state.inner_state[0]
    assert inner_adam.exp_avg["fc1"] == {"weight": None, "bias": None}  # no state kept
    grads = ones_like(p)
    for _ in range(3):
        new, updates, state = step(opt, p, grads, state)
        np.testing.assert_array_equal(new["fc1"]["weight"], p["fc1"]["weight"])
        np.testing.assert_array_equal(updates["fc1"]["bias"], 0.0)
        assert not np.allclose(new["fc2"]["weight"], p["fc2"]["weight"])
        p = new
    assert state.inner_state[0].exp_avg["fc1"] == {"weight": None, "bias": None}
    assert state.inner_state[0].count == 3


def test_freeze_alone_zeroes_updates_at_the_end_of_a_chain():
    p = net()
    opt = optim.chain(optim.sgd(0.1, momentum=0.9), optim.freeze(lambda t: {
        "fc1": {"weight": True, "bias": False}, "fc2": False}))
    new, _, _ = step(opt, p, ones_like(p))
    np.testing.assert_array_equal(new["fc1"]["weight"], p["fc1"]["weight"])
    np.testing.assert_allclose(new["fc1"]["bias"], p["fc1"]["bias"] - 0.1)


def test_masked_applies_inner_only_where_true():
    p = net()
    t = optim.masked(optim.scale(3.0), {"fc1": {"weight": True, "bias": False}, "fc2": True})
    _, u, _ = step(t, p, ones_like(p))
    assert u["fc1"]["weight"].tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert u["fc1"]["bias"].tolist() == [1.0, 1.0]  # passed through
    assert u["fc2"]["bias"].tolist() == [3.0]


def test_mask_structure_errors_name_keys():
    p = net()
    with pytest.raises(TreeMismatchError, match=r"keys missing from the mask: \['fc2'\]"):
        optim.freeze({"fc1": True}).update(ones_like(p), optim.freeze({"fc1": True}).init(p), p)
    with pytest.raises(TreeMismatchError, match=r"extra keys in the mask: \['head'\]"):
        optim.masked(optim.sgd(0.1), {"fc1": True, "fc2": True, "head": False}).init(p)


# ----------------------------------------------------------------------------- groups
def test_multi_transform_per_group_learning_rates():
    p = net()
    opt = optim.multi_transform({"backbone": optim.sgd(0.01), "head": optim.sgd(0.1, momentum=0.9)},
                                {"fc1": "backbone", "fc2": "head"})
    state = opt.init(p)
    new, u, state = step(opt, p, ones_like(p), state)
    np.testing.assert_allclose(u["fc1"]["weight"], -0.01)
    np.testing.assert_allclose(u["fc2"]["weight"], -0.1)
    _, u, state = step(opt, new, ones_like(p), state)
    np.testing.assert_allclose(u["fc2"]["bias"], -0.1 * 1.9)  # the head's momentum buffer
    head_buf = state.inner_states["head"][0].momentum_buffer
    assert head_buf["fc1"] == {"weight": None, "bias": None}


def test_multi_transform_unknown_label():
    with pytest.raises(ValueError, match=r"labels \['head'\] have no transformation"):
        optim.multi_transform({"body": optim.sgd(0.1)}, {"fc1": "body", "fc2": "head"}).init(net())


def test_scale_by_group_with_callable_labels():
    p = net()
    labels = lambda tree: {k: "slow" if k == "fc1" else "fast" for k in tree}  # noqa: E731
    opt = optim.chain(optim.scale_by_group({"slow": 0.1, "fast": 1.0}, labels), optim.sgd(1.0))
    _, u, _ = step(opt, p, ones_like(p))
    np.testing.assert_allclose(u["fc1"]["bias"], -0.1)
    np.testing.assert_allclose(u["fc2"]["bias"], -1.0)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make", [optim.adam, lambda: optim.sgd(0.1, momentum=0.9),
                                  lambda: optim.sgd(0.1), optim.rmsprop])
def test_grads_tree_mismatch_names_missing_and_extra_keys(make):
    opt = make()
    p = net()
    state = opt.init(p)
    grads = ones_like(p)
    del grads["fc2"]["bias"]
    grads["fc3"] = {"weight": np.ones(1)}
    with pytest.raises(TreeMismatchError) as info:
        opt.update(grads, state, p)
    msg = str(info.value)
    assert "['fc3']" in msg  # extra at the top level is found first
    grads = ones_like(p)
    del grads["fc2"]["bias"]
    missing = r"fc2.*keys missing from the grads tree: \['bias'\]"
    with pytest.raises(TreeMismatchError, match=missing):
        opt.update(grads, state, p)


def test_state_tree_mismatch_without_params():
    opt = optim.adam()
    state = opt.init({"a": np.ones(1)})
    with pytest.raises(TreeMismatchError, match=r"optimizer state.*\['b'\]"):
        opt.update({"b": np.ones(1)}, state)


def test_apply_updates_mismatch():
    with pytest.raises(TreeMismatchError, match=r"apply_updates.*\['b'\]"):
        optim.apply_updates({"a": np.ones(1), "b": np.ones(1)}, {"a": np.ones(1)})


# ----------------------------------------------------------------------------- state is a tree
def test_state_survives_a_checkpoint(tmp_path):
    from gpudl.train.checkpoint import load_checkpoint, save_checkpoint

    p = net()
    opt = optim.chain(optim.clip_by_global_norm(1.0),
                      optim.adamw(optim.cosine_annealing(0.1, 10),
                                  decay_mask=optim.weight_decay_mask))
    _, _, state = step(opt, p, ones_like(p))
    save_checkpoint(tmp_path / "c.npz", params=p, opt_state=state)
    back = load_checkpoint(tmp_path / "c.npz", params_like=p, opt_state_like=opt.init(p))
    got = back["opt_state"]
    assert type(got[1][0]).__name__ == "ScaleByAdamState" and got[1][0].count == 1
    assert got[1][-1].count == 1  # the schedule's step count
    u1, _ = opt.update(ones_like(p), state, p)
    u2, _ = opt.update(ones_like(p), got, p)
    for a, b in zip(gd.tree.tree_leaves(u1), gd.tree.tree_leaves(u2), strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- docstrings
MODULES = ["base", "alias", "transforms", "clipping", "decay", "masking", "schedules", "plateau"]


@pytest.mark.parametrize("name", MODULES + [""])
def test_docstring_examples(name):
    mod = importlib.import_module("gpudl.optim" + (f".{name}" if name else ""))
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
