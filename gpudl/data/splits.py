"""Train/validation/test splits and k-fold cross-validation indices (seeded, reproducible).

Example:
    >>> import numpy as np
    >>> (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(
    ...     np.arange(10), np.arange(10), val=0.2, test=0.2)
    >>> len(xtr), len(xva), len(xte)
    (6, 2, 2)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gpudl.errors import ConfigError, ShapeError


def _perm(n: int, seed: int) -> np.ndarray:
    from gpudl import random as gdr
    from gpudl.backend import to_numpy

    return to_numpy(gdr.permutation(gdr.key(seed), n, device="cpu"))


def _count(frac: float, n: int, what: str) -> int:
    if not 0.0 <= frac < 1.0:
        raise ConfigError(f"train_val_test_split: {what} must be a fraction in [0, 1), got {frac}")
    return int(round(frac * n))


def train_val_test_split(*arrays, val: float = 0.1, test: float = 0.1, seed: int = 0,
                         shuffle: bool = True):
    """Split arrays (same first dim) into ``(train, val, test)`` tuples of arrays."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ShapeError("train_val_test_split: all arrays must share their first dim")
    n_val, n_test = _count(val, n, "val"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise ConfigError(f"train_val_test_split: val + test leave no training rows (n={n})")
    idx = _perm(n, seed) if shuffle else np.arange(n)
    parts = (idx[n_val + n_test:], idx[:n_val], idx[n_val:n_val + n_test])
    return tuple(tuple(np.asarray(a)[p] for a in arrays) for p in parts)


def kfold(n: int, k: int = 5, seed: int = 0, shuffle: bool = True
          ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train_idx, val_idx)`` for each of ``k`` folds; fold sizes differ by at most 1."""
    if not 2 <= k <= n:
        raise ConfigError(f"kfold: k must be in [2, n={n}], got {k}")
    idx = _perm(n, seed) if shuffle else np.arange(n)
    folds = np.array_split(idx, k)
    for i in range(k):
        yield np.concatenate([f for j, f in enumerate(folds) if j != i]), folds[i]
