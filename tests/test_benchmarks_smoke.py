"""Smoke tests of the benchmark harness: kernels.py --quick, bandwidth.py, gpu_check --dry-run.

The scripts run as subprocesses (as ``make gpu-check`` runs them) and must write valid JSON
that never invents a figure: without a GPU every GPU row and target says why it is absent.
The pure helpers (ratios, targets, pytest-count parsing, device slugs) are checked on
hand-made rows, so the GPU-side logic is exercised here too.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpudl.backend import probe_cuda

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
GPU, GPU_REASON = probe_cuda()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return proc


def _check_kernels_json(proc, out: Path, modules: set[str]) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert set(data["modules"]) == modules
    for name, mod in data["modules"].items():
        assert mod["status"] in ("ok", "missing", "error")
        if mod["status"] != "ok":  # a module that did not run says why, in a row too
            assert mod["reason"]
            assert any(r.get("module") == name and r.get("reason") for r in data["rows"])
    timed = [r for r in data["rows"] if r.get("median_s") is not None]
    for r in timed:
        assert r["median_s"] > 0 and r["device_name"] and r["impl"]
    assert len(data["targets"]) == 5
    assert all(t["verdict"] in ("PASS", "MISS", "UNMEASURED") and t["detail"]
               for t in data["targets"])
    if not GPU:
        assert not [r for r in timed if r["device"] == "cuda"]
        assert all(t["verdict"] == "UNMEASURED" for t in data["targets"])
        assert any("GPU rows unavailable" in n for n in data["notes"])
        assert data["copy_bandwidth"]["gpu"]["status"] == "unavailable"
    assert "targets (informational)" in proc.stdout
    return data


def test_kernels_quick_writes_json(tmp_path):
    # One real module plus one that does not exist: both paths, in a few seconds.
    out = tmp_path / "k.json"
    proc = _run("benchmarks/kernels.py", "--quick", "--json", str(out),
                "--modules", "kernels_cross_entropy,kernels_not_written")
    data = _check_kernels_json(proc, out, {"kernels_cross_entropy", "kernels_not_written"})
    assert data["modules"]["kernels_cross_entropy"]["status"] == "ok"
    assert data["modules"]["kernels_not_written"]["status"] == "missing"
    assert any(r.get("impl") == "numpy-twin" or r.get("device") == "cuda" for r in data["rows"])


def test_bandwidth_writes_json(tmp_path):
    out = tmp_path / "bw.json"
    proc = _run("benchmarks/bandwidth.py", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["cpu"]["gbps"] > 0 and data["cpu"]["bytes_moved"] == 2 * 64 * 2**20
    if GPU:
        assert data["gpu"]["ceiling_gbps"] > 0 and data["gpu"]["copy_verified"]
    else:
        assert data["gpu"] == {"status": "unavailable", "reason": GPU_REASON}


@pytest.mark.skipif(GPU, reason="the no-GPU dry run; a GPU machine runs the real gpu-check")
def test_gpu_check_dry_run_without_gpu(tmp_path):
    out = tmp_path / "report"
    # compile_check and kernels are covered elsewhere (make test, the test above).
    proc = _run("benchmarks/gpu_check.py", "--out", str(out), "--dry-run",
                "--skip", "compile_check,kernels", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (out / "summary.md").read_text()
    assert "No GPU: " + GPU_REASON in md
    [summary_path] = out.glob("*-no-gpu.json")
    summary = json.loads(summary_path.read_text())
    assert summary["gpu_available"] is False and summary["no_gpu_reason"] == GPU_REASON
    assert summary["device_name"] == "cpu (no GPU)"
    assert summary["steps"]["gpu_tests"]["status"] == "ok"
    assert summary["gpu_tests"]["counts"].get("passed", 0) == 0  # all skipped without a GPU
    assert summary["steps"]["kernels"]["status"] == "skipped"
    assert summary["memcheck"]["status"] in ("unavailable", "skipped")
    assert summary["bandwidth"]["gpu"]["status"] == "unavailable"
    assert summary["overhead"]["device_name"] == "cpu (no GPU)"
    for log in ("gpu-tests.txt", "bandwidth.json", "overhead.json", "machine.json"):
        assert (out / log).is_file()


def test_gpu_check_without_gpu_exits_2(tmp_path):
    if GPU:
        pytest.skip("has a GPU")
    proc = _run("benchmarks/gpu_check.py", "--out", str(tmp_path), "--results-dir",
                str(tmp_path), "--skip",
                "compile_check,gpu_tests,bandwidth,kernels,overhead,memcheck")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "NO GPU" in proc.stdout


def test_helpers():
    gc = _load("gpu_check")
    assert gc.slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gc.parse_pytest_counts("x\n3 failed, 10 passed, 2 skipped, 1 error in 5.1s\n") == {
        "failed": 3, "passed": 10, "skipped": 2, "error": 1}
    assert gc.parse_pytest_counts("== 94 skipped, 466 deselected in 2.80s ==") == {
        "skipped": 94, "deselected": 466}
    assert gc.parse_pytest_counts("no summary") == {}


def _row(bench, impl, ms, **kw):
    return {"bench": bench, "device": "cuda", "device_name": "GPU X", "impl": impl,
            "median_s": ms / 1e3, **kw}


def test_ratios_and_targets_on_made_up_rows():
    k = _load("kernels")
    ce = dict(N=8192, C=32768)
    lstm = dict(hidden=512, batch=64, steps=25, input=512)
    gb = 2 * 8192 * 32768 * 4 / 1e9
    rows = [
        _row("softmax_cross_entropy_fwd_bwd", "gpudl-fused", 1.0, gbps=gb / 1e-3, **ce),
        _row("softmax_cross_entropy_fwd_bwd", "cupy-composite", 4.0, gbps=gb / 4e-3, **ce),
        _row("softmax_cross_entropy_fwd_bwd", "torch", 3.0, gbps=gb / 3e-3, **ce),
        _row("conv2d_fwd_bwd", "gpudl-fused", 3.0, label="vgg16-conv1", N=8),
        _row("conv2d_fwd_bwd", "torch-cudnn", 1.0, label="vgg16-conv1", N=8),
        _row("conv2d_fwd_bwd", "gpudl-fused", 1.5, label="vgg16-conv3", N=8),
        _row("conv2d_fwd_bwd", "torch-cudnn", 1.0, label="vgg16-conv3", N=8),
        _row("lstm_seq_fwd_bwd", "gpudl-fused", 12.0, **lstm),
        _row("lstm_seq_fwd_bwd", "torch-cudnn", 10.0, **lstm),
        _row("lstm_seq_fwd_bwd", "torch-cell-loop", 30.0, **lstm),
    ]
    k.add_ratios(rows)
    assert rows[0]["speedup_vs"] == pytest.approx({"cupy-composite": 4.0, "torch": 3.0})
    assert k.shape_of(rows[0]) == (("N", 8192), ("C", 32768))
    assert "speedup_vs" in rows[3] and rows[3]["speedup_vs"] == pytest.approx(
        {"torch-cudnn": 1 / 3})  # conv1 and conv3 are separate groups
    modules = {m: {"status": "ok"} for m in k.MODULES}
    # copy ceiling 1.2 * the fused figure -> 83%: PASS.
    verdicts = [t["verdict"] for t in k.check_targets(rows, modules, 1.2 * gb / 1e-3, "")]
    assert verdicts == ["PASS", "PASS", "MISS", "PASS", "PASS"]
    # No copy bandwidth, no torch row: UNMEASURED with a reason, never a number.
    no_torch = [r for r in rows if not r["impl"].startswith("torch")]
    targets = k.check_targets(no_torch, modules, None, "no GPU")
    assert [t["verdict"] for t in targets] == ["UNMEASURED"] * 5
    assert "no GPU" in targets[0]["detail"]
    table = k.table(rows)
    assert "4.00x" in table and "3.00x torch" in table


@pytest.mark.parametrize("name", ["kernels_cross_entropy", "kernels_conv", "kernels_rnn"])
def test_tiny_run_in_process(name):
    # report["tiny"] on this machine's branch (the GPU branch is run on the CPU kernel
    # emulator by tests/kernel_emulation/test_emulated_benchmarks.py).
    report = {"tiny": True}
    rows = _load(name).run(report)
    timed = [r for r in rows if r.get("median_s") is not None]
    assert timed and all(r["median_s"] > 0 and r["repeats"] == 2 for r in timed)
    if not GPU:
        assert rows[-1]["status"] == "unavailable" and rows[-1]["reason"] == GPU_REASON
        assert any("GPU rows unavailable" in n for n in report["notes"])


def test_tiny_flag_crosses_into_the_module_process(tmp_path):
    bw = tmp_path / "bw.json"
    proc = _run("benchmarks/bandwidth.py", "--tiny", "--json", str(bw))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(bw.read_text())["cpu"]["size_mib"] == 1
    out = tmp_path / "k.json"
    proc = _run("benchmarks/kernels.py", "--tiny", "--json", str(out), "--bandwidth-json",
                str(bw), "--modules", "kernels_rnn")
    data = _check_kernels_json(proc, out, {"kernels_rnn"})
    assert data["tiny"] and data["modules"]["kernels_rnn"]["tiny"]
    timed = [r for r in data["rows"] if r.get("median_s") is not None]
    configs = {(r["hidden"], r["batch"], r["steps"]) for r in timed}
    assert configs == set(_load("kernels_rnn").TINY_CONFIGS)


def _stub_sanitizer(tmp_path: Path, errors: int, rc: int) -> str:
    """A compute-sanitizer stand-in: prints what memcheck prints after pytest, exits ``rc``."""
    path = tmp_path / "compute-sanitizer"
    path.write_text("#!/bin/sh\necho '12 passed, 3 deselected in 9.10s'\n"
                    f"echo '========= ERROR SUMMARY: {errors} errors'\nexit {rc}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("errors, rc, status", [(0, 0, "clean"), (2, 86, "errors")])
def test_gpu_check_memcheck_step_on_a_gpu(tmp_path, monkeypatch, errors, rc, status):
    # The GPU-only branch of gpu_check (memcheck with a sanitizer found) and the summary
    # of a GPU run: here with a stub sanitizer and made-up GPU figures.
    gc = _load("gpu_check")
    monkeypatch.setattr(gc, "find_sanitizer", lambda: _stub_sanitizer(tmp_path, errors, rc))
    runner = gc.Runner(tmp_path, budget_s=60)
    record = gc.memcheck_step(runner, gpu=True)
    assert record["status"] == status and record["errors"] == errors and record["rc"] == rc
    assert record["tests"] == {"passed": 12, "deselected": 3} and record["files"]
    assert "--tool memcheck" in runner.steps["memcheck"]["command"]
    summary = {"device_name": "NVIDIA X", "date": "2025-01-31", "gpu_available": True,
               "no_gpu_reason": None, "dry_run": False, "commit": "abc",
               "machine": {"cupy_version": "13.6", "driver_version": "580", "python": "3.11"},
               "steps": runner.steps, "gpu_tests": {"counts": {"passed": 494}},
               "memcheck": record,
               "bandwidth": {"gpu": {"ceiling_gbps": 3012.5, "ceiling_method": "copy-kernel"}}}
    gc.write_summary_md(tmp_path / "summary.md", summary, "kernel table")
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# gpu-check on NVIDIA X (2025-01-31)") and "No GPU" not in md
    assert "copy bandwidth ceiling: 3012.5 GB/s (copy-kernel)" in md
    assert f"memcheck: {status}" in md and "kernel table" in md
