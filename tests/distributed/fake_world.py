"""An in-process stand-in for N ranks (not a test module): one thread per rank.

:class:`FakeControl` is a communicator whose collectives meet at a barrier and exchange
values through a shared table, as MPI would between processes; :class:`FakeNccl` plays
NCCL's two calls (recording each one: element count, datatype code) on top of it, so the
NCCL communicator's packing, bucketing and call order are tested without a GPU.
:func:`run_ranks` runs ``fn(comm)`` on every rank and returns the results in rank order
(re-raising the first rank's exception).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpudl.backend import module_of
from gpudl.distributed.base import Communicator


class World:
    """The shared table and barrier of ``size`` fake ranks."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=20)
        self.slots: list[Any] = [None] * size

    def exchange(self, rank: int, value: Any) -> list:
        """Every rank's ``value``, in rank order (a collective: all ranks must call it)."""
        self.barrier.wait()
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class FakeControl(Communicator):
    """A communicator over a :class:`World`: what MPI gives, between threads."""

    backend = "fake"

    def __init__(self, world: World, rank: int, bucket_bytes: int = 1 << 20):
        super().__init__(rank, world.size, rank, world.size, bucket_bytes)
        self.world = world
        self.messages: list[tuple[str, int, str]] = []  # (op, elements, dtype)

    def _allreduce_sum_(self, buf) -> None:
        self.messages.append(("allreduce", int(buf.size), buf.dtype.name))
        parts = self.world.exchange(self.rank, buf.copy())
        total = parts[0].copy()
        for p in parts[1:]:  # rank order: the same sum, bit for bit, on every rank
            total += p
        buf[...] = total

    def _bcast_(self, buf, root: int) -> None:
        self.messages.append(("bcast", int(buf.size), buf.dtype.name))
        buf[...] = self.world.exchange(self.rank, buf.copy())[root]

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.world.exchange(self.rank, obj)[root]

    def allgather_object(self, obj: Any) -> list:
        return self.world.exchange(self.rank, obj)

    def barrier(self) -> None:
        self.world.barrier.wait()


# NCCL's datatype and op constants, as cupy.cuda.nccl names them (values are arbitrary)
FAKE_NCCL = SimpleNamespace(NCCL_FLOAT16=6, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT8=0,
                            NCCL_UINT8=1, NCCL_INT32=2, NCCL_UINT32=3, NCCL_INT64=4,
                            NCCL_UINT64=5, NCCL_SUM=0, available=True)


class FakeNccl:
    """NCCL's sum-allreduce and broadcast between the threads of a :class:`World`,
    recording every call as ``(op, count, datatype code)``."""

    def __init__(self, world: World, rank: int):
        from gpudl.distributed.nccl import nccl_dtype

        self.world, self.rank, self.dtype_code = world, rank, nccl_dtype
        self.calls: list[tuple[str, int, int]] = []

    def allreduce_sum_(self, buf) -> None:
        self.calls.append(("allReduce", int(buf.size), self.dtype_code(FAKE_NCCL, buf.dtype)))
        parts = self.world.exchange(self.rank, buf.copy())
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        buf[...] = total

    def bcast_(self, buf, root: int) -> None:
        self.calls.append(("bcast", int(buf.size), self.dtype_code(FAKE_NCCL, buf.dtype)))
        buf[...] = self.world.exchange(self.rank, buf.copy())[root]


class FakeMPIComm:
    """The part of an mpi4py communicator MPICommunicator calls, over a :class:`World`
    (host NumPy buffers only, as a real MPI that is not CUDA-aware)."""

    def __init__(self, world: World, rank: int):
        self.world, self.rank = world, rank
        self.buffers_seen: list[str] = []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.world.size

    def Split_type(self, kind):
        return SimpleNamespace(Get_rank=lambda: self.rank, Get_size=lambda: self.world.size,
                               Free=lambda: None)

    def Allreduce(self, inplace, buf, op):
        assert inplace is FAKE_MPI.IN_PLACE and op is FAKE_MPI.SUM
        assert isinstance(buf, np.ndarray), "MPI got a device buffer (it must be staged)"
        self.buffers_seen.append(buf.dtype.name)
        parts = self.world.exchange(self.rank, buf.copy())
        buf[...] = sum(parts[1:], parts[0].copy())

    def Bcast(self, buf, root):
        assert isinstance(buf, np.ndarray), "MPI got a device buffer (it must be staged)"
        buf[...] = self.world.exchange(self.rank, buf.copy())[root]

    def bcast(self, obj, root):
        return self.world.exchange(self.rank, obj)[root]

    def allgather(self, obj):
        return self.world.exchange(self.rank, obj)

    def Barrier(self):
        self.world.barrier.wait()


FAKE_MPI = SimpleNamespace(IN_PLACE=object(), SUM=object(), COMM_TYPE_SHARED=1)


def run_ranks(size: int, fn, make=None, return_exceptions: bool = False) -> list:
    """``fn(comm)`` on ``size`` fake ranks (threads); results in rank order.

    ``make(world, rank)`` builds each rank's communicator (default :class:`FakeControl`);
    ``return_exceptions``: a rank's exception is its result instead of being raised.
    """
    world = World(size)
    make = make or (lambda w, r: FakeControl(w, r))
    comms = [make(world, r) for r in range(size)]
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def body(r: int) -> None:
        try:
            results[r] = fn(comms[r])
        except BaseException as exc:  # handed to the test thread
            errors[r] = exc
            if not return_exceptions:
                world.barrier.abort()  # the other ranks stop waiting at once

    threads = [threading.Thread(target=body, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if return_exceptions:
        return [e if e is not None else r for r, e in zip(results, errors)]
    for exc in errors:
        if exc is not None and not isinstance(exc, threading.BrokenBarrierError):
            raise exc
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def host(a) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return np.asarray(a.get() if module_of(a) is not np else a)
