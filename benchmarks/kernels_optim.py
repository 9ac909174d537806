"""Benchmark: the fused optimizer updates, Adam and SGD with momentum, over a model's leaves.

Parameter sets (float32, the leaves of gpudl's own models): ``mlp`` 784-256-128-10 (6
leaves, 235,146 numbers) and ``resnet20`` (65 leaves, 272,474 numbers: many small
tensors). Benches ``optim_adam`` (lr 1e-3) and ``optim_sgd_momentum`` (lr 0.1, momentum
0.9); each call is one optimizer step over every leaf, with fixed gradients.

Rows:
  * ``gpudl-flat``: what ``gd.fit`` runs per step (:mod:`gpudl.optim.flat`): gather the
    gradient tree into one flat buffer, then ONE in-place update of every leaf (one
    ``optim_update.cu`` launch on the GPU; the NumPy twin, a chunk at a time, on the CPU);
  * ``gpudl-update``: ``opt.update`` + ``optim.apply_updates`` (the public, pure API: the
    fused body once per leaf, fresh outputs);
  * ``gpudl-composite``: the same through the composable chain the alias is built from
    (``opt.update.fallback``: ~14 array operations per leaf): gpudl before the fused path;
  * ``torch-foreach-off`` / ``torch-foreach-on``: ``torch.optim.Adam``/``SGD`` with
    ``foreach=False`` / ``foreach=True`` on the same numbers (on CUDA also ``torch-fused``,
    when torch has CUDA).
GPU times: ``cupyx.profiler.benchmark`` (CUDA events) for gpudl, torch CUDA events for torch,
median and IQR after warm-up, the first call (NVRTC compile) apart. Without a GPU everything
runs on the CPU with one thread on each side (``common.single_threaded``), timed with
perf_counter, and each gpudl row also carries ``vs_torch_foreach_off`` and
``vs_torch_foreach_on``: the median over ``PAIRS`` back-to-back pairs, in alternating order,
of gpudl time / torch time (``common.paired_times``; < 1: gpudl is faster). GB/s counts
what an update must move at least: Adam reads g, p, m, v and writes p, m, v (7 arrays);
SGD with momentum reads g, p, buf and writes p, buf (5).
``--tiny`` (``report["tiny"]``) runs two tiny parameter sets, twice each: the code-path
check the CPU kernel emulator's tests run; its figures mean nothing.

Usage: ``python benchmarks/kernels_optim.py [--json out.json] [--quick] [--tiny]``; from a
harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and ``tiny``;
notes are appended to ``report["notes"]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl import optim  # noqa: E402
from gpudl.backend import xp_for  # noqa: E402
from gpudl.optim.flat import FlatTrees  # noqa: E402

PAIRS = 31
TINY_SETS = ("tiny-mlp", "tiny-conv")
BENCHES = {  # bench -> (gpudl optimizer, torch class name, torch kwargs, arrays moved)
    "optim_adam": (lambda: optim.adam(1e-3), "Adam", {"lr": 1e-3}, 7),
    "optim_sgd_momentum": (lambda: optim.sgd(0.1, momentum=0.9), "SGD",
                           {"lr": 0.1, "momentum": 0.9}, 5),
}


def leaf_shapes(name: str) -> list[tuple[int, ...]]:
    """The parameter shapes of a model, in tree order."""
    if name == "mlp":
        return [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]
    if name == "tiny-mlp":
        return [(8, 5), (8,), (3, 8), (3,)]
    if name == "tiny-conv":
        return [(4, 3, 3, 3), (4,), (4,), (5, 4)]
    from gpudl.models.resnet import resnet20

    params, _ = resnet20().init(gd.random.key(0), np.zeros((1, 3, 32, 32), np.float32))
    return [leaf.shape for leaf in gd.tree.tree_leaves(params)]


def _trees(shapes, xp):
    rng = np.random.default_rng(0)
    params = {str(i): xp.asarray(rng.standard_normal(s).astype(np.float32))
              for i, s in enumerate(shapes)}
    grads = {k: xp.asarray(0.01 * rng.standard_normal(v.shape).astype(np.float32))
             for k, v in params.items()}
    return params, grads


def gpudl_fns(make_opt, params, grads) -> dict:
    """The three gpudl rows as zero-argument callables (each runs one step per call)."""
    opt = make_opt()
    flat = FlatTrees.adopt(opt, params, opt.init(params))

    def flat_step():
        flat.load_grads(grads)
        flat.apply()

    def pure(update):
        box = {"p": params, "s": opt.init(params)}

        def step():
            u, box["s"] = update(grads, box["s"], box["p"])
            box["p"] = optim.apply_updates(box["p"], u)
        return step

    return {"gpudl-flat": flat_step, "gpudl-update": pure(opt.update),
            "gpudl-composite": pure(opt.update.fallback)}


def torch_fns(cls_name: str, kwargs: dict, params, grads, device: str) -> dict:
    import torch

    fns = {}
    variants = [("torch-foreach-off", {"foreach": False}), ("torch-foreach-on", {"foreach": True})]
    if device == "cuda":
        variants.append(("torch-fused", {"fused": True}))
    for impl, extra in variants:
        tp = [torch.tensor(gd.to_numpy(p), device=device, requires_grad=True)
              for p in params.values()]
        for t, g in zip(tp, grads.values()):
            t.grad = torch.tensor(gd.to_numpy(g), device=device)
        fns[impl] = getattr(torch.optim, cls_name)(tp, **kwargs, **extra).step
    return fns


def _row(bench, device, device_name, model, shapes, impl, timing, arrays) -> dict:
    n = int(sum(int(np.prod(s)) for s in shapes))
    return {"bench": bench, "device": device, "device_name": device_name, "dtype": "float32",
            "params": model, "leaves": len(shapes), "elements": n, "impl": impl, **timing,
            "gbps": arrays * 4 * n / timing["median_s"] / 1e9}


def _gpu_rows(models, report, torch_missing, device_name) -> list[dict]:
    tiny = bool(report.get("tiny"))
    repeats, warmup = (common.TINY_REPEATS, 1) if tiny else (100, 5)
    rows = []
    with gd.device("cuda"):
        for model in models:
            shapes = leaf_shapes(model)
            params, grads = _trees(shapes, xp_for("cuda"))
            for bench, (make_opt, cls_name, kwargs, arrays) in BENCHES.items():
                fns = gpudl_fns(make_opt, params, grads)
                timed = {k: common.time_row(f, "cuda", warmup=warmup, repeats=repeats,
                                            clock="cupyx") for k, f in fns.items()}
                if torch_missing is None:
                    for impl, f in torch_fns(cls_name, kwargs, params, grads, "cuda").items():
                        timed[impl] = common.time_row(f, "cuda", warmup=warmup,
                                                      repeats=repeats, clock="torch")
                rows += [_row(bench, "cuda", device_name, model, shapes, impl, t, arrays)
                         for impl, t in timed.items()]
    return rows


def _cpu_rows(models, report, torch_missing) -> list[dict]:
    tiny = bool(report.get("tiny"))
    repeats, pairs = (common.TINY_REPEATS, 2) if tiny else (30, PAIRS)
    rows = []
    with gd.device("cpu"), common.single_threaded():
        for model in models:
            shapes = leaf_shapes(model)
            params, grads = _trees(shapes, np)
            for bench, (make_opt, cls_name, kwargs, arrays) in BENCHES.items():
                fns = gpudl_fns(make_opt, params, grads)
                torch = {} if torch_missing else torch_fns(cls_name, kwargs, params, grads, "cpu")
                for impl, f in {**fns, **torch}.items():
                    row = _row(bench, "cpu", "cpu", model, shapes, impl,
                               common.time_row(f, "cpu", warmup=3, repeats=repeats), arrays)
                    if impl.startswith("gpudl"):
                        for ref in torch:
                            paired = common.paired_times(f, torch[ref], pairs=pairs, warmup=2)
                            row[f"vs_{ref.replace('-', '_')}"] = paired["ratio_median"]
                    rows.append(row)
    return rows


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (set, bench, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    models = TINY_SETS if tiny else ("mlp",) if quick else ("mlp", "resnet20")
    usable, reason, device_name = common.cuda_device()
    torch_missing = common.torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_optim: torch rows skipped ({torch_missing})")
    if usable:
        return _gpu_rows(models, report, torch_missing, device_name)
    notes.append(f"kernels_optim: GPU rows unavailable ({reason}); timed on the CPU, one "
                 "thread each side")
    return _cpu_rows(models, report, torch_missing) + [common.unavailable_row(
        "optim_adam", reason)]


def _ratio(key: str):
    return lambda r: f"{r[key]:.2f}" if key in r else "-"


COLUMNS = common.kernel_columns(
    14, [("params", "params", "10s"), ("bench", "bench", "20s"), ("impl", "impl", "18s")],
    digits=3, throughput=[("GB/s", "gbps", "7.1f"),
                          ("/torch-1", _ratio("vs_torch_foreach_off"), "8s"),
                          ("/torch-fe", _ratio("vs_torch_foreach_on"), "9s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="the MLP only")


if __name__ == "__main__":
    sys.exit(main())
