"""``gpudl launch -n N script.py [args]``: run a training script on N data-parallel ranks.

``gd.fit`` in the script trains on all N ranks (``distributed="auto"``): each rank takes
its shard of the data, gradients are averaged, rank 0 prints and writes checkpoints.
Under the hood: ``mpiexec -n N python -m mpi4py script.py args`` (see
:mod:`gpudl.distributed.launcher`), so an exception on any rank ends all of them, with
its traceback. Several machines: the same command with MPI's host options,
``--hostfile FILE`` or ``--mpi-arg`` (verbatim, repeatable).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(prog="gpudl launch")
    >>> add_arguments(p)
    >>> ns = p.parse_args(["-n", "2", "-m", "gpudl.cli", "train", "--epochs", "3"])
    >>> ns.n, script_argv(ns)
    (2, ['-m', 'gpudl.cli', 'train', '--epochs', '3'])
"""

from __future__ import annotations

import argparse
import os

from gpudl.cli.args import UsageError, positive_int

DESCRIPTION = """\
Run a Python script on N processes for data-parallel training (MPI, mpi4py): gd.fit in it
trains on every rank, each on its shard of the data (batch_size is per rank), with the
gradients averaged; rank 0 prints and writes checkpoints. An exception on any rank stops
all ranks. On several machines: --hostfile FILE (MPI's host file) or --mpi-arg.
Needs the mpi extra: pip install 'gpudl[mpi]' (mpi4py and the mpich wheel, with mpiexec).

examples:
  gpudl launch -n 2 train.py --epochs 5
  gpudl launch -n 2 -m gpudl.cli train --model lenet5 --dataset mnist_5k
  gpudl launch -n 8 --hostfile hosts.txt train.py      # hosts.txt: node1:4 / node2:4"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--np", dest="n", type=positive_int, required=True, metavar="N",
                   help="number of ranks (processes)")
    p.add_argument("--hostfile", default=None, metavar="FILE",
                   help="MPI host file for several machines (passed as -f to MPICH's "
                        "mpiexec, --hostfile to Open MPI's)")
    p.add_argument("--mpi-arg", dest="mpi_args", action="append", default=[], metavar="ARG",
                   help="an argument for mpiexec, verbatim (repeat it: --mpi-arg=-ppn "
                        "--mpi-arg=2)")
    p.add_argument("-m", dest="module", default=None, metavar="MODULE",
                   help="run a module (python -m MODULE) instead of a script")
    p.add_argument("script", nargs="?", default=None, metavar="script.py",
                   help="the script every rank runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")


def script_argv(ns: argparse.Namespace) -> list[str]:
    """What each rank runs after ``python -m mpi4py``: the script and its arguments, or
    ``-m module`` and its arguments."""
    if ns.hostfile is not None and not os.path.isfile(ns.hostfile):
        raise UsageError(f"no such host file: {ns.hostfile!r}")
    if ns.module is not None:
        rest = ([ns.script] if ns.script is not None else []) + list(ns.args)
        return ["-m", ns.module, *rest]
    if ns.script is None:
        raise UsageError("give the script to run: gpudl launch -n 2 train.py "
                         "[args] (or -m module [args])")
    if not os.path.isfile(ns.script):
        raise UsageError(f"no such script: {ns.script!r}")
    return [ns.script, *ns.args]


def run(ns: argparse.Namespace) -> int:
    """Launch the ranks; mpiexec's exit status (non-zero when any rank failed)."""
    from gpudl.distributed import DistributedError, launch

    argv = script_argv(ns)
    try:
        return launch(ns.n, argv, hostfile=ns.hostfile, mpi_args=ns.mpi_args)
    except DistributedError as exc:  # mpi4py or mpiexec missing: install the extra
        raise UsageError(str(exc).removeprefix("gpudl launch: ")) from exc


__all__ = ["add_arguments", "run", "script_argv", "DESCRIPTION"]
