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

Usage: ``python benchmarks/kernels_conv.py [--json out.json] [--quick] [--tiny]``; from a
harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and ``tiny``; notes
are added to it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402

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
        rows.append(common.unavailable_row("conv2d_fwd_bwd", reason))
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
    12, [("layer", "layer", "12s"), ("N", "batch", "3d"), ("impl", "impl", "16s")], digits=2,
    throughput=[("TFLOP/s", "tflops", "8.3f")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="two layers only")


if __name__ == "__main__":
    sys.exit(main())
