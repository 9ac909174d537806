"""nn.GCNConv / nn.GATConv: PyG's parameter names and shapes, values equal to F.gcn_* /
F.gat_conv, gradients (float64), both input forms and the summary's MACs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import nn
from gpudl.errors import ConfigError, ShapeError
from gpudl.testing import check_grad

R = np.random.default_rng(5)
EI = np.array([[0, 1, 1, 2, 3, 3, 0, 2], [1, 0, 2, 1, 1, 2, 3, 2]])  # 2 -> 2: a self loop
N, FIN = 5, 3
X = R.standard_normal((N, FIN))
KEY = gd.random.key(0)


def test_gcn_conv_names_shapes_and_values():
    conv = nn.GCNConv(4)
    p, s = conv.init(KEY, (X, EI))
    assert s == {} and sorted(p) == ["bias", "lin"]
    assert p["lin"]["weight"].shape == (4, FIN) and p["bias"].shape == (4,)
    assert not p["bias"].any()
    bound = math.sqrt(6 / (FIN + 4))  # PyG: glorot
    assert np.abs(p["lin"]["weight"]).max() <= bound
    p = {"lin": {"weight": R.standard_normal((4, FIN))}, "bias": R.standard_normal(4)}
    y, _ = conv.apply(p, {}, (X, EI))
    ei, w = F.gcn_norm_edges(EI, N, dtype=np.float64)
    ref = F.message_passing(X @ p["lin"]["weight"].T, ei, w) + p["bias"]
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    adj = np.zeros((N, N))
    np.add.at(adj, (EI[1], EI[0]), 1.0)  # adj[target, source]
    dense = {"x": X, "a_hat": F.gcn_norm_adjacency(adj)}
    np.testing.assert_allclose(conv.apply(p, {}, dense)[0],
                               F.gcn_conv(X, dense["a_hat"], p["lin"]["weight"], p["bias"]),
                               rtol=1e-12)
    np.testing.assert_allclose(conv.apply(p, {}, dense)[0], y, rtol=1e-12)
    d, _ = conv.apply(p, {}, {"x": X, "edge_index": EI})
    np.testing.assert_allclose(d, y)
    ew = R.uniform(0.5, 2.0, EI.shape[1])
    yw, _ = conv.apply(p, {}, {"x": X, "edge_index": EI, "edge_weight": ew})
    ei, w = F.gcn_norm_edges(EI, N, ew)
    np.testing.assert_allclose(yw, F.message_passing(X @ p["lin"]["weight"].T, ei, w)
                               + p["bias"], rtol=1e-12)
    check_grad(lambda params, v: conv.apply(params, {}, (v, EI))[0], p, X)


def test_gcn_conv_options():
    p, _ = nn.GCNConv(2, bias=False).init(KEY, (X, EI))
    assert sorted(p) == ["lin"]
    y, _ = nn.GCNConv(2, bias=False, add_self_loops=False).apply(p, {}, (X, EI))
    ei, w = F.gcn_norm_edges(EI, N, self_loops=False, dtype=np.float64)
    np.testing.assert_allclose(y, F.message_passing(X @ p["lin"]["weight"].T, ei, w),
                               rtol=1e-12)


@pytest.mark.parametrize("heads, concat", [(1, True), (3, True), (2, False)])
def test_gat_conv_names_shapes_and_values(heads, concat):
    conv = nn.GATConv(4, heads=heads, concat=concat)
    p, _ = conv.init(KEY, (X, EI))
    width = heads * 4 if concat else 4
    assert {k: (v.shape if k != "lin" else v["weight"].shape) for k, v in p.items()} == {
        "lin": (heads * 4, FIN), "att_src": (1, heads, 4), "att_dst": (1, heads, 4),
        "bias": (width,)}
    assert np.abs(p["att_src"]).max() <= math.sqrt(6 / (heads + 4))
    p = {"lin": {"weight": R.standard_normal((heads * 4, FIN))},
         "att_src": R.standard_normal((1, heads, 4)), "att_dst": R.standard_normal((1, heads, 4)),
         "bias": R.standard_normal(width)}
    y, _ = conv.apply(p, {}, (X, EI))
    ref = F.gat_conv(X, EI, p["lin"]["weight"], p["att_src"][0], p["att_dst"][0], p["bias"],
                     num_heads=heads, concat=concat)
    assert y.shape == (N, width)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    np.testing.assert_allclose(conv.apply(p, {}, {"x": X, "edge_index": EI})[0], y)
    check_grad(lambda params, v: conv.apply(params, {}, (v, EI))[0], p, X)


def test_gat_conv_options():
    conv = nn.GATConv(2, heads=2, bias=False, add_self_loops=False, negative_slope=0.1)
    p, _ = conv.init(KEY, (X, EI))
    assert "bias" not in p
    ref = F.gat_conv(X, EI, p["lin"]["weight"], p["att_src"][0], p["att_dst"][0], num_heads=2,
                     negative_slope=0.1, self_loops=False)
    np.testing.assert_allclose(conv.apply(p, {}, (X, EI))[0], ref, rtol=1e-12)


def test_layers_stack_and_count_macs():
    x32 = X.astype(np.float32)
    g1, g2 = nn.GATConv(4, heads=2), nn.GCNConv(3)
    p1, _ = g1.init(KEY, (x32, EI))
    h, _ = g1.apply(p1, {}, (x32, EI))
    p2, _ = g2.init(KEY, (h, EI))
    y, _ = g2.apply(p2, {}, (h, EI))
    assert y.shape == (N, 3) and y.dtype == np.float32
    e = EI.shape[1] + N
    assert g2.macs((h, EI), y, p2) == N * 8 * 3 + e * 3
    assert g1.macs((x32, EI), h, p1) == N * FIN * 8 + 2 * N * 8 + e * 8


def test_gnn_layer_errors():
    conv = nn.GCNConv(2)
    with pytest.raises(ConfigError, match=r"\(x, edge_index\)"):
        conv.init(KEY, X)
    with pytest.raises(ConfigError, match="needs 'x' and 'edge_index'"):
        conv.init(KEY, {"x": X})
    with pytest.raises(ShapeError, match="num_nodes, in_features"):
        nn.GATConv(2).init(KEY, (X[None], EI))
    with pytest.raises(nn.LayerArgumentError, match="GCNConv\\(out_channels\\)"):
        nn.GCNConv(3, 4)
