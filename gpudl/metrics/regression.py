"""Regression metrics over all elements: MSE, RMSE, MAE and R². Truth first:
``metric(y_true, y_pred)``, both of one shape ((N, 1) outputs for (N,) targets, and the
reverse, are accepted; other shapes raise ``ShapeError``, never a reshape). NaN in either
argument raises ``NonFiniteError``.

Example:
    >>> import numpy as np
    >>> mse(np.array([1.0, 3.0]), np.array([1.0, 1.0]))
    2.0
"""

from __future__ import annotations

import math

from gpudl.errors import EmptyDataError, UndefinedMetricError
from gpudl.metrics.statistics import check_no_nan, error_sums, moments, r2_from_stats

__all__ = ["mse", "rmse", "mae", "r2_score"]


def _sums(op: str, y_true, y_pred):
    se, ae, n = error_sums(y_true, y_pred, op)  # shapes first: they need no data read
    if math.isnan(float(se)):  # a NaN in either input (or inf - inf): find and name it
        check_no_nan(op, "y_true", y_true)
        check_no_nan(op, "y_pred", y_pred)
    if not n:
        raise EmptyDataError(f"{op}: got no values (empty y_true); a metric of nothing is "
                             "undefined. Check the split or filter that built the arrays.")
    return se, ae, n


def mse(y_true, y_pred) -> float:
    """Mean squared error over all elements; scikit-learn's ``mean_squared_error``."""
    se, _, n = _sums("mse", y_true, y_pred)
    return float(se) / n


def rmse(y_true, y_pred) -> float:
    """Root mean squared error over all elements (for 1-D targets scikit-learn's
    ``root_mean_squared_error``, which averages per-column RMSEs of 2-D targets)."""
    se, _, n = _sums("rmse", y_true, y_pred)
    return math.sqrt(float(se) / n)


def mae(y_true, y_pred) -> float:
    """Mean absolute error over all elements; scikit-learn's ``mean_absolute_error``."""
    _, ae, n = _sums("mae", y_true, y_pred)
    return float(ae) / n


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``, ``SS_tot`` from ``y_true``.

    Pooled over all elements: scikit-learn's ``r2_score`` for 1-D targets (for 2-D ones
    scikit-learn averages per column; this equals its value on the flattened arrays).
    Constant ``y_true``: 1.0 for a perfect prediction, else 0.0, as scikit-learn. Fewer
    than two values raise ``UndefinedMetricError`` (scikit-learn gives NaN and a warning).

    Example:
        >>> import numpy as np
        >>> y_true, y_pred = np.array([1.0, 3.0, 5.0]), np.array([1.0, 2.0, 4.0])
        >>> r2_score(y_true, y_pred), r2_score(y_pred, y_true)  # not symmetric: truth first
        (0.75, 0.5714285714285714)
    """
    se, _, n = _sums("r2_score", y_true, y_pred)
    if n < 2:
        raise UndefinedMetricError(
            f"r2_score: got {n} value; R² is undefined for fewer than two (its denominator "
            "is the spread of y_true; scikit-learn gives NaN with a warning). Evaluate it "
            "on more data, or report mse/mae for a single value.")
    _, m2, _ = moments(y_true)
    return r2_from_stats(float(m2), float(se))
