"""``fit``'s data-parallel pieces in one process: shards, merged logs, argument checks,
rank-0-only files, ``init`` and the launch command. Fake ranks are threads
(``fake_world``); the real multi-process runs are in ``test_two_ranks.py``."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from fake_world import run_ranks

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader
from gpudl.distributed import DistributedError, launch_command, world
from gpudl.distributed import launcher as launch_mod
from gpudl.errors import ConfigError, EmptyDataError, TrainingConfigError
from gpudl.train import CSVLogger
from gpudl.train.metric_state import MetricTracker, make_metric
from gpudl.train.parallel import (
    ShardedLoader,
    average_float_leaves,
    on_rank0,
    resolve,
    shard,
)
from gpudl.train.trainer import Trainer


# ----------------------------------------------------------------------------- shards
@pytest.mark.parametrize("n, size", [(10, 3), (12, 4), (7, 2)])
def test_training_shards_split_the_same_trimmed_permutation(n, size):
    loader = DataLoader((np.arange(n),), batch_size=2, shuffle=True, key=5)
    for epoch in (0, 1):
        full = loader.order(epoch)[: n // size * size]
        shards = [ShardedLoader(loader, r, size).order(epoch) for r in range(size)]
        assert sorted(np.concatenate(shards).tolist()) == sorted(full.tolist())
        assert {len(s) for s in shards} == {n // size}  # the same steps on every rank
        # step b of all ranks together = rows [b*B*size, (b+1)*B*size) of the permutation
        together = np.stack(shards, axis=1).ravel()
        assert together.tolist() == full.tolist()
    assert {len(ShardedLoader(loader, r, size)) for r in range(size)} == {-(-(n // size) // 2)}


def test_validation_shards_count_every_row_once_even_when_a_shard_is_empty():
    loader = DataLoader((np.arange(3.0),), batch_size=2)
    rows = [[b[0].tolist() for b in ShardedLoader(loader, r, 4, trim=False)] for r in range(4)]
    assert rows == [[[0.0]], [[1.0]], [[2.0]], []]


def test_transforms_get_a_key_per_rank_and_batch():
    seen = []
    loader = DataLoader((np.arange(4.0),), batch_size=1,
                        transform=lambda batch, key: seen.append(key.tolist()) or batch)
    for r in range(2):
        list(ShardedLoader(loader, r, 2))
    assert len(seen) == 4 and len({tuple(k) for k in seen}) == 4


def test_fewer_rows_than_ranks_is_a_named_error():
    batches = gd.train.batches.make_batches((np.zeros((3, 2)), np.zeros(3)), 2, True, None, "cpu")
    with pytest.raises(EmptyDataError, match="3 rows, fewer than the 4 ranks"):
        shard(batches, SimpleNamespace(rank=0, size=4), True, "the training data")


# ----------------------------------------------------------------------------- merged logs
@pytest.mark.parametrize("names, task", [(["accuracy", "f1", "top2"], "classes"),
                                          (["r2", "mse", "rmse", "mae"], "regression")])
def test_logs_of_sharded_passes_equal_the_logs_of_one_pass(names, task):
    rng = np.random.default_rng(0)
    if task == "classes":
        out, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    else:
        out, y = rng.normal(size=(30, 1)), rng.normal(size=(30, 1)) + 2.0
    loss = rng.random(30)

    def feed(rows):
        tracker = MetricTracker([make_metric(m) for m in names], loss=True)
        for i in range(0, len(rows), 4):  # batches of 4 rows
            sel = rows[i:i + 4]
            tracker.update(out[sel], y[sel], len(sel), loss=float(loss[sel].mean()))
        return tracker

    whole = feed(np.arange(30)).read()
    shards = run_ranks(3, lambda comm: feed(np.arange(comm.rank, 30, 3)).read(comm))
    for logs in shards:
        assert logs.keys() == whole.keys()
        for name in whole:
            assert logs[name] == pytest.approx(whole[name], rel=1e-12), name
    local = feed(np.arange(0, 30, 3)).read()  # without comm: this rank's own
    assert local["loss"] != pytest.approx(whole["loss"])


def test_merged_logs_with_one_empty_shard_and_binary_outputs():
    scores, y = np.array([[0.2], [0.9], [0.7]]), np.array([0, 1, 0])

    def fn(comm):
        t = MetricTracker([make_metric("accuracy")], loss=False)
        if comm.rank < 2:  # rank 2 saw no validation rows
            rows = [0, 2] if comm.rank == 0 else [1]
            t.update(scores[rows], y[rows], len(rows))
        return t.read(comm)["accuracy"]

    assert run_ranks(3, fn) == [pytest.approx(2 / 3)] * 3


# ----------------------------------------------------------------------------- collectives
def test_on_rank0_hands_rank0s_result_or_exception_to_every_rank():
    assert run_ranks(2, lambda comm: on_rank0(comm, lambda: 40 + comm.rank)) == [40, 40]

    def fail(comm):
        def read():
            raise gd.CheckpointError("no checkpoint at x.npz")
        return on_rank0(comm, read)

    errors = run_ranks(2, fail, return_exceptions=True)
    assert all(isinstance(e, gd.CheckpointError) and "x.npz" in str(e) for e in errors)


def test_average_float_leaves_leaves_integer_counters_alone():
    def fn(comm):
        state = {"running_mean": np.full(2, float(comm.rank)), "num_batches_tracked": np.int64(5),
                 "n": np.array(3 + comm.rank)}
        return average_float_leaves(comm, state)

    for s in run_ranks(2, fn):
        assert s["running_mean"].tolist() == [0.5, 0.5] and s["num_batches_tracked"] == 5
    assert [int(s["n"]) for s in run_ranks(2, fn)] == [3, 4]


# ----------------------------------------------------------------------------- fit arguments
def _fit(**kw):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 3)), rng.integers(0, 2, 24)
    return gd.fit(nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(2)]), (x, y),
                  loss="cross_entropy", optimizer=optim.sgd(0.1), epochs=2, batch_size=8,
                  verbose=0, **kw)


def test_one_process_auto_is_exactly_the_one_process_run():
    a, b = _fit(), _fit(distributed=None)
    for (pa, x), (pb, y) in zip(gd.tree.flatten_with_paths(a.params),
                                gd.tree.flatten_with_paths(b.params)):
        assert pa == pb and np.array_equal(x, y)
    assert resolve("auto") is None and resolve(None) is None and resolve(False) is None
    assert resolve(gd.distributed.SingleProcess()) is None


@pytest.mark.parametrize("kw, match", [
    ({"distributed": "gloo"}, "distributed must be 'auto', 'mpi', 'nccl', 'single', None"),
    ({"distributed": 2}, "distributed must be"),
    ({"sync_state": "yes"}, "sync_state must be True or False"),
])
def test_bad_distributed_arguments_are_named(kw, match):
    with pytest.raises(TrainingConfigError, match=match):
        _fit(**kw)


def test_only_rank_zero_writes_csv_logs_and_checkpoints(tmp_path):
    log = CSVLogger(tmp_path / "log.csv")
    log.set_rank(1, 2)
    log.on_epoch_end(None, 0, {"loss": 1.0})
    assert log.rows == 1 and not (tmp_path / "log.csv").exists()
    trainer = Trainer(None, None, optim.sgd(0.1), {"w": np.ones(2)}, {}, (), None, {})
    trainer.rank = 1
    trainer.save_checkpoint(str(tmp_path / "ck.npz"))
    assert not (tmp_path / "ck.npz").exists()
    trainer.rank = 0
    trainer.save_checkpoint(str(tmp_path / "ck.npz"))
    assert (tmp_path / "ck.npz").exists()


# ----------------------------------------------------------------------------- init, launch
def test_init_single_process_and_bad_backends(monkeypatch):
    for name in world.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert world.launched_size() == 1 and gd.distributed.init().backend == "single"
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert world.launched_size() == 4
    with pytest.raises(ConfigError, match="backend must be one of 'auto', 'single'"):
        gd.distributed.init("horovod")


def test_launch_command_and_thread_shares(monkeypatch):
    cmd = launch_command(3, ["-m", "pkg.train", "--lr", "0.1"], mpiexec="/x/mpiexec",
                         mpi_args=["-ppn", "2"], python="/venv/bin/python")
    assert cmd == ["/x/mpiexec", "-n", "3", "-ppn", "2", "/venv/bin/python", "-m", "mpi4py",
                   "-m", "pkg.train", "--lr", "0.1"]
    with pytest.raises(DistributedError, match="-n must be a positive number"):
        launch_command(0, ["t.py"], mpiexec="m")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    env = launch_mod.rank_environment(2)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch_mod.rank_environment(2)["OMP_NUM_THREADS"] == "3"  # the user's choice


def test_find_mpiexec_prefers_this_pythons_bin_then_path(tmp_path, monkeypatch):
    venv_bin, other = tmp_path / "venv" / "bin", tmp_path / "elsewhere"
    venv_bin.mkdir(parents=True)
    other.mkdir()
    for folder in (venv_bin, other):
        (folder / "mpiexec").write_text("#!/bin/sh\n")
        (folder / "mpiexec").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setenv("PATH", str(other))
    assert launch_mod.find_mpiexec() == str(venv_bin / "mpiexec")
    (venv_bin / "mpiexec").unlink()
    assert launch_mod.find_mpiexec() == str(other / "mpiexec")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DistributedError, match=r"no mpiexec .* `pip install 'gpudl\[mpi\]'`"):
        launch_mod.find_mpiexec()
