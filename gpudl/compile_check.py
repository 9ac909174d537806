"""Compile every ``kernels/*.cu`` with NVRTC, as CuPy would, without a GPU.

``python -m gpudl.compile_check`` (``make test`` runs it) compiles each registered
:class:`~gpudl.cuda.KernelSource` for sm_80 and sm_90 (``--arch sm_80,sm_90``), prints a line
per file and arch, and exits 1 when any kernel fails to compile or a ``.cu`` file has no
``KernelSource``. It replaces ``python -m gpudl.cuda --compile-check``; the
``--compile-check`` flag is still accepted here and does nothing.

It sits above every module that declares kernels (it imports them all to fill the registry,
:func:`registered_sources`), so ``gpudl.cuda`` itself imports nothing above the backend.
CuPy's public compile path asks the driver for the device's arch, which fails without a GPU;
:func:`nvrtc_compile` uses CuPy's private ``_NVRTCProgram`` instead, in that one place, with
a check that it still has the shape this module was written against.

Example:
    >>> from gpudl.compile_check import compile_check
    >>> compile_check(["sm_90"])  # doctest: +SKIP
    compile-check: NVRTC 13.0, kernels in .../kernels
    ok   conv2d.cu                        sm_90  16 instances, 123456 bytes cubin
    ...
    compile-check: 7 files, 0 failures
    0
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Sequence

from gpudl import cuda
from gpudl.backend import xp_for
from gpudl.errors import KernelError

COMPILE_CHECK_ARCHS = ("sm_80", "sm_90")

# Every module that declares a KernelSource at import (directly or through its package).
KERNEL_MODULES = ("gpudl.functional", "gpudl.random", "gpudl.optim")

# What nvrtc_compile passes to CuPy's private _NVRTCProgram (cupy/cuda/compiler.py,
# CuPy 13.x and 14.x): the constructor's keywords and compile(options) -> (binary, mapping).
_NVRTC_PROGRAM_PARAMS = ("src", "name", "name_expressions", "method")


def registered_sources() -> dict[str, cuda.KernelSource]:
    """``gpudl.cuda.SOURCES`` once every kernel-declaring module is imported (the live dict).

    Example:
        >>> "softmax_cross_entropy.cu" in registered_sources()
        True
    """
    for name in KERNEL_MODULES:
        package = importlib.import_module(name)
        # Every submodule, exported or not: a kernel file registers even before its op is.
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            importlib.import_module(info.name)
    return cuda.SOURCES


def _cupy_version() -> str:
    try:
        return str(xp_for("cuda").__version__)
    except Exception:  # no CuPy, or a stand-in without a version
        return "unknown"


def _nvrtc_program_class():
    """CuPy's private ``_NVRTCProgram``, after checking it still takes what we pass."""
    compiler = xp_for("cuda").cuda.compiler  # CuPy only through backend
    program = getattr(compiler, "_NVRTCProgram", None)
    problem = None
    if program is None:
        problem = "has no cupy.cuda.compiler._NVRTCProgram"
    else:
        try:
            params = inspect.signature(program).parameters
            compile_params = inspect.signature(program.compile).parameters
        except (TypeError, ValueError, AttributeError) as exc:
            problem = f"has an _NVRTCProgram whose signature cannot be read ({exc})"
        else:
            missing = [p for p in _NVRTC_PROGRAM_PARAMS if p not in params]
            if missing:
                problem = f"has an _NVRTCProgram without the parameters {missing}"
            elif "options" not in compile_params:
                problem = "has an _NVRTCProgram.compile without an 'options' parameter"
    if problem is not None:
        raise KernelError(
            f"compile-check: CuPy {_cupy_version()} {problem}; the compile check was written "
            "for CuPy 13.x-14.x (gpudl/compile_check.py, nvrtc_compile). Install a supported "
            "CuPy (pip install 'gpudl[cuda13]') or update nvrtc_compile."
        )
    return program


def nvrtc_compile(src: cuda.KernelSource, arch: str) -> int:
    """Compile ``src`` with NVRTC for ``arch`` (no GPU needed). Returns the cubin size in bytes.

    The one use of CuPy's private ``_NVRTCProgram``: the program object and the options CuPy's
    ``compile_using_nvrtc`` uses on a device of that arch: ``-ftz=true`` (CuPy adds it to every
    kernel), ``-arch=sm_XX`` to cubin, plus its default-space flag.
    """
    program_class = _nvrtc_program_class()
    options = (*src.options(), "-ftz=true", f"-arch={arch}",
               "--device-as-default-execution-space")
    program = program_class(
        src.source(), src.filename, name_expressions=list(src.name_expressions), method="cubin",
    )
    result = program.compile(options)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise KernelError(
            f"compile-check: CuPy {_cupy_version()}'s _NVRTCProgram.compile returned "
            f"{type(result).__name__}, expected (binary, name mapping); update nvrtc_compile "
            "in gpudl/compile_check.py"
        )
    binary, mapping = result
    missing = [n for n in src.name_expressions if not (mapping or {}).get(n)]
    if missing:
        raise KernelError(f"{src.filename}: instances {missing} were not generated")
    return len(binary)


def compile_check(archs: Sequence[str] = COMPILE_CHECK_ARCHS) -> int:
    """Compile every ``kernels/*.cu`` for each arch. Prints a line each; returns failures."""
    try:
        version = xp_for("cuda").cuda.nvrtc.getVersion()
    except Exception as exc:
        print(f"compile-check: NVRTC is unavailable ({exc}); install 'gpudl[test]' or 'gpudl[cuda13]'")
        return 1
    sources = registered_sources()
    kernel_dir = cuda.kernel_dir()
    print(f"compile-check: NVRTC {version[0]}.{version[1]}, kernels in {kernel_dir}")
    failures = 0
    files = sorted(p.name for p in kernel_dir.glob("*.cu"))
    unregistered = [f for f in files if f not in sources]
    for filename in unregistered:
        print(f"FAIL {filename}: no KernelSource declares it (nothing would ever launch it)")
        failures += 1
    for filename in files:
        if filename in unregistered:
            continue
        src = sources[filename]
        for arch in archs:
            try:
                size = nvrtc_compile(src, arch)
                print(f"ok   {filename:32s} {arch}  {len(src.name_expressions)} instances, "
                      f"{size} bytes cubin")
            except Exception as exc:
                failures += 1
                print(f"FAIL {filename} {arch}: {exc}")
    print(f"compile-check: {len(files)} files, {failures} failures")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpudl.compile_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--compile-check", action="store_true",
                        help="accepted for compatibility with `python -m gpudl.cuda --compile-check`")
    parser.add_argument("--arch", default=",".join(COMPILE_CHECK_ARCHS), help="e.g. sm_80,sm_90")
    ns = parser.parse_args(argv)
    return 1 if compile_check(ns.arch.split(",")) else 0


if __name__ == "__main__":
    sys.exit(main())
