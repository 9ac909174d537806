"""Donation: inside fit the fused optimizers update parameters and optimizer state in
place (gpudl/train/step.py, gpudl/optim/flat.py). Nothing anyone else holds may change:
the caller's params, trees handed out (the NaN watch's last finite trees, callbacks),
trees or views the objective kept; and the numbers are the pure step's, bit for bit."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.errors import NonFiniteError
from gpudl.optim import _optim_kernels as K
from gpudl.optim.flat import FlatTrees
from gpudl.train import fit
from gpudl.train.step import StepRunner, TrainStep
from gpudl.tree import tree_leaves, tree_map


def _same(a, b) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(gd.to_numpy(x), gd.to_numpy(y)) if hasattr(x, "dtype") else x == y
        for x, y in zip(la, lb))


def _copy(tree):
    return tree_map(lambda x: np.array(gd.to_numpy(x)) if hasattr(x, "dtype") else x, tree)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x.sum(1) > 0).astype(np.int64)


def _model(batch_norm: bool = True):
    norm = [nn.BatchNorm1d()] if batch_norm else []  # model state beside the params
    return nn.Sequential([nn.Dense(8), *norm, nn.ReLU(), nn.Dense(2)])


@pytest.fixture
def counted(monkeypatch):
    """How many FlatTrees were adopted (copied from given trees) and copied, and how many
    in-place updates ran."""
    n = {"adopt": 0, "copy": 0, "apply": 0}
    adopt, copy, apply = FlatTrees.adopt.__func__, FlatTrees.copy, FlatTrees.apply

    def count(name, f):
        def wrapped(*args, **kwargs):
            n[name] += 1
            return f(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(FlatTrees, "adopt", classmethod(count("adopt", adopt)))
    monkeypatch.setattr(FlatTrees, "copy", count("copy", copy))
    monkeypatch.setattr(FlatTrees, "apply", count("apply", apply))
    return n


def _fit(donate, monkeypatch, device="cpu", data=None, **kw):
    if not donate:
        monkeypatch.setattr(TrainStep, "donates", lambda self: False)
    x, y = data or _data()
    model = _model(batch_norm=device == "cpu")  # BatchNorm's kernels are slow to emulate
    params, state = model.init(gd.random.key(1), x[:2])
    params, state = gd.to_device((params, state), device)
    given = _copy(params)
    args = dict(loss="cross_entropy", optimizer=optim.adam(1e-2), epochs=2, batch_size=4,
                shuffle=True, key=gd.random.key(2), verbose=0, device=device)
    args.update(kw)
    h = fit(model, (x, y), params=params, state=state, **args)
    monkeypatch.undo()
    return h, params, given


@pytest.mark.parametrize("opt", [optim.adamw(1e-2, amsgrad=True),
                                 optim.sgd(0.1, momentum=0.9, nesterov=True)],
                         ids=["adamw-amsgrad", "nesterov"])
def test_fit_donates_with_the_pure_steps_bits_and_leaves_the_callers_params(opt, counted,
                                                                            monkeypatch):
    h, params, given = _fit(True, monkeypatch, optimizer=opt)
    # 2 epochs of 8 steps: one copy of the given trees, one more after the report that
    # ends epoch 1 (it hands the trees out); every step ran in place.
    assert counted == {"adopt": 2, "copy": 0, "apply": 16}
    assert _same(params, given)  # the caller's arrays were never written
    ref, _, _ = _fit(False, monkeypatch, optimizer=opt)
    assert _same((h.params, h.state, h.opt_state), (ref.params, ref.state, ref.opt_state))
    assert h.history == ref.history


def test_nan_stop_keeps_the_last_finite_trees(monkeypatch):
    x, y = _data(160, seed=3)
    x[120, 1] = np.nan  # batch 31 of 40 (batch_size 4, no shuffling)
    kw = dict(optimizer=optim.sgd(0.05, momentum=0.9), shuffle=False, epochs=3)
    with pytest.raises(NonFiniteError) as info:
        _fit(True, monkeypatch, data=(x, y), **kw)
    h = info.value.gpudl_history
    assert h.stop_reason == "non_finite" and h.step == 20  # the report before the NaN
    reference, _, _ = _fit(False, monkeypatch, data=(x[:80], y[:80]), **{**kw, "epochs": 1})
    assert _same((h.params, h.state, h.opt_state),
                 (reference.params, reference.state, reference.opt_state))


def _runner(objective, opt, params, device="cpu"):
    step = TrainStep(objective, opt)
    return StepRunner(step, params, {}, opt.init(params), gd.random.key(0))


def _quadratic(p, state, key, batch):
    """A loss whose aux is a view of the parameter w."""
    return ((p["w"] - batch) ** 2).sum() + (p["b"] ** 2).sum(), (p["w"][:1], state)


def _plain(p, state, key, batch):
    """The same loss without aux: its steps run in place."""
    return _quadratic(p, state, key, batch)[0], (None, state)


def _params():
    return {"w": np.arange(1.0, 4.0, dtype=np.float32), "b": np.ones(2, np.float32)}


def test_trees_handed_out_or_kept_by_the_objective_never_change(counted):
    kept = []

    def keeping(p, state, key, batch):
        kept.append((p, _copy(p)))  # what a debugging loss_fn might do
        return _quadratic(p, state, key, batch)

    params = _params()
    runner = _runner(keeping, optim.adam(0.1), params)
    for _ in range(3):
        runner.run_batch(np.ones(3, np.float32))
    assert counted == {"adopt": 1, "copy": 3, "apply": 3}  # kept: new buffers every step
    assert all(_same(tree, values) for tree, values in kept)
    for read in ("params", "opt_state"):  # reading either hands it out
        runner = _runner(_plain, optim.adam(0.1), params)
        runner.run_batch(np.ones(3, np.float32))
        handed = getattr(runner, read)
        values = _copy(handed)
        for _ in range(2):
            runner.run_batch(np.ones(3, np.float32))
        assert _same(handed, values) and not _same(getattr(runner, read), values)
    assert counted["copy"] == 3  # the handed-out steps ran in place, on new buffers


def test_outputs_that_view_the_params_keep_their_values():
    runner = _runner(_quadratic, optim.sgd(0.1), _params())
    runner.run_batch(np.zeros(3, np.float32))  # now on the runner's own buffers
    before = float(runner._params["w"][0])
    _, aux = runner.run_batch(np.zeros(3, np.float32))  # aux is a view of w[:1]
    assert float(aux[0]) == before and float(runner._params["w"][0]) != before


def test_ctrl_c_during_the_in_place_update_waits_for_the_whole_step(monkeypatch):
    params = _params()
    pure = TrainStep(_quadratic, optim.adam(0.1))
    expected = pure(params, {}, pure.optimizer.init(params), None, np.ones(3, np.float32))
    runner = _runner(_quadratic, optim.adam(0.1), params)
    real = K.adam_twin

    def interrupted(*args, **kwargs):  # Ctrl-C arrives in the middle of the update
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(K, "adam_twin", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_batch(np.ones(3, np.float32))
    assert runner.step == 1 and _same(runner.params, expected.params)
    assert _same(runner.opt_state, expected.opt_state)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_update_that_raises_leaves_the_trees_of_the_last_step(counted):
    def linear(p, state, key, batch):  # finite loss, gradient = batch
        return (p["w"] * batch).sum() + p["b"].sum(), (None, state)

    runner = _runner(linear, optim.adam(0.1), _params())
    runner.run_batch(np.ones(3, np.float32))
    kept = _copy((runner._params, runner._opt_state))
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        runner.run_batch(np.full(3, 2e25, np.float32))  # Adam's g*g overflows
    assert runner.step == 1 and _same((runner._params, runner._opt_state), kept)
    assert counted["copy"] == 1  # the failing update ran on a copy


@pytest.mark.gpu
def test_fit_donates_on_the_device(monkeypatch, counted):
    data = _data(16)
    h, params, given = _fit(True, monkeypatch, device="cuda", data=data, epochs=1)
    assert counted["apply"] == 4 and counted["copy"] == 0
    assert gd.backend.device_of(h.params["0"]["weight"]) == "cuda" and _same(params, given)
    ref, _, _ = _fit(False, monkeypatch, device="cuda", data=data, epochs=1)
    assert _same((h.params, h.opt_state), (ref.params, ref.opt_state))
