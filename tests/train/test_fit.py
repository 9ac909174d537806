"""fit / evaluate / predict, History and its plot, progress output, OOM and failed steps."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from train_helpers import MomentumSGD, cross_entropy, np_cross_entropy

import gpudl as gd
from gpudl import nn, optim
from gpudl.train import Callback, OutOfMemoryError, evaluate, fit, predict
from gpudl.train import progress as progress_mod
from gpudl.train.loop import resolve_loss


def test_fit_loss_falls_and_history_has_every_metric(blob_data, mlp):
    train, val = blob_data
    h = fit(mlp(), train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=4,
            validation_data=val, metrics=["accuracy"], batch_size=16, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in h.history.values())
    assert h.epochs_run == 4 and len(h.epoch_times) == 4 and not h.stopped_early
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert h["val_accuracy"][-1] >= 0.9
    assert h.params is not None and h.opt_state.count == 4 * 4  # 64 rows / 16 = 4 steps/epoch


def test_evaluate_and_predict_match_a_numpy_reference(blob_data, mlp):
    train, val = blob_data
    model = mlp()
    h = fit(model, train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=1,
            batch_size=16, verbose=0)
    x, y = val
    out = predict(model, h.params, h.state, x, batch_size=7)  # batches that do not divide N
    assert isinstance(out, np.ndarray) and out.shape == (len(x), 3)
    whole, _ = model.apply(h.params, h.state, gd.asarray(x), train=False)
    np.testing.assert_allclose(out, gd.to_numpy(whole), rtol=1e-6, atol=1e-6)
    res = evaluate(model, h.params, h.state, val, loss=cross_entropy, metrics=["accuracy"],
                   batch_size=5)
    assert res["loss"] == pytest.approx(np_cross_entropy(out, y), rel=1e-5)
    assert res["accuracy"] == pytest.approx(float((out.argmax(1) == y).mean()))


def test_history_plot_returns_a_figure_with_train_and_val_curves(blob_data, mlp):
    from matplotlib.figure import Figure

    train, val = blob_data
    h = fit(mlp(), train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=2,
            validation_data=val, metrics=["accuracy"], batch_size=32, verbose=0)
    fig = h.plot()
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "accuracy"]
    for ax, name in zip(axes, ["loss", "accuracy"]):
        lines = ax.get_lines()
        assert len(lines) == 2
        np.testing.assert_allclose(lines[0].get_ydata(), h[name])
        np.testing.assert_allclose(lines[1].get_ydata(), h[f"val_{name}"])
    fig.savefig(__import__("io").BytesIO(), format="png")  # renders headless (Agg)
    with pytest.raises(ValueError, match="empty"):
        gd.train.History().plot()


def test_named_loss_and_metric_resolution():
    with pytest.raises(ValueError, match="unknown loss"):
        resolve_loss("nope")
    with pytest.raises(ValueError, match="unknown metric"):
        fit(None, (np.zeros((2, 1)), np.zeros(2)), loss=cross_entropy, optimizer=MomentumSGD(),
            metrics=["nope"], verbose=0)


def test_fit_with_named_cross_entropy_loss(blob_data, mlp):
    """Needs gpudl.functional's softmax_cross_entropy (fused op)."""
    train, _ = blob_data
    h = fit(mlp(), train, loss="cross_entropy", optimizer=MomentumSGD(0.05), epochs=2,
            batch_size=16, verbose=0)
    assert h["loss"][-1] < h["loss"][0]


def test_progress_prints_plain_lines_when_not_a_terminal(blob_data, mlp, capsys):
    train, val = blob_data
    fit(mlp(), train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=2,
        validation_data=val, batch_size=32, verbose=1)
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("epoch 1/2:") and "loss" in line and "val_loss" in line
               for line in out)
    assert any(line.startswith("epoch 2/2:") for line in out)
    fit(mlp(), train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=1,
        batch_size=32, verbose=0)
    assert capsys.readouterr().out == ""


def test_progress_respects_tqdm_disable_on_a_terminal(monkeypatch, blob_data, mlp, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_mod._use_bar(1)  # a terminal gets a bar...
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_mod._use_bar(1)  # ...unless TQDM_DISABLE is set
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress_mod._use_bar(1)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    train, _ = blob_data
    fit(mlp(), train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=2,
        batch_size=32, verbose=1)
    out = capsys.readouterr().out
    assert "epoch 1/2: loss" in out and "epoch 2/2: loss" in out


class _OOMModel:
    """init works; a training forward raises what CuPy raises when the pool is exhausted."""

    def init(self, key, x):
        return {"w": gd.ops.zeros((x.shape[1], 3))}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        if train:
            raise MemoryError("out of memory allocating 1,073,741,824 bytes")
        return x @ params["w"], state


def test_out_of_memory_is_reraised_with_batch_size_and_hint(blob_data):
    train, _ = blob_data
    with pytest.raises(OutOfMemoryError) as info:
        fit(_OOMModel(), train, loss=cross_entropy, optimizer=MomentumSGD(), batch_size=16,
            verbose=0)
    msg = str(info.value)
    assert "batch_size=16" in msg and "smaller batch" in msg and "batch_size=8" in msg
    assert "memory:" in msg and "device=cpu" in msg  # the memory stats of the device
    assert isinstance(info.value, MemoryError)
    assert isinstance(info.value.__cause__, MemoryError)


def test_other_errors_propagate_unchanged(blob_data, mlp):
    def bad_loss(out, y):
        raise ValueError("my loss is broken")

    with pytest.raises(ValueError, match="my loss is broken"):
        fit(mlp(), blob_data[0], loss=bad_loss, optimizer=MomentumSGD(), verbose=0)


class _Grab(Callback):
    def on_train_begin(self, trainer):
        self.trainer = trainer


def test_a_failed_step_leaves_parameters_as_after_the_last_good_step(mlp):
    x = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
    y = np.array([0, 1, 2] * 4)
    calls = {"n": 0}

    def flaky(out, target):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("step 3 failed")
        return cross_entropy(out, target)

    grab = _Grab()
    model = mlp(dropout=0.25)
    with pytest.raises(RuntimeError, match="step 3"):
        fit(model, (x, y), loss=flaky, optimizer=MomentumSGD(0.1), batch_size=4, shuffle=False,
            callbacks=[grab], key=gd.random.key(3), verbose=0)
    t = grab.trainer
    assert t.step == 2
    # Reference: the same two steps (same data order and keys) with nothing failing.
    ref = fit(model, (x[:8], y[:8]), loss=cross_entropy, optimizer=MomentumSGD(0.1),
              batch_size=4, shuffle=False, key=gd.random.key(3), verbose=0)
    for a, b in zip(gd.tree.tree_leaves(t.params), gd.tree.tree_leaves(ref.params)):
        assert np.array_equal(a, b)
    for a, b in zip(gd.tree.tree_leaves(t.opt_state), gd.tree.tree_leaves(ref.opt_state)):
        assert np.array_equal(a, b)


def test_fit_on_a_dataloader_with_a_shape_changing_transform(mlp):
    """Init must see the transformed batch (a crop changes the model's input size)."""
    from gpudl.data import DataLoader
    from gpudl.data.transforms import augment, random_crop

    x = np.random.default_rng(0).random((16, 1, 6, 6)).astype(np.float32)
    y = np.arange(16) % 3
    loader = DataLoader((x, y), batch_size=8, shuffle=True,
                        transform=augment((random_crop, {"size": 4})))
    model = gd.nn.Sequential([gd.nn.Flatten(), gd.nn.Dense(3)])
    h = fit(model, loader, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=1, verbose=0)
    (w,) = [leaf for leaf in gd.tree.tree_leaves(h.params) if leaf.ndim == 2]
    assert w.shape == (3, 16)


def test_a_dataloader_batches_as_built_and_fit_refuses_other_settings():
    # fit(batch_size=4) on a loader of batch 23 trained on 23 without a word
    from gpudl.data import DataLoader
    from gpudl.errors import TrainingConfigError

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(46, 4)).astype(np.float32), rng.integers(0, 3, 46)
    steps = []

    class CountSteps(Callback):
        def on_batch_end(self, trainer, batch, loss):
            steps.append(batch)

    mlp = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(3)])
    kwargs = {"loss": cross_entropy, "optimizer": MomentumSGD(0.05), "verbose": 0}
    for given in ({}, {"batch_size": 23}, {"shuffle": False}):
        steps.clear()
        h = fit(mlp, DataLoader((x, y), batch_size=23), callbacks=[CountSteps()], **kwargs,
                **given)
        assert len(steps) == 2 and h.params is not None  # 46 rows / 23
    for given, match in (({"batch_size": 4}, "batch_size=4, but the DataLoader .* built with "
                          "batch_size=23"), ({"shuffle": True}, "shuffle=True, but .* "
                                             "shuffle=False")):
        with pytest.raises(TrainingConfigError, match=match):
            fit(mlp, DataLoader((x, y), batch_size=23), **kwargs, **given)
    with pytest.raises(TrainingConfigError, match="shuffle must be True or False, got 'no'"):
        fit(mlp, (x, y), shuffle="no", **kwargs)  # a truthy string shuffled before


def test_lenet5_trains_a_step_with_the_real_optimizer():
    """Needs gpudl.optim and the conv/pool ops: the course's LeNet-5 through gd.fit."""
    from gpudl import models, optim

    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    h = gd.fit(models.lenet5(), (x, y), loss="cross_entropy", optimizer=optim.sgd(0.1),
               epochs=2, batch_size=8, metrics=["accuracy"], verbose=0)
    assert len(h["loss"]) == 2 and np.isfinite(h["loss"]).all()
    assert gd.nn.count_params(h.params) == 61706


def test_fit_leaves_frozen_parameters_untouched():
    from gpudl import nn, optim

    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, size=(32, 4))
    y = rng.integers(0, 2, size=32)
    vectors = rng.normal(size=(10, 3)).astype(np.float32)
    model = nn.Sequential([nn.Embedding.from_pretrained(vectors, freeze=True), nn.Flatten(),
                           nn.Dense(2)])
    # AdamW's decoupled decay would move even zero-gradient weights if fit ignored the mask.
    h = gd.fit(model, (x, y), loss="cross_entropy", optimizer=optim.adamw(0.05, weight_decay=0.5),
               epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(h.params["0"]["weight"], vectors)
    assert not np.allclose(h.params["2"]["weight"],
                           model.init(gd.random.key(0), x[:2])[0]["2"]["weight"])


def test_progress_bar_is_used_in_a_jupyter_kernel(monkeypatch):
    import types

    pytest.importorskip("tqdm", reason="the progress bar is tqdm's (gpudl[data])")

    class ZMQInteractiveShell:  # the class name IPython gives a notebook kernel's shell
        pass

    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_mod._use_bar(1)
    assert not progress_mod._use_bar(0)


def test_fit_checks_integer_labels_on_the_host_not_every_step(monkeypatch):
    """With (x, y) data, fit and evaluate check y's bounds once on the host; the per-step
    label check (a device-to-host sync on the GPU) is then skipped, and still runs, with
    its precise error, when the bounds do not settle it."""
    from gpudl.functional import labels as L

    calls = []
    real = L._bounds  # the per-step range check's device pass (one copy to the host)
    monkeypatch.setattr(L, "_bounds", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    model = nn.Dense(4)
    h = gd.fit(model, (x, y), loss="cross_entropy", optimizer=optim.sgd(0.1), epochs=2,
               batch_size=8, validation_data=(x, y), verbose=0)
    gd.evaluate(model, h.params, h.state, (x, y), loss="cross_entropy")
    assert calls == []  # 2 epochs x 5 steps + validation + evaluate: no device counts
    with pytest.raises(gd.errors.LabelRangeError, match=r"\[0, 4\)"):
        gd.fit(model, (x, np.where(y == 3, 7, y)), loss="cross_entropy",
               optimizer=optim.sgd(0.1), batch_size=8, verbose=0)
    assert calls  # bounds [0, 7] do not fit C = 4: the step checked, and raised
    calls.clear()
    loader = gd.data.DataLoader((x, y), batch_size=8, transform=lambda b, k: b)
    gd.fit(model, loader, loss="cross_entropy", optimizer=optim.sgd(0.1), verbose=0)
    assert len(calls) == 5  # a transform may change labels: checked every step


def test_fit_on_arrays_on_the_cpu_batches_in_the_loop_and_in_order_without_copies():
    """No loader thread for in-memory arrays on the CPU; with shuffle=False every batch is
    a read-only view of the data, in order; shuffled batches are the permuted rows."""
    import threading

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3)).astype(np.float32)
    seen = []

    def loss_fn(params, state, batch, key):
        seen.append((batch, threading.active_count()))
        out, state = nn.Dense(2).apply(params, state, batch, train=True)
        return (out ** 2).mean(), (state, None)

    threads = threading.active_count()
    h = fit(nn.Dense(2), x, loss_fn=loss_fn, optimizer=optim.sgd(0.1), batch_size=8,
            shuffle=False, verbose=0)
    steps = [b for b, _ in seen[-3:]]  # the first call checked the loss on two rows
    assert [b.shape[0] for b in steps] == [8, 8, 4] and h.step == 3
    assert all(n == threads for _, n in seen)
    for i, b in enumerate(steps):
        np.testing.assert_array_equal(b, x[8 * i:8 * i + 8])
        assert np.shares_memory(b, x) and not b.flags.writeable
    seen.clear()
    fit(nn.Dense(2), x, loss_fn=loss_fn, optimizer=optim.sgd(0.1), batch_size=8, verbose=0)
    rows = np.concatenate([b for b, _ in seen[-3:]])
    assert not np.array_equal(rows, x)  # shuffled ...
    np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(x, axis=0))  # ... every row


def test_metrics_none_means_no_metrics_in_fit_and_evaluate(blob_data, mlp):
    train, val = blob_data
    model = mlp()
    h = fit(model, train, loss=cross_entropy, optimizer=MomentumSGD(0.05), metrics=None,
            validation_data=val, batch_size=16, verbose=0)
    assert set(h.history) == {"loss", "val_loss"}
    assert set(evaluate(model, h.params, h.state, val, loss=cross_entropy, metrics=None)) == \
        {"loss"}
    assert evaluate(model, h.params, h.state, val, metrics=None) == {}
    with pytest.raises(gd.errors.TrainingConfigError, match=r"evaluate: metrics must be a list"):
        evaluate(model, h.params, h.state, val, metrics=5)
    with pytest.raises(gd.errors.TrainingConfigError, match=r"fit: metrics must be a list"):
        fit(model, train, loss=cross_entropy, optimizer=MomentumSGD(), metrics={"a": "acc"},
            verbose=0)


def test_evaluate_errors_name_evaluate_not_fit(blob_data, mlp):
    train, val = blob_data
    model = mlp()
    params, state = model.init(gd.random.key(0), train[0])
    with pytest.raises(gd.errors.TrainingConfigError,
                       match=r"^evaluate: unknown metric 'acuracy' \(did you mean 'accuracy'"):
        evaluate(model, params, state, val, metrics=["acuracy"])
    with pytest.raises(gd.errors.ConfigError, match=r"^evaluate: metric names must be unique"):
        evaluate(model, params, state, val, metrics=["accuracy", "accuracy"])
    with pytest.raises(gd.errors.TrainingConfigError, match=r"^fit: unknown metric 'acuracy'"):
        fit(model, train, loss=cross_entropy, optimizer=MomentumSGD(), metrics=["acuracy"],
            verbose=0)


@pytest.mark.parametrize("verbose", [3, 5, -1, True, 1.0, "1", None])
def test_fit_accepts_only_verbose_0_1_or_2(blob_data, mlp, verbose):
    with pytest.raises(gd.errors.TrainingConfigError, match=r"fit: verbose must be 0, 1 or 2"):
        fit(mlp(), blob_data[0], loss=cross_entropy, optimizer=MomentumSGD(), verbose=verbose)


def test_fit_verbose_2_and_numpy_ints_are_accepted(blob_data, mlp, capsys):
    fit(mlp(), blob_data[0], loss=cross_entropy, optimizer=MomentumSGD(), verbose=np.int64(2))
    printed = capsys.readouterr()
    assert "1/1" in printed.out + printed.err


@pytest.mark.parametrize("make_x, got", [
    (lambda x, y: (x, y), "a tuple of 2 arrays"),
    (lambda x, y: (x, x), "a tuple of 2 arrays"),  # would stack into (2, N, D) silently
    (lambda x, y: [x, y], "a list of 2 arrays"),
    (lambda x, y: {"x": x}, "a dict with keys"),
    (lambda x, y: gd.data.DataLoader((x, y), batch_size=8), "a DataLoader"),
])
def test_predict_takes_the_inputs_x_only(blob_data, mlp, make_x, got):
    x, y = blob_data[1]
    model = mlp()
    params, state = model.init(gd.random.key(0), x)
    with pytest.raises(gd.errors.ArgumentTypeError,
                       match=rf"predict: x must be one array of model inputs .*got {got}.*"
                             r"predict takes the inputs x only.*pass x alone"):
        predict(model, params, state, make_x(x, y))
    with pytest.raises(gd.errors.ShapeError, match=r"predict: x must be an array .* x\[None\]"):
        predict(model, params, state, 3.0)
    assert predict(model, params, state, list(x)).shape == (len(x), 3)  # a list of rows
