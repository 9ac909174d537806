"""Streaming metrics for ``fit``/``evaluate``: sufficient statistics summed on the device.

Each metric adds its batch's statistics (sums and counts from :mod:`gpudl.metrics`) to
accumulators on the outputs' device, computed with the outputs' array module, so a
training step never waits for the GPU. :meth:`MetricTracker.read` copies every
accumulator of every metric to the host in one transfer and turns them into Python
floats; ``fit`` reads once per epoch and once per progress-bar refresh.

The values are those of the whole epoch's outputs at once (``accuracy`` is correct / all
predictions, ``rmse`` the root of the epoch's mean squared error, ``r2`` the epoch's R²),
not an average of per-batch values. The loss and metric *functions* are averaged over
batches weighted by batch size (they only give one number per batch).

Binary classifiers (one output per example, ``(N, 1)`` or ``(N,)``) are read by the rule
of :mod:`gpudl.metrics.binary`, as ``gd.metrics.accuracy`` reads them: each batch adds the
counts of every reading (labels, probabilities at 0.5, logits at 0) and the rule picks
one from the whole epoch's scores when the result is read, so it never flips between
batches and costs no host sync per step. ``precision``/``recall``/``f1`` on such outputs
are those of the positive class (scikit-learn's ``average="binary"``). A metric that saw
no examples raises ``EmptyDataError`` instead of reporting 0.

Example:
    >>> import numpy as np
    >>> t = MetricTracker([make_metric("accuracy")], loss=True)
    >>> t.update(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]), 2, loss=0.75)
    >>> t.update(np.array([[0.3, 0.7]]), np.array([1]), 1, loss=0.0)
    >>> t.read()
    {'loss': 0.5, 'accuracy': 0.6666666666666666}
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import metrics as M
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of, to_numpy
from gpudl.errors import ConfigError, EmptyDataError, LabelRangeError, ShapeError
from gpudl.metrics.binary import (
    binary_stats,
    drop_unit_axis,
    one_score_per_example,
    threshold_from_stats,
)


def _as_float64(value):
    """``value`` as float64 on its own device (no host copy for CuPy arrays)."""
    value = unbox_all(value)
    return value.astype(np.float64) if hasattr(value, "astype") else float(value)


class StreamingMetric:
    """Accumulates one metric over batches: ``update`` per batch, ``result`` from host values.

    ``acc`` holds the accumulators (arrays on the outputs' device; empty before the first
    batch); ``count`` is known from shapes and stays a Python int, so it needs no copy.
    """

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.acc: list[Any] = []
        self.count = 0

    def update(self, outputs, targets, batch_size: int) -> None:
        raise NotImplementedError

    def result(self, acc: list[np.ndarray]) -> float:
        """The metric from ``acc`` copied to the host (float64 NumPy arrays, same order)."""
        raise NotImplementedError

    def merge(self, parts: list[tuple[list[np.ndarray], int]]) -> tuple[list, int]:
        """The host accumulators and count of several passes (the ranks of a data-parallel
        run, each over its shard) combined into one: sums, for sufficient statistics."""
        parts = [(acc, n) for acc, n in parts if len(acc)]
        if not parts:
            return [], 0
        acc = [sum(a[i] for a, _ in parts) for i in range(len(parts[0][0]))]
        return acc, sum(n for _, n in parts)

    def _add(self, *values) -> None:
        if not self.acc:
            self.acc = list(values)
        else:
            self.acc = [a + v for a, v in zip(self.acc, values)]

    def _count(self) -> int:
        """The number of examples seen; none raises (a metric of nothing is undefined)."""
        if not self.count:
            raise EmptyDataError(f"{self.name}: no examples were added (empty data); a metric "
                                 "of nothing is undefined. Check the data given to fit/evaluate.")
        return self.count

    def _binary_stats(self, outputs, targets):
        """The binary counts of one batch when ``outputs`` hold one float score per example,
        else None; the mode (binary or not) must stay the same for the whole pass."""
        out, t = unbox_all(outputs), unbox_all(targets)
        binary = one_score_per_example(out) and np.dtype(out.dtype).kind == "f"
        if self.acc and binary != self.binary:
            raise ShapeError(f"{self.name}: the outputs changed from "
                             f"{'class scores' if binary else 'one score per example'} to "
                             f"{'one score per example' if binary else 'class scores'} "
                             f"(shape {tuple(out.shape)}) within one pass over the data")
        self.binary = binary
        if not binary:
            return None
        given = getattr(self, "threshold", None)
        scores, t = drop_unit_axis(out), drop_unit_axis(M.statistics._array(t))
        if device_of(t) != device_of(scores):
            scores, t = to_numpy(scores), to_numpy(t)
        if tuple(t.shape) != tuple(scores.shape):
            raise ShapeError(f"{self.name}: the outputs {tuple(out.shape)} give one score per "
                             f"example, but the targets have shape {tuple(t.shape)}; give "
                             "targets (N,) or (N, 1)")
        thresholds = (0.5, 0.0) if given is None else (given, given)
        return binary_stats(t, scores, thresholds), int(t.size)


def _invalid_targets(outputs, targets):
    """The number of class-index targets outside ``[0, C)`` (C: the last axis of class-score
    ``outputs``) as a 0-d array on the targets' device, summed with the other accumulators
    and read with them (no host copy here); 0 when ``outputs`` are not class scores (one
    score per example). Call it after the metric's statistic has checked the shapes."""
    out, t = unbox_all(outputs), M.statistics._array(targets)
    if one_score_per_example(out):
        return 0
    t = drop_unit_axis(t) if t.ndim == out.ndim else t
    return ((t < 0) | (t >= out.shape[-1])).sum()


def _last_axis(outputs) -> int:
    shape = tuple(getattr(unbox_all(outputs), "shape", ()))
    return int(shape[-1]) if shape else 0


def _raise_invalid_targets(name: str, invalid, num_classes: int) -> None:
    """The LabelRangeError of ``ClassScore`` for accuracy and top-k, at read time."""
    if invalid:
        raise LabelRangeError(
            f"{name}: {int(invalid)} targets outside [0, {num_classes}) (the classes of the "
            "outputs' last axis); targets must be class indices: check the labels and the "
            "model's number of outputs")


class BatchMean(StreamingMetric):
    """The mean of a per-batch value weighted by batch size: the loss, or a metric function
    ``fn(y_true, y_pred) -> scalar``, truth first as every ``gd.metrics`` function (called
    with the batch's targets and the model's outputs; kept on the device if it returns an
    array)."""

    def __init__(self, name: str, fn: Callable | None = None):
        self.name, self.fn = name, fn
        super().__init__()

    def add(self, value, batch_size: int) -> None:
        self._add(_as_float64(value) * batch_size)
        self.count += batch_size

    def update(self, outputs, targets, batch_size: int) -> None:
        self.add(self.fn(targets, outputs), batch_size)

    def result(self, acc):
        return float(acc[0]) / self._count()


class Accuracy(StreamingMetric):
    """Correct predictions / all predictions: argmax of class scores (N, C), or one score
    per example read by the binary rule (``threshold=None``) or at ``threshold``."""

    name = "accuracy"

    def __init__(self, threshold: float | None = None):
        self.threshold = None if threshold is None else float(threshold)
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.binary, self.num_classes = False, 0

    def update(self, outputs, targets, batch_size):
        stats = self._binary_stats(outputs, targets)
        if stats is None:
            correct, total = M.correct_count(targets, outputs)
            # counted beside the hits, as ClassScore: the error comes when the logs are read
            self._add(correct, _invalid_targets(outputs, targets))
            self.num_classes = _last_axis(outputs)
        else:
            self._add(stats[0])
            total = stats[1]
        self.count += total

    def result(self, acc):
        count = self._count()
        if not self.binary:
            _raise_invalid_targets(self.name, acc[1], self.num_classes)
            return float(acc[0]) / count
        which = threshold_from_stats(self.name, acc[0], given=self.threshold is not None)
        return float(acc[0][3 * which]) / count


class TopK(StreamingMetric):
    """Rows whose target is among the ``k`` highest scores / all rows."""

    def __init__(self, k: int, name: str | None = None):
        self.k, self.name = int(k), name or f"top{k}"
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.num_classes = 0

    def update(self, outputs, targets, batch_size):
        hits, total = M.top_k_hits(targets, outputs, self.k)  # targets outside [0, C): misses
        self._add(hits, _invalid_targets(outputs, targets))
        self.num_classes = _last_axis(outputs)
        self.count += total

    def result(self, acc):
        count = self._count()
        _raise_invalid_targets(self.name, acc[1], self.num_classes)
        return float(acc[0]) / count


class ErrorMean(StreamingMetric):
    """``mse``, ``rmse`` or ``mae`` over every output element of the epoch."""

    def __init__(self, name: str):
        if name not in ("mse", "rmse", "mae"):
            raise ConfigError(f"ErrorMean: name must be 'mse', 'rmse' or 'mae', got {name!r}")
        self.name = name
        super().__init__()

    def update(self, outputs, targets, batch_size):
        se, ae, n = M.error_sums(targets, outputs)
        self._add(se, ae)
        self.count += n

    def result(self, acc):
        count = self._count()
        se, ae = float(acc[0]) / count, float(acc[1]) / count
        return {"mse": se, "rmse": math.sqrt(se), "mae": ae}[self.name]


class R2(StreamingMetric):
    """R² of the epoch: targets' mean and squared deviations merged batch by batch (Chan's
    update, no cancellation) plus the sum of squared residuals."""

    name = "r2"

    def update(self, outputs, targets, batch_size):
        se, _, _ = M.error_sums(targets, outputs)
        mean, m2, sse = self.acc or (0.0, 0.0, 0.0)
        mean, m2, self.count = M.merge_moments((mean, m2, self.count), M.moments(targets))
        self.acc = [mean, m2, sse + se]

    def result(self, acc):
        self._count()
        return M.r2_from_stats(float(acc[1]), float(acc[2]))

    def merge(self, parts):
        # means and squared deviations merge by Chan's update, not by sums
        moments, sse = (0.0, 0.0, 0), 0.0
        for acc, n in parts:
            if len(acc) and n:
                moments = M.merge_moments(moments, (acc[0], acc[1], n))
                sse = sse + acc[2]
        return ([moments[0], moments[1], sse] if moments[2] else []), moments[2]


class ClassScore(StreamingMetric):
    """Macro-averaged ``precision``, ``recall`` or ``f1`` from per-class counts (three (C,)
    vectors on the device; C is the outputs' last axis), or, for one float score per
    example, those of the positive class (the binary rule decides the threshold)."""

    def __init__(self, name: str):
        if name not in ("precision", "recall", "f1"):
            raise ConfigError(f"ClassScore: name must be precision, recall or f1, got {name!r}")
        self.name = name
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.binary = False

    def update(self, outputs, targets, batch_size):
        stats = self._binary_stats(outputs, targets)
        if stats is not None:
            self._add(stats[0])
            self.count += stats[1]
            return
        shape = getattr(unbox_all(outputs), "shape", ())
        if len(shape) < 2:
            raise ShapeError(f"{self.name}: needs class scores (N, C) as outputs, got shape "
                             f"{tuple(shape)}; for labels use gd.metrics.precision_recall_f1")
        self._add(*M.class_counts(targets, outputs, shape[-1]))
        self.count += 1

    def result(self, acc):
        self._count()
        if self.binary:
            return self._binary_result(acc[0])
        tp, predicted, actual, invalid = acc
        if invalid:
            raise LabelRangeError(f"{self.name}: {int(invalid)} targets outside [0, {tp.size}) (the "
                             "classes of the outputs' last axis); targets must be class indices")
        # the mean over the classes that occur in the targets or the predictions, as
        # gd.metrics.precision_recall_f1 and scikit-learn's default labels: an output
        # column no example has or gets would add a 0 and pull the mean down
        tp, predicted, actual = (np.asarray(a, np.float64) for a in (tp, predicted, actual))
        seen = (predicted + actual) > 0
        p, r, f = M.prf_from_counts(tp[seen], predicted[seen], actual[seen], "macro")
        return {"precision": p, "recall": r, "f1": f}[self.name]

    def _binary_result(self, stats) -> float:
        which = threshold_from_stats(self.name, stats)
        if stats[12]:
            raise LabelRangeError(f"{self.name}: the outputs hold one score per example, so "
                                  f"the targets must be 0/1 labels, but {int(stats[12])} are "
                                  "not; map them to 0/1")
        tp, predicted = stats[3 * which + 1], stats[3 * which + 2]
        p, r, f = M.prf_from_counts([tp], [predicted], [stats[9]], "macro")
        return {"precision": p, "recall": r, "f1": f}[self.name]


_NAMED: dict[str, Callable[[], StreamingMetric]] = {
    "accuracy": Accuracy,
    "mse": lambda: ErrorMean("mse"),
    "rmse": lambda: ErrorMean("rmse"),
    "mae": lambda: ErrorMean("mae"),
    "r2": R2,
    "precision": lambda: ClassScore("precision"),
    "recall": lambda: ClassScore("recall"),
    "f1": lambda: ClassScore("f1"),
}
METRIC_NAMES = sorted(_NAMED) + ["top5 (any topK)"]


def make_metric(metric: str | Callable) -> StreamingMetric:
    """A fresh streaming metric from a name (``METRIC_NAMES``) or a function
    ``fn(y_true, y_pred) -> scalar`` (averaged over batches, weighted by batch size), such
    as ``gd.metrics.r2_score`` or scikit-learn's metrics on host arrays.

    Example:
        >>> make_metric("top3").k
        3
    """
    if isinstance(metric, StreamingMetric):  # e.g. Accuracy(threshold=0.0): a fresh copy
        fresh = copy.copy(metric)
        fresh.reset()
        return fresh
    if callable(metric):
        return BatchMean(getattr(metric, "__name__", "metric"), metric)
    top = re.fullmatch(r"top(\d+)", str(metric))
    if top and int(top.group(1)) >= 1:
        return TopK(int(top.group(1)))
    if metric not in _NAMED:
        raise ConfigError(f"fit: unknown metric {metric!r}; expected one of {METRIC_NAMES} or a "
                         "function (y_true, y_pred) -> scalar")
    return _NAMED[metric]()


def fetch(values: Sequence[Any]) -> list[np.ndarray]:
    """Every value as a float64 NumPy array, with one device->host copy for all of them.

    The arrays of one device (CuPy if there are any, else NumPy) are flattened into one
    vector on that device and copied with a single ``to_numpy``; the rest (Python numbers,
    host values beside CuPy ones) are on the host already.
    """
    on_gpu = [device_of(v) == "cuda" for v in values]
    group = on_gpu if any(on_gpu) else [hasattr(v, "dtype") for v in values]
    members = [v for v, g in zip(values, group) if g]
    host = [None if g else np.asarray(v, np.float64) for v, g in zip(values, group)]
    if members:
        xp = module_of(members[0])
        flat = to_numpy(xp.concatenate([xp.asarray(v, dtype=xp.float64).ravel()
                                        for v in members]))
        start = 0
        for i, v in enumerate(values):
            if group[i]:
                size = math.prod(v.shape)
                host[i] = flat[start:start + size].reshape(v.shape)
                start += size
    return host


class MetricTracker:
    """The loss (optional) and metrics of one pass over the data.

    ``update`` per batch queues device work only; ``read`` returns ``{name: float}`` with
    one host transfer.
    """

    def __init__(self, metrics: Sequence[StreamingMetric], loss: bool = False,
                 who: str = "fit"):
        self.metrics = ([BatchMean("loss")] if loss else []) + list(metrics)
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{who}: metric names must be unique, got {dupes} more than once "
                             f"in {names}; give metric functions distinct __name__s")
        self.has_loss = loss

    def reset(self) -> None:
        for m in self.metrics:
            m.reset()

    def update(self, outputs, targets, batch_size: int, loss=None) -> None:
        """Add one batch: ``outputs``/``targets`` as the model and loader give them,
        ``batch_size`` the batch's rows (the weight of the loss and metric functions)."""
        outputs = unbox_all(outputs)
        metrics = self.metrics
        if self.has_loss:
            metrics[0].add(loss, batch_size)
            metrics = metrics[1:]
        for m in metrics:
            m.update(outputs, targets, batch_size)

    def read(self, comm: Any = None) -> dict[str, float]:
        """``{name: value}`` so far, as Python floats (one device->host transfer).

        With ``comm`` (a data-parallel run's communicator) the values are those of every
        rank's examples together: the ranks' host sums and counts are gathered (one small
        collective) and merged, so every rank gets the same logs.
        """
        host, parts = fetch([a for m in self.metrics for a in m.acc]), []
        for m in self.metrics:
            parts, host = parts + [host[:len(m.acc)]], host[len(m.acc):]
        if comm is None or comm.size == 1:
            return {m.name: m.result(acc) for m, acc in zip(self.metrics, parts)}
        ranks = comm.allgather_object([(acc, m.count, getattr(m, "binary", None))
                                       for m, acc in zip(self.metrics, parts)])
        logs = {}
        for j, m in enumerate(self.metrics):
            merged = copy.copy(m)  # this rank's own accumulators stay as they were
            acc, merged.count = m.merge([(r[j][0], r[j][1]) for r in ranks])
            modes = [r[j][2] for r in ranks if r[j][1] and r[j][2] is not None]
            merged.binary = modes[0] if modes else getattr(m, "binary", None)
            logs[m.name] = merged.result(acc)
        return logs
