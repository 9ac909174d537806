"""The one training step (gpudl.train.step): what it computes, purity, keys, who runs it."""

from __future__ import annotations

import numpy as np
from train_helpers import MomentumSGD, cross_entropy

import gpudl as gd
from gpudl import nn, optim
from gpudl.autodiff import value_and_grad
from gpudl.train import Callback, fit
from gpudl.train.loop import Trainer
from gpudl.train.step import (
    StepRunner,
    TrainStep,
    run_keys,
    supervised_objective,
    supervised_step,
)
from gpudl.tree import tree_leaves, tree_map


def _same(a, b) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def _problem(mlp):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2)).astype(np.float32)
    y = np.arange(8) % 3
    model = mlp(dropout=0.25)
    params, state = model.init(gd.random.key(0), x)
    return model, params, state, x, y


def test_step_is_value_and_grad_then_update_then_apply(mlp):
    model, params, state, x, y = _problem(mlp)
    opt = MomentumSGD(0.1)
    key = gd.random.key(7)
    step = TrainStep(supervised_objective(model, cross_entropy), opt)
    r = step(params, state, opt.init(params), key, (x, y))

    def loss_fn(p):
        out, s = model.apply(p, state, x, train=True, key=key)
        return cross_entropy(out, y), (out, s)

    (loss, (out, new_state)), grads = value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt.init(params), params)
    assert np.array_equal(r.loss, loss) and np.array_equal(r.aux, out)
    assert _same(r.params, optim.apply_updates(params, updates))
    assert _same(r.state, new_state) and _same(r.opt_state, opt_state)


def test_step_is_pure_and_lr_scale_scales_the_update(mlp):
    model, params, state, x, y = _problem(mlp)
    before = tree_map(np.copy, params)
    step = TrainStep(supervised_objective(model, cross_entropy), optim.sgd(0.1))
    opt_state = step.optimizer.init(params)
    full = step(params, state, opt_state, gd.random.key(1), (x, y))
    half = step(params, state, opt_state, gd.random.key(1), (x, y), lr_scale=0.5)
    assert _same(params, before)  # nothing updated in place
    for p, f, h in zip(tree_leaves(params), tree_leaves(full.params), tree_leaves(half.params)):
        np.testing.assert_allclose(h - p, 0.5 * (f - p), rtol=1e-5, atol=1e-7)


def test_supervised_step_freezes_what_the_model_marks_frozen():
    vectors = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    model = nn.Sequential([nn.Embedding.from_pretrained(vectors, freeze=True), nn.Flatten(),
                           nn.Dense(2)])
    x, y = np.array([[0, 1], [2, 3]]), np.array([0, 1])
    params, state = model.init(gd.random.key(0), x)
    step = supervised_step(model, gd.functional.softmax_cross_entropy,
                           optim.adamw(0.1, weight_decay=0.5), params)
    r = step(params, state, step.optimizer.init(params), None, (x, y))
    np.testing.assert_array_equal(r.params["0"]["weight"], vectors)
    assert not np.array_equal(r.params["2"]["weight"], params["2"]["weight"])


def test_runner_folds_the_step_into_the_key_and_keeps_trees_after_a_failure(mlp):
    model, params, state, x, y = _problem(mlp)
    seen = []

    def objective(p, s, key, batch):
        seen.append(np.asarray(key))
        if len(seen) == 3:
            raise RuntimeError("third step fails")
        return supervised_objective(model, cross_entropy)(p, s, key, batch)

    step = TrainStep(objective, MomentumSGD(0.1))
    runner = StepRunner(step, params, state, step.optimizer.init(params), gd.random.key(4))
    runner.train_step(x, y)
    runner.train_step(x, y)
    kept = tree_map(np.copy, (runner.params, runner.opt_state))
    try:
        runner.train_step(x, y)
    except RuntimeError:
        pass
    assert runner.step == 2 and _same((runner.params, runner.opt_state), kept)
    for s, k in enumerate(seen):
        assert np.array_equal(k, gd.random.fold_in(gd.random.key(4), s))


class _Grab(Callback):
    def on_train_begin(self, trainer):
        self.trainer = trainer


def test_fit_runs_the_shared_step_with_its_keys(mlp, monkeypatch):
    """fit's Trainer is a StepRunner whose step is supervised_step's, keyed as run_keys says."""
    model, _, _, x, y = _problem(mlp)
    calls = []
    real = TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__",
                        lambda self, *a, **k: calls.append((self, a[3])) or real(self, *a, **k))
    grab = _Grab()
    fit(model, (x, y), loss=cross_entropy, optimizer=MomentumSGD(0.1), batch_size=4,
        shuffle=False, key=gd.random.key(3), callbacks=[grab], verbose=0)
    trainer = grab.trainer
    assert isinstance(trainer, Trainer) and Trainer.train_step is StepRunner.train_step
    assert [c[0] for c in calls] == [trainer.step_fn] * 2
    assert trainer.step_fn.objective.__qualname__.startswith("supervised_objective")
    step_key = run_keys(gd.random.key(3))[2]
    for s, (_, key) in enumerate(calls):
        assert np.array_equal(key, gd.random.fold_in(step_key, s))
