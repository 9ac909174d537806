"""Communicators in one process: packing, buckets, leaf order, NCCL's calls, averaging.

N ranks are threads exchanging through ``fake_world`` (what MPI/NCCL do between
processes), so the tree collectives and the NCCL communicator's packing and ordering are
checked against naive per-leaf references without MPI or a GPU. The real transports run
in ``test_two_ranks.py`` (mpiexec) and ``test_nccl_gpu.py`` (a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from fake_world import FAKE_MPI, FAKE_NCCL, FakeControl, FakeMPIComm, FakeNccl, host, run_ranks

import gpudl as gd
from gpudl import optim
from gpudl.distributed import (
    Layout,
    MPICommunicator,
    NCCLCommunicator,
    SingleProcess,
    allreduce_gradients,
    average_gradients,
)
from gpudl.distributed.base import bucket_slices
from gpudl.distributed.nccl import nccl_dtype
from gpudl.errors import DTypeError, TreeMismatchError


def rank_tree(rank: int, xp=np) -> dict:
    """A params-like tree whose values differ per rank: two dtypes, a list, a None."""
    rng = np.random.default_rng(rank)
    return {"conv": {"weight": xp.asarray(rng.normal(size=(2, 3)).astype(np.float32)),
                     "bias": xp.asarray(rng.normal(size=3).astype(np.float32))},
            "head": [xp.asarray(rng.normal(size=(4,))), None],  # float64
            "scale": xp.asarray(rng.normal(size=(1,)).astype(np.float32))}


def naive_mean(trees: list) -> dict:
    paths = [dict(gd.tree.flatten_with_paths(t)) for t in trees]
    return {p: np.mean([np.asarray(host(t[p]), np.float64) for t in paths], axis=0)
            for p in paths[0]}


# ----------------------------------------------------------------------------- packing
def test_layout_packs_one_buffer_per_dtype_in_flatten_order():
    tree = rank_tree(0)
    layout = Layout.of(tree)
    assert layout.paths == ["conv.weight", "conv.bias", "head.0", "scale"]
    assert [(g.dtype.name, g.size, g.members) for g in layout.groups] == [
        ("float32", 10, (0, 1, 3)), ("float64", 4, (2,))]
    leaves = gd.tree.tree_leaves(tree)
    f32, f64 = layout.pack(leaves)
    assert np.array_equal(f32, np.concatenate([tree["conv"]["weight"].ravel(),
                                               tree["conv"]["bias"], tree["scale"]]))
    back = layout.unpack([f32, f64], leaves)
    assert back["head"][1] is None and back["head"][0].shape == (4,)
    for (p, a), (q, b) in zip(gd.tree.flatten_with_paths(back), gd.tree.flatten_with_paths(tree)):
        assert p == q and a.dtype == b.dtype and np.array_equal(a, b)


def test_bucket_slices_cover_the_buffer_in_order():
    assert bucket_slices(10, 4, 16) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert bucket_slices(3, 8, 1 << 20) == [slice(0, 3)]
    assert bucket_slices(5, 8, 1) == [slice(i, i + 1) for i in range(5)]  # at least 1 each


# ----------------------------------------------------------------------------- collectives
@pytest.mark.parametrize("bucket_bytes", [1 << 20, 12])
def test_allreduce_mean_over_three_ranks_is_the_leafwise_mean(bucket_bytes):
    def fn(comm):
        comm.bucket_bytes = bucket_bytes
        return comm.allreduce_mean(rank_tree(comm.rank)), comm.messages

    results = run_ranks(3, fn)
    want = naive_mean([rank_tree(r) for r in range(3)])
    for tree, _ in results:
        for path, leaf in gd.tree.flatten_with_paths(tree):
            assert leaf.dtype == np.asarray(want[path]).dtype or leaf.dtype == np.float32
            np.testing.assert_allclose(leaf, want[path], rtol=1e-6)
        # identical on every rank, bit for bit
        for (_, a), (_, b) in zip(gd.tree.flatten_with_paths(tree),
                                  gd.tree.flatten_with_paths(results[0][0])):
            assert np.array_equal(a, b)
    messages = results[0][1]
    if bucket_bytes == 12:  # float32 buffer (10) in 3-element buckets, float64 (4) in 1s
        assert messages == [("allreduce", 3, "float32")] * 3 + [("allreduce", 1, "float32")] \
            + [("allreduce", 1, "float64")] * 4
    else:
        assert messages == [("allreduce", 10, "float32"), ("allreduce", 4, "float64")]


def test_allreduce_sum_and_broadcast_from_a_root():
    def fn(comm):
        t = rank_tree(comm.rank)
        t["step"] = 10 + comm.rank  # a Python number: passed through, or broadcast
        return comm.allreduce_sum(t), comm.broadcast(t, root=1)

    results = run_ranks(2, fn)
    trees = [rank_tree(r) for r in range(2)]
    for summed, bcast in results:
        np.testing.assert_allclose(summed["head"][0], trees[0]["head"][0] + trees[1]["head"][0])
        assert np.array_equal(bcast["conv"]["weight"], trees[1]["conv"]["weight"])
        assert bcast["step"] == 11 and bcast["head"][1] is None
    assert [s["step"] for s, _ in results] == [10, 11]


def test_broadcast_names_the_first_leaf_that_differs_on_every_rank():
    def fn(comm):
        t = {"a": np.zeros(2), "b": np.zeros(3 + comm.rank)}
        return comm.broadcast(t, who="fit", what="the params")

    errors = run_ranks(2, fn, return_exceptions=True)
    for err in errors:
        assert isinstance(err, TreeMismatchError) and isinstance(err, ValueError)
        assert "leaf 1" in str(err) and "'b' (3,)" in str(err) and "'b' (4,)" in str(err)
        assert "same model" in str(err)


def test_allreduce_mean_refuses_integer_leaves_naming_them():
    def fn(comm):
        return comm.allreduce_mean({"w": np.ones(2), "count": np.arange(2)})

    for err in run_ranks(2, fn, return_exceptions=True):
        assert isinstance(err, DTypeError) and "'count'" in str(err) and "int64" in str(err)


def test_single_process_collectives_return_their_input():
    comm, tree = SingleProcess(), rank_tree(0)
    assert comm.allreduce_mean(tree) is tree and comm.allreduce_sum(tree) is tree
    assert comm.broadcast(tree) is tree and comm.allgather_object(3) == [3]


# ----------------------------------------------------------------------------- NCCL
def _nccl(world, rank):
    control = FakeControl(world, rank)
    comm = NCCLCommunicator(control, FakeNccl(world, rank), bucket_bytes=16,
                            is_device=lambda buf: True)
    comm.fake_control = control
    return comm


def test_nccl_communicator_packs_buckets_and_orders_its_calls():
    def fn(comm):
        mean = comm.allreduce_mean(rank_tree(comm.rank))
        bcast = comm.broadcast(rank_tree(comm.rank))
        return mean, bcast, comm.ops.calls, comm.fake_control.messages

    results = run_ranks(2, fn, make=_nccl)
    want = naive_mean([rank_tree(r) for r in range(2)])
    f32, f64 = FAKE_NCCL.NCCL_FLOAT32, FAKE_NCCL.NCCL_FLOAT64
    for mean, bcast, calls, control_messages in results:
        for path, leaf in gd.tree.flatten_with_paths(mean):
            np.testing.assert_allclose(leaf, want[path], rtol=1e-6)
        assert np.array_equal(bcast["scale"], rank_tree(0)["scale"])
        # 16-byte buckets: float32 10 -> 4, 4, 2; float64 4 -> 2, 2; allreduce then bcast
        per_tree = [(4, f32), (4, f32), (2, f32), (2, f64), (2, f64)]
        assert calls == [("allReduce", n, c) for n, c in per_tree] + \
            [("bcast", n, c) for n, c in per_tree]
        assert control_messages == []  # no array went through the control communicator


def test_nccl_datatypes():
    assert nccl_dtype(FAKE_NCCL, np.float32) == FAKE_NCCL.NCCL_FLOAT32
    assert nccl_dtype(FAKE_NCCL, "float16") == FAKE_NCCL.NCCL_FLOAT16
    with pytest.raises(DTypeError, match="bool has no NCCL datatype"):
        nccl_dtype(FAKE_NCCL, np.bool_)


def test_mpi_communicator_reduces_on_the_host_and_stages_device_buffers(xp, device):
    """Host buffers go to MPI as they are; CuPy ones (the fallback without NCCL) are staged
    through host copies, because the mpich wheel's MPI is not CUDA-aware."""

    def fn(comm):
        tree = rank_tree(comm.rank, xp)
        mean, bcast = comm.allreduce_mean(tree), comm.broadcast(tree, root=1)
        return mean, bcast, comm.comm.buffers_seen

    make = lambda w, r: MPICommunicator(FakeMPIComm(w, r), mpi=FAKE_MPI)  # noqa: E731
    want = naive_mean([rank_tree(r) for r in range(2)])
    for mean, bcast, seen in run_ranks(2, fn, make=make):
        assert seen == ["float32", "float64"]  # one message per dtype
        for path, leaf in gd.tree.flatten_with_paths(mean):
            assert gd.backend.device_of(leaf) == device
            np.testing.assert_allclose(host(leaf), want[path], rtol=1e-6)
        assert np.array_equal(host(bcast["conv"]["bias"]), rank_tree(1)["conv"]["bias"])


@pytest.mark.gpu
def test_nccl_takes_cupy_buffers():
    cupy = gd.backend.xp_for("cuda")

    def nccl_fn(comm):
        comm.is_device = lambda buf: gd.backend.device_of(buf) == "cuda"  # the default rule
        return comm.allreduce_mean(rank_tree(comm.rank, cupy)), comm.ops.calls

    want = naive_mean([rank_tree(r) for r in range(2)])
    for mean, calls in run_ranks(2, nccl_fn, make=_nccl):
        assert len(calls) == 5 and gd.backend.device_of(mean["scale"]) == "cuda"
        for path, leaf in gd.tree.flatten_with_paths(mean):
            np.testing.assert_allclose(host(leaf), want[path], rtol=1e-6)


# ----------------------------------------------------------------------------- optimizer
def test_average_gradients_averages_before_the_update_and_keeps_the_state():
    opt = optim.adam(0.1)
    params = {"w": np.zeros(3), "b": np.zeros(1)}

    def fn(comm):
        wrapped = average_gradients(opt, comm)
        state = wrapped.init(params)
        grads = {"w": np.full(3, comm.rank + 1.0), "b": np.full(1, 2.0 * comm.rank)}
        return wrapped.update(grads, state, params), state

    mean = {"w": np.full(3, 1.5), "b": np.full(1, 1.0)}
    want, _ = opt.update(mean, opt.init(params), params)
    for (updates, _new_state), state in run_ranks(2, fn):
        assert type(state) is type(opt.init(params))  # the inner optimizer's own state
        for k in params:
            np.testing.assert_allclose(updates[k], want[k], rtol=1e-12)
    assert average_gradients(opt, SingleProcess()) is opt


def test_allreduce_gradients_in_a_chain():
    def fn(comm):
        opt = optim.chain(allreduce_gradients(comm), optim.sgd(1.0))
        p = {"w": np.zeros(2)}
        return opt.update({"w": np.array([comm.rank, 2.0 * comm.rank])}, opt.init(p), p)[0]

    for updates in run_ranks(2, fn):
        assert updates["w"].tolist() == [-0.5, -1.0]


# ----------------------------------------------------------------------------- NCCL setup
def _fake_cuda(monkeypatch, gpus: int, used: list):
    from types import SimpleNamespace

    from gpudl.distributed import nccl as nccl_mod

    class Device:
        def __init__(self, i):
            self.i = i

        def use(self):
            used.append(self.i)

    cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(
        getDeviceCount=lambda: gpus), Device=Device))
    made = []
    fake = SimpleNamespace(**vars(FAKE_NCCL), get_unique_id=lambda: ("uid", 42),
                           NcclCommunicator=lambda size, uid, rank: made.append((size, uid, rank)))
    monkeypatch.setattr(nccl_mod, "nccl_module", lambda: fake)
    monkeypatch.setattr(nccl_mod.backend, "xp_for", lambda name: cupy)
    return made


def test_nccl_setup_takes_the_local_gpu_and_shares_rank0s_unique_id(monkeypatch):
    used = []
    made = _fake_cuda(monkeypatch, gpus=2, used=used)
    comms = run_ranks(2, lambda c: NCCLCommunicator.create(c))
    assert sorted(used) == [0, 1] and sorted(made) == [(2, ("uid", 42), 0), (2, ("uid", 42), 1)]
    assert [c.backend for c in comms] == ["nccl", "nccl"]


def test_nccl_refuses_two_ranks_on_one_gpu(monkeypatch):
    _fake_cuda(monkeypatch, gpus=1, used=[])
    for err in run_ranks(2, lambda c: NCCLCommunicator.create(c), return_exceptions=True):
        assert isinstance(err, gd.distributed.DistributedError)
        assert "2 ranks on 1 GPU(s)" in str(err) and "backend='mpi'" in str(err)
