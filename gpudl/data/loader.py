"""Mini-batch loading: ``DataLoader(dataset, batch_size, shuffle, drop_last, key)``.

A dataset is a tuple of arrays with a common first dim (``(x, y)``), or any object with
``__len__`` and ``__getitem__(index_array) -> tuple of arrays`` (a Dataset). Shuffling
uses an explicit gpudl key, so the order is reproducible; each epoch folds the epoch
number into the key. Batches are moved to the current device; with ``prefetch > 0`` a
background thread prepares the next batches (host slicing and the host-to-device copy,
the ``transform``, a Dataset's reads) while the current step runs.

Arrays held in memory (an :class:`ArrayDataset`) with no ``transform`` cost next to
nothing to batch on the CPU, so there the loader does it in the loop, with no thread
(a thread would only add GIL hand-offs and a start per epoch), and batches taken in
order are read-only views of the data (no copy; a write into one raises instead of
changing the data); shuffled ones are gathered with one ``np.take`` per array.

Example:
    >>> import numpy as np, gpudl as gd
    >>> x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    >>> loader = DataLoader((x, y), batch_size=2, shuffle=False, device="cpu")
    >>> [b[0].shape for b in loader]
    [(2, 2), (2, 2), (1, 2)]
"""

from __future__ import annotations

import numbers
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.backend import asarray, get_device, to_numpy
from gpudl.errors import ArgumentTypeError, ConfigError, EmptyDataError, ShapeError


class ArrayDataset:
    """Arrays sharing their first dim; indexing with an index array returns a tuple."""

    def __init__(self, *arrays: Any):
        if not arrays:
            raise ConfigError("ArrayDataset: give at least one array")
        for i, a in enumerate(arrays):
            if getattr(a, "ndim", 1) == 0 or not hasattr(a, "__len__"):
                raise ShapeError(
                    f"ArrayDataset: array {i} is a scalar ({type(a).__name__}); every array needs "
                    "a first dim of examples"
                )
        n = len(arrays[0])
        for i, a in enumerate(arrays):
            if len(a) != n:
                raise ShapeError(
                    f"ArrayDataset: array {i} has {len(a)} rows, array 0 has {n}; all arrays "
                    "must share their first dim"
                )
        self.arrays = tuple(np.asarray(to_numpy(a)) for a in arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index) -> tuple:
        return tuple(a[index] for a in self.arrays)

    def take(self, rows: np.ndarray) -> tuple:
        """The rows ``rows`` (an integer index array) of every array, as new arrays."""
        return tuple(np.take(a, rows, axis=0) for a in self.arrays)

    def rows_view(self, start: int, stop: int) -> tuple:
        """Read-only views of rows ``start:stop`` of every array (no copy)."""
        views = tuple(a[start:stop] for a in self.arrays)
        for view in views:
            view.flags.writeable = False  # a batch written into must not change the data
        return views


def check_int(who: str, name: str, value: Any, minimum: int, meaning: str, example: int) -> int:
    """``value`` as a Python int if it is an int or NumPy integer (not a bool) ``>= minimum``,
    else a ConfigError naming ``who``, ``name`` and the value (a float such as 2.7 is refused,
    never truncated; a string is never parsed)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    if is_int and int(value) >= minimum:
        return int(value)
    if is_int:
        fix = f"use {name}={minimum} or more"
    elif isinstance(value, float) and value.is_integer() and value >= minimum:
        fix = f"pass it as an int: {name}={int(value)}"
    else:
        fix = f"pass an int, e.g. {name}={example}"
    raise ConfigError(f"{who}: {name} ({meaning}) must be an int >= {minimum}, got "
                      f"{type(value).__name__} {value!r}; {fix}")


def as_dataset(data: Any):
    if isinstance(data, dict):
        raise ArgumentTypeError(
            f"DataLoader: expected a tuple of arrays (x, y) or a Dataset, got a dict with keys "
            f"{sorted(map(str, data))[:6]}; a DataLoader yields tuples, so pass "
            "DataLoader((x, y)), or give the dict of arrays to gd.fit/gd.train.evaluate "
            "directly (they batch dicts and trees of arrays themselves)")
    if isinstance(data, str | bytes):
        raise ArgumentTypeError(
            f"DataLoader: expected a tuple of arrays (x, y) or a Dataset, got "
            f"{type(data).__name__} {data[:40]!r}; load the file or encode the text into "
            "arrays first")
    if isinstance(data, (tuple, list)):
        return ArrayDataset(*data)
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        # one array (NumPy, CuPy, a torch tensor): its rows are the examples, as
        # DataLoader((x,)), never a dataset of rows whose items are split into a tuple
        return ArrayDataset(data)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    raise ArgumentTypeError(
        f"DataLoader: expected a tuple of arrays (x, y) or a Dataset, got {type(data).__name__}; "
        "pass DataLoader((x, y)), one array x, or an object with __len__ and "
        "__getitem__(index_array) -> tuple of arrays"
    )


class DataLoader:
    """Iterate over mini-batches of a dataset, optionally shuffled and prefetched.

    ``key`` (shuffling and the ``transform``'s keys) is a key or an int seed
    (``gd.random.as_key``); None means ``gd.random.key(0)``. Iterating a loader that has
    no batch (no rows, or fewer rows than one batch with ``drop_last=True``) raises
    :class:`~gpudl.errors.EmptyDataError`.
    """

    def __init__(self, dataset: Any, batch_size: int = 32, shuffle: bool = False,
                 drop_last: bool = False, key=None, device: str | None = None,
                 prefetch: int = 2, transform=None):
        batch_size = check_int("DataLoader", "batch_size", batch_size, 1, "rows per batch", 32)
        prefetch = check_int("DataLoader", "prefetch", prefetch, 0,
                             "batches prepared ahead; 0: no thread", 2)
        self.dataset = as_dataset(dataset)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.key = gdr.key(0) if key is None else gdr.as_key(key, "DataLoader")
        self.device, self.prefetch, self.transform = device, prefetch, transform
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return to_numpy(gdr.permutation(gdr.fold_in(self.key, epoch), n, device="cpu"))

    def transform_index(self, b: int) -> int:
        """The number folded into the epoch's key for batch ``b``'s ``transform``."""
        return b

    def _in_memory(self) -> bool:
        """Batches are a host gather of in-memory arrays, nothing more (no transform)."""
        return self.transform is None and isinstance(self.dataset, ArrayDataset)

    def _gather(self, idx: np.ndarray):
        """``rows(lo, hi)``: the dataset's rows ``idx[lo:hi]``. Views when ``idx`` is one
        ascending run (``shuffle=False``) of an in-memory dataset's C-contiguous arrays
        (whose row slices are C-contiguous too, as copies would be), else a gather."""
        ds = self.dataset
        if not self._in_memory():
            return lambda lo, hi: ds[idx[lo:hi]]
        if idx.size and int(idx[-1]) - int(idx[0]) == idx.size - 1 \
                and all(a.flags.c_contiguous for a in ds.arrays) \
                and bool((np.diff(idx) == 1).all()):
            first, end = int(idx[0]), int(idx[-1]) + 1
            return lambda lo, hi: ds.rows_view(first + lo, min(first + hi, end))
        return lambda lo, hi: ds.take(idx[lo:hi])

    def _batches(self, epoch: int, device: str) -> Iterator[tuple]:
        idx = self.order(epoch)
        if self.transform is not None:
            ekey = gdr.fold_in(self.key, 1_000_003 + epoch)
        rows = self._gather(idx)
        for b in range(len(self)):
            batch = rows(b * self.batch_size, (b + 1) * self.batch_size)
            if self.transform is not None:
                batch = self.transform(batch, gdr.fold_in(ekey, self.transform_index(b)))
            yield tuple(_on_device(a, device) for a in batch)

    def __iter__(self) -> Iterator[tuple]:
        if len(self) == 0:
            rows = len(self.dataset)
            why = (f"{rows} rows are fewer than one batch of {self.batch_size} and drop_last=True "
                   "drops the partial batch; use a smaller batch_size or drop_last=False"
                   if rows else "the dataset has no rows; check the split or filter that built it")
            raise EmptyDataError(f"DataLoader: no batches to iterate: {why}")
        epoch = self.epoch
        self.epoch += 1
        device = self.device or get_device()  # the caller's, resolved before any thread
        if self.prefetch <= 0 or (device == "cpu" and self._in_memory()):
            yield from self._batches(epoch, device)
            return
        yield from _prefetched(self._batches(epoch, device), self.prefetch)


def _on_device(a: Any, device: str) -> Any:
    """``a`` on ``device``, its dtype kept; a NumPy array of numbers bound for the CPU is
    already there (what ``asarray`` would return, without its checks)."""
    if device == "cpu" and type(a) is np.ndarray and a.dtype.kind not in "OUSV":
        return a
    return asarray(a, dtype=getattr(a, "dtype", None), device=device)


_DONE = object()


def _prefetched(it: Iterator, depth: int) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        # A bounded put that gives up once the consumer has gone (early break, error),
        # so the thread never blocks forever on a full queue.
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for item in it:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # re-raised in the consumer thread
            put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():
            q.get_nowait()
        thread.join(timeout=1.0)
