"""EarlyStopping, ModelCheckpoint, ReduceLROnPlateau (torch semantics), CSVLogger."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
from train_helpers import MomentumSGD, mse, rising_val_data, zero_dense

import gpudl as gd
from gpudl.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    fit,
    load_checkpoint,
)


def _leaves(tree):
    return gd.tree.tree_leaves(tree)


def _fit_rising(epochs, callbacks=(), **kw):
    train, val = rising_val_data()
    return fit(zero_dense(), train, loss=mse, optimizer=MomentumSGD(0.05, momentum=0.0),
               epochs=epochs, validation_data=val, callbacks=list(callbacks), batch_size=8,
               key=gd.random.key(0), verbose=0, **kw)


def test_validation_loss_really_rises_in_the_constructed_case():
    h = _fit_rising(4)
    assert np.all(np.diff(h["loss"]) < 0) and np.all(np.diff(h["val_loss"]) > 0)


def test_early_stopping_stops_after_patience_and_restores_the_best_params():
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best=True)
    h = _fit_rising(10, [stopper])
    assert h.stopped_early and h.epochs_run == 3  # best at epoch 0, then 2 worse epochs
    assert stopper.best_epoch == 0
    best = _fit_rising(1)  # the params after epoch 0
    for a, b in zip(_leaves(h.params), _leaves(best.params)):
        assert np.array_equal(a, b)


def test_early_stopping_without_restore_keeps_the_last_params():
    h = _fit_rising(10, [EarlyStopping(patience=2, restore_best=False)])
    last = _fit_rising(3)
    for a, b in zip(_leaves(h.params), _leaves(last.params)):
        assert np.array_equal(a, b)


def test_early_stopping_modes_and_errors():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(gd.errors.TrainingConfigError, match="validation_data"):
        train, _ = rising_val_data()
        fit(zero_dense(), train, loss=mse, optimizer=MomentumSGD(), epochs=1,
            callbacks=[EarlyStopping()], verbose=0)


def test_model_checkpoint_best_only_saves_improvements(tmp_path):
    ck = ModelCheckpoint(str(tmp_path / "best-{epoch}.npz"), best_only=True)
    h = _fit_rising(3, [ck])
    assert ck.saved == [str(tmp_path / "best-0.npz")]  # val loss only rises after epoch 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-0.npz"]
    assert h.epochs_run == 3


def test_a_reused_model_checkpoint_starts_afresh_each_fit(tmp_path):
    # the next run (the next fold) saves its own best: the kept best of run 1 (a val loss
    # run 2 never beat) left run 1's weights in the file before
    ck = ModelCheckpoint(str(tmp_path / "best.npz"), best_only=True)
    _fit_rising(1, [ck])
    first = ck.best
    train, val = rising_val_data()
    h = fit(zero_dense(), train, loss=mse, optimizer=MomentumSGD(0.05, momentum=0.0),
            epochs=1, validation_data=(val[0], val[1] + 5.0), callbacks=[ck], batch_size=8,
            key=gd.random.key(0), verbose=0)  # a worse val loss than run 1's best
    assert h["val_loss"][0] > first and ck.best == h["val_loss"][0]
    assert ck.saved == [str(tmp_path / "best.npz")]
    like, _ = zero_dense().init(gd.random.key(0), np.ones((1, 1), np.float32))
    saved = load_checkpoint(tmp_path / "best.npz", params_like=like)
    for a, b in zip(_leaves(saved["params"]), _leaves(h.params)):
        assert np.array_equal(a, b)


def test_model_checkpoint_every_epoch(tmp_path):
    ck = ModelCheckpoint(str(tmp_path / "ep{epoch}.npz"), best_only=False)
    h = _fit_rising(3, [ck])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep0.npz", "ep1.npz", "ep2.npz"]
    like, _ = zero_dense().init(gd.random.key(0), np.ones((1, 1), np.float32))
    last = load_checkpoint(tmp_path / "ep2.npz", params_like=like)
    assert last["epoch"] == 2 and last["step"] == 3
    for a, b in zip(_leaves(last["params"]), _leaves(h.params)):
        assert np.array_equal(a, b)


# ReduceLROnPlateau, worked by hand from torch.optim.lr_scheduler.ReduceLROnPlateau:
# mode min, threshold_mode rel: improved iff metric < best * (1 - threshold); a bad epoch
# adds 1 to num_bad; during cooldown the counter ticks down and num_bad is reset to 0;
# when num_bad > patience the lr is multiplied by factor, cooldown restarts, num_bad = 0.
# patience=2, factor=0.5, threshold=0.1, cooldown=1:
#   epoch metric  best  improved? num_bad  cooldown   reduce?  scale
#   0     10      10    yes       0        0          no       1
#   1     9.5     10    no (>9)   1        0          no       1
#   2     9.2     10    no        2        0          no       1
#   3     9.1     10    no        3        0 -> 1     yes      0.5   (num_bad -> 0)
#   4     8.0     8     yes (<9)  0        1 -> 0     no       0.5
#   5     8.0     8     no (>7.2) 1        0          no       0.5
#   6     8.0     8     no        2        0          no       0.5
#   7     8.0     8     no        3        0 -> 1     yes      0.25
#   8     8.0     8     no        1 -> 0   1 -> 0     no       0.25  (cooldown resets num_bad)
#   9     8.0     8     no        1        0          no       0.25
#  10     8.0     8     no        2        0          no       0.25
#  11     8.0     8     no        3        0 -> 1     yes      0.125
_METRICS = [10, 9.5, 9.2, 9.1, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
_SCALES = [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125]


def _run_plateau(cb, metrics, key="val_loss"):
    trainer = SimpleNamespace(lr_scale=1.0)
    scales = []
    for epoch, m in enumerate(metrics):
        logs = {key: m}
        cb.on_epoch_end(trainer, epoch, logs)
        assert logs["lr_scale"] == trainer.lr_scale
        scales.append(trainer.lr_scale)
    return scales


def test_reduce_lr_on_plateau_follows_torch_semantics():
    cb = ReduceLROnPlateau(factor=0.5, patience=2, threshold=0.1, cooldown=1)
    assert _run_plateau(cb, _METRICS) == _SCALES


def test_reduce_lr_on_plateau_no_cooldown_min_scale_and_max_mode():
    # patience 0: every non-improving epoch reduces; min_scale floors it (torch's min_lr).
    cb = ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.0, min_scale=0.3)
    assert _run_plateau(cb, [1.0, 1.0, 0.5, 0.6, 0.7]) == [1, 0.5, 0.5, 0.3, 0.3]
    # max mode (accuracy): improved iff metric > best * (1 + threshold)
    cb = ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=1, threshold=0.01)
    assert cb.mode == "max"
    got = _run_plateau(cb, [0.5, 0.504, 0.6, 0.6, 0.6], key="val_accuracy")
    # 0.504 < 0.505 is no improvement (bad 1); 0.6 improves; then bad 1, bad 2 > 1 -> reduce
    assert got == pytest.approx([1, 1, 1, 1, 0.1])
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.5)


class _FreezeAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        trainer.lr_scale = 0.0


def test_lr_scale_scales_the_updates_fit_applies():
    train, _ = rising_val_data()
    kw = dict(loss=mse, optimizer=MomentumSGD(0.05, momentum=0.0), batch_size=8,
              key=gd.random.key(0), verbose=0)
    frozen = fit(zero_dense(), train, epochs=3, callbacks=[_FreezeAfterFirstEpoch()], **kw)
    one = fit(zero_dense(), train, epochs=1, **kw)
    for a, b in zip(_leaves(frozen.params), _leaves(one.params)):
        assert np.array_equal(a, b)


def test_csv_logger_writes_header_and_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    h = _fit_rising(3, [CSVLogger(str(path))])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], h["loss"])
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], h["val_loss"])
    # append=True continues the file without a second header
    _fit_rising(1, [CSVLogger(str(path), append=True)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 5 and rows.count(["epoch", "loss", "val_loss"]) == 1
    # a fresh logger (append=False) starts the file again
    _fit_rising(1, [CSVLogger(str(path))])
    assert len(path.read_text().splitlines()) == 2


@pytest.mark.parametrize("monitor, expected", [
    ("val_loss", "min"), ("val_mae", "min"), ("val_rmse", "min"), ("val_accuracy", "max"),
    ("val_top5", "max"), ("val_precision", "max"), ("val_recall", "max"), ("val_f1", "max"),
    ("r2", "max"),
])
def test_auto_mode_knows_which_metrics_grow(monitor, expected):
    from gpudl.train.callbacks import _mode

    assert _mode(monitor, "auto") == expected


@pytest.mark.parametrize("make, match", [
    (lambda: EarlyStopping(patience="x"), r"EarlyStopping: patience must be an int >= 0 .*'x'"),
    (lambda: EarlyStopping(patience=-1), r"EarlyStopping: patience must be an int >= 0 .*-1"),
    (lambda: EarlyStopping(patience=True), r"EarlyStopping: patience must be an int"),
    (lambda: EarlyStopping(patience=2.0), r"as an int: patience=2"),
    (lambda: EarlyStopping(min_delta=-0.1), r"EarlyStopping: min_delta must be a number >= 0"),
    (lambda: EarlyStopping(min_delta="0"), r"EarlyStopping: min_delta must be a number >= 0"),
    (lambda: EarlyStopping(min_delta=float("nan")), r"min_delta must be a number >= 0"),
    (lambda: EarlyStopping(mode="low"), r"EarlyStopping: mode must be 'min', 'max' or 'auto'"),
    (lambda: ReduceLROnPlateau(patience=-1), r"ReduceLROnPlateau: patience must be an int >= 0"),
    (lambda: ReduceLROnPlateau(patience=None), r"ReduceLROnPlateau: patience must be an int"),
    (lambda: ReduceLROnPlateau(factor=0), r"ReduceLROnPlateau: factor must be a number in \(0,"),
    (lambda: ReduceLROnPlateau(factor="0.5"), r"factor must be a number in \(0, 1\).*got '0.5'"),
    (lambda: ReduceLROnPlateau(cooldown=-2), r"ReduceLROnPlateau: cooldown must be an int >= 0"),
    (lambda: ReduceLROnPlateau(cooldown=1.5), r"ReduceLROnPlateau: cooldown must be an int >= 0"),
    (lambda: ReduceLROnPlateau(min_scale=-0.1), r"ReduceLROnPlateau: min_scale must be a number"),
    (lambda: ReduceLROnPlateau(threshold=-1e-4), r"ReduceLROnPlateau: threshold must be a number"),
    (lambda: ReduceLROnPlateau(threshold=float("inf")), r"threshold must be a number >= 0"),
    (lambda: ReduceLROnPlateau(mode="up"), r"ReduceLROnPlateau: mode must be 'min', 'max'"),
    (lambda: ModelCheckpoint("ck.npz", mode="up"), r"ModelCheckpoint: mode must be 'min'"),
])
def test_callback_numbers_are_checked_when_the_callback_is_made(make, match):
    with pytest.raises(gd.errors.TrainingConfigError, match=match):
        make()


def test_reduce_lr_on_plateau_patience_0_keeps_the_rate_while_the_loss_improves():
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, threshold=0.0)
    trainer = SimpleNamespace(lr_scale=1.0)
    for epoch, loss in enumerate([1.0, 0.9, 0.8]):
        cb.on_epoch_end(trainer, epoch, {"loss": loss})
    assert trainer.lr_scale == 1.0
    cb.on_epoch_end(trainer, 3, {"loss": 0.85})
    assert trainer.lr_scale == 0.5
    assert EarlyStopping(patience=0, min_delta=0).patience == 0  # 0 is allowed in both
