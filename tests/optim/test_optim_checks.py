"""Optimizer steps refuse what would run silently wrong: updates that change a parameter's
shape by broadcasting, another optimizer's state, and state made for other params."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.errors import OptimizerStateError, ShapeError, TreeMismatchError
from gpudl.optim.base import EmptyState

KEY = gd.random.key(0)


def _params():
    return {"head": {"weight": np.ones((3, 4)), "bias": np.zeros(3)}}


@pytest.mark.parametrize("update_shape", [(2, 3, 4), (1, 4), (4,), ()])
def test_apply_updates_refuses_a_shape_change_naming_the_leaf(update_shape):
    params = _params()
    updates = {"head": {"weight": np.ones(update_shape), "bias": np.zeros(3)}}
    match = (re.escape(f"the update for 'head.weight' has shape {update_shape}") + ".*"
             + re.escape("parameter has shape (3, 4)"))
    with pytest.raises(ShapeError, match=match):
        optim.apply_updates(params, updates)


def test_apply_updates_of_the_right_shapes_is_unchanged():
    params = {"w": np.array([1.0, 2.0], np.float32)}
    out = optim.apply_updates(params, {"w": np.array([0.5, -1.0])})
    assert out["w"].dtype == np.float32 and out["w"].tolist() == [1.5, 1.0]


def _pair(first, second):
    return pytest.param(first, second, id=f"{first.__name__}-state-to-{second.__name__}")


@pytest.mark.parametrize("make_state, make_update", [
    _pair(lambda: optim.sgd(0.1, momentum=0.9), lambda: optim.adam(0.1)),
    _pair(lambda: optim.adam(0.1), lambda: optim.sgd(0.1, momentum=0.9)),
    _pair(lambda: optim.sgd(0.1), lambda: optim.adam(0.1)),
    _pair(lambda: optim.rmsprop(0.1), lambda: optim.adagrad(0.1)),
    _pair(lambda: optim.adadelta(), lambda: optim.adamax(0.1)),
])
def test_another_optimizers_state_is_refused(make_state, make_update):
    params = _params()
    state = make_state().init(params)
    with pytest.raises(OptimizerStateError, match=r"\.update: .*(another optimizer|tuple of)"):
        make_update().update(params, state, params)


def test_sgd_state_given_to_adam_says_which():
    params = _params()
    state = optim.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(OptimizerStateError) as err:
        optim.adam(0.1).update(params, state, params)
    msg = str(err.value)
    assert msg.startswith("adam.update: ") and "TraceState" in msg and "ScaleByAdamState" in msg
    assert isinstance(err.value, TypeError) and isinstance(err.value, TreeMismatchError)


def test_schedule_state_is_checked():
    t = optim.scale_by_learning_rate(lambda step: 0.1)
    with pytest.raises(OptimizerStateError, match="ScheduleState"):
        t.update(np.ones(2), EmptyState(), None)


def test_state_made_for_another_head_is_refused_naming_the_leaf():
    x = np.zeros((2, 4), np.float32)
    p1, _ = nn.Sequential([nn.Dense(1)]).init(KEY, x)
    p3, _ = nn.Sequential([nn.Dense(3)]).init(KEY, x)
    grads = {k: {n: np.ones_like(v) for n, v in d.items()} for k, d in p3.items()}
    opt = optim.adam(0.1)
    state = opt.init(p1)  # (1, 4) moments would broadcast against (3, 4) gradients
    with pytest.raises(OptimizerStateError, match=r"adam.update: .*'0.weight' has shape "
                       r"\(1, 4\) but its gradient has shape \(3, 4\)"):
        opt.update(grads, state, p3)
