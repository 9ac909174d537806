"""Metrics (no gradients; inputs from either device, results as Python floats / NumPy).

accuracy, top-k accuracy, confusion matrix, precision/recall/F1 (macro, micro and binary),
ROC curve and AUC, MSE/RMSE/MAE, R², perplexity, and corpus BLEU with the brevity penalty.

Every metric takes the truth first: ``metric(y_true, y_pred)``, as scikit-learn and Keras
(and ``bleu(references, hypotheses)``), and gives scikit-learn's number for the same
arguments (tests/test_metrics.py compares them). Where the two arguments cannot be
confused silently they are checked: class scores ``(N, C)`` passed as ``y_true`` beside
labels ``(N,)``, or non-binary ``y_true`` for the ROC, raise a named error (a
``ValueError``) that says so. A metric of no examples raises ``EmptyDataError``, a ROC of
one class ``UndefinedMetricError``, NaN inputs ``NonFiniteError`` (the user-facing metrics
check once per call; the per-batch statistics read no data): never a made-up number.

Binary classifiers (one output per example, ``(N,)`` or ``(N, 1)``, logits or
probabilities) are read by one documented rule, :mod:`gpudl.metrics.binary`: whole
numbers are labels, other scores are thresholded at 0.5 when all lie in ``[0, 1]``
(probabilities), else at 0 (logits); ``threshold=`` overrides it.

The classification and regression metrics are built on per-batch *sufficient statistics*
(:mod:`gpudl.metrics.statistics`) that are computed with the array module of their inputs
and stay on that device. The metrics read them once; ``gd.fit`` adds them up over an epoch
on the GPU and reads them once per report (see ``gpudl/train/metric_state.py``).
Modules: ``classification``, ``regression``, ``text``, ``statistics`` and ``binary``.

Example:
    >>> import numpy as np
    >>> accuracy(np.array([1, 1]), np.array([[0.1, 0.9], [0.8, 0.2]]))
    0.5
"""

from gpudl.metrics.classification import (
    accuracy,
    confusion_matrix,
    precision_recall_f1,
    roc_auc,
    roc_curve,
    top_k_accuracy,
)
from gpudl.metrics.regression import mae, mse, r2_score, rmse
from gpudl.metrics.statistics import (
    class_counts,
    correct_count,
    error_sums,
    merge_moments,
    moments,
    predicted_labels,
    prf_from_counts,
    r2_from_stats,
    top_k_hits,
)
from gpudl.metrics.text import bleu, perplexity

__all__ = [
    # metrics: truth first, metric(y_true, y_pred)
    "accuracy", "top_k_accuracy", "confusion_matrix", "precision_recall_f1", "roc_curve",
    "roc_auc", "mse", "rmse", "mae", "r2_score", "perplexity", "bleu",
    # per-batch sufficient statistics (summed on the device by gd.fit) and their readers
    "predicted_labels", "correct_count", "top_k_hits", "class_counts", "error_sums", "moments",
    "merge_moments", "prf_from_counts", "r2_from_stats",
]
