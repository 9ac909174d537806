"""Per-batch sufficient statistics of the metrics, and the metrics read from them.

Each statistic (``correct_count``, ``top_k_hits``, ``class_counts``, ``error_sums``,
``moments``) is computed with the array module of its inputs and stays on that device (no
host copy), so ``gd.fit`` can add them up over an epoch on the GPU and read them once per
report (``gpudl/train/metric_state.py``); ``prf_from_counts`` and ``r2_from_stats`` turn
the sums into metrics. Arguments come truth first, as the metrics: ``(y_true, y_pred)``.

Example:
    >>> import numpy as np
    >>> c, n = correct_count(np.array([1, 1]), np.array([[0.1, 0.9], [0.8, 0.2]]))
    >>> int(c), n
    (1, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of, to_numpy
from gpudl.errors import ConfigError, LabelRangeError, NonFiniteError, ShapeError
from gpudl.metrics.binary import (
    binary_threshold,
    check_binary_truth,
    drop_unit_axis,
    one_score_per_example,
    predicted_binary,
)

__all__ = [
    "predicted_labels", "correct_count", "top_k_hits", "class_counts", "error_sums", "moments",
    "merge_moments", "prf_from_counts", "r2_from_stats",
]


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


def check_no_nan(op: str, name: str, values, allow_inf: bool = True) -> None:
    """Refuse NaN (and ``±inf`` unless ``allow_inf``) in float ``values``.

    A NaN score decides no class yet yields a number (argmax picks it, ``>`` rejects it),
    so the metrics refuse it, as scikit-learn ("Input contains NaN"). This reads the data
    (one count from the device): only the user-facing metrics call it, once per call;
    the per-batch statistics below, which ``gd.fit`` sums on the GPU, do not.
    """
    a = _array(values)
    if np.dtype(a.dtype).kind not in "fc" or not a.size:
        return
    xp = module_of(a)
    nan = int(xp.isnan(a).sum())
    inf = 0 if allow_inf else int(xp.isinf(a).sum())
    if not (nan or inf):
        return
    got = " and ".join(f"{count} {what}" for count, what in ((nan, "NaN"), (inf, "±inf"))
                       if count)
    needs = "numbers, no NaN (±inf is fine here)" if allow_inf else "finite numbers"
    raise NonFiniteError(
        f"{op}: {name} holds {got} of {a.size} values, expected {needs}: the metric is "
        "undefined for them (scikit-learn raises 'Input contains NaN' or 'infinity'). Find "
        "where the values stopped being finite (gd.debug_nans() names the op for a model's "
        "outputs), or leave those rows out.")


def predicted_labels(outputs, threshold: float | None = None):
    """Class labels from scores ``(..., C)`` (argmax of the last axis, C >= 2); one score per
    example (``(N,)``, ``(..., 1)``) by the binary rule of :mod:`gpudl.metrics.binary`
    (labels stay labels; other floats are thresholded, by ``threshold`` when given).

    Example:
        >>> predicted_labels(np.array([[0.1, 0.9], [0.8, 0.2]])).tolist()
        [1, 0]
        >>> predicted_labels(np.array([[-1.5], [2.0], [0.25]])).tolist()   # logits
        [0, 1, 1]
    """
    if not one_score_per_example(outputs):
        return outputs.argmax(axis=-1)
    return predicted_binary(drop_unit_axis(outputs), threshold)


def predictions(op: str, y_true, y_pred, threshold: float | None = None):
    """``(y_true, predicted labels)`` of one shape, on the inputs' device.

    Class scores ``(..., C)`` give their argmax (no host copy); one score per example goes
    through the binary rule (a host read of the scores decides it, and scores need 0/1
    truth). ``(N, 1)`` labels are accepted for ``(N,)`` ones, never broadcast.
    """
    t, out = _pair(y_true, y_pred)
    if not one_score_per_example(out):
        pred = out.argmax(axis=-1)
        t = drop_unit_axis(t) if t.ndim == out.ndim else t
        _check_label_shapes(op, t, pred)
        _check_truth_is_labels(op, t)
        return t, pred
    t, scores = drop_unit_axis(t), drop_unit_axis(out)
    _check_label_shapes(op, t, scores)
    _check_truth_is_labels(op, t)
    if np.dtype(scores.dtype).kind != "f":
        return t, scores
    thr = binary_threshold(scores) if threshold is None else float(threshold)
    if thr is None:
        return t, scores.astype(module_of(scores).int64)
    check_binary_truth(op, t)
    return t, predicted_binary(scores, thr)


def _check_truth_is_labels(op: str, y_true, pred_name: str = "y_pred") -> None:
    """Float ``y_true`` must hold whole numbers: scores there mean swapped arguments."""
    if np.dtype(y_true.dtype).kind != "f" or not y_true.size:
        return
    frac = y_true[y_true != module_of(y_true).floor(y_true)]
    if frac.size:
        raise LabelRangeError(
            f"{op}: y_true holds non-integer values (e.g. {float(frac[0]):.4g}), so it is not "
            "class labels (integers, or floats holding whole numbers); the order is "
            f"{op}(y_true, {pred_name}), truth first as scikit-learn: are the arguments swapped?")


def _check_label_shapes(op: str, y_true, pred) -> None:
    """``pred`` (labels, after the argmax) must have ``y_true``'s shape; name a swap."""
    if pred.shape == y_true.shape:
        return
    hint = "pass labels (N,) as y_true with scores (N, C) or labels (N,) as y_pred"
    if y_true.ndim == pred.ndim + 1:
        hint = (f"the arguments look swapped: the order is {op}(y_true, y_pred), truth first "
                "as scikit-learn")
    raise ShapeError(f"{op}: y_pred gives labels of shape {pred.shape}, y_true has shape "
                     f"{y_true.shape}; {hint}")


# ----------------------------------------------------------------------------- statistics
def correct_count(y_true, y_pred, threshold: float | None = None) -> tuple[Any, int]:
    """``(correct, total)``: the number of correct predictions as a 0-d array on the inputs'
    device and the number of predictions.

    ``y_pred``: scores ``(..., C)`` (argmax taken, no host copy), predicted labels with
    ``y_true``'s shape, or one score per example (``(N,)``/``(N, 1)``, the binary rule of
    :mod:`gpudl.metrics.binary`: a host read of the scores decides it).

    Example:
        >>> c, n = correct_count(np.array([1, 1]), np.array([[0.1, 0.9], [0.8, 0.2]]))
        >>> int(c), n
        (1, 2)
    """
    t, pred = predictions("accuracy", y_true, y_pred, threshold)
    return (pred == t).sum(), int(t.size)


def top_k_hits(y_true, y_score, k: int = 5) -> tuple[Any, int]:
    """``(hits, total)``: rows whose target is among the ``k`` highest scores (0-d array on the
    inputs' device) and the number of rows.

    A target counts as a hit when fewer than ``k`` classes score strictly higher, so ties
    at the k-th place count in its favour (as TensorFlow's ``in_top_k``); this needs no
    sort. Targets outside ``[0, C)`` are misses.

    Example:
        >>> h, n = top_k_hits(np.array([1, 0]), np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), 2)
        >>> int(h), n
        (1, 2)
    """
    t, s = _pair(y_true, y_score)
    if t.ndim == s.ndim + 1:
        raise ShapeError(f"top_k_accuracy: y_true has shape {t.shape} and y_score {s.shape}: "
                         "the arguments look swapped; the order is top_k_accuracy(y_true, "
                         "y_score, k), truth first as scikit-learn")
    num_classes = s.shape[-1] if s.ndim else 0
    if not 1 <= k <= num_classes:
        raise ConfigError(f"top_k_accuracy: k must be in [1, {num_classes}] (the number of "
                         f"classes, last axis of y_score {s.shape}), got {k}")
    if t.shape != s.shape[:-1]:
        raise ShapeError(f"top_k_accuracy: y_true {t.shape} must be y_score {s.shape} without "
                         "the last (class) axis")
    xp = module_of(s)
    t = t.astype(xp.int64, copy=False)
    valid = (t >= 0) & (t < num_classes)
    picked = xp.take_along_axis(s, xp.where(valid, t, 0)[..., None], axis=-1)  # (..., 1)
    above = (s > picked).sum(axis=-1)  # (...): classes scoring strictly higher
    return (valid & (above < k)).sum(), int(t.size)


def class_counts(y_true, y_pred, num_classes: int, threshold: float | None = None):
    """Per-class counts for precision/recall/F1, on the inputs' device:
    ``(true_positives, predicted, actual, invalid)``; the first three have shape ``(C,)``,
    ``invalid`` (0-d) counts pairs whose target or predicted label is outside ``[0, C)``
    (they are left out of the other counts).

    ``y_pred``: scores ``(..., C)`` (argmax taken), labels with ``y_true``'s shape, or one
    score per example (the binary rule, see :func:`predictions`).

    Example:
        >>> tp, pred, true, bad = class_counts(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
        >>> tp.tolist(), pred.tolist(), true.tolist(), int(bad)
        ([1, 1], [2, 1], [1, 2], 0)
    """
    t, pred = predictions("precision_recall_f1", y_true, y_pred, threshold)
    xp, c = module_of(t), int(num_classes)
    t, pred = t.astype(xp.int64).ravel(), pred.astype(xp.int64).ravel()
    valid = (t >= 0) & (t < c) & (pred >= 0) & (pred < c)
    # Bin c collects what is left out, so bincount always sees non-negative indices.
    actual = xp.bincount(xp.where(valid, t, c), minlength=c + 1)  # (C + 1,)
    predicted = xp.bincount(xp.where(valid, pred, c), minlength=c + 1)[:c]
    tp = xp.bincount(xp.where(valid & (pred == t), t, c), minlength=c + 1)[:c]
    return tp, predicted, actual[:c], actual[c]


def error_sums(y_true, y_pred, op: str = "mse/rmse/mae/r2_score") -> tuple[Any, Any, int]:
    """``(sum of squared errors, sum of absolute errors, count)`` in float64 on the inputs'
    device. ``y_pred`` must have ``y_true``'s shape, except that a trailing axis of size 1
    on either side is dropped ((N, 1) outputs for (N,) targets, and the reverse); any
    other pair of shapes is a :class:`ShapeError`, never a reshape. ``op`` names the
    metric in that error.

    Example:
        >>> se, ae, n = error_sums(np.array([1.0, 4.0]), np.array([1.0, 2.0]))
        >>> float(se), float(ae), n
        (4.0, 2.0, 2)
    """
    t, p = _pair(y_true, y_pred)
    if p.shape != t.shape and drop_unit_axis(p).shape == drop_unit_axis(t).shape:
        t, p = drop_unit_axis(t), drop_unit_axis(p)
    if p.shape != t.shape:  # checked on shapes only: this runs every batch in gd.fit
        differ = "size" if p.size != t.size else "shape"
        raise ShapeError(
            f"{op}: y_pred {p.shape} and y_true {t.shape} differ in {differ}; regression "
            "metrics compare them element by element, so give them one shape ((N,) and "
            "(N, 1) are interchangeable). Reshape or transpose explicitly if that is meant.")
    xp = module_of(t)
    d = p.astype(xp.float64) - t.astype(xp.float64)
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
        raise ConfigError(f"precision_recall_f1: average must be 'macro' or 'micro', got {average!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(predicted > 0, tp / predicted, 0.0)
        r = np.where(actual > 0, tp / actual, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(p.mean()), float(r.mean()), float(f.mean())


def r2_from_stats(m2: float, sse: float) -> float:
    """``1 - SS_res / SS_tot`` with ``SS_tot`` the targets' squared deviations. Constant
    targets (``SS_tot == 0``) give 1.0 for a perfect prediction and 0.0 otherwise, as
    scikit-learn's ``r2_score``.

    Example:
        >>> r2_from_stats(8.0, 2.0), r2_from_stats(0.0, 0.0), r2_from_stats(0.0, 1.0)
        (0.75, 1.0, 0.0)
    """
    if not m2:
        return 0.0 if sse else 1.0
    return 1.0 - float(sse) / float(m2)
