"""The checks ``fit`` runs before its first step, so a configuration mistake costs
seconds, not an epoch: argument types and ranges, data that yields no batch, and every
callback's configuration against the log names the run will produce.

Example:
    >>> check_positive_int("fit", "epochs", 0)
    Traceback (most recent call last):
    ...
    gpudl.errors.TrainingConfigError: fit: epochs must be a positive int, got 0
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.data.loader import DataLoader
from gpudl.errors import ArgumentTypeError, EmptyDataError, ShapeError, TrainingConfigError
from gpudl.train.callbacks import Callback


def check_positive_int(who: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = f" (as an int: {name}={int(value)})" if isinstance(value, float) and \
            value.is_integer() and value >= 1 else ""
        raise TrainingConfigError(f"{who}: {name} must be a positive int, got {value!r}{hint}")
    return value


def as_key(key: Any, who: str = "fit") -> Any:
    """``key`` as a gpudl key: None is ``gd.random.key(0)``, an int seed ``s`` is
    ``gd.random.key(s)`` (the same numbers), a key is returned as it is.

    Example:
        >>> as_key(7).tolist() == gdr.key(7).tolist()
        True
    """
    if key is None:
        return gdr.key(0)
    if isinstance(key, bool | np.bool_):
        raise TrainingConfigError(f"{who}: key must be a gd.random.key(seed) or an int seed, "
                                  f"got {key!r}")
    if isinstance(key, numbers.Integral):
        if not 0 <= int(key) < 1 << 64:
            raise TrainingConfigError(
                f"{who}: key={int(key)} is read as a seed, gd.random.key({int(key)}), and a "
                "seed must be in [0, 2**64)")
        return gdr.key(int(key))
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape is not None and tuple(shape) == (2,) and dtype == np.uint32:
        return key
    got = (f"an array of shape {tuple(shape)}, dtype {dtype}" if shape is not None
           else f"{type(key).__name__} {key!r}"[:80])
    hint = ("; one key of gd.random.split(key, n), such as keys[0]"
            if shape is not None and len(tuple(shape)) == 2 else "")
    raise TrainingConfigError(
        f"{who}: key must be a key from gd.random.key(seed) (a uint32 array of shape (2,)) "
        f"or an int seed, got {got}{hint}")


def check_callbacks_arg(callbacks: Any) -> list:
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Sequence | set | tuple):
        raise TrainingConfigError(
            f"fit: callbacks must be a list of callbacks, got {type(callbacks).__name__}; "
            "write callbacks=[cb]")
    for i, cb in enumerate(callbacks):
        if isinstance(cb, type) or not callable(getattr(cb, "on_epoch_end", None)):
            what = f"the class {cb.__name__}" if isinstance(cb, type) else type(cb).__name__
            raise TrainingConfigError(
                f"fit: callbacks[{i}] is {what}, not a callback (an object with "
                "on_epoch_end(trainer, epoch, logs), e.g. a gd.train.Callback subclass); "
                + ("pass an instance: add ()" if isinstance(cb, type) else ""))
    return list(callbacks)


def check_verbose(verbose: Any) -> int:
    """Keras' levels: 0 silent, 1 a progress bar, 2 one line per epoch; nothing else."""
    if isinstance(verbose, bool | np.bool_) or not isinstance(verbose, numbers.Integral) \
            or int(verbose) not in (0, 1, 2):
        raise TrainingConfigError(f"fit: verbose must be 0, 1 or 2 (0 silent, 1 a progress "
                                  f"bar, 2 one line per epoch), got {verbose!r}")
    return int(verbose)


def _pair_like(x: Any) -> bool:
    """A tuple holding arrays (how ``(x, y)`` is written), or a list of arrays that do not
    stack (a list of same-shaped rows is an array of examples, as NumPy reads it)."""
    if not isinstance(x, tuple | list):
        return False
    shapes = {tuple(v.shape) for v in x if getattr(v, "ndim", 0) >= 1}
    return bool(shapes) and (isinstance(x, tuple) or len(shapes) > 1)


def check_predict_input(x: Any) -> None:
    """``predict``'s ``x`` must be one array of inputs: a ``(x, y)`` pair, a dict or a
    DataLoader would otherwise be stacked into one array (or fail deep in NumPy)."""
    if isinstance(x, Mapping):
        got = f"a dict with keys {sorted(map(str, x))[:5]}"
    elif isinstance(x, DataLoader):
        got = "a DataLoader"
    elif _pair_like(x):
        got = f"a {type(x).__name__} of {len(x)} arrays"
    else:
        if getattr(x, "ndim", None) == 0 or (getattr(x, "ndim", None) is None
                                             and np.ndim(x) == 0):
            raise ShapeError(f"predict: x must be an array of inputs with a first axis of "
                             f"examples (N, ...), got a scalar {type(x).__name__}; for one "
                             "example pass x[None] (a batch of one)")
        return
    raise ArgumentTypeError(
        f"predict: x must be one array of model inputs (N, ...), got {got}; predict takes "
        "the inputs x only, not (x, y) pairs, a dict or a DataLoader: pass x alone, "
        "gd.predict(model, params, state, x) (x of a pair (x, y); for a model that takes a "
        "dict or a batch tree, call model.apply(params, state, batch, train=False)[0] on "
        "each batch)")


def require_batches(loader: Any, who: str, what: str) -> None:
    """Raise :class:`EmptyDataError` when ``loader`` yields no batch."""
    if len(loader) > 0:
        return
    describe = getattr(loader, "describe", None)  # fit's batches say why themselves
    if describe is not None:
        raise EmptyDataError(f"{who}: {what} yields no batch: {describe()}")
    rows = len(loader.dataset)
    if rows and getattr(loader, "drop_last", False):
        detail = (f"{rows} rows, fewer than one batch of {loader.batch_size}, and "
                  "drop_last=True drops the partial batch; use a smaller batch_size or "
                  "drop_last=False")
    else:
        detail = "no rows; check the split or the filter that built it"
    raise EmptyDataError(f"{who}: {what} yields no batch: {detail}")


def check_callbacks(callbacks: Sequence, names: set[str], has_validation: bool) -> None:
    """Each callback's :meth:`~Callback.check_config` against the names it will see (those of
    ``fit`` and of the callbacks before it; unknown after a callback that does not
    declare ``adds_logs``)."""
    available: set[str] | None = set(names)
    for cb in callbacks:
        check = getattr(cb, "check_config", None)
        if check is not None:
            check(None if available is None else set(available), has_validation)
        added = getattr(cb, "adds_logs", None)
        available = None if added is None or available is None else available | set(added)
