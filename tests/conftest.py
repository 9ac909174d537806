"""Shared fixtures: a ``device`` fixture over cpu and (where usable) cuda, and gpu skips."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import gpudl as gd
from gpudl.backend import probe_cuda


def pytest_configure(config):
    # GPUDL_EMULATE_GPU=1: the "cuda" device is the CPU kernel emulator for the whole run,
    # so `pytest -m gpu` exercises every GPU code path on a machine without a GPU
    # (tests/kernel_emulation/emulated_cupy.py). Never set on a real GPU run.
    if os.environ.get("GPUDL_EMULATE_GPU") == "1":
        sys.path.insert(0, str(Path(__file__).parent / "kernel_emulation"))
        import emulated_cupy  # noqa: PLC0415 - only in emulation runs

        config._gpudl_emulation = pytest.MonkeyPatch()
        emulated_cupy.activate(config._gpudl_emulation)


def pytest_unconfigure(config):
    mp = getattr(config, "_gpudl_emulation", None)
    if mp is not None:
        mp.undo()


def _cuda_usable() -> tuple[bool, str]:
    return probe_cuda()


def pytest_collection_modifyitems(config, items):
    if getattr(config, "_gpudl_emulation", None) is not None:
        skip = pytest.mark.skip(reason="needs real GPU hardware, not the CPU kernel emulator")
        for item in items:
            if "gpu_hardware" in item.keywords:
                item.add_marker(skip)
    usable, reason = _cuda_usable()
    if usable:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """Run the test on each device; sets gpudl's default device for its duration."""
    with gd.device(request.param):
        yield request.param


@pytest.fixture
def xp(device):
    """The array module of the ``device`` fixture (numpy or cupy)."""
    return gd.backend.xp_for(device)


@pytest.fixture(autouse=True)
def _cpu_default():
    """Tests run on the CPU unless they ask for the ``device`` fixture."""
    with gd.device("cpu"):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
