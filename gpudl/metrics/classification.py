"""Classification metrics: accuracy, top-k accuracy, confusion matrix, precision/recall/F1,
and the binary ROC curve and its AUC. Truth first: ``metric(y_true, y_pred)``.

Example:
    >>> import numpy as np
    >>> accuracy(np.array([1, 1]), np.array([[0.1, 0.9], [0.8, 0.2]]))
    0.5
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import to_numpy
from gpudl.metrics.statistics import (
    _array,
    _check_label_shapes,
    class_counts,
    correct_count,
    predicted_labels,
    prf_from_counts,
    top_k_hits,
)

__all__ = ["accuracy", "top_k_accuracy", "confusion_matrix", "precision_recall_f1", "roc_curve",
           "roc_auc"]


def accuracy(y_true, y_pred) -> float:
    """Fraction correct (scikit-learn's ``accuracy_score``). ``y_true``: labels (N,);
    ``y_pred``: scores (N, C) (argmax taken) or predicted labels (N,).

    Example:
        >>> accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]))
        0.6666666666666666
    """
    correct, total = correct_count(y_true, y_pred)
    return float(correct) / total if total else 0.0


def top_k_accuracy(y_true, y_score, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores of ``y_score`` (N, C)
    (scikit-learn's ``top_k_accuracy_score`` where no scores tie; ties at the k-th place
    count as hits here, see :func:`top_k_hits`)."""
    hits, total = top_k_hits(y_true, y_score, k)
    return float(hits) / total if total else 0.0


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``m[i, j]`` = count of true class i predicted as j (scikit-learn's, with
    ``labels=range(num_classes)``; ``num_classes=None``: the largest label + 1)."""
    t = to_numpy(_array(y_true))
    p = predicted_labels(to_numpy(_array(y_pred)))
    _check_label_shapes("confusion_matrix", t, p)
    t, p = t.astype(np.int64).ravel(), p.astype(np.int64).ravel()
    n = num_classes or int(max(t.max(initial=0), p.max(initial=0)) + 1)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n):
        raise ValueError(f"confusion_matrix: labels outside [0, {n}); labels must be class "
                         "indices")
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def precision_recall_f1(y_true, y_pred, average: str = "macro",
                        num_classes: int | None = None) -> tuple[float, float, float]:
    """Precision, recall and F1: ``average="macro"`` (mean over classes) or ``"micro"``.

    Classes with no predicted (or no true) examples count 0 precision (recall), as
    scikit-learn's ``zero_division=0``. The macro mean is over the classes that occur in
    ``y_true`` or ``y_pred`` (scikit-learn's default ``labels``), or over all
    ``num_classes`` when given (scikit-learn's ``labels=range(num_classes)``).

    Example:
        >>> precision_recall_f1(np.array([0, 0, 2]), np.array([0, 2, 2]))
        (0.75, 0.75, 0.6666666666666666)
    """
    t, out = to_numpy(_array(y_true)), to_numpy(_array(y_pred))
    p = predicted_labels(out)
    n = num_classes or int(max(t.max(initial=0), p.max(initial=0)) + 1)
    tp, predicted, actual, invalid = class_counts(t, out, n)
    if invalid:
        raise ValueError(f"precision_recall_f1: {int(invalid)} labels outside [0, {n}); labels "
                         "must be class indices")
    if num_classes is None:  # leave out the class indices that never occur
        seen = (predicted + actual) > 0
        tp, predicted, actual = tp[seen], predicted[seen], actual[seen]
    return prf_from_counts(tp, predicted, actual, average)


def _binary_labels(op: str, y_true) -> np.ndarray:
    """``y_true`` as booleans: 0/1, -1/1 or bool labels (1 is the positive class)."""
    y = to_numpy(_array(y_true)).ravel()
    if y.dtype == np.bool_:
        return y
    values = np.unique(y)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {-1, 1}):
        shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if values.size > 4 else "")
        raise ValueError(f"{op}: y_true must be binary labels (0/1, -1/1 or bool), got values "
                         f"{shown}; the order is {op}(y_true, y_score), truth first as "
                         "scikit-learn (scores go second)")
    return y == 1


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ROC: ``(fpr, tpr, thresholds)``, thresholds decreasing, starting at (0, 0)
    (scikit-learn's ``roc_curve`` with ``drop_intermediate=False``).

    Example:
        >>> fpr, tpr, _ = roc_curve(np.array([0, 1]), np.array([0.2, 0.9]))
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    y = _binary_labels("roc_curve", y_true)
    s = to_numpy(_array(y_score)).ravel().astype(np.float64)
    if s.size != y.size:
        raise ValueError(f"roc_curve: y_true has {y.size} labels and y_score {s.size} scores")
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
    count half)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
