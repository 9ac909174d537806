"""The kernel-coverage check (kernel_coverage.py) is derived from the registry and catches
a kernel instance that no test launches; every registered kernel builds on the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import emulated_cupy
import kernel_coverage
import numpy as np
import pytest
from kernel_emulator import compile_all, compiler_available

from gpudl import cuda
from gpudl.compile_check import registered_sources

PROBE_ENV = "GPUDL_KERNEL_COVERAGE_PROBE"

FAKE_CODE = r"""// coverage_fake.cu: doubles x in place.
// Tested: tests/kernel_emulation/test_kernel_coverage.py
template <typename T>
__global__ void scale(T* x, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    x[i] *= T(2);
}
"""


class FakeSource(cuda.KernelSource):
    """A KernelSource whose code is a string, not a file under kernels/."""

    def source(self) -> str:
        return FAKE_CODE


@pytest.fixture
def fake_registry(monkeypatch):
    """Registrations made in the test go to a copy of the registry, dropped afterwards."""
    monkeypatch.setattr(cuda, "SOURCES", dict(registered_sources()))
    monkeypatch.setattr(emulated_cupy, "EMULATED_MODULES", dict(emulated_cupy.EMULATED_MODULES))


def test_every_registered_kernel_compiles_on_the_emulator():
    if not compiler_available():
        pytest.skip("kernel emulation needs a C++ compiler (g++)")
    assert compile_all(registered_sources()) == {}


def test_every_kernel_header_names_its_test_modules():
    for filename, src in registered_sources().items():
        named = kernel_coverage.named_tests(src)
        assert named, f"{filename}: its header names no tests/...py module on a 'Tested:' line"
        for path in named:
            assert (kernel_coverage.REPO / path).is_file(), f"{filename} names {path}: missing"


def test_header_test_paths_come_from_the_leading_comment_block():
    src = types.SimpleNamespace(source=lambda: FAKE_CODE + "// tests/test_after_the_code.py\n")
    assert kernel_coverage.named_tests(src) == ["tests/kernel_emulation/test_kernel_coverage.py"]
    assert kernel_coverage.kernel_test_modules({"a.cu": src, "b.cu": src}) == [
        kernel_coverage.REPO / "tests/kernel_emulation/test_kernel_coverage.py"]


def test_an_unlaunched_instance_is_reported(fake_registry, monkeypatch):
    """A registered instance nobody launches is reported; the launched one beside it is not."""
    if not compiler_available():
        pytest.skip("kernel emulation needs a C++ compiler (g++)")
    fake = FakeSource("coverage_fake.cu", ["scale<float>", "scale<double>"])
    assert registered_sources()["coverage_fake.cu"] is fake  # the registry the check reads
    emulated_cupy.activate(monkeypatch)
    x = emulated_cupy.fake_cupy().ascontiguousarray(np.arange(5, dtype=np.float32))
    cuda.launch(fake.get("scale<float>"), cuda.grid_1d(x.size), (cuda.DEFAULT_BLOCK,),
                (x, np.int32(x.size)))
    np.testing.assert_array_equal(x.get(), 2 * np.arange(5))
    missing = kernel_coverage.unlaunched()
    assert "coverage_fake.cu: scale<double>" in missing
    assert "coverage_fake.cu: scale<float>" not in missing
    assert kernel_coverage.unlaunched(
        {"coverage_fake.cu": fake}, {"coverage_fake.cu": {"scale<float>", "scale<double>"}}) == []


def _session(paths, keyword="", collectonly=False):
    items = [types.SimpleNamespace(path=p) for p in paths]
    return types.SimpleNamespace(items=items, config=types.SimpleNamespace(
        option=types.SimpleNamespace(keyword=keyword, collectonly=collectonly)))


def test_when_the_check_applies(monkeypatch):
    """Emulated sessions only; all of the kernels' test modules ran (no -k), or forced."""
    every = kernel_coverage.kernel_test_modules()
    monkeypatch.delenv(kernel_coverage.COVERAGE_ENV, raising=False)
    monkeypatch.setenv(kernel_coverage.EMULATION_ENV, "1")
    assert kernel_coverage.coverage_required(_session(every))
    assert not kernel_coverage.coverage_required(_session(every[1:]))
    assert not kernel_coverage.coverage_required(_session(every, keyword="pool"))
    assert not kernel_coverage.coverage_required(_session(every, collectonly=True))
    monkeypatch.setenv(kernel_coverage.COVERAGE_ENV, "1")
    assert kernel_coverage.coverage_required(_session(every[:1]))
    monkeypatch.delenv(kernel_coverage.EMULATION_ENV)
    assert not kernel_coverage.coverage_required(_session(every))


@pytest.mark.skipif(os.environ.get(PROBE_ENV) != "1",
                    reason="the session under test of test_a_session_that_never_launches_...")
def test_probe_registers_an_unlaunched_kernel():
    FakeSource("coverage_probe.cu", ["probe_kernel<float>"])  # registered until the session ends


def test_a_session_that_never_launches_a_kernel_fails():
    """End to end: an emulated pytest session whose tests pass fails at its end for the
    registered instance nobody launched, and names it."""
    env = {**os.environ, kernel_coverage.EMULATION_ENV: "1", kernel_coverage.COVERAGE_ENV: "1",
           PROBE_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_probe_registers_an_unlaunched_kernel"],
        env=env, cwd=kernel_coverage.REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "1 passed" in out, out
    assert "  coverage_probe.cu: probe_kernel<float>\n" in out, out
