"""Ensembles and bagging: train several copies of a model and combine their predictions.

:func:`fit_ensemble` trains ``num_models`` members with :func:`gpudl.fit`, each from its own
random initialisation and, with ``bootstrap=True`` (bagging, Breiman 1996), on its own
bootstrap resample of the training set: ``n`` indices drawn with replacement, so each member
sees about 63 % of the distinct examples. :class:`Ensemble` combines the members' outputs by
averaging them (``"mean"``, for regression or logits), averaging softmax probabilities
(``"softmax"``, for classifiers) or a majority vote of their arg-max classes (``"vote"``),
and gives out-of-bag predictions: for each training example, the combination of only the
members that never saw it (an estimate of test error without a held-out set).

Limits: members are trained one after another (no parallel training); data must be an
``(x, y)`` tuple of arrays, since bootstrap resampling needs random access.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn, optim
    >>> x = np.random.default_rng(0).standard_normal((64, 2)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> ens = fit_ensemble(nn.Dense(2), (x, y), loss="cross_entropy", optimizer=optim.adam(0.1),
    ...                    num_models=3, epochs=3, key=gd.random.key(0), verbose=0)
    >>> ens.predict(x, combine="softmax").shape, len(ens.members)
    ((64, 2), 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpudl import random as gdrandom
from gpudl.backend import to_numpy
from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError, TrainingConfigError
from gpudl.train.batches import split_validation
from gpudl.train.fit_checks import as_key
from gpudl.train.history import History
from gpudl.train.loop import fit, predict

COMBINE = ("mean", "softmax", "vote")


def bootstrap_indices(key: Any, n: int, num_samples: int | None = None) -> np.ndarray:
    """``num_samples`` (default ``n``) indices drawn uniformly from ``range(n)`` with replacement.

    Example:
        >>> idx = bootstrap_indices(gdrandom.key(0), 1000)
        >>> idx.shape, 550 < len(np.unique(idx)) < 720  # about 1 - 1/e of them distinct
        ((1000,), True)
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"bootstrap_indices: n must be a positive int, got {n!r}")
    m = n if num_samples is None else num_samples
    return np.asarray(to_numpy(gdrandom.randint(key, (m,), 0, n, device="cpu")))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Ensemble:
    """Trained members of one model architecture and how to combine their outputs."""

    model: Any
    members: list[History]
    bootstrap_idx: list[np.ndarray | None] = field(default_factory=list)
    combine: str = "mean"

    def member_outputs(self, x, batch_size: int = 256, device: str | None = None) -> np.ndarray:
        """Every member's outputs for ``x``, stacked: (num_models, N, ...) NumPy."""
        return np.stack([predict(self.model, h.params, h.state, x, batch_size, device)
                         for h in self.members])

    def predict(self, x, combine: str | None = None, batch_size: int = 256,
                device: str | None = None) -> np.ndarray:
        """The combined prediction: mean outputs, mean probabilities, or voted classes (N,)."""
        return combine_outputs(self.member_outputs(x, batch_size, device),
                               combine or self.combine)

    def oob_predict(self, x, combine: str | None = None, batch_size: int = 256,
                    device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-bag predictions for the training inputs ``x`` (the array given to fit).

        Returns ``(pred, covered)``: row i combines only the members whose bootstrap
        sample missed example i; ``covered[i]`` is False (and the row NaN, or -1 for votes)
        where every member saw it.
        """
        if not self.bootstrap_idx or any(b is None for b in self.bootstrap_idx):
            raise ConfigError("Ensemble.oob_predict: needs members trained with bootstrap=True")
        outs = self.member_outputs(x, batch_size, device)  # (M, N, ...)
        n = outs.shape[1]
        if any(int(b.max()) >= n for b in self.bootstrap_idx):
            raise ShapeError(f"Ensemble.oob_predict: x has {n} rows, fewer than the data the "
                             "members were trained on; pass the same training inputs")
        out_of_bag = np.ones((len(self.members), n), dtype=bool)  # (M, N)
        for m, idx in enumerate(self.bootstrap_idx):
            out_of_bag[m, idx] = False
        covered = out_of_bag.any(axis=0)
        method = combine or self.combine
        rows = [combine_outputs(outs[out_of_bag[:, i], i][:, None], method)[0] if covered[i]
                else None for i in range(n)]
        fill = -1 if method == "vote" else np.nan
        shape = () if method == "vote" else outs.shape[2:]
        pred = np.stack([r if r is not None else np.full(shape, fill) for r in rows])
        return pred, covered


def combine_outputs(outs: np.ndarray, combine: str) -> np.ndarray:
    """Combine stacked member outputs (M, N, ...) by ``"mean"``, ``"softmax"`` or ``"vote"``.

    Example:
        >>> combine_outputs(np.array([[[2.0, 0.0]], [[0.0, 1.0]], [[3.0, 0.0]]]), "vote")
        array([0])
    """
    if combine not in COMBINE:
        raise ConfigError(f"ensemble: combine must be one of {COMBINE}, got {combine!r}")
    if combine == "mean":
        return outs.mean(axis=0)
    if combine == "softmax":
        return _softmax(outs).mean(axis=0)
    votes = outs.argmax(axis=-1)  # (M, N)
    n_classes = outs.shape[-1]
    counts = np.stack([(votes == c).sum(axis=0) for c in range(n_classes)], axis=-1)
    return counts.argmax(axis=-1)  # ties go to the lowest class index


def fit_ensemble(model, train_data: tuple, *, loss: str | Callable, optimizer,
                 num_models: int = 5, bootstrap: bool = True, key: Any = None,
                 combine: str = "mean", **fit_kwargs) -> Ensemble:
    """Train ``num_models`` members of ``model`` (bagging when ``bootstrap``); see the module.

    ``key`` (a ``gd.random.key`` or an int seed) seeds everything: member m's
    initialisation, shuffling and bootstrap sample come from ``split(key, num_models)[m]``,
    so a run is reproducible. ``fit_kwargs`` go to :func:`gpudl.fit` (``epochs``,
    ``batch_size``, ``metrics``, ``validation_data``, ...); ``validation_split`` takes the
    last rows of ``(x, y)`` out before any resampling, the same validation data for every
    member.
    """
    if not isinstance(num_models, int | np.integer) or num_models < 1:
        raise ConfigError(f"fit_ensemble: num_models must be a positive int, got {num_models!r}")
    if combine not in COMBINE:
        raise ConfigError(f"fit_ensemble: combine must be one of {COMBINE}, got {combine!r}")
    if not (isinstance(train_data, tuple) and len(train_data) == 2):
        raise ArgumentTypeError("fit_ensemble: train_data must be an (x, y) tuple of arrays (bootstrap "
                        f"resampling needs random access), got {type(train_data).__name__}")
    x, y = train_data
    if len(x) != len(y):
        raise ShapeError(f"fit_ensemble: x has {len(x)} rows but y has {len(y)}")
    split = fit_kwargs.pop("validation_split", None)
    if split is not None and split != 0:
        if fit_kwargs.get("validation_data") is not None:
            raise TrainingConfigError("fit_ensemble: give validation_data or validation_split, "
                                      "not both")
        (x, y), fit_kwargs["validation_data"] = split_validation((x, y), split, "fit_ensemble")
    keys = gdrandom.split(as_key(key, "fit_ensemble"), num_models)
    members, idxs = [], []
    for m in range(num_models):
        k_data, k_fit = gdrandom.split(keys[m], 2)
        idx = bootstrap_indices(k_data, len(x)) if bootstrap else None
        data = (x[idx], y[idx]) if bootstrap else (x, y)
        members.append(fit(model, data, loss, optimizer, key=k_fit, **fit_kwargs))
        idxs.append(idx)
    return Ensemble(model, members, idxs, combine)
