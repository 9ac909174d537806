"""A NumPy-backed stand-in for CuPy whose kernels run on the CPU emulator.

:func:`activate` makes gpudl's "cuda" device this emulated one: ``xp_for("cuda")`` returns
:func:`fake_cupy`, whose arrays (:class:`DeviceArray`) gpudl's device checks call CUDA
arrays and whose ``RawModule``/``RawKernel`` compile with g++ (kernel_emulator.py). It
behaves like CuPy where that matters for finding bugs: results stay on the device (0-d
arrays, never NumPy scalars), mixing host and device arrays is a TypeError, and kernels
only accept device arrays. CUDA events read the host clock (kernels run synchronously),
so timing code (gpudl.bench, benchmarks/) takes its GPU branch too; the times measure the
emulator, nothing else. Used by the ``emulated_cuda`` fixture (conftest.py) and, for
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

    @property
    def data(self):  # CuPy's ndarray.data is a device pointer, not a buffer
        return _MemoryPointer(self)


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
        Device=_Device, runtime=_Runtime, get_current_stream=lambda: _Stream.null,
        Stream=_Stream, Event=_Event, get_elapsed_time=_get_elapsed_time,
    )
    mod.random = _random_module()
    return mod


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


class _Stream:
    """``cupy.cuda.Stream``: work runs synchronously on the emulator, so nothing to wait for."""

    null: _Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        pass

    def synchronize(self) -> None:
        pass

    def record(self, event: _Event | None = None) -> _Event:
        event = event or _Event()
        event.record(self)
        return event

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc) -> None:
        pass


_Stream.null = _Stream(null=True)


class _Event:
    """``cupy.cuda.Event``: a host timestamp taken at record() (kernels run synchronously)."""

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False):
        self.disable_timing = disable_timing
        self._t: float | None = None

    def record(self, stream: _Stream | None = None) -> None:
        self._t = time.perf_counter()

    def synchronize(self) -> None:
        pass


def _get_elapsed_time(start: _Event, end: _Event) -> float:
    """Milliseconds between two recorded events; CUDA refuses unrecorded or untimed ones too."""
    for e in (start, end):
        if e.disable_timing or e._t is None:
            raise RuntimeError("emulated CuPy: get_elapsed_time needs two recorded events "
                               "created without disable_timing (cudaErrorInvalidResourceHandle)")
    return (end._t - start._t) * 1e3


class _MemoryPointer:
    """``ndarray.data``: copies take a byte count, as with cudaMemcpy."""

    def __init__(self, array: DeviceArray):
        self._array = array.view(np.ndarray)
        self.ptr = self._array.ctypes.data

    def _bytes(self, size: int) -> np.ndarray:
        if not self._array.flags.c_contiguous:
            raise NotImplementedError("emulated CuPy: raw copies of non-contiguous arrays")
        if size > self._array.nbytes:  # out of bounds on a GPU: fail loudly here
            raise ValueError(f"emulated CuPy: copy of {size} bytes from/to a buffer of "
                             f"{self._array.nbytes}")
        return self._array.reshape(-1).view(np.uint8)[:size]

    def copy_from_device(self, src: _MemoryPointer, size: int) -> None:
        self._bytes(size)[...] = src._bytes(size)

    def copy_from_device_async(self, src: _MemoryPointer, size: int, stream=None) -> None:
        self.copy_from_device(src, size)


def _random_module() -> types.SimpleNamespace:
    """``cupy.random``: NumPy's generators with CuPy's ``dtype=`` argument, results on the device.

    The numbers differ from cuRAND's; code under test must not depend on them.
    """
    state = {"rs": np.random.RandomState()}

    def floats(name: str):
        def draw(*args, dtype=float, **kwargs):
            return _on_device(np.asarray(getattr(state["rs"], name)(*args, **kwargs), dtype))
        return draw

    def seed(seed=None) -> None:
        state["rs"] = np.random.RandomState(seed)

    def randint(low, high=None, size=None, dtype="l"):
        return _on_device(np.asarray(state["rs"].randint(low, high, size, dtype=dtype)))

    class Generator:  # CuPy's Generator: random/standard_normal/uniform take dtype=
        def __init__(self, bit_generator):
            self._g = np.random.Generator(bit_generator)

        def random(self, size=None, dtype=np.float64):
            return _on_device(np.asarray(self._g.random(size, dtype=dtype)))

        def standard_normal(self, size=None, dtype=np.float64):
            return _on_device(np.asarray(self._g.standard_normal(size, dtype=dtype)))

        def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
            return _on_device(np.asarray(self._g.uniform(low, high, size), dtype))

    return types.SimpleNamespace(
        seed=seed, randint=randint, Generator=Generator,
        Philox4x3210=lambda seed=None, *, size=-1: np.random.Philox(seed),
        default_rng=lambda seed=None: Generator(np.random.Philox(seed)),
        **{n: floats(n) for n in ("rand", "randn", "random", "random_sample",
                                  "standard_normal", "normal", "uniform")})


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


# Kernel file -> the compile cache of its KernelSource while emulated (EmulatedModules and
# their functions): kept for the process, so kernel_coverage.py can read what each module
# launched.
EMULATED_MODULES: dict[str, dict] = {}


def activate(mp) -> types.ModuleType:
    """Make gpudl's "cuda" device the emulated one; ``mp`` is a pytest MonkeyPatch.

    Kernel modules go to caches of their own, so a GPU session that also runs emulated
    tests never launches an emulated module on the real GPU (or the reverse).
    """
    from gpudl import backend
    from gpudl.compile_check import registered_sources

    sources = registered_sources()
    fake = fake_cupy()
    mp.setattr(backend, "_cupy_module", lambda: fake)
    mp.setattr(backend, "_cuda_array_types", lambda: (DeviceArray,))
    mp.setitem(sys.modules, "cupyx", fake_cupyx())
    mp.setitem(sys.modules, "cupyx.profiler", sys.modules["cupyx"].profiler)
    for key in ("probe", "device"):
        mp.setitem(backend._state, key, None)
    for filename, src in sources.items():
        mp.setattr(src, "_modules", EMULATED_MODULES.setdefault(filename, {}))
    return fake
