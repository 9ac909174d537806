"""Kernel coverage of an emulated GPU run, derived from the registered kernel sources.

Nobody keeps a list of the kernels to test: the registry is that list. Every
``name_expression`` of every :class:`~gpudl.cuda.KernelSource` that gpudl registers
(``gpudl.compile_check.registered_sources()``, philox.cu included) must be launched at least
once by the emulated GPU tests, and the tests that must launch it are the test modules its
``.cu`` file's header names (its ``Tested:`` lines: every ``tests/.../test_*.py`` path in
the leading ``//`` comment block).

* :func:`unlaunched`: the registered instances that no emulated module launched in this
  process (the emulator records each launch that completed its checks);
* :func:`kernel_test_modules`: the test modules the headers name; ``run_memcheck.py`` runs
  their ``gpu`` tests under AddressSanitizer;
* as a pytest plugin (``conftest.py`` here registers it; ``run_memcheck.py`` passes
  ``-p kernel_coverage``): an emulated session (``GPUDL_EMULATE_GPU=1``) that ran every
  module :func:`kernel_test_modules` names with no ``-k`` filter (``make
  test-emulated-gpu``), or any emulated session with ``GPUDL_KERNEL_COVERAGE=1``
  (``run_memcheck.py``), fails when an instance was never launched, and lists it.

A new kernel instance without a test that launches it therefore fails ``make test``.

Example:
    >>> unlaunched()  # doctest: +SKIP
    ['pool2d.cu: avg_pool2d_backward<double>', ...]
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import emulated_cupy
import pytest
from kernel_emulator import EmulatedModule

from gpudl.compile_check import registered_sources
from gpudl.cuda import KernelSource

REPO = Path(__file__).resolve().parents[2]
COVERAGE_ENV = "GPUDL_KERNEL_COVERAGE"  # "1": check every emulated session (run_memcheck.py)
EMULATION_ENV = "GPUDL_EMULATE_GPU"  # "1": tests/conftest.py makes "cuda" the emulator
_TEST_PATH = re.compile(r"\btests/(?:[\w.-]+/)*test_\w*\.py\b")  # test modules only
_MISSING = pytest.StashKey[list]()


def header(src: KernelSource) -> str:
    """The leading ``//`` comment block of a kernel source, without the slashes."""
    lines = []
    for line in src.source().splitlines():
        if not line.startswith("//"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


def named_tests(src: KernelSource) -> list[str]:
    """The test modules (paths from the repository root) that a kernel's header names."""
    return list(dict.fromkeys(_TEST_PATH.findall(header(src))))


def kernel_test_modules(sources: Mapping[str, KernelSource] | None = None) -> list[Path]:
    """Every test module named by the header of a registered kernel source, in order."""
    sources = registered_sources() if sources is None else sources
    return sorted({REPO / p for src in sources.values() for p in named_tests(src)})


def launched(caches: Mapping[str, Mapping] | None = None) -> dict[str, set[str]]:
    """Kernel file -> the instances its emulated modules launched in this process.

    ``caches``: kernel file -> its KernelSource's compile cache while emulated (the modules,
    one per device, among the compiled functions), ``emulated_cupy.EMULATED_MODULES``.
    """
    caches = emulated_cupy.EMULATED_MODULES if caches is None else caches
    return {f: set().union(*(m.launched for m in cache.values() if isinstance(m, EmulatedModule)))
            for f, cache in caches.items()}


def unlaunched(sources: Mapping[str, KernelSource] | None = None,
               launched_by_file: Mapping[str, set[str]] | None = None) -> list[str]:
    """``"file.cu: instance"`` for each registered instance never launched, sorted by file."""
    sources = registered_sources() if sources is None else sources
    done = launched() if launched_by_file is None else launched_by_file
    return [f"{filename}: {expr}" for filename, src in sorted(sources.items())
            for expr in src.name_expressions if expr not in done.get(filename, set())]


def coverage_required(session) -> bool:
    """Whether this session must have launched every registered kernel instance (above)."""
    if os.environ.get(EMULATION_ENV) != "1" or session.config.option.collectonly:
        return False
    if os.environ.get(COVERAGE_ENV) == "1":
        return True
    if session.config.option.keyword:  # a -k selection runs part of the kernels' tests
        return False
    ran = {Path(str(item.path)).resolve() for item in session.items}
    wanted = kernel_test_modules()
    return bool(wanted) and all(p.resolve() in ran for p in wanted)


# ----------------------------------------------------------------------------- pytest plugin
def pytest_sessionfinish(session, exitstatus):
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return
    if not coverage_required(session):
        return
    missing = unlaunched()
    session.config.stash[_MISSING] = missing
    if missing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = config.stash.get(_MISSING, None)
    if missing is None:
        return
    sources = registered_sources()
    total = sum(len(src.name_expressions) for src in sources.values())
    if not missing:
        terminalreporter.write_line(f"kernel coverage: all {total} instances of the "
                                    f"{len(sources)} registered kernel files were launched")
        return
    terminalreporter.write_sep("=", f"kernel coverage: {len(missing)} of {total} registered "
                                    "kernel instances were never launched", red=True)
    for line in missing:
        terminalreporter.write_line(f"  {line}")
    terminalreporter.write_line(
        "Each name_expression of a KernelSource needs a gpu-marked test that launches it, in a "
        "test module the .cu header names on its 'Tested:' lines (CONTRIBUTING.md, 'Adding a "
        "CUDA kernel')."
    )
