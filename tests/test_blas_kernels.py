"""gpudl.bench.blas_kernels: reading the CPU, the loaded OpenBLAS kernels, and doctor's
warning when they forgo the CPU's AVX-512 (a pinned OPENBLAS_CORETYPE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpudl import cli
from gpudl.bench import blas_kernels
from gpudl.bench.blas_kernels import AVX512_FLAGS, CpuId, read_cpu, slow_kernel_problem

ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
flags\t\t: fpu
"""


def test_read_cpu_takes_the_first_processor_block():
    cpu = read_cpu(ZEN5)
    assert cpu == CpuId("AuthenticAMD", 26, cpu.flags, model=2, name="AMD EPYC")
    assert "avx512_bf16" in cpu.flags and cpu.has_avx512
    assert cpu.describe() == "AuthenticAMD family 26 model 2"


def test_read_cpu_without_a_model_number_still_names_vendor_and_family():
    cpu = read_cpu("vendor_id : GenuineIntel\ncpu family : 6\nmodel : ?\nflags : avx\n")
    assert cpu == CpuId("GenuineIntel", 6, frozenset({"avx"}))
    assert cpu.describe() == "GenuineIntel family 6"


@pytest.mark.parametrize("text", ["", "vendor_id : AuthenticAMD\n",
                                  "vendor_id : X\ncpu family : six\nflags : avx\n"])
def test_read_cpu_gives_none_for_a_block_it_cannot_read(text):
    assert read_cpu(text) is None


def test_a_cpu_missing_one_avx512_subset_has_no_avx512_kernels_to_miss():
    cpu = CpuId("AuthenticAMD", 26, AVX512_FLAGS - {"avx512vl"})
    assert not cpu.has_avx512
    assert slow_kernel_problem(cpu, ["Haswell"], environ={}) is None


@pytest.mark.parametrize("core", ["SkylakeX", "COOPERLAKE", "SapphireRapids"])
def test_avx512_kernels_are_no_problem(core):
    assert slow_kernel_problem(read_cpu(ZEN5), [core], environ={}) is None


def test_no_openblas_loaded_is_no_problem():
    assert slow_kernel_problem(read_cpu(ZEN5), [], environ={}) is None
    assert slow_kernel_problem(None, ["Haswell"], environ={}) is None


def test_a_pinned_coretype_is_named_and_the_fix_unsets_it():
    problem, fix = slow_kernel_problem(read_cpu(ZEN5), ["Haswell"],
                                       {"OPENBLAS_CORETYPE": "Haswell"})
    assert "runs its Haswell kernels (no AVX-512)" in problem
    assert "(OPENBLAS_CORETYPE=Haswell in the environment)" in problem
    assert fix.startswith('unset OPENBLAS_CORETYPE (now "Haswell") before starting Python')


def test_an_unpinned_slow_choice_is_fixed_by_naming_the_avx512_kernels():
    problem, fix = slow_kernel_problem(read_cpu(ZEN5), ["Zen"], environ={})
    assert "runs its Zen kernels" in problem and "in the environment" not in problem
    assert fix == "export OPENBLAS_CORETYPE=SkylakeX before starting Python"


def test_doctor_warns_and_names_the_fix_for_kernels_without_avx512(monkeypatch, capsys):
    monkeypatch.setattr(blas_kernels, "read_cpu", lambda: read_cpu(ZEN5))
    monkeypatch.setattr(blas_kernels, "loaded_cores", lambda: ["Haswell"])
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "OpenBLAS kernels: Haswell" in out
    assert "warning: NumPy's OpenBLAS runs its Haswell kernels (no AVX-512)" in out
    assert 'fix: unset OPENBLAS_CORETYPE (now "Haswell") before starting Python' in out

    monkeypatch.setattr(blas_kernels, "loaded_cores", lambda: ["SkylakeX"])
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "OpenBLAS kernels: SkylakeX" in out and "AVX-512" not in out


def _cores_in_a_fresh_process(env):
    code = ("import json, numpy; from gpudl.bench import blas_kernels as b; "
            "print(json.dumps(b.loaded_cores()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_loaded_cores_reads_what_the_environment_pins_on_this_machine():
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    own = _cores_in_a_fresh_process(env)
    if not own:
        pytest.skip("NumPy here does not run on OpenBLAS")
    cpu = read_cpu()
    if cpu is None or "avx2" not in cpu.flags:
        pytest.skip("not an x86-64 CPU with AVX2 (the Haswell kernels' instructions)")
    pinned = _cores_in_a_fresh_process({**env, "OPENBLAS_CORETYPE": "Haswell"})
    assert pinned == ["Haswell"] * len(own)
    if cpu.has_avx512:  # OpenBLAS's own choice uses the AVX-512
        assert slow_kernel_problem(cpu, own, env) is None
        assert slow_kernel_problem(cpu, pinned, {"OPENBLAS_CORETYPE": "Haswell"}) is not None


def test_loaded_cores_leaves_out_an_openblas_that_cannot_name_its_kernels(monkeypatch):
    # threadpoolctl gives architecture None for an OpenBLAS without openblas_get_corename:
    # no "None kernels" warning from that
    threadpoolctl = pytest.importorskip("threadpoolctl")
    info = [{"internal_api": "openblas", "architecture": None},
            {"internal_api": "openblas", "architecture": "Haswell"},
            {"internal_api": "openmp", "architecture": None}]
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: info)
    assert blas_kernels.loaded_cores() == ["Haswell"]
    info.pop(1)
    assert blas_kernels.loaded_cores() == []
    assert slow_kernel_problem(read_cpu(ZEN5), blas_kernels.loaded_cores(), {}) is None
