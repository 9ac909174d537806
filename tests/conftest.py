"""Shared fixtures: a ``device`` fixture over cpu and (where usable) cuda, and gpu skips."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.backend import probe_cuda


def _cuda_usable() -> tuple[bool, str]:
    return probe_cuda()


def pytest_collection_modifyitems(config, items):
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
