"""Smoke tests of benchmarks/cpu_vs_torch.py, the standing CPU comparison with PyTorch.

``--tiny`` runs every row (tiny shapes, 2 pairs) in-process: the table, the targets, the
JSON report and the check that both sides compute the same thing. The figures mean
nothing here; the structure, the agreement of the two sides and the failure paths (a row
whose sides disagree, torch missing) are what is checked. Skips without torch.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from gpudl.bench import blas_kernels

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

# The bounds on gpudl/torch (issue 12): None = a row without a target.
TARGETS = {"mlp": 1.0, "lenet5": 1.0, "resnet20": 1.2, "char_lm": 1.2, "transformer": 1.0,
           "gcn": 1.2, "fit_mlp": 1.2, "sigmoid": 1.2, "relu": None, "batch_norm": 1.2,
           "avg_pool": 1.2, "max_pool": 1.2, "adam": 1.2, "cross_entropy": None}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_bench_cpu_vs_torch", BENCH / "cpu_vs_torch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)  # puts benchmarks/ on sys.path: common, cpu_models_torch
    return module


def test_tiny_run_prints_the_table_and_writes_the_report(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    assert bench.main(["--tiny", "--json", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # one thread inside the run only
    out = capsys.readouterr().out
    [path] = tmp_path.iterdir()  # a folder given: the default name inside it
    data = json.loads(path.read_text())
    info = data["machine"]
    tag = f"-{info['cpu_tag']}" if info["cpu_tag"] else ""  # the f6m207 of this machine
    assert path.name == (f"{datetime.date.today().isoformat()}-cpu-vs-torch-"
                         f"{bench.common.slug(info['cpu_model'])}{tag}-"
                         f"{info['usable_cores']}core.json")
    cpu = blas_kernels.read_cpu()
    assert info["cpu_id"] == (None if cpu is None else cpu.describe())
    if info["cpu_id"]:
        l2 = f", L2 {info['l2_cache']}" if info["l2_cache"] else ""
        assert f"({info['cpu_id']}{l2})" in out.splitlines()[0]
    assert data["mode"] == "tiny" and data["pairs"] == 2
    assert info["numpy_version"] == np.__version__ and info["numpy_blas"]
    assert info["torch"]["torch_version"] == torch.__version__
    assert info["torch"]["threads"] == 1  # recorded inside the one-thread block
    rows = {r["row"]: r for r in data["rows"]}
    assert list(rows) == list(TARGETS)
    for name, r in rows.items():
        assert r["target"] == TARGETS[name]
        assert r["agree"] and r["max_rel_diff"] <= r["rtol"], name  # the same work both sides
        assert r["a_median_s"] > 0 and r["b_median_s"] > 0 and r["pairs"] == 2 == len(r["ratios"])
        assert r["inner"] == 1  # tiny: one call a sample
        assert r["settle"] == bench.SETTLE == 1  # each sample after its own side
        assert r["ratio_q1"] <= r["ratio_median"] <= r["ratio_q3"]
        assert r["ratio_iqr"] == pytest.approx(r["ratio_q3"] - r["ratio_q1"])
        expected = "-" if r["target"] is None else (
            "PASS" if r["ratio_median"] <= r["target"] else "MISS")
        assert r["verdict"] == expected
        assert f"\n{name:14s} " in out  # its table line
    assert data["missed_targets"] == [n for n, r in rows.items() if r["verdict"] == "MISS"]
    assert data["disagree"] == []
    header = out.split("\n\n")[1].splitlines()[0].split()
    assert header == ["row", "gpudl", "ms", "torch", "ms", "ratio", "IQR", "target", "verdict"]
    assert "mkl" in out.lower() or "torch_blas" in json.dumps(info)
    assert any(n.startswith(("rows missing", "every row")) for n in data["notes"])
    for note in data["notes"]:
        assert note in out


def test_rows_that_disagree_void_the_comparison(bench, capsys, monkeypatch):
    # A torch side that computes something else must never yield a ratio verdict.
    fake = bench.Case("fake", "kernel", 1.2, "ones vs zeros", {}, {},
                      lambda s: (lambda: np.ones(3), lambda: torch.zeros(3), 1e-4))
    monkeypatch.setattr(bench, "CASES", [fake])
    assert bench.main(["--tiny", "--pairs", "1"]) == 1
    out = capsys.readouterr().out
    assert "DIFFER" in out and "DISAGREE" in out and "fake (max rel diff 1.00e+00" in out


def test_write_goes_to_results_and_bad_arguments_are_refused(bench, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    assert bench.main(["--tiny", "--rows", "relu,adam", "--write"]) == 0
    [path] = tmp_path.glob("*-cpu-vs-torch-*core.json")
    assert [r["row"] for r in json.loads(path.read_text())["rows"]] == ["relu", "adam"]
    with pytest.raises(SystemExit):
        bench.main(["--rows", "no_such_row"])
    assert "unknown rows ['no_such_row']" in capsys.readouterr().err
    monkeypatch.setattr(bench, "TORCH_MISSING", "torch is not installed (test)")
    assert bench.main(["--tiny"]) == 2
    assert "nothing to compare against" in capsys.readouterr().out


def test_paired_helpers_on_made_up_work(bench):
    common = bench.common
    calls = []
    r = common.paired_times(lambda: calls.append("a") or sum(range(3000)),
                            lambda: calls.append("b"), pairs=3, warmup=1, inner=2)
    assert r["pairs"] == 3 and len(r["ratios"]) == 3 and r["ratio_median"] > 1
    # warm-up a b, then pairs in alternating order, `inner` calls each
    assert "".join(calls) == "ab" + "aabb" + "bbaa" + "aabb"
    calls.clear()  # settle: an untimed call of the side right before each of its samples
    r = common.paired_times(lambda: calls.append("a"), lambda: calls.append("b"), pairs=2,
                            warmup=0, settle=1)
    assert "".join(calls) == "aabb" + "bbaa" and r["settle"] == 1
    assert common.ratio_verdict(0.9, 1.0) == "PASS" and common.ratio_verdict(1.3, 1.2) == "MISS"
    assert common.ratio_verdict(5.0, None) == "-"
    assert common.max_rel_diff((np.ones(2), 1.0), [torch.ones(2), np.float32(1.0)]) == 0.0
    assert common.max_rel_diff([np.ones(2)], [np.ones(3)]) == float("inf")
    assert common.slug("AMD EPYC 7B13 64-Core") == "amd-epyc-7b13-64-core"


def test_an_environment_coretype_pin_is_lifted_reported_and_kept_on_request(tmp_path):
    # The run against torch uses OpenBLAS's own kernel choice, as torch's libraries use
    # theirs; the pin it lifted is in the JSON and the notes (benchmarks/blas_env.py).
    import subprocess

    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, str(BENCH / "cpu_vs_torch.py"), "--tiny", "--rows",
                          "mlp", "--json", str(out)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    info = json.loads(out.read_text())["machine"]
    assert info["openblas_coretype"] == {"environment": None, "lifted": "Haswell"}
    note = "OPENBLAS_CORETYPE=Haswell from the environment was lifted for this run"
    assert note in res.stdout
    assert "--keep-blas-coretype" in res.stdout
    if info["openblas_kernels"]:  # threadpoolctl sees OpenBLAS: no pinned Haswell left
        assert f"OpenBLAS kernels {', '.join(info['openblas_kernels'])}" in res.stdout


def test_lift_coretype_pin_removes_the_variable_unless_asked_to_keep_it(monkeypatch):
    sys.path.insert(0, str(BENCH))
    import blas_env

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert blas_env.lift_coretype_pin(["--tiny", "--keep-blas-coretype"]) is None
    assert blas_env.lifted_note(None, ["Haswell"]) is None
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    assert blas_env.lift_coretype_pin(["--tiny"]) == "Haswell"
    assert "OPENBLAS_CORETYPE" not in os.environ
    assert blas_env.lift_coretype_pin([]) is None  # nothing left to lift
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert blas_env.lift_coretype_pin(["--keep-blas"]) is None  # argparse's abbreviation
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    assert [blas_env.asks_to_keep([a]) for a in ("--k", "--keep", "--", "--kx", "-k",
                                                 "--keep-blas-coretype-x")] == [
        True, True, False, False, False, False]
    assert "(SkylakeX)" in blas_env.lifted_note("Haswell", ["SkylakeX"])
