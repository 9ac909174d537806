"""Shared pieces of the benchmark scripts: row timing, device/torch probes, table, CLI, JSON.

The timing loop itself is ``gpudl.bench.timing.time_fn`` (CUDA events on the GPU,
perf_counter on the CPU, median + IQR after warm-up, first call apart); this module only
adapts it to the rows the per-kernel modules (``kernels_*.py``) return, and holds their
command-line and report boilerplate.

A per-kernel module looks like::

    import common
    def run(report: dict) -> list[dict]: ...           # one dict per (shape, impl)
    COLUMNS = common.kernel_columns(12, [("impl", "impl", "16s")], digits=2)
    if __name__ == "__main__":
        sys.exit(common.kernel_main(run, COLUMNS, __doc__))
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # gpudl from the checkout

from gpudl.backend import probe_cuda  # noqa: E402
from gpudl.bench.timing import time_fn  # noqa: E402

# The timing fields a kernel row carries (time_fn's max_s is left out of kernel rows).
ROW_STATS = ("first_call_s", "median_s", "iqr_s", "min_s", "repeats")
# ``report["tiny"]`` (``--tiny``): a couple of tiny shapes, TINY_REPEATS timed calls each, so
# every code path of a module, GPU branch included, runs in a second or two on the CPU
# kernel emulator (tests/kernel_emulation/test_emulated_benchmarks.py). Its figures mean nothing.
TINY_REPEATS = 2
TINY_HELP = "tiny shapes, 2 repeats: exercises every code path (emulator tests); no real figures"


def time_row(fn: Callable[[], object], device: str, warmup: int, repeats: int,
             clock: str = "events") -> dict[str, Any]:
    """``time_fn`` restricted to :data:`ROW_STATS`, the timing fields of a kernel row."""
    stats = time_fn(fn, device=device, warmup=warmup, repeats=repeats, clock=clock)
    return {k: stats[k] for k in ROW_STATS}


def cuda_device() -> tuple[bool, str, str]:
    """(usable, reason, device_name): ``probe_cuda()`` plus the GPU's name ("cpu" without)."""
    usable, reason = probe_cuda()
    return usable, reason, reason.removeprefix("CUDA GPU ") if usable else "cpu"


def torch_status(cuda: bool) -> str | None:
    """None when torch imports (with CUDA if ``cuda``), else why its rows are skipped."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if cuda and not torch.cuda.is_available():
        return "torch has no CUDA"
    return None


def unavailable_row(bench: str, reason: str) -> dict[str, str]:
    """The row that says why a benchmark's GPU rows are absent (never a made-up figure)."""
    return {"bench": bench, "device": "cuda", "status": "unavailable", "reason": reason}


def machine_or_error() -> dict[str, Any]:
    """``machine_info()``, or why it could not be had (the bench package is optional)."""
    try:
        from gpudl.bench.device_info import machine_info

        return machine_info()
    except Exception as exc:
        return {"error": f"machine_info unavailable ({exc})"}


def write_json(path: str | Path, data: Any, *, default: Callable = str,
               newline: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=default) + ("\n" if newline else ""))
    return path


# ----------------------------------------------------------------------------- table
@dataclass(frozen=True)
class Column:
    """One table column: header, the row's value (a key or a function), a format spec.

    The spec's leading number is the width; string specs ("12s") are left-aligned, numeric
    ones ("10.2f", "4d") right-aligned, headers likewise.
    """

    title: str
    value: str | Callable[[dict], Any]
    spec: str

    @property
    def width(self) -> int:
        return int(re.match(r"\d+", self.spec).group())

    def header(self) -> str:
        return format(self.title, ("<" if self.spec.endswith("s") else ">") + f"{self.width}s")

    def cell(self, row: dict) -> str:
        value = self.value(row) if callable(self.value) else row[self.value]
        return format(value, self.spec)


def device_column(width: int) -> Column:
    """The first column: the device's name cut to ``width``."""
    return Column("device", lambda r: r["device_name"][:width], f"{width}s")


def timing_columns(digits: int) -> list[Column]:
    """The median and IQR columns in milliseconds with ``digits`` decimals."""
    return [Column("median ms", lambda r: r["median_s"] * 1e3, f"10.{digits}f"),
            Column("IQR ms", lambda r: r["iqr_s"] * 1e3, f"8.{digits}f")]


FIRST_CALL = Column("first s", "first_call_s", "8.3f")


def kernel_columns(device_width: int, shape: Sequence[tuple], digits: int,
                   throughput: Sequence[tuple] = ()) -> list[Column]:
    """The usual kernel table: device, ``shape`` columns (title, key, spec) ending with the
    impl, median and IQR ms with ``digits`` decimals, ``throughput`` columns, first-call s."""
    return [device_column(device_width), *(Column(*c) for c in shape), *timing_columns(digits),
            *(Column(*c) for c in throughput), FIRST_CALL]


def table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """One line per row; an unavailable row prints its device and reason instead."""
    lines = [" ".join(c.header() for c in columns)]
    width = columns[0].width
    for r in rows:
        if r.get("status") == "unavailable":
            lines.append(f"{r['device']:{width}s} unavailable: {r['reason']}")
            continue
        lines.append(" ".join(c.cell(r) for c in columns))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def kernel_main(run: Callable[[dict], list[dict]], columns: Sequence[Column], doc: str,
                argv: list[str] | None = None, quick_help: str = "smaller shapes only",
                flags: Sequence[tuple[str, str]] = ()) -> int:
    """The command line of a per-kernel module: ``[--json out.json] [--quick] [--tiny] [flags]``.

    Runs ``run(report)`` (``report`` holds ``quick``, ``tiny`` and each flag's value), prints the
    table and the notes, and writes ``{"machine", "rows", "notes"}`` to ``--json``.
    ``flags`` are extra boolean options as (``--name``, help).
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--json", help="write rows and notes to this file")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--tiny", action="store_true", help=TINY_HELP)
    for flag, help_text in flags:
        parser.add_argument(flag, action="store_true", help=help_text)
    ns = parser.parse_args(argv)
    report: dict = {"quick": ns.quick, "tiny": ns.tiny}
    for flag, _ in flags:
        dest = flag.lstrip("-").replace("-", "_")
        report[dest] = getattr(ns, dest)
    rows = run(report)
    print(table(rows, columns))
    for note in report["notes"]:
        print(note)
    if ns.json:
        write_json(ns.json, {"machine": machine_or_error(), "rows": rows,
                             "notes": report["notes"]})
    return 0
