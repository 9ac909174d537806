"""Which kernel set NumPy's OpenBLAS runs, and whether it forgoes the CPU's AVX-512.

NumPy's wheels bundle an OpenBLAS built for every x86 core (DYNAMIC_ARCH): it picks one
kernel set ("Haswell": AVX2, "SkylakeX": AVX-512, ...) when it loads, from the CPU, unless
the environment variable ``OPENBLAS_CORETYPE`` names one. Some machine images pin
``OPENBLAS_CORETYPE=Haswell`` (the same bits on every x86 machine). On an AVX-512 CPU that
halves float32 matrix-product speed: measured on a 2-core AMD EPYC (Zen 5), one thread,
OpenBLAS 0.3.31, 115-122 GFLOP/s with Haswell's kernels against 210-238 with the
SkylakeX kernels OpenBLAS picks itself, on (128x784)@(784x256), (512x512)@(512x512) and
(1024x144)@(144x256). Every convolution, linear layer and LSTM step of gpudl runs on
these products, so ``gpudl doctor`` reports the kernel set and names the fix when it
forgoes AVX-512. gpudl never changes the variable itself: the environment's choice stands.

Example:
    >>> cpu = read_cpu("vendor_id : AuthenticAMD\\ncpu family : 26\\n"
    ...                "flags : avx2 avx512f avx512cd avx512bw avx512dq avx512vl\\n")
    >>> slow_kernel_problem(cpu, ["SkylakeX"], environ={}) is None
    True
    >>> slow_kernel_problem(cpu, ["Haswell"], {"OPENBLAS_CORETYPE": "Haswell"})[1][:38]
    'unset OPENBLAS_CORETYPE (now "Haswell"'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

VARIABLE = "OPENBLAS_CORETYPE"
# OpenBLAS's names (threadpoolctl's "architecture", lower case) for its AVX-512 kernel sets
AVX512_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
# the AVX-512 subsets those kernels use: a CPU with all of them can run them
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


@dataclass(frozen=True)
class CpuId:
    """The first processor's vendor, family, feature flags, model number and marketing
    name, as /proc/cpuinfo gives them (model and name None where they are missing)."""

    vendor: str
    family: int
    flags: frozenset[str]
    model: int | None = None
    name: str | None = None

    @property
    def has_avx512(self) -> bool:
        return AVX512_FLAGS <= self.flags

    def describe(self) -> str:
        """``"GenuineIntel family 6 model 207"``: what tells machines apart where a
        hypervisor names them all "Intel(R) Xeon(R) Processor" or "AMD EPYC"."""
        model = "" if self.model is None else f" model {self.model}"
        return f"{self.vendor} family {self.family}{model}"


def read_cpu(text: str | None = None) -> CpuId | None:
    """The first processor of /proc/cpuinfo (or of ``text``); None where that cannot be read
    (not Linux) or lacks a field."""
    if text is None:
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read(1 << 16)
        except OSError:
            return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    model = fields.get("model", "")
    try:
        return CpuId(fields["vendor_id"], int(fields["cpu family"]),
                     frozenset(fields["flags"].split()),
                     int(model) if model.isdigit() else None, fields.get("model name") or None)
    except (KeyError, ValueError):
        return None


def loaded_cores() -> list[str]:
    """The kernel set of each loaded OpenBLAS ("Haswell", "SkylakeX", ...), as threadpoolctl
    reports it; empty without threadpoolctl or OpenBLAS (NumPy on another BLAS)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [str(p["architecture"]) for p in threadpool_info()  # None: an OpenBLAS that
            if p.get("internal_api") == "openblas" and p.get("architecture")]  # cannot say


def current_problem() -> tuple[str, str] | None:
    """:func:`slow_kernel_problem` of this machine and this process's loaded OpenBLAS."""
    return slow_kernel_problem(read_cpu(), loaded_cores())


def slow_kernel_problem(cpu: CpuId | None, cores: list[str],
                        environ: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """``(problem, fix)`` when a loaded OpenBLAS runs kernels without AVX-512 on a CPU that
    has it (a pinned ``OPENBLAS_CORETYPE``, or an OpenBLAS too old for the CPU), else None.

    Example:
        >>> cpu = CpuId("GenuineIntel", 6, AVX512_FLAGS)
        >>> slow_kernel_problem(cpu, ["Haswell"], environ={})[1]
        'export OPENBLAS_CORETYPE=SkylakeX before starting Python'
    """
    slow = [c for c in cores if c.lower() not in AVX512_CORES]
    if cpu is None or not cpu.has_avx512 or not slow:
        return None
    problem = (f"NumPy's OpenBLAS runs its {slow[0]} kernels (no AVX-512) on a CPU with "
               "AVX-512: its matrix products, hence gpudl's convolutions, linear layers and "
               "RNN steps on the CPU, run at up to half speed")
    pinned = environ.get(VARIABLE)
    if pinned is not None:
        return (f"{problem} ({VARIABLE}={pinned} in the environment)",
                f'unset {VARIABLE} (now "{pinned}") before starting Python, so that '
                "OpenBLAS picks its kernels for this CPU (or set it to SkylakeX)")
    return problem, f"export {VARIABLE}=SkylakeX before starting Python"
