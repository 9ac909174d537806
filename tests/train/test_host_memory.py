"""gpudl.train.host_memory: freed host memory is kept for reuse (glibc), unless the user chose."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from gpudl.train import host_memory

# A fresh process (malloc untouched by anything else) frees 20 MiB of 100 KiB blocks, each
# under every mmap threshold, so they live on the heap; allocating them again faults the
# pages back in if the freed heap top went back to the OS. Loaded by path: no gpudl import.
_ROUNDS = textwrap.dedent("""
    import importlib.util, resource, sys
    import numpy as np
    spec = importlib.util.spec_from_file_location("host_memory", sys.argv[1])
    hm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hm)
    kept = hm.keep_freed_host_memory() if sys.argv[2] == "keep" else None

    def faults_of_one_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [np.ones(12800) for _ in range(200)]  # 200 x 100 KiB, written
        del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_round()  # the first round faults the pages in either way
    print(kept, faults_of_one_round(), faults_of_one_round())
""")


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


def _rounds(mode: str, env: dict | None = None) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, host_memory.__file__, mode],
                         capture_output=True, text=True, timeout=60, env=env, check=True)
    kept, first, second = out.stdout.split()
    return kept, int(first), int(second)


@pytest.mark.skipif(not _glibc(), reason="glibc's malloc only (Linux); elsewhere a no-op")
def test_freed_heap_memory_is_reused_instead_of_faulted_in_again():
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES",
                                                        "GPUDL_KEEP_HOST_MEMORY")}
    _, *default = _rounds("default", env)
    kept, *reused = _rounds("keep", env)
    # 20 MiB is ~5,000 pages: glibc's defaults give them back and fault them in each round
    assert min(default) > 2500, default
    assert kept == "True" and max(reused) < 250, reused


@pytest.mark.parametrize("name, value", [("GPUDL_KEEP_HOST_MEMORY", "0"),
                                         ("MALLOC_TRIM_THRESHOLD_", "131072"),
                                         ("MALLOC_MMAP_THRESHOLD_", "65536"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")])
def test_a_users_own_malloc_settings_are_left_alone(monkeypatch, name, value):
    for var in ("GPUDL_KEEP_HOST_MEMORY", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    assert host_memory.user_chose() is None
    monkeypatch.setenv(name, value)
    assert host_memory.user_chose() == name
    assert host_memory._apply() is False  # returns before any mallopt call


def test_the_settings_are_made_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(host_memory, "_apply", lambda: calls.append(1) or True)
    assert host_memory.keep_freed_host_memory() and host_memory.keep_freed_host_memory()
    assert calls == [1]
