"""Mini-batch loading: ``DataLoader(dataset, batch_size, shuffle, drop_last, key)``.

A dataset is a tuple of arrays with a common first dim (``(x, y)``), or any object with
``__len__`` and ``__getitem__(index_array) -> tuple of arrays`` (a Dataset). Shuffling
uses an explicit gpudl key, so the order is reproducible; each epoch folds the epoch
number into the key. Batches are moved to the current device; with ``prefetch > 0`` a
background thread prepares the next batches (host slicing and the host-to-device copy)
while the current step runs.

Example:
    >>> import numpy as np, gpudl as gd
    >>> x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    >>> loader = DataLoader((x, y), batch_size=2, shuffle=False, device="cpu")
    >>> [b[0].shape for b in loader]
    [(2, 2), (2, 2), (1, 2)]
"""

from __future__ import annotations

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


def as_dataset(data: Any):
    if isinstance(data, (tuple, list)):
        return ArrayDataset(*data)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    raise ArgumentTypeError(
        f"DataLoader: expected a tuple of arrays (x, y) or a Dataset, got {type(data).__name__}"
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
        if int(batch_size) < 1:
            raise ConfigError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.dataset = as_dataset(dataset)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.key = gdr.key(0) if key is None else gdr.as_key(key, "DataLoader")
        self.device, self.prefetch, self.transform = device, int(prefetch), transform
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return to_numpy(gdr.permutation(gdr.fold_in(self.key, epoch), n, device="cpu"))

    def _batches(self, epoch: int) -> Iterator[tuple]:
        device = self.device or get_device()
        idx = self.order(epoch)
        ekey = gdr.fold_in(self.key, 1_000_003 + epoch)
        for b in range(len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            batch = self.dataset[sel]
            if self.transform is not None:
                batch = self.transform(batch, gdr.fold_in(ekey, b))
            yield tuple(asarray(a, dtype=getattr(a, "dtype", None), device=device)
                        for a in batch)

    def __iter__(self) -> Iterator[tuple]:
        if len(self) == 0:
            rows = len(self.dataset)
            why = (f"{rows} rows are fewer than one batch of {self.batch_size} and drop_last=True "
                   "drops the partial batch; use a smaller batch_size or drop_last=False"
                   if rows else "the dataset has no rows; check the split or filter that built it")
            raise EmptyDataError(f"DataLoader: no batches to iterate: {why}")
        epoch = self.epoch
        self.epoch += 1
        if self.prefetch <= 0:
            yield from self._batches(epoch)
            return
        yield from _prefetched(self._batches(epoch), self.prefetch)


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
