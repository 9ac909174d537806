"""gpudl against PyTorch on the CPU, one thread each: whole training steps and the kernels.

The standing comparison of issue 12: each row runs the same work on both sides in ONE
process (NumPy/BLAS and torch each on one thread), in back-to-back pairs whose order
alternates, and reports the median of the per-pair ratios gpudl/torch with their
interquartile range (``common.paired_times``). On a shared machine the figures are
indicative; the ratio of a pair is steadier than either time.

Every timed sample runs right after an untimed call of its own side (``settle=1``), as
each step of a training loop runs after the previous one. Without it the alternation
a b | b a | a b makes the first side of each pair a repeat of itself and the second one
run on the caches the other library left: measured on the MLP step (2-core EPYC, 30
samples each), gpudl 3.23 ms after itself and 3.76 ms after torch, torch 2.45 ms after
itself and 3.25 ms after gpudl, with no page faults either way. The per-pair ratios then
alternated ~1.0 / ~1.5 and their median landed on either level. That cost is one of the
interleaving (a user's loop does not switch libraries between steps), paid by both sides,
so both sides get the same settling call; it is no cost gpudl pays in use.

Both sides run their library's own kernel choice for the CPU: an ``OPENBLAS_CORETYPE`` set
in the environment (some images pin ``Haswell``, AVX2 kernels, half the GEMM speed on an
AVX-512 CPU) is lifted for this process before NumPy loads (``blas_env.py``); the header
names the OpenBLAS kernel set, and the notes and the JSON say what was lifted.
``--keep-blas-coretype`` measures with the pin.

The process runs with the malloc settings ``gd.fit`` makes (``gpudl.train.host_memory``:
freed heap kept for reuse, not faulted in again) from its start, for both libraries: the
step rows run through fit's step, which makes them anyway, and the kernel rows must not
depend on whether a step row ran before them (without them a fresh 2.4 MB output costs
sigmoid fwd+bwd ~0.3 ms of page faults here, torch's side as well).

* step rows: forward + backward + Adam (float32) of the course's models, gpudl through
  the very step ``gd.fit`` runs (``gpudl.train.step``: ``supervised_step``/``StepRunner``,
  labels checked once on the host as fit does), torch as a user writes it
  (``zero_grad``/``backward``/``step``); the torch twins (``cpu_models_torch.py``) load
  gpudl's initial weights, so both start from the same weights and the same batch, and
  the first step's loss must agree before any time is taken. ``fit_mlp`` is one
  ``gd.fit`` epoch against a plain torch loop over the same slices.
* kernel rows: one op's forward + backward through each side's autodiff
  (``gd.vjp`` / ``gd.value_and_grad`` against ``torch.autograd.grad``), and one Adam
  update over the MLP's leaves; their results must agree too.

Usage::

    python benchmarks/cpu_vs_torch.py            # 31 pairs per row (a few minutes)
    python benchmarks/cpu_vs_torch.py --quick    # 9 pairs
    python benchmarks/cpu_vs_torch.py --rows mlp,sigmoid --pairs 15
    python benchmarks/cpu_vs_torch.py --write    # + benchmarks/results/<date>-cpu-vs-torch-<cpu>.json
    python benchmarks/cpu_vs_torch.py --tiny --json /tmp/out.json   # smoke: tiny shapes, 2 pairs
    python benchmarks/cpu_vs_torch.py --keep-blas-coretype   # with the environment's pin

Exit status 0, or 1 when a row's two sides disagree (the comparison would be void).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # blas_env, common, cpu_models_torch
import blas_env  # noqa: E402

LIFTED_CORETYPE: str | None = None  # an environment's OPENBLAS_CORETYPE this run lifted
if __name__ == "__main__":  # before NumPy loads its BLAS: one thread, as torch gets below
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[_var] = "1"
    LIFTED_CORETYPE = blas_env.lift_coretype_pin(sys.argv[1:])  # OpenBLAS's own kernels

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import common  # noqa: E402
import numpy as np  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl import functional as F  # noqa: E402
from gpudl import models, optim  # noqa: E402
from gpudl.bench import blas_kernels  # noqa: E402
from gpudl.functional.labels import host_label_bounds, labels_within  # noqa: E402
from gpudl.train.host_memory import keep_freed_host_memory  # noqa: E402
from gpudl.train.names import resolve_loss  # noqa: E402
from gpudl.train.step import StepRunner, run_keys, supervised_step  # noqa: E402

try:
    import cpu_models_torch as tm
    import torch
    import torch.nn.functional as tF
except ImportError as _exc:  # main() says so and stops; the smoke test skips
    torch = tF = tm = None
    TORCH_MISSING: str | None = f"torch is not installed ({_exc})"
else:
    TORCH_MISSING = None

RESULTS = Path(__file__).resolve().parent / "results"
LR = 1e-3
PAIRS = {"full": 31, "quick": 9, "tiny": 2}
WARMUP = {"full": 3, "quick": 2, "tiny": 1}  # untimed calls per side, the checked first one included
STEP_TARGET, KERNEL_TARGET = 1.2, 1.2
SAMPLE_S = 0.005  # the least a timed sample should last (calls repeated within it)
SETTLE = 1  # untimed calls of a side right before each of its samples (see above)


@dataclass(frozen=True)
class Case:
    """One row: ``build(size) -> (gpudl_fn, torch_fn, rtol)``; each fn returns what is
    compared (a loss, gradients, updated leaves) and is what gets timed."""

    name: str
    kind: str  # "step" or "kernel"
    target: float | None  # the issue's bound on the ratio; None: informational
    what: str
    full: dict
    tiny: dict
    build: Callable[[dict], tuple[Callable, Callable, float]]


# ----------------------------------------------------------------------------- step rows
def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _step_pair(gd_model, torch_model, loss, torch_loss, x, y, tx, ty):
    """fit's step on gpudl's side, a torch user's on the other, from the same weights."""
    init_key, _, step_key = run_keys(gd.random.key(0))  # fit's keys for gd.fit(key=0)
    params, state = gd_model.init(init_key, x)
    tm.load_gpudl_weights(torch_model, gd.state_dict(params, state))
    step = supervised_step(gd_model, resolve_loss(loss), optim.adam(LR), params)
    runner = StepRunner(step, params, state, step.optimizer.init(params), step_key)
    bounds = host_label_bounds(y)

    def gpudl_step():
        with labels_within(bounds):  # as fit: labels checked once on the host, not per step
            return runner.train_step(x, y)[0]

    opt = torch.optim.Adam(torch_model.parameters(), lr=LR)
    return gpudl_step, tm.train_step(torch_model, torch_loss, opt, tx, ty), 1e-4


def _classify(gd_model, torch_model, x, y, tx=None):
    """A classifier's step pair on inputs ``x`` (``tx`` on torch's side) and labels ``y``."""
    tx = torch.from_numpy(x) if tx is None else tx
    return _step_pair(gd_model, torch_model, "cross_entropy", tF.cross_entropy, x, y, tx,
                      torch.from_numpy(y))


def _data(s, shape, vocab=None):
    """A fixed batch: float32 normal inputs (or ids in [1, vocab)) and labels of 10 classes."""
    r = _rng()
    x = (r.standard_normal((s["batch"], *shape), dtype=np.float32) if vocab is None
         else r.integers(1, vocab, (s["batch"], *shape)))
    return x, r.integers(0, 10, s["batch"])


def build_mlp(s):
    return _classify(models.mlp(s["hidden"]), tm.torch_mlp(s["features"], s["hidden"], 10),
                     *_data(s, (s["features"],)))


def build_lenet5(s):
    return _classify(models.lenet5(), tm.torch_lenet5(), *_data(s, (1, 28, 28)))


def build_resnet(s):
    return _classify(models.cifar_resnet(s["depth"], 10, s["width"]),
                     tm.CifarResNet(s["depth"], 10, s["width"]),
                     *_data(s, (3, s["size"], s["size"])))


def build_char_lm(s):
    ids = _rng().integers(0, s["vocab"], (s["batch"], s["steps"] + 1))
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()  # next-character targets
    return _step_pair(models.sequence.CharLM(s["vocab"], embed_dim=s["embed"], hidden=s["hidden"]),
                      tm.CharLM(s["vocab"], s["embed"], s["hidden"]), F.sequence_cross_entropy,
                      tm.sequence_cross_entropy, x, y, torch.from_numpy(x), torch.from_numpy(y))


def build_transformer(s):
    d, heads, layers = s["d"], s["heads"], s["layers"]
    return _classify(  # ids from 1: no padding (id 0), though both sides build the key mask
        models.transformer.TransformerClassifier(s["vocab"], 10, d_model=d, num_heads=heads,
                                                 ff_dim=4 * d, num_layers=layers),
        tm.TransformerClassifier(s["vocab"], 10, d, heads, 4 * d, layers, s["steps"]),
        *_data(s, (s["steps"],), vocab=s["vocab"]))


def build_gcn(s):
    r, n = _rng(), s["nodes"]
    src = r.integers(0, n, s["edges"] // 2)
    dst = (src + r.integers(1, n, src.size)) % n  # no self-loops: GCN adds one per node
    edge_index = np.stack([np.r_[src, dst], np.r_[dst, src]])  # (2, E), both directions
    feats = r.standard_normal((n, s["features"]), dtype=np.float32)  # (n, F)
    return _classify(models.gnn.GCN(hidden=s["hidden"], num_classes=10, dropout=0.0),
                     tm.GCN(s["features"], s["hidden"], 10),
                     {"x": feats, "edge_index": edge_index}, r.integers(0, 10, n),
                     {"x": torch.from_numpy(feats), "edge_index": torch.from_numpy(edge_index)})


def build_fit(s):
    """One ``gd.fit`` epoch (from the same initial weights every call) against a torch loop
    over the same slices; no shuffling on either side, so the epoch losses must agree."""
    x, y = _data({"batch": s["samples"]}, (s["features"],))
    model = models.mlp(s["hidden"])
    params, state = model.init(run_keys(gd.random.key(0))[0], x[:s["batch"]])
    tmodel = tm.load_gpudl_weights(tm.torch_mlp(s["features"], s["hidden"], 10),
                                   gd.state_dict(params, state))

    def gpudl_epoch():
        h = gd.fit(model, (x, y), loss="cross_entropy", optimizer=optim.adam(LR), epochs=1,
                   batch_size=s["batch"], shuffle=False, verbose=0, params=params, state=state)
        return np.float32(h.history["loss"][0])

    torch_epoch = tm.fit_epoch(tmodel, torch.from_numpy(x), torch.from_numpy(y), s["batch"], LR)
    return gpudl_epoch, torch_epoch, 1e-3  # 16 Adam steps of float32 rounding apart


# ----------------------------------------------------------------------------- kernel rows
def _vjp_pair(gd_fn, torch_fn, arrays, cot_shape):
    """Forward + backward through each side's autodiff with one fixed cotangent; both
    return the input gradients."""
    # another seed than the inputs': g == x would make BatchNorm's dx cancel to ~0
    g = _rng(1).standard_normal(cot_shape, dtype=np.float32)
    tg, targs = torch.from_numpy(g), [torch.from_numpy(a).requires_grad_() for a in arrays]
    return (lambda: gd.vjp(gd_fn, *arrays)[1](g),
            lambda: torch.autograd.grad(torch_fn(*targs), targs, tg), 1e-4)


def _activation(gd_fn, torch_fn):
    def build(s):
        x = _rng().standard_normal(s["shape"], dtype=np.float32)
        return _vjp_pair(gd_fn, torch_fn, [x], x.shape)
    return build


def build_batch_norm(s):
    x = _rng().standard_normal(s["shape"], dtype=np.float32)  # (N, C, H, W)
    c = x.shape[1]
    gamma, beta = np.full(c, 1.5, np.float32), np.full(c, 0.25, np.float32)
    mean, var = np.zeros(c, np.float32), np.ones(c, np.float32)
    return _vjp_pair(lambda v, g, b: F.batch_norm(v, g, b, mean, var, train=True)[0],
                     lambda v, g, b: tF.batch_norm(v, None, None, g, b, training=True),
                     [x, gamma, beta], x.shape)


def _pool(kind):
    def build(s):
        x = _rng().standard_normal(s["shape"], dtype=np.float32)
        n, c, h, w = x.shape
        gd_op, torch_op = getattr(F, f"{kind}_pool2d"), getattr(tF, f"{kind}_pool2d")
        return _vjp_pair(lambda v: gd_op(v, 2), lambda v: torch_op(v, 2), [x],
                         (n, c, h // 2, w // 2))
    return build


def build_adam(s):
    """One Adam update of the MLP's leaves from fixed gradients, state carried over calls."""
    model = models.mlp(s["hidden"])
    params, _ = model.init(gd.random.key(0), np.zeros((1, s["features"]), np.float32))
    grads = gd.tree.tree_map(lambda p: _rng().standard_normal(p.shape, dtype=np.float32), params)
    opt = optim.adam(LR)
    carry = [params, opt.init(params)]

    def gpudl_update():
        updates, carry[1] = opt.update(grads, carry[1], carry[0])
        carry[0] = optim.apply_updates(carry[0], updates)
        return list(gd.state_dict(carry[0]).values())  # torch's parameter order

    tmodel = tm.load_gpudl_weights(tm.torch_mlp(s["features"], s["hidden"], 10),
                                   gd.state_dict(params))
    return gpudl_update, tm.adam_update(tmodel, list(gd.state_dict(grads).values()), LR), 1e-5


def build_cross_entropy(s):
    r = _rng()
    z = r.standard_normal((s["batch"], s["classes"]), dtype=np.float32)  # (N, C)
    y = r.integers(0, s["classes"], s["batch"])
    tz, ty = torch.from_numpy(z).requires_grad_(), torch.from_numpy(y)
    value_and_grad = gd.value_and_grad(lambda v: F.softmax_cross_entropy(v, y))

    def torch_fn():
        loss = tF.cross_entropy(tz, ty)
        return loss.detach(), torch.autograd.grad(loss, tz)[0]

    return lambda: value_and_grad(z), torch_fn, 1e-5


MLP = {"batch": 128, "features": 784, "hidden": (256, 128)}
MLP_TINY = {"batch": 4, "features": 12, "hidden": (8, 6)}
ACT, ACT_TINY = {"shape": (128, 6, 28, 28)}, {"shape": (2, 3, 4, 4)}
CASES = [  # name, kind, target (the issue's), what, full size, tiny size, builder
    Case("mlp", "step", 1.0, "MLP 784-256-128-10, batch 128", MLP, MLP_TINY, build_mlp),
    Case("lenet5", "step", 1.0, "LeNet-5 (sigmoid, avg-pool) 28x28, batch 128", {"batch": 128},
         {"batch": 2}, build_lenet5),
    Case("resnet20", "step", STEP_TARGET, "ResNet-20 (cifar_resnet(20)), batch 32, 32x32",
         {"batch": 32, "size": 32, "depth": 20, "width": 16},
         {"batch": 2, "size": 8, "depth": 8, "width": 2}, build_resnet),
    Case("char_lm", "step", STEP_TARGET, "char-LM LSTM V64 E64 H256 T32, batch 32",
         {"batch": 32, "steps": 32, "vocab": 64, "embed": 64, "hidden": 256},
         {"batch": 2, "steps": 3, "vocab": 7, "embed": 4, "hidden": 5}, build_char_lm),
    Case("transformer", "step", 1.0, "encoder d128, 4 heads, 2 layers, ff 512, T64, V1000, "
         "mean-pool head, batch 16",
         {"batch": 16, "steps": 64, "vocab": 1000, "d": 128, "heads": 4, "layers": 2},
         {"batch": 2, "steps": 4, "vocab": 9, "d": 8, "heads": 2, "layers": 1}, build_transformer),
    Case("gcn", "step", 1.2, "GCN 2 layers (no dropout), 2000 nodes, 20k edges, 64 features, "
         "hidden 64", {"nodes": 2000, "edges": 20000, "features": 64, "hidden": 64},
         {"nodes": 12, "edges": 30, "features": 5, "hidden": 4}, build_gcn),
    Case("fit_mlp", "step", STEP_TARGET, "gd.fit MLP one epoch, 2048 samples, batch 128, "
         "no shuffle", {**MLP, "samples": 2048}, {**MLP_TINY, "samples": 8}, build_fit),
    Case("sigmoid", "kernel", KERNEL_TARGET, "sigmoid fwd+bwd (128, 6, 28, 28)", ACT, ACT_TINY,
         _activation(F.sigmoid, torch.sigmoid) if torch else None),
    Case("relu", "kernel", None, "relu fwd+bwd (128, 6, 28, 28)", ACT, ACT_TINY,
         _activation(F.relu, torch.relu) if torch else None),
    Case("batch_norm", "kernel", KERNEL_TARGET, "BatchNorm train fwd+bwd (32, 16, 32, 32)",
         {"shape": (32, 16, 32, 32)}, ACT_TINY, build_batch_norm),
    Case("avg_pool", "kernel", KERNEL_TARGET, "avg_pool2d 2x2 fwd+bwd (128, 6, 28, 28)", ACT,
         ACT_TINY, _pool("avg")),
    Case("max_pool", "kernel", KERNEL_TARGET, "max_pool2d 2x2 fwd+bwd (128, 6, 28, 28)", ACT,
         ACT_TINY, _pool("max")),
    Case("adam", "kernel", KERNEL_TARGET, "Adam update over the MLP's 6 leaves (235k floats)",
         {"features": 784, "hidden": (256, 128)}, {"features": 6, "hidden": (5, 4)}, build_adam),
    Case("cross_entropy", "kernel", None, "softmax-CE (256, 10) through gd.value_and_grad",
         {"batch": 256, "classes": 10}, {"batch": 4, "classes": 3}, build_cross_entropy),
]


# ----------------------------------------------------------------------------- harness
def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def run_case(case: Case, mode: str, pairs: int, warmup: int) -> dict[str, Any]:
    """Build one row's two sides, check that they agree, then time them in pairs."""
    size = case.tiny if mode == "tiny" else case.full
    gpudl_fn, torch_fn, rtol = case.build(size)
    (a, first_a), (b, first_b) = _timed(gpudl_fn), _timed(torch_fn)  # cold: reported apart
    diff = common.max_rel_diff(a, b)
    inner, done = 1, 1
    if mode != "tiny" and warmup > 1:  # short work: several calls a sample, ~SAMPLE_S each
        warm = min(_timed(gpudl_fn)[1], _timed(torch_fn)[1])  # both sides' samples >= SAMPLE_S
        inner, done = int(np.clip(SAMPLE_S // warm, 1, 50)), 2
    stats = common.paired_times(gpudl_fn, torch_fn, pairs, warmup=max(warmup - done, 0),
                                inner=inner, settle=SETTLE)
    agree = diff <= rtol
    return {"row": case.name, "kind": case.kind, "what": case.what, "size": size,
            "target": case.target, **stats, "first_call_gpudl_s": first_a,
            "first_call_torch_s": first_b, "max_rel_diff": diff, "rtol": rtol, "agree": agree,
            "verdict": common.ratio_verdict(stats["ratio_median"], case.target) if agree
            else "DIFFER"}


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU model, cores, versions, BLAS of each side, threads."""
    import platform

    from gpudl.bench.device_info import usable_cores

    return {"cpu_model": common.cpu_model(), **common.cpu_identity(),
            "cpu_count": os.cpu_count(),
            "usable_cores": usable_cores(), "platform": platform.platform(),
            "python": platform.python_version(), "gpudl_version": gd.__version__,
            "numpy_version": np.__version__, "numpy_blas": common.numpy_blas(),
            "torch": tm.backend_info(),
            "thread_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS",
                                                           "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "openblas_kernels": blas_kernels.loaded_cores(),
            "openblas_coretype": {"environment": os.environ.get("OPENBLAS_CORETYPE"),
                                  "lifted": LIFTED_CORETYPE}}


def run(mode: str = "full", pairs: int | None = None,
        rows: list[str] | None = None) -> dict[str, Any]:
    """Every row of :data:`CASES` (or those named in ``rows``), one thread each; the report.

    ``mode``: "full" (31 pairs), "quick" (9 pairs), "tiny" (tiny shapes, 2 pairs: the
    code paths only, no meaningful figures).
    """
    pairs = pairs or PAIRS[mode]
    cases = [c for c in CASES if rows is None or c.name in rows]
    keep_freed_host_memory()  # fit's malloc settings, whichever rows run (see the docstring)
    with common.single_threaded(), gd.device("cpu"):
        info = machine()
        out = [run_case(c, mode, pairs, WARMUP[mode]) for c in cases]
    missed = [r["row"] for r in out if r["verdict"] == "MISS"]
    differ = [r["row"] for r in out if not r["agree"]]
    notes = []
    if missed:
        notes.append("rows missing the issue's targets: " + ", ".join(
            f"{r['row']} ({r['ratio_median']:.2f}x > {r['target']:.1f}x)" for r in out
            if r["verdict"] == "MISS"))
    elif any(r["target"] is not None for r in out):
        notes.append("every row with a target meets it")
    if differ:
        notes.append("the two sides DISAGREE (the comparison is void) on: " + ", ".join(
            f"{r['row']} (max rel diff {r['max_rel_diff']:.2e} > {r['rtol']:.0e})" for r in out
            if not r["agree"]))
    lifted = blas_env.lifted_note(LIFTED_CORETYPE, info["openblas_kernels"])
    if lifted:
        notes.append(lifted)
    if mode == "tiny":
        notes.append(f"--tiny: tiny shapes, {pairs} pair(s): the figures mean nothing")
    return {"benchmark": "cpu_vs_torch", "date": datetime.date.today().isoformat(),
            "mode": mode, "pairs": pairs, "warmup": WARMUP[mode], "lr": LR, "machine": info,
            "rows": out, "missed_targets": missed, "disagree": differ, "notes": notes}


def _blas_line(info: dict[str, Any]) -> str:
    pools = ", ".join(f"{p.get('library')} ({p.get('prefix') or p.get('api')} "
                      f"{p.get('version') or ''}".rstrip() + f") {p.get('threads')} thread(s)"
                      for p in info["numpy_blas"])
    if info.get("openblas_kernels"):
        pools += f", OpenBLAS kernels {', '.join(info['openblas_kernels'])}"
    t = info["torch"]
    return (f"numpy {info['numpy_version']}: {pools or 'no BLAS pool found'}\n"
            f"torch {t['torch_version']}: BLAS {t['torch_blas']}, MKL {t['mkl']}, oneDNN "
            f"{t['onednn']}, CPU capability {t['cpu_capability']}, {t['threads']} thread(s)")


def format_report(report: dict[str, Any]) -> str:
    """The header (machine, BLAS of each side), the table, what each row is, the notes."""
    info = report["machine"]
    l2 = f", L2 {info['l2_cache']}" if info.get("l2_cache") else ""
    cpu = info["cpu_model"] + (f" ({info['cpu_id']}{l2})" if info.get("cpu_id") else "")
    lines = [f"cpu_vs_torch ({report['mode']}): {cpu}, {info['usable_cores']} "
             f"usable core(s), one thread per side", _blas_line(info),
             f"{report['pairs']} pairs per row, alternating order, each sample after "
             f"{SETTLE} untimed call(s) of its own side, short ops repeated to "
             f"~{SAMPLE_S * 1e3:.0f} ms a sample; ratio = gpudl / torch, the median of per-pair "
             "ratios, and its IQR (indicative: shared machine)", "",
             common.table(report["rows"], common.PAIRED_COLUMNS), ""]
    tiny = report["mode"] == "tiny"
    lines += [f"  {r['row']:14s} {r['what']}" + (f" [tiny: {r['size']}]" if tiny else "")
              + (f" [{r['inner']} calls a sample]" if r["inner"] > 1 else "")
              for r in report["rows"]]
    return "\n".join(lines + [""] + report["notes"])


def default_name(report: dict[str, Any]) -> str:
    """``<date>-cpu-vs-torch-<cpu slug>[-f<family>m<model>]-<cores>core.json``."""
    info = report["machine"]
    tag = f"-{info['cpu_tag']}" if info.get("cpu_tag") else ""
    return (f"{report['date']}-cpu-vs-torch-{common.slug(info['cpu_model'])}{tag}-"
            f"{info['usable_cores']}core.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{PAIRS['quick']} pairs per row")
    parser.add_argument("--tiny", action="store_true", help=common.TINY_HELP)
    parser.add_argument("--pairs", type=int, help="pairs per row (default: by mode)")
    parser.add_argument("--rows", help="comma-separated rows: " + ",".join(c.name for c in CASES))
    parser.add_argument("--json", help="write the report to this file (or into this folder)")
    parser.add_argument("--write", action="store_true",
                        help=f"write the report to {RESULTS.name}/<date>-cpu-vs-torch-<cpu>.json")
    parser.add_argument(blas_env.KEEP_FLAG, action="store_true", help=blas_env.KEEP_HELP)
    ns = parser.parse_args(argv)
    rows = ns.rows.split(",") if ns.rows else None
    unknown = sorted(set(rows or ()) - {c.name for c in CASES})
    if unknown:
        parser.error(f"unknown rows {unknown}; rows: {[c.name for c in CASES]}")
    if ns.pairs is not None and ns.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {ns.pairs}")
    if TORCH_MISSING:
        print(f"cpu_vs_torch: {TORCH_MISSING}; nothing to compare against")
        return 2
    report = run("tiny" if ns.tiny else "quick" if ns.quick else "full", ns.pairs, rows)
    print(format_report(report))
    targets = [Path(ns.json)] if ns.json else []
    targets += [RESULTS] if ns.write else []
    for path in targets:
        path = path / default_name(report) if path.is_dir() else path
        print(f"wrote {common.write_json(path, report, newline=True)}")
    return 1 if report["disagree"] else 0


if __name__ == "__main__":
    if torch is not None:
        with contextlib.suppress(RuntimeError):  # only possible before torch's first parallel work
            torch.set_num_interop_threads(1)
    sys.exit(main())
