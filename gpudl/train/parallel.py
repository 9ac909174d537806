"""What ``fit(..., distributed=...)`` changes in a run of several ranks (data parallelism).

With one rank (a plain process, ``distributed=None``, or ``mpiexec -n 1``) nothing here
runs and ``fit`` is exactly the one-process loop. With N ranks (``gpudl launch -n N``):

* **data**: every rank shuffles with the same key (the same permutation), trims it to a
  multiple of N (so every rank runs the same number of steps: unequal step counts
  would leave a rank waiting forever in a collective), and takes rows ``rank::N``;
  ``batch_size`` is per rank, as torch's DDP (the global batch is N times it). Step
  ``b`` of the N ranks together covers the rows a one-process run at batch N x
  ``batch_size`` covers in its step ``b``. Validation data is split ``rank::N`` without
  trimming (every row counted once).
* **parameters**: broadcast from rank 0 at the start (after a resume too), which also
  checks that every rank built the same model;
* **gradients**: averaged over the ranks before the optimizer
  (:func:`gpudl.distributed.average_gradients`; the optimizer state is unchanged);
* **keys**: each rank's dropout/step keys fold in its rank;
* **logs**: the loss and metric sums of all ranks merged once per epoch, so every
  rank sees the same logs and callbacks decide the same (early stopping, plateaus);
* **BatchNorm**: each rank normalises with its own shard's batch statistics and keeps
  its own running statistics (the default, as torch's DDP without SyncBatchNorm);
  ``sync_state=True`` averages the float leaves of the model state over the ranks at
  the end of every epoch, before validation and checkpoints;
* **output**: only rank 0 prints, writes checkpoints and CSV logs; a resume reads the
  checkpoint on rank 0 and broadcasts it.

Example:
    >>> import numpy as np
    >>> from gpudl.data import DataLoader
    >>> loader = DataLoader((np.arange(10.0),), batch_size=2, shuffle=False)
    >>> shard = ShardedLoader(loader, rank=1, size=3)      # 10 rows -> 9 -> rows 1, 4, 7
    >>> [b[0].tolist() for b in shard]
    [[1.0, 4.0], [7.0]]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from gpudl import distributed as dist
from gpudl.backend import to_numpy
from gpudl.data.loader import DataLoader
from gpudl.errors import EmptyDataError, TrainingConfigError
from gpudl.tree import flatten_with_paths, tree_flatten, tree_unflatten


class ShardedLoader(DataLoader):
    """Rank ``rank``'s shard of ``loader``: the same shuffled order on every rank, trimmed
    to a multiple of ``size`` rows (``trim``), then every ``size``-th row from ``rank``."""

    def __init__(self, loader: DataLoader, rank: int, size: int, trim: bool = True):
        super().__init__(loader.dataset, loader.batch_size, loader.shuffle, loader.drop_last,
                         loader.key, loader.device, loader.prefetch, loader.transform)
        self.epoch, self.rank, self.size, self.trim = loader.epoch, rank, size, trim

    def shard_rows(self) -> int:
        n = len(self.dataset)
        return n // self.size if self.trim else len(range(self.rank, n, self.size))

    def __len__(self) -> int:
        rows = self.shard_rows()
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        idx = super().order(epoch)  # the same permutation on every rank
        if self.trim:
            idx = idx[:len(idx) // self.size * self.size]
        return idx[self.rank::self.size]

    def transform_index(self, b: int) -> int:
        # each rank's rows get their own augmentation: batch b of rank r is the
        # (b * size + r)-th batch of the epoch
        return b * self.size + self.rank

    def __iter__(self) -> Iterator[tuple]:
        if len(self) == 0 and not self.trim and len(self.dataset) > 0:
            self.epoch += 1  # a validation shard with no rows: the other ranks have them
            return iter(())
        return super().__iter__()


def resolve(distributed: Any, who: str = "fit") -> dist.Communicator | None:
    """The communicator of a ``fit`` run, or None for one rank (today's loop exactly).

    ``"auto"``: :func:`gpudl.distributed.init` (several ranks only under a launcher);
    ``None``/``False``/``"single"``: one process even under a launcher; ``"mpi"``,
    ``"nccl"``: that backend; a :class:`~gpudl.distributed.Communicator`: itself.
    """
    if distributed is None or distributed is False:
        return None
    if isinstance(distributed, dist.Communicator):
        comm = distributed
    elif isinstance(distributed, str) and distributed.strip().lower() in dist.world.BACKENDS:
        comm = dist.init(distributed)
    else:
        raise TrainingConfigError(
            f"{who}: distributed must be 'auto', 'mpi', 'nccl', 'single', None or a "
            f"gd.distributed communicator, got {distributed!r}")
    return comm if comm.size > 1 else None


def shard(batches: Any, comm: dist.Communicator, trim: bool, what: str) -> Any:
    """``batches`` (fit's LoaderBatches or FullBatch) as this rank's shard of them. A
    FullBatch (one graph) is not split: every rank computes the same full-batch step."""
    loader = getattr(batches, "loader", None)
    if loader is None:
        return batches
    n = len(loader.dataset)
    if trim and n < comm.size:
        raise EmptyDataError(
            f"fit: {what} has {n} rows, fewer than the {comm.size} ranks; each rank needs at "
            "least one row per epoch. Use fewer ranks or more data")
    return type(batches)(ShardedLoader(loader, comm.rank, comm.size, trim), batches.treedef)


def average_float_leaves(comm: dist.Communicator, tree: Any) -> Any:
    """``tree`` with its floating-point array leaves averaged over the ranks (BatchNorm
    running statistics); integer leaves (``num_batches_tracked``) are left as they are."""
    leaves, treedef = tree_flatten(tree)
    floats = [i for i, leaf in enumerate(leaves)
              if hasattr(leaf, "dtype") and np.dtype(leaf.dtype).kind == "f"]
    if not floats:
        return tree
    mean = comm.allreduce_mean([leaves[i] for i in floats])
    for i, value in zip(floats, mean):
        leaves[i] = value.copy()  # its own memory, not a view of the shared buffer
    return tree_unflatten(treedef, leaves)


def on_rank0(comm: dist.Communicator, fn, *args) -> Any:
    """``fn(*args)`` run on rank 0 and its result broadcast; if it raised, every rank
    raises the same exception (no rank is left waiting)."""
    result: tuple[bool, Any] = (True, None)
    if comm.rank == 0:
        try:
            result = (True, fn(*args))
        except Exception as exc:  # handed to every rank, raised there
            result = (False, exc)
    ok, value = comm.bcast_object(result, root=0)
    if not ok:
        raise value
    return value


def first_different_leaf(a: Any, b: Any, rtol: float = 0.0, atol: float = 0.0
                         ) -> str | None:
    """The path of the first leaf where trees ``a`` and ``b`` differ (beyond ``rtol``/
    ``atol``; exactly with the defaults), or None. For reports of diverging ranks.

    Example:
        >>> first_different_leaf({"w": np.ones(2), "b": np.zeros(1)},
        ...                      {"w": np.ones(2), "b": np.ones(1)})
        'b'
    """
    pa, pb = flatten_with_paths(a), flatten_with_paths(b)
    for (path, x), (path_b, y) in zip(pa, pb):
        x, y = np.asarray(to_numpy(x)), np.asarray(to_numpy(y))
        if path != path_b or x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol):
            return path or "<root>"
    return None if len(pa) == len(pb) else "<structure>"


__all__ = ["ShardedLoader", "resolve", "shard", "average_float_leaves", "on_rank0",
           "first_different_leaf"]
