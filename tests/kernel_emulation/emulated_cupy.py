"""A NumPy-backed stand-in for CuPy whose kernels run on the CPU emulator.

:func:`activate` makes gpudl's "cuda" device this emulated one: ``xp_for("cuda")`` returns
:func:`fake_cupy`, whose arrays (:class:`DeviceArray`) gpudl's device checks call CUDA
arrays and whose ``RawModule``/``RawKernel`` compile with g++ (kernel_emulator.py). It
behaves like CuPy where that matters for finding bugs: results stay on the device (0-d
arrays, never NumPy scalars), mixing host and device arrays is a TypeError, and kernels
only accept device arrays. Used by the ``emulated_cuda`` fixture (conftest.py) and, for
the whole suite, by ``GPUDL_EMULATE_GPU=1 pytest -m gpu`` (tests/conftest.py).

Example:
    >>> mp = pytest.MonkeyPatch(); activate(mp)  # doctest: +SKIP
    >>> gd.to_device(np.ones(3), "cuda")           # doctest: +SKIP
    DeviceArray([1., 1., 1.])
"""

from __future__ import annotations

import sys
import time
import types

import numpy as np
from kernel_emulator import EmulatedModule

EMULATED_DEVICE_NAME = "CPU kernel emulator (gpudl tests)"


class _Device:
    """``cupy.cuda.Device()``: the emulator has one device, id 0."""

    id = 0

    def __init__(self, device: int | None = None):
        pass

    def synchronize(self) -> None:
        pass


_DEVICE = _Device()


class DeviceArray(np.ndarray):
    """An array on the emulated GPU: a NumPy array that gpudl's device checks call "cuda"."""

    @property
    def device(self):  # CuPy's ndarray.device (gpudl.cuda.launch checks .device.id)
        return _DEVICE

    def get(self) -> np.ndarray:  # CuPy's device-to-host copy
        return np.array(self.view(np.ndarray))

    # Like CuPy: results stay on the device (0-d arrays, never NumPy scalars), and an
    # operation mixing a device array with a host (NumPy) array is a TypeError. Without
    # this, host arrays would sneak into code paths where a real GPU run would fail.
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(_foreign(v) for v in (*inputs, *kwargs.get("out", ()))):
            return NotImplemented  # e.g. a traced value: its own override handles it
        _refuse_host_arrays(f"{ufunc.__name__}.{method}", inputs, kwargs)
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*_on_host(inputs), **_on_host(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return None if method == "at" else _on_device(result)

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, np.ndarray) for t in types):
            return NotImplemented
        _refuse_host_arrays(func.__name__, args, kwargs)
        return _on_device(func(*_on_host(args), **_on_host(kwargs)))

    def __getitem__(self, index):
        return _on_device(super().__getitem__(index))


def _foreign(v) -> bool:
    """An operand with its own ufunc override that is not an array (gpudl's Traced)."""
    return hasattr(type(v), "__array_ufunc__") and not isinstance(v, (np.ndarray, np.generic))


def _refuse_host_arrays(op: str, args, kwargs) -> None:
    def visit(v):
        if isinstance(v, np.ndarray) and not isinstance(v, DeviceArray) and v.ndim > 0:
            raise TypeError(f"emulated CuPy: {op} got a NumPy (host) array {v.shape} beside "
                            "device arrays; CuPy raises here too")
        if isinstance(v, (list, tuple)):
            for item in v:
                visit(item)

    visit(args)
    visit(tuple(kwargs.values()))


def _on_host(value):
    """Plain ndarray views of device arrays (recursively in tuples, lists and dicts)."""
    if isinstance(value, DeviceArray):
        return value.view(np.ndarray)
    if isinstance(value, tuple):
        return tuple(_on_host(v) for v in value)
    if isinstance(value, list):
        return [_on_host(v) for v in value]
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    return value


def _on_device(value):
    if isinstance(value, np.generic):
        return np.asarray(value).view(DeviceArray)
    if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_on_device(v) for v in value)
    if isinstance(value, list):
        return [_on_device(v) for v in value]
    return value


def fake_cupy() -> types.ModuleType:
    """A ``cupy`` stand-in: NumPy's functions returning :class:`DeviceArray`, emulated RawModule."""
    mod = types.ModuleType("cupy")

    def __getattr__(name: str):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, (type, np.ufunc)):
            return attr  # dtypes, constants; ufuncs keep .at/.reduce and stay on device

        def on_device(*args, **kwargs):
            return _on_device(attr(*args, **kwargs))

        return on_device

    def asnumpy(a):
        return np.array(np.asarray(a).view(np.ndarray))

    mod.__getattr__ = __getattr__
    mod.ndarray = DeviceArray
    mod.asnumpy = asnumpy
    mod.RawModule = EmulatedModule
    mod.RawKernel = _raw_kernel
    mod.is_available = lambda: True
    mod.__version__ = "emulated"
    pool = _MemoryPool()
    mod.get_default_memory_pool = lambda: pool
    mod.cuda = types.SimpleNamespace(
        Device=_Device, runtime=_Runtime, get_current_stream=lambda: _Stream(),
        Stream=types.SimpleNamespace(null=_Stream()),
    )
    return mod


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


class _Stream:
    def synchronize(self) -> None:
        pass


class _Runtime:
    """The parts of ``cupy.cuda.runtime`` gpudl calls."""

    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
        return 1

    @staticmethod
    def getDeviceProperties(device: int) -> dict:  # noqa: N802
        return {"name": EMULATED_DEVICE_NAME.encode(), "totalGlobalMem": 8 << 30,
                "major": 9, "minor": 0, "multiProcessorCount": 1}

    @staticmethod
    def driverGetVersion() -> int:  # noqa: N802
        return 13000

    @staticmethod
    def runtimeGetVersion() -> int:  # noqa: N802
        return 13000

    @staticmethod
    def memGetInfo() -> tuple[int, int]:  # noqa: N802
        return 8 << 30, 8 << 30


def _raw_kernel(code: str, name: str, options=(), **_):
    return EmulatedModule(code, options, [name]).get_function(name)


def fake_cupyx() -> types.ModuleType:
    """``cupyx.scatter_add`` and ``cupyx.profiler.benchmark`` for the emulated device."""
    mod = types.ModuleType("cupyx_emulated")

    def scatter_add(target, index, values):
        np.add.at(target.view(np.ndarray), _on_host(index), _on_host(values))

    def benchmark(fn, n_repeat=10, n_warmup=1, **_):
        for _ in range(n_warmup):
            fn()
        times = []
        for _ in range(n_repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        arr = np.array([times])
        return types.SimpleNamespace(gpu_times=arr, cpu_times=arr[0])

    mod.scatter_add = scatter_add
    mod.profiler = types.SimpleNamespace(benchmark=benchmark)
    return mod


_EMULATED_MODULES: dict[str, dict] = {}


def activate(mp) -> types.ModuleType:
    """Make gpudl's "cuda" device the emulated one; ``mp`` is a pytest MonkeyPatch.

    Kernel modules go to caches of their own, so a GPU session that also runs emulated
    tests never launches an emulated module on the real GPU (or the reverse).
    """
    from gpudl import backend, cuda

    cuda._register_all()
    fake = fake_cupy()
    mp.setattr(backend, "_cupy_module", lambda: fake)
    mp.setattr(backend, "_cuda_array_types", lambda: (DeviceArray,))
    mp.setitem(sys.modules, "cupyx", fake_cupyx())
    mp.setitem(sys.modules, "cupyx.profiler", sys.modules["cupyx"].profiler)
    for key in ("probe", "device"):
        mp.setitem(backend._state, key, None)
    for filename, src in cuda.SOURCES.items():
        mp.setattr(src, "_modules", _EMULATED_MODULES.setdefault(filename, {}))
    return fake
