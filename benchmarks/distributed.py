"""Data-parallel benchmark: weak scaling, allreduce bandwidth, communication share.

    python benchmarks/distributed.py [--ranks 1,2] [--check-ranks 4] [--quick] [--out FILE]
    python benchmarks/distributed.py --gpu [--out FILE]      # on a GPU machine (NCCL)

CPU (the default): for LeNet-5 and ResNet-20 it times the training step ``gd.fit`` runs
(:func:`gpudl.train.step.supervised_step` with the gradients averaged over the ranks,
:func:`gpudl.distributed.average_gradients`) at the same per-rank batch ``b`` on N = 1,
2 ranks (``gpudl launch -n N``), and reports

* step time (the median over timed steps of the slowest rank), throughput ``N*b / T``;
* weak-scaling efficiency ``T(1, b) / T(N, b)`` (1.0: N ranks do N times the work in the
  same time);
* the communication share of a step: the time of the gradient allreduce alone (same
  tree, same communicator; 5 back to back per sample) over the step time;
* allreduce bus bandwidth by message size (float32, 4 KiB .. 16 MiB, 20 or 5 back to
  back per sample): ``algbw = bytes / t`` and ``busbw = algbw * 2 (N-1) / N``, the
  convention of nccl-tests;
* each rank count launched ``--repeat`` times (alternating 1, 2, 1, 2, ...), the medians
  reported;
* with ``--check-ranks 4``: a 4-rank run (oversubscribed on a 2-core machine) for
  correctness only: the weights identical on every rank, no timing reported.

Every rank runs one BLAS/OpenMP thread (``OMP_NUM_THREADS=1`` for every N), so N = 1 and
N = 2 compare one core against two: that is weak scaling per core. The JSON holds the
machine (CPU, cores, MPI library, BLAS) and the date. On a shared machine the figures
move with the other load: they are indicative.

GPU (``--gpu``): a 1-rank NCCL smoke test (``init("nccl")`` under a singleton MPI, a
packed allreduce checked against its input) and the step overhead of the distributed
path (packing + NCCL allreduce of the gradients, timed against the plain step) for the
two models. It needs the ``nccl13``/``nccl12`` extra and a GPU; elsewhere it records why
it did not run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # gpudl from the checkout

MODELS = {"lenet5": {"batch": 32, "steps": 12}, "resnet20": {"batch": 16, "steps": 5}}
QUICK = {"lenet5": {"batch": 8, "steps": 3}, "resnet20": {"batch": 4, "steps": 2}}
SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20]  # allreduce message bytes


# ----------------------------------------------------------------------------- rank side
def _step(model_name: str, batch: int, comm):
    """``fit``'s step for ``model_name`` with the gradients averaged over ``comm``."""
    import gpudl as gd
    from gpudl import models, optim
    from gpudl.train.loop import resolve_loss
    from gpudl.train.step import StepRunner, run_keys, supervised_step

    shape = models.IMAGE_CLASSIFIERS[model_name]
    rng = np.random.default_rng(comm.rank)  # each rank its own shard
    x = gd.asarray(rng.random((batch, *shape), dtype=np.float32))
    y = gd.asarray(rng.integers(0, 10, batch))
    model = models.get_model(model_name)
    init_key, _, step_key = run_keys(gd.random.key(0))
    params, state = model.init(init_key, x)
    params = comm.broadcast(params)
    opt = gd.distributed.average_gradients(optim.sgd(0.01, momentum=0.9), comm)
    step = supervised_step(model, resolve_loss("cross_entropy"), opt, params)
    runner = StepRunner(step, params, state, step.optimizer.init(params),
                        gd.random.fold_in(step_key, comm.rank))
    grads = gd.tree.tree_map(lambda p: p * 0 + 1, params)  # the allreduce's tree
    return runner, (x, y), grads


def _timed(fn, n: int, comm, inner: int = 1) -> list[float]:
    """``n`` samples, each the mean time of ``inner`` back-to-back calls started together
    (a barrier first): ``inner > 1`` spreads the ranks' skew leaving the barrier, which on
    a loaded machine is larger than a small message's own time."""
    import gpudl as gd

    out = []
    for _ in range(n):
        comm.barrier()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        gd.synchronize()
        out.append((time.perf_counter() - t0) / inner)
    return out


def _packed_allreduce(comm, tree):
    """The distributed path's work on ``tree`` even with one rank (no size-1 shortcut):
    pack, reduce in buckets, divide, unpack."""
    from gpudl.distributed.base import Layout
    from gpudl.tree import tree_flatten

    layout = Layout.of(tree)
    leaves = tree_flatten(tree)[0]
    buffers = layout.pack(leaves)
    comm._reduce_buffers(buffers)
    for buf in buffers:
        buf /= comm.size
    return layout.unpack(buffers, leaves)


def rank_main(args) -> None:
    import gpudl as gd

    comm = gd.distributed.init()
    cfg = QUICK if args.quick else MODELS
    result = {"ranks": comm.size, "backend": comm.backend, "models": {}, "allreduce": []}
    for name, c in cfg.items():
        runner, (x, y), grads = _step(name, c["batch"], comm)
        step = functools.partial(runner.train_step, x, y)
        _timed(step, 2, comm)  # warm-up (first call included)
        steps = _timed(step, c["steps"], comm)
        reduce = _timed(functools.partial(comm.allreduce_mean, grads), c["steps"], comm, 5)
        leaves = [np.asarray(gd.to_numpy(v)) for _, v in gd.tree.flatten_with_paths(runner.params)]
        digest = hashlib.sha256(b"".join(v.tobytes() for v in leaves)).hexdigest()
        per_rank = comm.allgather_object({"step": statistics.median(steps),
                                          "allreduce": statistics.median(reduce),
                                          "digest": digest})
        n_params = int(sum(v.size for v in leaves))
        result["models"][name] = {
            "batch_per_rank": c["batch"], "timed_steps": c["steps"], "params": n_params,
            "step_s": max(r["step"] for r in per_rank),  # the slowest rank sets the pace
            "allreduce_s": max(r["allreduce"] for r in per_rank),
            "weights_identical_on_all_ranks": len({r["digest"] for r in per_rank}) == 1}
    if comm.size > 1 and not args.quick:
        for nbytes in SIZES:
            buf = {"x": np.ones(nbytes // 4, np.float32)}
            inner = 20 if nbytes <= 1 << 20 else 5
            times = _timed(functools.partial(comm.allreduce_sum, buf), 5, comm, inner)
            t = max(comm.allgather_object(statistics.median(times)))
            algbw = nbytes / t
            result["allreduce"].append({"bytes": nbytes, "time_s": t, "algbw_GBps": algbw / 1e9,
                                        "busbw_GBps": algbw * 2 * (comm.size - 1) / comm.size / 1e9})
    if comm.rank == 0:
        Path(args.rank_out).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- driver side
def machine() -> dict:
    import gpudl as gd
    from gpudl.bench.device_info import machine_info

    info = machine_info()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         None)
    except OSError:
        model = None
    # in a child: MPI_Init in the driver would leave its singleton's state to the launches
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; "
                            "print(MPI.Get_library_version().splitlines()[0])"],
                           capture_output=True, text=True, timeout=60)
    mpi = " ".join(probe.stdout.split()) if probe.returncode == 0 else \
        f"unavailable ({probe.stderr.strip().splitlines()[-1:]})"
    return {**info, "cpu_model": model, "load_average_at_start": list(os.getloadavg()),
            "mpi": mpi, "gpudl_version": gd.__version__, "host": platform.node(),
            "note": "rank threads: OMP_NUM_THREADS=1 for every N; shared machine: indicative"}


def run_ranks(n: int, args, timeout: float) -> dict:
    out = Path(args.workdir) / f"ranks{n}.json"
    cmd = [sys.executable, "-m", "gpudl.cli", "launch", "-n", str(n), __file__, "--rank-main",
           "--rank-out", str(out)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "GPUDL_DEVICE": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{n}-rank run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _median_run(runs: list[dict]) -> dict:
    """One run's figures, each the median over the repeated runs (a shared machine's load
    moves single runs a lot)."""
    out = json.loads(json.dumps(runs[0]))
    for name, m in out["models"].items():
        for k in ("step_s", "allreduce_s"):
            m[k] = statistics.median(r["models"][name][k] for r in runs)
        m["weights_identical_on_all_ranks"] = all(
            r["models"][name]["weights_identical_on_all_ranks"] for r in runs)
    for i, row in enumerate(out["allreduce"]):
        t = statistics.median(r["allreduce"][i]["time_s"] for r in runs)
        row.update(time_s=t, algbw_GBps=row["bytes"] / t / 1e9,
                   busbw_GBps=row["bytes"] / t * 2 * (out["ranks"] - 1) / out["ranks"] / 1e9)
    out["repeats"] = len(runs)
    return out


def cpu_report(args) -> dict:
    repeated: dict[int, list] = {n: [] for n in args.ranks}
    for _ in range(args.repeat):  # alternate the rank counts: the load drifts for both
        for n in args.ranks:
            repeated[n].append(run_ranks(n, args, timeout=args.timeout))
    runs = {n: _median_run(r) for n, r in repeated.items()}
    base = runs[min(runs)]
    rows = []
    for name in (QUICK if args.quick else MODELS):
        t1 = base["models"][name]["step_s"]
        for n, r in runs.items():
            m = r["models"][name]
            rows.append({"model": name, "ranks": n, "batch_per_rank": m["batch_per_rank"],
                         "step_s": m["step_s"], "samples_per_s": n * m["batch_per_rank"] / m["step_s"],
                         "weak_scaling_efficiency": t1 / m["step_s"],
                         "allreduce_s": m["allreduce_s"] if n > 1 else None,
                         "comm_share": m["allreduce_s"] / m["step_s"] if n > 1 else None,
                         "params": m["params"],
                         "weights_identical_on_all_ranks": m["weights_identical_on_all_ranks"]})
    checks = []
    for n in args.check_ranks:  # oversubscribed: correctness only, its times are not reported
        r = run_ranks(n, args, timeout=args.timeout)
        checks.append({"ranks": n, "weights_identical_on_all_ranks": {
            k: v["weights_identical_on_all_ranks"] for k, v in r["models"].items()}})
    bw = [dict(row, ranks=n) for n, r in runs.items() for row in r["allreduce"]]
    return {"scaling": rows, "allreduce_bandwidth": bw, "correctness_runs": checks,
            "repeats": args.repeat}


def gpu_report() -> dict:
    """1-rank NCCL smoke test and the distributed path's step overhead (GPU machines)."""
    import gpudl as gd

    usable, reason = gd.backend.probe_cuda()
    if not usable:
        return {"status": "not run", "reason": f"no usable GPU: {reason}"}
    try:
        gd.set_device("cuda")
        comm = gd.distributed.init("nccl")
    except Exception as exc:  # NCCL or MPI missing: say why
        return {"status": "not run", "reason": f"{type(exc).__name__}: {exc}"}
    cupy = gd.backend.xp_for("cuda")
    tree = {"w": cupy.arange(1000, dtype=cupy.float32), "v": cupy.ones(7, cupy.float64)}
    back = _packed_allreduce(comm, tree)
    smoke = bool(cupy.array_equal(back["w"], tree["w"]) and cupy.array_equal(back["v"], tree["v"]))
    rows = []
    for name, c in MODELS.items():
        runner, (x, y), grads = _step(name, c["batch"], comm)
        plain, reduce = (functools.partial(runner.train_step, x, y),
                         functools.partial(_packed_allreduce, comm, grads))
        _timed(plain, 3, comm)
        step = statistics.median(_timed(plain, 20, comm))
        _timed(reduce, 3, comm)
        path = statistics.median(_timed(reduce, 20, comm))
        rows.append({"model": name, "batch": c["batch"], "step_s": step,
                     "distributed_path_s": path, "overhead_share": path / step})
    return {"status": "ok", "device": reason, "nccl_smoke_ok": smoke, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2", help="rank counts timed (default 1,2)")
    p.add_argument("--check-ranks", default="4", help="rank counts run for correctness only")
    p.add_argument("--quick", action="store_true", help="tiny batches, few steps: a smoke run")
    p.add_argument("--repeat", type=int, default=3,
                   help="launches per rank count, alternating; medians reported (default 3)")
    p.add_argument("--gpu", action="store_true", help="NCCL smoke test and step overhead")
    p.add_argument("--out", default=None, help="write the report as JSON")
    p.add_argument("--timeout", type=float, default=900, help="seconds per launch")
    p.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_main:
        rank_main(args)
        return 0
    args.ranks = [int(n) for n in args.ranks.split(",") if n]
    args.check_ranks = [int(n) for n in args.check_ranks.split(",") if n]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or tmp
        report = {"date": _dt.date.today().isoformat(), "machine": machine(),
                  "gpu": gpu_report() if args.gpu else {"status": "not run",
                                                         "reason": "no --gpu"}}
        if not args.gpu:
            report.update(cpu_report(args))
        report["machine"]["load_average_at_end"] = list(os.getloadavg())
    for row in report.get("scaling", []):
        comm = "" if row["comm_share"] is None else f"  comm {100 * row['comm_share']:.1f} %"
        print(f"{row['model']:9s} N={row['ranks']} b={row['batch_per_rank']:3d}  step "
              f"{1e3 * row['step_s']:8.1f} ms  {row['samples_per_s']:8.1f} samples/s  "
              f"efficiency {row['weak_scaling_efficiency']:.2f}{comm}")
    for row in report.get("allreduce_bandwidth", []):
        print(f"allreduce N={row['ranks']} {row['bytes'] / 1024:8.0f} KiB  "
              f"{1e3 * row['time_s']:8.3f} ms  busbw {row['busbw_GBps']:.2f} GB/s")
    for row in report.get("correctness_runs", []):
        print(f"N={row['ranks']} (oversubscribed, correctness only): weights identical "
              f"{row['weights_identical_on_all_ranks']}")
    print(f"gpu: {report['gpu']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
