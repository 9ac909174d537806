"""Real multi-process runs: ``gpudl launch -n 2`` (mpiexec + mpi4py) in a subprocess.

Each run has a hard timeout and is killed with its whole process group when it passes
it, so a hang fails the test instead of stalling the suite. What one ``train`` run of
``two_rank_worker.py`` shows (five small float64 fits, one launch):

* a 2-rank run at per-rank batch 4 matches a 1-process run at batch 8 (allclose in
  float64; the first differing leaf is named) and its logs match too;
* the weights are bit-identical on both ranks after training;
* only rank 0 prints and writes checkpoints and CSV logs;
* a checkpoint written under 2 ranks resumes under 2 ranks to exactly the weights and
  logs of the uninterrupted run; a 1-process checkpoint resumes under 2 ranks;
* 63 rows (odd): both ranks run the same steps (the permutation trimmed to 62);
* BatchNorm running statistics stay per rank by default; ``sync_state=True`` makes them
  identical.

A second run shows that an exception on one rank ends both, with its traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpudl as gd
from gpudl.train.parallel import first_different_leaf

HERE = Path(__file__).resolve().parent
WORKER = HERE / "two_rank_worker.py"
sys.path.insert(0, str(HERE))
import two_rank_worker as worker  # noqa: E402


def require_mpi() -> None:
    """Skip (with the reason) where the mpi extra is missing, except in CI (``CI=true``),
    whose setup installs it with the test extra: there a missing MPI fails."""
    why = None
    try:
        import mpi4py  # noqa: F401

        gd.distributed.find_mpiexec()
    except ImportError:
        why = ("needs the optional package 'mpi4py', which is not installed (make setup "
               "installs it; or pip install mpi4py mpich)")
    except gd.distributed.DistributedError as exc:
        why = f"needs mpiexec: {exc}"
    if why is not None and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the multi-process tests: {why}")
    if why is not None:
        pytest.skip(why)


def launch(n: int, *args: str, timeout: float) -> tuple[int, str, str, float]:
    """``gpudl launch -n n two_rank_worker.py args`` -> (status, stdout, stderr, seconds);
    past ``timeout`` the whole process group is killed and the test fails."""
    cmd = [sys.executable, "-m", "gpudl.cli", "launch", "-n", str(n), str(WORKER), *args]
    env = {**os.environ, "GPUDL_DEVICE": "cpu", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # mpiexec, its proxies and every rank
        out, err = proc.communicate()
        pytest.fail(f"`gpudl launch -n {n}` hung past {timeout} s (killed); stderr tail:\n"
                    f"{err[-3000:]}")
    return proc.returncode, out, err, time.perf_counter() - start


def load(out: Path, part: str, rank: int) -> tuple[dict, dict]:
    with np.load(out / f"{part}_rank{rank}.npz") as f:
        trees = {k: f[k] for k in f.files}
    return trees, json.loads((out / f"{part}_rank{rank}.json").read_text())


def params_of(trees: dict) -> dict:
    return {k.removeprefix("params/"): v for k, v in trees.items() if k.startswith("params/")}


def state_of(trees: dict) -> dict:
    return {k.removeprefix("state/"): v for k, v in trees.items() if k.startswith("state/")}


def assert_same(a: dict, b: dict, what: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    leaf = first_different_leaf(a, b, rtol=rtol, atol=atol)
    assert leaf is None, (f"{what}: first differing leaf {leaf!r}: "
                          f"{np.asarray(a.get(leaf))!r} vs {np.asarray(b.get(leaf))!r}")


def assert_logs_close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: logs {sorted(a)} vs {sorted(b)}"
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{what}: log {name!r}")


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    require_mpi()
    out = tmp_path_factory.mktemp("two_ranks")
    # a 1-process checkpoint after 2 of 3 epochs at batch 8, for the ranks to resume
    worker.fit(2, 8, callbacks=[gd.train.ModelCheckpoint(out / "one.npz", best_only=False)],
               distributed=None)
    status, stdout, stderr, _ = launch(2, "train", str(out), timeout=180)
    assert status == 0, f"the 2-rank run failed ({status}); stderr tail:\n{stderr[-3000:]}"
    return out, stdout


def test_two_ranks_at_half_batch_match_one_process_and_agree_bitwise(train_run):
    out, stdout = train_run
    (t0, h0), (t1, h1) = load(out, "a", 0), load(out, "a", 1)
    assert_same(params_of(t0), params_of(t1), "params of rank 0 vs rank 1 (bitwise)")
    assert h0 == h1  # every rank logs every rank's examples: the same numbers
    ref = worker.fit(3, 8, distributed=None)  # one process, batch 8 = 2 ranks x 4
    ref_params = dict(gd.tree.flatten_with_paths(ref.params))
    assert_same(params_of(t0), ref_params, "2 ranks x batch 4 vs 1 process x batch 8",
                rtol=1e-9, atol=1e-12)
    assert_logs_close(h0["history"], ref.history, "2 ranks vs 1 process")
    assert h0["step"] == 3 * 8  # 32 rows per rank, batches of 4
    # only rank 0 printed: each fit's last epoch line once
    assert stdout.count("epoch 3/3:") == 3, stdout  # the first run and the two resumed
    assert (out / "a.csv").read_text().count("\n") == 4  # header + 3 epochs, written once


def test_checkpoint_under_two_ranks_resumes_exactly(train_run):
    out, _ = train_run
    for rank in (0, 1):
        (ta, ha), (tr, hr) = load(out, "a", rank), load(out, "resumed", rank)
        assert_same(params_of(ta), params_of(tr), f"rank {rank}: resumed vs uninterrupted")
        assert ha == hr
    # a 1-process checkpoint (batch 8) resumed on 2 ranks (batch 4): the 1-process run
    ref = dict(gd.tree.flatten_with_paths(worker.fit(3, 8, distributed=None).params))
    (t0, _), (t1, _) = load(out, "from_one", 0), load(out, "from_one", 1)
    assert_same(params_of(t0), params_of(t1), "resumed from 1 process: rank 0 vs rank 1")
    assert_same(params_of(t0), ref, "1 process x 2 epochs, then 2 ranks x 1 epoch, vs 1 "
                "process x 3 epochs", rtol=1e-9, atol=1e-12)
    saved = gd.train.load_checkpoint(out / "a-2.npz")
    assert saved["epoch"] == 2 and saved["config"]["ranks"] == 2
    assert_same(dict(gd.tree.flatten_with_paths(saved["params"])), params_of(load(out, "a", 0)[0]),
                "the last checkpoint vs the trained params")
    assert (out / "b.csv").read_text().count("\n") == 4  # continued, not duplicated


def test_uneven_rows_and_batchnorm_statistics(train_run):
    out, _ = train_run
    (o0, h0), (o1, h1) = load(out, "odd", 0), load(out, "odd", 1)
    assert h0["step"] == h1["step"] == 2 * 8  # 63 rows -> 62 -> 31 per rank -> 8 batches
    assert_same(params_of(o0), params_of(o1), "odd rows: rank 0 vs rank 1")
    (b0, _), (b1, _) = load(out, "bn", 0), load(out, "bn", 1)
    assert_same(params_of(b0), params_of(b1), "BatchNorm model: params across ranks")
    assert first_different_leaf(state_of(b0), state_of(b1)) == "1.running_mean"  # per rank
    (s0, _), (s1, _) = load(out, "bn_sync", 0), load(out, "bn_sync", 1)
    assert_same(state_of(s0), state_of(s1), "sync_state=True: BatchNorm state across ranks")


def test_an_exception_on_one_rank_ends_every_rank(tmp_path):
    require_mpi()
    status, stdout, stderr, seconds = launch(2, "raise", str(tmp_path), timeout=90)
    assert status != 0
    assert "Traceback" in stderr and "rank 1 fails in its third loss_fn call" in stderr
    assert "finished, which it must not" not in stdout  # rank 0 did not go on training


@pytest.mark.slow
def test_four_ranks_oversubscribed_match_one_process(tmp_path):
    require_mpi()
    status, _, stderr, _ = launch(4, "match", str(tmp_path), timeout=300)
    assert status == 0, stderr[-3000:]
    ref = dict(gd.tree.flatten_with_paths(worker.fit(3, 8, distributed=None).params))
    for rank in range(4):
        assert_same(params_of(load(tmp_path, "a", rank)[0]), ref,
                    f"4 ranks x batch 2, rank {rank}, vs 1 process x batch 8",
                    rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_the_distributed_benchmark_writes_its_report(tmp_path):
    require_mpi()
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(HERE.parents[1] / "benchmarks" / "distributed.py"),
                           "--quick", "--repeat", "1", "--check-ranks", "", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {r["ranks"] for r in report["scaling"]} == {1, 2}
    assert all(r["weights_identical_on_all_ranks"] and r["step_s"] > 0 for r in report["scaling"])
    assert report["machine"]["mpi"] and report["gpu"]["status"] == "not run"
