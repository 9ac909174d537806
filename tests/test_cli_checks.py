"""`gpudl export` of models trained on any dataset, output paths checked before any work,
`--resume` refusing another seed or dataset, and the model hint without repeats."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import _one_error_line  # tests/ is on sys.path under pytest

import gpudl as gd
from gpudl import cli, models
from gpudl.cli import train_command as train_cmd


def _mlp_weights(path, shape, seed=0):
    model = models.get_model("mlp")
    params, state = model.init(seed, np.zeros((2, *shape), np.float32))
    gd.save(path, train_cmd._state_dict(params, state))
    return model, params, state


def _onnx_run(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


# ----------------------------------------------------------------------------- export
def test_export_of_the_readme_digits_model_matches_onnxruntime(tmp_path, capsys):
    """`gpudl train --dataset digits` then `gpudl export --model mlp --weights ...`: the
    input shape (1, 8, 8) comes from the weights; --dataset digits says it outright."""
    from gpudl import data

    weights = tmp_path / "mlp_digits.npz"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--verbose", "0", "--out", str(weights)]) == 0
    x, _ = data.digits()
    x = x[:7]
    model = models.get_model("mlp")
    params, state = model.init(0, x[:2])
    params = gd.load(weights, device="cpu", like=params)
    want = np.asarray(model.apply(params, state, x, train=False)[0])
    for extra, source in (([], "the weights (64 features, as digits)"),
                          (["--dataset", "digits"], "--dataset digits"),
                          (["--input-shape", "1,8,8"], "--input-shape")):
        out = tmp_path / "m.onnx"
        capsys.readouterr()
        assert cli.main(["export", "--model", "mlp", "--weights", str(weights), "--out",
                         str(out), *extra]) == 0, capsys.readouterr().err
        assert f"input (N, 1, 8, 8) from {source}, opset 17" in capsys.readouterr().out
        np.testing.assert_allclose(_onnx_run(out, x), want, rtol=1e-4, atol=1e-5)


def test_export_of_an_mlp_for_a_local_dataset_takes_input_shape(tmp_path, capsys):
    """3072 features (cifar10's 3x32x32): no shipped dataset has it, so the flag is named."""
    weights = tmp_path / "w.npz"
    model, params, state = _mlp_weights(weights, (3, 32, 32))
    out = tmp_path / "m.onnx"
    argv = ["export", "--model", "mlp", "--weights", str(weights), "--out", str(out)]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert "mlp's first layer takes 3072 features" in line
    assert "--input-shape C,H,W with C*H*W = 3072" in line and "--dataset NAME" in line
    assert not out.exists()
    assert cli.main(argv + ["--input-shape", "3,32,32"]) == 0
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_onnx_run(out, x), np.asarray(model.apply(params, state, x)[0]),
                               rtol=1e-4, atol=1e-5)


EXPORT_SHAPE_ERRORS = [
    (["--model", "mlp", "--input-shape", "1,28,28", "--weights", "DIGITS"],
     "mlp's first layer takes 64 features but --input-shape gives 1,28,28 (784); use "
     "--dataset NAME"),
    (["--model", "mlp", "--dataset", "mnist_5k", "--weights", "DIGITS"],
     "but --dataset mnist_5k gives 1,28,28 (784)"),
    (["--model", "lenet5", "--dataset", "digits"],
     "lenet5 takes 1,28,28 images (C,H,W), not 1,8,8 from --dataset digits"),
    (["--model", "mlp", "--dataset", "cifar10"],
     "cifar10 reads local files: add --data-dir FOLDER (see help(gpudl.data.cifar10) for the "
     "file names), or give --input-shape C,H,W instead"),
    (["--model", "mlp", "--data-dir", "."], "--data-dir applies with --dataset NAME"),
    (["--input-shape", "1,8"], "argument --input-shape: expected C,H,W"),
    (["--input-shape", "0,8,8"], "argument --input-shape: expected C,H,W"),
    (["--input-shape", "1,8,8", "--dataset", "digits"], "not allowed with argument"),
    (["--dataset", "digit"], "did you mean 'digits'?"),
]


@pytest.mark.parametrize("argv, message", EXPORT_SHAPE_ERRORS,
                         ids=[" ".join(a) for a, _ in EXPORT_SHAPE_ERRORS])
def test_export_shape_errors_name_the_flag_that_fixes_them(argv, message, tmp_path, capsys):
    if "DIGITS" in argv:
        _mlp_weights(tmp_path / "d.npz", (1, 8, 8))
        argv = [str(tmp_path / "d.npz") if a == "DIGITS" else a for a in argv]
    assert cli.main(["export", "--out", str(tmp_path / "m.onnx"), *argv]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gpudl export: error: ") and message in line
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- train hint
def test_the_model_hint_names_each_model_once(capsys):
    assert cli.main(["train", "--model", "resnet20", "--dataset", "mnist_5k"]) == 2
    line = _one_error_line(capsys)
    assert line.endswith("use --model lenet5 or --model mlp")
    assert line.count("--model mlp") == 1


# ----------------------------------------------------------------------------- output paths
def test_output_locations_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    from gpudl.bench import train_step

    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setattr(train_step, "bench_model",
                        lambda *a, **k: pytest.fail("benchmarked before checking --json"))
    cases = [
        (["train", "--dataset", "digits", "--no-save", "--checkpoint-dir", str(afile)],
         f"argument --checkpoint-dir: {str(afile)!r} is a file, not a folder"),
        (["train", "--dataset", "digits", "--no-save", "--checkpoint-dir", str(afile / "ck")],
         f"{str(afile)!r} is a file, not a folder; choose another folder"),
        (["bench", "--devices", "cpu", "--json", str(afile / "o.json")],
         f"argument --json: cannot write {str(afile / 'o.json')!r}: {str(afile)!r} is a file"),
        (["bench", "--devices", "cpu", "--json", str(tmp_path)], "is a folder; give a file name"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2
        line = _one_error_line(capsys)
        assert ": error: " in line and message in line, line
    assert afile.read_text() == ""


def test_plot_under_a_file_is_refused_before_benchmarking(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    (tmp_path / "afile").write_text("")
    assert cli.main(["bench", "--devices", "cpu", "--plot", str(tmp_path / "afile" / "p.png")]) == 2
    assert "argument --plot: cannot write" in _one_error_line(capsys)


# ----------------------------------------------------------------------------- resume
def test_resume_refuses_another_seed_or_dataset(tmp_path, capsys):
    ck = tmp_path / "ck"
    args = ["train", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--no-save",
            "--verbose", "0", "--checkpoint-dir", str(ck)]
    assert cli.main(args) == 0
    capsys.readouterr()
    last = ck / "last.npz"
    assert cli.main(args + ["--resume", "--seed", "3"]) == 2
    line = _one_error_line(capsys)
    assert f"--resume: {last} was written with --seed 0, this run has --seed 3" in line
    assert "resume with --seed 0, or give another --checkpoint-dir" in line
    assert cli.main(["train", "--dataset", "mnist_5k", "--model", "mlp", "--epochs", "1",
                     "--device", "cpu", "--no-save", "--checkpoint-dir", str(ck),
                     "--resume"]) == 2
    assert "was written with --dataset digits, this run has --dataset mnist_5k" in \
        _one_error_line(capsys)
    assert cli.main(args + ["--resume", "--seed", "0"]) == 0  # the same seed resumes


def test_resume_from_a_checkpoint_without_settings_says_to_check_them(tmp_path):
    from gpudl.train.checkpoint import save_checkpoint

    path = tmp_path / "last.npz"
    save_checkpoint(path, params={"w": np.ones(2)}, epoch=1)
    ns = train_cmd.argparse.Namespace(seed=0, dataset="digits")
    notes = []
    train_cmd.check_resume(ns, str(path), out=notes.append)
    assert len(notes) == 1 and "does not record the --seed and --dataset" in notes[0]
