"""Metrics (no gradients; inputs from either device, results as Python floats / NumPy).

accuracy, top-k accuracy, confusion matrix, precision/recall/F1 (macro and micro),
ROC curve and AUC, RMSE, R², perplexity, and corpus BLEU with the brevity penalty.

Example:
    >>> import numpy as np
    >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    0.5
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from gpudl.backend import to_numpy


def _labels_from(outputs) -> np.ndarray:
    out = to_numpy(outputs)
    return out.argmax(axis=-1) if out.ndim > 1 else out


def accuracy(outputs, targets) -> float:
    """Fraction correct. ``outputs``: scores (N, C) (argmax taken) or predicted labels (N,)."""
    pred, y = _labels_from(outputs), to_numpy(targets)
    if pred.shape != y.shape:
        raise ValueError(f"accuracy: predictions {pred.shape} and targets {y.shape} differ")
    return float((pred == y).mean()) if y.size else 0.0


def top_k_accuracy(scores, targets, k: int = 5) -> float:
    """Fraction of rows whose target is among the ``k`` highest scores."""
    s, y = to_numpy(scores), to_numpy(targets)
    if not 1 <= k <= s.shape[-1]:
        raise ValueError(f"top_k_accuracy: k must be in [1, {s.shape[-1]}], got {k}")
    top = np.argpartition(-s, k - 1, axis=-1)[..., :k]
    return float((top == y[..., None]).any(axis=-1).mean())


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``m[i, j]`` = count of true class i predicted as j."""
    t, p = to_numpy(y_true).astype(np.int64).ravel(), _labels_from(y_pred).astype(np.int64).ravel()
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
    m = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    tp = np.diag(m)
    if average == "micro":
        p = r = tp.sum() / max(m.sum(), 1.0)
        f = 2 * p * r / (p + r) if p + r else 0.0
        return float(p), float(r), float(f)
    if average != "macro":
        raise ValueError(f"precision_recall_f1: average must be 'macro' or 'micro', got {average!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(m.sum(0) > 0, tp / m.sum(0), 0.0)
        r = np.where(m.sum(1) > 0, tp / m.sum(1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(p.mean()), float(r.mean()), float(f.mean())


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


def rmse(pred, target) -> float:
    p, t = to_numpy(pred).astype(np.float64), to_numpy(target).astype(np.float64)
    return float(np.sqrt(np.mean((p.reshape(t.shape) - t) ** 2)))


def r2_score(pred, target) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    p, t = to_numpy(pred).astype(np.float64), to_numpy(target).astype(np.float64)
    p = p.reshape(t.shape)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return 1.0 - float(((t - p) ** 2).sum()) / ss_tot if ss_tot else 0.0


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
