"""``init()``: the communicator of this process, chosen once from how it was started.

A process started by ``mpiexec``/``gpudl launch`` with more than one rank gets an MPI or
NCCL communicator; any other process (a plain ``python script.py``, a notebook, ``mpiexec
-n 1``) gets :class:`~gpudl.distributed.base.SingleProcess`, without importing mpi4py.
Launchers say so in the environment: ``PMI_SIZE`` (MPICH's hydra, Intel MPI, Slurm's
PMI), ``OMPI_COMM_WORLD_SIZE`` (Open MPI), ``MV2_COMM_WORLD_SIZE`` (MVAPICH).

``backend="auto"`` (the default) picks, for a multi-rank run: NCCL when gpudl's device
is a usable CUDA GPU, NCCL is installed and the node has a GPU per rank; else MPI, which
stages CuPy buffers through the host (the fallback, said once on rank 0's stderr).

Example:
    >>> comm = init()            # a plain python process: one rank
    >>> comm.backend, comm.rank, comm.size
    ('single', 0, 1)
"""

from __future__ import annotations

import os
import sys

from gpudl import backend as _backend
from gpudl.distributed.base import DEFAULT_BUCKET_BYTES, Communicator, SingleProcess
from gpudl.errors import ConfigError

BACKENDS = ("auto", "single", "mpi", "nccl")
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

_communicators: dict[str, Communicator] = {}


def launched_size() -> int:
    """The number of ranks the launcher started (1 when no launcher says otherwise).

    Example:
        >>> launched_size() >= 1
        True
    """
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def _check_backend(name: object) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ConfigError(
            f"gd.distributed.init: backend must be one of {', '.join(map(repr, BACKENDS))}, "
            f"got {name!r}")
    return name.strip().lower()


def _use_local_gpu(comm: Communicator) -> None:
    """A GPU run takes the GPU of its node-local rank (round robin past the last GPU)."""
    if _backend.get_device() != "cuda":
        return
    cupy = _backend.xp_for("cuda")
    gpus = int(cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(comm.local_rank % max(gpus, 1)).use()


def _auto(bucket_bytes: int) -> Communicator:
    from gpudl.distributed.base import DistributedError
    from gpudl.distributed.mpi import MPICommunicator
    from gpudl.distributed.nccl import NCCLCommunicator

    mpi = MPICommunicator(bucket_bytes=bucket_bytes)
    if mpi.size == 1:
        return SingleProcess(bucket_bytes)
    if _backend.get_device() == "cuda":
        try:
            return NCCLCommunicator.create(mpi, bucket_bytes)
        except DistributedError as exc:
            if mpi.rank == 0:
                print(f"gpudl.distributed: NCCL unusable ({exc}); reducing CuPy gradients "
                      "through the host over MPI", file=sys.stderr, flush=True)
    _use_local_gpu(mpi)
    return mpi


def init(backend: str = "auto", *, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> Communicator:
    """The communicator of this process (made on the first call, the same object after).

    ``backend``: ``"auto"`` (see the module docstring), ``"single"`` (one process, even
    under a launcher), ``"mpi"`` (mpi4py; CuPy buffers staged through the host),
    ``"nccl"`` (GPU buffers through NCCL, control over MPI; raises
    :class:`~gpudl.distributed.base.DistributedError` when NCCL cannot run).
    ``bucket_bytes``: the largest message of one reduction (bigger trees go in several).

    Example:
        >>> init("single").size
        1
    """
    name = _check_backend(backend)
    if name == "auto" and launched_size() == 1:
        name = "single"
    if name in _communicators:
        return _communicators[name]
    if name == "single":
        comm: Communicator = SingleProcess(bucket_bytes)
    elif name == "auto":
        comm = _auto(bucket_bytes)
    else:
        from gpudl.distributed.mpi import MPICommunicator
        from gpudl.distributed.nccl import NCCLCommunicator

        mpi = MPICommunicator(bucket_bytes=bucket_bytes)
        if name == "nccl":
            comm = NCCLCommunicator.create(mpi, bucket_bytes)
        else:
            _use_local_gpu(mpi)
            comm = mpi
    _communicators[name] = comm
    return comm


__all__ = ["init", "launched_size", "BACKENDS", "SIZE_VARIABLES"]
