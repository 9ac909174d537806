"""``gpudl train | bench | export | launch | doctor``.

Examples:
    gpudl doctor
    gpudl train --model lenet5 --dataset mnist_5k --epochs 5      # ~97 % test accuracy
    gpudl train --dataset digits --epochs 3 --out digits.npz      # 8x8 digits: an MLP
    gpudl bench --model lenet5 --batch-size 128 --steps 50 --devices cpu,cuda --json out.json
    gpudl export --model lenet5 --weights lenet5_mnist_5k.npz --out lenet5.onnx
    gpudl export --model mlp --weights digits.npz --dataset digits --out digits.onnx
    gpudl launch -n 2 train.py --epochs 5                          # 2 data-parallel ranks

Every failure is one line on stderr, never a traceback of gpudl's own checks; the exit
status says whose it is (see :data:`EXIT_STATUS`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpudl.cli import export_command, launch_command, train_command
from gpudl.cli.args import (
    Parser,
    UsageError,
    device_list,
    model_checker,
    non_negative_int,
    output_file,
    plot_path,
    positive_int,
)
from gpudl.cli.doctor_command import doctor, thread_warnings
from gpudl.errors import GpudlError

EXIT_STATUS = """\
exit status:
  0  done
  1  the run started and failed (out of memory, a kernel or file error, a non-finite
     loss); one line on stderr says why
  2  the command line asks for something that cannot run (a bad flag value, an unknown
     name, a model that does not fit the dataset's images, a missing dataset or
     package, an unusable device); one line on stderr says what to change"""


# gpudl's named errors that mean "change the command line" (exit 2) when a run raises
# them: the model, data, device or settings asked for do not fit together.
USAGE_ERROR_NAMES = ("ShapeError", "DTypeError", "LabelError", "DeviceError",
                     "LayerArgumentError", "TreeMismatchError", "ConfigError",
                     "ArgumentTypeError", "TrainingConfigError", "EmptyDataError")


def _usage_errors() -> tuple[type[BaseException], ...]:
    from gpudl import errors
    from gpudl.data import DatasetError

    named = tuple(getattr(errors, n) for n in USAGE_ERROR_NAMES if hasattr(errors, n))
    return (UsageError, DatasetError, *named)


def build_parser() -> Parser:
    """The ``gpudl`` argument parser (its help lists every model and dataset it takes)."""
    from gpudl import models
    from gpudl.cli.args import image_datasets

    lists = (f"models: {', '.join(models.IMAGE_CLASSIFIERS)}\n"
             f"datasets: {', '.join(image_datasets())}\n\n")
    parser = Parser(prog="gpudl", description="gpudl command line",
                    epilog=lists + EXIT_STATUS, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,bench,export,launch,doctor}")
    t = sub.add_parser("train", help="train an image classifier on a dataset, save its weights",
                       description=train_command.DESCRIPTION,
                       epilog=EXIT_STATUS, formatter_class=_Formatter)
    train_command.add_arguments(t)
    b = sub.add_parser("bench", help="time training steps on cpu and cuda",
                       epilog=EXIT_STATUS, formatter_class=_Formatter)
    b.add_argument("--model", type=model_checker("gpudl bench"), default="lenet5",
                   metavar="NAME", help="image classifier: " + ", ".join(models.IMAGE_CLASSIFIERS)
                   + " (default: lenet5)")
    b.add_argument("--batch-size", type=positive_int, default=128)
    b.add_argument("--steps", type=positive_int, default=50, help="timed steps (default 50)")
    b.add_argument("--warmup", type=non_negative_int, default=5,
                   help="untimed steps first, the first call included (default 5)")
    b.add_argument("--devices", type=device_list, default="cpu,cuda", metavar="cpu,cuda")
    b.add_argument("--json", type=output_file, default=None, metavar="FILE",
                   help="write the report as JSON")
    b.add_argument("--plot", type=plot_path, default=None, metavar="FILE",
                   help="write a bar chart (needs matplotlib)")
    x = sub.add_parser("export", help="write an image classifier with its weights as ONNX",
                       description=export_command.DESCRIPTION,
                       epilog=EXIT_STATUS, formatter_class=_Formatter)
    export_command.add_arguments(x)
    n = sub.add_parser("launch", help="run a training script on N processes (MPI)",
                       description=launch_command.DESCRIPTION,
                       epilog=EXIT_STATUS, formatter_class=_Formatter)
    launch_command.add_arguments(n)
    sub.add_parser("doctor", help="what gpudl sees: versions, device, GPU, driver, BLAS threads",
                   epilog=EXIT_STATUS, formatter_class=_Formatter)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout (the exit-status table)."""


def bench(ns) -> int:
    from gpudl.bench.train_step import bench_model, format_table, plot, save_json

    report = bench_model(ns.model, ns.batch_size, ns.steps, ns.devices, ns.warmup)
    print(format_table(report))
    if not report["rows"]:
        raise UsageError("no device could be timed (see the reasons above); add cpu to "
                         "--devices, or see `gpudl doctor`")
    if ns.json:
        save_json(report, ns.json)
        print(f"wrote {ns.json}")
    if ns.plot:
        plot(report, ns.plot)
        print(f"wrote {ns.plot}")
    return 0


def train(ns) -> int:
    train_command.run(ns)
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, UsageError) else f"{type(exc).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpudl`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad flag (2, its line already printed)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    prog = f"gpudl {ns.command}"
    try:
        if ns.command == "doctor":
            return doctor()
        if ns.command == "export":
            export_command.run(ns)
            return 0
        if ns.command == "launch":  # the ranks' own exit status (1 when any failed)
            return launch_command.run(ns)
        return train(ns) if ns.command == "train" else bench(ns)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except _usage_errors() as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (GpudlError, OSError, MemoryError) as exc:
        print(f"{prog}: failed: {_one_line(exc)}", file=sys.stderr)
        return 1


__all__ = ["EXIT_STATUS", "build_parser", "doctor", "main", "thread_warnings"]
