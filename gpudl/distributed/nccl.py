"""The NCCL communicator: gradients reduced on the GPUs, control over MPI.

Each process takes the GPU of its node-local rank; rank 0 makes NCCL's unique id and
broadcasts it over MPI; every rank then joins one NCCL communicator. CuPy buffers are
reduced by ``ncclAllReduce`` on the current stream (no host copy); host buffers, the
object collectives and the barrier go through the control communicator (MPI).

NCCL comes with the ``nvidia-nccl-cu12``/``-cu13`` wheels (``pip install
'gpudl[nccl13]'``, ~200 MB). It refuses two ranks on one GPU, so a node needs as many
GPUs as ranks; with fewer, or without the wheel, ``gd.distributed.init()`` falls back to
:class:`~gpudl.distributed.mpi.MPICommunicator`, which stages CuPy buffers through the
host.

The packing (one flat buffer per dtype, buckets, leaf order) is the base class's; the
NCCL calls themselves are in :class:`NcclOps`, which tests replace by an in-process fake.

Example (on a GPU machine, under ``gpudl launch -n 2``):
    >>> comm = gd.distributed.init("nccl")            # doctest: +SKIP
    >>> grads = comm.allreduce_mean(grads)            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl import backend
from gpudl.backend import device_of
from gpudl.distributed.base import DEFAULT_BUCKET_BYTES, Communicator, DistributedError
from gpudl.errors import DTypeError

NCCL_HINT = ("install the NCCL wheel matching your CuPy: `pip install 'gpudl[nccl13]'` "
             "(cupy-cuda13x) or `pip install 'gpudl[nccl12]'` (cupy-cuda12x)")

# numpy dtype name -> the name of NCCL's datatype constant in cupy's nccl module
NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
               "int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32",
               "uint32": "NCCL_UINT32", "int64": "NCCL_INT64", "uint64": "NCCL_UINT64"}


def nccl_module():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``) when usable, else :class:`DistributedError`
    saying why and what to install. CuPy itself is reached only through gpudl.backend."""
    usable, reason = backend.probe_cuda()
    if not usable:
        raise DistributedError(f"gpudl.distributed: NCCL needs a usable CUDA GPU: {reason}")
    nccl = backend.nccl_module()
    if nccl is None or not getattr(nccl, "available", False):
        raise DistributedError(f"gpudl.distributed: NCCL is not installed; {NCCL_HINT}")
    return nccl


def nccl_dtype(nccl: Any, dtype: Any) -> Any:
    """NCCL's datatype constant for ``dtype``, or :class:`~gpudl.errors.DTypeError`."""
    name = NCCL_DTYPES.get(np.dtype(dtype).name)
    if name is None:
        raise DTypeError(f"NCCL collective: dtype {np.dtype(dtype).name} has no NCCL datatype; "
                         f"use one of {sorted(NCCL_DTYPES)}")
    return getattr(nccl, name)


class NcclOps:
    """The two NCCL calls the communicator makes, on raw device pointers and the current
    stream: sum-allreduce and broadcast of one contiguous CuPy buffer, in place."""

    def __init__(self, nccl: Any, size: int, unique_id: Any, rank: int) -> None:
        self.nccl = nccl
        self.comm = nccl.NcclCommunicator(size, unique_id, rank)

    @staticmethod
    def _stream() -> int:
        return backend.xp_for("cuda").cuda.get_current_stream().ptr

    def allreduce_sum_(self, buf) -> None:
        code = nccl_dtype(self.nccl, buf.dtype)
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, int(buf.size), code,
                            self.nccl.NCCL_SUM, self._stream())

    def bcast_(self, buf, root: int) -> None:
        code = nccl_dtype(self.nccl, buf.dtype)
        self.comm.bcast(buf.data.ptr, int(buf.size), code, int(root), self._stream())


class NCCLCommunicator(Communicator):
    """Device buffers through NCCL (``ops``), everything else through ``control`` (MPI).

    Build it with :meth:`create` (what ``gd.distributed.init("nccl")`` does); the
    constructor takes its parts so that tests can give fakes.
    """

    backend = "nccl"

    def __init__(self, control: Communicator, ops: Any,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 is_device: Callable[[Any], bool] | None = None) -> None:
        super().__init__(control.rank, control.size, control.local_rank, control.local_size,
                         bucket_bytes)
        self.control, self.ops = control, ops
        # which buffers NCCL takes (CuPy ones); tests route host buffers to a fake NCCL
        self.is_device = is_device or (lambda buf: device_of(buf) == "cuda")

    @classmethod
    def create(cls, control: Communicator, bucket_bytes: int = DEFAULT_BUCKET_BYTES
               ) -> NCCLCommunicator:
        """Take the GPU of this process' node-local rank and join one NCCL communicator
        with every rank of ``control`` (its unique id broadcast from rank 0)."""
        nccl = nccl_module()
        cupy = backend.xp_for("cuda")
        gpus = int(cupy.cuda.runtime.getDeviceCount())
        if control.local_size > gpus:
            raise DistributedError(
                f"gpudl.distributed: NCCL needs one GPU per rank, but this node runs "
                f"{control.local_size} ranks on {gpus} GPU(s) (rank {control.rank}); launch "
                f"at most {gpus} ranks per node, or use backend='mpi' (host-staged)")
        cupy.cuda.Device(control.local_rank).use()
        unique_id = nccl.get_unique_id() if control.rank == 0 else None
        unique_id = control.bcast_object(unique_id, root=0)
        return cls(control, NcclOps(nccl, control.size, unique_id, control.rank), bucket_bytes)

    def _allreduce_sum_(self, buf) -> None:
        if self.is_device(buf):
            self.ops.allreduce_sum_(buf)
        else:
            self.control._allreduce_sum_(buf)

    def _bcast_(self, buf, root: int) -> None:
        if self.is_device(buf):
            self.ops.bcast_(buf, root)
        else:
            self.control._bcast_(buf, root)

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.control.bcast_object(obj, root)

    def allgather_object(self, obj: Any) -> list:
        return self.control.allgather_object(obj)

    def barrier(self) -> None:
        backend.synchronize()  # NCCL work queued on the stream counts as not done yet
        self.control.barrier()


__all__ = ["NCCLCommunicator", "NcclOps", "nccl_module", "nccl_dtype", "NCCL_DTYPES",
           "NCCL_HINT"]
