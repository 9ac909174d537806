"""Binary classification: one score per example, ``(N,)`` or ``(N, 1)``, read as labels.

**The rule** (every metric, ``gd.fit``'s streaming metrics and :func:`predicted_labels`
use it; torchmetrics' ``BinaryAccuracy`` reads scores the same way):

- integer or bool predictions are labels, compared as they are;
- float predictions whose values are all whole numbers (``0.0``, ``1.0``, ``2.0``) are
  labels too (predicted labels stored as floats; for 0/1 this is also what thresholding
  them would give); ``±inf`` is not a whole number here;
- other float predictions are scores, thresholded with ``>``: at **0.5** when every
  score lies in ``[0, 1]`` (probabilities, after a sigmoid), else at **0** (logits; the
  same as ``sigmoid(logit) > 0.5``). Pass ``threshold=`` to any metric to decide it
  yourself: ``threshold=0.0`` for logits, ``0.5`` for probabilities.

The rule is decided over all the scores at once (the whole epoch in ``fit``), never per
batch. Its one ambiguous case is logits that all happen to lie in ``[0, 1]``: they are
read as probabilities, as documented here; ``threshold=0.0`` says otherwise. Scores need
binary truth (0/1 or bool labels); anything else raises :class:`LabelRangeError`.

``(N, 1)`` and ``(N,)`` predictions and labels are interchangeable: the trailing unit
axis is dropped on both sides, never broadcast to ``(N, N)``.

Example:
    >>> import numpy as np
    >>> predicted_binary(np.array([-2.0, 0.3, 1.5]))   # a score outside [0, 1]: logits
    array([0, 1, 1])
    >>> predicted_binary(np.array([0.2, 0.7]))         # all in [0, 1]: probabilities
    array([0, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.backend import module_of, to_numpy
from gpudl.errors import LabelRangeError

__all__ = ["one_score_per_example", "drop_unit_axis", "binary_threshold", "predicted_binary",
           "binary_stats", "threshold_from_stats", "STATS_LAYOUT"]

#: The entries of :func:`binary_stats`: per interpretation (``labels``, ``p`` = scores at
#: 0.5, ``logit`` = scores at 0), the correct predictions, true positives and predicted
#: positives; then the actual positives and the three counts that decide the rule.
STATS_LAYOUT = ("correct_labels", "tp_labels", "pos_labels", "correct_p", "tp_p", "pos_p",
                "correct_logit", "tp_logit", "pos_logit", "actual_pos", "fractional",
                "outside_01", "non_binary_truth")


def one_score_per_example(outputs: Any) -> bool:
    """Whether ``outputs`` hold one prediction per example: ``(N,)`` or ``(..., 1)``; a
    last axis of 2 or more is a class axis (argmax taken)."""
    return outputs.ndim <= 1 or outputs.shape[-1] == 1


def drop_unit_axis(a):
    """``a`` without a trailing axis of size 1 (``(N, 1) -> (N,)``); other shapes unchanged."""
    return a.reshape(a.shape[:-1]) if a.ndim >= 2 and a.shape[-1] == 1 else a


def _is_float(a) -> bool:
    return np.dtype(a.dtype).kind == "f"


def binary_threshold(scores) -> float | None:
    """The rule on host-readable ``scores``: ``None`` (they are labels), 0.5 or 0.0."""
    s = to_numpy(scores)
    # ±inf equals its floor but is no label: it makes the predictions scores
    if not _is_float(s) or not s.size or bool(((s == np.floor(s)) & np.isfinite(s)).all()):
        return None
    return 0.5 if bool(((s >= 0) & (s <= 1)).all()) else 0.0


def predicted_binary(scores, threshold: float | None = None):
    """Labels (int64) from one score per example, by the module's rule (or ``threshold``).

    Labels (integers, or whole-number floats without ``threshold``) come back as int64.
    """
    xp = module_of(scores)
    if not _is_float(scores):
        return scores
    if threshold is None:
        threshold = binary_threshold(scores)
    if threshold is None:
        return scores.astype(xp.int64)
    return (scores > threshold).astype(xp.int64)


def check_binary_truth(op: str, y_true) -> None:
    """Scores need 0/1 (or bool) truth: name the other values."""
    t = to_numpy(y_true)
    bad = t[(t != 0) & (t != 1)] if t.dtype != np.bool_ else t[:0]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(bad)[:4])
        raise LabelRangeError(
            f"{op}: y_pred holds one score per example (binary classification), so y_true "
            f"must hold 0/1 labels, got {shown}. Map the labels to 0/1 (e.g. (y + 1) // 2 "
            "for -1/1), or give class scores (N, C) for more than two classes.")


def binary_stats(y_true, scores, thresholds: tuple[float, float] = (0.5, 0.0)):
    """The counts of :data:`STATS_LAYOUT` as one int64 vector on the inputs' device.

    All three interpretations are counted, so the choice can wait until every batch is in
    (``gd.fit``): :func:`threshold_from_stats` makes it from the summed vector. A
    user-given threshold is counted in both score slots (``thresholds=(t, t)``).
    """
    xp = module_of(scores)
    t = y_true
    actual = t == 1
    counts = []
    hi, lo = thresholds
    preds = (scores, scores > hi, scores > lo) if _is_float(scores) else (scores,) * 3
    for pred in preds:
        positive = pred == 1
        counts += [(pred == t).sum(), (positive & actual).sum(), positive.sum()]
    if _is_float(scores):
        fractional = ((scores != xp.floor(scores)) | xp.isinf(scores)).sum()  # as above
        outside = ((scores < 0) | (scores > 1)).sum()
    else:
        fractional = outside = xp.zeros((), dtype=xp.int64)
    non_binary = ((t != 0) & (t != 1)).sum()
    return xp.stack([xp.asarray(c, dtype=xp.int64)
                     for c in (*counts, actual.sum(), fractional, outside, non_binary)])


def threshold_from_stats(op: str, stats, given: bool = False) -> int:
    """Which interpretation the rule picks from summed :func:`binary_stats` (host values):
    0 = labels, 1 = scores at 0.5, 2 = scores at 0 (offsets of 3 into the stats);
    ``given``: a user-given threshold (counted in slot 1) always applies."""
    stats = np.asarray(stats)
    fractional, outside, non_binary = stats[10], stats[11], stats[12]
    if not fractional and not given:
        return 0
    if non_binary:
        raise LabelRangeError(
            f"{op}: the outputs hold one score per example (binary classification), so "
            f"the targets must be 0/1 labels, but {int(non_binary)} are not. Map them to "
            "0/1, or give the model one output per class for more than two classes.")
    return 1 if given or not outside else 2
