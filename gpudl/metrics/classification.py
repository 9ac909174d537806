"""Classification metrics: accuracy, top-k accuracy, confusion matrix, precision/recall/F1,
and the binary ROC curve and its AUC. Truth first: ``metric(y_true, y_pred)``.

``y_pred`` may be class scores ``(N, C)`` (argmax), predicted labels, or, for binary
classification, one score per example ``(N,)``/``(N, 1)`` (logits or probabilities),
read by the rule of :mod:`gpudl.metrics.binary` (``threshold=`` overrides it). A metric
of no examples, or a ROC of one class, raises instead of reporting a number; so do NaN
scores (``NonFiniteError``; the ROC refuses ``±inf`` too, as scikit-learn).

Example:
    >>> import numpy as np
    >>> accuracy(np.array([1, 1]), np.array([[0.1, 0.9], [0.8, 0.2]]))
    0.5
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import to_numpy
from gpudl.errors import (
    ConfigError,
    EmptyDataError,
    LabelRangeError,
    ShapeError,
    UndefinedMetricError,
)
from gpudl.metrics.statistics import (
    _array,
    _check_truth_is_labels,
    check_no_nan,
    class_counts,
    correct_count,
    predictions,
    prf_from_counts,
    top_k_hits,
)

__all__ = ["accuracy", "top_k_accuracy", "confusion_matrix", "precision_recall_f1", "roc_curve",
           "roc_auc"]


def _nonempty(op: str, total: int) -> int:
    if not total:
        raise EmptyDataError(f"{op}: got no examples (empty y_true); a metric of nothing is "
                             "undefined. Check the split or filter that built the arrays.")
    return total


def _no_nan(op: str, y_true, y_pred, pred_name: str = "y_pred") -> None:
    check_no_nan(op, "y_true", y_true)
    check_no_nan(op, pred_name, y_pred)


def _num_classes(op: str, num_classes, t: np.ndarray, p: np.ndarray) -> int:
    """``num_classes`` checked (a positive int), or the largest label + 1 when None."""
    if num_classes is None:
        return int(max(t.max(initial=0), p.max(initial=0)) + 1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ConfigError(f"{op}: num_classes must be a positive int (or None: the largest "
                          f"label + 1), got {num_classes!r}")
    return int(num_classes)


def accuracy(y_true, y_pred, threshold: float | None = None) -> float:
    """Fraction correct (scikit-learn's ``accuracy_score``). ``y_true``: labels (N,) or
    (N, 1); ``y_pred``: scores (N, C) (argmax taken), predicted labels (N,), or one binary
    score per example (N,)/(N, 1), thresholded by the rule of :mod:`gpudl.metrics.binary`:
    at 0 for logits, 0.5 for probabilities (``threshold=`` decides it yourself).

    Example:
        >>> accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]))
        0.6666666666666666
        >>> accuracy(np.array([0, 1, 1]), np.array([[-2.0], [3.0], [-0.5]]))   # logits
        0.6666666666666666
    """
    _no_nan("accuracy", y_true, y_pred)
    correct, total = correct_count(y_true, y_pred, threshold)
    return float(correct) / _nonempty("accuracy", total)


def top_k_accuracy(y_true, y_score, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores of ``y_score`` (N, C)
    (scikit-learn's ``top_k_accuracy_score`` where no scores tie; ties at the k-th place
    count as hits here, see :func:`top_k_hits`). ``y_true``: integer class labels (or
    floats holding whole numbers, as :func:`accuracy`); ``±inf`` scores are fine (masked
    logits), NaN scores raise ``NonFiniteError``."""
    _no_nan("top_k_accuracy", y_true, y_score, "y_score")
    hits, total = top_k_hits(y_true, y_score, k)  # shapes first: it names swapped arguments
    _check_truth_is_labels("top_k_accuracy", _array(y_true), "y_score")
    return float(hits) / _nonempty("top_k_accuracy", total)


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``m[i, j]`` = count of true class i predicted as j (scikit-learn's, with
    ``labels=range(num_classes)``; ``num_classes=None``: the largest label + 1)."""
    t, p = to_numpy(_array(y_true)), to_numpy(_array(y_pred))
    _no_nan("confusion_matrix", t, p)
    t, p = predictions("confusion_matrix", t, p)
    _nonempty("confusion_matrix", int(t.size))
    t, p = t.astype(np.int64).ravel(), p.astype(np.int64).ravel()
    n = _num_classes("confusion_matrix", num_classes, t, p)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n):
        raise LabelRangeError(f"confusion_matrix: labels outside [0, {n}); labels must be class "
                         "indices")
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def precision_recall_f1(y_true, y_pred, average: str = "macro",
                        num_classes: int | None = None, threshold: float | None = None
                        ) -> tuple[float, float, float]:
    """Precision, recall and F1: ``average="macro"`` (mean over classes), ``"micro"``, or
    ``"binary"`` (the positive class 1 only; labels must be 0/1), as scikit-learn's.

    Classes with no predicted (or no true) examples count 0 precision (recall), as
    scikit-learn's ``zero_division=0``. The macro mean is over the classes that occur in
    ``y_true`` or ``y_pred`` (scikit-learn's default ``labels``), or over all
    ``num_classes`` when given (scikit-learn's ``labels=range(num_classes)``). One score
    per example is read by the binary rule (:mod:`gpudl.metrics.binary`, ``threshold=``).

    Example:
        >>> precision_recall_f1(np.array([0, 0, 2]), np.array([0, 2, 2]))
        (0.75, 0.75, 0.6666666666666666)
        >>> precision_recall_f1(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.1]), "binary")
        (0.5, 0.5, 0.5)
    """
    if average not in ("macro", "micro", "binary"):
        raise ConfigError(f"precision_recall_f1: average must be 'macro', 'micro' or 'binary', "
                          f"got {average!r}")
    t, p = to_numpy(_array(y_true)), to_numpy(_array(y_pred))
    _no_nan("precision_recall_f1", t, p)
    t, p = predictions("precision_recall_f1", t, p, threshold)
    _nonempty("precision_recall_f1", int(t.size))
    if average == "binary":
        return _binary_prf(t, p)
    n = _num_classes("precision_recall_f1", num_classes, t, p)
    tp, predicted, actual, invalid = class_counts(t, p, n)
    if invalid:
        raise LabelRangeError(f"precision_recall_f1: {int(invalid)} labels outside [0, {n}); labels "
                         "must be class indices")
    if num_classes is None:  # leave out the class indices that never occur
        seen = (predicted + actual) > 0
        tp, predicted, actual = tp[seen], predicted[seen], actual[seen]
    return prf_from_counts(tp, predicted, actual, average)


def _binary_prf(t: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """scikit-learn's ``average="binary"``: the scores of class 1 (``pos_label=1``)."""
    for name, a in (("y_true", t), ("y_pred", p)):
        bad = np.unique(a[(a != 0) & (a != 1)])
        if bad.size:
            raise LabelRangeError(
                f"precision_recall_f1: average='binary' needs 0/1 labels, but {name} holds "
                f"{', '.join(f'{v:g}' for v in bad[:4])}; use average='macro' or 'micro' for "
                "more than two classes")
    tp = float(((p == 1) & (t == 1)).sum())
    return prf_from_counts([tp], [float((p == 1).sum())], [float((t == 1).sum())], "macro")


def _binary_labels(op: str, y_true) -> np.ndarray:
    """``y_true`` as booleans: 0/1, -1/1 or bool labels (1 is the positive class)."""
    y = to_numpy(_array(y_true)).ravel()
    if y.dtype == np.bool_:
        return y
    values = np.unique(y)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {-1, 1}):
        shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if values.size > 4 else "")
        raise LabelRangeError(f"{op}: y_true must be binary labels (0/1, -1/1 or bool), got values "
                         f"{shown}; the order is {op}(y_true, y_score), truth first as "
                         "scikit-learn (scores go second)")
    return y == 1


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ROC: ``(fpr, tpr, thresholds)``, thresholds decreasing, starting at (0, 0)
    (scikit-learn's ``roc_curve`` with ``drop_intermediate=False``). Scores must be finite
    (NaN or ``±inf`` raise ``NonFiniteError``, as scikit-learn raises).

    Example:
        >>> fpr, tpr, _ = roc_curve(np.array([0, 1]), np.array([0.2, 0.9]))
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    return _roc("roc_curve", y_true, y_score)


def _roc(op: str, y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`roc_curve`, naming ``op`` (the metric the user called) in its errors."""
    check_no_nan(op, "y_true", y_true)
    y = _binary_labels(op, y_true)
    s = to_numpy(_array(y_score))
    # ±inf refused too: tied infinities would be split (inf - inf is NaN, not 0)
    check_no_nan(op, "y_score", s, allow_inf=False)
    s = s.ravel().astype(np.float64)
    if s.size != y.size:
        raise ShapeError(f"{op}: y_true has {y.size} labels and y_score {s.size} scores; "
                         "give one score per label")
    _nonempty(op, y.size)
    if y.all() or not y.any():
        raise UndefinedMetricError(
            f"{op}: only one class is present in y_true (all {int(y[0])}); the ROC curve "
            "and its AUC are undefined (scikit-learn gives NaN with a warning). Evaluate on "
            "data holding both classes.")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]  # last index of each score value
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.r_[0.0, fps / neg]
    tpr = np.r_[0.0, tps / pos]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``: trapezoids, tied scores
    count half). Scores must be finite, as for :func:`roc_curve`."""
    fpr, tpr, _ = _roc("roc_auc", y_true, y_score)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
