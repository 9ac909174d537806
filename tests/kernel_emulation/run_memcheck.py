"""Run the kernels' GPU tests in memcheck mode (AddressSanitizer), as `make test` does.

``python tests/kernel_emulation/run_memcheck.py [pytest args]``: rebuilds every kernel with
-fsanitize=address, preloads libasan into a fresh Python and runs the ``gpu`` tests of the
test modules that the registered kernels' headers name (kernel_coverage.kernel_test_modules)
with gpudl's "cuda" device played by the emulator, so any out-of-bounds read or write by a
kernel on those shapes fails the run (the CPU counterpart of ``compute-sanitizer --tool
memcheck``). Threads run in reverse order here (forward in the default run), so a missing
barrier is caught too. The run ends with the kernel-coverage check: a registered kernel
instance that none of those tests launched fails it. Without g++ or its ASan runtime it
says so and exits 0: the default emulation tests still ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kernel_coverage import COVERAGE_ENV, EMULATION_ENV, REPO, kernel_test_modules  # noqa: E402
from kernel_emulator import asan_environment, asan_runtime  # noqa: E402


def main(argv: list[str]) -> int:
    if asan_runtime() is None:
        print("memcheck (emulated): skipped - no g++ AddressSanitizer runtime on this machine")
        return 0
    modules = kernel_test_modules()
    missing = [str(p) for p in modules if not p.is_file()]
    if not modules or missing:
        print(f"memcheck (emulated): the kernel headers name no test module, or missing ones: "
              f"{missing}")
        return 1
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "kernel_coverage",
           "-m", "gpu and not slow", *(str(p.relative_to(REPO)) for p in modules), *argv]
    print("memcheck (emulated): kernels built with -fsanitize=address, libasan preloaded, "
          f"threads in reverse order; gpu tests of {len(modules)} modules")
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    env = {**asan_environment(), "GPUDL_EMU_ORDER": "reverse", EMULATION_ENV: "1",
           COVERAGE_ENV: "1", "PYTHONPATH": path}
    return subprocess.run(cmd, env=env, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
