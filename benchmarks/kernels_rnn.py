"""Benchmark: LSTM sequence forward+backward with the fused cell kernel vs alternatives.

GPU rows (hidden 512/1024, batch 16/64, 25 steps, input size = hidden, float32):
  * ``gpudl-fused``: ``F.lstm`` under ``gd.value_and_grad``: the whole-sequence ``rnn_scan``
    primitive (one [W_hh | W_ih | b] GEMM and one ``lstm_pointwise`` kernel per step, BPTT
    in one vjp with the backward kernel per step, dW as one GEMM over all steps);
  * ``gpudl-composite``: the same loop with the cell's elementwise part written as CuPy
    composite ops (sigmoid/tanh/multiply...), differentiated by gpudl's autodiff;
  * ``torch-cudnn``: torch ``nn.LSTM`` (cuDNN), and ``torch-cell-loop``: an ``nn.LSTMCell``
    Python loop, when torch imports.
On a CPU-only machine the same comparison runs on NumPy (the whole-sequence primitive's
NumPy cells vs the composite, and torch CPU when importable) at smaller sizes, and the GPU
rows say why they are absent. For the one-thread CPU comparison with torch of a whole
training step, see ``cpu_vs_torch.py --rows char_lm``.
Each step's loss is ``y.sum()``; timings are median and IQR after warm-up (CUDA events on
the GPU, perf_counter on the CPU), first call (kernel compile) reported apart.
``--tiny`` (``report["tiny"]``) runs the same rows for one tiny configuration, twice each:
the code-path check the CPU kernel emulator's tests run; its figures mean nothing.

Usage: ``python benchmarks/kernels_rnn.py [--json out.json] [--quick] [--tiny]``; from a
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
from gpudl.functional import recurrent as R  # noqa: E402

GPU_CONFIGS = [(h, n, 25) for h in (512, 1024) for n in (16, 64)]  # (hidden, batch, steps)
CPU_CONFIGS = [(256, 8, 5), (512, 16, 5)]
TINY_CONFIGS = [(8, 3, 3)]


def _composite_lstm(x, params):
    """F.lstm's loop with the pointwise part as generic ops (what you write without a kernel)."""
    t_len, n, i = x.shape
    w_ih, w_hh, b_ih, b_hh = (params[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    hidden = w_hh.shape[1]
    proj = ops.reshape(x, (t_len * n, i)) @ ops.transpose(w_ih) + (b_ih + b_hh)
    steps = R.unstack(ops.reshape(proj, (t_len, n, 4 * hidden)))
    xp = gd.get_array_module(x)
    h = xp.zeros((n, hidden), dtype=x.dtype)
    c = xp.zeros((n, hidden), dtype=x.dtype)
    w_hh_t, outs = ops.transpose(w_hh), []
    for t in range(t_len):
        gates = steps[t] + h @ w_hh_t
        i_g, f_g, g_g, o_g = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = ops.sigmoid(f_g) * c + ops.sigmoid(i_g) * ops.tanh(g_g)
        h = ops.sigmoid(o_g) * ops.tanh(c)
        outs.append(h)
    return ops.stack(outs, axis=0)


def _make(hidden: int, batch: int, steps: int, device: str):
    rng = np.random.default_rng(0)
    s = 1.0 / np.sqrt(hidden)
    host = {"weight_ih": rng.uniform(-s, s, (4 * hidden, hidden)),
            "weight_hh": rng.uniform(-s, s, (4 * hidden, hidden)),
            "bias_ih": rng.uniform(-s, s, 4 * hidden), "bias_hh": rng.uniform(-s, s, 4 * hidden)}
    host = {k: v.astype(np.float32) for k, v in host.items()}
    x = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    return host, x, gd.to_device(host, device), gd.to_device(x, device)


def _gpudl_rows(hidden, batch, steps, device, repeats):
    _, _, params, x = _make(hidden, batch, steps, device)
    fused = gd.value_and_grad(lambda p, x: R.lstm(x, None, None, p)[0].sum(), argnums=(0, 1))
    composite = gd.value_and_grad(lambda p, x: _composite_lstm(x, p).sum(), argnums=(0, 1))
    rows = []
    for impl, fn in (("gpudl-fused", fused), ("gpudl-composite", composite)):
        stats = common.time_row(lambda fn=fn: fn(params, x), device, warmup=2, repeats=repeats)
        rows.append({"impl": impl, **stats})
    return rows


def _torch_rows(hidden, batch, steps, cuda: bool, repeats):
    import torch

    host, x_host, _, _ = _make(hidden, batch, steps, "cpu")
    dev = "cuda" if cuda else "cpu"
    lstm = torch.nn.LSTM(hidden, hidden).to(dev)
    cell = torch.nn.LSTMCell(hidden, hidden).to(dev)
    with torch.no_grad():
        for mod, suffix in ((lstm, "_l0"), (cell, "")):
            for k, v in host.items():
                getattr(mod, k + suffix).copy_(torch.from_numpy(v))
    x = torch.from_numpy(x_host).to(dev).requires_grad_(True)

    def cudnn():
        lstm.zero_grad(set_to_none=True)
        x.grad = None
        lstm(x)[0].sum().backward()

    def cell_loop():
        cell.zero_grad(set_to_none=True)
        x.grad = None
        h = torch.zeros(batch, hidden, device=dev)
        c = torch.zeros(batch, hidden, device=dev)
        outs = []
        for t in range(steps):
            h, c = cell(x[t], (h, c))
            outs.append(h)
        torch.stack(outs).sum().backward()

    name = "torch-cudnn" if cuda else "torch-nn.LSTM"
    return [{"impl": impl, **common.time_row(fn, dev, warmup=2, repeats=repeats, clock="torch")}
            for impl, fn in ((name, cudnn), ("torch-cell-loop", cell_loop))]


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (config, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    rows: list[dict] = []
    if usable:
        device, configs, repeats = "cuda", GPU_CONFIGS[:1] if quick else GPU_CONFIGS, 10
    else:
        notes.append(f"kernels_rnn: GPU rows unavailable ({reason}); timed the NumPy twin on CPU")
        device, configs, repeats = "cpu", CPU_CONFIGS[:1] if quick else CPU_CONFIGS, 10
    if tiny:
        configs, repeats = TINY_CONFIGS, common.TINY_REPEATS
    torch_missing = common.torch_status(device == "cuda")
    if torch_missing:
        notes.append(f"kernels_rnn: torch rows skipped ({torch_missing})")
    with gd.device(device):
        for hidden, batch, steps in configs:
            base = {"bench": "lstm_seq_fwd_bwd", "device": device, "device_name": device_name,
                    "dtype": "float32", "hidden": hidden, "batch": batch, "steps": steps,
                    "input": hidden}
            found = _gpudl_rows(hidden, batch, steps, device, repeats)
            if not torch_missing:
                found += _torch_rows(hidden, batch, steps, device == "cuda", repeats)
            rows += [{**base, **r} for r in found]
    if device == "cpu":
        rows.append(common.unavailable_row("lstm_seq_fwd_bwd", reason))
    return rows


COLUMNS = common.kernel_columns(
    12, [("H", "hidden", "5d"), ("N", "batch", "4d"), ("T", "steps", "3d"), ("impl", "impl", "18s")],
    digits=2)


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="first configuration only")


if __name__ == "__main__":
    sys.exit(main())
