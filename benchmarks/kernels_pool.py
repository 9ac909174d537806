"""Benchmark: max_pool2d and avg_pool2d, forward and forward+backward, vs torch, float32.

Layers (NCHW, torch geometry; avg pooling uses the same windows, count_include_pad=True):
  * ``lenet-2x2``:    2x2 stride 2 on (128, 6, 28, 28)     (LeNet-5's subsampling);
  * ``resnet-3x3s2``: 3x3 stride 2 pad 1 on (32, 64, 112, 112) (the AlexNet/ResNet stem
    pool: overlapping windows and padding);
  * ``vgg-2x2``:      2x2 stride 2 on (32, 128, 56, 56)    (a VGG block's pool).
Benches ``max_pool2d_fwd``, ``max_pool2d_fwd_bwd``, ``avg_pool2d_fwd``, ``avg_pool2d_fwd_bwd``.
A forward+backward step is the forward, then the gradient for a given cotangent dy (no
loss reduction in the way); max pooling's forward always saves its arg-max in gpudl.

GPU rows:
  * ``gpudl-kernel``: the CUDA bodies of ``_pool_kernels.py`` alone (kernels/pool2d.cu:
    one forward launch; forward then backward launch for fwd_bwd);
  * ``gpudl-autodiff``: ``F.max_pool2d`` / ``F.avg_pool2d`` as a user calls them (argument
    checks, Primitive) for fwd; ``gd.vjp`` of it and the vjp call for fwd_bwd;
  * ``torch``: ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` on CUDA tensors (forward
    under ``no_grad``; fwd_bwd with ``autograd.grad``), when torch imports with CUDA.
GPU times: ``cupyx.profiler.benchmark`` (CUDA events) for gpudl, torch CUDA events for
torch; median and IQR after warm-up; the first call (NVRTC compile or cache load in the
first gpudl row of a process) is reported apart. On a machine without a GPU the NumPy twin
(``numpy-twin``), ``gpudl-autodiff`` and torch CPU run at CPU batch sizes (4 for the two
large layers; the GPU batches with ``--full-cpu``), timed with perf_counter, and the GPU rows
say why they are absent. The twin is single-threaded NumPy, so torch CPU runs with
``torch.set_num_threads(1)`` (restored afterwards): the same threads on both sides.

GB/s counts the least any implementation must move: read x and write y (fwd), plus read
dy and write dx (fwd_bwd); the arg-max is not counted. ``gpudl/torch`` is this row's time
over torch's of the same bench, device and layer (< 1: gpudl is faster): on the GPU the
ratio of the medians; on the CPU, where other processes make single timings noisy, the
median of ``PAIRS`` per-pair ratios, each pair timed back to back in alternating order
(:func:`paired_ratio`). The driver (benchmarks/kernels.py) adds its own ``speedup_vs``
(torch time / this time).
``--tiny`` (``report["tiny"]``) times the same rows at two tiny layers, twice each: the
code-path check the CPU kernel emulator's tests run; its figures mean nothing.

Usage: ``python benchmarks/kernels_pool.py [--json out.json] [--quick] [--tiny]
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
from gpudl.functional import _pool_kernels as PK  # noqa: E402
from gpudl.functional import pooling as P  # noqa: E402

# (name, GPU batch, CPU batch, C, H=W, kernel, stride, padding)
LAYERS = [
    ("lenet-2x2", 128, 128, 6, 28, 2, 2, 0),
    ("resnet-3x3s2", 32, 4, 64, 112, 3, 2, 1),
    ("vgg-2x2", 32, 4, 128, 56, 2, 2, 0),
]
QUICK_LAYERS = [LAYERS[0], LAYERS[2]]
# report["tiny"]: a 2x2 stride-2 pool and an overlapping padded 3x3 stride-2 one on an odd size.
TINY_LAYERS = [("tiny-2x2", 2, 2, 3, 6, 2, 2, 0), ("tiny-3x3s2", 2, 2, 2, 7, 3, 2, 1)]
OPS = ("max", "avg")
PASSES = ("fwd", "fwd_bwd")
PAIRS = 15  # CPU: (gpudl, torch) pairs per ratio (3 with --quick or --tiny)


def paired_ratio(fn, ref, pairs: int) -> float:
    """Median over ``pairs`` of time(fn) / time(ref), the two timed back to back with
    perf_counter, in alternating order (CPU): machine noise hits both sides of a pair."""
    return common.paired_times(fn, ref, pairs, warmup=0)["ratio_median"]


def _inputs(n, c, hw, k, s, p):
    """Host float32 x (N, C, H, W) and a cotangent dy (N, C, Ho, Wo)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    ho, wo = PK.pool_output_hw(hw, hw, (k, k), (s, s), (p, p))
    dy = rng.standard_normal((n, c, ho, wo)).astype(np.float32)
    return x, dy


def _bytes(x_size: int, y_size: int, pass_: str, itemsize: int = 4) -> int:
    once = (x_size + y_size) * itemsize
    return once if pass_ == "fwd" else 2 * once


# ----------------------------------------------------------------------------- gpudl
def _gpudl_fns(op: str, x, dy, k, s, p, cuda: bool) -> dict:
    """{(pass, impl): fn} for the raw bodies (kernel or twin) and the public function."""
    geo = dict(kernel=(k, k), stride=(s, s), padding=(p, p))
    x_hw = tuple(x.shape[2:])
    if op == "max":
        fwd_raw = PK.max_pool2d_cuda if cuda else PK.max_pool2d_twin

        def raw_fwd_bwd():
            _, argmax = fwd_raw(x, **geo)
            if cuda:
                return PK.max_pool2d_backward_cuda(dy, argmax, x_hw, **geo)
            return PK.max_pool2d_backward_twin(dy, argmax, x_hw, **geo)

        def public(v):
            return P.max_pool2d(v, k, s, p)
    else:
        fwd_raw = PK.avg_pool2d_cuda if cuda else PK.avg_pool2d_twin
        bwd_raw = PK.avg_pool2d_backward_cuda if cuda else PK.avg_pool2d_backward_twin

        def raw_fwd_bwd():
            fwd_raw(x, count_include_pad=True, **geo)
            return bwd_raw(dy, x_hw, count_include_pad=True, **geo)

        def public(v):
            return P.avg_pool2d(v, k, s, p)
    extra = {} if op == "max" else {"count_include_pad": True}

    def autodiff_fwd_bwd():
        _, f_vjp = gd.vjp(public, x)
        return f_vjp(dy)

    raw = "gpudl-kernel" if cuda else "numpy-twin"
    return {("fwd", raw): lambda: fwd_raw(x, **geo, **extra), ("fwd_bwd", raw): raw_fwd_bwd,
            ("fwd", "gpudl-autodiff"): lambda: public(x),
            ("fwd_bwd", "gpudl-autodiff"): autodiff_fwd_bwd}


# ----------------------------------------------------------------------------- torch
def _torch_fns(op: str, x_host, dy_host, k, s, p, dev: str) -> dict:
    import torch

    fn = torch.nn.functional.max_pool2d if op == "max" else torch.nn.functional.avg_pool2d
    x = torch.from_numpy(x_host).to(dev)
    xg = x.clone().requires_grad_(True)
    dy = torch.from_numpy(dy_host).to(dev)

    def fwd():
        with torch.no_grad():
            return fn(x, k, s, p)

    def fwd_bwd():
        return torch.autograd.grad(fn(xg, k, s, p), xg, dy)

    return {("fwd", "torch"): fwd, ("fwd_bwd", "torch"): fwd_bwd}



# ----------------------------------------------------------------------------- driver
def _layer_rows(layer, batch, device, device_name, torch_ok, repeats, warmup,
                pairs: int = PAIRS) -> list[dict]:
    name, _, _, c, hw, k, s, p = layer
    cuda = device == "cuda"
    x_host, dy_host = _inputs(batch, c, hw, k, s, p)
    x, dy = (gd.to_device(a, device) for a in (x_host, dy_host))
    rows = []
    for op in OPS:
        fns = _gpudl_fns(op, x, dy, k, s, p, cuda)
        if torch_ok:
            fns.update(_torch_fns(op, x_host, dy_host, k, s, p, device))
        for pass_ in PASSES:
            base = {"bench": f"{op}_pool2d_{pass_}", "layer": name, "device": device,
                    "device_name": device_name, "dtype": "float32", "N": batch, "C": c,
                    "H": hw, "W": hw, "k": k, "stride": s, "padding": p}
            nbytes = _bytes(x_host.size, dy_host.size, pass_)
            found = []
            for (ps, impl), fn in fns.items():
                if ps != pass_:
                    continue
                clock = "torch" if impl == "torch" else "cupyx"
                t = common.time_row(fn, device, warmup=warmup, repeats=repeats, clock=clock)
                found.append({**base, "impl": impl, **t, "gbps": nbytes / t["median_s"] / 1e9})
            ref = next((r for r in found if r["impl"] == "torch"), None)
            if ref is not None:
                for r in found:
                    if r is ref:
                        continue
                    if cuda:
                        r["time_vs_torch"] = r["median_s"] / ref["median_s"]
                    else:
                        r["time_vs_torch"] = paired_ratio(fns[(pass_, r["impl"])],
                                                          fns[(pass_, "torch")], pairs)
            rows += found
    return rows


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (layer, bench, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    layers = TINY_LAYERS if tiny else QUICK_LAYERS if quick else LAYERS
    warmup = 2 if tiny else 4
    torch_missing = common.torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_pool: torch rows skipped ({torch_missing})")
    rows: list[dict] = []
    if usable:
        with gd.device("cuda"):
            for layer in layers:
                batch, c, hw = layer[1], layer[3], layer[4]
                repeats = (common.TINY_REPEATS if tiny
                           else 50 if batch * c * hw * hw > 10**7 else 100)
                rows += _layer_rows(layer, batch, "cuda", device_name, not torch_missing,
                                    repeats, warmup)
                xp_for("cuda").get_default_memory_pool().free_all_blocks()
        return rows
    full = bool(report.get("full_cpu"))
    notes.append(f"kernels_pool: GPU rows unavailable ({reason}); timed the NumPy twin on CPU"
                 + ("" if full or tiny else " at CPU batch sizes (--full-cpu: the GPU ones)"))
    if not torch_missing:
        notes.append("kernels_pool: torch CPU timed with torch.set_num_threads(1), as the "
                     "single-threaded NumPy twin; gpudl/torch is the median of paired ratios")
    with gd.device("cpu"), common.torch_threads(None if torch_missing else 1):
        for layer in layers:
            batch = layer[1] if full else layer[2]
            repeats = common.TINY_REPEATS if tiny else 5 if quick else 10
            rows += _layer_rows(layer, batch, "cpu", "cpu", not torch_missing, repeats, warmup,
                                3 if quick or tiny else PAIRS)
    rows.append(common.unavailable_row("pool2d", reason))
    return rows


def _vs_torch(row: dict) -> str:
    v = row.get("time_vs_torch")
    return "-" if v is None else f"{v:.2f}x"


COLUMNS = common.kernel_columns(
    12, [("layer", "layer", "12s"), ("N", "N", "4d"), ("bench", "bench", "18s"),
         ("impl", "impl", "14s")], digits=3,
    throughput=[("GB/s", "gbps", "8.1f"), ("gpudl/torch", _vs_torch, "11s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="two layers only",
                              flags=[("--full-cpu", "GPU batch sizes on CPU too")])


if __name__ == "__main__":
    sys.exit(main())
