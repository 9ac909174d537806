"""Graph models: GCN against a float64 dense reference, semi-supervised karate club, GAT,
graph-level classification (batching and permutation invariance, readouts), Deep Sets."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import optim
from gpudl.data import karate_club
from gpudl.models.gnn import GAT, GCN, DeepSets, GraphClassifier, batch_graphs, node_loss_fn
from gpudl.train import FullBatch
from gpudl.tree import tree_map


@pytest.fixture(scope="module")
def karate():
    return karate_club()


def _fit(model, params, loss_of_output, inputs, steps, lr=1e-2, weight_decay=0.0, seed=0):
    opt = optim.adam(lr, weight_decay=weight_decay)
    st = opt.init(params)
    for i in range(steps):
        key = gd.random.fold_in(gd.random.key(seed), i)
        g = gd.grad(lambda p, k: loss_of_output(model.apply(p, {}, inputs, train=True,
                                                            key=k)[0]))(params, key)
        u, st = opt.update(g, st, params)
        params = optim.apply_updates(params, u)
    return params


def test_gcn_matches_dense_float64_reference(karate):
    x = np.random.default_rng(0).normal(size=(34, 5))
    inputs = {"x": x, "edge_index": karate["edge_index"]}
    net = GCN(hidden=6, num_classes=3)
    p, _ = net.init(gd.random.key(0), inputs)
    assert p["conv1"]["weight"].dtype == np.float64
    a = karate["adjacency"].astype(np.float64) + np.eye(34)
    d = np.array([sum(a[i]) for i in range(34)])
    a_hat = np.array([[a[i, j] / np.sqrt(d[i] * d[j]) for j in range(34)] for i in range(34)])
    w1, b1, w2, b2 = (np.asarray(p[c][k]) for c in ("conv1", "conv2") for k in ("weight", "bias"))
    expected = a_hat @ np.maximum(a_hat @ x @ w1.T + b1, 0) @ w2.T + b2
    np.testing.assert_allclose(net.apply(p, {}, inputs)[0], expected, atol=1e-12)
    dense, _ = net.apply(p, {}, {"x": x, "a_hat": F.gcn_norm_adjacency(karate["adjacency"]
                                                                      .astype(np.float64))})
    np.testing.assert_allclose(dense, expected, atol=1e-12)


def test_gcn_runs_gcnconv_layers_under_its_own_parameter_names(karate):
    inputs = {"x": karate["features"], "edge_index": karate["edge_index"]}
    net = GCN(hidden=5, num_classes=3)
    p, _ = net.init(gd.random.key(3), inputs)
    assert {k: sorted(v) for k, v in p.items()} == {"conv1": ["bias", "weight"],
                                                    "conv2": ["bias", "weight"]}
    assert [type(c) for c in net.convs] == [gd.nn.GCNConv] * 2
    p = tree_map(lambda a: a + 0.1, p)  # nonzero biases
    h, _ = net.convs[0].apply({"lin": {"weight": p["conv1"]["weight"]}, "bias": p["conv1"]["bias"]},
                              {}, inputs)
    ref, _ = net.convs[1].apply({"lin": {"weight": p["conv2"]["weight"]},
                                 "bias": p["conv2"]["bias"]}, {}, (F.relu(h), inputs["edge_index"]))
    np.testing.assert_array_equal(net.apply(p, {}, inputs)[0], ref)
    # Extra keys of a training batch (labels, masks) do not reach the layers.
    batch = {**inputs, "y": karate["labels"], "mask": np.ones(34, bool)}
    np.testing.assert_array_equal(net.apply(p, {}, batch)[0], ref)


def _karate_graphs(karate, labelled):
    """The club graph as fit's one batch: training mask on ``labelled``, validation on the
    rest."""
    graph = {"x": karate["features"], "edge_index": karate["edge_index"], "y": karate["labels"]}
    train = np.zeros(34, bool)
    train[labelled] = True
    return FullBatch({**graph, "mask": train}), FullBatch({**graph, "mask": ~train})


def test_gcn_karate_semi_supervised(karate):
    labels = karate["labels"]
    labelled = np.array([0, 33])  # one member of each club: Mr. Hi and the Officer
    unlabelled = np.setdiff1d(np.arange(34), labelled)
    train, val = _karate_graphs(karate, labelled)
    net = GCN(hidden=16, num_classes=2)
    h = gd.fit(net, train, loss_fn=node_loss_fn(net), epochs=100, validation_data=val,
               optimizer=optim.adam(1e-2, weight_decay=5e-4), metrics=["accuracy"], verbose=0)
    pred = gd.to_numpy(net.apply(h.params, h.state, train.data)[0]).argmax(1)
    assert (pred[unlabelled] == labels[unlabelled]).mean() >= 0.9
    # the validation mask's accuracy, logged by fit with dropout off
    assert h.history["val_accuracy"][-1] == (pred[unlabelled] == labels[unlabelled]).mean()


def test_gat_shapes_and_karate(karate):
    inputs = {"x": karate["features"], "edge_index": karate["edge_index"]}
    labels = karate["labels"]
    labelled = np.array([0, 1, 32, 33])
    unlabelled = np.setdiff1d(np.arange(34), labelled)
    net = GAT(hidden=8, heads=4, num_classes=2, dropout=0.5)
    p, _ = net.init(gd.random.key(1), inputs)
    assert p["conv1"]["weight"].shape == (32, 34) and p["conv1"]["att_src"].shape == (4, 8)
    assert net.apply(p, {}, inputs)[0].shape == (34, 2)
    train, _ = _karate_graphs(karate, labelled)
    h = gd.fit(net, train, loss_fn=node_loss_fn(net), params=p, epochs=60,
               optimizer=optim.adam(1e-2, weight_decay=5e-4), key=gd.random.key(1), verbose=0)
    pred = gd.to_numpy(net.apply(h.params, h.state, inputs)[0]).argmax(1)
    assert (pred[unlabelled] == labels[unlabelled]).mean() >= 0.8


# ----------------------------------------------------------------------------- graph level
def _cycle(n):
    src = np.arange(n)
    dst = (src + 1) % n
    return {"x": np.ones((n, 1), np.float32),
            "edge_index": np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1)}


def _star(n):
    leaves = np.arange(1, n)
    hub = np.zeros(n - 1, np.int64)
    return {"x": np.ones((n, 1), np.float32),
            "edge_index": np.concatenate([np.stack([hub, leaves]), np.stack([leaves, hub])], 1)}


@pytest.mark.parametrize("readout", ["sum", "mean", "max"])
def test_graph_classifier_batching_and_permutation_invariance(readout):
    graphs = [_cycle(5), _star(4), _cycle(3), _star(6)]
    rng = np.random.default_rng(0)
    for g in graphs:
        g["x"] = rng.normal(size=g["x"].shape[:1] + (3,)).astype(np.float32)
    batch = batch_graphs(graphs)
    net = GraphClassifier(hidden=8, num_classes=2, readout=readout)
    p, _ = net.init(gd.random.key(0), batch)
    logits, _ = net.apply(p, {}, batch)
    assert logits.shape == (4, 2)
    for i, g in enumerate(graphs):  # each graph alone gives the same logits
        np.testing.assert_allclose(net.apply(p, {}, g)[0][0], logits[i], atol=1e-5)
    perm = rng.permutation(batch["x"].shape[0])  # relabel the nodes of the whole batch
    inv = np.argsort(perm)
    shuffled = {"x": batch["x"][perm], "edge_index": inv[batch["edge_index"]],
                "batch": batch["batch"][perm], "num_graphs": 4}
    np.testing.assert_allclose(net.apply(p, {}, shuffled)[0], logits, atol=1e-5)


def test_graph_classifier_readout_reference():
    graphs = [_cycle(4), _star(5)]
    batch = batch_graphs(graphs)
    net = GraphClassifier(hidden=6, num_classes=2, readout="max")
    p, _ = net.init(gd.random.key(2), batch)
    h = np.asarray(net.node_features(p, batch))
    pooled = np.stack([h[batch["batch"] == g].max(0) for g in range(2)])  # naive readout
    w1, b1 = p["head"]["0"]["weight"], p["head"]["0"]["bias"]
    w2, b2 = p["head"]["2"]["weight"], p["head"]["2"]["bias"]
    expected = np.maximum(pooled @ w1.T + b1, 0) @ w2.T + b2
    np.testing.assert_allclose(net.apply(p, {}, batch)[0], expected, atol=1e-5)


def test_graph_classifier_learns_cycles_vs_stars():
    sizes = [4, 5, 6, 7, 8]
    graphs = [_cycle(n) for n in sizes] + [_star(n) for n in sizes]
    labels = np.array([0] * 5 + [1] * 5)
    batch = batch_graphs(graphs)
    net = GraphClassifier(hidden=16, num_classes=2, readout="max")
    p, _ = net.init(gd.random.key(0), batch)
    p = _fit(net, p, lambda out: F.softmax_cross_entropy(out, labels), batch, 60)
    assert (net.apply(p, {}, batch)[0].argmax(1) == labels).all()


# ----------------------------------------------------------------------------- deep sets
@pytest.mark.parametrize("pool", ["sum", "mean", "max"])
def test_deep_sets_invariance_and_masks(pool):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    net = DeepSets(hidden=8, num_outputs=2, pool=pool)
    p, _ = net.init(gd.random.key(0), x)
    y, _ = net.apply(p, {}, x)
    assert y.shape == (3, 2)
    np.testing.assert_allclose(net.apply(p, {}, x[:, rng.permutation(5)])[0], y, atol=1e-5)
    sizes = np.array([5, 2, 3])
    mask = np.arange(5)[None] < sizes[:, None]
    padded = np.where(mask[..., None], x, 99.0).astype(np.float32)  # junk in the padding
    masked, _ = net.apply(p, {}, {"x": padded, "mask": mask})
    for i, s in enumerate(sizes):
        np.testing.assert_allclose(masked[i], net.apply(p, {}, x[i: i + 1, :s])[0][0], atol=1e-5)


def test_deep_sets_learns_set_sum():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (128, 6, 1)).astype(np.float32)
    y = x.sum(axis=1)
    net = DeepSets(hidden=16, num_outputs=1, pool="sum")
    p, _ = net.init(gd.random.key(0), x)
    p = _fit(net, p, lambda out: F.mse_loss(out, y), x, 300)
    after = float(F.mse_loss(net.apply(p, {}, x)[0], y))
    assert after < 0.01 * y.var()  # predicting the mean would give var(y) = 0.5


def test_graph_models_on_device(device, karate):
    inputs = {"x": karate["features"], "edge_index": karate["edge_index"]}
    dev_inputs = gd.to_device(inputs, device)
    for net in (GCN(hidden=8), GAT(hidden=4, heads=2)):
        p, _ = net.init(gd.random.key(0), inputs)
        dev, _ = net.apply(gd.to_device(p, device), {}, dev_inputs)
        np.testing.assert_allclose(gd.to_numpy(dev), net.apply(p, {}, inputs)[0], atol=1e-4)
    batch = batch_graphs([_cycle(4), _star(5)])
    net = GraphClassifier(hidden=8, readout="mean")
    p, _ = net.init(gd.random.key(0), batch)
    dev_batch = {**gd.to_device({k: v for k, v in batch.items() if k != "num_graphs"}, device),
                 "num_graphs": 2}
    dev, _ = net.apply(gd.to_device(p, device), {}, dev_batch)
    np.testing.assert_allclose(gd.to_numpy(dev), net.apply(p, {}, batch)[0], atol=1e-4)


@pytest.mark.parametrize("make", [
    lambda: GCN(hidden=4, num_classes=2, num_layers=0),  # built a 1-layer GCN silently
    lambda: GCN(hidden=0), lambda: GAT(heads=0),  # a bare ZeroDivisionError
    lambda: GAT(hidden=0, heads=2), lambda: GAT(out_heads=-1),  # all-zero logits / a shape error
    lambda: GraphClassifier(num_layers=0), lambda: GraphClassifier(hidden=2.5)])
def test_graph_models_refuse_sizes_below_one(make):
    with pytest.raises(gd.errors.LayerArgumentError, match="must be an int >= 1"):
        make()
