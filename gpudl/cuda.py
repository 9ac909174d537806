"""Loads ``kernels/*.cu``, compiles them lazily with NVRTC, and launches them with checks.

* :class:`KernelSource` names one ``.cu`` file and the template instances it needs
  (``name_expressions``, e.g. ``"sce_forward<float>"``). It compiles on first use, once per
  device (CuPy's ``RawModule`` + ``name_expressions`` pattern), never inside a launch.
* :func:`launch` is the one checking launcher: every array argument is a C-contiguous CuPy
  array on the current device with fewer than 2**31 elements (kernels index with int32),
  every scalar is a NumPy scalar of an explicit type (RawKernel would silently pass a Python
  int as 64-bit), and grid/block sizes are within CUDA's limits. :func:`contiguous_inputs`
  copies non-contiguous inputs and checks dtypes before that.
* :meth:`KernelSource.get` is one dict lookup once a kernel is loaded: compiled functions are
  cached per (device id, name expression).
* ``python -m gpudl.compile_check`` (:mod:`gpudl.compile_check`) compiles every kernel for
  sm_80 and sm_90 with NVRTC, exactly as CuPy does, with no GPU needed. ``make test`` runs it.

This module sits just above the backend: it imports only ``gpudl.backend``, ``gpudl.errors``,
NumPy and the standard library (tests/test_layering.py checks it); the modules that declare
kernels import it, never the reverse.

Example:
    >>> SCE = KernelSource("softmax_cross_entropy.cu", ["sce_forward<float>"])  # doctest: +SKIP
    >>> launch(SCE.get("sce_forward<float>"), (n_rows,), (256,), (logits, labels, loss))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpudl.backend import xp_for
from gpudl.errors import DTypeError, KernelError

_HERE = Path(__file__).resolve().parent


def kernel_dir() -> Path:
    """Where the ``.cu`` files are: inside the installed wheel, or the repo's ``kernels/``."""
    for candidate in (_HERE / "kernels", _HERE.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise KernelError(f"gpudl.cuda: no kernels/ folder next to {_HERE} (broken install?)")


# NVRTC options shared by every kernel; no fast-math so GPU results match the NumPy twins.
BASE_OPTIONS: tuple[str, ...] = ("-std=c++17",)

SOURCES: dict[str, KernelSource] = {}

INT32_MAX = 2**31 - 1


class KernelSource:
    """One ``.cu`` file and the template instances (``name_expressions``) it provides."""

    def __init__(self, filename: str, name_expressions: Sequence[str]):
        self.filename = filename
        self.name_expressions = tuple(name_expressions)
        # The compile cache, one dict (the kernel emulator swaps it whole, see
        # tests/kernel_emulation/emulated_cupy.py): (device id, name expression) -> compiled
        # function, and device id -> the cupy.RawModule those functions come from.
        self._modules: dict[Any, Any] = {}
        if filename in SOURCES:
            raise KernelError(f"gpudl.cuda: kernel file {filename} is registered twice")
        SOURCES[filename] = self

    def source(self) -> str:
        path = kernel_dir() / self.filename
        if not path.is_file():
            raise KernelError(f"gpudl.cuda: kernel file {path} is missing")
        # CuPy's on-disk kernel cache keys on this text and the options, not on the headers
        # it includes: without the digest, an edited common.cuh would silently keep running
        # the old cubin. (Appended, so NVRTC's line numbers still match the file.)
        header = kernel_dir() / "common.cuh"
        digest = hashlib.sha256(header.read_bytes()).hexdigest()[:16] if header.is_file() else "-"
        return f"{path.read_text()}\n// gpudl: common.cuh sha256 {digest}\n"

    def options(self) -> tuple[str, ...]:
        return (*BASE_OPTIONS, f"-I{kernel_dir()}")

    def module(self):
        """The ``cupy.RawModule`` for the current device (built once per device, compiled lazily)."""
        cupy = xp_for("cuda")
        return self._module_for(cupy, cupy.cuda.Device().id)

    def _module_for(self, cupy, device_id: int):
        mod = self._modules.get(device_id)
        if mod is None:
            mod = cupy.RawModule(
                code=self.source(), options=self.options(), name_expressions=self.name_expressions
            )
            self._modules[device_id] = mod
        return mod

    def get(self, name_expression: str):
        """The compiled kernel for one instance, e.g. ``"conv2d_im2col<float>"``.

        Once loaded on a device, this is one dict lookup; the first call per (device, name)
        checks the name is declared and compiles the file (NVRTC's log in the KernelError).
        """
        cupy = xp_for("cuda")
        key = (cupy.cuda.Device().id, name_expression)
        function = self._modules.get(key)
        if function is None:
            function = self._load(cupy, key)
        return function

    def _load(self, cupy, key: tuple[int, str]):
        device_id, name_expression = key
        if name_expression not in self.name_expressions:
            raise KernelError(
                f"gpudl.cuda: {self.filename} does not declare {name_expression!r}; "
                f"declared: {self.name_expressions}"
            )
        try:
            function = self._module_for(cupy, device_id).get_function(name_expression)
        except Exception as exc:  # CompileException carries NVRTC's log
            raise KernelError(
                f"gpudl.cuda: compiling {self.filename} ({name_expression}) failed: {exc}"
            ) from exc
        self._modules[key] = function
        return function


def type_name(dtype) -> str:
    """C type for a float dtype: ``float`` or ``double`` (template argument)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise DTypeError(
        f"gpudl.cuda: kernels take float32 or float64, got {dtype}; cast with x.astype('float32')"
    )


def contiguous_inputs(op: str, *arrays, dtype=None):
    """Return C-contiguous copies (only where needed) after checking float dtypes agree."""
    cupy = xp_for("cuda")
    out = []
    for i, a in enumerate(arrays):
        if dtype is not None and a.dtype != dtype:
            raise DTypeError(
                f"{op}: argument {i} has dtype {a.dtype}, expected {np.dtype(dtype)} like the "
                f"other operands; cast it with .astype({np.dtype(dtype).name!r})"
            )
        out.append(a if a.flags.c_contiguous else cupy.ascontiguousarray(a))
    return out


# Grid-stride kernels cap their grid here and loop over the rest; the cap keeps
# grid * block below 2**31 so a kernel's int32 thread index never overflows.
DEFAULT_BLOCK = 256
MAX_GRID_BLOCKS = 1 << 20


def grid_1d(total: int, block: int = DEFAULT_BLOCK) -> tuple[int]:
    """Blocks for a 1-D grid-stride launch over ``total`` items (at least 1, capped).

    Example:
        >>> grid_1d(1000), grid_1d(0), grid_1d(10**12)
        ((4,), (1,), (1048576,))
    """
    return (max(1, min((int(total) + block - 1) // block, MAX_GRID_BLOCKS)),)


_SCALARS = (np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64)


def launch(
    kernel, grid: Sequence[int], block: Sequence[int], args: Sequence[Any], shared_mem: int = 0
) -> None:
    """Launch ``kernel`` after checking every argument (RawKernel itself checks nothing)."""
    cupy = xp_for("cuda")
    name = getattr(kernel, "name", repr(kernel))
    grid, block = tuple(int(g) for g in grid), tuple(int(b) for b in block)
    if not 1 <= len(grid) <= 3 or not 1 <= len(block) <= 3:
        raise KernelError(f"launch {name}: grid and block need 1 to 3 dims, got {grid}, {block}")
    if min(grid) < 1 or min(block) < 1:
        raise KernelError(f"launch {name}: empty grid {grid} or block {block}")
    if int(np.prod(block)) > 1024:
        raise KernelError(f"launch {name}: block {block} has more than 1024 threads")
    if grid[0] > INT32_MAX or any(g > 65535 for g in grid[1:]):
        raise KernelError(f"launch {name}: grid {grid} exceeds CUDA limits (2^31-1, 65535, 65535)")
    device_id = cupy.cuda.Device().id
    for i, a in enumerate(args):
        if isinstance(a, cupy.ndarray):
            if not a.flags.c_contiguous:
                raise KernelError(f"launch {name}: argument {i} is not C-contiguous")
            if a.device.id != device_id:
                raise KernelError(
                    f"launch {name}: argument {i} is on GPU {a.device.id}, kernel runs on "
                    f"GPU {device_id}"
                )
            if a.size > INT32_MAX:
                raise KernelError(
                    f"launch {name}: argument {i} has {a.size} elements; kernels index with "
                    f"int32 (at most {INT32_MAX}). Split the batch."
                )
        elif isinstance(a, np.ndarray):
            raise KernelError(
                f"launch {name}: argument {i} is a NumPy array; kernels need CuPy arrays "
                "(gd.to_device(x, 'cuda'))"
            )
        elif not isinstance(a, _SCALARS):
            raise KernelError(
                f"launch {name}: scalar argument {i} is {type(a).__name__}; pass an explicit "
                "NumPy scalar (np.int32(n), np.float32(x)) matching the kernel's signature"
            )
    kernel(grid, block, tuple(args), shared_mem=shared_mem)


if __name__ == "__main__":
    # The compile check moved out (so this module imports nothing above the backend); say so
    # rather than exit 0 for a CI line that still runs `python -m gpudl.cuda --compile-check`.
    raise SystemExit("gpudl.cuda has no command line: the kernel compile check is "
                     "`python -m gpudl.compile_check`")
