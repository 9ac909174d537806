"""Exact resume, whole: a run stopped after an epoch and resumed from that epoch's checkpoint
equals the uninterrupted run bitwise (trees, History, callback counters, files), for every
built-in callback; the History continues with the true epoch numbers."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import (
    MomentumSGD,
    _blob_data,
    _mlp,
    cross_entropy,
    mse,
    rising_val_data,
    zero_dense,
)

import gpudl as gd
from gpudl import optim
from gpudl.train import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, fit


def _same_trees(a, b) -> bool:
    la, lb = gd.tree.tree_leaves(a), gd.tree.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                      for x, y in zip(la, lb))


def _rising(epochs, callbacks, **kw):
    train, val = rising_val_data()
    return fit(zero_dense(), train, loss=mse, optimizer=MomentumSGD(0.05, momentum=0.9),
               epochs=epochs, validation_data=val, callbacks=callbacks, batch_size=4,
               key=gd.random.key(0), verbose=0, **kw)


def _interrupted(tmp_path, make, run, epochs, cut, ran=None):
    """(straight History, straight callbacks, resumed History, resumed callbacks): the
    interrupted run trains ``ran`` epochs (default ``cut + 1``) with a checkpoint per epoch,
    then a fresh set of callbacks resumes from the checkpoint of epoch ``cut``."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight_cbs = make(tmp_path / "a")
    straight = run(epochs, straight_cbs)
    every = str(tmp_path / "b" / "every-{epoch}.npz")
    run(ran or cut + 1, make(tmp_path / "b") + [ModelCheckpoint(every, best_only=False)])
    resumed_cbs = make(tmp_path / "b")
    resumed = run(epochs, resumed_cbs, resume_from=every.format(epoch=cut))
    return straight, straight_cbs, resumed, resumed_cbs


def _assert_same_run(straight, resumed):
    assert resumed.history == straight.history and resumed.epoch == straight.epoch
    assert resumed.step == straight.step and resumed.stop_reason == straight.stop_reason
    for name in ("params", "state", "opt_state"):
        assert _same_trees(getattr(resumed, name), getattr(straight, name)), name


def test_early_stopping_counters_and_best_weights_survive_a_resume(tmp_path):
    make = lambda folder: [EarlyStopping(patience=2, restore_best=True)]  # noqa: E731
    straight, (s_cb,), resumed, (r_cb,) = _interrupted(tmp_path, make, _rising, 10, cut=1)
    assert straight.stop_reason == "callback" and straight.epoch == [0, 1, 2]
    _assert_same_run(straight, resumed)  # params: the best ones, restored at the end
    assert (r_cb.best, r_cb.best_epoch, r_cb.wait) == (s_cb.best, s_cb.best_epoch, s_cb.wait)
    assert _same_trees(r_cb.best_params, s_cb.best_params)



def test_without_the_saved_counters_the_resumed_run_would_differ(tmp_path, monkeypatch):
    """The check above has teeth: skipping the callback restore changes the run."""
    from gpudl.train.trainer import Trainer

    make = lambda folder: [EarlyStopping(patience=2, restore_best=True)]  # noqa: E731
    monkeypatch.setattr(Trainer, "restore_callbacks", lambda self, ck, device: None)
    straight, _, resumed, _ = _interrupted(tmp_path, make, _rising, 6, cut=1)
    assert straight.epoch == [0, 1, 2] and len(resumed.epoch) > 3


def test_resuming_a_run_that_early_stopping_had_ended_trains_nothing(tmp_path):
    ck = str(tmp_path / "ck.npz")
    straight = _rising(10, [EarlyStopping(patience=2), ModelCheckpoint(ck, best_only=False)])
    again = _rising(10, [EarlyStopping(patience=2)], resume_from=ck)
    _assert_same_run(straight, again)
    assert again.stop_reason == "callback" and again.stopped_early


def test_reduce_lr_on_plateau_counters_survive_a_resume(tmp_path):
    make = lambda folder: [ReduceLROnPlateau(factor=0.5, patience=1)]  # noqa: E731
    straight, (s_cb,), resumed, (r_cb,) = _interrupted(tmp_path, make, _rising, 5, cut=1)
    assert straight["lr_scale"] == [1.0, 1.0, 0.5, 0.5, 0.25]  # reduced after 2 bad epochs
    _assert_same_run(straight, resumed)
    assert r_cb.state_dict() == s_cb.state_dict()


def test_model_checkpoint_best_value_survives_a_resume(tmp_path):
    def make(folder):
        return [ModelCheckpoint(str(folder / "best-{epoch}-{val_loss:.4f}.npz"))]

    straight, (s_cb,), resumed, (r_cb,) = _interrupted(tmp_path, make, _rising, 4, cut=1)
    _assert_same_run(straight, resumed)
    # val_loss only rises after epoch 0: one best file, not one more after the resume
    names = lambda cb: [p.rsplit("/", 1)[1] for p in cb.saved]  # noqa: E731
    assert names(r_cb) == names(s_cb) and len(s_cb.saved) == 1 and r_cb.best == s_cb.best
    assert sorted(p.name for p in (tmp_path / "b").glob("best-*")) == names(s_cb)


def test_csv_logger_continues_its_file_from_the_checkpoint(tmp_path):
    make = lambda folder: [CSVLogger(str(folder / "log.csv"))]  # noqa: E731
    # The interrupted run got to epoch 3 but resumes from epoch 1's checkpoint: rows of
    # epochs 2-3 written before the crash must not appear twice.
    straight, _, resumed, _ = _interrupted(tmp_path, make, _rising, 5, cut=1, ran=4)
    _assert_same_run(straight, resumed)
    text = (tmp_path / "b" / "log.csv").read_text()
    assert text == (tmp_path / "a" / "log.csv").read_text()
    assert [line.split(",")[0] for line in text.splitlines()] == ["epoch", "0", "1", "2", "3", "4"]


def test_a_schedule_momentum_dropout_and_shuffling_resume_bitwise(tmp_path):
    train, val = _blob_data()

    def run(epochs, callbacks, **kw):
        opt = optim.sgd(optim.step_decay(0.1, step_size=5, gamma=0.5), momentum=0.9)
        return fit(_mlp()(dropout=0.3), train, loss=cross_entropy, optimizer=opt,
                   epochs=epochs, validation_data=val, metrics=["accuracy"],
                   callbacks=callbacks, batch_size=16, verbose=0,
                   key=kw.pop("key", gd.random.key(5)), **kw)

    make = lambda folder: [EarlyStopping(patience=5), ReduceLROnPlateau(patience=1)]  # noqa: E731
    straight, s_cbs, resumed, r_cbs = _interrupted(tmp_path, make, run, 4, cut=1)
    _assert_same_run(straight, resumed)
    for a, b in zip(s_cbs, r_cbs):
        assert a.state_dict().keys() == b.state_dict().keys()


def test_a_callback_with_another_monitor_starts_fresh(tmp_path):
    ck = str(tmp_path / "ck.npz")
    _rising(2, [EarlyStopping(patience=5), ModelCheckpoint(ck, best_only=False)])
    other = EarlyStopping(monitor="loss", patience=1)
    _rising(3, [other], resume_from=ck)
    assert other.best_epoch == 2  # its own counters (train loss falls), not val_loss's


def test_history_continues_with_true_epoch_numbers_and_integer_ticks(tmp_path):
    pytest.importorskip("matplotlib")
    ck = str(tmp_path / "ck.npz")
    _rising(3, [ModelCheckpoint(ck, best_only=False)])
    h = _rising(5, [], resume_from=ck)
    assert h.epoch == [0, 1, 2, 3, 4] and len(h["loss"]) == 5 and h.epochs_run == 5
    fig = h.plot()
    (ax,) = fig.get_axes()
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_resuming_past_the_requested_epochs_is_refused(tmp_path):
    ck = str(tmp_path / "ck.npz")
    _rising(3, [ModelCheckpoint(ck, best_only=False)])
    with pytest.raises(gd.errors.TrainingConfigError, match="epochs >= 3"):
        _rising(2, [], resume_from=ck)
    assert _rising(3, [], resume_from=ck).epoch == [0, 1, 2]  # done already: nothing to do
