"""NCCL for real, on a GPU machine: one rank (MPI starts as a singleton, no mpiexec).

The packing, buckets and call order are tested without a GPU in
``test_communicators.py``; this runs the same path through ``ncclAllReduce`` and
``ncclBcast`` on the device. It needs a real GPU (not the CPU kernel emulator) and the
``nccl13``/``nccl12`` extra; without NCCL it skips with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.distributed.base import Layout
from gpudl.tree import tree_flatten


@pytest.mark.gpu
@pytest.mark.gpu_hardware
def test_one_rank_nccl_allreduce_and_broadcast_on_the_gpu():
    pytest.importorskip("mpi4py")
    with gd.device("cuda"):
        try:
            comm = gd.distributed.init("nccl", bucket_bytes=1 << 12)
        except gd.distributed.DistributedError as exc:
            pytest.skip(f"NCCL unusable here: {exc}")
        run_on_the_gpu(comm)


def run_on_the_gpu(comm):
    cupy = gd.backend.xp_for("cuda")
    tree = {"w": cupy.arange(3000, dtype=cupy.float32).reshape(30, 100),
            "b": [cupy.ones(5, cupy.float64), None]}
    layout = Layout.of(tree)
    leaves = tree_flatten(tree)[0]
    buffers = layout.pack(leaves)
    comm._reduce_buffers(buffers)  # the NCCL calls (3 float32 buckets), even with one rank
    for buf in buffers:
        comm._bcast_(buf, 0)
    back = layout.unpack(buffers, leaves)
    assert gd.backend.device_of(back["w"]) == "cuda"
    np.testing.assert_array_equal(gd.to_numpy(back["w"]), gd.to_numpy(tree["w"]))
    np.testing.assert_array_equal(gd.to_numpy(back["b"][0]), np.ones(5))
    comm.barrier()
