"""`gpudl doctor | bench | train`, in-process through cli.main (plus real subprocesses)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpudl as gd
from gpudl import cli, models
from gpudl.backend import probe_cuda
from gpudl.cli import train_command as train_cmd
from gpudl.cli.args import image_datasets

README = Path(__file__).resolve().parents[1] / "README.md"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if not x.startswith("gpudl: device auto")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- doctor
def test_doctor_prints_device_reason_and_a_fix(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    usable, reason = probe_cuda()
    assert "device: " in out and "gpudl 0." in out and "NumPy" in out
    assert "BLAS" in out and "kernels:" in out and "usable by this process" in out
    from gpudl.bench import blas_kernels

    cpu = blas_kernels.read_cpu()
    if cpu is not None:  # Linux: the CPU named with vendor, family and model
        assert f" ({cpu.describe()}), " in out.split("\nCPU: ", 1)[1].splitlines()[0]
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


def test_doctor_warns_when_blas_threads_oversubscribe_the_cores(monkeypatch, capsys):
    from gpudl.bench import blas_kernels, device_info

    monkeypatch.setattr(blas_kernels, "loaded_cores", list)  # no kernel-set warning here

    pools = [{"api": "blas", "library": "openblas", "threads": 8, "source": "threadpoolctl"},
             {"api": "openmp", "library": "openmp", "threads": 2, "source": "threadpoolctl"}]
    monkeypatch.setattr(device_info, "thread_pools", lambda: pools)
    monkeypatch.setattr(device_info, "usable_cores", lambda: 2)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    warnings = [x for x in out.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1  # the OpenMP pool fits the cores
    assert "BLAS (openblas) runs 8 threads on 2 usable CPU cores" in warnings[0]
    assert "fix: export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 before starting Python" in out
    assert "threadpool_limits(2)" in out and "no problems found" not in out


def test_doctor_reads_thread_variables_without_threadpoolctl(monkeypatch, capsys):
    from gpudl.bench import device_info

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails: not installed
    for var in device_info.ALL_THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    monkeypatch.setenv("MKL_NUM_THREADS", "many")
    monkeypatch.setattr(device_info, "usable_cores", lambda: 2)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "install threadpoolctl to see" in out
    assert "warning: OpenMP (openmp) runs 16 threads on 2 usable CPU cores (from env " \
           "OMP_NUM_THREADS)" in out
    assert "fix: export OMP_NUM_THREADS=2 before" in out
    assert "warning: MKL_NUM_THREADS='many' is not a thread count" in out
    assert "fix: export MKL_NUM_THREADS=2" in out
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS")
    assert cli.main(["doctor"]) == 0
    assert "warning:" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- flags
BAD_FLAGS = [
    (["train", "--epochs", "-1"], "argument --epochs: expected a positive integer"),
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer"),
    (["train", "--epochs", "two"], "argument --epochs: expected a positive integer, got 'two'"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["train", "--lr", "inf"], "argument --lr: expected a finite number > 0"),
    (["train", "--lr", "-0.1"], "argument --lr: expected a finite number > 0"),
    (["train", "--lr", "0"], "argument --lr: expected a finite number > 0"),
    (["train", "--seed", "-2"], "argument --seed: expected an integer >= 0"),
    (["train", "--model", "lenet"], "unknown model 'lenet'; did you mean 'lenet5'?"),
    (["train", "--model", "vae"], "'vae' is a gpudl model but not an image classifier"),
    (["train", "--dataset", "mnist5k"], "unknown dataset 'mnist5k'; did you mean 'mnist_5k'?"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet' (choose from mnist_5k"),
    (["train", "--device", "gpu"], "unknown device 'gpu'"),
    (["train", "--optimizer", "adamw"], "unknown optimizer 'adamw'; did you mean 'adam'?"),
    (["train", "--lenet-variant", "1989"], "unknown LeNet-5 variant '1989'"),
    (["train", "--out", "weights.pt"], "expected a file name ending in .npz or .safetensors"),
    (["train", "--no-save", "--out", "w.npz"], "not allowed with argument --no-save"),
    (["bench", "--steps", "0"], "argument --steps: expected a positive integer"),
    (["bench", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["bench", "--warmup", "-1"], "argument --warmup: expected an integer >= 0"),
    (["bench", "--model", "resnet-20"], "did you mean 'resnet20'?"),
    (["bench", "--devices", "cpu,tpu"], "unknown device 'tpu'"),
    (["bench", "--devices", ","], "expected devices such as 'cpu,cuda'"),
    (["fly"], "invalid choice: 'fly'"),
    ([], "the following arguments are required"),
    # checked once the run starts, before any training
    (["train", "--dataset", "digits", "--model", "lenet5"],
     "lenet5 expects 28x28 images with 1 channel(s) but digits has 8x8 with 1; use --model mlp"),
    (["train", "--dataset", "digits", "--lenet-variant", "1998"], "applies to lenet5, not mlp"),
    (["train", "--dataset", "mnist"], "mnist reads local files: add --data-dir FOLDER"),
    (["train", "--dataset", "digits", "--data-dir", "."], "digits is shipped"),
    (["train", "--dataset", "cifar10", "--data-dir", "/no/such/folder"], "is not a folder"),
    (["train", "--resume"], "--resume needs --checkpoint-dir"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_and_exit_status_2(argv, message, capsys):
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gpudl") and ": error: " in line
    assert message in line


def test_cuda_when_unusable_is_one_line_and_exit_status_2(capsys):
    usable, reason = probe_cuda()
    if usable:  # pragma: no cover - GPU machines
        pytest.skip("cuda is usable here")
    assert cli.main(["train", "--device", "cuda", "--no-save"]) == 2
    line = _one_error_line(capsys)
    assert f"--device cuda is unusable here: {reason}; use --device cpu" in line
    assert cli.main(["bench", "--devices", "cuda", "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert f"cuda     unavailable: {reason}" in captured.out  # the table, then the error
    assert captured.err.strip() == ("gpudl bench: error: no device could be timed (see the "
                                    "reasons above); add cpu to --devices, or see `gpudl doctor`")


def test_an_output_folder_that_cannot_be_made_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    argv = ["train", "--dataset", "digits", "--device", "cpu", "--out",
            str(tmp_path / "file" / "w.npz")]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing trained
    assert captured.err.startswith("gpudl train: error: --out ") and "cannot create its " \
        "folder" in captured.err and len(captured.err.splitlines()) == 1


def test_bad_flags_through_the_real_command_print_no_traceback():
    for argv in (["bench", "--steps", "0"], ["train", "--lr", "nan"],
                 ["train", "--dataset", "digits", "--model", "lenet5"]):
        res = subprocess.run([sys.executable, "-m", "gpudl.cli", *argv], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize("error, status", [("ShapeError", 2), ("LabelRangeError", 2),
                                           ("KernelError", 1), ("CheckpointError", 1)])
def test_named_errors_inside_a_run_are_one_line(error, status, monkeypatch, capsys):
    import gpudl.errors
    import gpudl.train

    def fit(*args, **kwargs):
        raise getattr(gpudl.errors, error)("op: what went wrong;\n  the fix: do this")

    monkeypatch.setattr(gpudl.train, "fit", fit)
    assert cli.main(["train", "--dataset", "digits", "--device", "cpu", "--no-save"]) == status
    line = _one_error_line(capsys)
    word = "error" if status == 2 else "failed"
    assert line == f"gpudl train: {word}: {error}: op: what went wrong; the fix: do this"


def test_help_lists_every_model_and_dataset(capsys):
    datasets = image_datasets()
    assert set(datasets) == {"mnist_5k", "digits", "mnist", "fashion_mnist", "cifar10"}
    assert [n for n, local in datasets.items() if not local] == ["mnist_5k", "digits"]
    for argv, names in ((["--help"], [*models.IMAGE_CLASSIFIERS, *datasets]),
                        (["train", "--help"], [*models.IMAGE_CLASSIFIERS, *datasets]),
                        (["bench", "--help"], list(models.IMAGE_CLASSIFIERS))):
        assert cli.main(argv) == 0
        text = " ".join(capsys.readouterr().out.split())
        for name in names:
            assert re.search(rf"[ :]{name}[,; )]", text), (argv, name)
        assert "exit status:" in text and "2 the command line asks" in text


# ----------------------------------------------------------------------------- train
def test_the_default_recipe_is_relu_max_pool_lenet5_with_adam():
    ns = cli.build_parser().parse_args(["train"])
    assert (ns.dataset, ns.epochs, ns.batch_size, ns.optimizer, ns.schedule) == (
        "mnist_5k", 5, 64, "adam", "cosine")
    name, kwargs = train_cmd.choose_model(ns, (1, 28, 28))
    assert name == "lenet5" and kwargs == {"activation": "relu", "pool": "max"}
    model = models.get_model(name, **kwargs)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("MaxPool2d") == 2 and "AvgPool2d" not in kinds
    assert {layer.fn.__name__ for layer in model.layers if type(layer).__name__ == "Activation"
            } == {"relu"}
    opt, how = train_cmd.build_optimizer(ns, total_steps=275)
    assert how == "adam lr 0.008, cosine-annealed over 275 steps"
    assert "Adam" in repr(opt.init({"w": np.zeros(2, np.float32)}))
    old = cli.build_parser().parse_args(["train", "--lenet-variant", "1998"])
    assert train_cmd.choose_model(old, (1, 28, 28))[1] == {"activation": "sigmoid", "pool": "avg"}
    digits = cli.build_parser().parse_args(["train", "--dataset", "digits"])
    assert train_cmd.choose_model(digits, (1, 8, 8)) == ("mlp", {})


def test_train_on_the_cpu_notes_blas_kernels_that_forgo_avx512(tmp_path, monkeypatch, capsys):
    from gpudl.bench import blas_kernels

    args = ["train", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--no-save",
            "--verbose", "0"]
    monkeypatch.setattr(blas_kernels, "loaded_cores", lambda: ["Haswell"])
    monkeypatch.setattr(blas_kernels, "read_cpu", lambda: blas_kernels.CpuId(
        "AuthenticAMD", 26, blas_kernels.AVX512_FLAGS))
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    notes = [x for x in lines if x.startswith("note: ")]
    assert len(notes) == 1 and "runs its Haswell kernels (no AVX-512)" in notes[0]
    assert notes[0].endswith("`gpudl doctor` names the fix")
    assert lines.index(notes[0]) == 1  # right after the "training ..." line
    monkeypatch.setattr(blas_kernels, "loaded_cores", lambda: ["SkylakeX"])
    assert cli.main(args) == 0
    assert "note: " not in capsys.readouterr().out


def test_train_saves_weights_that_reproduce_the_printed_accuracy(tmp_path, monkeypatch, capsys):
    """One epoch of the MLP on digits (under a second); the default path is in the cwd."""
    from gpudl import data

    monkeypatch.chdir(tmp_path)
    args = ["train", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
            "--checkpoint-dir", str(tmp_path / "ck")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "training mlp on digits (1257 train / 180 validation / 360 test images) on cpu: " \
           "adam lr 0.008" in out
    line = [x for x in out.splitlines() if x.startswith("test accuracy:")]
    assert len(line) == 1 and "held-out images" in line[0]
    printed = float(line[0].split()[2])
    assert printed > 0.5  # one epoch of an MLP on digits
    assert "saved the trained weights to mlp_digits.npz" in out
    x, y = data.digits()
    _, _, (xte, yte) = data.train_val_test_split(x, y, val=0.1, test=0.2, seed=0)
    model = models.get_model("mlp")
    params, state = model.init(gd.random.key(1), xte[:2])
    loaded = gd.load(tmp_path / "mlp_digits.npz", device="cpu", like=params)
    test = gd.evaluate(model, loaded, state, (xte, yte), metrics=["accuracy"])
    assert f"{test['accuracy']:.4f}" == line[0].split()[2]
    assert (tmp_path / "ck" / "last.npz").exists()
    # --resume continues after the saved epoch: with --epochs 1 nothing is left to train
    out_file = tmp_path / "sub" / "w.npz"
    assert cli.main(args + ["--resume", "--verbose", "0", "--save", str(out_file)]) == 0
    assert f"test accuracy: {printed:.4f}" in capsys.readouterr().out
    assert out_file.is_file()


def test_saved_weights_hold_batchnorm_statistics_beside_their_layer(tmp_path):
    """As torch's state_dict: ``bn1.weight`` next to ``bn1.running_mean``."""
    w = np.ones(2, np.float32)
    params = {"conv1": {"weight": w}, "bn1": {"weight": w, "bias": w}}
    state = {"bn1": {"running_mean": w, "running_var": w}}
    gd.save(tmp_path / "w.npz", train_cmd._state_dict(params, state))
    assert sorted(np.load(tmp_path / "w.npz").files) == [
        "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.weight", "conv1.weight"]
    assert train_cmd._state_dict(params, {}) == params


def test_train_reads_a_local_dataset_from_data_dir(tmp_path, capsys):
    """mnist from IDX files in a folder: its own test split, 10 % of train for validation."""
    rng = np.random.default_rng(0)

    def idx(path, array, code):
        header = bytes([0, 0, code, array.ndim]) + b"".join(
            int(n).to_bytes(4, "big") for n in array.shape)
        path.write_bytes(header + array.tobytes())

    for prefix, n in (("train", 40), ("t10k", 12)):
        idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28),
                                                                   dtype=np.uint8), 0x08)
        idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8),
            0x08)
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model",
                     "mlp", "--epochs", "1", "--device", "cpu", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "on mnist (36 train / 4 validation / 12 test images)" in out
    assert "saved" not in out


@pytest.mark.slow
def test_the_readme_train_command_reaches_95_percent(tmp_path, capsys):
    """The README's command as written: about 30 s on 2 CPU cores."""
    commands = re.findall(r"`(gpudl train [^`]*)`", README.read_text())
    assert commands, "the README shows no gpudl train command"
    argv = shlex.split(commands[0])[1:]
    assert argv[:2] == ["train", "--model"] and "--epochs" in argv
    path = tmp_path / "lenet5.npz"
    assert cli.main(argv + ["--out", str(path)]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy >= 0.95, out
    assert path.is_file() and f"saved the trained weights to {path}" in out


# ----------------------------------------------------------------------------- bench
def test_bench_writes_json_with_a_cpu_row_and_why_cuda_is_missing(tmp_path, capsys):
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
    assert report["machine"]["usable_cores"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "cpu" in out and f"wrote {path}" in out
    if not usable:
        assert f"cuda     unavailable: {reason}" in out


# ----------------------------------------------------------------------------- export
def test_export_writes_an_onnx_file_that_onnxruntime_runs(tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "lenet5.onnx"
    assert cli.main(["export", "--model", "lenet5", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = models.lenet5(activation="relu", pool="max")
    params, state = model.init(0, np.zeros((2, 1, 28, 28), np.float32))
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})
    want = model.apply(params, state, x, train=False)[0]
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-6)


def test_export_reads_the_weights_train_saved(tmp_path, capsys):
    import onnxruntime as ort

    model = models.lenet5(activation="sigmoid", pool="avg")
    params, state = model.init(3, np.zeros((2, 1, 28, 28), np.float32))
    weights = tmp_path / "w.npz"
    gd.save(weights, train_cmd._state_dict(params, state))
    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--model", "lenet5", "--lenet-variant", "1998", "--weights",
                     str(weights), "--out", str(out)]) == 0
    assert f"weights from {weights}" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})
    np.testing.assert_allclose(got, np.asarray(model.apply(params, state, x)[0]), rtol=1e-4,
                               atol=1e-6)


EXPORT_BAD_FLAGS = [
    (["export", "--model", "lenet5"], "the following arguments are required: --out"),
    (["export", "--out", "m.npz"], "expected a file name ending in .onnx"),
    (["export", "--out", "m.onnx", "--weights", "/no/such/file.npz"], "no such file"),
    (["export", "--out", "m.onnx", "--model", "resnet-20"], "did you mean 'resnet20'?"),
    (["export", "--out", "m.onnx", "--model", "mlp", "--lenet-variant", "1998"],
     "applies to lenet5, not mlp"),
    (["export", "--out", "/no/such/folder/m.onnx"], "does not exist"),
]


@pytest.mark.parametrize("argv, message", EXPORT_BAD_FLAGS,
                         ids=[" ".join(a) for a, _ in EXPORT_BAD_FLAGS])
def test_export_bad_flags_are_one_line_and_exit_status_2(argv, message, capsys):
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gpudl export: error: ") and message in line


# ----------------------------------------------------------------------------- launch
def test_launch_runs_each_rank_under_mpiexec_and_python_m_mpi4py(tmp_path, monkeypatch):
    import subprocess as sp
    import types

    from gpudl.distributed import launcher

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    seen = {}

    def fake_run(cmd, env=None, timeout=None):
        seen.update(cmd=cmd, env=env)
        return sp.CompletedProcess(cmd, 3)  # a rank failed: its status is gpudl's

    monkeypatch.setitem(sys.modules, "mpi4py", types.ModuleType("mpi4py"))
    monkeypatch.setattr(launcher, "find_mpiexec", lambda: "/venv/bin/mpiexec")
    monkeypatch.setattr(launcher.subprocess, "run", fake_run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.main(["launch", "-n", "2", "--mpi-arg=-ppn", "--mpi-arg=1", str(script),
                     "--epochs", "3"]) == 3
    assert seen["cmd"] == ["/venv/bin/mpiexec", "-n", "2", "-ppn", "1", sys.executable, "-m",
                           "mpi4py", str(script), "--epochs", "3"]
    assert int(seen["env"]["OMP_NUM_THREADS"]) >= 1
    assert cli.main(["launch", "-n", "2", "-m", "gpudl.cli", "train", "--epochs", "1"]) == 3
    assert seen["cmd"][-6:] == ["mpi4py", "-m", "gpudl.cli", "train", "--epochs", "1"]


LAUNCH_BAD = [
    (["launch", "-n", "2", "/no/such/train.py"], "no such script: '/no/such/train.py'"),
    (["launch", "-n", "2"], "give the script to run"),
    (["launch", "-n", "0", "t.py"], "expected a positive integer"),
    (["launch", "t.py"], "the following arguments are required: -n/--np"),
    (["launch", "-n", "2", "--hostfile", "/no/hosts", "-m", "x"], "no such host file"),
]


@pytest.mark.parametrize("argv, message", LAUNCH_BAD, ids=[" ".join(a) for a, _ in LAUNCH_BAD])
def test_launch_bad_flags_are_one_line_and_exit_status_2(argv, message, capsys):
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gpudl launch: error: ") and message in line


def test_launch_without_mpi4py_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    script = tmp_path / "t.py"
    script.write_text("")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails: not installed
    assert cli.main(["launch", "-n", "2", str(script)]) == 2
    line = _one_error_line(capsys)
    assert "mpi4py is not installed" in line and "pip install 'gpudl[mpi]'" in line
