"""Benchmark: GNN message passing as CSR products (GCN, GAT) vs scatter-add and torch.

Graph: 2,000 nodes, 20,000 random directed edges (uniform sources and targets, repeats
and loops allowed), float32. Benches (forward, then the gradients of ``sum(out * dy)``
with respect to every parameter):
  * ``gcn2_fwd_bwd``: two GCN layers 64 -> 64 -> 16 (ReLU between), PyG's normalisation
    (remaining self loops, ``D^-1/2 (A + I) D^-1/2``);
  * ``gat_fwd_bwd``:  one GAT layer 64 -> 8 heads x 8, concatenated, self loops.
Implementations:
  * ``gpudl``: ``F.gcn_conv`` / ``F.gat_conv`` as a user calls them under ``gd.grad``: the
    graph's CSR plans are built on the first call and reused (a scipy product on the CPU,
    kernels/graph.cu on the GPU, backward through the transposed plan);
  * ``gpudl-composite``: the same layers written with ``ops.take`` + ``ops.segment_sum``
    (a scatter-add: ``np.add.at`` / ``cupyx.scatter_add``), gpudl's graph ops before the
    plans, normalisation computed once too;
  * ``torch-csr``: torch with the normalised adjacency as a sparse CSR tensor built once
    (``A @ h``), GCN only; ``torch-index-add``: PyG's message passing in plain torch
    (``h[src] * w`` then ``index_add_``; GAT's softmax with ``scatter_reduce`` amax).
    Torch gets the same precomputed graph tensors (built outside the timed step).
Timings: median and IQR after warm-up (CUDA events on the GPU, perf_counter on the CPU),
first call apart (it builds the plans). On the CPU, torch runs with one thread as NumPy
(``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` for
single-threaded BLAS), and ``gpudl/torch`` is the median of per-pair time ratios against
the fastest torch row, the two timed back to back in alternating order (steadier than a
ratio of medians on a shared machine). ``--tiny`` (``report["tiny"]``) runs the same rows
on a 12-node graph, twice each: the code-path check the CPU kernel emulator's tests run;
its figures mean nothing.

Usage: ``python benchmarks/kernels_graph.py [--json out.json] [--quick] [--tiny]``; from a
harness, ``run(report)`` returns the rows (``report`` may hold ``quick`` and ``tiny``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py; it adds the repo root

import common  # noqa: E402

import gpudl as gd  # noqa: E402
from gpudl import functional as F  # noqa: E402
from gpudl import ops  # noqa: E402
from gpudl.autodiff import unbox_all  # noqa: E402

# (nodes, edges, in features, hidden, classes, GAT heads, GAT features per head)
GRAPH = (2000, 20000, 64, 64, 16, 8, 8)
TINY_GRAPH = (12, 30, 4, 4, 3, 2, 2)


def _problem(nodes, edges, f_in, hidden, classes, heads, per_head):
    """Host arrays: the edges, features, GCN and GAT parameters and the cotangents."""
    rng = np.random.default_rng(0)
    ei = np.stack([rng.integers(0, nodes, edges), rng.integers(0, nodes, edges)])

    def glorot(*shape):
        bound = np.sqrt(6.0 / (shape[0] + shape[-1]))
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    gcn = {"w1": glorot(hidden, f_in), "b1": np.zeros(hidden, np.float32),
           "w2": glorot(classes, hidden), "b2": np.zeros(classes, np.float32)}
    gat = {"w": glorot(heads * per_head, f_in), "att_src": glorot(heads, per_head),
           "att_dst": glorot(heads, per_head), "b": np.zeros(heads * per_head, np.float32)}
    return {"edge_index": ei, "x": rng.standard_normal((nodes, f_in)).astype(np.float32),
            "gcn": gcn, "gat": gat, "heads": heads,
            "dy_gcn": rng.standard_normal((nodes, classes)).astype(np.float32),
            "dy_gat": rng.standard_normal((nodes, heads * per_head)).astype(np.float32)}


def _edges(prob, kind):
    """(src, dst, w): GCN's edges with remaining self loops and normalised weights, or GAT's
    edges (loops replaced by one per node, w None). Host arrays, built once."""
    n = prob["x"].shape[0]
    if kind == "gcn":
        ei, w = F.gcn_norm_edges(prob["edge_index"], n, dtype=np.float32)
        return ei[0], ei[1], gd.to_numpy(w)
    ei = F.add_self_loops(F.remove_self_loops(prob["edge_index"]), n)
    return ei[0], ei[1], None


# ----------------------------------------------------------------------------- gpudl
def _gpudl_fns(prob, dev):
    """{(bench, impl): fn} for the plans (F.gcn_conv, F.gat_conv) and the scatter composite."""
    put = lambda tree: gd.to_device(tree, dev)  # noqa: E731
    x, ei = put(prob["x"]), put(prob["edge_index"])
    gcn_p, gat_p, heads = put(prob["gcn"]), put(prob["gat"]), prob["heads"]
    dy_gcn, dy_gat = put(prob["dy_gcn"]), put(prob["dy_gat"])
    n = prob["x"].shape[0]
    src, dst, w = (put(a) if a is not None else None for a in _edges(prob, "gcn"))
    gsrc, gdst, _ = (put(a) if a is not None else None for a in _edges(prob, "gat"))

    def gcn(p):
        h = F.relu(F.gcn_conv(x, ei, p["w1"], p["b1"]))
        return ops.sum(F.gcn_conv(h, ei, p["w2"], p["b2"]) * dy_gcn)

    def gat(p):
        out = F.gat_conv(x, ei, p["w"], p["att_src"], p["att_dst"], p["b"], num_heads=heads)
        return ops.sum(out * dy_gat)

    def scatter_prop(h):  # the pre-plan message passing: gather, scale, scatter-add
        return ops.segment_sum(ops.take(h, src, axis=0) * ops.reshape(w, (-1, 1)), dst, n)

    def gcn_composite(p):
        h = F.relu(scatter_prop(ops.matmul(x, ops.transpose(p["w1"]))) + p["b1"])
        return ops.sum((scatter_prop(ops.matmul(h, ops.transpose(p["w2"]))) + p["b2"]) * dy_gcn)

    def gat_composite(p):
        hf = p["w"].shape[0]
        h = ops.reshape(ops.matmul(x, ops.transpose(p["w"])), (n, heads, hf // heads))
        e = F.leaky_relu(ops.take(ops.sum(h * p["att_src"], axis=-1), gsrc, axis=0)
                         + ops.take(ops.sum(h * p["att_dst"], axis=-1), gdst, axis=0), 0.2)
        xp = gd.get_array_module(x)
        m = xp.full((n, heads), -np.inf, dtype=np.float32)
        xp.maximum.at(m, gdst, unbox_all(e))  # the softmax shift: no gradient through it
        ex = ops.exp(e - m[gdst])
        alpha = ex / ops.take(ops.segment_sum(ex, gdst, n), gdst, axis=0)
        msgs = ops.take(h, gsrc, axis=0) * ops.expand_dims(alpha, -1)
        return ops.sum((ops.reshape(ops.segment_sum(msgs, gdst, n), (n, hf)) + p["b"]) * dy_gat)

    g = {k: gd.grad(f) for k, f in (("gcn", gcn), ("gat", gat), ("gcn_c", gcn_composite),
                                     ("gat_c", gat_composite))}
    return {("gcn2_fwd_bwd", "gpudl"): lambda: g["gcn"](gcn_p),
            ("gcn2_fwd_bwd", "gpudl-composite"): lambda: g["gcn_c"](gcn_p),
            ("gat_fwd_bwd", "gpudl"): lambda: g["gat"](gat_p),
            ("gat_fwd_bwd", "gpudl-composite"): lambda: g["gat_c"](gat_p)}


# ----------------------------------------------------------------------------- torch
def _torch_fns(prob, dev):
    import torch

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    n = prob["x"].shape[0]
    x, dy_gcn, dy_gat = t(prob["x"]), t(prob["dy_gcn"]), t(prob["dy_gat"])
    gcn_p = {k: t(v).requires_grad_(True) for k, v in prob["gcn"].items()}
    gat_p = {k: t(v).requires_grad_(True) for k, v in prob["gat"].items()}
    src, dst, w = (t(a) for a in _edges(prob, "gcn"))
    src, dst = src.long(), dst.long()
    gsrc, gdst = (t(a).long() for a in _edges(prob, "gat")[:2])
    heads = prob["heads"]
    with warnings.catch_warnings():  # torch: "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        adj = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n, n)).coalesce()
        adj = adj.to_sparse_csr()
    w_col = w.unsqueeze(1)

    def index_add(h):
        return torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(
            0, dst, h[src] * w_col)

    def gcn(prop):
        p = gcn_p
        h = torch.relu(prop(x @ p["w1"].T) + p["b1"])
        loss = ((prop(h @ p["w2"].T) + p["b2"]) * dy_gcn).sum()
        return torch.autograd.grad(loss, list(p.values()))

    def gat():
        p = gat_p
        hf = p["w"].shape[0]
        h = (x @ p["w"].T).view(n, heads, hf // heads)
        e = torch.nn.functional.leaky_relu((h * p["att_src"]).sum(-1)[gsrc]
                                           + (h * p["att_dst"]).sum(-1)[gdst], 0.2)
        idx = gdst.unsqueeze(1).expand(-1, heads)
        m = torch.full((n, heads), float("-inf"), device=x.device).scatter_reduce(
            0, idx, e.detach(), "amax")
        ex = (e - m[gdst]).exp()
        alpha = ex / torch.zeros(n, heads, device=x.device).index_add_(0, gdst, ex)[gdst]
        out = torch.zeros(n, heads, hf // heads, device=x.device).index_add_(
            0, gdst, h[gsrc] * alpha.unsqueeze(-1))
        loss = ((out.reshape(n, hf) + p["b"]) * dy_gat).sum()
        return torch.autograd.grad(loss, list(p.values()))

    return {("gcn2_fwd_bwd", "torch-csr"): lambda: gcn(lambda h: adj @ h),
            ("gcn2_fwd_bwd", "torch-index-add"): lambda: gcn(index_add),
            ("gat_fwd_bwd", "torch-index-add"): gat}



def _paired_ratio(fn_a, fn_b, pairs: int) -> float:
    """Median of per-pair time ratios a/b, the pair's order alternating (CPU only)."""
    ratios = []
    for i in range(pairs):
        times = {}
        for name, fn in (("a", fn_a), ("b", fn_b)) if i % 2 == 0 else (("b", fn_b), ("a", fn_a)):
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        ratios.append(times["a"] / times["b"])
    return float(np.median(ratios))


# ----------------------------------------------------------------------------- driver
def _rows(graph, device, device_name, torch_ok, repeats, warmup, pairs) -> list[dict]:
    nodes, edges, f_in, hidden, classes, heads, per_head = graph
    prob = _problem(*graph)
    fns = _gpudl_fns(prob, device)
    if torch_ok:
        fns.update(_torch_fns(prob, device))
    rows = []
    for bench in ("gcn2_fwd_bwd", "gat_fwd_bwd"):
        base = {"bench": bench, "device": device, "device_name": device_name,
                "dtype": "float32", "nodes": nodes, "edges": edges, "features": f_in,
                "out": f"{hidden}x{classes}" if bench.startswith("gcn") else f"{heads}x{per_head}"}
        found = {}
        for (b, impl), fn in fns.items():
            if b == bench:
                clock = "torch" if impl.startswith("torch") else "events"
                found[impl] = {**base, "impl": impl, **common.time_row(
                    fn, device, warmup=warmup, repeats=repeats, clock=clock)}
        torch_rows = [r for r in found.values() if r["impl"].startswith("torch")]
        if torch_rows:
            best = min(torch_rows, key=lambda r: r["median_s"])
            for impl, r in found.items():
                if impl.startswith("gpudl"):
                    r["time_vs_torch"] = r["median_s"] / best["median_s"]
                    if device == "cpu" and pairs:
                        r["paired_vs_torch"] = _paired_ratio(
                            fns[(bench, impl)], fns[(bench, best["impl"])], pairs)
                        r["torch_ref"] = best["impl"]
        rows += found.values()
    return rows


def run(report: dict) -> list[dict]:
    """Time every available implementation; returns one dict per (bench, impl)."""
    quick, tiny = bool(report.get("quick", False)), bool(report.get("tiny", False))
    notes = report.setdefault("notes", [])
    usable, reason, device_name = common.cuda_device()
    graph = TINY_GRAPH if tiny else GRAPH
    warmup = 2 if tiny else 3
    torch_missing = common.torch_status(usable)
    if torch_missing:
        notes.append(f"kernels_graph: torch rows skipped ({torch_missing})")
    if usable:
        with gd.device("cuda"):
            return _rows(graph, "cuda", device_name, not torch_missing,
                         common.TINY_REPEATS if tiny else 50, warmup, 0)
    notes.append(f"kernels_graph: GPU rows unavailable ({reason}); timed the CPU bodies")
    if not torch_missing:
        notes.append("kernels_graph: torch CPU timed with torch.set_num_threads(1), as "
                     "single-threaded NumPy; gpudl/torch = median of per-pair ratios")
    repeats = common.TINY_REPEATS if tiny else 7 if quick else 15
    pairs = 0 if tiny else 9 if quick else 21
    with gd.device("cpu"), common.torch_threads(None if torch_missing else 1):
        rows = _rows(graph, "cpu", "cpu", not torch_missing, repeats, warmup, pairs)
    rows.append(common.unavailable_row("gcn2_fwd_bwd", reason))
    return rows


def _vs_torch(row: dict) -> str:
    v = row.get("paired_vs_torch", row.get("time_vs_torch"))
    return "-" if v is None else f"{v:.2f}x"


COLUMNS = common.kernel_columns(
    12, [("bench", "bench", "14s"), ("impl", "impl", "16s")], digits=3,
    throughput=[("gpudl/torch", _vs_torch, "11s")])


def main(argv=None) -> int:
    return common.kernel_main(run, COLUMNS, __doc__, argv, quick_help="fewer repeats and pairs")


if __name__ == "__main__":
    sys.exit(main())
