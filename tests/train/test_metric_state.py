"""Streaming metrics of fit/evaluate: device-side sums equal NumPy over the whole epoch, and
reading them costs one host transfer per report, however many batches there are."""

from __future__ import annotations

import math

import numpy as np
import pytest
from train_helpers import MomentumSGD, cross_entropy, mse, np_cross_entropy

import gpudl as gd
from gpudl import nn
from gpudl.data import DataLoader
from gpudl.errors import EmptyDataError, LabelRangeError
from gpudl.train import evaluate, fit
from gpudl.train import loop as loop_mod
from gpudl.train import metric_state as ms
from gpudl.train import progress as progress_mod
from gpudl.train.names import resolve_metric

CLASS_METRICS = ["accuracy", "top2", "precision", "recall", "f1"]
REGRESSION_METRICS = ["mse", "rmse", "mae", "r2"]


# ----------------------------------------------------------------------------- references
def ref_classification(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Naive float64 loops over every row of the epoch."""
    n, c = scores.shape
    pred = [max(range(c), key=lambda j: scores[i, j]) for i in range(n)]
    top2 = [sorted(range(c), key=lambda j: -scores[i, j])[:2] for i in range(n)]
    p, r, f = [], [], []
    for k in range(c):
        tp = sum(1 for i in range(n) if pred[i] == k and y[i] == k)
        n_pred = sum(1 for i in range(n) if pred[i] == k)
        n_true = sum(1 for i in range(n) if y[i] == k)
        pk = tp / n_pred if n_pred else 0.0
        rk = tp / n_true if n_true else 0.0
        p.append(pk)
        r.append(rk)
        f.append(2 * pk * rk / (pk + rk) if pk + rk else 0.0)
    # macro means over the classes that occur in y or pred (scikit-learn's default labels)
    seen = [k for k in range(c) if k in pred or k in y]
    return {"accuracy": sum(pred[i] == y[i] for i in range(n)) / n,
            "top2": sum(y[i] in top2[i] for i in range(n)) / n,
            **{name: sum(v[k] for k in seen) / len(seen)
               for name, v in (("precision", p), ("recall", r), ("f1", f))}}


def ref_regression(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p, t = pred.astype(np.float64).reshape(y.shape).ravel(), y.astype(np.float64).ravel()
    sq = sum((a - b) ** 2 for a, b in zip(p, t))
    mean = sum(t) / len(t)
    ss_tot = sum((b - mean) ** 2 for b in t)
    return {"mse": sq / len(t), "rmse": math.sqrt(sq / len(t)),
            "mae": sum(abs(a - b) for a, b in zip(p, t)) / len(t), "r2": 1 - sq / ss_tot}


def _batches(n: int, size: int):
    """Slices of ``n`` rows in batches of ``size``; the last one is partial."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


# ----------------------------------------------------------------------------- tracker
def test_tracker_equals_numpy_over_the_epoch_with_a_partial_last_batch(xp):
    rng = np.random.default_rng(0)
    scores, y = rng.normal(size=(70, 4)), rng.integers(0, 4, 70)
    losses = rng.random(5)
    tracker = ms.MetricTracker([ms.make_metric(m) for m in CLASS_METRICS], loss=True)
    for b, sl in enumerate(_batches(70, 16)):  # 16, 16, 16, 16, 6
        tracker.update(xp.asarray(scores[sl]), xp.asarray(y[sl]), sl.stop - sl.start,
                       loss=xp.asarray(losses[b]))
    got = tracker.read()
    sizes = np.array([16, 16, 16, 16, 6])
    expected = {"loss": float((losses * sizes).sum() / 70), **ref_classification(scores, y)}
    assert list(got) == ["loss"] + CLASS_METRICS
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert all(type(v) is float for v in got.values())

    pred = scores[:, :1] * 3 + rng.normal(size=(70, 1))  # (N, 1) outputs for (N,) targets
    target = scores[:, 0] * 3 + 100.0  # a large offset: the R² statistics must not cancel
    pred = pred + 100.0
    tracker = ms.MetricTracker([ms.make_metric(m) for m in REGRESSION_METRICS])
    for sl in _batches(70, 16):
        tracker.update(xp.asarray(pred[sl]), xp.asarray(target[sl]), sl.stop - sl.start)
    assert tracker.read() == pytest.approx(ref_regression(pred, target), rel=1e-10)
    tracker.reset()
    with pytest.raises(EmptyDataError, match="no examples were added"):
        tracker.read()  # a metric of nothing is undefined: never a made-up 0.0


def test_macro_scores_leave_out_an_output_class_no_example_has_or_gets(xp):
    # 3 output columns, class 2 never a label and never predicted: the macro mean is over
    # classes 0 and 1, as scikit-learn's default and gd.metrics.precision_recall_f1 (it
    # was over all 3 columns: 2/3 of the right value)
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(53, 3))
    scores[:, 2] = -100.0
    y = rng.integers(0, 2, 53)
    tracker = ms.MetricTracker([ms.make_metric(m) for m in ("precision", "recall", "f1")])
    for sl in _batches(53, 10):
        tracker.update(xp.asarray(scores[sl]), xp.asarray(y[sl]), sl.stop - sl.start)
    got, pred = tracker.read(), scores.argmax(axis=1)
    want = [sk.precision_score(y, pred, average="macro"),
            sk.recall_score(y, pred, average="macro"), sk.f1_score(y, pred, average="macro")]
    assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(want, rel=1e-12)
    assert gd.metrics.precision_recall_f1(y, scores) == pytest.approx(want, rel=1e-12)


def test_metric_functions_are_batch_means_weighted_by_batch_size():
    rng = np.random.default_rng(1)
    out, y = rng.normal(size=(21, 3)), rng.integers(0, 3, 21)

    def first_col_mean(t, o):  # a device array: stays on the device
        return o[:, 0].mean()

    def host_value(t, o):  # a Python float (the function's own choice)
        return float(o[:, 1].mean())

    tracker = ms.MetricTracker([ms.make_metric(first_col_mean), ms.make_metric(host_value)])
    for sl in _batches(21, 8):
        tracker.update(out[sl], y[sl], sl.stop - sl.start)
    sizes = [8, 8, 5]
    got = tracker.read()
    for name, col in (("first_col_mean", 0), ("host_value", 1)):
        means = [out[sl, col].mean() for sl in _batches(21, 8)]
        assert got[name] == pytest.approx(np.dot(means, sizes) / 21, rel=1e-12)


def test_metric_functions_take_the_truth_first_as_gd_metrics_and_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    out, y = rng.normal(size=(12, 1)) + 5.0, rng.normal(size=12) * 3 + 5.0
    tracker = ms.MetricTracker([ms.make_metric(gd.metrics.r2_score),
                                ms.make_metric(lambda t, o: sk.r2_score(t, o.ravel()))])
    tracker.update(out, y, 12)  # one batch: the batch mean is the function's value
    got = list(tracker.read().values())
    assert got == pytest.approx([sk.r2_score(y, out.ravel())] * 2, rel=1e-12)
    assert got[0] != pytest.approx(sk.r2_score(out.ravel(), y), rel=1e-3)
    named = ms.MetricTracker([ms.make_metric("r2")])
    named.update(out, y, 12)
    assert named.read()["r2"] == pytest.approx(got[0], rel=1e-12)


def test_metric_names_and_errors():
    assert [ms.make_metric(m).name for m in ("top1", "top10", "accuracy")] == \
        ["top1", "top10", "accuracy"]
    for bad in ("nope", "top0", "topk"):
        with pytest.raises(ValueError, match="unknown metric"):
            ms.make_metric(bad)
    with pytest.raises(ValueError, match="unique"):
        ms.MetricTracker([ms.make_metric("f1"), ms.make_metric("f1")])
    with pytest.raises(ValueError, match=r"class scores \(N, C\)"):
        ms.make_metric("f1").update(np.array([0, 1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="k must be"):
        ms.make_metric("top5").update(np.zeros((2, 3)), np.array([0, 1]), 2)
    f1 = ms.MetricTracker([ms.make_metric("f1")])
    f1.update(np.eye(3), np.array([0, 1, 7]), 3)  # no sync here: the check waits for read
    with pytest.raises(ValueError, match=r"1 targets outside \[0, 3\)"):
        f1.read()


def test_fetch_copies_everything_in_one_transfer(monkeypatch):
    calls = []
    monkeypatch.setattr(ms, "to_numpy", lambda a: calls.append(a) or np.asarray(a))
    values = [np.float64(2.5), np.arange(6).reshape(2, 3), 7, np.array(1.5)]
    host = ms.fetch(values)
    assert len(calls) == 1 and calls[0].shape == (8,)
    assert [h.dtype for h in host] == [np.float64] * 4
    assert host[0] == 2.5 and host[1].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert host[2] == 7 and host[3] == 1.5


# ----------------------------------------------------------------------------- fit/evaluate
def _recorder(store: list):
    """A metric function that keeps every batch's outputs and targets (on the host)."""

    def recorded(y, out):  # metric functions take (y_true, y_pred)
        store.append((gd.to_numpy(out).astype(np.float64), gd.to_numpy(y)))
        return 0.0

    return recorded


def test_fit_and_evaluate_classification_metrics_equal_numpy_on_the_epoch_outputs(mlp):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(70, 2)).astype(np.float32)
    y = rng.integers(0, 3, 70)  # hard labels: the metrics stay far from 0 and 1
    store: list = []
    h = fit(mlp(), (x, y), loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=2,
            metrics=CLASS_METRICS + [_recorder(store)], batch_size=16, verbose=0,
            validation_data=(x[:23], y[:23]))
    # per epoch: 5 training batches, then 2 validation batches (16 and 7 rows)
    assert [len(o) for o, _ in store] == [16, 16, 16, 16, 6, 16, 7] * 2
    for epoch in range(2):
        train, val = store[epoch * 7:epoch * 7 + 5], store[epoch * 7 + 5:epoch * 7 + 7]
        scores = np.concatenate([o for o, _ in train])
        labels = np.concatenate([t for _, t in train])
        ref = ref_classification(scores, labels)
        # the loss: per-batch means weighted by batch size, the partial batch included
        ref["loss"] = sum(np_cross_entropy(o, t) * len(t) for o, t in train) / 70
        assert {k: h[k][epoch] for k in ref} == pytest.approx(ref, rel=1e-5)
        val_ref = ref_classification(np.concatenate([o for o, _ in val]),
                                     np.concatenate([t for _, t in val]))
        assert {k: h[f"val_{k}"][epoch] for k in val_ref} == pytest.approx(val_ref, rel=1e-12)

    model = mlp()
    params, state = h.params, h.state
    res = evaluate(model, params, state, (x, y), loss=cross_entropy, metrics=CLASS_METRICS,
                   batch_size=16)
    out = gd.predict(model, params, state, x)
    ref = ref_classification(out.astype(np.float64), y)
    ref["loss"] = sum(np_cross_entropy(out[sl], y[sl]) * (sl.stop - sl.start)
                      for sl in _batches(70, 16)) / 70
    assert res == pytest.approx(ref, rel=1e-5)


def test_fit_regression_metrics_equal_numpy_on_the_epoch_outputs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(45, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)  # (N, 1)
    store: list = []
    h = fit(nn.Sequential([nn.Dense(1)]), (x, y), loss=mse, optimizer=MomentumSGD(0.02),
            epochs=2, metrics=REGRESSION_METRICS + [_recorder(store)], batch_size=10, verbose=0)
    assert [len(o) for o, _ in store] == [10, 10, 10, 10, 5] * 2
    for epoch in range(2):
        batch = store[epoch * 5:(epoch + 1) * 5]
        ref = ref_regression(np.concatenate([o for o, _ in batch]),
                             np.concatenate([t for _, t in batch]))
        assert {k: h[k][epoch] for k in ref} == pytest.approx(ref, rel=1e-10)
    # The epoch's RMSE, not the mean of per-batch RMSEs (they differ unless errors are flat).
    per_batch = sum(math.sqrt(((o - t) ** 2).mean()) * len(t) for o, t in store[5:]) / 45
    assert h["rmse"][1] != pytest.approx(per_batch, rel=1e-9)


class _HostReads(np.ndarray):
    """Targets that count every conversion to a Python number or list (a host sync on GPU)."""

    count = 0

    def _read(self, how):
        _HostReads.count += 1
        return getattr(self.view(np.ndarray), how)()

    def __float__(self):
        return self._read("__float__")

    def __int__(self):
        return self._read("__int__")

    def __bool__(self):
        return self._read("__bool__")

    def __index__(self):
        return self._read("__index__")

    def item(self, *args):
        return self._read("item")

    def tolist(self):
        return self._read("tolist")


class _CountingLoader(DataLoader):
    def _batches(self, *args):
        for x, y in super()._batches(*args):
            yield x, y.view(_HostReads)


def _transfers(monkeypatch, task: str, n_rows: int, epochs: int = 2) -> tuple[int, int, int]:
    """(to_numpy calls by the metric tracker, to_numpy calls anywhere in the loop and the
    metrics, host reads of target-derived values) in one fit run."""
    calls = {ms: 0, "all": 0}
    real = gd.backend.to_numpy

    def counter(module):
        def counting(a):
            calls["all"] += 1
            calls[module] = calls.get(module, 0) + 1
            return real(a)

        return counting

    for module in (ms, loop_mod, gd.metrics.statistics, gd.metrics.classification, gd.backend):
        monkeypatch.setattr(module, "to_numpy", counter(module))
    _HostReads.count = 0
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n_rows, 2)).astype(np.float32)
    if task == "classification":
        y, loss, metrics, width = rng.integers(0, 3, n_rows), cross_entropy, CLASS_METRICS, 3
    else:
        y, loss, metrics, width = x[:, :1] * 2 - x[:, 1:], mse, REGRESSION_METRICS, 1
    model = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(width)])
    fit(model, _CountingLoader((x, y), batch_size=8, prefetch=0), loss=loss,
        optimizer=MomentumSGD(0.05), epochs=epochs, verbose=0, metrics=metrics,
        validation_data=_CountingLoader((x, y), batch_size=8, prefetch=0))
    return calls[ms], calls["all"], _HostReads.count


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_host_transfers_per_epoch_do_not_grow_with_the_number_of_batches(monkeypatch, task):
    few = _transfers(monkeypatch, task, 24)  # 3 batches per epoch
    many = _transfers(monkeypatch, task, 100)  # 13 batches, the last one partial
    assert few == many
    assert many[2] == 0  # no float()/item()/tolist() on per-batch values
    # exactly one copy per report: the training epoch and the validation pass, per epoch
    assert many[0] == 2 * 2
    assert _transfers(monkeypatch, task, 100, epochs=3)[0] == 2 * 3


def test_progress_bar_refreshes_read_all_metrics_once_each(monkeypatch, blob_data, mlp):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress_mod, "_use_bar", lambda verbose: verbose >= 1)
    reads, postfix = [], []
    real_read = ms.MetricTracker.read

    def read(self):
        logs = real_read(self)
        reads.append(logs)
        return logs

    monkeypatch.setattr(ms.MetricTracker, "read", read)
    real_update = progress_mod.Progress.update
    monkeypatch.setattr(progress_mod.Progress, "update",
                        lambda self, logs=None: (postfix.append(logs), real_update(self, logs)))
    train, _ = blob_data  # 64 rows, batch 2: 32 steps, redrawn at steps 0, 20 and 31
    fit(mlp(), train, loss=cross_entropy, optimizer=MomentumSGD(0.05), epochs=1,
        metrics=["accuracy", "f1"], batch_size=2, verbose=1)
    shown = [p for p in postfix if p is not None]
    assert len(postfix) == 32 and len(shown) == 3 and len(reads) == 3 + 1  # + the epoch's
    assert all(list(p) == ["loss", "accuracy", "f1"] for p in shown)
    assert shown[-1] == reads[-1]


def test_metrics_may_be_one_name():
    x = np.random.default_rng(5).normal(size=(12, 2)).astype(np.float32)
    y = np.arange(12) % 3
    model = nn.Sequential([nn.Dense(3)])
    h = fit(model, (x, y), loss=cross_entropy, optimizer=MomentumSGD(), metrics="accuracy",
            batch_size=5, verbose=0)
    assert set(h.history) == {"loss", "accuracy"}


@pytest.mark.gpu
def test_fit_on_cuda_reads_metrics_once_per_epoch(monkeypatch):
    calls = []
    real = ms.to_numpy
    monkeypatch.setattr(ms, "to_numpy", lambda a: calls.append(a) or real(a))
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    store: list = []
    with gd.device("cuda"):
        h = fit(nn.Sequential([nn.Dense(3)]), (x, y), loss=cross_entropy,
                optimizer=MomentumSGD(0.05), epochs=2, batch_size=8, verbose=0,
                metrics=CLASS_METRICS + [_recorder(store)], device="cuda")
    assert len(calls) == 2 and all(gd.backend.device_of(c) == "cuda" for c in calls)
    scores = np.concatenate([o for o, _ in store[7:]])
    labels = np.concatenate([t for _, t in store[7:]])
    ref = ref_classification(scores, labels)
    assert {k: h[k][1] for k in ref} == pytest.approx(ref, rel=1e-6)


# ----------------------------------------------------------------------------- target range
def _ignores_targets(out, y):
    return gd.ops.mean(out * out)  # a loss that never looks at the labels


@pytest.mark.parametrize("name", ["accuracy", "sparse_categorical_accuracy", "top2",
                                  "sparse_top_k_categorical_accuracy"])
def test_accuracy_and_top_k_targets_outside_the_classes_raise_at_read_time(name):
    tracker = ms.MetricTracker([resolve_metric(name)])  # top-k of sparse_top_k...: k=5
    tracker.update(np.eye(6), np.array([0, 1, 7, 3, 4, 5]), 6)  # no sync: checked at read
    tracker.update(np.eye(6)[:2], np.array([-1, 1]), 2)
    with pytest.raises(LabelRangeError, match=r"(accuracy|top\d): 2 targets outside \[0, 6\)"):
        tracker.read()
    tracker.reset()
    tracker.update(np.eye(6), np.arange(6), 6)
    assert list(tracker.read().values()) == [1.0]
    if "top" not in name:  # accuracy also takes (N, 1) labels
        tracker.update(np.eye(6)[:2], np.array([[6], [1]]), 2)
        with pytest.raises(LabelRangeError, match=r"1 targets outside \[0, 6\)"):
            tracker.read()


def test_accuracy_keeps_binary_outputs_and_one_hot_targets_as_they_were():
    binary = ms.MetricTracker([resolve_metric("accuracy")])
    binary.update(np.array([[0.9], [0.2], [0.7]]), np.array([1, 0, 0]), 3)
    assert binary.read()["accuracy"] == pytest.approx(2 / 3)
    one_hot = ms.MetricTracker([resolve_metric("categorical_accuracy"),
                                resolve_metric("top_k_categorical_accuracy")])
    scores = np.random.default_rng(0).normal(size=(6, 7))
    one_hot.update(scores, np.eye(7)[[0, 1, 2, 3, 4, 6]], 6)
    assert set(one_hot.read()) == {"categorical_accuracy", "top_k_categorical_accuracy"}


def test_fit_and_evaluate_raise_for_targets_outside_the_classes_as_f1_does():
    x = np.random.default_rng(7).normal(size=(20, 2)).astype(np.float32)
    y = np.arange(20) % 3
    y[5] = 3  # the model has 3 outputs: class 3 does not exist
    model = nn.Sequential([nn.Dense(3)])
    params, state = model.init(gd.random.key(0), x)
    for metrics in (["accuracy"], ["top2"], ["f1"]):
        with pytest.raises(LabelRangeError, match=r"1 targets outside \[0, 3\)"):
            evaluate(model, params, state, (x, y), metrics=metrics, batch_size=8)
    with pytest.raises(LabelRangeError, match=r"accuracy: 1 targets outside \[0, 3\)"):
        fit(model, (x, y), loss=_ignores_targets, optimizer=MomentumSGD(), metrics=["accuracy"],
            batch_size=8, verbose=0)


@pytest.mark.gpu
def test_targets_outside_the_classes_raise_on_cuda_after_one_transfer(monkeypatch):
    calls = []
    real = ms.to_numpy
    monkeypatch.setattr(ms, "to_numpy", lambda a: calls.append(a) or real(a))
    x = np.random.default_rng(8).normal(size=(30, 2)).astype(np.float32)
    y = np.arange(30) % 3
    y[[3, 17]] = -2
    with gd.device("cuda"):
        model = nn.Sequential([nn.Dense(3)])
        params, state = model.init(gd.random.key(0), gd.asarray(x))
        with pytest.raises(LabelRangeError, match=r"2 targets outside \[0, 3\)"):
            evaluate(model, params, state, (x, y), metrics=["accuracy", "top2"], batch_size=8,
                     device="cuda")
    assert len(calls) == 1 and gd.backend.device_of(calls[0]) == "cuda"
