"""Benchmark: conv2d forward+backward (im2col kernels + cuBLAS) vs alternatives.

Layers (3x3 'same' VGG blocks at batch 32: 64->64 at 56², 128->128 at 28², 256->256 at
14², 512->512 at 7²; LeNet 1->6 5x5 at 28² pad 2 and 6->16 5x5 at 14²; the CIFAR stem
3->64 3x3 at 32²), float32. One step is ``value_and_grad`` of ``conv2d(x, w, b).sum()``
with respect to x, w and b, so it runs the forward, backward-data and backward-weight
products. TFLOP/s counts 3 x 2·N·O·Ho·Wo·(C/groups)·kH·kW (the three GEMMs).

GPU rows: ``gpudl`` (F.conv2d: conv2d.cu im2col/col2im + cupy.matmul), ``gpudl-composite``
(the same conv written as pad + kH·kW slices + stack + matmul with gpudl ops, differentiated
by gpudl's autodiff: what you write without a kernel) and ``torch-cudnn`` when torch imports.
On a CPU-only machine the NumPy twin, the composite and torch CPU (when importable) run at
batch 4, and the GPU rows say why they are absent. Timings: median and IQR after warm-up
(CUDA events on the GPU, perf_counter on the CPU); the first call (compile) apart.
``--tiny`` (``report["tiny"]``) runs the same rows for two tiny layers at batch 2, twice
each: the code-path check the CPU kernel emulator's tests run; its figures mean nothing.

ResNet-20 rows (CPU only, ``conv2d_resnet20_fwd`` / ``conv2d_resnet20_fwd_bwd``): every
conv shape of ``cifar_resnet(20)`` at batch 32 (3x3 16->16 at 32x32, 32->32 at 16x16,
64->64 at 8x8, the stride-2 3x3 convs, the 1x1 stride-2 downsamples and the stem), bias
free, float32: the forward alone, and the forward plus both gradients for a given
cotangent (``gd.vjp`` against ``torch.autograd.grad``; the stem's input needs none, as in
training). gpudl's NumPy twin and torch CPU run on one thread each
(``common.single_threaded``; without threadpoolctl set ``OPENBLAS_NUM_THREADS=1``), in
back-to-back pairs of alternating order, as ``common.paired_times`` but on this thread's
CPU clock (``time.thread_time``: both sides compute on the calling thread, and time spent
descheduled on a shared machine is left out). ``time_vs_torch`` is the median of the
per-pair ratios gpudl/torch (indicative: caches and memory bandwidth are still shared),
and a note gives the ResNet-20 totals (each shape weighted by its count in the network).
Both sides' results must agree (float32, 1e-4 of the largest value) before any timing.

Usage: ``python benchmarks/kernels_conv.py [--json out.json] [--quick] [--tiny]``; from a
harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and ``tiny``; notes
are added to it).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # blas_env, common
import blas_env  # noqa: E402

LIFTED_CORETYPE: str | None = None  # an environment's OPENBLAS_CORETYPE this run lifted
if __name__ == "__main__":  # before NumPy loads: OpenBLAS's own kernels, as torch's (blas_env)
    LIFTED_CORETYPE = blas_env.lift_coretype_pin(sys.argv[1:])

import common  # noqa: E402
import numpy as np  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl import ops  # noqa: E402
from gpudl.functional.conv import conv2d  # noqa: E402

# (name, C_in, C_out, H=W, k, padding)
LAYERS = [
    ("vgg-64@56", 64, 64, 56, 3, 1),
    ("vgg-128@28", 128, 128, 28, 3, 1),
    ("vgg-256@14", 256, 256, 14, 3, 1),
    ("vgg-512@7", 512, 512, 7, 3, 1),
    ("lenet-c1", 1, 6, 28, 5, 2),
    ("lenet-c3", 6, 16, 14, 5, 0),
    ("cifar-stem", 3, 64, 32, 3, 1),
]
GPU_BATCH, CPU_BATCH = 32, 4
# report["tiny"]: a VGG-style 3x3 'same' layer (so the VGG target's filter sees it) and a
# 5x5 one with an odd size, at TINY_BATCH.
TINY_LAYERS = [("vgg-tiny", 3, 4, 6, 3, 1), ("lenet-tiny", 2, 3, 7, 5, 2)]
TINY_BATCH = 2
# ResNet-20's convs (name, C_in, C_out, H=W, k, stride, padding, layers of this shape).
RESNET20_LAYERS = [
    ("r20-stem", 3, 16, 32, 3, 1, 1, 1),
    ("r20-16@32", 16, 16, 32, 3, 1, 1, 6),
    ("r20-16>32s2", 16, 32, 32, 3, 2, 1, 1),
    ("r20-1x1-16>32s2", 16, 32, 32, 1, 2, 0, 1),
    ("r20-32@16", 32, 32, 16, 3, 1, 1, 5),
    ("r20-32>64s2", 32, 64, 16, 3, 2, 1, 1),
    ("r20-1x1-32>64s2", 32, 64, 16, 1, 2, 0, 1),
    ("r20-64@8", 64, 64, 8, 3, 1, 1, 5),
]
RESNET20_BATCH = 32
RESNET20_PAIRS = {"full": 15, "quick": 7, "tiny": common.TINY_REPEATS}
TINY_RESNET20 = [("r20-tiny", 3, 4, 6, 3, 1, 1, 1), ("r20-tiny-s2", 4, 6, 7, 3, 2, 1, 1)]


def composite_conv2d(x, w, b, padding: int):
    """Stride-1 conv2d from gpudl ops only: pad, kH*kW shifted slices, stack, matmul."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    xp = ops.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    patches = [xp[:, :, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)]
    cols = ops.reshape(ops.stack(patches, axis=2), (n, c * kh * kw, ho * wo))  # (N, K, L)
    y = ops.matmul(ops.reshape(w, (o, c * kh * kw)), cols)  # (N, O, L)
    return ops.reshape(y, (n, o, ho, wo)) + ops.reshape(b, (1, o, 1, 1))


def _make(c, o, hw, k, batch, device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    return (x, w, b), gd.to_device((x, w, b), device)


def _gpudl_rows(c, o, hw, k, p, batch, device, repeats):
    _, (x, w, b) = _make(c, o, hw, k, batch, device)
    kernel = gd.value_and_grad(lambda x, w, b: conv2d(x, w, b, padding=p).sum(),
                               argnums=(0, 1, 2))
    composite = gd.value_and_grad(lambda x, w, b: composite_conv2d(x, w, b, p).sum(),
                                  argnums=(0, 1, 2))
    name = "gpudl" if device == "cuda" else "gpudl-twin"
    rows = []
    for impl, fn in ((name, kernel), ("gpudl-composite", composite)):
        stats = common.time_row(lambda fn=fn: fn(x, w, b), device, warmup=2, repeats=repeats)
        rows.append({"impl": impl, **stats})
    return rows


def _torch_rows(c, o, hw, k, p, batch, cuda: bool, repeats):
    import torch

    (x, w, b), _ = _make(c, o, hw, k, batch, "cpu")
    dev = "cuda" if cuda else "cpu"
    x, w, b = (torch.from_numpy(a).to(dev).requires_grad_(True) for a in (x, w, b))

    def step():
        for t in (x, w, b):
            t.grad = None
        torch.nn.functional.conv2d(x, w, b, padding=p).sum().backward()

    name = "torch-cudnn" if cuda else "torch-cpu"
    return [{"impl": name, **common.time_row(step, dev, warmup=2, repeats=repeats, clock="torch")}]


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (layer, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    layers = TINY_LAYERS if tiny else [LAYERS[1], LAYERS[4]] if quick else LAYERS
    rows: list[dict] = []
    if usable:
        device, batch, repeats = "cuda", GPU_BATCH, 10
        if tiny:
            batch, repeats = TINY_BATCH, common.TINY_REPEATS
    else:
        device, batch, repeats = "cpu", CPU_BATCH, 3 if quick else 5
        if tiny:
            batch, repeats = TINY_BATCH, common.TINY_REPEATS
        notes.append(f"kernels_conv: GPU rows unavailable ({reason}); timed the NumPy twin "
                     f"on CPU at batch {batch}")
        try:
            from gpudl.bench.device_info import blas_info

            notes.append(f"kernels_conv: CPU BLAS {blas_info()}; on a loaded machine "
                         "multi-threaded BLAS can slow small GEMMs many-fold (try "
                         "OPENBLAS_NUM_THREADS=1 to compare)")
        except Exception:  # the bench package is optional here
            pass
        from gpudl.bench import blas_kernels

        cores = blas_kernels.loaded_cores()
        lifted = blas_env.lifted_note(LIFTED_CORETYPE, cores)
        notes.append(f"kernels_conv: {lifted}" if lifted else
                     f"kernels_conv: OpenBLAS kernels {', '.join(cores) or 'unknown'}")
    torch_missing = common.torch_status(device == "cuda")
    if torch_missing:
        notes.append(f"kernels_conv: torch rows skipped ({torch_missing})")
    with gd.device(device):
        for name, c, o, hw, k, p in layers:
            ho = hw + 2 * p - k + 1
            flops = 3 * 2 * batch * o * ho * ho * c * k * k
            base = {"bench": "conv2d_fwd_bwd", "layer": name, "device": device,
                    "device_name": device_name, "dtype": "float32", "batch": batch, "c_in": c,
                    "c_out": o, "hw": hw, "k": k, "padding": p, "gflop": flops / 1e9}
            found = _gpudl_rows(c, o, hw, k, p, batch, device, repeats)
            if not torch_missing:
                found += _torch_rows(c, o, hw, k, p, batch, device == "cuda", repeats)
            for r in found:
                r["tflops"] = flops / r["median_s"] / 1e12
            found += _igemm_rows(c, o, hw, k, p, batch, device, repeats, flops)
            rows += [{**base, **r} for r in found]
    if device == "cpu":
        mode = "tiny" if tiny else "quick" if quick else "full"
        if torch_missing:
            notes.append("kernels_conv: ResNet-20 rows skipped (they time against torch)")
        else:
            rows += resnet20_rows(mode, notes)
        rows.append(common.unavailable_row("conv2d_fwd_bwd", reason))
    return rows


# ---- ResNet-20 conv shapes on the CPU: gpudl's twin against torch, one thread each ------
def _resnet20_fns(c, o, hw, k, s, p, batch, first: bool):
    """{pass: (gpudl fn, torch fn)} for one conv shape; ``first``: the stem (no dx)."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    ho = (hw + 2 * p - k) // s + 1
    g = rng.standard_normal((batch, o, ho, ho)).astype(np.float32)
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
    txg, twg = tx.clone().requires_grad_(not first), tw.clone().requires_grad_(True)

    def gpudl_fwd_bwd():
        if first:
            y, vjp = gd.vjp(lambda w: conv2d(x, w, stride=s, padding=p), w)
        else:
            y, vjp = gd.vjp(lambda x, w: conv2d(x, w, stride=s, padding=p), x, w)
        return y, vjp(g)

    def torch_fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, stride=s, padding=p)

    def torch_fwd_bwd():
        y = torch.nn.functional.conv2d(txg, twg, stride=s, padding=p)
        return y, torch.autograd.grad(y, [twg] if first else [txg, twg], tg)

    return {"fwd": (lambda: conv2d(x, w, stride=s, padding=p), torch_fwd),
            "fwd_bwd": (gpudl_fwd_bwd, torch_fwd_bwd)}


def _timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def paired_cpu_times(fn_a, fn_b, pairs: int, warmup: int = 2) -> dict:
    """``common.paired_times`` on ``time.thread_time`` (this thread's CPU time)."""
    return common.paired_times(fn_a, fn_b, pairs, warmup=warmup, clock=time.thread_time)


def resnet20_rows(mode: str, notes: list) -> list[dict]:
    """The ResNet-20 rows (see the module docstring); a note with the network's totals."""
    layers = TINY_RESNET20 if mode == "tiny" else RESNET20_LAYERS
    batch = TINY_BATCH if mode == "tiny" else RESNET20_BATCH
    pairs = RESNET20_PAIRS[mode]
    rows, totals = [], {"fwd": [0.0, 0.0], "fwd_bwd": [0.0, 0.0]}
    with common.single_threaded(), gd.device("cpu"):
        for name, c, o, hw, k, s, p, count in layers:
            fns = _resnet20_fns(c, o, hw, k, s, p, batch, first=name.endswith("stem"))
            for pass_, (mine, theirs) in fns.items():
                (a, first_a), (b, first_b) = _timed(mine), _timed(theirs)
                diff = common.max_rel_diff(a, b)
                if diff > 1e-4:
                    raise AssertionError(f"kernels_conv: {name} {pass_}: gpudl and torch "
                                         f"differ by {diff:.2e} (relative): no timing")
                stats = paired_cpu_times(mine, theirs, pairs, warmup=2)
                base = {"bench": f"conv2d_resnet20_{pass_}", "layer": name, "device": "cpu",
                        "device_name": common.cpu_model(), "dtype": "float32", "batch": batch,
                        "c_in": c, "c_out": o, "hw": hw, "k": k, "stride": s, "padding": p,
                        "repeats": pairs, "threads": 1, "clock": "thread_time"}
                rows.append({**base, "impl": "gpudl-twin", "median_s": stats["a_median_s"],
                             "iqr_s": stats["a_iqr_s"], "first_call_s": first_a,
                             "time_vs_torch": stats["ratio_median"],
                             "time_vs_torch_iqr": stats["ratio_iqr"]})
                rows.append({**base, "impl": "torch-cpu", "median_s": stats["b_median_s"],
                             "iqr_s": stats["b_iqr_s"], "first_call_s": first_b})
                totals[pass_][0] += count * stats["a_median_s"]
                totals[pass_][1] += count * stats["b_median_s"]
    notes.append("kernels_conv: ResNet-20 convs (each shape times its count in the network), "
                 "gpudl/torch on one thread: " + ", ".join(
                     f"{pass_} {a / b:.2f}x" for pass_, (a, b) in totals.items()))
    return rows



# ---- conv2d version 2 (implicit GEMM) rows: GPUDL_CONV_IMPL=igemm vs im2col -------------
def _igemm_rows(c, o, hw, k, p, batch, device, repeats, flops):
    """GPU only. ``gpudl-igemm``: the same fwd+bwd step with GPUDL_CONV_IMPL=igemm (forward,
    backward-data and - where _conv_kernels routes it by use_igemm("backward_weight") -
    backward-weight (split-K) on conv2d_igemm.cu). ``fwd-*`` and
    ``bwd-data-*``: each product alone under both implementations, with the key to add to
    gpudl.functional._conv_igemm_kernels.AUTO_IGEMM where igemm wins (TFLOP/s of one GEMM)."""
    import os

    from gpudl.functional import _conv_igemm_kernels as conv_igemm
    from gpudl.functional.conv import conv2d_backward_data

    if device != "cuda":
        return []
    _, (x, w, b) = _make(c, o, hw, k, batch, device)
    ho = hw + 2 * p - k + 1
    g = gd.to_device(np.ones((batch, o, ho, ho), np.float32), device)
    step = gd.value_and_grad(lambda x, w, b: conv2d(x, w, b, padding=p).sum(), argnums=(0, 1, 2))
    geo = dict(stride=(1, 1), padding=(p,) * 4, dilation=(1, 1), groups=1)
    cases = [("gpudl-igemm", "igemm", lambda: step(x, w, b), 1.0, "conv2d_fwd_bwd", None)]
    for impl in ("im2col", "igemm"):
        cases += [(f"fwd-{impl}", impl, lambda: conv2d(x, w, padding=p), 1 / 3, "conv2d_fwd",
                   conv_igemm.auto_key("forward", x.shape, w.shape, **geo)),
                  (f"bwd-data-{impl}", impl, lambda: conv2d_backward_data(g, w, (hw, hw),
                                                                          padding=p),
                   1 / 3, "conv2d_bwd_data",
                   conv_igemm.auto_key("backward_data", x.shape, w.shape, **geo))]
    old = os.environ.get(conv_igemm.ENV_VAR)
    rows = []
    try:
        for name, impl, fn, share, bench, key in cases:
            os.environ[conv_igemm.ENV_VAR] = impl
            stats = common.time_row(fn, device, warmup=2, repeats=repeats)
            rows.append({"impl": name, "bench": bench, **stats, "gflop": flops * share / 1e9,
                         "tflops": flops * share / stats["median_s"] / 1e12,
                         **({"auto_key": repr(key)} if key else {})})
    finally:
        if old is None:
            os.environ.pop(conv_igemm.ENV_VAR, None)
        else:
            os.environ[conv_igemm.ENV_VAR] = old
    return rows


COLUMNS = common.kernel_columns(
    12, [("bench", lambda r: r["bench"].removeprefix("conv2d_"), "17s"),
         ("layer", "layer", "15s"), ("N", "batch", "3d"), ("impl", "impl", "16s")], digits=2,
    throughput=[("TFLOP/s", lambda r: f"{r['tflops']:.3f}" if "tflops" in r else "-", "8s"),
                ("x torch", lambda r: (f"{r['time_vs_torch']:.2f}" if "time_vs_torch" in r
                                       else "-"), "8s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="two layers only",
                              flags=[(blas_env.KEEP_FLAG, blas_env.KEEP_HELP)])


if __name__ == "__main__":
    sys.exit(main())
