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
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


# ----------------------------------------------------------------------------- paired timing
def paired_times(fn_a: Callable[[], object], fn_b: Callable[[], object], pairs: int,
                 warmup: int = 2, inner: int = 1, settle: int = 0,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time ``fn_a`` against ``fn_b`` (both on the CPU) in ``pairs`` back-to-back pairs.

    The order alternates (a, b), (b, a), ... so neither side always runs on a cache the
    other warmed or in the slot a noisy neighbour hit. Each pair gives one ratio a/b; on a
    shared machine the median of those per-pair ratios is much steadier than the ratio
    of two medians, since both halves of a pair see about the same load. ``warmup``
    untimed calls of each (alternating too) run first. Each sample times ``inner`` calls
    back to back and counts their mean, so that sub-millisecond work is not all timer and
    scheduler noise. ``settle`` untimed calls of a side run right before each of its
    samples: alternating a b | b a | a b makes the first side of every pair a repeat of
    itself (caches warm) and the second one run on caches the other side left, so the
    ratios alternate between two levels and their median lands on either; with
    ``settle=1`` every sample runs after its own side, as in a loop of steps, for both
    sides alike. ``clock``: ``time.perf_counter`` (wall) or ``time.thread_time`` (this
    thread's CPU time, steadier on a loaded machine). Returns the medians of each side (per
    call), the ratio's median and interquartile range, and every ratio (for the JSON).

    Example:
        >>> r = paired_times(lambda: sum(range(2000)), lambda: sum(range(1000)), pairs=5)
        >>> sorted(r)[:3], r["pairs"]
        (['a_iqr_s', 'a_median_s', 'b_iqr_s'], 5)
    """
    for i in range(warmup):
        for fn in ((fn_a, fn_b) if i % 2 == 0 else (fn_b, fn_a)):
            fn()
    ta, tb = [], []
    for i in range(pairs):
        for fn, out in (((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta))):
            for _ in range(settle):
                fn()
            t = clock()
            for _ in range(inner):
                fn()
            out.append((clock() - t) / inner)
    a, b = np.asarray(ta), np.asarray(tb)
    ratios = a / b
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return {"a_median_s": float(np.median(a)), "a_iqr_s": _iqr(a),
            "b_median_s": float(np.median(b)), "b_iqr_s": _iqr(b),
            "ratio_median": float(med), "ratio_iqr": float(q3 - q1), "ratio_q1": float(q1),
            "ratio_q3": float(q3), "pairs": int(pairs), "inner": int(inner),
            "settle": int(settle), "ratios": [float(r) for r in ratios]}


def _iqr(samples) -> float:
    q1, q3 = np.percentile(samples, [25, 75])
    return float(q3 - q1)


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7B13"), from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown cpu"


def cpu_identity() -> dict[str, Any]:
    """What tells two CPUs with one marketing name apart (a hypervisor may call every Intel
    host "Intel(R) Xeon(R) Processor"): vendor, family and model number (None where
    /proc/cpuinfo is unreadable), the short tag ``f6m207`` for file names, and the L2 cache
    of cpu0 as sysfs gives it ("2048K"; None where absent)."""
    from gpudl.bench.blas_kernels import read_cpu

    cpu = read_cpu()
    try:
        l2 = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip()
    except OSError:
        l2 = None
    tag = None if cpu is None or cpu.model is None else f"f{cpu.family}m{cpu.model}"
    return {"cpu_id": None if cpu is None else cpu.describe(), "cpu_tag": tag,
            "l2_cache": l2}


def slug(text: str) -> str:
    """'AMD EPYC 7B13' -> 'amd-epyc-7b13' (file-name safe)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """NumPy's BLAS/OpenMP pools (threadpoolctl, when installed) and torch (when imported)
    on one thread inside the block; the previous counts come back after it.

    A script should also set ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``
    to 1 before NumPy loads, which covers the case without threadpoolctl.
    """
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    with limits:
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def numpy_blas() -> list[dict[str, Any]]:
    """NumPy's BLAS as loaded: threadpoolctl's view (library, file prefix, version, threads)
    of every pool, or, without threadpoolctl, the build's BLAS from ``numpy.show_config``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        except Exception as exc:  # older NumPy: no dict mode
            return [{"library": f"unknown ({exc})"}]
        return [{"api": "blas", "library": blas.get("name"), "version": blas.get("version"),
                 "threads": "unknown (install threadpoolctl)", "source": "numpy.show_config"}]
    return [{"api": p.get("user_api"), "library": p.get("internal_api"),
             "prefix": p.get("prefix"), "version": p.get("version"),
             "threads": p.get("num_threads"), "source": "threadpoolctl"}
            for p in threadpool_info()]


def ratio_verdict(ratio: float, target: float | None) -> str:
    """'PASS' when ``ratio`` (this/reference time) is within ``target``, 'MISS' above it,
    '-' when the row has no target."""
    if target is None:
        return "-"
    return "PASS" if ratio <= target else "MISS"


#: The table of a paired comparison (``paired_times`` rows with ``row``, ``target``, ``verdict``).
PAIRED_COLUMNS = [
    Column("row", "row", "14s"),
    Column("gpudl ms", lambda r: r["a_median_s"] * 1e3, "10.3f"),
    Column("torch ms", lambda r: r["b_median_s"] * 1e3, "10.3f"),
    Column("ratio", lambda r: f"{r['ratio_median']:.2f}x", "8s"),
    Column("IQR", lambda r: f"{r['ratio_iqr']:.2f}", "6s"),
    Column("target", lambda r: "-" if r["target"] is None else f"<={r['target']:.1f}x", "8s"),
    Column("verdict", "verdict", "7s"),
]


def _float_leaves(value: Any) -> list[np.ndarray]:
    """The arrays of a result (a scalar, an array, a tensor, nested lists/tuples/dicts)."""
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _float_leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _float_leaves(v)]
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get") and not isinstance(value, np.ndarray):  # a CuPy array
        value = value.get()
    return [np.asarray(value, dtype=np.float64)]


def max_rel_diff(result: Any, reference: Any) -> float:
    """The largest ``max|a - b| / max(|a|, |b|)`` over the leaves of two results computed by
    two implementations (inf when their structures or shapes differ).

    Example:
        >>> max_rel_diff([np.array([1.0, 2.0])], (np.array([1.0, 2.5]),))
        0.2
    """
    a, b = _float_leaves(result), _float_leaves(reference)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if y.size:
            scale = max(np.max(np.abs(x)), np.max(np.abs(y)), 1e-30)
            worst = max(worst, float(np.max(np.abs(x - y)) / scale))
    return worst


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch.set_num_threads(n) inside, the old count restored after (no-op for None)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
