"""CSR plans (gpudl/functional/_graph_structure.py, kernels/graph.cu): the products
against naive float64 loops on both CPU paths (scipy and np.add.reduceat), gradients
(``GRAD_CASES``, run by tests/test_registry.py) and grad of grad, the plan cache
(content-keyed: an equal copy reuses the plan, an in-place change or another array of the
same shape does not), and on the ``cuda`` device (a GPU, or the CPU kernel emulator under
``GPUDL_EMULATE_GPU=1``) the graph.cu kernels against the twin."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError, ShapeError
from gpudl.functional import _graph_kernels as K
from gpudl.functional import _graph_structure as S
from gpudl.functional import graph as G
from gpudl.testing import check_grad

# source -> target: 0 -> 1 twice, a loop 3 -> 3, node 4 has no in-edge, node 5 no edge.
SRC = np.array([0, 0, 2, 3, 1, 3, 2, 0, 1])
DST = np.array([1, 1, 1, 0, 2, 3, 3, 2, 0])
EDGES = np.stack([SRC, DST])
N = 6


def plans(device="cpu"):
    return S.graph_plans(gd.to_device(EDGES, device), N, device, "test")


def ref_sum(x, w=None):
    """out[dst] += w[e] * x[src], edge by edge, float64 (w (E,) or (E, H) per head)."""
    out = np.zeros((N,) + x.shape[1:])
    for e, (s, t) in enumerate(zip(SRC, DST, strict=True)):
        scale = 1.0 if w is None else w[e]
        out[t] += (scale[:, None] if np.ndim(scale) else scale) * x[s]
    return out


def ref_max(per_edge, fill):
    """Maximum of the edge values (E, ...) arriving at each node; ``fill`` where none."""
    out = np.full((N,) + per_edge.shape[1:], fill)
    for t in range(N):
        rows = [per_edge[e] for e in range(SRC.size) if DST[e] == t]
        if rows:
            out[t] = np.max(rows, axis=0)  # propagates NaN, as np.maximum
    return out


@pytest.fixture(params=[True, False], ids=["scipy", "reduceat"])
def cpu_path(request, monkeypatch):
    """Both CPU bodies: scipy's CSR product, and the reduceat path a machine without scipy
    runs."""
    if request.param:
        pytest.importorskip("scipy")
    monkeypatch.setattr(K, "USE_SCIPY", request.param)
    return request.param


def test_plan_layout_keeps_edge_order_within_a_row():
    agg = plans().agg
    assert agg.indptr.tolist() == [0, 2, 5, 7, 9, 9, 9]
    # Row 1 (target 1) holds edges 0, 1, 2 in their order; wid names the edge.
    assert agg.wid[2:5].tolist() == [0, 1, 2] and agg.col[2:5].tolist() == [0, 0, 2]
    assert agg.T.T is agg and agg.gather_rows.T.T is agg.gather_rows
    assert agg.T.indptr.tolist() == [0, 3, 5, 7, 9, 9, 9]  # out-degrees by source


def test_products_match_loops(cpu_path, rng):
    gp = plans()
    x = rng.standard_normal((N, 3))
    w = rng.uniform(0.5, 2.0, SRC.size)
    np.testing.assert_allclose(S.csr_sum(x, plan=gp.agg), ref_sum(x), rtol=1e-12)
    np.testing.assert_allclose(S.csr_weighted_sum(x, w, plan=gp.agg), ref_sum(x, w), rtol=1e-12)
    heads = rng.standard_normal((N, 2, 3))
    alpha = rng.standard_normal((SRC.size, 2))
    np.testing.assert_allclose(S.csr_weighted_sum(heads, alpha, plan=gp.agg),
                               ref_sum(heads, alpha), rtol=1e-12)
    # The transpose sends target values back to the sources: out[src] += w[e] * g[dst].
    g = rng.standard_normal((N, 3))
    back = np.zeros((N, 3))
    for e, (s, t) in enumerate(zip(SRC, DST, strict=True)):
        back[s] += w[e] * g[t]
    np.testing.assert_allclose(S.csr_weighted_sum(g, w, plan=gp.agg.T), back, rtol=1e-12)
    # Gathers and the per-target sum of edge values.
    np.testing.assert_array_equal(S.csr_sum(x, plan=gp.gather_src), x[SRC])
    np.testing.assert_array_equal(S.csr_sum(x, plan=gp.gather_dst), x[DST])
    per_edge = rng.standard_normal((SRC.size, 2))
    seg = np.zeros((N, 2))
    np.add.at(seg, DST, per_edge)
    np.testing.assert_allclose(S.csr_sum(per_edge, plan=gp.seg), seg, rtol=1e-12)
    xm = x.copy()
    xm[2, 1] = np.nan
    np.testing.assert_array_equal(S.csr_max(xm[SRC], gp.seg, -np.inf), ref_max(xm[SRC], -np.inf))


def test_empty_graphs_and_features(cpu_path):
    x, no_edges = np.ones((3, 2)), np.zeros((2, 0), np.int64)
    for aggr in ("sum", "mean", "max"):
        assert G.message_passing(x, no_edges, aggr=aggr).tolist() == [[0.0, 0.0]] * 3
    assert G.gcn_conv(x, no_edges, np.eye(2)).tolist() == [[1.0, 1.0]] * 3  # loops only
    att = np.ones((1, 2))
    assert G.gat_conv(x, no_edges, np.eye(2), att, att).tolist() == [[1.0, 1.0]] * 3
    grad = gd.grad(lambda v: gd.ops.sum(G.gat_conv(v, no_edges, np.eye(2), att, att,
                                                   self_loops=False)))(x)
    assert grad.tolist() == [[0.0, 0.0]] * 3
    none = np.ones((0, 2))  # no nodes at all
    assert G.gcn_conv(none, no_edges, np.eye(2)).shape == (0, 2)
    assert G.message_passing(np.ones((3, 0)), EDGES[:, :2] % 3).shape == (3, 0)
    assert G.readout(x, np.array([0, 0, 2]), 4, "max").tolist() == [[1.0, 1.0], [0.0, 0.0],
                                                                     [1.0, 1.0], [0.0, 0.0]]


def test_scipy_and_reduceat_paths_agree(monkeypatch, rng):
    pytest.importorskip("scipy")
    x = rng.standard_normal((N, 4)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, SRC.size).astype(np.float32)

    def run():
        return (G.message_passing(x, EDGES, w), G.gcn_conv(x, EDGES, np.eye(4, dtype=np.float32)),
                G.gat_conv(x, EDGES, np.eye(4, dtype=np.float32), np.ones((2, 2), np.float32),
                           np.ones((2, 2), np.float32), num_heads=2))

    with_scipy = run()
    monkeypatch.setattr(K, "USE_SCIPY", False)
    for a, b in zip(with_scipy, run(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _grad_graph():
    return plans().agg


GRAD_CASES = {  # float64, non-contiguous inputs; run by tests/test_registry.py
    "graph_csr_sum": [
        lambda: (lambda x: S.csr_sum(x, plan=_grad_graph()),
                 (np.random.default_rng(1).standard_normal((N, 6))[:, ::2],)),
        lambda: (lambda x: S.csr_sum(x, plan=_grad_graph().gather_cols),
                 (np.random.default_rng(2).standard_normal((N, 2)),)),
    ],
    "graph_csr_weighted_sum": [
        lambda: (lambda x, w: S.csr_weighted_sum(x, w, plan=_grad_graph()),
                 (np.random.default_rng(3).standard_normal((N, 4))[:, ::2],
                  np.random.default_rng(4).uniform(0.5, 2.0, 2 * SRC.size)[::2])),
        lambda: (lambda x, w: S.csr_weighted_sum(x, w, plan=_grad_graph().T),
                 (np.random.default_rng(5).standard_normal((N, 2, 3)),
                  np.random.default_rng(6).standard_normal((SRC.size, 2)))),
    ],
}


def test_grad_of_grad(rng):
    agg = plans().agg
    x, w = rng.standard_normal((N, 2)), rng.uniform(0.5, 2.0, SRC.size)

    def inner(v, ww):
        return gd.grad(lambda a, b: gd.ops.sum(S.csr_weighted_sum(a, b, plan=agg) ** 2),
                       argnums=(0, 1))(v, ww)

    check_grad(lambda v, ww: inner(v, ww)[0], x, w)
    check_grad(lambda v, ww: inner(v, ww)[1], x, w)


# ----------------------------------------------------------------------------- the cache
def test_cache_reuses_equal_content_and_never_a_changed_one(rng):
    S.clear_cache()
    ei = EDGES.copy()
    first = S.graph_plans(ei, N, "cpu", "test")
    assert S.graph_plans(ei.copy(), N, "cpu", "test") is first  # equal content: reused
    assert S.graph_plans(ei, N + 1, "cpu", "test") is not first  # another node count
    x = rng.standard_normal((N, 2))
    before = G.message_passing(x, ei)
    ei[0, 0] = 5  # the same array object, changed in place: a new plan
    src = SRC.copy()
    src[0] = 5
    expected = np.zeros((N, 2))
    np.add.at(expected, DST, x[src])
    np.testing.assert_allclose(G.message_passing(x, ei), expected, rtol=1e-12)
    assert not np.allclose(before, expected)
    # The plans were built from a private copy: the caller's change did not reach them.
    assert first.edge_index.tolist() == EDGES.tolist()
    # Same shape, dtype and (after `del`, possibly) address, other content: never reused.
    for shift in range(1, 4):
        other = np.stack([(SRC + shift) % N, DST])
        np.testing.assert_allclose(G.message_passing(x, other), ref_sum(np.roll(x, -shift, 0)),
                                   rtol=1e-12)
        del other


def test_cache_is_bounded():
    S.clear_cache()
    for k in range(S.CACHE_SIZE + 3):
        S.graph_plans(np.array([[k % N], [0]]), N + k, "cpu", "test")
    assert len(S._cache) == S.CACHE_SIZE
    S.clear_cache()
    assert not S._cache


def test_frozen_weights_keep_their_matrix_and_others_do_not(rng):
    pytest.importorskip("scipy")
    agg = plans().agg
    x = rng.standard_normal((N, 2))
    w = rng.uniform(0.5, 2.0, SRC.size)
    S.csr_weighted_sum(x, w, plan=agg)
    w[3] = 7.0  # a writeable array changed in place: the next product sees it
    np.testing.assert_allclose(S.csr_weighted_sum(x, w, plan=agg), ref_sum(x, w), rtol=1e-12)
    frozen = w.copy()
    frozen.flags.writeable = False
    S.csr_weighted_sum(x, frozen, plan=agg)
    kept = agg.host["frozen"][2]
    np.testing.assert_allclose(S.csr_weighted_sum(x, frozen, plan=agg), ref_sum(x, w), rtol=1e-12)
    assert agg.host["frozen"][2] is kept
    half = np.concatenate([w, w])
    half.flags.writeable = False
    np.testing.assert_allclose(S.csr_weighted_sum(x, half[SRC.size:], plan=agg),
                               ref_sum(x, w), rtol=1e-12)  # another view of an owner: rebuilt
    assert agg.host["frozen"][2] is not kept


def test_plan_errors():
    agg = plans().agg
    with pytest.raises(ShapeError, match=r"x must have 6 rows.*\(5, 2\)"):
        S.csr_sum(np.ones((5, 2)), plan=agg)
    with pytest.raises(ShapeError, match=r"weights must be \(9,\)"):
        S.csr_weighted_sum(np.ones((N, 2)), np.ones(8), plan=agg)
    with pytest.raises(ShapeError, match="int32"):
        S.build_plan(np.array([0]), np.array([0]), 2**31, 1)
    with pytest.raises(DTypeError, match="edge_index entries must be integers"):
        S.graph_plans(EDGES.astype(float), N, "cpu", "message_passing")
    with pytest.raises(ShapeError, match=r"segment_mean: segment_ids must be 1-D"):
        G.segment_mean(np.ones((2, 1)), np.zeros((2, 1), np.int64), 1)
    with pytest.raises(ShapeError, match=r"segment_max: data must have one row per id \(3,"):
        G.segment_max(np.ones((2, 1)), np.array([0, 0, 1]), 2)
    with pytest.raises(DTypeError, match="message_passing: x has dtype float16; graph ops take float32"):
        G.message_passing(np.ones((N, 2), np.float16), EDGES)
    with pytest.raises(ShapeError, match=r"message_passing: x must be \(num_nodes, \.\.\.\) "
                                         r"with num_nodes = 7"):
        G.message_passing(np.ones((N, 2)), EDGES, num_nodes=7)


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_twin(device, dtype, rng):
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12}
    # A hub with 40 in-edges (a long row), an empty row, and the small graph's rows.
    hub_src = rng.integers(0, N, 40)
    src = np.concatenate([SRC, hub_src])
    dst = np.concatenate([DST, np.full(40, 5)])
    ei = np.stack([src, dst])
    gp_cpu = S.graph_plans(ei, N, "cpu", "test")
    gp = S.graph_plans(gd.to_device(ei, device), N, device, "test")
    x = rng.standard_normal((N, 3)).astype(dtype)
    heads = rng.standard_normal((N, 2, 3)).astype(dtype)
    w = rng.standard_normal((src.size, 2)).astype(dtype)
    vals = rng.standard_normal((src.size, 3)).astype(dtype)
    vals[4, 1] = np.nan  # csr_max keeps a NaN

    def both(fn, *arrays):
        got = gd.to_numpy(fn(gp, *(gd.to_device(a, device) for a in arrays)))
        np.testing.assert_allclose(got, fn(gp_cpu, *arrays), **tol)
        assert got.dtype == dtype

    both(lambda p, v: S.csr_sum(v, plan=p.agg), x)
    both(lambda p, v: S.csr_sum(v, plan=p.agg.T), x)
    both(lambda p, v: S.csr_sum(v, plan=p.gather_src), x)
    both(lambda p, v, ww: S.csr_weighted_sum(v, ww, plan=p.agg), heads, w)
    both(lambda p, v, ww: S.csr_weighted_sum(v, ww[:, 0], plan=p.agg.T), x, w)
    both(lambda p, v: S.csr_max(v, p.seg, -np.inf), vals)
    both(lambda p, v: S.csr_max(v, p.seg, 0.0), vals[:, :1])
    # No edges: every row empty, a launch over an empty column list.
    empty = np.zeros((2, 0), np.int64)
    gpe = S.graph_plans(gd.to_device(empty, device), N, device, "test")
    zeros = gd.to_numpy(S.csr_sum(gd.to_device(x, device), plan=gpe.agg))
    assert zeros.shape == (N, 3) and not zeros.any()


def test_gradients_on_device_match_cpu(device, rng):
    x = rng.standard_normal((N, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    ew = rng.uniform(0.5, 2.0, SRC.size).astype(np.float32)
    att = rng.standard_normal((2, 1)).astype(np.float32)

    def loss(v, ww, e, a):
        gcn = G.gcn_conv(v, EDGES, ww, edge_weight=e)
        gat = G.gat_conv(v, EDGES, ww, a, a * 0.5, num_heads=2)
        mp = G.message_passing(v, EDGES, e, aggr="max")
        return (gd.ops.sum(gcn ** 2) + gd.ops.sum(gat * gat) + gd.ops.sum(mp)
                + gd.ops.sum(G.readout(v, np.array([0, 0, 1, 1, 1, 2]), 3, "mean") ** 2))

    grad = gd.grad(loss, argnums=(0, 1, 2, 3))
    on_cpu = grad(x, w, ew, att)
    on_dev = grad(*(gd.to_device(a, device) for a in (x, w, ew, att)))
    for a, b in zip(on_dev, on_cpu, strict=True):
        np.testing.assert_allclose(gd.to_numpy(a), b, rtol=1e-4, atol=1e-5)
    assert math.isfinite(float(gd.to_numpy(loss(x, w, ew, att))))
