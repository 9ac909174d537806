"""Data-parallel training across processes and machines, on MPI and NCCL.

Every rank holds the whole model and trains on its shard of each batch; the gradients
are averaged over the ranks before the optimizer, so the parameters stay identical
everywhere. ``gd.fit`` does all of this when the script is started with ``gpudl launch
-n N script.py`` (its ``distributed="auto"``); this package is what it uses:

* :func:`init` -> the :class:`Communicator` of this process: :class:`SingleProcess` (a
  plain process; every collective returns its input), :class:`MPICommunicator` (mpi4py;
  CuPy buffers staged through the host), :class:`NCCLCommunicator` (GPU buffers through
  NCCL, its unique id broadcast over MPI, each process on the GPU of its node-local rank);
* ``comm.allreduce_mean(tree)``, ``comm.allreduce_sum(tree)``, ``comm.broadcast(tree)``,
  ``comm.barrier()``: over one flat buffer per dtype in the tree's flatten order,
  in buckets of at most ``bucket_bytes``;
* :func:`average_gradients` (an optimizer wrapper keeping its state) and
  :func:`allreduce_gradients` (a stateless piece for ``optim.chain``);
* :func:`launch` / ``gpudl launch``: ``mpiexec -n N python -m mpi4py script.py``, so an
  exception on any rank ends every rank.

Extras: ``gpudl[mpi]`` (mpi4py + the mpich wheel, which brings ``mpiexec``),
``gpudl[nccl12]``/``gpudl[nccl13]`` (CuPy + NCCL wheels).

Example:
    >>> import numpy as np, gpudl as gd
    >>> comm = gd.distributed.init()         # one process here: SingleProcess
    >>> grads = comm.allreduce_mean({"w": np.ones(3)})
    >>> comm.rank, comm.size, grads["w"].tolist()
    (0, 1, [1.0, 1.0, 1.0])
"""

from gpudl.distributed.base import (
    DEFAULT_BUCKET_BYTES,
    Communicator,
    DistributedError,
    Layout,
    SingleProcess,
)
from gpudl.distributed.launcher import find_mpiexec, launch, launch_command
from gpudl.distributed.mpi import MPICommunicator
from gpudl.distributed.nccl import NCCLCommunicator
from gpudl.distributed.optimizer import allreduce_gradients, average_gradients
from gpudl.distributed.world import init, launched_size

__all__ = ["init", "launched_size", "Communicator", "SingleProcess", "MPICommunicator",
           "NCCLCommunicator", "DistributedError", "Layout", "DEFAULT_BUCKET_BYTES",
           "average_gradients", "allreduce_gradients", "launch", "launch_command",
           "find_mpiexec"]
