"""Graph layers: GCNConv and GATConv with PyTorch Geometric's parameter names and shapes.

Both take the graph as ``(x, edge_index)`` (PyG's call ``conv(x, edge_index)``), or as a
dict ``{"x": (N, F_in), "edge_index": (2, E)}`` (the form of :mod:`gpudl.models.gnn`),
and return node features (N, F_out). ``edge_index`` row 0 holds sources, row 1 targets.
There is no batch axis: a batch of graphs is one disconnected graph
(``gpudl.models.gnn.batch_graphs``).

* ``GCNConv(out_features)``: ``Â (X W^T) + b``, ``Â = D^-½ (A + I) D^-½`` (self loops
  as PyG's ``gcn_norm``: an existing loop is kept, not doubled). Params ``lin.weight``
  (F_out, F_in), ``bias`` (F_out,). A dict input may add ``"edge_weight"`` (E,), or give
  a dense normalized ``"a_hat"`` (N, N) instead of ``edge_index`` (``F.gcn_conv``).
* ``GATConv(out_features, heads=1, concat=True)``: ``F.gat_conv``. Params ``lin.weight``
  (heads*F_out, F_in), ``att_src`` and ``att_dst`` (1, heads, F_out) as PyG stores them,
  ``bias`` (heads*F_out,) when concatenating, else (F_out,). No attention dropout.

Init as PyG: glorot weights and attention vectors, zero biases. Keys equal PyG's
``state_dict`` keys, so weights move both ways without renaming.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn
    >>> x, ei = np.ones((4, 3), np.float32), np.array([[0, 1, 2, 3], [1, 2, 3, 0]])
    >>> conv = nn.GATConv(5, heads=2)
    >>> p, s = conv.init(gd.random.key(0), (x, ei))
    >>> p["att_src"].shape, conv.apply(p, s, (x, ei))[0].shape
    ((1, 2, 5), (4, 10))
"""

from __future__ import annotations

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import check_bool, check_float, check_int, layer_label, positional_limit
from gpudl.nn.base import Layer, array_device, check_params, float_dtype


def _graph_hint(label: str, args: tuple) -> str:
    return (f"{label} takes (out_features, *, ...) and infers in_features from the input; "
            f"for PyG's {label[3:]}(in_channels, out_channels) write {label}(out_channels) "
            "and pass the rest by keyword.")


class _GraphConv(Layer):
    _extra_keys: tuple[str, ...] = ()

    def _parts(self, inputs):
        """(x, graph dict) from ``(x, edge_index)`` or ``{"x", "edge_index", ...}``."""
        label = layer_label(self)
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"x", "edge_index", *self._extra_keys}
            graph_keys = {"edge_index", "a_hat"} & set(self._extra_keys + ("edge_index",))
            if "x" not in inputs or unknown or not (graph_keys & set(inputs)):
                alt = " (or a dense 'a_hat')" if "a_hat" in graph_keys else ""
                raise ConfigError(f"{label}: a dict input needs 'x' and 'edge_index'{alt}, "
                                  f"optional keys {list(self._extra_keys)}; got keys "
                                  f"{sorted(inputs)}")
            graph = dict(inputs)
        elif isinstance(inputs, (tuple, list)) and len(inputs) == 2:
            graph = {"x": inputs[0], "edge_index": inputs[1]}
        else:
            raise ConfigError(f"{label}: the input is the graph (x, edge_index), as PyG's "
                              f"conv(x, edge_index), or a dict {{'x', 'edge_index'}}; got "
                              f"{type(inputs).__name__}")
        x = graph["x"]
        if len(x.shape) != 2:
            raise ShapeError(f"{label}: x must be node features (num_nodes, in_features), got "
                             f"shape {tuple(x.shape)}; a batch of graphs is one disconnected "
                             "graph (gpudl.models.gnn.batch_graphs)")
        return x, graph


class GCNConv(_GraphConv):
    """Kipf & Welling's graph convolution, PyG's ``GCNConv``: ``Â X W^T + b``."""

    base_name = "gcn_conv"
    _extra_keys = ("edge_weight", "a_hat")

    @positional_limit(1, _graph_hint)
    def __init__(self, out_features: int, *, bias: bool = True, add_self_loops: bool = True,
                 name: str | None = None):
        super().__init__(name)
        self.features = check_int(self, "out_features", out_features)
        self.use_bias = check_bool(self, "bias", bias)
        self.self_loops = check_bool(self, "add_self_loops", add_self_loops)

    def param_shapes(self, x) -> dict:
        """lin.weight (F_out, F_in), bias (F_out,), as PyG's GCNConv."""
        n_in = self._parts(x)[0].shape[1]
        shapes: dict = {"lin": {"weight": (self.features, n_in)}}
        if self.use_bias:
            shapes["bias"] = (self.features,)
        return shapes

    def init(self, key, x):
        x, _ = self._parts(x)
        dtype, dev = float_dtype(x), array_device(x)
        params: dict = {"lin": {"weight": inits.glorot_uniform()(
            key, (self.features, x.shape[1]), dtype=dtype, device=dev)}}
        if self.use_bias:
            params["bias"] = ops.zeros((self.features,), dtype=dtype, device=dev)
        return params, {}

    def apply(self, params, state, x, *, train=False, key=None):
        feats, graph = self._parts(x)
        check_params(params, self.param_shapes(x), self, feats)
        w, b = params["lin"]["weight"], params.get("bias")
        if "a_hat" in graph:
            return F.gcn_conv(feats, graph["a_hat"], w, b), state
        # The normalized sparse adjacency is built once per graph (F.gcn_conv's plan cache).
        return F.gcn_conv(feats, graph["edge_index"], w, b, edge_weight=graph.get("edge_weight"),
                          add_self_loops=self.self_loops), state

    def macs(self, x, y, params):
        feats, graph = self._parts(x)
        n, n_in = (int(d) for d in feats.shape)
        edges = (n * n if "a_hat" in graph
                 else int(graph["edge_index"].shape[1]) + n * self.self_loops)
        return n * n_in * self.features + edges * self.features


class GATConv(_GraphConv):
    """Graph attention (Velickovic et al.), PyG's ``GATConv``: ``heads`` attention heads,
    concatenated (``concat=True``, output heads*F_out) or averaged (F_out)."""

    base_name = "gat_conv"

    @positional_limit(1, _graph_hint)
    def __init__(self, out_features: int, *, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, add_self_loops: bool = True, bias: bool = True,
                 name: str | None = None):
        super().__init__(name)
        self.features = check_int(self, "out_features", out_features)
        self.heads = check_int(self, "heads", heads)
        self.concat = check_bool(self, "concat", concat)
        self.negative_slope = check_float(self, "negative_slope", negative_slope, 0.0)
        self.self_loops = check_bool(self, "add_self_loops", add_self_loops)
        self.use_bias = check_bool(self, "bias", bias)

    def param_shapes(self, x) -> dict:
        """lin.weight (heads*F_out, F_in), att_src/att_dst (1, heads, F_out), bias."""
        n_in = self._parts(x)[0].shape[1]
        h, f = self.heads, self.features
        shapes: dict = {"lin": {"weight": (h * f, n_in)}, "att_src": (1, h, f),
                        "att_dst": (1, h, f)}
        if self.use_bias:
            shapes["bias"] = (h * f if self.concat else f,)
        return shapes

    def init(self, key, x):
        shapes = self.param_shapes(x)
        feats, _ = self._parts(x)
        dtype, dev = float_dtype(feats), array_device(feats)
        glorot = inits.glorot_uniform()
        kw, ks, kd = gdr.split(key, 3)
        h, f = self.heads, self.features
        # PyG's glorot on (1, heads, F') uses fan_in + fan_out = heads + F'.
        params: dict = {
            "lin": {"weight": glorot(kw, shapes["lin"]["weight"], dtype=dtype, device=dev)},
            "att_src": ops.reshape(glorot(ks, (h, f), dtype=dtype, device=dev), (1, h, f)),
            "att_dst": ops.reshape(glorot(kd, (h, f), dtype=dtype, device=dev), (1, h, f))}
        if self.use_bias:
            params["bias"] = ops.zeros(shapes["bias"], dtype=dtype, device=dev)
        return params, {}

    def apply(self, params, state, x, *, train=False, key=None):
        feats, graph = self._parts(x)
        check_params(params, self.param_shapes(x), self, feats)
        h, f = self.heads, self.features
        out = F.gat_conv(feats, graph["edge_index"], params["lin"]["weight"],
                         ops.reshape(params["att_src"], (h, f)),
                         ops.reshape(params["att_dst"], (h, f)), params.get("bias"),
                         num_heads=h, concat=self.concat,
                         negative_slope=self.negative_slope, self_loops=self.self_loops)
        return out, state

    def macs(self, x, y, params):
        feats, graph = self._parts(x)
        n, n_in = (int(d) for d in feats.shape)
        hf = self.heads * self.features
        edges = int(graph["edge_index"].shape[1]) + n * self.self_loops
        return n * n_in * hf + 2 * n * hf + edges * hf  # projection, scores, aggregation


__all__ = ["GATConv", "GCNConv"]
