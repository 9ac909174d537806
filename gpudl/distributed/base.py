"""What every communicator shares: packing trees into flat buffers, and the collectives.

A :class:`Communicator` moves *trees* (the nested dicts of arrays gpudl trains) between
the ranks of a data-parallel run. Its collectives pack the array leaves of a tree into
one flat buffer per dtype, in the tree's flatten order (depth first, dict insertion
order: the order :func:`gpudl.tree.flatten_with_paths` lists), reduce or broadcast that
buffer in buckets of at most ``bucket_bytes``, and unpack it into a tree of the same
structure. One buffer per dtype means one large message instead of one per leaf (a
ResNet has 60+), which is what makes a step's communication cost a bandwidth cost and
not a latency cost; the buckets bound the memory of a staged copy and MPI's count
arguments.

Subclasses give only the transport: ``_allreduce_sum_(buf)`` and ``_bcast_(buf, root)``
on one contiguous 1-D buffer (in place), and the object collectives
``bcast_object``/``allgather_object`` (small Python values: checkpoint contents, metric
counts, tree signatures). :class:`SingleProcess` is the one-rank communicator, whose
collectives return their argument itself (a run with one rank is exactly a run without
this package).

Example:
    >>> import numpy as np
    >>> comm = SingleProcess()
    >>> tree = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> comm.allreduce_mean(tree) is tree, comm.rank, comm.size
    (True, 0, 1)
    >>> layout = Layout.of(tree)
    >>> [(g.dtype.name, g.size) for g in layout.groups], layout.paths
    ([('float32', 6)], ['w', 'b'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpudl.backend import module_of
from gpudl.errors import DTypeError, GpudlError, TreeMismatchError
from gpudl.tree import flatten_with_paths, tree_flatten, tree_unflatten

# Above this many bytes a buffer is reduced in several messages. 32 MiB keeps a host-staged
# copy small next to the model and stays far below MPI's 2**31-element count limit.
DEFAULT_BUCKET_BYTES = 32 * 1024 * 1024


class DistributedError(GpudlError, RuntimeError):
    """A data-parallel run cannot start or continue: MPI or NCCL missing or refusing, ranks
    that disagree. The message says which rank, what was expected, and the fix."""


def _is_array(leaf: Any) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype") and hasattr(leaf, "ravel")


@dataclass(frozen=True)
class Group:
    """The leaves of one dtype, packed back to back in one flat buffer."""

    dtype: np.dtype
    size: int  # elements
    members: tuple[int, ...]  # indices into the tree's leaves, in flatten order


@dataclass(frozen=True)
class Layout:
    """Where each array leaf of a tree lives in the packed buffers.

    ``paths``/``shapes``/``dtypes`` are those of the array leaves in flatten order;
    ``others`` the indices of the leaves that are not arrays (Python numbers), which the
    collectives pass through untouched (reductions) or as objects (broadcast).
    """

    treedef: Any
    n_leaves: int
    paths: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[np.dtype]
    arrays: tuple[int, ...]  # leaf indices of the array leaves
    groups: tuple[Group, ...]
    others: tuple[int, ...]

    @classmethod
    def of(cls, tree: Any) -> Layout:
        leaves, treedef = tree_flatten(tree)
        all_paths = [p for p, _ in flatten_with_paths(tree)]  # same order as the leaves
        arrays = tuple(i for i, leaf in enumerate(leaves) if _is_array(leaf))
        others = tuple(sorted(set(range(len(leaves))) - set(arrays)))
        by_dtype: dict[np.dtype, list[int]] = {}
        for i in arrays:
            by_dtype.setdefault(np.dtype(leaves[i].dtype), []).append(i)
        groups = tuple(Group(dt, sum(int(leaves[i].size) for i in members), tuple(members))
                       for dt, members in by_dtype.items())
        return cls(treedef, len(leaves), [all_paths[i] for i in arrays],
                   [tuple(int(d) for d in leaves[i].shape) for i in arrays],
                   [np.dtype(leaves[i].dtype) for i in arrays], arrays, groups, others)

    def signature(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``(path, shape, dtype)`` of every array leaf: what must agree across ranks."""
        return [(p, s, d.name) for p, s, d in zip(self.paths, self.shapes, self.dtypes)]

    def pack(self, leaves: list) -> list:
        """One flat buffer per dtype group (on the leaves' device), leaves back to back."""
        out = []
        for g in self.groups:
            xp = module_of(leaves[g.members[0]])
            buf = xp.empty(g.size, dtype=g.dtype)
            start = 0
            for i in g.members:
                n = int(leaves[i].size)
                buf[start:start + n] = leaves[i].ravel()
                start += n
            out.append(buf)
        return out

    def unpack(self, buffers: list, leaves: list) -> Any:
        """The tree with each array leaf replaced by its (reshaped) slice of ``buffers``;
        the other leaves are taken from ``leaves``."""
        new = list(leaves)
        pos = {i: k for k, i in enumerate(self.arrays)}
        for g, buf in zip(self.groups, buffers):
            start = 0
            for i in g.members:
                shape = self.shapes[pos[i]]
                n = math.prod(shape)
                new[i] = buf[start:start + n].reshape(shape)
                start += n
        return tree_unflatten(self.treedef, new)


def bucket_slices(size: int, itemsize: int, bucket_bytes: int) -> list[slice]:
    """The slices of a ``size``-element buffer reduced one after the other.

    Example:
        >>> bucket_slices(10, 4, 16)
        [slice(0, 4, None), slice(4, 8, None), slice(8, 10, None)]
    """
    per = max(1, int(bucket_bytes) // int(itemsize))
    return [slice(s, min(s + per, size)) for s in range(0, size, per)] or [slice(0, 0)]


def first_difference(mine: list, theirs: list, who: str, what: str, rank: int,
                     other: int) -> TreeMismatchError | None:
    """A :class:`TreeMismatchError` naming the first leaf whose path, shape or dtype differs
    between this rank's and another rank's tree signature, or None when they agree."""
    for k, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return TreeMismatchError(
                f"{who}: {what} differs between rank {rank} and rank {other} at leaf {k}: "
                f"rank {rank} has {a[0]!r} {a[1]} {a[2]}, rank {other} has {b[0]!r} {b[1]} "
                f"{b[2]}; every rank must build the same model (same code, same arguments)")
    if len(mine) != len(theirs):
        return TreeMismatchError(
            f"{who}: {what} has {len(mine)} array leaves on rank {rank} but {len(theirs)} on "
            f"rank {other}; every rank must build the same model (same code, same arguments)")
    return None


class Communicator:
    """The collectives of a data-parallel run over trees of arrays.

    ``rank``/``size``: this process and how many there are; ``local_rank``/``local_size``:
    the same on this node (the GPU a process takes is its ``local_rank``). ``backend``
    names the transport: ``"single"``, ``"mpi"`` (host buffers; CuPy arrays are staged
    through the host), ``"nccl"``.
    """

    backend = "abstract"

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, local_size: int = 1,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.rank, self.size = int(rank), int(size)
        self.local_rank, self.local_size = int(local_rank), int(local_size)
        self.bucket_bytes = int(bucket_bytes)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(backend={self.backend!r}, rank={self.rank}, "
                f"size={self.size}, local_rank={self.local_rank})")

    # ------------------------------------------------------------------ transport
    def _allreduce_sum_(self, buf) -> None:
        """Sum ``buf`` (a contiguous 1-D array) over the ranks, in place."""
        raise NotImplementedError

    def _bcast_(self, buf, root: int) -> None:
        """Overwrite ``buf`` on every rank with ``root``'s, in place."""
        raise NotImplementedError

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        """``root``'s ``obj`` on every rank (pickled; for small values)."""
        raise NotImplementedError

    def allgather_object(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank (pickled; small values)."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank has called it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ tree collectives
    def _reduce_buffers(self, buffers: list) -> None:
        for buf in buffers:
            for sl in bucket_slices(int(buf.size), buf.dtype.itemsize, self.bucket_bytes):
                self._allreduce_sum_(buf[sl])

    def allreduce_sum(self, tree: Any) -> Any:
        """The leaf-wise sum of ``tree`` over the ranks (same structure; non-array leaves
        are returned as they are)."""
        if self.size == 1:
            return tree
        layout = Layout.of(tree)
        leaves = tree_flatten(tree)[0]
        buffers = layout.pack(leaves)
        self._reduce_buffers(buffers)
        return layout.unpack(buffers, leaves)

    def allreduce_mean(self, tree: Any) -> Any:
        """The leaf-wise mean of ``tree`` over the ranks: gradient averaging.

        Every array leaf must be floating point (the mean of integers is not an integer):
        a :class:`~gpudl.errors.DTypeError` names the leaf otherwise.
        """
        if self.size == 1:
            return tree
        layout = Layout.of(tree)
        for path, dt in zip(layout.paths, layout.dtypes):
            if dt.kind not in "fc":
                raise DTypeError(
                    f"allreduce_mean: leaf {path or '<root>'!r} is {dt.name}; the mean over "
                    "ranks needs floating-point leaves. Cast it (x.astype('float32')) or sum "
                    "it with allreduce_sum")
        leaves = tree_flatten(tree)[0]
        buffers = layout.pack(leaves)
        self._reduce_buffers(buffers)
        for buf in buffers:
            buf /= self.size  # true division, in place: the same bits on every rank
        return layout.unpack(buffers, leaves)

    def broadcast(self, tree: Any, root: int = 0, *, who: str = "broadcast",
                  what: str = "the tree") -> Any:
        """``root``'s ``tree`` on every rank: its array leaves by buffer, its other leaves
        (Python numbers) as objects. Ranks whose tree has another structure, paths, shapes
        or dtypes raise :class:`~gpudl.errors.TreeMismatchError` naming the first leaf
        that differs (all ranks raise, none waits forever)."""
        if self.size == 1:
            return tree
        self.check_same(tree, who=who, what=what)
        layout = Layout.of(tree)
        leaves = tree_flatten(tree)[0]
        buffers = layout.pack(leaves)
        for buf in buffers:
            for sl in bucket_slices(int(buf.size), buf.dtype.itemsize, self.bucket_bytes):
                self._bcast_(buf[sl], root)
        others = self.bcast_object([leaves[i] for i in layout.others], root)
        for i, value in zip(layout.others, others):
            leaves[i] = value
        return layout.unpack(buffers, leaves)

    def check_same(self, tree: Any, *, who: str = "check_same", what: str = "the tree") -> None:
        """Raise :class:`~gpudl.errors.TreeMismatchError` on every rank when the array
        leaves of ``tree`` (paths, shapes, dtypes) differ between ranks."""
        if self.size == 1:
            return
        signatures = self.allgather_object(Layout.of(tree).signature())
        for other, theirs in enumerate(signatures):
            err = first_difference(signatures[0], theirs, who, what, 0, other)
            if err is not None:
                raise err

    def allgather_host(self, values: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Every rank's list of small host arrays (metric sums), in rank order."""
        return self.allgather_object([np.asarray(v) for v in values])


class SingleProcess(Communicator):
    """The communicator of a run with one process: every collective returns its input.

    Example:
        >>> comm = SingleProcess()
        >>> comm.bcast_object({"epoch": 3}), comm.allgather_object(7)
        ({'epoch': 3}, [7])
    """

    backend = "single"

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        super().__init__(0, 1, 0, 1, bucket_bytes)

    def _allreduce_sum_(self, buf) -> None:
        return None

    def _bcast_(self, buf, root: int) -> None:
        return None

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather_object(self, obj: Any) -> list:
        return [obj]

    def barrier(self) -> None:
        return None


__all__ = ["Communicator", "SingleProcess", "DistributedError", "Layout", "Group",
           "bucket_slices", "DEFAULT_BUCKET_BYTES"]
