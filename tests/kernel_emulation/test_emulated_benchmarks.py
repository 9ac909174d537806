"""Every benchmark's GPU branch, in-process on the emulated "cuda" device at tiny shapes.

``make gpu-check`` runs benchmarks/ on a borrowed GPU with a fixed time budget, and a crash
in a branch only a GPU takes would waste it. With the ``emulated_cuda`` fixture gpudl's
"cuda" device is the CPU kernel emulator, so each module's ``run({"tiny": True})`` takes
its GPU branch: CUDA-event timing, cuda rows, gpudl's kernels (asserted launched), ratios
and targets computed on cuda rows, and the notes that say why the torch-CUDA rows are
absent (torch here is CPU-only or missing). The figures are emulator timings and mean
nothing; only the code paths and the report's shape are checked.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from emulated_cupy import EMULATED_DEVICE_NAME

import gpudl as gd
from gpudl import backend
from gpudl.bench import bench_model, format_table, time_fn

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    """A top-level script under a private name (``kernels`` would clash with kernels/)."""
    spec = importlib.util.spec_from_file_location(f"_emu_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # it puts benchmarks/ on sys.path: `common`, kernels_*
    return module


KERNELS = _load("kernels")
common = importlib.import_module("common")

# module -> (implementations its GPU branch times, kernels it must launch, GPU clock): the
# exact expectations for these modules. Every module of benchmarks/kernels.py's MODULES runs
# (a new kernel's benchmark needs no entry here): on cuda rows, launching kernels, timed by
# a GPU clock.
EXPECTED = {
    "kernels_cross_entropy": (
        {"gpudl-fused", "gpudl-fused-kernel", "gpudl-recompute", "gpudl-autodiff",
         "cupy-composite"},
        {"sce_forward_backward", "sce_forward", "sce_backward"}, "cupyx"),
    "kernels_conv": (
        {"gpudl", "gpudl-composite", "gpudl-igemm", "fwd-im2col", "fwd-igemm",
         "bwd-data-im2col", "bwd-data-igemm"},
        {"conv2d_im2col", "conv2d_col2im", "conv2d_igemm_forward", "conv2d_igemm_backward_data"},
        "events"),
    "kernels_rnn": ({"gpudl-fused", "gpudl-composite"},
                    {"lstm_pointwise_forward", "lstm_pointwise_backward"}, "events"),
    "kernels_pool": ({"gpudl-kernel", "gpudl-autodiff"},
                     {"max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
                      "avg_pool2d_backward"}, "cupyx"),
    "kernels_norm": ({"gpudl-kernel", "gpudl-autodiff"},
                     {"batch_norm_stats", "batch_norm_apply", "batch_norm_backward_reduce",
                      "batch_norm_backward_apply", "layer_norm_forward", "layer_norm_backward",
                      "layer_norm_backward_params"}, "cupyx"),
    "kernels_optim": ({"gpudl-flat", "gpudl-update", "gpudl-composite"},
                      {"adam_update", "sgd_update"}, "cupyx"),
}


@pytest.fixture(autouse=True)
def torch_cuda_missing(monkeypatch) -> str:
    """Why torch's CUDA rows are absent: as on CI, torch is CPU-only (or not installed),
    also on a machine whose torch has CUDA, so the rows checked here are the same anywhere."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    why = common.torch_status(True)
    assert why in ("torch has no CUDA", "torch is not installed")
    return why


@pytest.fixture
def clocks(emulated_cuda, monkeypatch):
    """Counts of the GPU clocks used: CuPy events recorded, cupyx.profiler.benchmark calls."""
    cupy = backend.xp_for("cuda")
    counts = {"events": 0, "cupyx": 0}

    class CountingEvent(cupy.cuda.Event):
        def record(self, stream=None):
            counts["events"] += 1
            super().record(stream)

    profiler = sys.modules["cupyx.profiler"]
    real_benchmark = profiler.benchmark

    def counting_benchmark(fn, *args, **kwargs):
        counts["cupyx"] += 1
        return real_benchmark(fn, *args, **kwargs)

    monkeypatch.setattr(cupy.cuda, "Event", CountingEvent)
    monkeypatch.setattr(profiler, "benchmark", counting_benchmark)
    return counts


def _base_names(launched: list[str]) -> set[str]:
    return {name.split("<")[0] for name in launched}


def _check_cuda_rows(rows: list[dict], repeats: int = common.TINY_REPEATS) -> None:
    assert rows
    for r in rows:
        assert r.get("status") is None, r  # no "unavailable" row: the GPU branch ran
        assert r["device"] == "cuda" and r["device_name"] == EMULATED_DEVICE_NAME
        assert r["median_s"] > 0 and r["min_s"] > 0 and r["first_call_s"] > 0
        assert r["repeats"] == repeats and r["dtype"] == "float32"


def test_every_kernel_benchmark_module_is_run_here():
    assert set(EXPECTED) <= set(KERNELS.MODULES)


@pytest.mark.parametrize("name", KERNELS.MODULES)
def test_kernel_module_gpu_branch(name, emulated_cuda, clocks, torch_cuda_missing):
    module = importlib.import_module(name)
    report = {"tiny": True, "notes": []}
    rows = module.run(report)
    _check_cuda_rows(rows)
    assert emulated_cuda.launched  # gpudl's kernels ran, not a NumPy fallback
    assert clocks["events"] + clocks["cupyx"] > 0  # a GPU clock, not the CPU's perf_counter
    assert not any("GPU rows unavailable" in n for n in report["notes"])
    if name not in EXPECTED:
        return
    impls, kernels, clock = EXPECTED[name]
    found = {r["impl"] for r in rows}
    assert kernels <= _base_names(emulated_cuda.launched)
    assert clocks[clock] > 0
    # Every implementation but torch's CUDA ones (absent, no made-up row; a note says why).
    assert found == impls
    assert f"{name}: torch rows skipped ({torch_cuda_missing})" in report["notes"]


def test_tiny_shapes_are_the_tiny_ones(emulated_cuda):
    ce, conv, rnn = (importlib.import_module(f"kernels_{n}") for n in ("cross_entropy", "conv", "rnn"))
    assert {(r["N"], r["C"]) for r in ce.run({"tiny": True})} == set(ce.TINY_SHAPES)
    rows = conv.run({"tiny": True})
    assert {r["layer"] for r in rows} == {layer[0] for layer in conv.TINY_LAYERS}
    assert {r["batch"] for r in rows} == {conv.TINY_BATCH}
    assert {(r["hidden"], r["batch"], r["steps"]) for r in rnn.run({"tiny": True})} == set(
        rnn.TINY_CONFIGS)
    pool = importlib.import_module("kernels_pool")
    assert {r["layer"] for r in pool.run({"tiny": True})} == {layer[0] for layer in pool.TINY_LAYERS}


def test_kernels_driver_on_cuda_rows(emulated_cuda, tmp_path):
    bandwidth = _load("bandwidth")
    bw_path = common.write_json(tmp_path / "bw.json", bandwidth.measure(tiny=True))
    result = KERNELS.run_all(False, isolated=False, bandwidth_json=str(bw_path), tiny=True)
    json.dumps(result, default=KERNELS._plain)  # what --json writes
    assert result["device_name"] == EMULATED_DEVICE_NAME and result["tiny"]
    assert all(m["status"] == "ok" and m["tiny"] for m in result["modules"].values())
    rows = result["rows"]
    _check_cuda_rows(rows)
    assert not any("GPU rows unavailable" in n for n in result["notes"])
    assert result["copy_bandwidth"]["gpu"]["ceiling_gbps"] > 0

    # Ratios: baseline time / this time within one (bench, device, shape) group.
    by = {(r["bench"], KERNELS.shape_of(r), r["impl"]): r for r in rows}
    for (bench, shape, impl), r in by.items():
        comp = {k: v for k, v in r["speedup_vs"].items() if KERNELS.is_composite(k)}
        for base, ratio in comp.items():
            assert ratio == pytest.approx(by[(bench, shape, base)]["median_s"] / r["median_s"])
        if impl in ("gpudl-fused", "gpudl"):
            assert comp, r  # every fused/kernel row has its composite beside it
    # Targets: no tiny row is at a target's shape and no torch CUDA row exists, so each
    # one is UNMEASURED with its reason, and carries no figure.
    targets = result["targets"]
    assert len(targets) == 5 and all(t["verdict"] == "UNMEASURED" for t in targets)
    assert all(set(t) == {"target", "verdict", "detail"} for t in targets)
    details = [t["detail"] for t in targets]
    assert "--tiny runs tiny shapes only" in details[0] and "--tiny" in details[-1]
    assert details[2] == "no shape has both a gpudl and a torch/cuDNN row"
    text = KERNELS.describe(result)
    assert f"gpudl kernel benchmarks on {EMULATED_DEVICE_NAME}" in text
    assert "targets (informational):" in text and "unavailable" not in text
    assert sum(line.startswith("conv2d_fwd_bwd ") for line in text.splitlines()) == 6

    # The VGG target is evaluated from the measured cuda row once a cuDNN row stands beside
    # it (made up here: torch has no CUDA); the verdict follows the time ratio.
    mine = next(r for r in rows if r["bench"] == "conv2d_fwd_bwd" and r["impl"] == "gpudl"
                and r["layer"] == "vgg-tiny")
    for ref_s, verdict in ((mine["median_s"] / 3, "MISS"), (mine["median_s"], "PASS")):
        cudnn = {**mine, "impl": "torch-cudnn", "median_s": ref_s}
        conv_target = KERNELS.check_targets(rows + [cudnn], result["modules"], None, "")[2]
        assert conv_target["verdict"] == verdict
        assert list(conv_target["ratios"].values()) == [pytest.approx(mine["median_s"] / ref_s)]


def test_bandwidth_gpu_branch(emulated_cuda):
    bandwidth = _load("bandwidth")
    result = bandwidth.measure(tiny=True)
    gpu = result["gpu"]
    assert result["tiny"] and gpu["device_name"] == EMULATED_DEVICE_NAME
    assert gpu["size_mib"] == bandwidth.TINY_MIB and gpu["copy_verified"]
    assert set(gpu["methods"]) == {"memcpy-d2d", "copy-kernel"}
    for m in gpu["methods"].values():
        assert m["repeats"] == common.TINY_REPEATS and m["gbps"] > 0
    assert bandwidth.ceiling_gbps(result) == max(m["gbps"] for m in gpu["methods"].values())
    assert result["cpu"]["size_mib"] == bandwidth.TINY_MIB
    assert "GPU ceiling" in bandwidth.describe(result)


def test_random_speed_gpu_branch(emulated_cuda, capsys, torch_cuda_missing):
    random_speed = _load("random_speed")
    report = {"tiny": True, "notes": []}
    rows = random_speed.run(report)
    cuda = [r for r in rows if r["device"] == "cuda"]
    assert len(cuda) == 2 * 2 * len(random_speed.TINY_SIZES)  # dists x dtypes x sizes
    for r in cuda:
        assert r["device_name"] == EMULATED_DEVICE_NAME
        assert r["gpudl_per_s"] > 0 and r["cupy_per_s"] > 0
        assert r.get("numpy_per_s") is None and r.get("reference_per_s") is None
    assert {"philox_uniform", "philox_normal"} <= _base_names(emulated_cuda.launched)
    assert all(r["torch_per_s"] is None for r in cuda)
    assert any(torch_cuda_missing in n for n in report["notes"])
    assert "cuda   normal  float64" in capsys.readouterr().out


def test_overhead_runs_beside_the_emulated_device(emulated_cuda):
    # No GPU branch: it pins the CPU (the figures are per-op framework cost on NumPy).
    overhead = _load("overhead")
    results = overhead.run(calls=20, repeats=2, chain=5, grad_repeats=2)
    assert set(results) == {"add", "matmul", "tanh"} and gd.get_device() == "cpu"
    assert "untraced" in overhead.report(results)


def test_time_fn_gpu_clocks(emulated_cuda, clocks):
    x = emulated_cuda.to_gpu(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    y = emulated_cuda.to_gpu(np.array([0, 4, 2]))
    fn = gd.value_and_grad(lambda v: gd.functional.softmax_cross_entropy(v, y))
    emulated_cuda.launched.clear()
    stats = time_fn(lambda: fn(x), "cuda", warmup=2, repeats=3, clock="events")
    assert stats["repeats"] == 3 and stats["median_s"] > 0 and stats["first_call_s"] > 0
    sce = [k for k in emulated_cuda.launched if k.startswith("sce_")]
    assert clocks["events"] == 2 * 3 and len(sce) == 1 + 1 + 3  # first, warm-up, 3 timed
    stats = time_fn(lambda: fn(x), "cuda", warmup=3, repeats=4, clock="cupyx")
    assert stats["repeats"] == 4 and clocks["cupyx"] == 1
    times = backend.gpu_benchmark_times(lambda: fn(x), n_repeat=3, n_warmup=1)
    assert np.shape(times) == (3,) and all(t > 0 for t in times)
    # get_elapsed_time refuses an event never recorded, as CUDA does.
    cupy = backend.xp_for("cuda")
    with pytest.raises(RuntimeError, match="recorded"):
        cupy.cuda.get_elapsed_time(cupy.cuda.Event(), cupy.cuda.Event())


def test_time_fn_torch_clock_api(emulated_cuda, monkeypatch):
    """clock="torch" calls torch.cuda's event API as torch defines it (events faked here)."""
    torch = pytest.importorskip("torch")
    import time

    class Event:  # torch.cuda.Event(enable_timing=True): record, synchronize, elapsed_time (ms)
        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            assert enable_timing, "elapsed_time needs enable_timing=True"

        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    stats = time_fn(lambda: sum(range(100)), "cuda", warmup=1, repeats=3, clock="torch")
    assert stats["repeats"] == 3 and stats["median_s"] > 0


def test_train_step_bench_cuda_row(emulated_cuda):
    report = bench_model("lenet5", batch_size=2, steps=2, devices=["cpu", "cuda"], warmup=1)
    assert [r["device"] for r in report["rows"]] == ["cpu", "cuda"] and not report["missing"]
    assert report["gpu_over_cpu_speedup"] > 0
    assert {"conv2d_im2col", "sce_forward_backward"} <= _base_names(emulated_cuda.launched)
    table = format_table(report)
    assert "GPU/CPU speedup" in table and EMULATED_DEVICE_NAME in table
