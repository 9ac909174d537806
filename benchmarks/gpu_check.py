"""``make gpu-check``: the whole GPU check on a GPU machine, offline, with system Python.

Steps, each in its own process (``sys.executable``), each one's failure recorded and none
fatal to the others, logs in the report folder ``--out``:

1. machine info (``gpudl.bench.device_info.machine_info``) and ``nvidia-smi`` output;
2. ``python -m gpudl.compile_check``                              -> compile.txt
3. ``python -m pytest -q -m gpu tests`` (counts parsed)           -> gpu-tests.txt/.xml
4. ``benchmarks/bandwidth.py`` (measured copy ceiling)            -> bandwidth.json/.txt
5. ``benchmarks/kernels.py`` (tables, ratios, targets)            -> kernels.json/.txt
6. ``benchmarks/overhead.py --json``                              -> overhead.json/.txt
7. ``compute-sanitizer --tool memcheck`` on the kernel tests (``-m gpu``, CuPy's memory
   pool off so out-of-bounds accesses hit real allocation edges), when compute-sanitizer
   is found (PATH, then /usr/local/cuda*/bin); else recorded as unavailable -> memcheck.txt
   It runs last because it is the slowest; it gets what is left of ``--budget-s``.

Then it writes ``summary.md`` in the report folder and the summary JSON
``<results-dir>/<YYYY-MM-DD>-<device-slug>.json`` (e.g. ``2025-01-31-nvidia-h100-80gb-hbm3``)
holding every figure with the device name beside it.

Exit code: 0 when the GPU tests pass and memcheck finds no error; 1 when GPU tests fail (or
could not run) or memcheck reports errors; 2 when there is no usable GPU (the report says why).
``--dry-run`` rehearses everything in its quickest form (kernels/bandwidth ``--quick``,
short overhead), writes the summary JSON into the report folder instead of
``benchmarks/results``, and does not fail for a missing GPU: the CPU smoke test uses it.

Usage:
    PYTHONPATH=. python3 benchmarks/gpu_check.py [--out benchmarks/results/gpu-check]
        [--results-dir benchmarks/results] [--budget-s 480] [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_TEST_PATH = re.compile(r"\btests/(?:[\w.-]+/)*test_\w*\.py\b")


def kernel_test_files() -> tuple[str, ...]:
    """The test modules every ``kernels/*.cu`` header names (its ``Tested:`` lines), in order.

    The same rule as the emulated memcheck (tests/kernel_emulation/kernel_coverage.py): a
    new kernel's tests run under compute-sanitizer without an entry here.
    """
    found: dict[str, None] = {}
    for cu in sorted((ROOT / "kernels").glob("*.cu")):
        head = []
        for line in cu.read_text().splitlines():
            if not line.startswith("//"):
                break
            head.append(line)
        found.update(dict.fromkeys(_TEST_PATH.findall("\n".join(head))))
    return tuple(found)


KERNEL_TEST_FILES = kernel_test_files()
STEPS = "compile_check, gpu_tests, bandwidth, kernels, overhead, memcheck"
MEMCHECK_EXIT = 86  # compute-sanitizer --error-exitcode: tells its findings from test failures
# Run under memcheck: CuPy's pool would hide out-of-bounds accesses inside its big blocks.
# Hypothesis' per-example deadline is lifted: memcheck makes every kernel far slower.
MEMCHECK_DRIVER = """
import sys, cupy, pytest
cupy.cuda.set_allocator(None)
cupy.cuda.set_pinned_memory_allocator(None)
try:
    from hypothesis import settings
    settings.register_profile("gpudl-memcheck", deadline=None)
    settings.load_profile("gpudl-memcheck")
except ImportError:
    pass
sys.exit(pytest.main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Runner:
    """Runs steps within a total time budget and records each one."""

    def __init__(self, out: Path, budget_s: float, skip: set[str] = frozenset()):
        self.out, self.deadline, self.skip = out, time.monotonic() + budget_s, set(skip)
        self.steps: dict[str, dict[str, Any]] = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], log: str, cap_s: float) -> dict[str, Any]:
        """Run ``cmd`` (stdout+stderr to ``log``) for at most ``cap_s`` or what is left."""
        timeout = min(cap_s, self.remaining())
        step: dict[str, Any] = {"command": " ".join(cmd), "log": log}
        if name in self.skip:
            step.update(status="skipped", reason="--skip on the command line")
            self.steps[name] = step
            print(f"[gpu-check] {name}: skipped (--skip)", flush=True)
            return step
        if timeout < 5:
            step.update(status="skipped", reason="time budget spent")
            self.steps[name] = step
            print(f"[gpu-check] {name}: skipped (time budget spent)", flush=True)
            return step
        shown = " ".join(cmd).replace("\n", "; ")
        print(f"[gpu-check] {name}: {shown[:300]}", flush=True)
        start = time.monotonic()
        with open(self.out / log, "w") as fh:
            # Own session, so a timeout can end the step and its children together.
            proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                step.update(status="ok" if rc == 0 else "failed", rc=rc)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                step.update(status="timeout", rc=None,
                            reason=f"stopped after {timeout:.0f} s (step limit or budget)")
        step["elapsed_s"] = round(time.monotonic() - start, 2)
        print(f"[gpu-check] {name}: {step['status']} ({step['elapsed_s']} s)", flush=True)
        self.steps[name] = step
        return step

    def text(self, log: str) -> str:
        path = self.out / log
        return path.read_text(errors="replace") if path.is_file() else ""


def slugify(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def parse_pytest_counts(text: str) -> dict[str, int]:
    """Counts from pytest's final line ('3 failed, 10 passed, 2 skipped in 5.1s')."""
    for line in reversed(text.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
                           line)
        if found and re.search(r"\bin [\d.]+s", line):
            counts: dict[str, int] = {}
            for n, word in found:
                counts[word.rstrip("s") if word.startswith("error") else word] = int(n)
            return counts
    return {}


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for candidate in sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer")):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def git_commit() -> str | None:
    """HEAD's commit read from .git (no git binary needed); None outside a checkout."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def machine_step(r: Runner) -> dict[str, Any]:
    code = ("import json, sys; from gpudl.bench.device_info import machine_info; "
            "open(sys.argv[1], 'w').write(json.dumps(machine_info(), default=str))")
    target = r.out / "machine.json"
    target.unlink(missing_ok=True)
    step = r.run("machine_info", [sys.executable, "-c", code, str(target)], "machine.txt", 90)
    info: dict[str, Any] = {}
    if step["status"] == "ok":
        info = _load_json(target) or {}
        if not info:
            step.update(status="failed", reason="machine_info wrote no JSON")
    if not info:
        info = {"error": "machine_info failed; see machine.txt"}
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit"
        r.run("nvidia_smi", [smi], "nvidia-smi.txt", 30)
        r.run("nvidia_smi_query", [smi, f"--query-gpu={query}", "--format=csv"],
              "nvidia-smi-query.txt", 30)
        info["nvidia_smi"] = r.text("nvidia-smi-query.txt").strip()
    else:
        info["nvidia_smi"] = "nvidia-smi not found on PATH"
        r.steps["nvidia_smi"] = {"status": "unavailable", "reason": "nvidia-smi not on PATH"}
    (r.out / "machine.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    return info


def memcheck_step(r: Runner, gpu: bool) -> dict[str, Any]:
    files = [f for f in KERNEL_TEST_FILES if (ROOT / f).is_file()]
    record: dict[str, Any] = {"files": files,
                              "missing_files": [f for f in KERNEL_TEST_FILES if f not in files]}
    sanitizer = find_sanitizer()
    if "memcheck" in r.skip:
        record.update(status="skipped", reason="--skip on the command line")
    elif sanitizer is None:
        record.update(status="unavailable", reason="compute-sanitizer not on PATH nor in "
                      "/usr/local/cuda*/bin; memcheck not run")
    elif not gpu:
        record.update(status="skipped", reason="no usable GPU", sanitizer=sanitizer)
    elif not files:
        record.update(status="skipped", reason="no kernel test files exist yet")
    else:
        cmd = [sanitizer, "--tool", "memcheck", "--error-exitcode", str(MEMCHECK_EXIT),
               "--print-limit", "50", sys.executable, "-c", MEMCHECK_DRIVER,
               "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
        step = r.run("memcheck", cmd, "memcheck.txt", 600)
        text = r.text("memcheck.txt")
        m = re.search(r"ERROR SUMMARY: (\d+) error", text)
        errors = int(m.group(1)) if m else None
        record.update(sanitizer=sanitizer, errors=errors, tests=parse_pytest_counts(text),
                      rc=step.get("rc"), elapsed_s=step.get("elapsed_s"))
        if step["status"] in ("timeout", "skipped"):
            record.update(status=step["status"], reason=step.get("reason"))
        elif step.get("rc") == MEMCHECK_EXIT or (errors or 0) > 0:
            record.update(status="errors", reason=f"memcheck reported {errors} error(s)")
        elif errors == 0:
            record.update(status="clean" if step.get("rc") == 0 else "clean-but-tests-failed")
        else:
            record.update(status="failed", reason="no ERROR SUMMARY line; see memcheck.txt")
    r.steps.setdefault("memcheck", {}).update(status=record["status"],
                                              reason=record.get("reason"))
    return record


def write_summary_md(path: Path, s: dict[str, Any], kernels_text: str) -> None:
    lines = [f"# gpu-check on {s['device_name']} ({s['date']})", ""]
    if not s["gpu_available"]:
        lines += [f"**No GPU: {s['no_gpu_reason']}** — GPU rows, memcheck and GPU timings "
                  "are unavailable on this machine.", ""]
    lines += [f"- commit: {s.get('commit') or 'unknown'}; dry run: {s['dry_run']}",
              f"- CuPy {s['machine'].get('cupy_version')}, driver "
              f"{s['machine'].get('driver_version', s['machine'].get('driver_cuda'))}, "
              f"python {s['machine'].get('python')}", "", "| step | status | seconds | note |",
              "|---|---|---|---|"]
    for name, st in s["steps"].items():
        lines.append(f"| {name} | {st.get('status')} | {st.get('elapsed_s', '')} | "
                     f"{st.get('reason', '') or ''} |")
    lines += ["", f"GPU tests: {s['gpu_tests'].get('counts') or 'no counts (see gpu-tests.txt)'}",
              f"memcheck: {s['memcheck'].get('status')} "
              f"{s['memcheck'].get('reason') or ''} (files: {', '.join(s['memcheck']['files'])})"]
    bw = (s.get("bandwidth") or {}).get("gpu") or {}
    lines.append(f"copy bandwidth ceiling: {bw['ceiling_gbps']:.1f} GB/s ({bw['ceiling_method']})"
                 if "ceiling_gbps" in bw else f"copy bandwidth: {bw.get('status', 'not run')} "
                 f"({bw.get('reason', 'see bandwidth.txt')})")
    lines += ["", "## Kernels", "", "```", kernels_text.strip() or "(kernels.py did not run)",
              "```", ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu-check", help="report folder")
    parser.add_argument("--results-dir", default=None,
                        help="where the dated summary JSON goes (default benchmarks/results; "
                             "the report folder under --dry-run)")
    parser.add_argument("--budget-s", type=float, default=480, help="time budget, all steps")
    parser.add_argument("--dry-run", action="store_true",
                        help="quickest form of every step; no failure for a missing GPU")
    parser.add_argument("--skip", default="", help=f"comma-separated steps to skip: {STEPS}")
    ns = parser.parse_args(argv)
    skip = {x for x in ns.skip.split(",") if x}
    if skip - set(STEPS.split(", ")):
        parser.error(f"--skip: unknown step(s) {sorted(skip - set(STEPS.split(', ')))}")
    out = Path(ns.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_dir = Path(ns.results_dir or (out if ns.dry_run else ROOT / "benchmarks/results"))
    results_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("machine.json", "bandwidth.json", "kernels.json", "overhead.json",
                  "gpu-tests.xml", "summary.json", "summary.md"):  # never report an old run
        (out / stale).unlink(missing_ok=True)
    r = Runner(out, ns.budget_s, skip)
    py = sys.executable
    started = time.monotonic()

    machine = machine_step(r)
    gpu = bool(machine.get("cuda_usable"))
    no_gpu_reason = None if gpu else str(machine.get("cuda_reason") or "machine info failed")
    if not gpu:
        print(f"[gpu-check] NO GPU: {no_gpu_reason}", flush=True)
    r.run("compile_check", [py, "-m", "gpudl.compile_check"], "compile.txt", 180)
    tests = r.run("gpu_tests", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                f"--junitxml={out / 'gpu-tests.xml'}", "tests"],
                  "gpu-tests.txt", 300)
    counts = parse_pytest_counts(r.text("gpu-tests.txt"))
    # pytest exits 5 when nothing was collected: not a failure of the GPU code.
    tests_failed = "gpu_tests" not in r.skip and tests.get("rc") not in (0, 5)
    if tests.get("rc") == 5:
        tests["status"] = "ok"
    quick = ["--quick"] if ns.dry_run else []
    r.run("bandwidth", [py, "benchmarks/bandwidth.py", "--json", str(out / "bandwidth.json"),
                        *quick], "bandwidth.txt", 120)
    # Each of the 3 modules gets a third of the step's time, so kernels.json is always
    # written even when one module hangs.
    kernels_cap = min(330.0, r.remaining())
    module_timeout = f"{max(20.0, min(150.0, (kernels_cap - 30) / 3)):.0f}"
    r.run("kernels", [py, "benchmarks/kernels.py", "--json", str(out / "kernels.json"),
                      "--bandwidth-json", str(out / "bandwidth.json"), "--module-timeout",
                      module_timeout, *quick], "kernels.txt", kernels_cap)
    short = ["--calls", "200", "--repeats", "3", "--chain", "20"] if ns.dry_run else []
    r.run("overhead", [py, "benchmarks/overhead.py", "--json", str(out / "overhead.json"),
                       *short], "overhead.txt", 120)
    memcheck = memcheck_step(r, gpu)

    kernels = _load_json(out / "kernels.json") or {}
    device_name = str(machine.get("gpu_name") or "unknown GPU") if gpu else "cpu (no GPU)"
    date = datetime.date.today().isoformat()
    summary: dict[str, Any] = {
        "report": "gpu-check", "date": date, "device_name": device_name,
        "gpu_available": gpu, "no_gpu_reason": no_gpu_reason, "dry_run": ns.dry_run,
        "commit": git_commit(), "report_dir": str(out), "machine": machine, "steps": r.steps,
        "gpu_tests": {"device_name": device_name, "counts": counts, "rc": tests.get("rc"),
                      "status": tests.get("status")},
        "memcheck": {"device_name": device_name, **memcheck},
        "bandwidth": _load_json(out / "bandwidth.json"),
        "kernels": {"device_name": device_name, "rows": kernels.get("rows"),
                    "targets": kernels.get("targets"), "notes": kernels.get("notes"),
                    "modules": {k: {"status": v.get("status"), "reason": v.get("reason"),
                                    "elapsed_s": v.get("elapsed_s")}
                                for k, v in (kernels.get("modules") or {}).items()}},
        "overhead": _load_json(out / "overhead.json"),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    for key in ("bandwidth", "overhead"):
        if summary[key] is None:
            summary[key] = {"status": "not run", "reason": r.steps.get(key, {}).get("status")}
        summary[key]["device_name"] = device_name
        summary[key].pop("machine", None)  # the same machine block is at the top
    slug = slugify(device_name) if gpu else "no-gpu"
    json_path = results_dir / f"{date}-{slug}.json"
    json_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    write_summary_md(out / "summary.md", summary, r.text("kernels.txt"))
    print((out / "summary.md").read_text())
    print(f"[gpu-check] wrote {out}/summary.md and {json_path} "
          f"({summary['elapsed_s']} s)", flush=True)
    if tests_failed or memcheck.get("status") == "errors":
        return 1
    if not gpu and not ns.dry_run:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
