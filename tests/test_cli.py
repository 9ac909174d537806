"""`gpudl doctor | bench | train`, in-process through cli.main (plus one real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpudl import cli
from gpudl.backend import probe_cuda


def test_doctor_prints_device_reason_and_a_fix(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    usable, reason = probe_cuda()
    assert "device: " in out and "gpudl 0." in out and "NumPy" in out
    assert "BLAS" in out and "kernels:" in out
    if not usable:
        assert "device: cpu (" in out
        assert f"GPU: none usable ({reason})" in out
        assert "\nfix: " in "\n" + out  # a line that says what to do
    else:  # pragma: no cover - GPU machines
        assert "GPU: " in out and "compute" in out


def test_doctor_runs_as_a_module_and_as_the_console_script():
    env = {**os.environ, "GPUDL_DEVICE": "auto"}
    res = subprocess.run([sys.executable, "-m", "gpudl.cli", "doctor"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "device: " in res.stdout
    script = os.path.join(os.path.dirname(sys.executable), "gpudl")
    if os.path.exists(script):  # installed with `pip install -e .`
        res = subprocess.run([script, "doctor"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "device: " in res.stdout


def test_bench_writes_json_with_a_cpu_row_and_why_cuda_is_missing(tmp_path, capsys):
    """Needs gpudl.optim.sgd."""
    path, png = tmp_path / "out" / "bench.json", tmp_path / "bench.png"
    assert cli.main(["bench", "--model", "mlp", "--batch-size", "8", "--steps", "3",
                     "--warmup", "1", "--devices", "cpu,cuda", "--json", str(path),
                     "--plot", str(png)]) == 0
    report = json.loads(path.read_text())
    rows = {r["device"]: r for r in report["rows"]}
    assert "cpu" in rows and rows["cpu"]["repeats"] == 3
    assert rows["cpu"]["median_s"] > 0 and rows["cpu"]["samples_per_s"] > 0
    usable, reason = probe_cuda()
    if not usable:
        assert report["missing"] == {"cuda": reason} and report["gpu_over_cpu_speedup"] is None
    assert report["machine"]["cpu_count"] >= 1 and report["batch_size"] == 8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "cpu" in out and f"wrote {path}" in out
    if not usable:
        assert f"cuda     unavailable: {reason}" in out


def test_train_digits_prints_the_test_accuracy(tmp_path, capsys):
    """Needs gpudl.optim.sgd. digits are 8x8, so the default model for them is the MLP."""
    args = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
            "--lr", "0.05", "--device", "cpu", "--checkpoint-dir", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "training mlp on digits" in out
    line = [x for x in out.splitlines() if x.startswith("test accuracy:")]
    assert len(line) == 1 and "held-out images" in line[0]
    assert float(line[0].split()[2]) > 0.5  # one epoch of an MLP on digits
    assert (tmp_path / "last.npz").exists()
    # --resume continues after the saved epoch: with --epochs 1 nothing is left to train
    assert cli.main(args + ["--resume", "--epochs", "2", "--verbose", "0"]) == 0
    assert "test accuracy:" in capsys.readouterr().out


def test_train_rejects_lenet5_on_8x8_digits_with_a_hint():
    with pytest.raises(SystemExit, match="lenet5 expects 28x28.*--model mlp"):
        cli.main(["train", "--dataset", "digits", "--model", "lenet5", "--epochs", "1"])
    with pytest.raises(SystemExit, match="not an image classifier"):
        cli.main(["train", "--dataset", "digits", "--model", "resnet9000"])
    with pytest.raises(SystemExit, match="not an image classifier"):
        cli.main(["train", "--dataset", "digits", "--model", "vae"])
    with pytest.raises(SystemExit):  # argparse: unknown dataset
        cli.main(["train", "--dataset", "imagenet"])
