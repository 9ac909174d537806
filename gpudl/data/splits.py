"""Train/validation/test splits and k-fold cross-validation indices (seeded, reproducible).

Example:
    >>> import numpy as np
    >>> (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(
    ...     np.arange(10), np.arange(10), val=0.2, test=0.2)
    >>> len(xtr), len(xva), len(xte)
    (6, 2, 2)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError


def _perm(n: int, seed: int) -> np.ndarray:
    from gpudl import random as gdr
    from gpudl.backend import to_numpy

    return to_numpy(gdr.permutation(gdr.key(seed), n, device="cpu"))


def _count(frac, n: int, what: str) -> int:
    """Rows of ``n`` that fraction ``frac`` takes: rounded up, as scikit-learn's
    ``train_test_split``, so a non-zero fraction never gives an empty part. The fraction is
    read as the decimal it prints as, so ``0.07`` of 100 rows is 7, not ``ceil(7.000000000000001)``."""
    if isinstance(frac, bool | np.bool_) or not isinstance(frac, numbers.Real) \
            or not 0.0 <= float(frac) < 1.0:
        raise ConfigError(f"train_val_test_split: {what} must be a fraction of the rows in [0, 1), "
                          f"got {type(frac).__name__} {frac!r}; e.g. {what}=0.1, or {what}=0 "
                          "for no such part")
    try:
        exact = Fraction(str(frac))
    except ValueError:  # a Real type that prints otherwise
        exact = Fraction(float(frac))
    return math.ceil(exact * n)


def train_val_test_split(*arrays, val: float = 0.1, test: float = 0.1, seed: int = 0,
                         shuffle: bool = True):
    """Split arrays (same first dim) into ``(train, val, test)`` tuples of arrays.

    ``val`` and ``test`` are fractions of the rows, each rounded up to whole rows (as
    scikit-learn's ``train_test_split``): a non-zero fraction always gets at least one row,
    and data too small to leave a training row raises :class:`~gpudl.errors.ConfigError`.
    """
    if not arrays:
        raise ConfigError("train_val_test_split: no arrays given; pass the arrays to split "
                          "(sharing their first dim), e.g. train_val_test_split(x, y, val=0.1, "
                          "test=0.1)")
    for i, a in enumerate(arrays):
        if getattr(a, "ndim", 1) == 0:
            raise ShapeError(f"train_val_test_split: array {i} is a scalar ({type(a).__name__}); "
                             "every array needs a first dim of examples")
        if not hasattr(a, "__len__") or isinstance(a, str | bytes | dict):
            raise ArgumentTypeError(
                f"train_val_test_split: array {i} is {type(a).__name__}, not an array; pass "
                "arrays (or lists) of examples as separate arguments: (x, y), not a dict or a "
                "file name")
    n = len(arrays[0])
    lengths = [len(a) for a in arrays]
    if any(m != n for m in lengths):
        raise ShapeError(f"train_val_test_split: all arrays must share their first dim, got "
                         f"lengths {lengths}; pass arrays with one row per example each")
    n_val, n_test = _count(val, n, "val"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise ConfigError(
            f"train_val_test_split: val={val} and test={test} of n={n} rows take {n_val} and "
            f"{n_test} rows (a non-zero fraction takes at least one row, rounded up), which "
            f"leave no training rows; use smaller fractions (or 0) or more data")
    idx = _perm(n, seed) if shuffle else np.arange(n)
    parts = (idx[n_val + n_test:], idx[:n_val], idx[n_val:n_val + n_test])
    return tuple(tuple(np.asarray(a)[p] for a in arrays) for p in parts)


def kfold(n: int, k: int = 5, seed: int = 0, shuffle: bool = True
          ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train_idx, val_idx)`` for each of ``k`` folds; fold sizes differ by at most 1."""
    for name, v in (("n", n), ("k", k)):
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"kfold: {name} must be an int (n the number of rows, k the "
                              f"number of folds), got {type(v).__name__} {v!r}")
    if not 2 <= k <= n:
        raise ConfigError(f"kfold: k must be in [2, n={n}], got {k}")
    idx = _perm(n, seed) if shuffle else np.arange(n)
    folds = np.array_split(idx, k)
    for i in range(k):
        yield np.concatenate([f for j, f in enumerate(folds) if j != i]), folds[i]
