"""Tests of gpudl.backend: device choice and its reasons, transfers, device mismatches.

The development machines have CuPy but no GPU, so the "CuPy present, no GPU" path runs
for real; other machines (no CuPy, old driver, no NVRTC, a working GPU) are simulated
with a fake ``cupy`` module returned by ``backend._cupy_module``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from gpudl.errors import (
    DeviceMismatchError,
    DeviceUnavailableError,
    DTypeError,
    ShapeError,
    UnknownDeviceError,
)

HAS_GPU = backend.probe_cuda()[0]
no_gpu_only = pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU fallback")


@pytest.fixture
def fresh(monkeypatch):
    """A backend that has chosen nothing yet (no env var); the old state comes back after."""
    saved = dict(backend._state)
    backend._state.update(device=None, reason="", probe=None, fallback_logged=False)
    monkeypatch.delenv("GPUDL_DEVICE", raising=False)
    yield backend._state
    backend._state.clear()
    backend._state.update(saved)


@pytest.fixture
def gpudl_log():
    """Records of the ``gpudl`` logger (it does not propagate, so caplog misses it)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("gpudl")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _fake_cupy(monkeypatch, **runtime):
    """Install a fake cupy (see the module docstring); ``runtime`` overrides its functions."""
    def no_device_count():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    rt = {
        "getDeviceCount": no_device_count,
        "driverGetVersion": lambda: 13000,
        "runtimeGetVersion": lambda: 13000,
        "getDeviceProperties": lambda i: {"name": b"Fake GPU"},
    }
    rt.update(runtime)
    available = rt.pop("is_available", False)
    kernel = rt.pop("RawKernel", None)

    def raw_kernel(code, name):
        def launch(grid, block, args):
            (x,) = args
            x += 1.0  # in place, like the real kernel

        return launch

    fake = SimpleNamespace(
        is_available=lambda: available,
        cuda=SimpleNamespace(runtime=SimpleNamespace(**rt)),
        RawKernel=kernel or raw_kernel,
        zeros=np.zeros,
        float32=np.float32,
    )
    monkeypatch.setattr(backend, "_cupy_module", lambda: fake)
    backend._state["probe"] = None
    return fake


# ----------------------------------------------------------------------------- device choice
@no_gpu_only
def test_auto_falls_back_to_cpu_with_reason_and_one_log_line(fresh, gpudl_log):
    assert gd.set_device("auto") == "cpu"
    assert gd.get_device() == "cpu"
    reason = gd.device_reason()
    assert reason.startswith("auto: ") and "using NumPy" in reason
    assert backend.probe_cuda()[1] in reason
    gd.set_device("auto")  # a second auto does not repeat the line
    lines = [r.getMessage() for r in gpudl_log]
    assert len(lines) == 1 and "auto -> cpu" in lines[0] and backend.probe_cuda()[1] in lines[0]


@no_gpu_only
def test_cuda_request_without_gpu_says_why_and_what_to_install(fresh):
    gd.set_device("cpu")
    with pytest.raises(DeviceUnavailableError) as info:
        gd.set_device("cuda")
    msg = str(info.value)
    assert backend.probe_cuda()[1] in msg
    assert "gpudl[cuda13]" in msg and "gpudl[cuda12]" in msg
    assert gd.get_device() == "cpu"  # a failed switch leaves the device alone


def test_unknown_device_name(fresh):
    with pytest.raises(UnknownDeviceError, match=r"unknown device 'tpu'.*'auto', 'cpu', 'cuda'"):
        gd.set_device("tpu")
    assert issubclass(UnknownDeviceError, ValueError)
    assert gd.set_device(" CPU ") == "cpu"  # names are case- and space-insensitive


def test_env_var_is_respected(fresh, monkeypatch):
    monkeypatch.setenv("GPUDL_DEVICE", "cpu")
    assert gd.get_device() == "cpu"
    assert "GPUDL_DEVICE=cpu" in gd.device_reason()


def test_env_var_with_bad_name_names_the_variable(fresh, monkeypatch):
    monkeypatch.setenv("GPUDL_DEVICE", "gpu0")
    with pytest.raises(UnknownDeviceError, match="GPUDL_DEVICE=gpu0"):
        gd.get_device()


@no_gpu_only
def test_env_var_cuda_without_gpu(fresh, monkeypatch):
    monkeypatch.setenv("GPUDL_DEVICE", "cuda")
    with pytest.raises(DeviceUnavailableError, match="GPUDL_DEVICE=cuda"):
        gd.get_device()


@no_gpu_only
def test_env_var_unset_means_auto(fresh):
    assert gd.get_device() == "cpu" and gd.device_reason().startswith("auto: ")


def test_device_context_manager_restores(fresh):
    gd.set_device("cpu")
    before = gd.device_reason()
    with gd.device("cpu") as name:
        assert name == "cpu"
    assert gd.get_device() == "cpu" and gd.device_reason() == before
    with pytest.raises(RuntimeError, match="boom"), gd.device("cpu"):
        raise RuntimeError("boom")
    assert gd.device_reason() == before
    with pytest.raises(UnknownDeviceError), gd.device("nope"):
        pass
    assert gd.get_device() == "cpu" and gd.device_reason() == before


# ----------------------------------------------------------------------------- simulated machines
def test_cupy_not_installed(fresh, monkeypatch):
    monkeypatch.setattr(backend, "_cupy_module", lambda: None)
    assert backend.probe_cuda() == (False, "CuPy is not installed")
    with pytest.raises(DeviceUnavailableError, match=r"CuPy is not installed.*gpudl\[cuda1"):
        gd.set_device("cuda")
    assert gd.set_device("auto") == "cpu"
    assert "CuPy is not installed" in gd.device_reason()
    with pytest.raises(DeviceUnavailableError, match="CuPy is not installed"):
        backend.xp_for("cuda")


def test_driver_too_old(fresh, monkeypatch):
    def insufficient():
        raise RuntimeError(
            "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA "
            "runtime version"
        )

    _fake_cupy(
        monkeypatch, getDeviceCount=insufficient, driverGetVersion=lambda: 12020,
        runtimeGetVersion=lambda: 13000,
    )
    usable, reason = backend.probe_cuda()
    assert not usable
    assert "too old" in reason and "CUDA 12.2" in reason and "CUDA 13.0" in reason
    with pytest.raises(DeviceUnavailableError, match=r"too old.*gpudl\[cuda12\]"):
        gd.set_device("cuda")


def test_no_driver_at_all(fresh, monkeypatch):
    def insufficient():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    _fake_cupy(monkeypatch, getDeviceCount=insufficient, driverGetVersion=lambda: 0)
    assert backend.probe_cuda() == (
        False, "no NVIDIA driver is installed (no GPU on this machine)"
    )


def test_driver_but_no_device(fresh, monkeypatch):
    _fake_cupy(monkeypatch)
    assert backend.probe_cuda() == (False, "no CUDA GPU was found")


def test_nvrtc_missing(fresh, monkeypatch, gpudl_log):
    def no_nvrtc(code, name):
        raise RuntimeError("CuPy failed to load libnvrtc.so.13: OSError: cannot open shared object")

    _fake_cupy(monkeypatch, is_available=True, RawKernel=no_nvrtc)
    usable, reason = backend.probe_cuda()
    assert not usable and reason.startswith("NVRTC (the CUDA runtime compiler) is missing")
    assert gd.set_device("auto") == "cpu" and "NVRTC" in gd.device_reason()
    assert len(gpudl_log) == 1 and "NVRTC" in gpudl_log[0].getMessage()


def test_auto_picks_a_working_gpu(fresh, monkeypatch, gpudl_log):
    _fake_cupy(monkeypatch, is_available=True)
    assert backend.probe_cuda() == (True, "CUDA GPU Fake GPU")
    assert gd.set_device("auto") == "cuda"
    assert gd.device_reason() == "auto: CUDA GPU Fake GPU"
    assert gpudl_log == []  # only the fallback is logged


def test_probe_is_cached(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(backend, "_cupy_module", lambda: calls.append(1))
    backend.probe_cuda()
    backend.probe_cuda()
    assert calls == [1]


# ----------------------------------------------------------------------------- arrays
def test_asarray_dtypes():
    assert gd.asarray([1.5, 2.5]).dtype == np.float32
    assert gd.asarray(np.ones(2)).dtype == np.float32
    assert gd.asarray(np.ones(2, np.float16)).dtype == np.float32
    assert gd.asarray(3.0).dtype == np.float32
    assert gd.asarray(np.arange(3)).dtype == np.arange(3).dtype
    assert gd.asarray(np.arange(3, dtype=np.int32)).dtype == np.int32
    assert gd.asarray([True, False]).dtype == np.bool_
    assert gd.asarray(np.array([1, 2], np.uint8)).dtype == np.uint8
    assert gd.asarray([1.0], dtype="float64").dtype == np.float64
    assert gd.asarray([1, 2], dtype=np.float32).dtype == np.float32
    out = gd.asarray([[1.0, 2.0]], device="cpu")
    assert type(out) is np.ndarray and out.shape == (1, 2)
    np.testing.assert_array_equal(out, [[1.0, 2.0]])


@pytest.mark.parametrize("bad", ["1.5", b"12", None, {"w": 1.0}, {1, 2}, object(),
                                 [1, None], np.array(["a", "b"]), np.array([1, "a"], object)])
def test_asarray_refuses_what_is_not_numbers(bad):
    with pytest.raises(DTypeError, match="asarray: argument 'x' must"):
        gd.asarray(bad)
    with pytest.raises(TypeError):  # DTypeError is a TypeError: old except clauses work
        gd.asarray(bad, device="cpu")


def test_asarray_refuses_ragged_lists_and_object_dtypes():
    with pytest.raises(ShapeError, match="not rectangular"):
        gd.asarray([[1.0, 2.0], [3.0]])
    with pytest.raises(DTypeError, match="dtype must be numeric"):
        gd.asarray([1.0], dtype=object)


def test_to_numpy():
    x = np.arange(4.0)
    assert gd.to_numpy(x) is x or np.shares_memory(gd.to_numpy(x), x)
    assert type(gd.to_numpy([1, 2])) is np.ndarray
    np.testing.assert_array_equal(gd.to_numpy([1, 2]), [1, 2])


def test_to_device_tree_on_cpu():
    tree = {"w": np.ones((2, 2)), "b": [np.zeros(3, np.int32), 1.5], "none": None}
    moved = gd.to_device(tree, "cpu")
    assert gd.tree.tree_structure(moved) == gd.tree.tree_structure(tree)
    assert moved["w"].dtype == np.float64 and moved["b"][0].dtype == np.int32
    assert moved["b"][1] == 1.5 and moved["none"] is None
    np.testing.assert_array_equal(moved["w"], tree["w"])


@no_gpu_only
def test_to_device_cuda_without_gpu_raises():
    with pytest.raises(DeviceUnavailableError):
        gd.to_device({"w": np.ones(2)}, "cuda")


def test_get_array_module():
    assert gd.get_array_module(np.ones(2), np.ones(3)) is np
    assert gd.get_array_module() is np  # the default device's module
    assert gd.get_array_module(np.ones(2), 3.0) is np
    seen = []

    def f(x):
        seen.append(gd.get_array_module(x))
        return x.sum()

    gd.grad(f)(np.ones(2))
    assert seen == [np]
    assert backend.xp_for("cpu") is np and backend.xp() is np


def test_memory_info_on_cpu():
    info = gd.memory_info()
    assert info["device"] == "cpu"
    assert info["rss"] > 0 and info["peak_rss"] > 0


def test_synchronize_on_cpu_is_a_noop():
    gd.synchronize()


# ----------------------------------------------------------------------------- device mismatch
class FakeCudaArray(np.ndarray):
    """Stands in for a CuPy array: refuses NumPy array operands as CuPy does."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(type(a) is np.ndarray for a in inputs):
            raise TypeError("Unsupported type <class 'numpy.ndarray'>")
        plain = [a.view(np.ndarray) if isinstance(a, FakeCudaArray) else a for a in inputs]
        return getattr(ufunc, method)(*plain, **kwargs).view(FakeCudaArray)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(backend, "_cuda_array_types", lambda: (FakeCudaArray,))
    return lambda a: np.asarray(a, dtype=np.float64).view(FakeCudaArray)


def test_mixed_devices_raise_device_mismatch(fake_cuda):
    host, dev = np.ones(3), fake_cuda([1.0, 2.0, 3.0])
    assert backend.device_of(dev) == "cuda" and backend.device_of(host) == "cpu"
    with pytest.raises(DeviceMismatchError) as info:
        gd.ops.add(host, dev)
    msg = str(info.value)
    assert msg.startswith("add:")
    assert "argument 0 is on cpu" in msg and "argument 1 is on cuda" in msg
    assert "gd.to_device" in msg
    with pytest.raises(DeviceMismatchError, match="argument 1 is on cpu.*argument 0 is on cuda"):
        gd.ops.multiply(dev, host)
    with pytest.raises(DeviceMismatchError, match="get_array_module"):
        gd.get_array_module(host, dev)


def test_scalars_mix_with_either_device(fake_cuda):
    dev = fake_cuda([1.0, 2.0])
    out = gd.ops.add(dev, np.float32(2.0))
    np.testing.assert_array_equal(np.asarray(out), [3.0, 4.0])
    assert backend.check_same_device([dev, 2.0, np.float64(1.0), None], "op") == "cuda"


@pytest.mark.gpu
def test_mixed_devices_raise_device_mismatch_on_gpu():
    cupy = backend.xp_for("cuda")
    host, dev = np.ones(3, np.float32), cupy.ones(3, dtype=cupy.float32)
    with pytest.raises(DeviceMismatchError, match="argument 0 is on cpu.*argument 1 is on cuda"):
        gd.ops.add(host, dev)
    with pytest.raises(DeviceMismatchError):
        gd.ops.matmul(dev, host)
    assert backend.get_array_module(dev) is cupy
    moved = gd.to_device({"w": host}, "cuda")
    assert isinstance(moved["w"], cupy.ndarray)
    np.testing.assert_array_equal(gd.to_numpy(moved["w"]), host)


def test_backend_is_the_only_module_importing_cupy():
    """DESIGN: the cupy import lives in backend.py alone (its probe diagnosis in
    _cuda_probe.py is handed the module, never imports it)."""
    import ast
    from pathlib import Path

    root = Path(backend.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] in ("cupy", "cupyx") for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"backend.py"}
