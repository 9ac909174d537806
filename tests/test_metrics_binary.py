"""Binary classification end to end: one output per example ((N,) or (N, 1), logits or
probabilities) is read by one documented rule (gpudl/metrics/binary.py) in every metric and
in fit's streaming metrics, against scikit-learn; empty data and one-class ROC raise."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import metrics as M
from gpudl import optim
from gpudl.data.generated import xor
from gpudl.errors import EmptyDataError, LabelRangeError, ShapeError, UndefinedMetricError
from gpudl.models.linear import xor_net
from gpudl.train import metric_state as ms

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _data(n=61, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 1)) + (y[:, None] - 0.5)
    return y, logits, 1.0 / (1.0 + np.exp(-logits))


@pytest.mark.parametrize("shape", ["(N, 1)", "(N,)"])
@pytest.mark.parametrize("label_shape", ["(N,)", "(N, 1)"])
def test_accuracy_of_logits_and_probabilities_matches_sklearn(shape, label_shape):
    y, logits, probs = _data()
    expected = sklearn_metrics.accuracy_score(y, (logits[:, 0] > 0).astype(int))
    yy = y[:, None] if label_shape == "(N, 1)" else y
    for scores in (logits, probs):
        s = scores if shape == "(N, 1)" else scores[:, 0]
        assert M.accuracy(yy, s) == expected
    # the old behaviour, argmax over one column, would give the fraction of zeros
    assert expected != np.mean(y == 0)


def test_threshold_decides_when_given():
    y = np.array([0, 1, 1, 0])
    logits_in_01 = np.array([0.2, 0.7, 0.9, 0.4])  # ambiguous: read as probabilities
    assert M.accuracy(y, logits_in_01) == 1.0
    assert M.accuracy(y, logits_in_01, threshold=0.0) == 0.5  # logits: all positive
    assert M.accuracy(y, np.array([0.0, 1.0, 1.0, 1.0])) == 0.75  # whole numbers: labels


def test_integral_float_predictions_stay_labels():
    # multi-class predicted labels stored as floats keep their meaning
    assert M.accuracy(np.array([0, 2, 1]), np.array([0.0, 2.0, 2.0])) == pytest.approx(2 / 3)


def test_scores_need_binary_truth():
    with pytest.raises(LabelRangeError, match="must hold 0/1 labels, got 2"):
        M.accuracy(np.array([0, 2, 1]), np.array([0.1, 0.8, 0.3]))


def test_one_column_never_broadcasts():
    with pytest.raises(ShapeError):
        M.accuracy(np.zeros(4), np.zeros((3, 1)) + 0.5)


@pytest.mark.parametrize("average", ["binary", "macro", "micro"])
def test_precision_recall_f1_matches_sklearn(average):
    y, logits, probs = _data(seed=3)
    pred = (logits[:, 0] > 0).astype(int)
    ref = sklearn_metrics.precision_recall_fscore_support(y, pred, average=average,
                                                         zero_division=0)[:3]
    for scores in (logits, probs, pred):
        assert M.precision_recall_f1(y, scores, average=average) == pytest.approx(ref)


def test_binary_average_needs_binary_labels():
    with pytest.raises(LabelRangeError, match="average='binary' needs 0/1 labels"):
        M.precision_recall_f1(np.array([0, 1, 2]), np.array([0, 1, 2]), average="binary")
    with pytest.raises(ValueError, match="'macro', 'micro' or 'binary'"):
        M.precision_recall_f1(np.array([0, 1]), np.array([0, 1]), average="weighted")


def test_confusion_matrix_and_predicted_labels_read_one_column():
    y, logits, _ = _data(seed=5)
    pred = (logits[:, 0] > 0).astype(int)
    assert (M.confusion_matrix(y, logits) == sklearn_metrics.confusion_matrix(y, pred)).all()
    assert M.predicted_labels(logits).tolist() == pred.tolist()


def test_streaming_metrics_match_the_functions_whatever_the_batches(xp):
    y, logits, probs = _data(n=70, seed=7)
    for scores in (logits, probs):
        tracker = ms.MetricTracker([ms.make_metric(m) for m in
                                    ("accuracy", "precision", "recall", "f1")])
        # the first batch's scores all lie in [0, 1]: the rule is decided over the epoch
        first = np.argsort(np.abs(scores[:, 0] - 0.5))[:10]
        order = np.r_[first, np.setdiff1d(np.arange(70), first)]
        for sl in (slice(0, 10), slice(10, 40), slice(40, 70)):
            idx = order[sl]
            tracker.update(xp.asarray(scores[idx]), xp.asarray(y[idx]), len(idx))
        p, r, f = M.precision_recall_f1(y, scores, average="binary")
        assert tracker.read() == pytest.approx(
            {"accuracy": M.accuracy(y, scores), "precision": p, "recall": r, "f1": f})


def test_streaming_accuracy_with_a_threshold_and_bad_targets():
    y, _, probs = _data(n=20)
    tracker = ms.MetricTracker([ms.make_metric(ms.Accuracy(threshold=0.0))])
    tracker.update(probs, y, 20)
    assert tracker.read() == {"accuracy": float(np.mean(y == 1))}  # every score > 0
    tracker = ms.MetricTracker([ms.make_metric("accuracy")])
    tracker.update(probs, y + 1, 20)
    with pytest.raises(LabelRangeError, match="targets must be 0/1"):
        tracker.read()
    tracker = ms.MetricTracker([ms.make_metric("accuracy")])
    tracker.update(probs, y, 20)
    with pytest.raises(ShapeError, match="changed from one score per example to class scores"):
        tracker.update(np.c_[probs, probs], y, 20)


@pytest.mark.gpu
def test_binary_fit_on_cuda_reads_metrics_once_per_epoch(monkeypatch):
    import gpudl.metrics.binary as binary

    calls = []
    for module in (ms, binary):
        real = module.to_numpy
        monkeypatch.setattr(module, "to_numpy", lambda a, real=real: calls.append(a) or real(a))
    x, y = xor()
    with gd.device("cuda"):
        gd.fit(xor_net(), (x, y), loss="bce_with_logits", optimizer=optim.adam(0.1), epochs=2,
               batch_size=2, metrics=["accuracy", "f1"], verbose=0, device="cuda")
    assert len(calls) == 2  # one transfer per epoch: the rule is picked on the host then


def test_xor_trains_through_fit_with_bce_with_logits():
    x, y = xor()  # labels (4,), the net's logits (4, 1): the loss reshapes, never broadcasts
    h = gd.fit(xor_net("tanh"), (x, y), loss="bce_with_logits", optimizer=optim.adam(0.1),
               epochs=200, batch_size=4, metrics=["accuracy"], key=gd.random.key(1), verbose=0)
    assert h.history["loss"][-1] < 0.05
    assert h.history["accuracy"][-1] == 1.0
    out = xor_net("tanh").apply(h.params, h.state, x)[0]
    assert M.accuracy(y, out) == 1.0


@pytest.mark.parametrize("metric", [
    lambda: M.accuracy(np.zeros(0), np.zeros((0, 3))),
    lambda: M.accuracy(np.zeros(0), np.zeros(0)),
    lambda: M.top_k_accuracy(np.zeros(0, int), np.zeros((0, 3)), k=2),
    lambda: M.precision_recall_f1(np.zeros(0), np.zeros(0)),
    lambda: M.mse(np.zeros(0), np.zeros(0)),
    lambda: M.rmse(np.zeros(0), np.zeros(0)),
    lambda: M.mae(np.zeros(0), np.zeros(0)),
    lambda: M.r2_score(np.zeros(0), np.zeros(0)),
    lambda: M.roc_auc(np.zeros(0), np.zeros(0)),
    lambda: M.bleu([], []),
])
def test_a_metric_of_nothing_raises(metric):
    with pytest.raises(EmptyDataError, match="undefined"):
        metric()


@pytest.mark.parametrize("fn", [M.roc_auc, M.roc_curve])
def test_roc_of_one_class_raises(fn):
    # scikit-learn: a ValueError in older versions, NaN and an UndefinedMetricWarning now
    with pytest.raises(UndefinedMetricError, match="only one class is present"):
        fn(np.array([1, 1, 1]), np.array([0.1, 0.5, 0.9]))


def test_swapped_arguments_are_named():
    y, _, probs = _data(n=10)
    with pytest.raises(LabelRangeError, match="y_true holds non-integer values.*swapped"):
        M.accuracy(probs[:, 0], y)  # probabilities given as the truth
    with pytest.raises(LabelRangeError, match="swapped"):
        M.precision_recall_f1(probs[:, 0], y, average="binary")


def test_streaming_binary_precision_needs_binary_targets():
    tracker = ms.MetricTracker([ms.make_metric("precision")])
    tracker.update(np.array([[1.0], [0.0], [1.0]]), np.array([1, 2, 0]), 3)  # labels as floats
    with pytest.raises(LabelRangeError, match="targets must be 0/1 labels"):
        tracker.read()


def test_infinite_binary_scores_are_scores_not_labels():
    # inf equals its floor, so [inf, -inf] was read as labels (cast to int64): accuracy 0.0
    y = np.array([1, 0])
    assert M.accuracy(y, np.array([np.inf, -np.inf])) == 1.0
    assert M.predicted_labels(np.array([[np.inf], [-np.inf]])).tolist() == [1, 0]
    tracker = ms.MetricTracker([ms.make_metric("accuracy")])
    tracker.update(np.array([[np.inf], [-np.inf]]), y, 2)
    assert tracker.read()["accuracy"] == 1.0
