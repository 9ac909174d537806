"""Run gpudl's CUDA kernels on the CPU: g++ with a CUDA shim, launched through ctypes.

Machines without a GPU (CI, laptops) can still execute every ``kernels/*.cu`` file: each
``KernelSource`` is compiled by g++ with ``cuda_shim.h`` (CUDA threads as fibers, real
``__syncthreads`` and warp-shuffle rendezvous) and launched from Python with the same
grid, block and argument tuple that ``gpudl.cuda.launch`` would hand to CuPy.
emulated_cupy.py puts a NumPy-backed stand-in for the ``cupy`` module around it, so
gpudl's real CUDA code paths run unchanged.

Every launch is checked more strictly than a GPU would: each argument's type must match the
kernel parameter's C type exactly (a float64 array bound to ``float*`` or an ``np.int64``
bound to ``int`` is an error, where CuPy would silently reinterpret the bytes); arrays are
copied into buffers with 0xFF guard bytes on both sides, so a write out of bounds is caught
(and a read out of bounds reads NaN); a write to a ``const T*`` parameter is caught.

Example:
    >>> mod = EmulatedModule(code=src, options=("-I/path/kernels",),
    ...                      name_expressions=["scale<float>"])  # doctest: +SKIP
    >>> mod.get_function("scale<float>")((4,), (256,), (x, np.int32(x.size)))  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SHIM = Path(__file__).resolve().parent / "cuda_shim.h"
CXX = os.environ.get("CXX", "g++")
# No FMA contraction, so results follow the IEEE operations the source names.
CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-w")
GUARD_BYTES = 4096
# Memcheck mode (`make memcheck-emulated`): kernels built with AddressSanitizer, Python
# started with libasan preloaded, and every array argument copied into its own allocation
# that ends exactly where the array ends, so a read or write past the end hits ASan's
# redzone - the emulated counterpart of compute-sanitizer's memcheck.
ASAN = os.environ.get("GPUDL_EMU_ASAN") == "1"
if ASAN:
    CXXFLAGS = (*CXXFLAGS, "-fsanitize=address", "-fno-omit-frame-pointer")
# Order in which a block's threads run between barriers: "forward" (0, 1, ...) or
# "reverse". A race that reads another thread's write without a barrier reads stale data
# in at least one of the two; `make test` runs the kernel tests in both (memcheck mode
# reverses).
THREAD_ORDER = os.environ.get("GPUDL_EMU_ORDER", "forward")

_POINTEE = {"f": np.float32, "d": np.float64, "i": np.int32, "I": np.uint32, "l": np.int64,
            "L": np.uint64, "b": np.bool_, "c": np.int8, "B": np.uint8}
_SCALAR = {"f": (np.float32, ctypes.c_float), "d": (np.float64, ctypes.c_double),
           "i": (np.int32, ctypes.c_int32), "I": (np.uint32, ctypes.c_uint32),
           "l": (np.int64, ctypes.c_int64), "L": (np.uint64, ctypes.c_uint64),
           "b": (np.bool_, ctypes.c_bool)}


class EmulationError(RuntimeError):
    """A kernel misbehaved under emulation (bad binding, out-of-bounds write, deadlock)."""


def compiler_available() -> bool:
    return shutil.which(CXX) is not None


def asan_runtime() -> str | None:
    """Path of the compiler's libasan.so (to LD_PRELOAD into Python), or None."""
    if not compiler_available():
        return None
    out = subprocess.run([CXX, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def asan_environment() -> dict[str, str]:
    """Environment for a Python process in memcheck mode (see ASAN above)."""
    runtime = asan_runtime()
    if runtime is None:
        raise EmulationError(f"{CXX} has no AddressSanitizer runtime (libasan.so)")
    # Leak reports would list CPython's own allocations; fibers switch stacks, which ASan
    # supports for swapcontext with a one-time warning.
    return {**os.environ, "GPUDL_EMU_ASAN": "1", "LD_PRELOAD": runtime,
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86"}


def cache_dir() -> Path:
    path = Path(os.environ.get("GPUDL_EMU_CACHE", Path(tempfile.gettempdir()) / "gpudl-kernel-emu"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _include_dirs(options: Sequence[str]) -> list[str]:
    return [o[2:] for o in options if o.startswith("-I")]


def _translation_unit(code: str, name_expressions: Sequence[str]) -> str:
    """The kernel source followed by one C entry point (launch + signature) per instance."""
    lines = [code, "", "// ---- emulator entry points ----",
             'extern "C" void gpudl_emu_set_reverse(int r) { gpudl_emu::g_reverse = r != 0; }',
             'extern "C" void gpudl_emu_add_shared(char* p, unsigned long n) '
             '{ gpudl_emu::g_shared_regions.emplace_back(p, n); }']
    for i, expr in enumerate(name_expressions):
        lines.append(
            f'extern "C" int gpudl_emu_launch_{i}(const unsigned* g, const unsigned* b, void** a, '
            f"char* err, int n) {{ return gpudl_emu::launch(&{expr}, g, b, a, err, n); }}"
        )
        lines.append(
            f'extern "C" const char* gpudl_emu_sig_{i}() {{ return gpudl_emu::signature(&{expr}); }}'
        )
    return "\n".join(lines) + "\n"


def build(code: str, options: Sequence[str], name_expressions: Sequence[str]) -> Path:
    """Compile (or reuse from the cache) the shared library for one kernel file."""
    tu = _translation_unit(code, name_expressions)
    includes = _include_dirs(options)
    h = hashlib.sha256()
    for part in (tu, SHIM.read_text(), " ".join(CXXFLAGS), CXX):
        h.update(part.encode())
    for d in includes:  # headers the source includes (common.cuh)
        for header in sorted(Path(d).glob("*.cuh")):
            h.update(header.read_bytes())
    lib = cache_dir() / f"kernels-{h.hexdigest()[:24]}.so"
    if lib.is_file():
        return lib
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tu.cpp"
        src.write_text(tu)
        out = Path(tmp) / "lib.so"
        cmd = [CXX, *CXXFLAGS, *(f"-I{d}" for d in includes), "-include", str(SHIM),
               str(src), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EmulationError(f"g++ could not compile the kernel source:\n{proc.stderr[-4000:]}")
        shared = lib.with_suffix(".shared.json")
        tmp = shared.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_shared_symbols(out)))
        os.replace(tmp, shared)
        tmp_lib = lib.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_lib)
        os.replace(tmp_lib, lib)  # atomic: a concurrent run never loads half a file
    return lib


def _shared_symbols(lib: Path) -> dict[str, Any]:
    """Offsets and sizes of the kernels' ``__shared__`` arrays in a built library.

    They are the function-local statics (mangled ``_ZZ...``) in writable sections (.bss,
    .data), outside the shim (gpudl_emu) and the C++ library (std). One exported function's
    offset comes along, to turn offsets into addresses after loading.
    """
    out = subprocess.run(["objdump", "-t", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    regions, anchor = [], None
    for line in out.splitlines():
        parts = line.split()  # address flags... section size name
        if len(parts) < 4:
            continue
        name, size, section = parts[-1], parts[-2], parts[-3]
        if name == "gpudl_emu_set_reverse":
            anchor = int(parts[0], 16)
        if (name.startswith("_ZZ") and section in (".bss", ".data")
                and "gpudl_emu" not in name and not name.startswith(("_ZZNSt", "_ZZNKSt", "_ZZSt"))):
            regions.append((int(parts[0], 16), int(size, 16)))
    return {"anchor": anchor, "regions": regions}


class EmulatedKernel:
    """One template instance, callable like CuPy's RawKernel: ``k(grid, block, args)``."""

    def __init__(self, name: str, launch_fn, signature: str, launched: set[str] | None = None):
        self.name = name
        self._launch = launch_fn
        self.signature = [c for c in signature.split(",") if c]
        self._launched = set() if launched is None else launched  # the module's record

    def _bind_scalar(self, i: int, code: str, a: Any):
        if code not in _SCALAR:
            raise EmulationError(f"{self.name}: parameter {i} has an unsupported type code {code!r}")
        np_type, c_type = _SCALAR[code]
        if type(a) is not np_type:
            raise EmulationError(
                f"{self.name}: argument {i} is {type(a).__name__}, the kernel parameter is "
                f"{np.dtype(np_type).name}; pass np.{np.dtype(np_type).name}(value)"
            )
        return c_type(a.item())

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        if shared_mem:
            raise EmulationError(f"{self.name}: dynamic shared memory is not emulated")
        if len(args) != len(self.signature):
            raise EmulationError(
                f"{self.name}: the kernel takes {len(self.signature)} arguments, got {len(args)}"
            )
        holders: list[Any] = []
        ptrs = (ctypes.c_void_p * max(len(args), 1))()
        buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        bound: list[tuple[tuple[int, int], int, np.ndarray, np.ndarray, np.ndarray, bool]] = []
        for i, (code, a) in enumerate(zip(self.signature, args)):
            if code[0] in "PC":
                if not isinstance(a, np.ndarray):
                    raise EmulationError(f"{self.name}: argument {i} must be an array, got {type(a)}")
                a = a.view(np.ndarray)  # the same memory, without DeviceArray's checks
                want = np.dtype(_POINTEE[code[1]])
                if a.dtype != want:
                    raise EmulationError(
                        f"{self.name}: argument {i} is a {a.dtype} array, the kernel parameter "
                        f"is a pointer to {want}"
                    )
                if not a.flags.c_contiguous:
                    raise EmulationError(f"{self.name}: argument {i} is not C-contiguous")
                key = (a.ctypes.data, a.nbytes)
                for (start, size) in buffers:
                    if (start, size) != key and start < key[0] + key[1] and key[0] < start + size:
                        raise EmulationError(f"{self.name}: argument {i} partly overlaps another")
                if key not in buffers and ASAN:
                    offset = a.ctypes.data % 16  # malloc aligns to 16: keep the caller's
                    raw = np.empty(offset + a.nbytes, dtype=np.uint8)
                    inner = raw[offset:]
                    inner[...] = a.reshape(-1).view(np.uint8)
                    buffers[key] = (raw, inner)
                elif key not in buffers:
                    raw = np.full(a.nbytes + 2 * GUARD_BYTES + 64, 0xFF, dtype=np.uint8)
                    # Same address modulo 64 as the caller's array: kernels that take a
                    # vector path only for 16-byte-aligned rows must see the real alignment.
                    start = GUARD_BYTES + (a.ctypes.data - raw.ctypes.data - GUARD_BYTES) % 64
                    raw = raw[start - GUARD_BYTES:start + a.nbytes + GUARD_BYTES]
                    inner = raw[GUARD_BYTES:GUARD_BYTES + a.nbytes]
                    inner[...] = a.reshape(-1).view(np.uint8)
                    buffers[key] = (raw, inner)
                raw, inner = buffers[key]
                holder = ctypes.c_void_p(inner.ctypes.data)
                # One entry per buffer; it is read-only only if every binding is const.
                const = code[0] == "C" and all(c for (k, *_, c) in bound if k == key)
                bound = [e for e in bound if e[0] != key]
                bound.append((key, i, a, raw, inner, const))
            else:
                holder = self._bind_scalar(i, code, a)
            holders.append(holder)
            ptrs[i] = ctypes.addressof(holder)
        g = (ctypes.c_uint * 3)(*(list(grid) + [1, 1])[:3])
        b = (ctypes.c_uint * 3)(*(list(block) + [1, 1])[:3])
        err = ctypes.create_string_buffer(2048)
        rc = self._launch(g, b, ptrs, err, len(err))
        if rc:
            raise EmulationError(f"{self.name} grid {tuple(grid)} block {tuple(block)}: "
                                 f"{err.value.decode()}")
        for _, i, a, raw, inner, const in bound:
            guards = () if ASAN else (("before the start", raw[:GUARD_BYTES]),
                                      ("past the end", raw[GUARD_BYTES + a.nbytes:]))
            for side, guard in guards:
                changed = np.flatnonzero(guard != 0xFF)
                if changed.size:
                    raise EmulationError(
                        f"{self.name}: wrote out of bounds of argument {i} ({side}; "
                        f"{a.nbytes} bytes, guard byte {int(changed[0])} changed)"
                    )
            original = a.reshape(-1).view(np.uint8)
            if const:
                if not np.array_equal(inner, original):
                    raise EmulationError(f"{self.name}: wrote to const argument {i}")
            else:
                original[...] = inner
        self._launched.add(self.name)


class EmulatedModule:
    """Stand-in for ``cupy.RawModule(code=..., options=..., name_expressions=...)``."""

    def __init__(self, code: str, options: Sequence[str] = (), name_expressions: Sequence[str] = ()):
        self.name_expressions = list(name_expressions)
        # Instances launched to completion (checks passed): the kernel coverage of a run
        # (kernel_coverage.py) is read from here.
        self.launched: set[str] = set()
        lib_path = build(code, options, self.name_expressions)
        self._lib = ctypes.CDLL(str(lib_path))
        self._kernels: dict[str, EmulatedKernel] = {}
        self.set_thread_order(THREAD_ORDER)
        self._register_shared(lib_path)

    def _register_shared(self, lib_path: Path) -> None:
        info = json.loads(lib_path.with_suffix(".shared.json").read_text())
        if info["anchor"] is None:
            raise EmulationError(f"{lib_path}: no gpudl_emu_set_reverse symbol")
        base = ctypes.cast(self._lib.gpudl_emu_set_reverse, ctypes.c_void_p).value - info["anchor"]
        add = self._lib.gpudl_emu_add_shared
        add.argtypes = (ctypes.c_void_p, ctypes.c_ulong)
        for offset, size in info["regions"]:
            add(base + offset, size)

    def set_thread_order(self, order: str) -> None:
        """Run each block's threads in index order ("forward") or reversed ("reverse")."""
        if order not in ("forward", "reverse"):
            raise ValueError(f"thread order must be 'forward' or 'reverse', got {order!r}")
        self._lib.gpudl_emu_set_reverse(int(order == "reverse"))

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self._kernels:
            i = self.name_expressions.index(name)
            launch_fn = getattr(self._lib, f"gpudl_emu_launch_{i}")
            launch_fn.restype = ctypes.c_int
            sig_fn = getattr(self._lib, f"gpudl_emu_sig_{i}")
            sig_fn.restype = ctypes.c_char_p
            self._kernels[name] = EmulatedKernel(name, launch_fn, sig_fn().decode(), self.launched)
        return self._kernels[name]


def compile_all(sources) -> dict[str, str]:
    """Compile every KernelSource with g++; returns {filename: error text} for failures."""
    failures = {}
    for name, src in sorted(sources.items()):
        try:
            EmulatedModule(src.source(), src.options(), src.name_expressions)
        except EmulationError as exc:
            failures[name] = re.sub(r"\s+", " ", str(exc))[:2000]
    return failures
