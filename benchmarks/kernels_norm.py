"""Benchmark: fused batch norm and layer norm, forward and forward+backward, vs torch, float32.

Benches (``bench`` column):
  * ``batch_norm_train_fwd_bwd`` at (32, 16, 32, 32) (a CIFAR ResNet layer) and
    (128, 64, 16, 16): batch statistics, normalize + affine, then the gradients of x, gamma
    and beta for a given cotangent dy (torch: ``F.batch_norm(training=True)``, which also
    updates its running statistics, as gpudl's returns new ones);
  * ``batch_norm_eval_fwd`` at the same shapes: running statistics, forward only;
  * ``layer_norm_fwd_bwd`` at (16*64, 128): a transformer encoder's LayerNorm (batch 16,
    64 tokens, d_model 128), forward then the three gradients.

Rows (``impl``):
  * ``gpudl-kernel`` (GPU) / ``numpy-twin`` (CPU): the bodies of
    ``_normalization_kernels.py`` alone (kernels/batch_norm.cu: statistics + apply
    forward, reduce + apply backward; kernels/layer_norm.cu: one launch forward, two
    backward), with the (C,) coefficient arithmetic between them;
  * ``gpudl-autodiff``: ``F.batch_norm`` / ``F.layer_norm`` as a user calls them (fwd), or
    ``gd.vjp`` of them and the vjp call (fwd_bwd);
  * ``torch``: ``torch.nn.functional`` (forward under ``no_grad``; fwd_bwd with
    ``autograd.grad``), on CUDA tensors on a GPU (when torch has CUDA), else on the CPU.
GPU times: ``cupyx.profiler.benchmark`` (CUDA events) for gpudl, torch CUDA events for
torch; median and IQR after warm-up, the first call (NVRTC compile or cache load) apart.
Without a GPU: the CPU rows, timed with perf_counter, one thread on both sides
(``torch.set_num_threads(1)``, restored after; set ``OMP_NUM_THREADS=1`` and
``OPENBLAS_NUM_THREADS=1`` before starting for NumPy's pools). ``gpudl/torch`` is this row's
time over torch's: on the GPU the ratio of the medians; on the CPU the median of
``PAIRS`` per-pair ratios, each (gpudl, torch) pair timed back to back in alternating order
(kernels_pool.paired_ratio: steadier than a ratio of medians on a shared machine).

GB/s counts the least any implementation must move: read x and write y (fwd), plus read
x and dy and write dx (fwd_bwd). ``--tiny`` (``report["tiny"]``): tiny shapes, twice each:
the code-path check the CPU kernel emulator's tests run; its figures mean nothing.

Usage: ``python benchmarks/kernels_norm.py [--json out.json] [--quick] [--tiny]``; from a
harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and ``tiny``; notes
are appended to ``report["notes"]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402
from kernels_pool import PAIRS, paired_ratio  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl import functional as F  # noqa: E402
from gpudl.backend import xp_for  # noqa: E402
from gpudl.functional import _normalization_kernels as NK  # noqa: E402

EPS = 1e-5
# (bench, layer name, shape): batch norm on NCHW, layer norm on (rows, features)
BENCHES = [
    ("batch_norm_train_fwd_bwd", "cifar-16", (32, 16, 32, 32)),
    ("batch_norm_train_fwd_bwd", "bn-64", (128, 64, 16, 16)),
    ("batch_norm_eval_fwd", "cifar-16", (32, 16, 32, 32)),
    ("batch_norm_eval_fwd", "bn-64", (128, 64, 16, 16)),
    ("layer_norm_fwd_bwd", "encoder-d128", (16 * 64, 128)),
]
QUICK_BENCHES = [BENCHES[0], BENCHES[2], BENCHES[4]]
TINY_BENCHES = [("batch_norm_train_fwd_bwd", "tiny", (2, 2, 3, 3)),
                ("batch_norm_eval_fwd", "tiny", (2, 2, 3, 3)),
                ("layer_norm_fwd_bwd", "tiny", (2, 40))]


def _inputs(shape, bench: str) -> dict:
    """Host float32 arrays: x, dy, and the (C,) or (D,) parameters and statistics."""
    rng = np.random.default_rng(0)
    c = shape[1] if bench.startswith("batch") else shape[-1]

    def f32(a):
        return np.asarray(a, dtype=np.float32)

    return {"x": f32(rng.standard_normal(shape) * 2 + 1), "dy": f32(rng.standard_normal(shape)),
            "gamma": f32(rng.uniform(0.5, 1.5, c)), "beta": f32(rng.standard_normal(c)),
            "mean": f32(rng.standard_normal(c) * 0.1), "var": f32(rng.uniform(0.5, 1.5, c))}


def _bytes(size: int, bench: str) -> int:
    return (2 if bench.endswith("_fwd") else 5) * size * 4


# ----------------------------------------------------------------------------- gpudl
def module(a):
    return gd.get_array_module(a)


def _raw_fns(bench: str, a: dict):
    """The bodies alone: the kernels on CuPy arrays, the twins on NumPy arrays."""
    x, dy, gamma, beta = a["x"], a["dy"], a["gamma"], a["beta"]
    if bench == "layer_norm_fwd_bwd":
        zeros = module(x).zeros(x.shape[0], x.dtype)

        def ln():
            _, mean, rstd = NK.layer_norm_raw(x, gamma, beta, EPS)
            return NK.layer_norm_backward_raw(dy, x, mean, rstd, gamma, zeros, zeros)
        return ln
    n, c = x.shape[:2]
    x3, dy3 = x.reshape(n, c, -1), dy.reshape(n, c, -1)
    if bench == "batch_norm_eval_fwd":
        def bn_eval():
            _, scale, shift = NK.bn_scale_shift(a["mean"], a["var"], gamma, beta, EPS)
            return NK.batch_norm_apply_raw(x3, scale, shift)
        return bn_eval

    def bn_train():
        mean, var = NK.batch_norm_stats_raw(x3)
        invstd, scale, shift = NK.bn_scale_shift(mean, var, gamma, beta, EPS)
        NK.batch_norm_apply_raw(x3, scale, shift)
        sum_g, sum_gd = NK.batch_norm_backward_reduce_raw(dy3, x3, mean)
        k1, k2, k3 = NK.bn_backward_coefficients(invstd, gamma, sum_g, sum_gd, 0.0, 0.0,
                                                 n * x3.shape[2])
        return NK.batch_norm_backward_apply_raw(dy3, x3, mean, k1, k2, k3)
    return bn_train


def _autodiff_fn(bench: str, a: dict):
    """The public functions as a user calls them (gd.vjp and the vjp call for fwd_bwd)."""
    x, dy, gamma, beta = a["x"], a["dy"], a["gamma"], a["beta"]
    if bench == "layer_norm_fwd_bwd":
        def ln():
            _, f_vjp = gd.vjp(lambda v, w, b: F.layer_norm(v, w, b, EPS), x, gamma, beta)
            return f_vjp(dy)
        return ln
    mean, var = a["mean"], a["var"]
    if bench == "batch_norm_eval_fwd":
        return lambda: F.batch_norm(x, gamma, beta, mean, var, False, eps=EPS)

    def bn_train():
        _, f_vjp = gd.vjp(lambda v, w, b: F.batch_norm(v, w, b, mean, var, True, eps=EPS)[0],
                          x, gamma, beta)
        return f_vjp(dy)
    return bn_train


# ----------------------------------------------------------------------------- torch
def _torch_fn(bench: str, host: dict, dev: str):
    import torch

    t = {k: torch.from_numpy(v).to(dev) for k, v in host.items()}
    leaves = [t[k].clone().requires_grad_(True) for k in ("x", "gamma", "beta")]
    if bench == "layer_norm_fwd_bwd":
        def ln():
            y = torch.nn.functional.layer_norm(leaves[0], leaves[0].shape[-1:], leaves[1],
                                               leaves[2], EPS)
            return torch.autograd.grad(y, leaves, t["dy"])
        return ln
    if bench == "batch_norm_eval_fwd":
        def bn_eval():
            with torch.no_grad():
                return torch.nn.functional.batch_norm(t["x"], t["mean"], t["var"], t["gamma"],
                                                      t["beta"], False, eps=EPS)
        return bn_eval
    running = (t["mean"].clone(), t["var"].clone())

    def bn_train():
        y = torch.nn.functional.batch_norm(leaves[0], *running, leaves[1], leaves[2], True,
                                           eps=EPS)
        return torch.autograd.grad(y, leaves, t["dy"])
    return bn_train


# ----------------------------------------------------------------------------- driver
def _bench_rows(bench, layer, shape, device, device_name, torch_ok, repeats, warmup,
                pairs) -> list[dict]:
    cuda = device == "cuda"
    host = _inputs(shape, bench)
    arrays = {k: gd.to_device(v, device) for k, v in host.items()}
    fns = {"gpudl-kernel" if cuda else "numpy-twin": _raw_fns(bench, arrays),
           "gpudl-autodiff": _autodiff_fn(bench, arrays)}
    if torch_ok:
        fns["torch"] = _torch_fn(bench, host, device)
    base = {"bench": bench, "layer": layer, "shape": "x".join(map(str, shape)),
            "device": device, "device_name": device_name, "dtype": "float32"}
    nbytes = _bytes(int(np.prod(shape)), bench)
    rows = []
    for impl, fn in fns.items():
        clock = "torch" if impl == "torch" else "cupyx"
        t = common.time_row(fn, device, warmup=warmup, repeats=repeats, clock=clock)
        rows.append({**base, "impl": impl, **t, "gbps": nbytes / t["median_s"] / 1e9})
    if torch_ok:
        ref = rows[-1]
        for r in rows[:-1]:
            if cuda:
                r["time_vs_torch"] = r["median_s"] / ref["median_s"]
            else:
                r["time_vs_torch"] = paired_ratio(fns[r["impl"]], fns["torch"], pairs)
    return rows


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (bench, shape, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    benches = TINY_BENCHES if tiny else QUICK_BENCHES if quick else BENCHES
    warmup = 2 if tiny else 4
    torch_missing = common.torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_norm: torch rows skipped ({torch_missing})")
    rows: list[dict] = []
    if usable:
        with gd.device("cuda"):
            for bench, layer, shape in benches:
                repeats = common.TINY_REPEATS if tiny else 100
                rows += _bench_rows(bench, layer, shape, "cuda", device_name, not torch_missing,
                                    repeats, warmup, 0)
                xp_for("cuda").get_default_memory_pool().free_all_blocks()
        return rows
    notes.append(f"kernels_norm: GPU rows unavailable ({reason}); timed the NumPy twin on CPU")
    if not torch_missing:
        notes.append("kernels_norm: torch CPU timed with torch.set_num_threads(1), as the "
                     "single-threaded NumPy twin; gpudl/torch is the median of paired ratios")
    with gd.device("cpu"), common.torch_threads(None if torch_missing else 1):
        for bench, layer, shape in benches:
            repeats = common.TINY_REPEATS if tiny else 10 if quick else 20
            rows += _bench_rows(bench, layer, shape, "cpu", "cpu", not torch_missing, repeats,
                                warmup, 3 if quick or tiny else PAIRS)
    rows.append(common.unavailable_row("batch_norm/layer_norm", reason))
    return rows


def _vs_torch(row: dict) -> str:
    v = row.get("time_vs_torch")
    return "-" if v is None else f"{v:.2f}x"


COLUMNS = common.kernel_columns(
    12, [("bench", "bench", "25s"), ("shape", "shape", "15s"), ("impl", "impl", "14s")],
    digits=3, throughput=[("GB/s", "gbps", "8.1f"), ("gpudl/torch", _vs_torch, "11s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="one shape per bench")


if __name__ == "__main__":
    sys.exit(main())
