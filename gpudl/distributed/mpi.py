"""The MPI communicator (mpi4py): launching, control, and the gradients of CPU runs.

Host (NumPy) buffers go to ``MPI_Allreduce``/``MPI_Bcast`` as they are. CuPy buffers are
*staged*: copied to the host, reduced, copied back, because the MPI of the ``mpich``
wheel (like most MPI builds) is not CUDA-aware. That is the fallback for GPU runs
where NCCL is missing; with NCCL, :class:`~gpudl.distributed.nccl.NCCLCommunicator`
reduces on the GPUs and uses this one only for control.

Install with ``pip install 'gpudl[mpi]'`` (mpi4py and the mpich wheel, which brings
``mpiexec``); start with ``gpudl launch -n N script.py``.

Example (one process: MPI starts as a singleton, size 1):
    >>> comm = MPICommunicator()                       # doctest: +SKIP
    >>> comm.rank, comm.size                           # doctest: +SKIP
    (0, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.backend import asarray, device_of, to_numpy
from gpudl.distributed.base import DEFAULT_BUCKET_BYTES, Communicator, DistributedError
from gpudl.errors import DTypeError

INSTALL_HINT = ("install it with `pip install 'gpudl[mpi]'` (mpi4py and the mpich wheel, "
                "which brings mpiexec)")


def mpi_module():
    """``mpi4py.MPI``, or :class:`DistributedError` saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"gpudl.distributed: mpi4py is not installed; {INSTALL_HINT}"
                               ) from exc
    return MPI


def _check_dtype(buf) -> None:
    dt = np.dtype(buf.dtype)
    if dt.kind not in "fciub" or (dt.kind == "f" and dt.itemsize < 4):
        raise DTypeError(
            f"MPI collective: dtype {dt.name} has no MPI datatype here; use "
            "float32 or float64 leaves (cast float16/bfloat16 before reducing)")


class MPICommunicator(Communicator):
    """Collectives over an mpi4py communicator (default ``MPI.COMM_WORLD``).

    ``local_rank``/``local_size`` come from splitting the communicator by shared memory
    (the processes of one node). CuPy buffers are staged through host copies.
    """

    backend = "mpi"

    def __init__(self, comm: Any = None, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 mpi: Any = None) -> None:
        MPI = mpi or mpi_module()  # ``mpi``: mpi4py.MPI's stand-in in tests
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), local.Get_rank(),
                         local.Get_size(), bucket_bytes)
        local.Free()

    def _allreduce_sum_(self, buf) -> None:
        _check_dtype(buf)
        if device_of(buf) == "cuda":  # not CUDA-aware: through the host
            host = np.ascontiguousarray(to_numpy(buf))
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buf[...] = asarray(host, dtype=host.dtype, device="cuda")
            return
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def _bcast_(self, buf, root: int) -> None:
        _check_dtype(buf)
        if device_of(buf) == "cuda":
            host = np.ascontiguousarray(to_numpy(buf))
            self.comm.Bcast(host, root=root)
            buf[...] = asarray(host, dtype=host.dtype, device="cuda")
            return
        self.comm.Bcast(buf, root=root)

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj: Any) -> list:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()


__all__ = ["MPICommunicator", "mpi_module", "INSTALL_HINT"]
