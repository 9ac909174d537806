"""The ``emulated_cuda`` fixture: gpudl runs its CUDA paths with kernels on the CPU emulator.

Inside a test that takes the fixture, ``xp_for("cuda")`` is a NumPy-backed stand-in for
CuPy whose arrays (:class:`kernel_emulator.DeviceArray`) gpudl treats as CUDA arrays, and
whose ``RawModule`` compiles kernels with g++ (kernel_emulator.py). So the public ops take
their GPU branches - kernel launches, CuPy-side glue, vjps - on a machine with no GPU.
"""

from __future__ import annotations

import kernel_emulator
import pytest
from kernel_emulator import DeviceArray, compiler_available, fake_cupy

# One dict of emulated modules per kernel file, kept apart from the real (CuPy) caches so a
# GPU session that also runs these tests never launches an emulated module on the GPU.
_EMULATED_MODULES: dict[str, dict] = {}


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
    from gpudl import backend, cuda

    cuda._register_all()
    fake = fake_cupy()
    dev = EmulatedDevice(fake)
    monkeypatch.setattr(backend, "_cupy_module", lambda: fake)
    monkeypatch.setattr(backend, "_cuda_array_types", lambda: (DeviceArray,))
    for filename, src in cuda.SOURCES.items():
        monkeypatch.setattr(src, "_modules", _EMULATED_MODULES.setdefault(filename, {}))
    real_call = kernel_emulator.EmulatedKernel.__call__

    def recording_call(self, grid, block, args, shared_mem=0):
        dev.launched.append(self.name)
        return real_call(self, grid, block, args, shared_mem)

    monkeypatch.setattr(kernel_emulator.EmulatedKernel, "__call__", recording_call)
    return dev
