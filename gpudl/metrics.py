"""Metrics (no gradients; inputs from either device, results as Python floats / NumPy).

accuracy, top-k accuracy, confusion matrix, precision/recall/F1 (macro and micro),
ROC curve and AUC, MSE/RMSE/MAE, R², perplexity, and corpus BLEU with the brevity penalty.

The classification and regression metrics are built on per-batch *sufficient statistics*
(``correct_count``, ``top_k_hits``, ``class_counts``, ``error_sums``, ``moments``) that
are computed with the array module of their inputs and stay on that device. The
functions below read them once; ``gd.fit`` adds them up over an epoch on the GPU and
reads them once per report (see ``gpudl/train/metric_state.py``).

Example:
    >>> import numpy as np
    >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    0.5
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of, to_numpy


# ----------------------------------------------------------------------------- inputs
def _array(x: Any):
    """``x`` as an array on its own device (CuPy stays CuPy; lists become NumPy)."""
    x = unbox_all(x)
    return x if device_of(x) == "cuda" else np.asanyarray(x)


def _pair(a: Any, b: Any):
    """Two inputs as arrays on one device: mixed CuPy/NumPy inputs are compared on the host."""
    a, b = _array(a), _array(b)
    if device_of(a) != device_of(b):
        return to_numpy(a), to_numpy(b)
    return a, b


def predicted_labels(outputs):
    """Class labels from scores ``(..., C)`` (argmax of the last axis); 1-D input is labels."""
    return outputs.argmax(axis=-1) if outputs.ndim > 1 else outputs


# ----------------------------------------------------------------------------- statistics
def correct_count(outputs, targets) -> tuple[Any, int]:
    """``(correct, total)``: the number of correct predictions as a 0-d array on the inputs'
    device (no host copy) and the number of predictions.

    ``outputs``: scores ``(..., C)`` (argmax taken) or predicted labels with the targets'
    shape.

    Example:
        >>> c, n = correct_count(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
        >>> int(c), n
        (1, 2)
    """
    out, t = _pair(outputs, targets)
    pred = predicted_labels(out)
    if pred.shape != t.shape:
        raise ValueError(f"accuracy: predictions {pred.shape} and targets {t.shape} differ; "
                         "pass scores (N, C) with labels (N,), or labels of the same shape")
    return (pred == t).sum(), int(t.size)


def top_k_hits(scores, targets, k: int = 5) -> tuple[Any, int]:
    """``(hits, total)``: rows whose target is among the ``k`` highest scores (0-d array on the
    inputs' device) and the number of rows.

    A target counts as a hit when fewer than ``k`` classes score strictly higher, so ties
    at the k-th place count in its favour (as TensorFlow's ``in_top_k``); this needs no
    sort. Targets outside ``[0, C)`` are misses.

    Example:
        >>> h, n = top_k_hits(np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), np.array([1, 0]), 2)
        >>> int(h), n
        (1, 2)
    """
    s, t = _pair(scores, targets)
    num_classes = s.shape[-1] if s.ndim else 0
    if not 1 <= k <= num_classes:
        raise ValueError(f"top_k_accuracy: k must be in [1, {num_classes}] (the number of "
                         f"classes, last axis of scores {s.shape}), got {k}")
    if t.shape != s.shape[:-1]:
        raise ValueError(f"top_k_accuracy: targets {t.shape} must be scores {s.shape} without "
                         "the last (class) axis")
    xp = module_of(s)
    t = t.astype(xp.int64, copy=False)
    valid = (t >= 0) & (t < num_classes)
    picked = xp.take_along_axis(s, xp.where(valid, t, 0)[..., None], axis=-1)  # (..., 1)
    above = (s > picked).sum(axis=-1)  # (...): classes scoring strictly higher
    return (valid & (above < k)).sum(), int(t.size)


def class_counts(y_true, y_pred, num_classes: int):
    """Per-class counts for precision/recall/F1, on the inputs' device:
    ``(true_positives, predicted, actual, invalid)``; the first three have shape ``(C,)``,
    ``invalid`` (0-d) counts pairs whose target or predicted label is outside ``[0, C)``
    (they are left out of the other counts).

    ``y_pred``: scores ``(..., C)`` (argmax taken) or labels with ``y_true``'s shape.

    Example:
        >>> tp, pred, true, bad = class_counts(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
        >>> tp.tolist(), pred.tolist(), true.tolist(), int(bad)
        ([1, 1], [2, 1], [1, 2], 0)
    """
    t, out = _pair(y_true, y_pred)
    pred = predicted_labels(out)
    if pred.shape != t.shape:
        raise ValueError(f"precision_recall_f1: predictions {pred.shape} and targets {t.shape} "
                         "differ; pass scores (N, C) with labels (N,)")
    xp, c = module_of(t), int(num_classes)
    t, pred = t.astype(xp.int64).ravel(), pred.astype(xp.int64).ravel()
    valid = (t >= 0) & (t < c) & (pred >= 0) & (pred < c)
    # Bin c collects what is left out, so bincount always sees non-negative indices.
    actual = xp.bincount(xp.where(valid, t, c), minlength=c + 1)  # (C + 1,)
    predicted = xp.bincount(xp.where(valid, pred, c), minlength=c + 1)[:c]
    tp = xp.bincount(xp.where(valid & (pred == t), t, c), minlength=c + 1)[:c]
    return tp, predicted, actual[:c], actual[c]


def error_sums(pred, target) -> tuple[Any, Any, int]:
    """``(sum of squared errors, sum of absolute errors, count)`` in float64 on the inputs'
    device; ``pred`` is reshaped to ``target``'s shape ((N, 1) outputs for (N,) targets).

    Example:
        >>> se, ae, n = error_sums(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
        >>> float(se), float(ae), n
        (4.0, 2.0, 2)
    """
    p, t = _pair(pred, target)
    if p.size != t.size:
        raise ValueError(f"mse/rmse/mae/r2: predictions {p.shape} and targets {t.shape} differ "
                         "in size; regression metrics compare them element by element")
    xp = module_of(t)
    d = p.reshape(t.shape).astype(xp.float64) - t.astype(xp.float64)
    return (d * d).sum(), xp.abs(d).sum(), int(t.size)


def moments(values) -> tuple[Any, Any, int]:
    """``(mean, sum of squared deviations from the mean, count)`` of all elements, float64,
    on the input's device: the batch part of Chan et al.'s pairwise variance update.

    Example:
        >>> m, m2, n = moments(np.array([1.0, 2.0, 3.0]))
        >>> float(m), float(m2), n
        (2.0, 2.0, 3)
    """
    v = _array(values)
    v = v.astype(module_of(v).float64).ravel()
    if v.size == 0:
        return 0.0, 0.0, 0
    mean = v.mean()
    return mean, ((v - mean) ** 2).sum(), int(v.size)


def merge_moments(a: tuple, b: tuple) -> tuple:
    """Combine two ``moments`` results (Chan, Golub and LeVeque): stable where
    ``sum(y^2) - sum(y)^2 / n`` would cancel; stays on the device.

    Example:
        >>> m, m2, n = merge_moments(moments(np.array([1.0, 2.0])), moments(np.array([3.0])))
        >>> float(m), float(m2), n
        (2.0, 2.0, 3)
    """
    (mean_a, m2_a, n_a), (mean_b, m2_b, n_b) = a, b
    if n_a == 0 or n_b == 0:
        return b if n_a == 0 else a
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n), n


# ----------------------------------------------------------------------------- from statistics
def prf_from_counts(tp, predicted, actual, average: str = "macro") -> tuple[float, float, float]:
    """Precision, recall and F1 from :func:`class_counts` (host values; see
    :func:`precision_recall_f1` for the conventions).

    Example:
        >>> prf_from_counts([1, 1], [2, 1], [1, 2], "micro")
        (0.6666666666666666, 0.6666666666666666, 0.6666666666666666)
    """
    tp, predicted, actual = (np.asarray(to_numpy(a), np.float64) for a in (tp, predicted, actual))
    if average == "micro":
        p = r = tp.sum() / max(actual.sum(), 1.0)
        f = 2 * p * r / (p + r) if p + r else 0.0
        return float(p), float(r), float(f)
    if average != "macro":
        raise ValueError(f"precision_recall_f1: average must be 'macro' or 'micro', got {average!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(predicted > 0, tp / predicted, 0.0)
        r = np.where(actual > 0, tp / actual, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(p.mean()), float(r.mean()), float(f.mean())


def r2_from_stats(m2: float, sse: float) -> float:
    """``1 - SS_res / SS_tot`` with ``SS_tot`` the targets' squared deviations (0 when the
    targets are constant).

    Example:
        >>> r2_from_stats(8.0, 2.0)
        0.75
    """
    return 1.0 - float(sse) / float(m2) if m2 else 0.0


# ----------------------------------------------------------------------------- metrics
def accuracy(outputs, targets) -> float:
    """Fraction correct. ``outputs``: scores (N, C) (argmax taken) or predicted labels (N,)."""
    correct, total = correct_count(outputs, targets)
    return float(correct) / total if total else 0.0


def top_k_accuracy(scores, targets, k: int = 5) -> float:
    """Fraction of rows whose target is among the ``k`` highest scores (ties at the k-th
    place count as hits, see :func:`top_k_hits`)."""
    hits, total = top_k_hits(scores, targets, k)
    return float(hits) / total if total else 0.0


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``m[i, j]`` = count of true class i predicted as j."""
    t = to_numpy(y_true).astype(np.int64).ravel()
    p = predicted_labels(to_numpy(y_pred)).astype(np.int64).ravel()
    n = num_classes or int(max(t.max(initial=0), p.max(initial=0)) + 1)
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def precision_recall_f1(y_true, y_pred, average: str = "macro",
                        num_classes: int | None = None) -> tuple[float, float, float]:
    """Precision, recall and F1: ``average="macro"`` (mean over classes) or ``"micro"``.

    Classes with no predicted (or no true) examples count 0 precision (recall), as
    scikit-learn's ``zero_division=0``.
    """
    t, p = to_numpy(y_true), predicted_labels(to_numpy(y_pred))
    n = num_classes or int(max(t.max(initial=0), p.max(initial=0)) + 1)
    tp, predicted, actual, invalid = class_counts(t, p, n)
    if invalid:
        raise ValueError(f"precision_recall_f1: {int(invalid)} labels outside [0, {n}); labels "
                         "must be class indices")
    return prf_from_counts(tp, predicted, actual, average)


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ROC: ``(fpr, tpr, thresholds)``, thresholds decreasing, starting at (0, 0)."""
    y, s = to_numpy(y_true).ravel().astype(bool), to_numpy(scores).ravel().astype(np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]  # last index of each score value
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.r_[0.0, fps / neg]
    tpr = np.r_[0.0, tps / pos]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (trapezoids; ties handled as scikit-learn does)."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def mse(pred, target) -> float:
    """Mean squared error over all elements (``pred`` reshaped to ``target``'s shape)."""
    se, _, n = error_sums(pred, target)
    return float(se) / n if n else 0.0


def rmse(pred, target) -> float:
    """Root mean squared error over all elements."""
    return math.sqrt(mse(pred, target))


def mae(pred, target) -> float:
    """Mean absolute error over all elements."""
    _, ae, n = error_sums(pred, target)
    return float(ae) / n if n else 0.0


def r2_score(pred, target) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` over all elements (0 when the
    targets are constant)."""
    se, _, _ = error_sums(pred, target)
    _, m2, _ = moments(target)
    return r2_from_stats(float(m2), float(se))


def perplexity(mean_nll: float) -> float:
    """``exp(mean negative log-likelihood per token)`` (natural log)."""
    return float(math.exp(mean_nll))


def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(references: Sequence[Sequence[Sequence]], hypotheses: Sequence[Sequence],
         max_n: int = 4, weights: Sequence[float] | None = None) -> float:
    """Corpus BLEU (Papineni et al. 2002): clipped n-gram precisions, geometric mean, brevity
    penalty ``exp(1 - r/c)`` when the candidate corpus is shorter than the references.

    ``references[i]`` is a list of reference token lists for hypothesis ``i``; the
    effective reference length is the closest one (ties: the shorter). Returns 0 when any
    n-gram precision is 0 (no smoothing).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"bleu: {len(references)} reference sets for {len(hypotheses)} hypotheses")
    weights = list(weights) if weights is not None else [1.0 / max_n] * max_n
    matched, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            max_ref: Counter = Counter()
            for r in refs:
                max_ref |= _ngrams(r, n)
            matched[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matched) == 0 or hyp_len == 0:
        return 0.0
    log_p = sum(w * math.log(m / t) for w, m, t in zip(weights, matched, total))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return float(bp * math.exp(log_p))
