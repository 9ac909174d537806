"""The ``emulated_cuda`` fixture: gpudl runs its CUDA paths with kernels on the CPU emulator.

Inside a test that takes the fixture, gpudl's "cuda" device is the emulated one
(emulated_cupy.activate): the public ops take their GPU branches - kernel launches,
CuPy-side glue, vjps - on a machine with no GPU.

It also registers the kernel-coverage plugin (kernel_coverage.py) for any session that
collects this folder, e.g. ``make test-emulated-gpu``.
"""

from __future__ import annotations

import emulated_cupy
import kernel_coverage
import kernel_emulator
import pytest
from emulated_cupy import DeviceArray
from kernel_emulator import compiler_available


def pytest_configure(config):
    if not config.pluginmanager.is_registered(kernel_coverage):  # unless -p kernel_coverage
        config.pluginmanager.register(kernel_coverage, "gpudl_kernel_coverage")


class EmulatedDevice:
    """What the fixture gives a test: ``to_gpu`` and the names of the kernels launched."""

    def __init__(self, fake):
        self._fake = fake
        self.launched: list[str] = []

    def to_gpu(self, a) -> DeviceArray:
        return self._fake.ascontiguousarray(a)


@pytest.fixture
def emulated_cuda(monkeypatch):
    """Make the "cuda" device an emulated one for the duration of a test."""
    if not compiler_available():
        pytest.skip("kernel emulation needs a C++ compiler (g++)")
    dev = EmulatedDevice(emulated_cupy.activate(monkeypatch))
    real_call = kernel_emulator.EmulatedKernel.__call__

    def recording_call(self, grid, block, args, shared_mem=0):
        dev.launched.append(self.name)
        return real_call(self, grid, block, args, shared_mem)

    monkeypatch.setattr(kernel_emulator.EmulatedKernel, "__call__", recording_call)
    return dev
