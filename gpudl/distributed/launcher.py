"""``gpudl launch -n N script.py [args]``: N ranks of a script under MPI, failing together.

It runs ``mpiexec -n N <this python> -m mpi4py script.py args``. ``-m mpi4py`` makes an
uncaught exception on any rank print its traceback and call ``MPI_Abort``, which ends
every rank within a second; under a plain ``mpiexec python script.py`` the other ranks
would wait in their next collective until a timeout.

``mpiexec`` is looked up next to this Python first (the ``mpich`` wheel installs it in
the virtual environment's ``bin``), then on ``PATH``. Several machines: the same
command with MPI's own host options, passed through ``--hostfile FILE`` (``-f`` for
MPICH's hydra, ``--hostfile`` for Open MPI) or ``--mpi-arg`` (repeatable, verbatim).

Each rank's BLAS/OpenMP pool is limited to its share of this machine's cores (cores //
ranks, at least 1) unless ``OMP_NUM_THREADS`` is already set, as torchrun does: N ranks
each running as many threads as there are cores would fight over them.

Example:
    >>> cmd = launch_command(2, ["train.py", "--epochs", "3"], mpiexec="mpiexec")
    >>> cmd[:3], cmd[4:]
    (['mpiexec', '-n', '2'], ['-m', 'mpi4py', 'train.py', '--epochs', '3'])
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from gpudl.distributed.base import DistributedError
from gpudl.distributed.mpi import INSTALL_HINT

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def find_mpiexec() -> str:
    """The ``mpiexec`` to use: this Python's ``bin`` (a venv's mpich wheel), then PATH.

    Example:
        >>> os.path.basename(find_mpiexec())             # doctest: +SKIP
        'mpiexec'
    """
    for folder in dict.fromkeys([os.path.dirname(sys.executable),
                                 os.path.join(sys.prefix, "bin")]):
        candidate = os.path.join(folder, "mpiexec")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mpiexec")
    if found is None:
        raise DistributedError(f"gpudl launch: no mpiexec next to {sys.executable} nor on PATH; "
                               f"{INSTALL_HINT}")
    return found


def is_hydra(mpiexec: str) -> bool:
    """Whether ``mpiexec`` is MPICH's hydra (``-f hostfile``) rather than Open MPI's."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return True
    return "hydra" in (out.stdout + out.stderr).lower()


def launch_command(n: int, argv: Sequence[str], *, mpiexec: str | None = None,
                   hostfile: str | None = None, mpi_args: Sequence[str] = (),
                   python: str | None = None) -> list[str]:
    """The ``mpiexec`` command line that runs ``argv`` (a script and its arguments, or
    ``-m module ...``) on ``n`` ranks through ``python -m mpi4py``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DistributedError(f"gpudl launch: -n must be a positive number of ranks, got {n!r}")
    if not argv:
        raise DistributedError("gpudl launch: give the script to run: gpudl launch -n 2 "
                               "train.py [args] (or -m module [args])")
    mpiexec = mpiexec or find_mpiexec()
    cmd = [mpiexec, "-n", str(n)]
    if hostfile is not None:
        cmd += ["-f" if is_hydra(mpiexec) else "--hostfile", hostfile]
    cmd += list(mpi_args)
    return cmd + [python or sys.executable, "-m", "mpi4py", *argv]


def rank_environment(n: int, hostfile: str | None = None) -> dict[str, str]:
    """This environment, with the thread pools of each rank limited to its share of this
    node's cores (left alone when ``OMP_NUM_THREADS`` is set or a ``hostfile`` spreads
    the ranks over nodes)."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" in env or hostfile is not None:  # several nodes: theirs to say
        return env
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    share = str(max(1, cores // n))
    for name in THREAD_VARIABLES:
        env.setdefault(name, share)
    return env


def launch(n: int, argv: Sequence[str], *, hostfile: str | None = None,
           mpi_args: Sequence[str] = (), timeout: float | None = None) -> int:
    """Run ``argv`` on ``n`` ranks; return mpiexec's exit status (non-zero when any rank
    failed). The ranks' output goes to this process' stdout and stderr."""
    try:
        import mpi4py  # noqa: F401 - the ranks run `python -m mpi4py`
    except ImportError as exc:
        raise DistributedError(f"gpudl launch: mpi4py is not installed; {INSTALL_HINT}") from exc
    cmd = launch_command(n, argv, hostfile=hostfile, mpi_args=mpi_args)
    try:
        return subprocess.run(cmd, env=rank_environment(n, hostfile), timeout=timeout).returncode
    except subprocess.TimeoutExpired as exc:
        raise DistributedError(f"gpudl launch: the ranks ran past {timeout} s and were "
                               "stopped") from exc


__all__ = ["launch", "launch_command", "find_mpiexec", "rank_environment", "is_hydra"]
