"""Before NumPy loads: OpenBLAS's own kernel choice for this CPU in a benchmark against torch.

torch's MKL and oneDNN pick their kernels for the CPU they run on; so does NumPy's OpenBLAS,
unless ``OPENBLAS_CORETYPE`` names a set. Some machine images pin ``Haswell`` (AVX2; the
same bits on every x86 machine), which on an AVX-512 CPU halves OpenBLAS's matrix-product
speed (``gpudl/bench/blas_kernels.py`` has the measurements) and would make a comparison
with torch one of kernel choices rather than of the two frameworks. A benchmark calls
:func:`lift_coretype_pin` first, reports what it lifted, and keeps the pin when given
``--keep-blas-coretype``. This module imports no NumPy.
"""

from __future__ import annotations

import os

KEEP_FLAG = "--keep-blas-coretype"
KEEP_HELP = ("keep an OPENBLAS_CORETYPE set in the environment (by default it is lifted, so "
             "that OpenBLAS picks its kernels for this CPU as torch's libraries do)")


def asks_to_keep(argv: list[str]) -> bool:
    """``argv`` holds ``--keep-blas-coretype`` or an abbreviation argparse takes for it (no
    other option of the scripts that use this starts with ``--k``)."""
    return any(len(a) >= 3 and KEEP_FLAG.startswith(a) for a in argv)


def lift_coretype_pin(argv: list[str]) -> str | None:
    """Remove ``OPENBLAS_CORETYPE`` from this process's environment unless ``argv`` asks to
    keep it (:func:`asks_to_keep`); the value removed, or None. Call before NumPy loads."""
    if asks_to_keep(argv):
        return None
    return os.environ.pop("OPENBLAS_CORETYPE", None)


def lifted_note(lifted: str | None, cores: list[str]) -> str | None:
    """The report's line about a lifted pin (None when nothing was lifted)."""
    if lifted is None:
        return None
    return (f"OPENBLAS_CORETYPE={lifted} from the environment was lifted for this run: "
            f"OpenBLAS ran its own choice for this CPU ({', '.join(cores) or 'unknown'}), as "
            f"torch's libraries do; {KEEP_FLAG} measures with the pin")
