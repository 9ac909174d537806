"""Kernel benchmarks: every fused kernel against CuPy composites and PyTorch, one table + JSON.

Runs the per-kernel modules (every ``benchmarks/kernels_*.py``: cross-entropy, conv, rnn,
pool; each exposes ``run(report) -> list[dict]``), each in its own Python process by default so
that a missing module, an exception, a CUDA fault or a hang in one is recorded (with the
reason) and the others still run. Prints one table: kernel, shape, implementation, median
and IQR time, achieved GB/s or TFLOP/s, and the speedup against the CuPy/gpudl composite
and against the fastest PyTorch implementation of the same shape (speedup = baseline
time / this time, so > 1 means this row is faster). Rows and ratios go to ``--json``.

On a machine without a GPU the modules time the NumPy twins (and PyTorch CPU where torch
imports), and the GPU rows say why they are unavailable.

The issue's performance targets are printed as PASS / MISS / UNMEASURED lines, for
information only (never an assertion):
  * softmax-CE fused fwd+bwd at (8192, 32768) fp32 reaches >= 80% of the measured copy
    bandwidth (counting one read + one write of the logits) and is >= 2x faster than torch;
  * conv2d fwd+bwd on VGG shapes is within 2x of cuDNN (torch);
  * LSTM sequence fwd+bwd (hidden 512, batch 64, 25 steps) is within 1.5x of cuDNN and
    faster than a torch ``LSTMCell`` loop.
The copy bandwidth comes from ``--bandwidth-json`` (``benchmarks/bandwidth.py``'s output)
or, without it, from running ``bandwidth.py`` first.

``--tiny`` runs every module (and bandwidth.py) at a couple of tiny shapes, twice each: a
code-path check (tests/kernel_emulation runs it in-process on the CPU kernel emulator);
its figures mean nothing.

Usage:
    python benchmarks/kernels.py [--json out.json] [--quick] [--tiny] [--bandwidth-json bw.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # gpudl from the checkout
sys.path.insert(0, str(HERE))  # the per-kernel modules

from common import TINY_HELP, machine_or_error, write_json  # noqa: E402

# Every kernels_<op>.py beside this file: a new kernel's benchmark needs no entry here.
MODULES = tuple(sorted(p.stem for p in Path(__file__).resolve().parent.glob("kernels_*.py")))
# Keys of a row that describe the measurement rather than the problem shape.
NOT_SHAPE = {"bench", "device", "device_name", "dtype", "impl", "module", "status", "reason",
             "first_call_s", "median_s", "iqr_s", "min_s", "max_s", "repeats", "gbps",
             "tflops", "gflops", "bytes", "flops", "speedup_vs", "note", "notes", "error"}


# ----------------------------------------------------------------------------- running
def run_module_here(name: str, quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Import ``name`` and call its ``run(report)`` in this process; errors are recorded."""
    report: dict[str, Any] = {"quick": quick, "tiny": tiny, "notes": []}
    start = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return {"status": "missing", "reason": f"benchmarks/{name}.py does not exist yet",
                    "rows": [], "notes": []}
        return {"status": "error", "reason": f"import failed: {exc!r}",
                "traceback": traceback.format_exc(), "rows": [], "notes": []}
    except Exception as exc:
        return {"status": "error", "reason": f"import failed: {exc!r}",
                "traceback": traceback.format_exc(), "rows": [], "notes": []}
    try:
        rows = list(module.run(report))
    except Exception as exc:
        return {"status": "error", "reason": f"run() raised {exc!r}",
                "traceback": traceback.format_exc(), "rows": [],
                "notes": list(report.get("notes", [])),
                "elapsed_s": time.perf_counter() - start}
    return {"status": "ok", "rows": rows, "notes": list(report.get("notes", [])),
            "elapsed_s": time.perf_counter() - start}


def run_module_isolated(name: str, quick: bool, timeout_s: float,
                        tiny: bool = False) -> dict[str, Any]:
    """Run one module in a child process (``--only-module``), with a time limit."""
    if not (HERE / f"{name}.py").is_file():
        return {"status": "missing", "reason": f"benchmarks/{name}.py does not exist yet",
                "rows": [], "notes": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "module.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--only-module", name,
               "--module-out", str(out)] + (["--quick"] if quick else []) + (
            ["--tiny"] if tiny else [])
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")[-2000:]
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            return {"status": "error", "reason": f"timed out after {timeout_s:.0f} s",
                    "stderr_tail": tail, "rows": [], "notes": []}
        elapsed = time.perf_counter() - start
        if out.is_file():
            result = json.loads(out.read_text())
            if proc.stderr.strip():
                result["stderr_tail"] = proc.stderr[-2000:]
            return result
        return {"status": "error",
                "reason": f"child process exited with code {proc.returncode} and wrote no rows",
                "stderr_tail": (proc.stdout + proc.stderr)[-3000:], "rows": [], "notes": [],
                "elapsed_s": elapsed}


def load_bandwidth(path: str | None, quick: bool, timeout_s: float = 120,
                   tiny: bool = False) -> dict[str, Any]:
    """``bandwidth.py``'s result from ``path``, or from running it now."""
    if path:
        try:
            return json.loads(Path(path).read_text())
        except Exception as exc:
            return {"gpu": {"status": "error", "reason": f"could not read {path}: {exc!r}"}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bw.json"
        cmd = [sys.executable, str(HERE / "bandwidth.py"), "--json", str(out)]
        cmd += (["--quick"] if quick else []) + (["--tiny"] if tiny else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"gpu": {"status": "error", "reason": f"bandwidth.py timed out ({timeout_s} s)"}}
        if out.is_file():
            return json.loads(out.read_text())
        return {"gpu": {"status": "error", "reason": f"bandwidth.py failed (code "
                        f"{proc.returncode}): {(proc.stdout + proc.stderr)[-500:]}"}}


def _plain(obj: Any) -> Any:
    """JSON for NumPy scalars/arrays in rows (np.int64(8192) -> 8192), else their str."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


# ----------------------------------------------------------------------------- analysis
def shape_of(row: dict) -> tuple:
    """The problem-size fields of a row, in the row's own order: (("N", 8192), ("C", 32768))."""
    items = []
    for k, v in row.items():
        if k in NOT_SHAPE or isinstance(v, (float, dict)) or isinstance(v, bool):
            continue
        items.append((k, tuple(v) if isinstance(v, list) else v))
    return tuple(items)


def group_key(row: dict) -> tuple:
    return (row.get("bench"), row.get("device"), shape_of(row))


def is_composite(impl: str) -> bool:
    return "composite" in impl


def is_torch(impl: str) -> bool:
    return impl.startswith("torch")


def throughput(row: dict) -> tuple[float | None, str]:
    """(value, unit) from the row's gbps / tflops, or its bytes / flops and median time."""
    if row.get("gbps") is not None:
        return float(row["gbps"]), "GB/s"
    if row.get("tflops") is not None:
        return float(row["tflops"]), "TFLOP/s"
    t = row.get("median_s")
    if t and row.get("bytes"):
        return row["bytes"] / t / 1e9, "GB/s"
    if t and row.get("flops"):
        return row["flops"] / t / 1e12, "TFLOP/s"
    return None, ""


def add_ratios(rows: list[dict]) -> None:
    """Give each timed row ``speedup_vs``: {baseline impl: baseline time / this time}."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("median_s"):
            groups.setdefault(group_key(r), []).append(r)
    for members in groups.values():
        baselines = {r["impl"]: r["median_s"] for r in members
                     if is_composite(str(r.get("impl", ""))) or is_torch(str(r.get("impl", "")))}
        for r in members:
            r["speedup_vs"] = {b: t / r["median_s"] for b, t in baselines.items()}


def _fmt_shape(shape: tuple) -> str:
    return " ".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in shape)


def _ratio_cells(row: dict) -> tuple[str, str]:
    vs = row.get("speedup_vs") or {}
    comp = [(k, v) for k, v in vs.items() if is_composite(k)]
    torch = [(k, v) for k, v in vs.items() if is_torch(k)]
    comp_cell = f"{comp[0][1]:.2f}x" if comp else "-"
    # Against the fastest torch implementation (largest baseline time / this time is the
    # slowest one, so take the smallest ratio).
    torch_cell = "-"
    if torch:
        name, value = min(torch, key=lambda kv: kv[1])
        torch_cell = f"{value:.2f}x {name}"
    return comp_cell, torch_cell


def table(rows: list[dict]) -> str:
    head = (f"{'kernel':30s} {'device':22s} {'shape':56s} {'impl':20s} {'median ms':>10s} "
            f"{'IQR ms':>8s} {'throughput':>16s} {'vs composite':>12s}  vs torch (fastest)")
    lines = [head, "-" * len(head)]
    for r in rows:
        bench = str(r.get("bench", r.get("module", "?")))[:30]
        if r.get("status") in ("unavailable", "error", "missing"):
            lines.append(f"{bench:30s} {str(r.get('device', '-')):22s} "
                         f"{r['status']}: {r.get('reason')}")
            continue
        if not r.get("median_s"):
            lines.append(f"{bench:30s} row without a time: {json.dumps(r, default=str)[:120]}")
            continue
        value, unit = throughput(r)
        digits = 1 if unit == "GB/s" else 3
        tp = f"{value:9.{digits}f} {unit}" if value is not None else "-"
        comp, torch = _ratio_cells(r)
        dev = str(r.get("device_name") or r.get("device"))[:22]
        lines.append(f"{bench:30s} {dev:22s} {_fmt_shape(shape_of(r))[:56]:56s} "
                     f"{str(r.get('impl'))[:20]:20s} {r['median_s'] * 1e3:10.3f} "
                     f"{r.get('iqr_s', 0.0) * 1e3:8.3f} {tp:>16s} {comp:>12s}  {torch}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- targets
def _find(rows, bench_match, shape: dict | None = None, device: str = "cuda") -> list[dict]:
    found = []
    for r in rows:
        if r.get("device") != device or not r.get("median_s") or not bench_match(
                str(r.get("bench", ""))):
            continue
        if shape and any(r.get(k) != v for k, v in shape.items()):
            continue
        found.append(r)
    return found


def _pick(rows: list[dict], names: tuple[str, ...]) -> dict | None:
    by_impl = {r.get("impl"): r for r in rows}
    return next((by_impl[n] for n in names if n in by_impl), None)


def _gpu_absent_reason(rows: list[dict], modules: dict, module: str) -> str:
    m = modules.get(module, {})
    if m.get("status") != "ok":
        return f"{module}: {m.get('status', 'not run')} ({m.get('reason')})"
    for r in rows:
        if r.get("module") == module and r.get("status") == "unavailable":
            return f"GPU rows unavailable ({r.get('reason')})"
    if m.get("tiny"):
        return "no GPU row for this shape (--tiny runs tiny shapes only)"
    return "no GPU row for this shape" + (" (--quick runs fewer shapes)" if m.get("quick") else "")


def _target(name, verdict, detail, **figures) -> dict:
    return {"target": name, "verdict": verdict, "detail": detail, **figures}


def check_targets(rows: list[dict], modules: dict, copy_gbps: float | None,
                  copy_reason: str) -> list[dict]:
    """The issue's targets as PASS / MISS / UNMEASURED records (information, not assertions)."""
    out = []
    # 1. softmax cross-entropy at (8192, 32768).
    sce = _find(rows, lambda b: "cross_entropy" in b, {"N": 8192, "C": 32768})
    fused = _pick(sce, ("gpudl-fused",))
    kernel_only = _pick(sce, ("gpudl-fused-kernel",))
    torch_row = _pick(sce, ("torch", "torch-cuda"))
    name = "softmax-CE fwd+bwd (8192, 32768) fp32 >= 80% of copy bandwidth"
    if fused is None:
        out.append(_target(name, "UNMEASURED", _gpu_absent_reason(rows, modules,
                                                                  "kernels_cross_entropy")))
    elif copy_gbps is None:
        out.append(_target(name, "UNMEASURED", f"copy bandwidth not measured ({copy_reason})",
                           gbps=fused.get("gbps")))
    else:
        frac = fused["gbps"] / copy_gbps
        extra = (f"; kernel alone {kernel_only['gbps']:.0f} GB/s = "
                 f"{kernel_only['gbps'] / copy_gbps:.0%}" if kernel_only else "")
        out.append(_target(name, "PASS" if frac >= 0.8 else "MISS",
                           f"gpudl-fused {fused['gbps']:.0f} GB/s = {frac:.0%} of copy "
                           f"{copy_gbps:.0f} GB/s{extra}", fraction=frac, gbps=fused["gbps"],
                           copy_gbps=copy_gbps))
    name = "softmax-CE fwd+bwd (8192, 32768) >= 2x faster than torch"
    if fused is None:
        out.append(_target(name, "UNMEASURED", _gpu_absent_reason(rows, modules,
                                                                  "kernels_cross_entropy")))
    elif torch_row is None:
        out.append(_target(name, "UNMEASURED", "no torch CUDA row (torch missing or no CUDA)"))
    else:
        s = torch_row["median_s"] / fused["median_s"]
        out.append(_target(name, "PASS" if s >= 2 else "MISS",
                           f"torch {torch_row['median_s'] * 1e3:.3f} ms / gpudl-fused "
                           f"{fused['median_s'] * 1e3:.3f} ms = {s:.2f}x", speedup=s))
    # 2. conv2d fwd+bwd on VGG shapes, within 2x of cuDNN.
    name = "conv2d fwd+bwd on VGG shapes within 2x of cuDNN"
    conv = _find(rows, lambda b: "conv" in b and "transpose" not in b and "pool" not in b)
    vgg = [r for r in conv if any("vgg" in str(v).lower() for v in r.values())]
    note = "" if vgg or not conv else " (no row labelled VGG; all conv shapes used)"
    groups: dict[tuple, list[dict]] = {}
    for r in vgg or conv:
        groups.setdefault(group_key(r), []).append(r)
    ratios = []
    for key, members in groups.items():
        mine = _pick(members, ("gpudl-fused", "gpudl-kernel", "gpudl", "gpudl-autodiff")) or next(
            (r for r in members if str(r.get("impl", "")).startswith("gpudl")
             and not is_composite(str(r["impl"]))), None)
        ref = _pick(members, ("torch-cudnn", "torch"))
        if mine and ref:
            ratios.append((_fmt_shape(key[2]), mine["median_s"] / ref["median_s"]))
    if not groups:
        out.append(_target(name, "UNMEASURED", _gpu_absent_reason(rows, modules, "kernels_conv")))
    elif not ratios:
        out.append(_target(name, "UNMEASURED", "no shape has both a gpudl and a torch/cuDNN row"))
    else:
        worst = max(ratios, key=lambda sr: sr[1])
        out.append(_target(name, "PASS" if worst[1] <= 2 else "MISS",
                           f"worst {worst[1]:.2f}x cuDNN time at {worst[0]}; "
                           f"{sum(v <= 2 for _, v in ratios)}/{len(ratios)} shapes within 2x"
                           + note, ratios={s: v for s, v in ratios}))
    # 3. LSTM hidden 512, batch 64, 25 steps.
    lstm = _find(rows, lambda b: "lstm" in b, {"hidden": 512, "batch": 64, "steps": 25})
    mine = _pick(lstm, ("gpudl-fused",))
    for name, ref_name, limit in (
            ("LSTM seq fwd+bwd H512 N64 T25 within 1.5x of cuDNN", "torch-cudnn", 1.5),
            ("LSTM seq fwd+bwd H512 N64 T25 faster than torch LSTMCell loop",
             "torch-cell-loop", 1.0)):
        ref = _pick(lstm, (ref_name,))
        if mine is None:
            out.append(_target(name, "UNMEASURED", _gpu_absent_reason(rows, modules,
                                                                      "kernels_rnn")))
        elif ref is None:
            out.append(_target(name, "UNMEASURED", f"no {ref_name} row (torch missing or no CUDA)"))
        else:
            ratio = mine["median_s"] / ref["median_s"]
            ok = ratio <= limit if limit != 1.0 else ratio < 1.0
            out.append(_target(name, "PASS" if ok else "MISS",
                               f"gpudl-fused {mine['median_s'] * 1e3:.2f} ms = {ratio:.2f}x "
                               f"{ref_name} {ref['median_s'] * 1e3:.2f} ms", time_ratio=ratio))
    return out


# ----------------------------------------------------------------------------- driver
def run_all(quick: bool, isolated: bool = True, timeout_s: float = 240,
            bandwidth_json: str | None = None, modules: tuple[str, ...] = MODULES,
            tiny: bool = False) -> dict:
    start = time.perf_counter()
    results: dict[str, dict] = {}
    rows: list[dict] = []
    notes: list[str] = []
    for name in modules:
        t0 = time.perf_counter()
        res = (run_module_isolated(name, quick, timeout_s, tiny) if isolated
               else run_module_here(name, quick, tiny))
        res.setdefault("elapsed_s", time.perf_counter() - t0)
        res["quick"] = quick
        if tiny:
            res["tiny"] = True
        for r in res.get("rows", []):
            r["module"] = name
        rows += res.pop("rows", [])
        notes += res.get("notes", [])
        if res["status"] != "ok":
            rows.append({"bench": name, "module": name, "status": res["status"],
                         "reason": res.get("reason")})
            notes.append(f"{name}: {res['status']} ({res.get('reason')})")
        results[name] = res
    add_ratios(rows)
    bandwidth = load_bandwidth(bandwidth_json, quick, tiny=tiny)
    gpu_bw = bandwidth.get("gpu") or {}
    copy_gbps = gpu_bw.get("ceiling_gbps")
    copy_reason = gpu_bw.get("reason", "")
    targets = check_targets(rows, results, copy_gbps, copy_reason)
    machine = machine_or_error()
    gpu_rows = [r for r in rows if r.get("device") == "cuda" and r.get("median_s")]
    device_name = (gpu_rows[0].get("device_name") if gpu_rows else None) or machine.get(
        "gpu_name") or "cpu"
    if not gpu_rows:
        notes.append("GPU rows unavailable: " + str(machine.get("cuda_reason", "no GPU row ran")))
    return {"benchmark": "kernels", "date": datetime.date.today().isoformat(),
            "device_name": device_name, "quick": quick, **({"tiny": True} if tiny else {}),
            "machine": machine,
            "copy_bandwidth": bandwidth, "modules": results, "rows": rows, "targets": targets,
            "notes": notes, "ratio_convention": "speedup_vs[b] = time(b) / time(row); > 1: "
            "row is faster", "elapsed_s": time.perf_counter() - start}


def describe(result: dict) -> str:
    lines = [f"gpudl kernel benchmarks on {result['device_name']} (float32; medians after "
             "warm-up; speedup = baseline time / this time)", table(result["rows"]), ""]
    lines += [f"note: {n}" for n in result["notes"]]
    lines.append("targets (informational):")
    lines += [f"  {t['verdict']:10s} {t['target']}: {t['detail']}" for t in result["targets"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write rows, ratios and targets here")
    parser.add_argument("--quick", action="store_true", help="fewest shapes (CPU smoke run)")
    parser.add_argument("--tiny", action="store_true", help=TINY_HELP)
    parser.add_argument("--bandwidth-json", help="bandwidth.py's JSON (else it is run now)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the modules in this process (no isolation, for debugging)")
    parser.add_argument("--module-timeout", type=float, default=240, help="seconds per module")
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated subset")
    parser.add_argument("--only-module", help=argparse.SUPPRESS)  # child-process mode
    parser.add_argument("--module-out", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.only_module:
        res = run_module_here(ns.only_module, ns.quick, ns.tiny)
        Path(ns.module_out).write_text(json.dumps(res, default=_plain))
        return 0
    result = run_all(ns.quick, isolated=not ns.in_process, timeout_s=ns.module_timeout,
                     bandwidth_json=ns.bandwidth_json,
                     modules=tuple(m for m in ns.modules.split(",") if m), tiny=ns.tiny)
    print(describe(result))
    print(f"({result['elapsed_s']:.1f} s)")
    if ns.json:
        print(f"wrote {write_json(ns.json, result, default=_plain, newline=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
