"""Loads ``kernels/*.cu``, compiles them lazily with NVRTC, and launches them with checks.

* :class:`KernelSource` names one ``.cu`` file and the template instances it needs
  (``name_expressions``, e.g. ``"sce_forward<float>"``). It compiles on first use, once per
  device (CuPy's ``RawModule`` + ``name_expressions`` pattern), never inside a launch.
* :func:`launch` is the one checking launcher: every array argument is a C-contiguous CuPy
  array on the current device with fewer than 2**31 elements (kernels index with int32),
  every scalar is a NumPy scalar of an explicit type (RawKernel would silently pass a Python
  int as 64-bit), and grid/block sizes are within CUDA's limits. :func:`contiguous_inputs`
  copies non-contiguous inputs and checks dtypes before that.
* ``python -m gpudl.cuda --compile-check`` compiles every kernel for sm_80 and sm_90 with
  NVRTC, exactly as CuPy does, with no GPU needed. ``make test`` runs it.

Example:
    >>> SCE = KernelSource("softmax_cross_entropy.cu", ["sce_forward<float>"])  # doctest: +SKIP
    >>> launch(SCE.get("sce_forward<float>"), (n_rows,), (256,), (logits, labels, loss))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import hashlib
import sys
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
COMPILE_CHECK_ARCHS = ("sm_80", "sm_90")

SOURCES: dict[str, KernelSource] = {}

INT32_MAX = 2**31 - 1


class KernelSource:
    """One ``.cu`` file and the template instances (``name_expressions``) it provides."""

    def __init__(self, filename: str, name_expressions: Sequence[str]):
        self.filename = filename
        self.name_expressions = tuple(name_expressions)
        self._modules: dict[int, Any] = {}  # device id -> cupy.RawModule
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
        cupy = xp_for("cuda")
        dev = cupy.cuda.Device().id
        mod = self._modules.get(dev)
        if mod is None:
            mod = cupy.RawModule(
                code=self.source(), options=self.options(), name_expressions=self.name_expressions
            )
            self._modules[dev] = mod
        return mod

    def get(self, name_expression: str):
        """The compiled kernel for one instance, e.g. ``"conv2d_im2col<float>"``."""
        if name_expression not in self.name_expressions:
            raise KernelError(
                f"gpudl.cuda: {self.filename} does not declare {name_expression!r}; "
                f"declared: {self.name_expressions}"
            )
        try:
            return self.module().get_function(name_expression)
        except Exception as exc:  # CompileException carries NVRTC's log
            raise KernelError(
                f"gpudl.cuda: compiling {self.filename} ({name_expression}) failed: {exc}"
            ) from exc

    def compile_check(self, arch: str) -> int:
        """Compile with NVRTC for ``arch`` (no GPU needed). Returns the PTX size in bytes."""
        compiler = xp_for("cuda").cuda.compiler  # CuPy only through backend

        # CuPy's public compile_using_nvrtc asks the driver for the device's arch, which
        # fails without a GPU. This is the program object and the options it then uses:
        # '-ftz=true' (CuPy adds it to every kernel), '-arch=sm_XX' to cubin (as on a device
        # of that arch) plus its default-space flag.
        options = (*self.options(), "-ftz=true", f"-arch={arch}",
                   "--device-as-default-execution-space")
        program = compiler._NVRTCProgram(
            self.source(), self.filename, name_expressions=list(self.name_expressions),
            method="cubin",
        )
        binary, mapping = program.compile(options)
        missing = [n for n in self.name_expressions if not (mapping or {}).get(n)]
        if missing:
            raise KernelError(f"{self.filename}: instances {missing} were not generated")
        return len(binary)


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


def _register_all() -> None:
    """Import every module that declares kernels, so SOURCES is complete."""
    import importlib

    # Importing gpudl.functional imports every kernel-backed op module, each of which
    # declares its KernelSource at import.
    importlib.import_module("gpudl.functional")


def compile_check(archs: Sequence[str] = COMPILE_CHECK_ARCHS) -> int:
    """Compile every ``kernels/*.cu`` for each arch. Prints a line each; returns failures."""
    try:
        version = xp_for("cuda").cuda.nvrtc.getVersion()
    except Exception as exc:
        print(f"compile-check: NVRTC is unavailable ({exc}); install 'gpudl[test]' or 'gpudl[cuda13]'")
        return 1
    _register_all()
    print(f"compile-check: NVRTC {version[0]}.{version[1]}, kernels in {kernel_dir()}")
    failures = 0
    files = sorted(p.name for p in kernel_dir().glob("*.cu"))
    unregistered = [f for f in files if f not in SOURCES]
    for filename in unregistered:
        print(f"FAIL {filename}: no KernelSource declares it (nothing would ever launch it)")
        failures += 1
    for filename in files:
        if filename in unregistered:
            continue
        src = SOURCES[filename]
        for arch in archs:
            try:
                size = src.compile_check(arch)
                print(f"ok   {filename:32s} {arch}  {len(src.name_expressions)} instances, "
                      f"{size} bytes cubin")
            except Exception as exc:
                failures += 1
                print(f"FAIL {filename} {arch}: {exc}")
    print(f"compile-check: {len(files)} files, {failures} failures")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpudl.cuda", description=__doc__.split("\n")[0])
    parser.add_argument("--compile-check", action="store_true", help="compile every kernel (no GPU)")
    parser.add_argument("--arch", default=",".join(COMPILE_CHECK_ARCHS), help="e.g. sm_80,sm_90")
    ns = parser.parse_args(argv)
    if ns.compile_check:
        return 1 if compile_check(ns.arch.split(",")) else 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    # Under `python -m` this file runs as __main__, a second copy of the module; kernel
    # modules register in the real gpudl.cuda.SOURCES, so run that module's main.
    from gpudl.cuda import main as _main

    sys.exit(_main())
