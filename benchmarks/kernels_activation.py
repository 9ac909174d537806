"""Benchmark: the fused activations and dropout, forward and forward+backward, vs torch, float32.

Activations: sigmoid, tanh, relu, leaky_relu (0.01), elu, hardtanh, silu, gelu (exact and
``tanh``) and dropout (rate 0.5, the mask drawn from a fixed key each call, as in training),
on two layers' activations (NCHW):
  * ``lenet-c1``:  (128, 6, 28, 28)  (LeNet-5's first convolution, batch 128);
  * ``cifar-c16``: (32, 16, 32, 32)  (a 16-channel CIFAR layer, batch 32).
A forward+backward step is the forward, then the gradient for a given cotangent dy.

Rows (``impl``):
  * ``gpudl-kernel`` (GPU) / ``numpy-twin`` (CPU): the bodies of ``_activation_kernels.py``
    alone (kernels/activation.cu: one launch forward, one backward);
  * ``gpudl-autodiff``: ``F.<name>`` as a user calls it (fwd), ``gd.vjp`` of it and the vjp
    call (fwd_bwd);
  * ``torch``: ``torch.nn.functional`` (forward under ``no_grad``; fwd_bwd with
    ``autograd.grad``), on CUDA tensors on a GPU (when torch has CUDA), else on the CPU.
GPU times: ``cupyx.profiler.benchmark`` (CUDA events) for gpudl, torch CUDA events for
torch; median and IQR after warm-up, the first call (NVRTC compile or cache load) apart.
Without a GPU: the CPU rows, timed with perf_counter, one thread on both sides
(``torch.set_num_threads(1)``, restored after; set ``OMP_NUM_THREADS=1`` and
``OPENBLAS_NUM_THREADS=1`` before starting for NumPy's pools): each gpudl row runs in
alternating pairs with torch (gpudl, torch), (torch, gpudl), ... and its ``gpudl/torch`` is
the median of the per-pair ratios (steadier than a ratio of medians on a shared machine),
and ``cpu-time`` the same median over the calling thread's CPU times (``time.thread_time``:
it leaves out the time a loaded machine keeps the process waiting, which inflates the wall
time of the longer of the two calls more); the torch row's times come from its pairs with
``gpudl-autodiff``.

GB/s counts the least any implementation must move: read x, write y (fwd), plus read dy and
write dx (fwd_bwd; a backward from the saved y or x reads one of them again, not counted).
``--tiny`` (``report["tiny"]``): one tiny shape, four activations, twice each: the code-path
check the CPU kernel emulator's tests run; its figures mean nothing.

Usage: ``python benchmarks/kernels_activation.py [--json out.json] [--quick] [--tiny]``;
from a harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and
``tiny``; notes are appended to ``report["notes"]``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl import functional as F  # noqa: E402
from gpudl.backend import xp_for  # noqa: E402
from gpudl.functional import _activation_kernels as AK  # noqa: E402

LAYERS = [("lenet-c1", (128, 6, 28, 28)), ("cifar-c16", (32, 16, 32, 32))]
QUICK_LAYERS = LAYERS[:1]
TINY_LAYERS = [("tiny", (2, 3, 5, 7))]
KEY = gd.random.key(0)
# name -> (kernel op or None for dropout, gpudl function, (p0, p1) of the raw bodies)
ACTIVATIONS = {
    "sigmoid": ("sigmoid", F.sigmoid, ()),
    "tanh": ("tanh", F.tanh, ()),
    "relu": ("relu", F.relu, ()),
    "leaky_relu": ("leaky_relu", F.leaky_relu, (0.01,)),
    "elu": ("elu", F.elu, (1.0, 1.0)),
    "hardtanh": ("hardtanh", F.hardtanh, (-1.0, 1.0)),
    "silu": ("silu", F.silu, ()),
    "gelu": ("gelu", F.gelu, ()),
    "gelu_tanh": ("gelu_tanh", lambda x: F.gelu(x, "tanh"), ()),
    "dropout": (None, lambda x: F.dropout(x, 0.5, KEY), ()),
}
TINY_ACTIVATIONS = ("sigmoid", "relu", "gelu", "dropout")
PASSES = ("fwd", "fwd_bwd")


def _torch_fn(name: str):
    import torch

    tf = torch.nn.functional
    return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": tf.relu,
            "leaky_relu": tf.leaky_relu, "elu": tf.elu, "hardtanh": tf.hardtanh,
            "silu": tf.silu, "gelu": tf.gelu,
            "gelu_tanh": lambda v: tf.gelu(v, approximate="tanh"),
            "dropout": lambda v: tf.dropout(v, 0.5, training=True)}[name]


# ----------------------------------------------------------------------------- functions
def _gpudl_fns(name: str, x, dy, cuda: bool) -> dict:
    """{(pass, impl): fn}: the raw bodies (kernel or twin) and the public function."""
    op, fn, ps = ACTIVATIONS[name]
    raw = "gpudl-kernel" if cuda else "numpy-twin"
    if op is None:  # dropout: the mask draw is part of the op, as in training
        def raw_fwd():
            keep = gd.random.bernoulli(KEY, 0.5, x.shape)
            return AK.dropout_raw(x, keep, np.float32(2.0))

        def raw_fwd_bwd():
            keep = gd.random.bernoulli(KEY, 0.5, x.shape)
            AK.dropout_raw(x, keep, np.float32(2.0))
            return AK.dropout_raw(dy, keep, np.float32(2.0))
    else:
        def raw_fwd():
            return AK.activation_raw(op, x, *ps)

        def raw_fwd_bwd():
            return AK.activation_backward_raw(op, dy, x, AK.activation_raw(op, x, *ps), *ps)

    def autodiff_fwd_bwd():
        _, f_vjp = gd.vjp(fn, x)
        return f_vjp(dy)

    return {("fwd", raw): raw_fwd, ("fwd_bwd", raw): raw_fwd_bwd,
            ("fwd", "gpudl-autodiff"): lambda: fn(x),
            ("fwd_bwd", "gpudl-autodiff"): autodiff_fwd_bwd}


def _torch_fns(name: str, x_host, dy_host, dev: str) -> dict:
    import torch

    fn = _torch_fn(name)
    x = torch.from_numpy(x_host).to(dev)
    xg = x.clone().requires_grad_(True)
    dy = torch.from_numpy(dy_host).to(dev)

    def fwd():
        with torch.no_grad():
            return fn(x)

    def fwd_bwd():
        return torch.autograd.grad(fn(xg), xg, dy)

    return {("fwd", "torch"): fwd, ("fwd_bwd", "torch"): fwd_bwd}



def _paired(fn, ref, pairs: int, warmup: int) -> tuple[dict, dict, list[float], list[float]]:
    """``fn`` and ``ref`` timed in alternating pairs: (row stats of each, per-pair ratios of
    the wall times, per-pair ratios of the calling thread's CPU times)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn(), ref()
    ta, tb, ca, cb = [], [], [], []
    for i in range(pairs):
        for f, wall, cpu in (((fn, ta, ca), (ref, tb, cb)) if i % 2 == 0
                             else ((ref, tb, cb), (fn, ta, ca))):
            t, c = time.perf_counter(), time.thread_time()
            f()
            wall.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)

    def stats(ts):
        q1, med, q3 = np.percentile(ts, [25, 50, 75])
        return {"first_call_s": first, "median_s": float(med), "iqr_s": float(q3 - q1),
                "min_s": float(min(ts)), "repeats": pairs}

    return (stats(ta), stats(tb), [a / b for a, b in zip(ta, tb, strict=True)],
            [a / max(b, 1e-9) for a, b in zip(ca, cb, strict=True)])


# ----------------------------------------------------------------------------- driver
def _rows(name, shape, layer, device, device_name, torch_ok, repeats, warmup) -> list[dict]:
    cuda = device == "cuda"
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal(shape).astype(np.float32)
    dy_host = rng.standard_normal(shape).astype(np.float32)
    x, dy = (gd.to_device(a, device) for a in (x_host, dy_host))
    fns = _gpudl_fns(name, x, dy, cuda)
    if torch_ok:
        fns.update(_torch_fns(name, x_host, dy_host, device))
    rows = []
    for pass_ in PASSES:
        base = {"bench": f"{name}_{pass_}", "layer": layer, "device": device,
                "device_name": device_name, "dtype": "float32", "shape": list(shape)}
        nbytes = x_host.nbytes * (2 if pass_ == "fwd" else 4)
        mine = [(impl, fn) for (ps, impl), fn in fns.items() if ps == pass_ and impl != "torch"]
        ref = fns.get((pass_, "torch"))
        found = []
        for impl, fn in mine:
            if cuda or ref is None:
                t = common.time_row(fn, device, warmup=warmup, repeats=repeats, clock="cupyx")
                found.append({**base, "impl": impl, **t})
                continue
            t, t_ref, ratios, cpu_ratios = _paired(fn, ref, repeats, warmup)
            q1, med, q3 = np.percentile(ratios, [25, 50, 75])
            found.append({**base, "impl": impl, **t, "time_vs_torch": float(med),
                          "ratio_iqr": float(q3 - q1),
                          "cpu_time_vs_torch": float(np.median(cpu_ratios))})
            if impl == "gpudl-autodiff":
                found.append({**base, "impl": "torch", **t_ref})
        if cuda and ref is not None:
            t = common.time_row(ref, device, warmup=warmup, repeats=repeats, clock="torch")
            found.append({**base, "impl": "torch", **t})
            for r in found[:-1]:
                r["time_vs_torch"] = r["median_s"] / t["median_s"]
        for r in found:
            r["gbps"] = nbytes / r["median_s"] / 1e9
        rows += found
    return rows


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (layer, bench, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    layers = TINY_LAYERS if tiny else QUICK_LAYERS if quick else LAYERS
    names = TINY_ACTIVATIONS if tiny else tuple(ACTIVATIONS)
    warmup = 2 if tiny else 3
    torch_missing = common.torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_activation: torch rows skipped ({torch_missing})")
    rows: list[dict] = []
    if usable:
        repeats = common.TINY_REPEATS if tiny else 100
        with gd.device("cuda"):
            for layer, shape in layers:
                for name in names:
                    rows += _rows(name, shape, layer, "cuda", device_name, not torch_missing,
                                  repeats, warmup)
                xp_for("cuda").get_default_memory_pool().free_all_blocks()
        return rows
    notes.append(f"kernels_activation: GPU rows unavailable ({reason}); timed the NumPy twins "
                 "on CPU")
    if not torch_missing:
        notes.append("kernels_activation: CPU rows in alternating pairs with torch at "
                     "torch.set_num_threads(1); gpudl/torch is the median per-pair ratio")
    repeats = common.TINY_REPEATS if tiny else 9 if quick else 21
    with gd.device("cpu"), common.torch_threads(None if torch_missing else 1):
        for layer, shape in layers:
            for name in names:
                rows += _rows(name, shape, layer, "cpu", "cpu", not torch_missing, repeats,
                              warmup)
    rows.append(common.unavailable_row("activation", reason))
    return rows


def _ratio(key: str):
    def cell(row: dict) -> str:
        v = row.get(key)
        return "-" if v is None else f"{v:.2f}x"
    return cell


COLUMNS = common.kernel_columns(
    10, [("layer", "layer", "10s"), ("bench", "bench", "18s"), ("impl", "impl", "15s")],
    digits=3, throughput=[("GB/s", "gbps", "8.1f"), ("gpudl/torch", _ratio("time_vs_torch"), "11s"),
                          ("cpu-time", _ratio("cpu_time_vs_torch"), "8s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="the LeNet layer only")


if __name__ == "__main__":
    sys.exit(main())
