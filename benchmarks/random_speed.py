"""Benchmark: random numbers per second, gpudl.random against NumPy, CuPy and torch, and the
time VGG-16 takes to initialise (issue 12: it was the slowest part of building the model).

For ``uniform`` and ``normal`` in float32 and float64 at n = 1e5, 1e6 and 1e7 (``--quick``:
1e5, 1e6), one line per (device, distribution, dtype, n) shows side by side, in millions of
numbers per second (n / median time):

* ``gpudl``: ``gd.random.uniform/normal(key, (n,), dtype)``: on the CPU the chunked NumPy
  body (gpudl/random/_cpu.py, _cpu_normal.py), on the GPU one launch of kernels/philox.cu;
* ``reference``: the readable vectorised specification (gpudl/random/_philox.py), what
  gpudl ran before the fast bodies (CPU, n <= 1e6 unless ``--full-reference``: it is slow);
* ``numpy``: ``numpy.random.Generator(Philox)`` (Philox4x64, ziggurat normals; a different
  stream, no CPU/GPU reproducibility), CPU only;
* ``cupy``: ``cupy.random.Generator(Philox4x3210)``, GPU only, when CuPy has it;
* ``torch``: ``torch.rand`` / ``torch.randn`` on the same device, when torch imports.

The ``x`` columns are ratios of numbers/s: ``gpudl / other`` (above 1: gpudl is faster);
``gpudl / reference`` is the speed-up over the readable specification. On the CPU the
``x torch`` column is the median of per-pair ratios (``common.paired_times``: gpudl and
torch timed back to back, alternating order), steadier on a shared machine than the ratio
of two medians. Everything runs on one thread: the script sets ``OMP_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` to 1 unless they are set, and torch's
``set_num_threads(1)``. CPU timings use perf_counter, GPU timings CUDA events, median after
warm-up (gpudl.bench.timing.time_fn); the first call (kernel compile) is left out.

Then (CPU, skipped with ``--no-init``) the VGG-16 recipe on a (1, 3, 224, 224) float32
example: ``init`` (138M parameters drawn, plus the forward passes that infer each layer's
input size), ``init_shapes`` (the same trees as ShapeDtype leaves, nothing drawn) and
``summary_dict``; median wall time and median CPU time of this thread (``time.thread_time``,
which a busy machine inflates less) over ``--init-repeats`` runs.

``--tiny`` (``report["tiny"]``): n = 1000 and 4099, twice each, and a 1/16-width VGG-11 on
32x32, a code-path check for the CPU kernel emulator's tests; its figures mean nothing.

Usage: ``python benchmarks/random_speed.py [--quick] [--tiny] [--full-reference] [--no-init]
[--init-repeats K] [--json out.json]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads its BLAS: one thread, as torch below

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl.random import _philox as spec  # noqa: E402

DISTS = ("uniform", "normal")
DTYPES = (np.float32, np.float64)
IMPLS = ("gpudl", "reference", "numpy", "cupy", "torch")
SIZES = (10**5, 10**6, 10**7)
TINY_SIZES = (1000, 4099)  # 4099: not a multiple of Philox's 4 outputs per counter


def _gpudl(dist: str, n: int, dt, device: str) -> Callable[[], object]:
    k = gd.random.key(0)
    fn = gd.random.uniform if dist == "uniform" else gd.random.normal
    return lambda: fn(k, (n,), dt, device=device)


def _reference(dist: str, n: int, dt) -> Callable[[], object]:
    words, dt = (0, 0), np.dtype(dt)
    if dist == "uniform":
        return lambda: spec.unit_reference(words, n, dt, np)
    return lambda: spec.cast(spec.standard_normal64_reference(words, n, np), dt)


def _numpy(dist: str, n: int, dt) -> Callable[[], object]:
    g = np.random.Generator(np.random.Philox(0))
    fn = g.random if dist == "uniform" else g.standard_normal
    return lambda: fn(n, dtype=dt)


def _cupy(dist: str, n: int, dt) -> Callable[[], object] | None:
    cupy = gd.backend.xp_for("cuda")
    try:
        g = cupy.random.Generator(cupy.random.Philox4x3210(0))
    except Exception:  # older CuPy without the Generator API
        return None
    fn = g.random if dist == "uniform" else g.standard_normal
    return lambda: fn(n, dtype=dt)


def _torch(dist: str, n: int, dt, device: str) -> Callable[[], object] | None:
    if common.torch_status(device == "cuda") is not None:
        return None
    import torch

    torch.set_num_threads(1)
    tdt = torch.float32 if dt == np.float32 else torch.float64
    fn = torch.rand if dist == "uniform" else torch.randn
    return lambda: fn(n, dtype=tdt, device=device)


def _time(fn: Callable[[], object], device: str, n: int, repeats: int, clock: str) -> float:
    """Numbers per second from the median time."""
    stats = common.time_row(fn, device, warmup=2, repeats=repeats, clock=clock)
    return n / stats["median_s"]


def run(report: dict) -> list[dict]:
    """One row per (device, dist, dtype, n) with numbers/s per impl (None where not run)."""
    tiny = bool(report.get("tiny"))
    sizes = TINY_SIZES if tiny else (10**5, 10**6) if report.get("quick") else SIZES
    usable, reason, gpu_name = common.cuda_device()
    report.setdefault("notes", [])
    if not usable:
        report["notes"].append(f"GPU rows unavailable: {reason}")
    torch_why = common.torch_status(False)
    if torch_why:
        report["notes"].append(f"torch rows skipped: {torch_why}")
    elif usable and common.torch_status(True):
        report["notes"].append(f"torch cuda rows skipped: {common.torch_status(True)}")
    rows = []
    cpu_name = str(common.machine_or_error().get("cpu") or "cpu")
    for device in ("cpu", "cuda") if usable else ("cpu",):
        name = cpu_name if device == "cpu" else gpu_name
        for dist in DISTS:
            for dt in DTYPES:
                for n in sizes:
                    repeats = 5 if device == "cpu" and n >= 10**7 else 9
                    repeats = common.TINY_REPEATS if tiny else repeats
                    row = {"device": device, "device_name": str(name), "dist": dist,
                           "dtype": np.dtype(dt).name, "n": n}
                    impls: dict[str, tuple[Callable | None, str]] = {
                        "gpudl": (_gpudl(dist, n, dt, device), "events"),
                        "torch": (_torch(dist, n, dt, device), "torch"),
                    }
                    if device == "cpu":
                        impls["numpy"] = (_numpy(dist, n, dt), "events")
                        if n <= 10**6 or report.get("full_reference"):
                            impls["reference"] = (_reference(dist, n, dt), "events")
                    else:
                        impls["cupy"] = (_cupy(dist, n, dt), "events")
                    for impl, (fn, clock) in impls.items():
                        rate = None
                        if fn is not None:
                            rate = _time(fn, device, n, min(3, repeats) if impl == "reference"
                                         else repeats, clock)
                        row[f"{impl}_per_s"] = rate
                    torch_fn = impls["torch"][0]
                    if device == "cpu" and torch_fn is not None:  # paired: gpudl time / torch time
                        paired = common.paired_times(impls["gpudl"][0], torch_fn,
                                                     pairs=2 if tiny else repeats)
                        row["torch_paired_ratio"] = 1.0 / paired["ratio_median"]
                    rows.append(row)
                    print(_line(row), flush=True)
    return rows


def _ratio(row: dict, impl: str) -> float | None:
    if impl == "torch" and row.get("torch_paired_ratio"):
        return row["torch_paired_ratio"]
    other = row.get(f"{impl}_per_s")
    return row["gpudl_per_s"] / other if other else None


# ----------------------------------------------------------------------------- VGG-16 init
def _timed(fn: Callable[[], object], repeats: int) -> dict:
    """Median wall and thread-CPU seconds of ``repeats`` calls (after one untimed call)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
            "repeats": repeats}


def init_rows(report: dict) -> list[dict]:
    """VGG-16 (``--tiny``: a 1/16-width VGG-11 on 32x32): init, init_shapes, summary_dict."""
    from gpudl import models
    from gpudl.nn.shapes import ShapeDtype

    tiny = bool(report.get("tiny"))
    if tiny:
        name, net, shape = "vgg11/16", models.vgg11(10, width=1 / 16, hidden=32), (1, 3, 32, 32)
    else:
        name, net, shape = "vgg16", models.vgg16(), (1, 3, 224, 224)
    x = np.zeros(shape, np.float32)
    repeats = 1 if tiny else int(report.get("init_repeats", 3))
    key = gd.random.key(0)
    rows = []
    for what, fn in (("init", lambda: net.init(key, x)),
                     ("init_shapes", lambda: net.init_shapes(ShapeDtype(shape, np.float32))),
                     ("summary_dict", lambda: net.summary_dict(x))):
        row = {"model": name, "input": list(shape), "what": what, **_timed(fn, repeats)}
        print(f"cpu    {name:8s} {what:13s} wall {row['wall_s']:7.3f} s   cpu {row['cpu_s']:7.3f} s",
              flush=True)
        rows.append(row)
    return rows


def _fmt(v: float | None, spec_: str) -> str:
    width = int(spec_.split(".")[0])
    return format(v, spec_) if v is not None else format("-", f">{width}s")


HEADER = (f"{'device':6s} {'dist':7s} {'dtype':7s} {'n':>9s} {'gpudl M/s':>10s} "
          f"{'numpy':>8s} {'x numpy':>7s} {'cupy':>8s} {'x cupy':>7s} {'torch':>8s} "
          f"{'x torch':>7s} {'ref':>7s} {'x ref':>6s}")


def _line(row: dict) -> str:
    m = lambda impl: None if row.get(f"{impl}_per_s") is None else row[f"{impl}_per_s"] / 1e6  # noqa: E731
    return (f"{row['device']:6s} {row['dist']:7s} {row['dtype']:7s} {row['n']:9d} "
            f"{_fmt(m('gpudl'), '10.1f')} {_fmt(m('numpy'), '8.1f')} {_fmt(_ratio(row, 'numpy'), '7.2f')} "
            f"{_fmt(m('cupy'), '8.1f')} {_fmt(_ratio(row, 'cupy'), '7.2f')} "
            f"{_fmt(m('torch'), '8.1f')} {_fmt(_ratio(row, 'torch'), '7.2f')} "
            f"{_fmt(m('reference'), '7.1f')} {_fmt(_ratio(row, 'reference'), '6.1f')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1e5 and 1e6 only")
    parser.add_argument("--tiny", action="store_true", help=common.TINY_HELP)
    parser.add_argument("--full-reference", action="store_true",
                        help="also time the (slow) reference body at the largest n")
    parser.add_argument("--no-init", action="store_true", help="skip the VGG-16 init timings")
    parser.add_argument("--init-repeats", type=int, default=3,
                        help="timed runs of each VGG-16 init row (default 3)")
    parser.add_argument("--json", help="write the rows, notes and machine to this file")
    ns = parser.parse_args(argv)
    report: dict = {"quick": ns.quick, "tiny": ns.tiny, "full_reference": ns.full_reference,
                    "init_repeats": max(1, ns.init_repeats), "notes": []}
    print("millions of numbers per second (median), one thread; 'x other' = gpudl / other")
    print(HEADER, flush=True)
    rows = run(report)
    init = []
    if not ns.no_init:
        print("\nmodel init on the CPU, one thread (median of runs)")
        init = init_rows(report)
    for note in report["notes"]:
        print(note)
    if ns.json:
        common.write_json(ns.json, {"machine": common.machine_or_error(), "rows": rows,
                                    "init": init, "notes": report["notes"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
