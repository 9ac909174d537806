"""The timing harness, reports and plots (CPU here; the cuda rows run on GPU machines)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gpudl.backend import probe_cuda
from gpudl.bench import bench_model, format_table, machine_info, summarize, time_fn
from gpudl.bench.train_step import plot, save_json
from gpudl.errors import ConfigError


def test_summarize_against_numpy():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert s["median_s"] == 2.5 and s["min_s"] == 1.0 and s["max_s"] == 10.0
    assert s["repeats"] == 4
    q1, q3 = np.percentile([1, 2, 3, 10], [25, 75])
    assert s["iqr_s"] == pytest.approx(q3 - q1)


def test_time_fn_on_cpu_counts_calls_and_times_them():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.002)

    stats = time_fn(work, device="cpu", warmup=2, repeats=5)
    assert len(calls) == 1 + 1 + 5  # first call, one more warm-up, timed repeats
    assert stats["repeats"] == 5 and 0.0015 < stats["median_s"] < 0.5
    assert stats["first_call_s"] > 0


@pytest.mark.parametrize("kwargs,match", [
    ({"repeats": 0}, "repeats must be an int >= 1"),  # a bare IndexError in summarize
    ({"repeats": -2}, "repeats must be an int >= 1"), ({"warmup": -1}, "warmup must be"),
    ({"repeats": 2.5}, "repeats must be"), ({"device": "tpu"}, "device must be 'cpu' or")])
def test_time_fn_refuses_counts_and_devices_it_cannot_honour(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        time_fn(lambda: None, **{"device": "cpu", **kwargs})


def test_machine_info_names_the_machine():
    info = machine_info()
    for key in ("gpudl_version", "python", "numpy_version", "cpu", "cpu_count", "blas",
                "cuda_usable", "cuda_reason"):
        assert key in info
    usable, reason = probe_cuda()
    assert info["cuda_usable"] == usable and info["cuda_reason"] == reason
    from gpudl.bench import blas_kernels

    assert info["openblas_kernels"] == blas_kernels.loaded_cores()
    cpu = blas_kernels.read_cpu()  # /proc/cpuinfo where there is one
    assert info["cpu_id"] == (cpu.describe() if cpu else None)
    if cpu and cpu.name:
        assert info["cpu"] == cpu.name  # the marketing name, not platform's "x86_64"
    problem = blas_kernels.slow_kernel_problem(blas_kernels.read_cpu(), info["openblas_kernels"])
    assert info["blas_kernels_problem"] == (problem[0] if problem else None)


def test_the_table_notes_blas_kernels_that_forgo_avx512():
    report = _report()
    assert "note:" not in format_table(report)
    report["machine"]["blas_kernels_problem"] = "NumPy's OpenBLAS runs its Haswell kernels"
    assert format_table(report).splitlines()[-1] == (
        "note: NumPy's OpenBLAS runs its Haswell kernels; `gpudl doctor` names the fix")


def _report():
    row = {"device": "cpu", "first_call_s": 0.5, "median_s": 0.01, "iqr_s": 0.001,
           "min_s": 0.009, "max_s": 0.02, "repeats": 3, "samples_per_s": 800.0,
           "peak_memory_bytes": 200 * 2**20}
    return {"model": "mlp", "batch_size": 8, "steps": 3, "warmup": 1, "rows": [row],
            "missing": {"cuda": "no NVIDIA driver is installed"}, "gpu_over_cpu_speedup": None,
            "machine": {"cpu_count": 2}}


def test_format_table_and_json_and_plot(tmp_path):
    table = format_table(_report())
    assert "mlp, batch 8, 3 timed steps after 1 warm-up" in table
    assert "cpu" in table and "10.00" in table and "800.0" in table and "200.0" in table
    assert "cuda     unavailable: no NVIDIA driver is installed" in table
    assert "no GPU" in table
    path = tmp_path / "sub" / "r.json"
    save_json(_report(), str(path))
    assert json.loads(path.read_text())["missing"]["cuda"].startswith("no NVIDIA")
    png = tmp_path / "r.png"
    plot(_report(), str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_model_cpu_row_and_missing_cuda():
    """Needs gpudl.optim.sgd."""
    report = bench_model("mlp", batch_size=8, steps=3, devices=["cpu", " cuda"], warmup=1)
    assert [r["device"] for r in report["rows"]][0] == "cpu"
    cpu = report["rows"][0]
    assert cpu["repeats"] == 3 and cpu["samples_per_s"] == pytest.approx(8 / cpu["median_s"])
    usable, reason = probe_cuda()
    if not usable:
        assert report["missing"] == {"cuda": reason}
    json.dumps(report, default=str)  # serialisable


def test_bench_rejects_a_model_that_is_not_an_image_classifier():
    from gpudl.bench.train_step import bench_model

    with pytest.raises(ValueError, match="not an image classifier"):
        bench_model("vae", batch_size=2, steps=1, devices=["cpu"])


def test_bench_times_exactly_the_step_fit_runs(monkeypatch):
    """The timed callable is fit's StepRunner.train_step over supervised_step's step, keyed
    and started as fit starts it: one bench step and one fit step from the same start give
    bitwise the same parameters, model state and optimizer state, through the same calls."""
    import gpudl as gd
    from gpudl import optim
    from gpudl.bench import train_step as bench_mod
    from gpudl.train.loop import Trainer
    from gpudl.train.step import StepRunner, TrainStep

    calls = []
    real = TrainStep.__call__

    def spy(self, params, state, opt_state, key, batch, **kw):
        calls.append((self.objective.__qualname__, np.asarray(key), kw))
        return real(self, params, state, opt_state, key, batch, **kw)

    monkeypatch.setattr(TrainStep, "__call__", spy)

    def model(name):  # dropout and BatchNorm: the step's key and state show in the numbers
        return gd.nn.Sequential([gd.nn.Flatten(), gd.nn.Dense(16), gd.nn.BatchNorm1d(),
                                 gd.nn.ReLU(), gd.nn.Dropout(0.5), gd.nn.Dense(10)])

    monkeypatch.setattr(bench_mod, "get_model", model)
    x, y = bench_mod._data("mlp", 8)
    timed = bench_mod._step_fn("mlp", x, y, "cpu")
    assert timed.func.__func__ is StepRunner.train_step is Trainer.train_step
    runner = timed.func.__self__
    timed()
    h = gd.fit(model("mlp"), (x, y), loss="cross_entropy",  # fit inits the model itself
               optimizer=optim.sgd(0.01, momentum=0.9), epochs=1, batch_size=8, shuffle=False,
               key=gd.random.key(0), verbose=0)
    ours, fits = (runner.params, runner.state, runner.opt_state), (h.params, h.state, h.opt_state)
    assert len(gd.tree.tree_leaves(ours)) == len(gd.tree.tree_leaves(fits))
    for a, b in zip(gd.tree.tree_leaves(ours), gd.tree.tree_leaves(fits)):
        assert np.array_equal(a, b)
    assert len(calls) == 2 and calls[0][0] == calls[1][0]
    assert np.array_equal(calls[0][1], calls[1][1]) and calls[0][2] == calls[1][2]


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"warmup": -1}, "warmup must be an integer >= 0"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"devices": ["cpu", "tpu"]}, "devices must be 'cpu' and/or 'cuda'"),
    ({"devices": []}, "devices must be"),
])
def test_bench_model_checks_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench_model("mlp", **{"batch_size": 2, "steps": 1, "devices": ["cpu"], **kwargs})


def test_usable_cores_is_the_affinity_capped_by_the_container_quota(monkeypatch):
    from gpudl.bench import device_info

    monkeypatch.setattr(device_info.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3},
                        raising=False)
    monkeypatch.setattr(device_info, "_cgroup_cpu_limit", lambda: None)
    assert device_info.usable_cores() == 4
    monkeypatch.setattr(device_info, "_cgroup_cpu_limit", lambda: 1.5)  # docker --cpus 1.5
    assert device_info.usable_cores() == 2
    monkeypatch.setattr(device_info, "_cgroup_cpu_limit", lambda: 16.0)
    assert device_info.usable_cores() == 4


def test_thread_pools_from_threadpoolctl_or_the_environment(monkeypatch):
    import sys

    from gpudl.bench import device_info

    pytest.importorskip("threadpoolctl")
    pools = device_info.thread_pools()
    assert pools and {p["source"] for p in pools} == {"threadpoolctl"}
    assert any(p["api"] == "blas" and p["threads"] >= 1 for p in pools)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    for var in device_info.ALL_THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert device_info.thread_pools() == []
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert device_info.thread_pools() == [{"api": "blas", "library": "openblas", "threads": 4,
                                           "source": "env OPENBLAS_NUM_THREADS"}]
    assert device_info.blas_info()["blas_threads"] == {"OPENBLAS_NUM_THREADS": "4"}
