"""Graph ops against dense/loop float64 references: GCN normalization, message passing,
segment reductions and readouts, segment softmax and GAT."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ConfigError, DTypeError, ShapeError
from gpudl.functional import graph as G
from gpudl.testing import check_grad


def host(a):
    return gd.to_numpy(a)


EDGES = np.array([[0, 1, 1, 2, 3, 3, 0], [1, 0, 2, 1, 1, 2, 3]])  # source; target
N = 5  # node 4 is isolated


def dense_adjacency(edge_index, n, weights=None):
    a = np.zeros((n, n))  # a[target, source]
    for e, (s, t) in enumerate(edge_index.T):
        a[t, s] += 1.0 if weights is None else weights[e]
    return a


def test_gcn_norm_adjacency(device, xp, rng):
    a = (rng.uniform(size=(5, 5)) > 0.5).astype(float)
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0)
    a[4, :] = a[:, 4] = 0  # isolated node
    got = host(G.gcn_norm_adjacency(xp.asarray(a)))
    ah = a + np.eye(5)
    ref = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            ref[i, j] = ah[i, j] / math.sqrt(ah[i].sum() * ah[j].sum())
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    no_loops = host(G.gcn_norm_adjacency(xp.asarray(a), add_self_loops=False))
    assert np.isfinite(no_loops).all() and not no_loops[4].any()
    w = rng.standard_normal((3, 2))
    x = rng.standard_normal((5, 2))
    check_grad(
        lambda v, ww, b: G.gcn_conv(v, G.gcn_norm_adjacency(a), ww, b), x, w, rng.standard_normal(3)
    )
    with pytest.raises(ShapeError, match="square"):
        G.gcn_norm_adjacency(np.ones((2, 3)))


def test_sparse_gcn_equals_dense(rng):
    und = np.concatenate([EDGES, EDGES[::-1]], axis=1)  # symmetric graph
    x = rng.standard_normal((N, 3))
    ei, w = G.gcn_norm_edges(und, N, dtype=np.float64)
    sparse = G.message_passing(x, ei, w)
    dense = G.gcn_norm_adjacency(dense_adjacency(und, N)) @ x
    np.testing.assert_allclose(sparse, dense, rtol=1e-12)
    check_grad(lambda v: G.message_passing(v, ei, w), x)


def test_sparse_gcn_conv_equals_dense(device, xp, rng):
    """F.gcn_conv on an edge_index (PyG's GCNConv: weighted, one loop per node) equals the
    dense form on gcn_norm_adjacency of the same weighted adjacency, values and gradients."""
    und = np.concatenate([LOOPED_AND_EDGES, LOOPED_AND_EDGES[::-1]], axis=1)
    ew = rng.uniform(0.5, 2.0, und.shape[1])
    x, w, b = rng.standard_normal((N, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    a = dense_adjacency(und, N, ew)
    # PyG keeps one loop per node with the last loop edge's weight (here node 1's).
    loops = [e for e in range(und.shape[1]) if und[0, e] == und[1, e]]
    a[1, 1] = ew[loops[-1]]
    dense = G.gcn_conv(x, G.gcn_norm_adjacency(a), w, b)
    got = G.gcn_conv(*(xp.asarray(t) for t in (x, und, w, b)), edge_weight=xp.asarray(ew))
    np.testing.assert_allclose(host(got), dense, rtol=1e-12)
    unit = G.gcn_conv(xp.asarray(x), xp.asarray(und), xp.asarray(w))  # cached unit weights
    a_unit = dense_adjacency(und, N)  # repeated edges add up; the two loops become one
    a_unit[1, 1] = 1.0
    np.testing.assert_allclose(host(unit), G.gcn_conv(x, G.gcn_norm_adjacency(a_unit), w),
                               rtol=1e-12)
    if device == "cpu":
        check_grad(lambda v, ww, e: G.gcn_conv(v, und, ww, edge_weight=e), x, w, ew)
    with pytest.raises(ConfigError, match="edge_weight goes with an edge_index"):
        G.gcn_conv(x, G.gcn_norm_adjacency(a), w, edge_weight=ew)


@pytest.mark.parametrize("aggr", ["sum", "mean", "max"])
def test_message_passing(aggr, device, xp, rng):
    x = rng.standard_normal((N, 2))
    ew = rng.uniform(0.5, 1.5, size=EDGES.shape[1])
    got = host(G.message_passing(xp.asarray(x), xp.asarray(EDGES), xp.asarray(ew), aggr=aggr))
    ref = np.zeros((N, 2))
    for t in range(N):
        msgs = [x[s] * ew[e] for e, (s, tt) in enumerate(EDGES.T) if tt == t]
        if msgs:
            ref[t] = {"sum": np.sum, "mean": np.mean, "max": np.max}[aggr](msgs, axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    check_grad(lambda v, w: G.message_passing(v, EDGES, w, aggr=aggr), x, ew)


def test_segment_max_gradient_goes_to_argmax_and_splits_ties():
    data = np.array([[1.0], [3.0], [3.0], [-2.0]])
    ids = np.array([0, 0, 0, 2])
    out = G.segment_max(data, ids, 3)
    assert out.tolist() == [[3.0], [0.0], [-2.0]]  # empty segment 1 gives 0
    g = gd.grad(lambda d: (G.segment_max(d, ids, 3) * np.array([[2.0], [5.0], [1.0]])).sum())(data)
    assert g.tolist() == [[0.0], [1.0], [1.0], [1.0]]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_readout(reduce, device, xp, rng):
    x = rng.standard_normal((6, 3))
    batch = np.array([0, 0, 1, 1, 1, 2])
    got = host(G.readout(xp.asarray(x), xp.asarray(batch), 3, reduce))
    fn = {"sum": np.sum, "mean": np.mean, "max": np.max}[reduce]
    ref = np.stack([fn(x[batch == b], axis=0) for b in range(3)])
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    check_grad(lambda v: G.readout(v, batch, 3, reduce), x)


def test_segment_softmax(device, xp, rng):
    s = rng.standard_normal((7, 2)) * 5
    ids = np.array([1, 1, 0, 1, 3, 3, 0])
    got = host(G.segment_softmax(xp.asarray(s), xp.asarray(ids), 4))
    ref = np.zeros_like(s)
    for seg in range(4):
        rows = np.nonzero(ids == seg)[0]
        for h in range(2):
            e = [math.exp(s[r, h]) for r in rows]
            for r, v in zip(rows, e, strict=False):
                ref[r, h] = v / sum(e)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    check_grad(lambda v: G.segment_softmax(v, ids, 4), s)


def test_gat_conv_against_loop(device, xp, rng):
    heads, f_in, f_out = 2, 3, 4
    x = rng.standard_normal((N, f_in))
    w = rng.standard_normal((heads * f_out, f_in))
    a_s, a_d = rng.standard_normal((heads, f_out)), rng.standard_normal((heads, f_out))
    bias = rng.standard_normal(heads * f_out)
    got = host(G.gat_conv(*(xp.asarray(t) for t in (x, EDGES, w, a_s, a_d, bias)), num_heads=heads))
    h = (x @ w.T).reshape(N, heads, f_out)
    edges = list(map(tuple, EDGES.T)) + [(i, i) for i in range(N)]
    ref = np.zeros((N, heads, f_out))
    for i in range(N):
        srcs = [s for s, t in edges if t == i]
        for hd in range(heads):
            e = []
            for j in srcs:
                z = a_s[hd] @ h[j, hd] + a_d[hd] @ h[i, hd]
                e.append(z if z > 0 else 0.2 * z)
            m = max(e)
            alpha = [math.exp(v - m) for v in e]
            for j, al in zip(srcs, alpha, strict=False):
                ref[i, hd] += al / sum(alpha) * h[j, hd]
    np.testing.assert_allclose(got, ref.reshape(N, -1) + bias, rtol=1e-10)
    mean = host(
        G.gat_conv(*(xp.asarray(t) for t in (x, EDGES, w, a_s, a_d)), num_heads=heads, concat=False)
    )
    np.testing.assert_allclose(mean, ref.mean(axis=1), rtol=1e-10)
    check_grad(lambda v, ww, s, d: G.gat_conv(v, EDGES, ww, s, d, num_heads=heads), x, w, a_s, a_d)


def test_graph_errors():
    x = np.ones((3, 2))
    with pytest.raises(IndexError, match=r"edge_index entries must lie in \[0, 3\).*\[0, 5\]"):
        G.message_passing(x, np.array([[0, 5], [1, 2]]))
    with pytest.raises(ShapeError, match=r"edge_index must be \(2, E\)"):
        G.message_passing(x, np.array([0, 1, 2]))
    with pytest.raises(DTypeError, match="must be integers"):
        G.readout(x, np.array([0.0, 1.0, 1.0]), 2)
    with pytest.raises(ValueError, match="aggr must be"):
        G.message_passing(x, np.array([[0], [1]]), aggr="min")


# A graph with an explicit self loop on node 1 (0 <-> 1, 2 -> 1, 1 -> 1): PyG's GCNConv
# and GATConv count that loop once, not once more on top of the loop they add.
LOOPED = np.array([[0, 1, 1, 2], [1, 0, 1, 1]])
LOOPED_AND_EDGES = np.concatenate([EDGES, [[1], [1]]], axis=1)  # EDGES plus a loop 1 -> 1


def test_gcn_norm_edges_keeps_one_loop_per_node_as_pyg():
    ei, w = G.gcn_norm_edges(LOOPED, 3, dtype=np.float64)
    # add_remaining_self_loops: the explicit 1 -> 1 goes, loops 0, 1, 2 come last.
    assert ei.tolist() == [[0, 1, 2, 0, 1, 2], [1, 0, 1, 0, 1, 2]]
    # In-degrees with one loop each: node 0 {1, 0} = 2, node 1 {0, 2, 1} = 3, node 2 {2} = 1.
    s = math.sqrt
    np.testing.assert_allclose(
        w, [1 / s(2 * 3), 1 / s(3 * 2), 1 / s(1 * 3), 1 / 2, 1 / 3, 1.0], rtol=1e-12)
    x = np.array([[1.0], [10.0], [100.0]])
    out = G.message_passing(x, ei, w)
    np.testing.assert_allclose(out[:, 0], [10 / s(6) + 1 / 2,
                                           1 / s(6) + 100 / s(3) + 10 / 3, 100.0], rtol=1e-12)
    # Dense form: a diagonal entry already there is kept, not incremented.
    np.testing.assert_allclose(G.gcn_norm_adjacency(dense_adjacency(LOOPED, 3)) @ x, out,
                               rtol=1e-12)


def test_add_remaining_self_loops_keeps_the_loop_weight():
    ew = np.array([1.0, 2.0, 5.0, 3.0])
    ei, w = G.add_remaining_self_loops(LOOPED, 3, ew)
    assert ei.tolist() == [[0, 1, 2, 0, 1, 2], [1, 0, 1, 0, 1, 2]]
    assert w.tolist() == [1.0, 2.0, 3.0, 1.0, 5.0, 1.0]
    check_grad(lambda v: G.gcn_norm_edges(LOOPED, 3, v)[1], ew)
    assert G.remove_self_loops(LOOPED).tolist() == [[0, 1, 2], [1, 0, 1]]


def test_gat_conv_counts_an_existing_self_loop_once():
    x = np.array([[1.0], [2.0], [3.0]])
    one = np.ones((1, 1))
    # h = x, e_ij = leaky_relu(h_j) = h_j: node 1 attends to nodes 0, 1, 2 once each.
    got = G.gat_conv(x, LOOPED, one, one, np.zeros((1, 1)))
    e = np.exp([1.0, 2.0, 3.0])
    assert got[1, 0] == pytest.approx((e @ [1.0, 2.0, 3.0]) / e.sum(), rel=1e-12)
    doubled = np.concatenate([LOOPED, [[1], [1]]], axis=1)  # a second loop changes nothing
    np.testing.assert_allclose(G.gat_conv(x, doubled, one, one, np.zeros((1, 1))), got)
    no_loop = G.remove_self_loops(LOOPED)
    np.testing.assert_allclose(G.gat_conv(x, no_loop, one, one, np.zeros((1, 1))), got)


def test_self_loop_handling_on_each_device(device, xp):
    ew = xp.asarray([1.0, 2.0, 5.0, 3.0, 7.0])
    looped = xp.asarray(np.concatenate([LOOPED, [[1], [1]]], axis=1))  # two loops on node 1
    ei, w = G.add_remaining_self_loops(looped, 3, ew)
    assert host(ei).tolist() == [[0, 1, 2, 0, 1, 2], [1, 0, 1, 0, 1, 2]]
    assert host(w).tolist() == [1.0, 2.0, 3.0, 1.0, 7.0, 1.0]  # the last loop's weight
    adj = dense_adjacency(LOOPED, 3)
    np.testing.assert_allclose(host(G.gcn_norm_adjacency(xp.asarray(adj))),
                               G.gcn_norm_adjacency(adj), rtol=1e-12)
