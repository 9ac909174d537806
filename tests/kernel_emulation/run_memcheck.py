"""Run the emulated kernel tests in memcheck mode (AddressSanitizer), as `make test` does.

``python tests/kernel_emulation/run_memcheck.py [pytest args]``: rebuilds every kernel with
-fsanitize=address, preloads libasan into a fresh Python and runs
test_emulated_kernels.py, so any out-of-bounds read or write by a kernel on those shapes
fails the run (the CPU counterpart of ``compute-sanitizer --tool memcheck``). Threads run
in reverse order here (forward in the default run), so a missing barrier is caught too. Without g++ or
its ASan runtime it says so and exits 0: the default emulation tests still ran.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kernel_emulator import asan_environment, asan_runtime  # noqa: E402


def main(argv: list[str]) -> int:
    if asan_runtime() is None:
        print("memcheck (emulated): skipped - no g++ AddressSanitizer runtime on this machine")
        return 0
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(HERE / "test_emulated_kernels.py"), *argv]
    print("memcheck (emulated): kernels built with -fsanitize=address, libasan preloaded, "
          "threads in reverse order")
    env = {**asan_environment(), "GPUDL_EMU_ORDER": "reverse"}
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
