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
least any fwd+bwd must move. On the CPU both sides run on one thread
(``common.single_threaded``) and each gpudl row also carries ``vs_torch``: the median over
``PAIRS`` back-to-back pairs, in alternating order, of gpudl time / torch time
(``common.paired_times``; < 1: gpudl is faster), the steadier figure on a shared machine.
``gpudl-autodiff`` there is the whole ``gd.value_and_grad`` call (argument and label
checks, tape, vjp) against ``torch.nn.functional.cross_entropy`` + ``autograd.grad``.
GPU times: ``cupyx.profiler.benchmark`` (CUDA events), median and IQR after warm-up;
torch rows use torch CUDA events. On a machine without a GPU the twin (NumPy) and torch
CPU (when importable) are timed with perf_counter at the two smaller shapes (the largest
with ``--full-cpu``) and the GPU rows say why they are absent.
``--tiny`` (``report["tiny"]``) times the same implementations at two tiny shapes, twice
each: the code-path check the CPU kernel emulator's tests run; its figures mean nothing.

Usage: ``python benchmarks/kernels_cross_entropy.py [--json out.json] [--quick] [--tiny]
[--full-cpu]``; from a harness, ``run(report)`` returns the rows (``report`` may hold
``quick``, ``tiny`` and ``full_cpu``; notes are appended to ``report["notes"]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl.backend import xp_for  # noqa: E402
from gpudl.functional import _cross_entropy_kernels as CEK  # noqa: E402
from gpudl.functional import cross_entropy as CE  # noqa: E402

SHAPES = [(256, 10), (4096, 1000), (8192, 32768)]
PAIRS = 31
TINY_SHAPES = [(4, 10), (3, 37)]  # an odd class count too: the kernels' row tails run
BENCH = "softmax_cross_entropy_fwd_bwd"


def _inputs(xp, n: int, c: int, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = xp.asarray((2.0 * rng.standard_normal((n, c))).astype(dtype))
    y = xp.asarray(rng.integers(0, c, size=n))
    return x, y


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
        loss, lse, dl = CEK.cuda_forward(x, y, with_grad=True, grad_scale=1.0 / n)
        dl *= g  # the vjp's in-place scale by the upstream cotangent
        return loss.sum() / n, dl

    def fused_kernel():
        return CEK.cuda_forward(x, y, with_grad=True, grad_scale=1.0 / n)

    def recompute():
        loss, lse, _ = CEK.cuda_forward(x, y)
        return loss.sum() / n, CEK.cuda_backward(x, y, lse, g, scale=1.0 / n)

    value_and_grad = gd.value_and_grad(lambda v: CE.softmax_cross_entropy(v, y))

    return {"gpudl-fused": fused, "gpudl-fused-kernel": fused_kernel,
            "gpudl-recompute": recompute, "gpudl-autodiff": lambda: value_and_grad(x),
            "cupy-composite": lambda: _cupy_composite(x, y)}


def _time_torch_cuda(n: int, c: int, repeats: int, warmup: int = 4) -> dict:
    import torch

    rng = np.random.default_rng(0)
    x = torch.tensor((2.0 * rng.standard_normal((n, c))).astype(np.float32), device="cuda",
                     requires_grad=True)
    y = torch.tensor(rng.integers(0, c, size=n), device="cuda")

    def step():
        loss = torch.nn.functional.cross_entropy(x, y)
        return torch.autograd.grad(loss, x)

    return common.time_row(step, "cuda", warmup=warmup, repeats=repeats, clock="torch")


# ----------------------------------------------------------------------------- CPU
def _cpu_fns(n: int, c: int) -> dict:
    x, y = _inputs(np, n, c)
    value_and_grad = gd.value_and_grad(lambda v: CE.softmax_cross_entropy(v, y))
    fns = {"numpy-twin": lambda: CEK.twin_forward(x, y, with_grad=True, grad_scale=1.0 / n),
           "gpudl-autodiff": lambda: value_and_grad(x)}
    torch_missing = common.torch_status(False)
    if torch_missing is None:
        import torch

        tx = torch.tensor(x, requires_grad=True)
        ty = torch.tensor(y)
        fns["torch"] = lambda: torch.autograd.grad(
            torch.nn.functional.cross_entropy(tx, ty), tx)
    return fns


# ----------------------------------------------------------------------------- driver
def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (shape, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    rows: list[dict] = []
    torch_missing = common.torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_cross_entropy: torch rows skipped ({torch_missing})")
    if usable:
        shapes = TINY_SHAPES if tiny else SHAPES[:2] if quick else SHAPES
        with gd.device("cuda"):
            for n, c in shapes:
                base = {"bench": BENCH, "device": "cuda", "device_name": device_name,
                        "dtype": "float32", "N": n, "C": c}
                repeats = common.TINY_REPEATS if tiny else 20 if n * c > 10**7 else 100
                warmup = 2 if tiny else 4
                x, y = _inputs(xp_for("cuda"), n, c)
                timed = {k: common.time_row(f, "cuda", warmup=warmup, repeats=repeats,
                                            clock="cupyx")
                         for k, f in _gpu_fns(x, y).items()}
                if not torch_missing:
                    timed["torch"] = _time_torch_cuda(n, c, repeats, warmup)
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
    if tiny:
        shapes = TINY_SHAPES
    elif SHAPES[-1] not in shapes:
        notes.append(f"kernels_cross_entropy: CPU skips {SHAPES[-1]} (pass --full-cpu)")
    with gd.device("cpu"), common.single_threaded():
        for n, c in shapes:
            base = {"bench": BENCH, "device": "cpu", "device_name": "cpu", "dtype": "float32",
                    "N": n, "C": c}
            repeats = common.TINY_REPEATS if tiny else 3 if n * c > 10**7 else 10
            pairs = 2 if tiny else 5 if n * c > 10**7 else PAIRS
            inner = 20 if n * c <= 10**4 and not tiny else 1  # sub-millisecond: 20 calls a sample
            fns = _cpu_fns(n, c)
            for impl, fn in fns.items():
                t = common.time_row(fn, "cpu", warmup=2, repeats=repeats)
                row = {**base, "impl": impl, **t, "gbps": _bytes(n, c) / t["median_s"] / 1e9}
                if impl != "torch" and "torch" in fns:
                    row["vs_torch"] = common.paired_times(fn, fns["torch"], pairs=pairs,
                                                          inner=inner)["ratio_median"]
                rows.append(row)
    rows.append(common.unavailable_row(BENCH, reason))
    return rows


COLUMNS = common.kernel_columns(
    14, [("N", "N", "6d"), ("C", "C", "6d"), ("impl", "impl", "20s")], digits=3,
    throughput=[("GB/s", "gbps", "8.1f"),
                ("/torch", lambda r: f"{r['vs_torch']:.2f}" if "vs_torch" in r else "-", "7s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="smaller shapes only",
                       flags=[("--full-cpu", "also (8192, 32768) on CPU")])


if __name__ == "__main__":
    sys.exit(main())
