"""``gpudl bench``: time training steps of a model on each available device.

The timed step is exactly the one ``gd.fit`` runs (:mod:`gpudl.train.step`: dropout key
folded per step, model state carried, frozen parameters respected). Each device gets the
same model, batch and optimizer (SGD with momentum); warm-up steps are excluded;
the report holds median and spread per step, samples/s, peak memory, and the GPU/CPU
speedup. Without a GPU it times the CPU and says why the GPU row is missing.

Example:
    >>> rows = bench_model("mlp", batch_size=8, steps=3, devices=["cpu"], warmup=1)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpudl import optim
from gpudl import random as gdr
from gpudl.backend import asarray, device, memory_info, probe_cuda
from gpudl.bench.device_info import machine_info
from gpudl.bench.timing import time_fn
from gpudl.errors import ConfigError
from gpudl.functional.labels import host_label_bounds, labels_within
from gpudl.models import IMAGE_CLASSIFIERS, get_model
from gpudl.train.loop import resolve_loss
from gpudl.train.step import StepRunner, run_keys, supervised_step


def _optimizer():
    return optim.sgd(0.01, momentum=0.9)


def _data(model_name: str, batch_size: int):
    """A fixed host batch ``(x, y)`` of the model's input shape, 10 classes."""
    if model_name not in IMAGE_CLASSIFIERS:
        raise ConfigError(f"gpudl bench: {model_name!r} is not an image classifier; benchmarkable "
                         f"models: {sorted(IMAGE_CLASSIFIERS)}")
    rng = np.random.default_rng(0)
    return (rng.random((batch_size, *IMAGE_CLASSIFIERS[model_name]), dtype=np.float32),
            rng.integers(0, 10, batch_size))


def _step_fn(model_name: str, x_host, y_host, dev: str) -> functools.partial:
    """``fit``'s step on the batch ``(x_host, y_host)`` moved to ``dev``, started as ``fit``
    starts it with ``key=gd.random.key(0)``.

    The timed callable is ``StepRunner.train_step`` of a runner built as ``fit`` builds its
    Trainer (same key split, :func:`~gpudl.train.step.supervised_step`, frozen-parameter
    handling, per-step ``fold_in`` key, model state carried from step to step).
    """
    model = get_model(model_name)
    x, y = asarray(x_host, device=dev), asarray(y_host, device=dev)
    init_key, _, step_key = run_keys(gdr.key(0))
    params, state = model.init(init_key, x)
    step = supervised_step(model, resolve_loss("cross_entropy"), _optimizer(), params)
    runner = StepRunner(step, params, state, step.optimizer.init(params), step_key)
    return functools.partial(runner.train_step, x, y)


def bench_model(model_name: str = "lenet5", batch_size: int = 128, steps: int = 50,
                devices: Sequence[str] = ("cpu", "cuda"), warmup: int = 5) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup``) of ``model_name`` on each device."""
    for arg, value, least in (("batch_size", batch_size, 1), ("steps", steps, 1),
                              ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ConfigError(f"bench_model: {arg} must be an integer >= {least}, got {value!r}")
    names = [d.strip().lower() for d in devices if d.strip()]
    unknown = [d for d in names if d not in ("cpu", "cuda")]
    if unknown or not names:
        raise ConfigError(f"bench_model: devices must be 'cpu' and/or 'cuda', got {list(devices)!r}")
    rows, missing = [], {}
    for dev in dict.fromkeys(names):
        if dev == "cuda":
            usable, reason = probe_cuda()
            if not usable:
                missing["cuda"] = reason
                continue
        with device(dev):
            x_host, y_host = _data(model_name, batch_size)
            step = _step_fn(model_name, x_host, y_host, dev)
            # fit checks (x, y) labels once on the host, not in every step: so does the bench
            with labels_within(host_label_bounds(y_host)):
                stats = time_fn(step, dev, warmup=warmup, repeats=steps)
            mem = memory_info()
        peak = mem.get("pool_total") if dev == "cuda" else mem.get("peak_rss")
        rows.append({"device": dev, **stats, "samples_per_s": batch_size / stats["median_s"],
                     "peak_memory_bytes": peak})
    by_dev = {r["device"]: r for r in rows}
    speedup = None
    if "cpu" in by_dev and "cuda" in by_dev:
        speedup = by_dev["cpu"]["median_s"] / by_dev["cuda"]["median_s"]
    return {"model": model_name, "batch_size": batch_size, "steps": steps, "warmup": warmup,
            "rows": rows, "missing": missing, "gpu_over_cpu_speedup": speedup,
            "machine": machine_info()}


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'device':8s} {'median ms':>10s} {'IQR ms':>8s} {'samples/s':>11s} "
            f"{'peak MiB':>9s} {'first call s':>12s}")
    lines = [f"{report['model']}, batch {report['batch_size']}, {report['steps']} timed steps "
             f"after {report['warmup']} warm-up", head, "-" * len(head)]
    for r in report["rows"]:
        peak = r["peak_memory_bytes"] / 2**20 if r["peak_memory_bytes"] else float("nan")
        lines.append(f"{r['device']:8s} {r['median_s'] * 1e3:10.2f} {r['iqr_s'] * 1e3:8.2f} "
                     f"{r['samples_per_s']:11.1f} {peak:9.1f} {r['first_call_s']:12.2f}")
    for dev, why in report["missing"].items():
        lines.append(f"{dev:8s} unavailable: {why}")
    if report["gpu_over_cpu_speedup"] is not None:
        lines.append(f"GPU/CPU speedup: {report['gpu_over_cpu_speedup']:.1f}x")
    name = report["machine"].get("gpu_name")
    lines.append(f"machine: {report['machine']['cpu_count']} CPU cores"
                 + (f", GPU {name}" if name else ", no GPU"))
    if report["machine"].get("blas_kernels_problem"):  # the CPU row is slower than it need be
        lines.append(f"note: {report['machine']['blas_kernels_problem']}; `gpudl doctor` "
                     "names the fix")
    return "\n".join(lines)


def save_json(report: dict[str, Any], path: str) -> None:
    """Write the report (machine and device names included) as indented JSON."""
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=str)


def plot(report: dict[str, Any], path: str) -> None:
    """Bar chart of training samples/s per device (IQR as error bars), saved to ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no global backend switch

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    devs = [r["device"] for r in report["rows"]]
    ax.bar(devs, [r["samples_per_s"] for r in report["rows"]],
           yerr=[r["samples_per_s"] * r["iqr_s"] / r["median_s"] for r in report["rows"]])
    ax.set_ylabel("training samples / s")
    name = report["machine"].get("gpu_name")
    ax.set_title(f"{report['model']} batch {report['batch_size']}"
                 + (f" ({name})" if name else " (no GPU)"))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
