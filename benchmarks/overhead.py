"""Per-op overhead of gpudl against raw NumPy on small (16x16 float32) arrays.

Small arrays make the op itself nearly free, so what is left is the framework's cost:

* untraced: ``gd.ops.add(a, b)`` against ``np.add(a, b)``, the plain-array fast path of
  ``Primitive.__call__`` (target: at most 2 µs added per call);
* traced: ``gd.grad`` of a function applying N ops (forward tape + backward pass), divided
  by N, against the raw NumPy forward of the same N ops (target: at most 15 µs added per
  op).

Timings use ``time.perf_counter`` after a warm-up and report the median over repeats
(spread as min..max). The targets are informational: the script prints PASS/MISS and
never fails. ``--json PATH`` also writes the figures with the machine they came from.

Usage:
    python benchmarks/overhead.py [--json benchmarks/results/overhead-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import gpudl as gd  # noqa: E402

UNTRACED_TARGET_US = 2.0
TRACED_TARGET_US = 15.0
SIZE = 16


def _time_per_call(
    fn: Callable[[], object], calls: int, repeats: int
) -> tuple[float, float, float]:
    """(median, min, max) seconds per call of ``fn`` over ``repeats`` batches of ``calls``."""
    for _ in range(max(calls // 10, 3)):  # warm-up: caches, allocator, branch predictors
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples), min(samples), max(samples)


def _inputs():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    b = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    # Near-orthogonal scaled weights keep a long matmul chain finite.
    w = (np.linalg.qr(rng.standard_normal((SIZE, SIZE)))[0] * 0.99).astype(np.float32)
    return a, b, w


def _ops(a, b, w):
    """name -> (gpudl op call, numpy op call, one chain step for gpudl, one for numpy)."""
    return {
        "add": (
            lambda: gd.ops.add(a, b), lambda: np.add(a, b),
            lambda y: gd.ops.add(y, b), lambda y: np.add(y, b),
        ),
        "matmul": (
            lambda: gd.ops.matmul(a, b), lambda: np.matmul(a, b),
            lambda y: gd.ops.matmul(y, w), lambda y: np.matmul(y, w),
        ),
        "tanh": (
            lambda: gd.ops.tanh(a), lambda: np.tanh(a),
            gd.ops.tanh, np.tanh,
        ),
    }


def run(calls: int = 2000, repeats: int = 15, chain: int = 200, grad_repeats: int = 30) -> dict:
    gd.set_device("cpu")
    a, b, w = _inputs()
    results: dict[str, dict] = {}
    for name, (gd_call, np_call, gd_step, np_step) in _ops(a, b, w).items():
        assert type(gd_call()) is np.ndarray  # the fast path hands back plain arrays
        gd_t = _time_per_call(gd_call, calls, repeats)
        np_t = _time_per_call(np_call, calls, repeats)

        def traced_loss(x, step=gd_step):
            for _ in range(chain):
                x = step(x)
            return gd.ops.sum(x)

        def raw_forward(step=np_step):
            x = a
            for _ in range(chain):
                x = step(x)
            return np.sum(x)

        grad_fn = gd.grad(traced_loss)
        g = grad_fn(a)
        assert g.shape == a.shape and g.dtype == np.float32
        tr_t = _time_per_call(lambda fn=grad_fn: fn(a), 1, grad_repeats)
        fw_t = _time_per_call(raw_forward, 1, grad_repeats)
        us = 1e6
        untraced_added = (gd_t[0] - np_t[0]) * us
        traced_per_op = tr_t[0] / chain * us
        forward_per_op = fw_t[0] / chain * us
        traced_added = traced_per_op - forward_per_op
        results[name] = {
            "untraced_us": gd_t[0] * us,
            "untraced_spread_us": [gd_t[1] * us, gd_t[2] * us],
            "numpy_us": np_t[0] * us,
            "numpy_spread_us": [np_t[1] * us, np_t[2] * us],
            "untraced_added_us": untraced_added,
            "untraced_ratio": gd_t[0] / np_t[0],
            "untraced_pass": untraced_added <= UNTRACED_TARGET_US,
            "traced_us_per_op": traced_per_op,
            "traced_spread_us_per_op": [tr_t[1] / chain * us, tr_t[2] / chain * us],
            "numpy_forward_us_per_op": forward_per_op,
            "traced_added_us_per_op": traced_added,
            "traced_ratio": traced_per_op / forward_per_op,
            "traced_pass": traced_added <= TRACED_TARGET_US,
        }
    return results


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpudl": gd.__version__,
        "device": gd.get_device(),
        "device_reason": gd.device_reason(),
    }


def report(results: dict) -> str:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lines = [
        f"gpudl per-op overhead on {SIZE}x{SIZE} float32 (CPU, NumPy {np.__version__}); "
        "median µs, spread min..max",
        f"untraced (target: <= {UNTRACED_TARGET_US:g} µs added per call)",
        f"  {'op':<7} {'gpudl':>8} {'numpy':>8} {'added':>8} {'ratio':>6}",
    ]
    for name, r in results.items():
        lines.append(
            f"  {name:<7} {r['untraced_us']:8.2f} {r['numpy_us']:8.2f} "
            f"{r['untraced_added_us']:8.2f} {r['untraced_ratio']:5.1f}x  "
            f"{verdict(r['untraced_pass'])}  (gpudl {r['untraced_spread_us'][0]:.2f}.."
            f"{r['untraced_spread_us'][1]:.2f})"
        )
    lines += [
        f"traced: grad of a {SIZE}x{SIZE} chain, forward + backward per op "
        f"(target: <= {TRACED_TARGET_US:g} µs added per op)",
        f"  {'op':<7} {'grad':>8} {'np fwd':>8} {'added':>8} {'ratio':>6}",
    ]
    for name, r in results.items():
        lines.append(
            f"  {name:<7} {r['traced_us_per_op']:8.2f} {r['numpy_forward_us_per_op']:8.2f} "
            f"{r['traced_added_us_per_op']:8.2f} {r['traced_ratio']:5.1f}x  "
            f"{verdict(r['traced_pass'])}  (grad {r['traced_spread_us_per_op'][0]:.2f}.."
            f"{r['traced_spread_us_per_op'][1]:.2f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--calls", type=int, default=2000, help="untraced calls per repeat")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats")
    parser.add_argument("--chain", type=int, default=200, help="ops per traced function")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(calls=args.calls, repeats=args.repeats, chain=args.chain)
    print(report(results))
    elapsed = time.perf_counter() - start
    print(f"({elapsed:.1f} s)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "overhead",
            "size": [SIZE, SIZE],
            "dtype": "float32",
            "targets_us": {
                "untraced_added": UNTRACED_TARGET_US,
                "traced_added_per_op": TRACED_TARGET_US,
            },
            "machine": machine_info(),
            "results": results,
            "elapsed_s": elapsed,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
