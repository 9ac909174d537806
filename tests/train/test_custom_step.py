"""The custom-step hook: ``fit(..., loss_fn=...)`` with keys, model state, aux logs and
metrics, validation in eval mode, several players with their own optimizers, the checks
of a wrong return form before the first step, and the batch forms fit accepts."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import MomentumSGD, cross_entropy

import gpudl as gd
from gpudl import nn, ops
from gpudl.errors import LossFunctionError, NonFiniteError, TrainingConfigError
from gpudl.train import Callback, EarlyStopping, FullBatch, PlayerStep, evaluate, fit
from gpudl.tree import tree_leaves


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _same(a, b) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(gd.to_numpy(p), gd.to_numpy(q))
                                      for p, q in zip(la, lb))


class _Calls(Callback):
    def __init__(self):
        self.losses, self.trainers = [], []

    def on_train_begin(self, trainer):
        self.trainers.append(trainer)

    def on_batch_end(self, trainer, batch, loss):
        self.losses.append(float(loss))


def _supervised_as_custom(model):
    def loss_fn(params, state, batch, key):
        x, y = batch
        out, state = model.apply(params, state, x, train=True, key=key)
        return cross_entropy(out, y), (state, {"y_true": y, "y_pred": out})
    return loss_fn


def test_a_custom_step_equals_the_supervised_step_it_restates():
    """Same keys, same batches, same update: loss_fn=(the supervised loss) is fit(loss=)."""
    x, y = _data()
    model = nn.Sequential([nn.Dense(8), nn.BatchNorm1d(), nn.ReLU(), nn.Dense(2)])
    kw = dict(optimizer=MomentumSGD(0.1), epochs=2, batch_size=8, key=gd.random.key(1),
              verbose=0, metrics=["accuracy"])
    calls = _Calls()
    a = fit(model, (x, y), loss=cross_entropy, **kw)
    b = fit(model, (x, y), loss_fn=_supervised_as_custom(model), callbacks=[calls], **kw)
    assert _same(a.params, b.params) and _same(a.state, b.state)  # BatchNorm state carried
    assert a.history == b.history and sorted(b.history) == ["accuracy", "loss"]
    assert len(calls.losses) == 6 and b.step == 6  # on_batch_end: every step's loss


def test_the_key_is_the_steps_key_and_aux_scalars_are_logged_as_weighted_means():
    x = np.arange(10, dtype=np.float32)[:, None]
    seen = []

    def loss_fn(params, state, batch, key):
        seen.append(gd.to_numpy(key))
        loss = ((params["w"] - batch) ** 2).mean()
        return loss, (state, {"first": batch[0, 0], "big": batch[:, 0], "rows": batch.shape[0]})

    h = fit(None, x, loss_fn=loss_fn, optimizer=gd.optim.sgd(0.0), params={"w": np.zeros(1)},
            batch_size=4, shuffle=False, key=gd.random.key(5), verbose=0)
    step_key = gd.train.step.run_keys(gd.random.key(5))[2]
    assert all(np.array_equal(seen[1 + s], gd.random.fold_in(step_key, s)) for s in range(3))
    # batches of 4, 4, 2 rows: means weighted by rows; the (N,) entry is not logged
    assert sorted(h.history) == ["first", "loss", "rows"]
    assert h.history["first"] == [pytest.approx((0 * 4 + 4 * 4 + 8 * 2) / 10)]
    assert h.history["rows"] == [pytest.approx((16 + 16 + 4) / 10)]
    assert h.history["loss"] == [pytest.approx(float((x ** 2).mean()))]


def test_validation_runs_the_loss_with_train_false_and_a_fixed_key_each_epoch():
    x, y = _data()
    model = nn.Sequential([nn.Dense(4), nn.Dropout(0.5), nn.Dense(2)])
    modes, val_keys = [], []

    def loss_fn(params, state, batch, key, train=True):
        modes.append(train)
        if not train:
            val_keys.append(gd.to_numpy(key))
        out, state = model.apply(params, state, batch[0], train=train, key=key)
        return cross_entropy(out, batch[1]), (state, None)

    h = fit(model, (x, y), loss_fn=loss_fn, optimizer=gd.optim.adam(1e-2), epochs=2,
            batch_size=12, validation_data=(x, y), verbose=0,
            callbacks=[EarlyStopping("val_loss", patience=5)])
    assert sorted(h.history) == ["loss", "val_loss"]
    assert modes.count(False) == 4 and modes.count(True) == 1 + 4  # probe + 2 x 2 steps
    assert np.array_equal(val_keys[0], val_keys[2]) and not np.array_equal(val_keys[0],
                                                                           val_keys[1])
    # without dropout in validation, its loss is evaluate's on the final params
    ref = evaluate(model, h.params, h.state, (x, y), loss=cross_entropy, batch_size=12)
    assert h.history["val_loss"][-1] == pytest.approx(ref["loss"], rel=1e-6)
    again = evaluate(model, h.params, h.state, (x, y), loss_fn=loss_fn, batch_size=12)
    assert again == {"loss": pytest.approx(ref["loss"], rel=1e-6)}


@pytest.mark.parametrize("ret,match", [
    (lambda loss, state: (loss, {"kl": loss}), r"returned \(loss, dict\).*\(state, aux\)"),
    (lambda loss, state: (loss, state, None), "a tuple of length 3"),
    (lambda loss, state: (loss * np.ones(3), (state, None)), r"a loss of shape \(3,\)"),
    (lambda loss, state: (loss, (None, state)), "structure differs"),
    (lambda loss, state: "nope", "a str as the loss"),
])
def test_a_wrong_return_form_raises_before_the_first_step(ret, match):
    x, y = _data()
    model = nn.Sequential([nn.Dense(2), nn.BatchNorm1d()])
    stepped = []

    def loss_fn(params, state, batch, key):
        out, new_state = model.apply(params, state, batch[0], train=True)
        return ret(ops.mean(out ** 2), new_state)

    class Spy(Callback):
        def on_train_begin(self, trainer):
            stepped.append(trainer.step)

    with pytest.raises(LossFunctionError, match=match):
        fit(model, (x, y), loss_fn=loss_fn, optimizer=gd.optim.sgd(0.1), verbose=0,
            callbacks=[Spy()])
    assert stepped == []  # raised before on_train_begin, before any step
    assert issubclass(LossFunctionError, TrainingConfigError)


def test_metrics_need_y_true_and_y_pred_and_names_must_not_clash():
    x, y = _data()
    model = nn.Dense(2)

    def no_pair(params, state, batch, key):
        return ops.mean(model.apply(params, state, batch[0])[0] ** 2)

    with pytest.raises(LossFunctionError, match="'y_true' and 'y_pred'"):
        fit(model, (x, y), loss_fn=no_pair, optimizer=gd.optim.sgd(0.1), metrics=["accuracy"],
            verbose=0)

    def clash(params, state, batch, key):
        loss = no_pair(params, state, batch, key)
        return loss, (state, {"loss": loss})

    with pytest.raises(LossFunctionError, match=r"\['loss'\] appear more than once"):
        fit(model, (x, y), loss_fn=clash, optimizer=gd.optim.sgd(0.1), verbose=0)


def test_loss_and_loss_fn_are_one_or_the_other_and_callbacks_see_the_logged_names():
    x, y = _data()
    model = nn.Dense(2)
    fn = _supervised_as_custom(model)
    for kw in ({}, {"loss": cross_entropy, "loss_fn": fn}):
        with pytest.raises(TrainingConfigError, match="exactly one of loss= .* and loss_fn="):
            fit(model, (x, y), optimizer=gd.optim.sgd(0.1), verbose=0, **kw)
    with pytest.raises(TrainingConfigError, match="optimizer= is required"):
        fit(model, (x, y), loss_fn=fn, verbose=0)
    with pytest.raises(TrainingConfigError, match="did you mean 'accuracy'"):
        fit(model, (x, y), loss_fn=fn, optimizer=gd.optim.sgd(0.1), metrics=["accuracy"],
            callbacks=[EarlyStopping("acuracy")], verbose=0)
    with pytest.raises(TrainingConfigError, match=r"needs \(x, y\) batches.*loss_fn="):
        fit(model, x, loss=cross_entropy, optimizer=gd.optim.sgd(0.1), verbose=0)


def test_progress_lines_and_the_nan_watch_work_for_a_custom_step(capsys):
    x, y = _data()
    model = nn.Dense(2)

    def loss_fn(params, state, batch, key):
        out = model.apply(params, state, batch[0])[0]
        loss = cross_entropy(out, batch[1])
        return loss, (state, {"double": 2 * loss})

    fit(model, (x, y), loss_fn=loss_fn, optimizer=gd.optim.sgd(0.1), epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "epoch 1/2: loss" in out and "double" in out and "epoch 2/2" in out
    bad = x.copy()
    bad[13, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"the loss of step 2 \(batch 2 of epoch 1\)") as info:
        fit(model, (bad, y), loss_fn=loss_fn, optimizer=gd.optim.sgd(0.1), batch_size=8,
            shuffle=False, verbose=0)
    assert info.value.gpudl_history.stop_reason == "non_finite"


def test_batch_forms_array_dict_and_full_batch():
    rng = np.random.default_rng(0)
    data = {"a": rng.normal(size=(10, 2)).astype(np.float32), "b": np.arange(10)}
    seen = []

    def loss_fn(params, state, batch, key):
        seen.append(batch)
        return ((params["w"] - batch["a"]) ** 2).mean()

    fit(None, data, loss_fn=loss_fn, optimizer=gd.optim.sgd(0.1),
        params={"w": np.zeros(2, np.float32)}, batch_size=4, shuffle=False, verbose=0)
    assert sorted(seen[-1]) == ["a", "b"] and seen[-1]["b"].tolist() == [8, 9]
    graph = FullBatch({"x": np.ones((5, 2), np.float32), "edges": np.zeros((2, 7), np.int64),
                       "n": 5})
    seen.clear()
    h = fit(None, graph, loss_fn=lambda p, s, b, k: ((p["w"] - b["x"]) ** 2).sum() * b["n"],
            optimizer=gd.optim.sgd(0.01), params={"w": np.zeros(2, np.float32)}, epochs=3,
            verbose=0)
    assert h.step == 3 and len(h.history["loss"]) == 3
    with pytest.raises(TrainingConfigError, match="FullBatch: data must be a tree"):
        FullBatch(3)


def test_supervised_fit_takes_a_dict_of_inputs():
    rng = np.random.default_rng(0)
    x = {"ids": rng.integers(0, 5, (12, 4)), "lengths": rng.integers(1, 5, 12)}
    y = rng.integers(0, 2, 12)
    model = gd.models.sequence.SequenceClassifier(5, 2, embed_dim=4, hidden=4)
    h = fit(model, (x, y), loss="cross_entropy", optimizer=gd.optim.adam(1e-2), epochs=1,
            batch_size=4, metrics=["accuracy"], verbose=0)
    assert h.step == 3 and sorted(h.history) == ["accuracy", "loss"]


# ------------------------------------------------------------------------- players
def _pull(me, other):
    """Player ``me`` pulls its scalar toward the other's."""
    def loss_fn(params, state, batch, key):
        return ((params[me] - params[other]) ** 2).sum()
    return loss_fn


def test_player_step_updates_each_player_on_its_own_loss_in_order():
    step = PlayerStep({"a": _pull("a", "b"), "b": _pull("b", "a")},
                      {"a": gd.optim.sgd(0.25), "b": gd.optim.sgd(0.25)})
    p = {"a": np.array([4.0]), "b": np.array([0.0])}
    r = step(p, {}, step.init(p), gd.random.key(0), None)
    # a: 4 - 0.25 * 2 * 4 = 2; then b sees the new a: 0 - 0.25 * 2 * (0 - 2) = 1
    assert r.params["a"].tolist() == [2.0] and r.params["b"].tolist() == [1.0]
    assert {k: float(v) for k, v in r.loss.items()} == {"a": 16.0, "b": 4.0}
    assert p["a"].tolist() == [4.0]  # pure


def test_fit_with_players_logs_each_loss_and_checks_the_dicts():
    p = {"a": np.array([4.0]), "b": np.array([0.0])}
    fns = {"a": _pull("a", "b"), "b": _pull("b", "a")}
    opts = {"a": gd.optim.sgd(0.1), "b": gd.optim.sgd(0.1)}
    h = fit(None, FullBatch({"x": np.zeros(1)}), loss_fn=fns, optimizer=opts, params=p,
            epochs=3, verbose=0)
    assert sorted(h.history) == ["a_loss", "b_loss"] and sorted(h.opt_state) == ["a", "b"]
    assert h.history["a_loss"][0] == 16.0 and h.history["a_loss"][-1] < 16.0
    with pytest.raises(TrainingConfigError, match="same players"):
        fit(None, FullBatch({"x": np.zeros(1)}), loss_fn=fns, optimizer={"a": opts["a"]},
            params=p, verbose=0)
    with pytest.raises(TrainingConfigError, match="optimizer must be a dict"):
        fit(None, FullBatch({"x": np.zeros(1)}), loss_fn=fns, optimizer=opts["a"], params=p,
            verbose=0)
    with pytest.raises(TrainingConfigError, match="not entries of params"):
        fit(None, FullBatch({"x": np.zeros(1)}), loss_fn={"c": fns["a"]},
            optimizer={"c": opts["a"]}, params=p, verbose=0)
    with pytest.raises(TrainingConfigError, match="params= is needed"):
        fit({"a": nn.Dense(1), "b": nn.Dense(1)}, np.zeros((4, 1)), loss_fn=fns,
            optimizer=opts, verbose=0)
