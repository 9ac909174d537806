"""Graph models: GCN and GAT node classifiers, a graph-level classifier with sum/mean/max
readout over a batch of small graphs, and Deep Sets.

Graph inputs are dicts (PyG conventions): ``{"x": (num_nodes, F), "edge_index": (2, E)}``
with row 0 = sources, row 1 = targets; graph-level batches add ``"batch"`` (num_nodes,)
graph ids and ``"num_graphs"`` (an int); :func:`batch_graphs` builds them.

Example:
    >>> import gpudl as gd
    >>> from gpudl.data import karate_club
    >>> g = karate_club()
    >>> net = GCN(hidden=16, num_classes=2)
    >>> inputs = {"x": g["features"], "edge_index": g["edge_index"]}
    >>> p, s = net.init(gd.random.key(0), inputs)
    >>> net.apply(p, s, inputs)[0].shape
    (34, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import module_of
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.activations import ReLU
from gpudl.nn.arguments import check_int
from gpudl.nn.base import Layer, Sequential, array_device
from gpudl.nn.core import Dense
from gpudl.nn.gnn import GCNConv

_READOUTS = ("sum", "mean", "max")


def _split(key, n):
    return list(gdr.split(key, n)) if key is not None else [None] * n


def _graph(x, op: str):
    if not isinstance(x, dict) or "x" not in x or not ({"edge_index", "a_hat"} & set(x)):
        raise ConfigError(f"{op}: input must be a dict with 'x' (num_nodes, F) and "
                         "'edge_index' (2, E) (or a dense normalized 'a_hat' (N, N))")
    return x["x"]


def _dropout(h, rate, key, train):
    return F.dropout(h, rate, key, train=True) if (rate and train) else h


class GCN(Layer):
    """Kipf & Welling's GCN: ``softmax(Â relu(Â X W1) W2)`` with ``Â = D^-½(A+I)D^-½``.

    Input ``{"x", "edge_index"}`` (sparse normalisation, built once per graph, and sparse
    products) or ``{"x", "a_hat"}`` (a precomputed dense ``F.gcn_norm_adjacency``). Each
    layer is an ``nn.GCNConv`` (parameters named ``conv<i>.weight``/``conv<i>.bias``).
    Output logits (num_nodes, num_classes); train on the labelled nodes only
    (semi-supervised). Glorot weights, zero biases, dropout on each layer's input in
    training, as the paper.
    """

    base_name = "gcn"

    def __init__(self, hidden: int = 16, num_classes: int = 2, num_layers: int = 2,
                 dropout: float = 0.5, name: str | None = None):
        super().__init__(name)
        # num_layers=0 built a 1-layer GCN without a word
        num_layers = check_int(self, "num_layers", num_layers)
        hidden, num_classes = check_int(self, "hidden", hidden), check_int(self, "num_classes",
                                                                            num_classes)
        self.widths = [hidden] * (num_layers - 1) + [num_classes]
        self.dropout = dropout
        # The layers compute; the parameters keep this model's names (conv1.weight,
        # conv1.bias; GCNConv's own are lin.weight, bias): see _conv_params. Attributes
        # conv1, conv2, ... so that the summary's rows carry the parameters' names.
        for i, width in enumerate(self.widths):
            setattr(self, f"conv{i + 1}", GCNConv(width))

    @property
    def convs(self) -> list[GCNConv]:
        return [getattr(self, f"conv{i + 1}") for i in range(len(self.widths))]

    def init(self, key, x):
        feats = _graph(x, "GCN")
        fan_in, params = feats.shape[1], {}
        dev, dtype = array_device(feats), np.dtype(feats.dtype)
        for i, (width, k) in enumerate(zip(self.widths, _split(key, len(self.widths)))):
            params[f"conv{i + 1}"] = {
                "weight": inits.glorot_uniform()(k, (width, fan_in), dtype=dtype, device=dev),
                "bias": ops.zeros((width,), dtype=dtype, device=dev)}
            fan_in = width
        return params, {}

    @staticmethod
    def propagator(x):
        """``h -> Â h`` for the graph in ``x`` (dense ``a_hat`` or sparse ``edge_index``)."""
        if "a_hat" in x:
            return lambda h: ops.matmul(x["a_hat"], h)
        n = x["x"].shape[0]
        ei, w = F.gcn_norm_edges(x["edge_index"], n, dtype=unbox_all(x["x"]).dtype)
        return lambda h: F.message_passing(h, ei, w, num_nodes=n)

    @staticmethod
    def _conv_params(p: dict) -> dict:
        """This model's ``{"weight", "bias"}`` as nn.GCNConv's ``{"lin": {"weight"}, "bias"}``."""
        return {"lin": {"weight": p["weight"]}, "bias": p["bias"]}

    def apply(self, params, state, x, *, train=False, key=None):
        h = _graph(x, "GCN")
        # The graph part of the input, as GCNConv takes it (a dense a_hat wins, as before).
        graph = {"a_hat": x["a_hat"]} if "a_hat" in x else {"edge_index": x["edge_index"]}
        keys = _split(key, len(self.widths))
        for i, conv in enumerate(self.convs):
            h = _dropout(h, self.dropout, keys[i], train)
            h, _ = conv.apply(self._conv_params(params[f"conv{i + 1}"]), {}, {**graph, "x": h})
            if i < len(self.widths) - 1:
                h = F.relu(h)
        return h, state


class GAT(Layer):
    """Graph attention network (Velickovic et al.): two ``F.gat_conv`` layers.

    Layer 1: ``heads`` heads of ``hidden`` features, concatenated, ELU; layer 2: one head
    (``out_heads`` averaged) producing class logits. Dropout on inputs in training.
    """

    base_name = "gat"

    def __init__(self, hidden: int = 8, heads: int = 8, num_classes: int = 2,
                 out_heads: int = 1, dropout: float = 0.6, name: str | None = None):
        super().__init__(name)
        # heads=0 raised a bare ZeroDivisionError, hidden=0 gave all-zero logits
        self.hidden, self.heads, self.num_classes, self.out_heads = (
            check_int(self, arg, v) for arg, v in (("hidden", hidden), ("heads", heads),
                                                   ("num_classes", num_classes),
                                                   ("out_heads", out_heads)))
        self.dropout = dropout

    def init(self, key, x):
        feats = _graph(x, "GAT")
        dev, dtype = array_device(feats), np.dtype(feats.dtype)
        glorot = inits.glorot_uniform()
        ks = _split(key, 6)

        def conv(k, heads, width, fan_in, concat, ka, kb):
            return {"weight": glorot(k, (heads * width, fan_in), dtype=dtype, device=dev),
                    "att_src": glorot(ka, (heads, width), dtype=dtype, device=dev),
                    "att_dst": glorot(kb, (heads, width), dtype=dtype, device=dev),
                    "bias": ops.zeros((heads * width if concat else width,), dtype=dtype,
                                      device=dev)}

        return {"conv1": conv(ks[0], self.heads, self.hidden, feats.shape[1], True, ks[1], ks[2]),
                "conv2": conv(ks[3], self.out_heads, self.num_classes, self.heads * self.hidden,
                              False, ks[4], ks[5])}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        # F.gat_conv, the function nn.GATConv calls: the layer stores att_src/att_dst as
        # (1, heads, F') (PyG's shape), this model as (heads, F'), and reshaping them on
        # every call would hide them from the summary's per-layer parameter counts.
        h, ei = _graph(x, "GAT"), x["edge_index"]
        k1, k2 = _split(key, 2)
        p1, p2 = params["conv1"], params["conv2"]
        h = _dropout(h, self.dropout, k1, train)
        h = F.elu(F.gat_conv(h, ei, p1["weight"], p1["att_src"], p1["att_dst"], p1["bias"],
                             num_heads=self.heads, concat=True))
        h = _dropout(h, self.dropout, k2, train)
        return F.gat_conv(h, ei, p2["weight"], p2["att_src"], p2["att_dst"], p2["bias"],
                          num_heads=self.out_heads, concat=False), state


def batch_graphs(graphs: Sequence[dict]) -> dict:
    """Merge small graphs ``{"x", "edge_index"}`` into one disconnected graph.

    Node ids of graph g are offset by the node counts before it; returns ``{"x",
    "edge_index", "batch" (num_nodes,), "num_graphs"}``.

    Example:
        >>> g = {"x": np.ones((2, 1)), "edge_index": np.array([[0], [1]])}
        >>> b = batch_graphs([g, g])
        >>> b["edge_index"].tolist(), b["batch"].tolist()
        ([[0, 2], [1, 3]], [0, 0, 1, 1])
    """
    xs, eis, batch, offset = [], [], [], 0
    for i, g in enumerate(graphs):
        n = g["x"].shape[0]
        xs.append(np.asarray(g["x"]))
        eis.append(np.asarray(g["edge_index"], dtype=np.int64).reshape(2, -1) + offset)
        batch.append(np.full(n, i, dtype=np.int64))
        offset += n
    return {"x": np.concatenate(xs), "edge_index": np.concatenate(eis, axis=1),
            "batch": np.concatenate(batch), "num_graphs": len(graphs)}


class GraphClassifier(Layer):
    """Graph-level classifier: message-passing layers, a readout per graph, an MLP head.

    Each layer is Morris et al.'s GraphConv ``h_i' = relu(W_self h_i + W_neigh sum_{j->i}
    h_j + b)`` (sum aggregation sees degrees, which mean aggregation cannot). ``readout``
    'sum' | 'mean' | 'max' pools node features per graph (``F.readout``). Input a
    :func:`batch_graphs` dict; output logits (num_graphs, num_classes).
    """

    base_name = "graph_classifier"

    def __init__(self, hidden: int = 32, num_classes: int = 2, num_layers: int = 2,
                 readout: str = "sum", name: str | None = None):
        super().__init__(name)
        if readout not in _READOUTS:
            raise ConfigError(f"GraphClassifier: readout must be one of {_READOUTS}, "
                             f"got {readout!r}")
        self.hidden, self.num_layers, self.readout = (
            check_int(self, "hidden", hidden), check_int(self, "num_layers", num_layers),
            readout)
        self.head = Sequential([Dense(hidden), ReLU(), Dense(num_classes)])

    def init(self, key, x):
        h = _graph(x, "GraphClassifier")
        keys = _split(key, 2 * self.num_layers + 1)
        params = {}
        for i in range(self.num_layers):
            params[f"conv{i + 1}"] = {
                "self": Dense(self.hidden).init(keys[2 * i], h)[0],
                "neigh": Dense(self.hidden, bias=False).init(keys[2 * i + 1], h)[0]}
            h = ops.zeros((h.shape[0], self.hidden), dtype=h.dtype, device=array_device(h))
        params["head"] = self.head.init(keys[-1], h[:1])[0]
        return params, {}

    def node_features(self, params, x):
        h, ei = x["x"], x["edge_index"]
        n = h.shape[0]
        for i in range(self.num_layers):
            p = params[f"conv{i + 1}"]
            agg = F.message_passing(h, ei, num_nodes=n)  # (N, F): sum over in-edges
            h = F.relu(ops.matmul(h, ops.transpose(p["self"]["weight"])) + p["self"]["bias"]
                       + ops.matmul(agg, ops.transpose(p["neigh"]["weight"])))
        return h

    def apply(self, params, state, x, *, train=False, key=None):
        h = self.node_features(params, x)
        n = h.shape[0]
        batch = x.get("batch")
        if batch is None:  # one graph
            batch = module_of(unbox_all(h)).zeros(n, dtype=np.int64)
        pooled = F.readout(h, batch, int(x.get("num_graphs", 1)), self.readout)
        return self.head.apply(params["head"], {}, pooled)[0], state


class DeepSets(Layer):
    """Deep Sets (Zaheer et al.): ``rho(pool_i phi(x_i))``, invariant to element order.

    Input (N, S, F) sets, or ``{"x": (N, S, F), "mask": (N, S)}`` for padded sets of
    different sizes (True = a real element). ``pool`` 'sum' | 'mean' | 'max'. Output
    (N, num_outputs).
    """

    base_name = "deep_sets"

    def __init__(self, hidden: int = 32, num_outputs: int = 1, pool: str = "sum",
                 name: str | None = None):
        super().__init__(name)
        if pool not in _READOUTS:
            raise ConfigError(f"DeepSets: pool must be one of {_READOUTS}, got {pool!r}")
        self.pool = pool
        self.phi = Sequential([Dense(hidden), ReLU(), Dense(hidden), ReLU()])
        self.rho = Sequential([Dense(hidden), ReLU(), Dense(num_outputs)])

    def init(self, key, x):
        xs = x["x"] if isinstance(x, dict) else x
        if len(xs.shape) != 3:
            raise ShapeError(f"DeepSets: sets must be (N, S, F), got {tuple(xs.shape)}")
        k1, k2 = _split(key, 2)
        pp, _ = self.phi.init(k1, xs)
        z, _ = self.phi.apply(pp, {}, xs)
        return {"phi": pp, "rho": self.rho.init(k2, z[:, 0])[0]}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        xs, mask = (x["x"], x.get("mask")) if isinstance(x, dict) else (x, None)
        z, _ = self.phi.apply(params["phi"], {}, xs)  # (N, S, H)
        dtype, xp = unbox_all(z).dtype, module_of(unbox_all(z))
        m = (xp.ones(xs.shape[:2], dtype=bool) if mask is None
             else xp.asarray(mask).astype(bool))[..., None]  # (N, S, 1)
        if self.pool == "max":
            pooled = ops.max(ops.where(m, z, float(np.finfo(dtype).min)), axis=1)
        else:
            pooled = ops.sum(ops.where(m, z, 0.0), axis=1)
            if self.pool == "mean":
                pooled = pooled / xp.maximum(m.sum(axis=1), 1).astype(dtype)
        return self.rho.apply(params["rho"], {}, pooled)[0], state


def _nodes(mask):
    """Node indices from a boolean mask (num_nodes,), or indices as given."""
    raw = unbox_all(mask)
    return module_of(raw).flatnonzero(raw) if np.dtype(raw.dtype).kind == "b" else raw


def node_loss_fn(model: Layer, mask: str = "mask"):
    """Semi-supervised node classification (GCN, GAT) as ``gd.fit``'s custom step.

    The batch is one graph, ``gd.train.FullBatch({"x", "edge_index" (or "a_hat"), "y",
    "mask"})``: every node is computed, and the loss is the cross-entropy of the nodes
    ``batch[mask]`` selects (a boolean (num_nodes,) mask, or node indices): the labelled
    training nodes. ``validation_data`` is the same graph with the validation nodes'
    mask, evaluated with dropout off (``train=False``). ``aux`` holds the selected nodes'
    ``y_true``/``y_pred``, so ``metrics=["accuracy"]`` scores those nodes only.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> ei = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> graph = {"x": np.eye(3, dtype=np.float32), "edge_index": ei,
        ...          "y": np.array([0, 0, 1]), "mask": np.array([True, False, True])}
        >>> net = GCN(hidden=4, num_classes=2)
        >>> h = gd.fit(net, gd.train.FullBatch(graph), loss_fn=node_loss_fn(net),
        ...            optimizer=gd.optim.adam(0.05), metrics=["accuracy"], epochs=3,
        ...            verbose=0)
        >>> len(h.history["accuracy"])
        3
    """

    def loss_fn(params, state, graph, key, train=True):
        logits, new_state = model.apply(params, state, graph, train=train, key=key)
        nodes = _nodes(graph[mask])
        out, y = logits[nodes], graph["y"][nodes]
        return F.softmax_cross_entropy(out, y), (new_state, {"y_true": y,
                                                             "y_pred": unbox_all(out)})

    return loss_fn
