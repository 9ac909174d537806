"""Benchmark: softmax cross-entropy forward+backward (reduction='mean'), float32.

GPU rows, for logits (N, C) in (256, 10), (4096, 1000), (8192, 32768):
  * ``gpudl-fused``: ``sce_forward_backward`` (loss, lse and the unit gradient in one launch)
    + the vjp's in-place scale by the upstream g: what ``gd.grad`` runs by default;
  * ``gpudl-fused-kernel``: that one launch alone (no scale pass);
  * ``gpudl-recompute``: ``sce_forward`` then ``sce_backward`` from the saved lse
    (``FUSED_REDUCED_BACKWARD = False``);
  * ``gpudl-autodiff``: ``gd.value_and_grad`` of ``F.softmax_cross_entropy`` end to end
    (label range check with its device-to-host copy, tape, vjp);
  * ``cupy-composite``: max, exp, sum, log, take_along_axis forward and the matching
    backward as CuPy ops;
  * ``torch``: ``torch.nn.functional.cross_entropy`` forward + ``autograd.grad``, when torch
    imports with CUDA.
Achieved GB/s counts one read and one write of the logits (2 * N * C * 4 bytes): the
least any fwd+bwd must move. GPU times: ``cupyx.profiler.benchmark`` (CUDA events), median
and IQR after warm-up; torch rows use torch CUDA events. On a machine without a GPU the twin
(NumPy) and torch CPU (when importable) are timed with perf_counter at the two smaller
shapes (the largest with ``--full-cpu``) and the GPU rows say why they are absent.

Usage: ``python benchmarks/kernels_cross_entropy.py [--json out.json] [--quick] [--full-cpu]``;
from a harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and
``full_cpu``; notes are appended to ``report["notes"]``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpudl as gd  # noqa: E402
from gpudl.backend import probe_cuda, xp_for  # noqa: E402
from gpudl.functional import cross_entropy as CE  # noqa: E402

SHAPES = [(256, 10), (4096, 1000), (8192, 32768)]
BENCH = "softmax_cross_entropy_fwd_bwd"


def _inputs(xp, n: int, c: int, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = xp.asarray((2.0 * rng.standard_normal((n, c))).astype(dtype))
    y = xp.asarray(rng.integers(0, c, size=n))
    return x, y


def _stats(samples) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1), "min_s": float(a.min()),
            "repeats": int(a.size)}


def _bytes(n: int, c: int, itemsize: int = 4) -> int:
    return 2 * n * c * itemsize


# ----------------------------------------------------------------------------- GPU
def _cupy_composite(x, y):
    cupy = xp_for("cuda")
    n = x.shape[0]
    m = x.max(axis=1, keepdims=True)
    e = cupy.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    lse = m + cupy.log(s)
    loss = (lse[:, 0] - cupy.take_along_axis(x, y[:, None], axis=1)[:, 0]).mean()
    grad = e / s
    grad[cupy.arange(n), y] -= 1.0
    grad *= 1.0 / n
    return loss, grad


def _gpu_fns(x, y) -> dict:
    cupy = xp_for("cuda")
    n = x.shape[0]
    g = cupy.ones((), x.dtype)

    def fused():
        loss, lse, dl = CE.cuda_forward(x, y, with_grad=True, grad_scale=1.0 / n)
        dl *= g  # the vjp's in-place scale by the upstream cotangent
        return loss.sum() / n, dl

    def fused_kernel():
        return CE.cuda_forward(x, y, with_grad=True, grad_scale=1.0 / n)

    def recompute():
        loss, lse, _ = CE.cuda_forward(x, y)
        return loss.sum() / n, CE.cuda_backward(x, y, lse, g, scale=1.0 / n)

    value_and_grad = gd.value_and_grad(lambda v: CE.softmax_cross_entropy(v, y))

    return {"gpudl-fused": fused, "gpudl-fused-kernel": fused_kernel,
            "gpudl-recompute": recompute, "gpudl-autodiff": lambda: value_and_grad(x),
            "cupy-composite": lambda: _cupy_composite(x, y)}


def _time_cupy(fn, repeats: int) -> dict:
    from cupyx.profiler import benchmark

    t0 = time.perf_counter()
    fn()
    xp_for("cuda").cuda.get_current_stream().synchronize()
    first = time.perf_counter() - t0
    result = benchmark(fn, n_repeat=repeats, n_warmup=3)
    return {"first_call_s": first, **_stats(result.gpu_times[0])}


def _time_torch_cuda(n: int, c: int, repeats: int) -> dict:
    import torch

    rng = np.random.default_rng(0)
    x = torch.tensor((2.0 * rng.standard_normal((n, c))).astype(np.float32), device="cuda",
                     requires_grad=True)
    y = torch.tensor(rng.integers(0, c, size=n), device="cuda")

    def step():
        loss = torch.nn.functional.cross_entropy(x, y)
        return torch.autograd.grad(loss, x)

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(3):
        step()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return {"first_call_s": first, **_stats(samples)}


# ----------------------------------------------------------------------------- CPU
def _time_cpu(fn, repeats: int) -> dict:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return {"first_call_s": first, **_stats(samples)}


def _cpu_fns(n: int, c: int) -> dict:
    x, y = _inputs(np, n, c)
    value_and_grad = gd.value_and_grad(lambda v: CE.softmax_cross_entropy(v, y))
    fns = {"numpy-twin": lambda: CE.twin_forward(x, y, with_grad=True, grad_scale=1.0 / n),
           "gpudl-autodiff": lambda: value_and_grad(x)}
    torch_missing = _torch_status(False)
    if torch_missing is None:
        import torch

        tx = torch.tensor(x, requires_grad=True)
        ty = torch.tensor(y)
        fns["torch"] = lambda: torch.autograd.grad(
            torch.nn.functional.cross_entropy(tx, ty), tx)
    return fns


def _torch_status(cuda: bool) -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if cuda and not torch.cuda.is_available():
        return "torch has no CUDA"
    return None


# ----------------------------------------------------------------------------- driver
def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (shape, impl)."""
    quick = bool(report.get("quick", False))
    notes = report.setdefault("notes", [])
    usable, reason = probe_cuda()
    rows: list[dict] = []
    torch_missing = _torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_cross_entropy: torch rows skipped ({torch_missing})")
    if usable:
        device_name = reason.removeprefix("CUDA GPU ")
        shapes = SHAPES[:2] if quick else SHAPES
        with gd.device("cuda"):
            for n, c in shapes:
                base = {"bench": BENCH, "device": "cuda", "device_name": device_name,
                        "dtype": "float32", "N": n, "C": c}
                repeats = 20 if n * c > 10**7 else 100
                x, y = _inputs(xp_for("cuda"), n, c)
                timed = {k: _time_cupy(f, repeats) for k, f in _gpu_fns(x, y).items()}
                if not torch_missing:
                    timed["torch"] = _time_torch_cuda(n, c, repeats)
                for impl, t in timed.items():
                    rows.append({**base, "impl": impl, **t,
                                 "gbps": _bytes(n, c) / t["median_s"] / 1e9})
                del x, y
                xp_for("cuda").get_default_memory_pool().free_all_blocks()
        return rows
    notes.append(f"kernels_cross_entropy: GPU rows unavailable ({reason}); timed the NumPy "
                 "twin on CPU")
    shapes = SHAPES if report.get("full_cpu") else SHAPES[:2]
    if quick:
        shapes = SHAPES[:1]
    if SHAPES[-1] not in shapes:
        notes.append(f"kernels_cross_entropy: CPU skips {SHAPES[-1]} (pass --full-cpu)")
    with gd.device("cpu"):
        for n, c in shapes:
            base = {"bench": BENCH, "device": "cpu", "device_name": "cpu", "dtype": "float32",
                    "N": n, "C": c}
            repeats = 3 if n * c > 10**7 else 10
            for impl, fn in _cpu_fns(n, c).items():
                t = _time_cpu(fn, repeats)
                rows.append({**base, "impl": impl, **t,
                             "gbps": _bytes(n, c) / t["median_s"] / 1e9})
    rows.append({"bench": BENCH, "device": "cuda", "status": "unavailable", "reason": reason})
    return rows


def _table(rows: list[dict]) -> str:
    lines = [f"{'device':14s} {'N':>6s} {'C':>6s} {'impl':20s} {'median ms':>10s} "
             f"{'IQR ms':>8s} {'GB/s':>8s} {'first s':>8s}"]
    for r in rows:
        if r.get("status") == "unavailable":
            lines.append(f"{r['device']:14s} unavailable: {r['reason']}")
            continue
        lines.append(f"{r['device_name'][:14]:14s} {r['N']:6d} {r['C']:6d} {r['impl']:20s} "
                     f"{r['median_s'] * 1e3:10.3f} {r['iqr_s'] * 1e3:8.3f} {r['gbps']:8.1f} "
                     f"{r['first_call_s']:8.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write rows and notes to this file")
    parser.add_argument("--quick", action="store_true", help="smaller shapes only")
    parser.add_argument("--full-cpu", action="store_true", help="also (8192, 32768) on CPU")
    ns = parser.parse_args(argv)
    report: dict = {"quick": ns.quick, "full_cpu": ns.full_cpu}
    rows = run(report)
    print(_table(rows))
    for note in report["notes"]:
        print(note)
    if ns.json:
        try:
            from gpudl.bench.device_info import machine_info

            machine = machine_info()
        except Exception as exc:  # the bench package is optional here
            machine = {"error": f"machine_info unavailable ({exc})"}
        Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json).write_text(json.dumps(
            {"machine": machine, "rows": rows, "notes": report["notes"]}, indent=1,
            default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
