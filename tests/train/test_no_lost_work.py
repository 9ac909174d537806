"""A training run users can trust: NaN stops the run (not the checkpoint), Ctrl-C returns
what was trained, any other error carries it, configuration mistakes fail before the first
step, and empty data is an error rather than a loss of 0.0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from train_helpers import MomentumSGD, cross_entropy, mse, rising_val_data, zero_dense

import gpudl as gd
from gpudl.data import DataLoader
from gpudl.errors import EmptyDataError, NonFiniteError, TrainingConfigError
from gpudl.train import Callback, CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, fit

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on NaN rows


def _same_trees(a, b) -> bool:
    la, lb = gd.tree.tree_leaves(a), gd.tree.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(gd.to_numpy(x), gd.to_numpy(y))
                                      for x, y in zip(la, lb))


def _all_finite(tree) -> bool:
    return all(np.isfinite(gd.to_numpy(leaf)).all() for leaf in gd.tree.tree_leaves(tree))


def _blobs(n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x.sum(1) > 0).astype(np.int64)


def _model():
    return gd.nn.Sequential([gd.nn.Dense(8), gd.nn.BatchNorm1d(), gd.nn.ReLU(), gd.nn.Dense(2)])


# ------------------------------------------------------------------------- NaN / Inf
def test_a_nan_batch_stops_the_run_with_the_last_finite_params(device):
    x, y = _blobs()
    x[120, 1] = np.nan  # batch 31 of 50 (batch_size 4, no shuffling)
    kw = dict(loss=cross_entropy, optimizer=MomentumSGD(0.05), batch_size=4, shuffle=False,
              key=gd.random.key(2), verbose=0, device=device)
    with pytest.raises(NonFiniteError) as info:
        fit(_model(), (x, y), epochs=3, **kw)
    err = info.value
    assert (err.epoch, err.step) == (0, 31)
    assert "the loss of step 31 (batch 31 of epoch 1) is nan" in str(err)
    h = err.gpudl_history
    assert h.stop_reason == "non_finite" and h.step == 20  # the report before the NaN
    assert gd.backend.device_of(h.params["0"]["weight"]) == device
    assert _all_finite(h.params) and _all_finite(h.state)  # BatchNorm statistics included
    reference = fit(_model(), (x[:80], y[:80]), epochs=1, **kw)  # the same 20 steps
    assert _same_trees(h.params, reference.params) and _same_trees(h.state, reference.state)
    assert _same_trees(h.opt_state, reference.opt_state)


def test_nan_never_overwrites_the_last_good_checkpoint(tmp_path):
    x, y = _blobs(40)
    ck = tmp_path / "last.npz"

    class PoisonAfterFirstEpoch(Callback):  # the data goes bad in the second epoch
        def on_epoch_end(self, trainer, epoch, logs):
            loader.dataset.arrays[0][5, 0] = np.inf

    loader = DataLoader((x, y), batch_size=8, prefetch=0)
    with pytest.raises(NonFiniteError, match="epoch 2/3") as info:
        fit(_model(), loader, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=3,
            callbacks=[ModelCheckpoint(str(ck), monitor="loss", best_only=False),
                       PoisonAfterFirstEpoch()], verbose=0)
    saved = gd.load(ck)
    assert saved["epoch"] == 0 and _all_finite(saved["params"]) and _all_finite(saved["state"])
    assert info.value.gpudl_history.epoch == [0]
    assert os.listdir(tmp_path) == ["last.npz"]


def test_an_update_that_makes_nan_from_a_finite_loss_is_caught():
    # sqrt of a sum of squares at exactly 0: the loss is 0.0, its gradient 0/0 = NaN.
    x, y = np.ones((4, 1), np.float32), np.zeros((4, 1), np.float32)
    with pytest.raises(NonFiniteError, match=r"after step 1 these leaves hold NaN/Inf: "
                                             r"\['0.weight', '0.bias'\]") as info:
        fit(zero_dense(), (x, y), loss=lambda o, t: gd.ops.sqrt(((o - t) ** 2).sum()),
            optimizer=MomentumSGD(0.1), epochs=2, batch_size=4, verbose=0)
    assert info.value.gpudl_history.step == 0 and _all_finite(info.value.gpudl_history.params)


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    path = tmp_path / "ck.npz"
    gd.train.save_checkpoint(path, params={"w": np.ones(2)}, epoch=1)
    before = path.read_bytes()
    with pytest.raises(NonFiniteError, match=r"refusing to write .*params \['w'\]"):
        gd.train.save_checkpoint(path, params={"w": np.array([1.0, np.nan])}, epoch=2)
    with pytest.raises(NonFiniteError, match=r"state \['bn.running_var'\]"):
        gd.train.save_checkpoint(path, params={"w": np.ones(2)},
                                 state={"bn": {"running_var": np.array([np.inf])}})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ck.npz"]


# ------------------------------------------------------------------------- Ctrl-C, errors
_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np, gpudl as gd
    from gpudl import nn, optim
    from gpudl.train import Callback

    class Marker(Callback):  # tells the parent that training is under way
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 0:
                open(sys.argv[1], "w").close()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x.sum(1) > 0).astype("int64")
    h = gd.fit(nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dense(2)]), (x, y),
               loss="cross_entropy", optimizer=optim.sgd(0.05, momentum=0.9),
               epochs=10**6, batch_size=8, verbose=0, callbacks=[Marker()])
    print(json.dumps({"reason": h.stop_reason, "step": h.step, "epochs": len(h.epoch),
                      "updates": int(h.opt_state[0][0]),
                      "finite": all(bool(np.isfinite(a).all())
                                    for a in gd.tree.tree_leaves(h.params))}))
""")


def test_ctrl_c_returns_the_history_and_the_params_trained_so_far(tmp_path):
    script, marker = tmp_path / "child.py", tmp_path / "started"
    script.write_text(_CHILD)
    env = {**os.environ, "GPUDL_DEVICE": "cpu", "PYTHONPATH": str(Path(gd.__file__).parents[1])}
    child = subprocess.Popen([sys.executable, str(script), str(marker)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never finished an epoch"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err  # fit returned; the script ran to its end
    got = json.loads(out)
    assert got["reason"] == "interrupted" and got["finite"]
    assert got["step"] >= 32  # at least the first epoch's 32 steps
    assert got["epochs"] <= got["step"] // 32  # completed epochs only
    assert got["updates"] == got["step"]  # params and optimizer state of the same step
    assert "interrupted (Ctrl-C)" in err


def test_any_other_error_carries_the_trained_state():
    train, val = rising_val_data()

    class FailsInEpoch2(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                raise OSError("disk went away")

    kw = dict(loss=mse, optimizer=MomentumSGD(0.05), batch_size=4, key=gd.random.key(0),
              verbose=0)
    with pytest.raises(OSError, match="disk went away") as info:
        fit(zero_dense(), train, epochs=5, callbacks=[FailsInEpoch2()], **kw)
    h = info.value.gpudl_history
    assert h.stop_reason == "error" and h.epoch == [0] and h.step == 4
    assert _same_trees(h.params, fit(zero_dense(), train, epochs=2, **kw).params)


# ------------------------------------------------------------------------- configuration
def _counting_loss():
    def loss(out, target):
        loss.calls += 1
        return cross_entropy(out, target)

    loss.calls = 0
    return loss


@pytest.mark.parametrize("overrides, match", [
    (dict(epochs=0), "epochs must be a positive int, got 0"),
    (dict(epochs=2.0), r"as an int: epochs=2"),
    (dict(epochs=True), "epochs must be a positive int"),
    (dict(batch_size=-1), "batch_size must be a positive int"),
    (dict(verbose="yes"), "verbose must be"),
    (dict(callbacks=EarlyStopping()), r"write callbacks=\[cb\]"),
    (dict(callbacks=[EarlyStopping]), r"pass an instance: add \(\)"),
    (dict(callbacks=[ModelCheckpoint("ck_{stepp}.npz", best_only=False)]),
     "path field 'stepp' .* did you mean 'step'"),
    (dict(callbacks=[ModelCheckpoint("ck_{val_loss:.3f}.npz", best_only=False)]),
     "val_\\* metrics need validation_data"),
    (dict(callbacks=[ModelCheckpoint("ck_{epoch:.x}.npz", best_only=False)]),
     "cannot be formatted"),
    (dict(callbacks=[EarlyStopping("val_loss")]), "val_\\* metrics need validation_data"),
    (dict(callbacks=[ReduceLROnPlateau("val_accuracy")]), "val_\\* metrics need"),
    (dict(callbacks=[EarlyStopping("acc")], metrics=["accuracy"]),
     "monitored metric 'acc' .* did you mean 'accuracy'"),
    (dict(callbacks=[EarlyStopping("lr_scale"), ReduceLROnPlateau("loss")]),
     "'lr_scale' is not produced"),
    (dict(callbacks=[CSVLogger("/no/such/folder/log.csv")]), "does not exist"),
])
def test_configuration_mistakes_fail_before_the_first_step(overrides, match):
    x, y = _blobs(16)
    loss = _counting_loss()
    kw = {**dict(loss=loss, optimizer=MomentumSGD(), epochs=1, verbose=0), **overrides}
    with pytest.raises(TrainingConfigError, match=match):
        fit(_model(), (x, y), **kw)
    assert loss.calls == 0


def test_a_monitor_after_a_callback_that_adds_it_is_accepted():
    x, y = _blobs(16)
    h = fit(_model(), (x, y), loss=cross_entropy, optimizer=MomentumSGD(), epochs=2,
            callbacks=[ReduceLROnPlateau("loss"), EarlyStopping("lr_scale", mode="max")],
            verbose=0)
    assert h["lr_scale"] == [1.0, 1.0]

    class AddsItsOwn(Callback):  # undeclared additions: later monitors are trusted
        def on_epoch_end(self, trainer, epoch, logs):
            logs["val_custom"] = 1.0 / (epoch + 1)

    h = fit(_model(), (x, y), loss=cross_entropy, optimizer=MomentumSGD(), epochs=2,
            callbacks=[AddsItsOwn(), EarlyStopping("val_custom", patience=1)], verbose=0)
    assert h["val_custom"] == [1.0, 0.5]


@pytest.mark.parametrize("path", ["x.pt", "x{}.npz", "x{0}.npz", "x{epoch.npz"])
def test_model_checkpoint_paths_are_checked_when_made(path):
    with pytest.raises(TrainingConfigError, match="ModelCheckpoint"):
        ModelCheckpoint(path)


def test_resume_from_a_weights_file_says_so(tmp_path):
    x, y = _blobs(16)
    model = _model()
    h = fit(model, (x, y), loss=cross_entropy, optimizer=MomentumSGD(), verbose=0)
    gd.save(tmp_path / "w.npz", h.params)
    with pytest.raises(gd.CheckpointError, match=r"is a weights file .* not a training "
                                                 r"checkpoint.*params=gd.load\("):
        fit(model, (x, y), loss=cross_entropy, optimizer=MomentumSGD(), epochs=2,
            resume_from=str(tmp_path / "w.npz"), verbose=0)


# ------------------------------------------------------------------------- empty data
def test_empty_data_raises_instead_of_reporting_zero():
    x, y = _blobs(16)
    model = _model()
    h = fit(model, (x, y), loss=cross_entropy, optimizer=MomentumSGD(), verbose=0)
    kw = dict(loss=cross_entropy, optimizer=MomentumSGD(), verbose=0)
    with pytest.raises(EmptyDataError, match="the training data yields no batch: no rows"):
        fit(model, (x[:0], y[:0]), **kw)
    short = DataLoader((x[:5], y[:5]), batch_size=8, drop_last=True)
    with pytest.raises(EmptyDataError, match="5 rows, fewer than one batch of 8"):
        fit(model, short, **kw)
    with pytest.raises(EmptyDataError, match="validation_data yields no batch"):
        fit(model, (x, y), validation_data=(x[:0], y[:0]), **kw)
    with pytest.raises(EmptyDataError, match="evaluate: the data yields no batch"):
        gd.evaluate(model, h.params, h.state, (x[:0], y[:0]), loss=cross_entropy)
    with pytest.raises(EmptyDataError, match="predict: x yields no batch"):
        gd.predict(model, h.params, h.state, x[:0])
