"""Graph ops: GCN normalization, message passing over an ``edge_index``, segment
reductions (sum/mean/max/softmax), graph-level readouts, GCN and GAT layers (functional).

Conventions (PyTorch Geometric's): ``edge_index`` is an integer array (2, E) whose row 0
holds source nodes and row 1 target nodes; a message flows source -> target and is
aggregated at the target. ``batch`` (num_nodes,) says which graph each node belongs to.

Every aggregation is a product with the graph's CSR plan (``_graph_structure.py``): built
once per distinct ``edge_index`` (or ``segment_ids``/``batch``) content and reused, a
scipy sparse product on the CPU and ``kernels/graph.cu`` on the GPU; the backward is the
same product with the transposed plan (no scatter-add).

Example:
    >>> import numpy as np
    >>> from gpudl.functional.graph import message_passing
    >>> x = np.array([[1.0], [2.0], [4.0]])
    >>> message_passing(x, np.array([[0, 1], [2, 2]])).tolist()   # 0->2, 1->2
    [[0.0], [0.0], [3.0]]
"""

from __future__ import annotations

import numpy as np

from gpudl import ops
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, ShapeError
from gpudl.functional._checks import DTypeWording, check_float_operands
from gpudl.functional._graph_structure import (
    GraphPlans,
    check_edge_index,
    csr_sum,
    csr_weighted_sum,
    graph_plans,
    plan_segment_max,
    plan_segment_mean,
    plan_segment_softmax,
    row_counts,
    segment_plan,
)
from gpudl.functional.activations import leaky_relu

_GRAPH_DTYPES = DTypeWording(
    unsupported="{op}: {name} has dtype {dtype}; graph ops take float32 or float64 node "
                "features, edge values and weights. Cast it with .astype('float32').",
    operands="features and weights")


def _device(x) -> str:
    return device_of(unbox_all(x))


# ------------------------------------------------------------------------ segment reductions
def _segments(data, segment_ids, num_segments: int, op: str, what: str = "segment_ids"):
    check_float_operands(op, {"data": data}, _GRAPH_DTYPES)
    plan = segment_plan(segment_ids, num_segments, _device(data), op, what)
    if _shape(data)[:1] != (plan.n_cols,):
        raise ShapeError(f"{op}: data must have one row per id ({plan.n_cols}, ...), got "
                         f"{_shape(data)}")
    return plan


def segment_mean(data, segment_ids, num_segments: int):
    """Mean of the rows of ``data`` in each segment (0 for an empty segment).

    Example:
        >>> segment_mean(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 2]), 3).tolist()
        [2.0, 0.0, 5.0]
    """
    return plan_segment_mean(data, _segments(data, segment_ids, num_segments, "segment_mean"))


def segment_max(data, segment_ids, num_segments: int):
    """Maximum of the rows of ``data`` in each segment (0 for an empty segment, as PyG).

    The gradient goes to the arg-max rows, split evenly between exact ties.

    Example:
        >>> segment_max(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 2]), 3).tolist()
        [3.0, 0.0, 5.0]
    """
    return plan_segment_max(data, _segments(data, segment_ids, num_segments, "segment_max"))


def segment_softmax(scores, segment_ids, num_segments: int):
    """Softmax of ``scores`` (E,) or (E, H) within each segment (e.g. over a node's in-edges).

    Example:
        >>> segment_softmax(np.array([0.0, 0.0, 5.0]), np.array([0, 0, 1]), 2).tolist()
        [0.5, 0.5, 1.0]
    """
    return plan_segment_softmax(scores, _segments(scores, segment_ids, num_segments,
                                              "segment_softmax"))


def readout(x, batch, num_graphs: int, reduce: str = "sum"):
    """Graph-level pooling: ``reduce`` ('sum' | 'mean' | 'max') node features (N, F) per graph.

    Example:
        >>> readout(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2, "mean").tolist()
        [[2.0], [5.0]]
    """
    if reduce not in ("sum", "mean", "max"):
        raise ConfigError(f"readout: reduce must be 'sum', 'mean' or 'max', got {reduce!r}")
    plan = _segments(x, batch, num_graphs, "readout", "batch")
    if reduce == "sum":
        return csr_sum(x, plan=plan)
    return plan_segment_mean(x, plan) if reduce == "mean" else plan_segment_max(x, plan)


# ------------------------------------------------------------------------ message passing
def _edge_weights(edge_weight, num_edges: int, op: str):
    if _shape(edge_weight) != (num_edges,):
        raise ShapeError(f"{op}: edge_weight must be (E,) = ({num_edges},), got "
                         f"{_shape(edge_weight)}")
    return edge_weight


def _node_rows(x, n: int, op: str) -> None:
    if not _shape(x) or _shape(x)[0] != n:
        raise ShapeError(f"{op}: x must be (num_nodes, ...) with num_nodes = {n}, got shape "
                         f"{_shape(x)}; pass num_nodes=x.shape[0] or features for every node")


def message_passing(
    x, edge_index, edge_weight=None, aggr: str = "sum", num_nodes: int | None = None
):
    """Aggregate ``x[source] * edge_weight`` at each target node: (N, F) -> (N, F).

    ``aggr``: 'sum' (scatter-add), 'mean' or 'max'. Nodes with no in-edges get 0.
    """
    if aggr not in ("sum", "mean", "max"):
        raise ConfigError(f"message_passing: aggr must be 'sum', 'mean' or 'max', got {aggr!r}")
    n = _shape(x)[0] if num_nodes is None else num_nodes
    check_float_operands("message_passing", {"x": x, "edge_weight": edge_weight},
                         _GRAPH_DTYPES)
    gp = graph_plans(edge_index, n, _device(x), "message_passing")
    _node_rows(x, n, "message_passing")
    if edge_weight is not None:
        edge_weight = _edge_weights(edge_weight, gp.agg.nnz, "message_passing")
    if aggr == "max":
        msgs = csr_sum(x, plan=gp.gather_src)  # (E, F)
        if edge_weight is not None:
            msgs = msgs * ops.reshape(edge_weight, (-1,) + (1,) * (len(_shape(x)) - 1))
        return plan_segment_max(msgs, gp.seg)
    out = (csr_sum(x, plan=gp.agg) if edge_weight is None
           else csr_weighted_sum(x, edge_weight, plan=gp.agg))
    if aggr == "mean":
        counts = module_of(gp.agg.indptr).maximum(row_counts(gp.agg, unbox_all(out).dtype), 1)
        out = out / counts.reshape((-1,) + (1,) * (len(_shape(x)) - 1))
    return out


def add_self_loops(edge_index, num_nodes: int):
    """``edge_index`` with an edge i -> i appended for every node (existing loops kept)."""
    raw = unbox_all(edge_index)
    xp = module_of(raw)
    loops = xp.arange(num_nodes, dtype=raw.dtype)
    return xp.concatenate([raw, xp.stack([loops, loops])], axis=1)


def remove_self_loops(edge_index):
    """``edge_index`` without its i -> i edges (PyG's ``remove_self_loops``).

    Example:
        >>> remove_self_loops(np.array([[0, 1, 2], [1, 1, 0]])).tolist()
        [[0, 2], [1, 0]]
    """
    raw = unbox_all(edge_index)
    return raw[:, raw[0] != raw[1]]


def add_remaining_self_loops(edge_index, num_nodes: int, edge_weight=None,
                             fill_value: float = 1.0):
    """PyG's ``add_remaining_self_loops``: ``(edge_index', edge_weight')`` with every
    existing i -> i edge removed and exactly one loop per node appended (nodes 0..N-1, in
    order, after the other edges). A node that had a loop keeps that loop's weight (the
    last one if it had several); the others get ``fill_value``. ``edge_weight`` None gives
    None back.

    Example:
        >>> ei, w = add_remaining_self_loops(np.array([[0, 1, 1], [1, 1, 0]]), 2,
        ...                                  np.array([1.0, 5.0, 2.0]))
        >>> ei.tolist(), w.tolist()
        ([[0, 1, 0, 1], [1, 0, 0, 1]], [1.0, 2.0, 1.0, 5.0])
    """
    raw = unbox_all(edge_index)
    xp = module_of(raw)
    keep = raw[0] != raw[1]
    ei = add_self_loops(raw[:, keep], num_nodes)
    if edge_weight is None:
        return ei, None
    # Index of each node's (last) existing loop; nodes without one take fill_value.
    loop_edges = xp.flatnonzero(~keep)
    nodes = raw[0, loop_edges]
    last = xp.zeros(num_nodes, dtype=np.int64)
    has = xp.zeros(num_nodes, dtype=bool)
    # The largest edge position per node is its last loop; a maximum, not an assignment,
    # because CuPy's writes to duplicate indices land in no defined order.
    xp.maximum.at(last, nodes, loop_edges.astype(np.int64))
    has[nodes] = True
    loop_w = ops.where(has, ops.take(edge_weight, last), fill_value)
    kept_w = ops.take(edge_weight, xp.flatnonzero(keep))
    return ei, ops.concatenate([kept_w, ops.astype(loop_w, unbox_all(edge_weight).dtype)])


# ------------------------------------------------------------------------ GCN
def gcn_norm_adjacency(adj, add_self_loops: bool = True):
    """Kipf & Welling's ``D^-1/2 (A + I) D^-1/2`` for a dense (N, N) adjacency.

    D is the degree (row sums) of ``A + I``; isolated nodes (degree 0 without self loops)
    get 0 instead of a division by zero. Self loops follow PyG's ``gcn_norm``
    (``add_remaining_self_loops``): a node whose diagonal entry is already nonzero keeps
    it, the others get 1, so an explicit loop is not counted twice.

    Example:
        >>> gcn_norm_adjacency(np.array([[0.0, 1.0], [1.0, 0.0]])).round(6).tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    s = _shape(adj)
    if len(s) != 2 or s[0] != s[1]:
        raise ShapeError(f"gcn_norm_adjacency: adjacency must be square (N, N), got {s}")
    a = adj
    if add_self_loops:
        raw = unbox_all(adj)
        xp = module_of(raw)
        missing = xp.diagonal(raw) == 0  # (N,): nodes without a loop get one of weight 1
        a = a + xp.diag(missing.astype(raw.dtype))
    deg = ops.sum(a, axis=1)
    positive = ops.greater(deg, 0)
    inv_sqrt = ops.where(positive, 1.0 / ops.sqrt(ops.where(positive, deg, 1.0)), 0.0)
    return ops.expand_dims(inv_sqrt, 1) * a * ops.expand_dims(inv_sqrt, 0)


def _gcn_weights(gp: GraphPlans, edge_weight):
    """``d_src^-1/2 w_e d_dst^-1/2`` with d the weighted in-degree over ``gp``'s edges."""
    deg = csr_sum(edge_weight, plan=gp.seg)  # (N,)
    positive = ops.greater(deg, 0)
    inv_sqrt = ops.where(positive, 1.0 / ops.sqrt(ops.where(positive, deg, 1.0)), 0.0)
    return (csr_sum(inv_sqrt, plan=gp.gather_src) * edge_weight
            * csr_sum(inv_sqrt, plan=gp.gather_dst))


def gcn_norm_edges(
    edge_index, num_nodes: int, edge_weight=None, self_loops: bool = True, dtype=np.float32
):
    """Sparse GCN normalization: ``(edge_index', w)`` with ``w_e = d_src^-1/2 a_e d_dst^-1/2``.

    Unit edge weights (``edge_weight=None``) are made in ``dtype`` (match the features').

    Degrees count the in-edges of each target (``A + I`` rows for a symmetric graph), so
    ``message_passing(x, *gcn_norm_edges(...))`` equals ``gcn_norm_adjacency(A) @ x``.
    ``self_loops`` as PyG's ``gcn_norm``: :func:`add_remaining_self_loops` (an existing
    loop is replaced by one loop with its weight, not doubled; the loops come last).

    Example:
        >>> ei, w = gcn_norm_edges(np.array([[0], [1]]), 2, dtype=np.float64)
        >>> ei.tolist(), w.round(4).tolist()
        ([[0, 0, 1], [1, 0, 1]], [0.7071, 1.0, 0.5])
    """
    ei = check_edge_index(edge_index, num_nodes, "gcn_norm_edges")
    xp = module_of(ei)
    if edge_weight is None:
        edge_weight = xp.ones(ei.shape[1], dtype=dtype)
    else:
        edge_weight = _edge_weights(edge_weight, ei.shape[1], "gcn_norm_edges")
    if self_loops:
        ei, edge_weight = add_remaining_self_loops(ei, num_nodes, edge_weight)
    return ei, _gcn_weights(graph_plans(ei, num_nodes, _device(ei), "gcn_norm_edges"),
                            edge_weight)


def _gcn_graph(edge_index, n: int, self_loops: bool, device: str):
    """The plans of ``edge_index`` and of it with PyG's remaining self loops (derived once
    per graph): ``(graph, graph with loops)``."""
    gp = graph_plans(edge_index, n, device, "gcn_conv")
    key = ("gcn", self_loops)
    sub = gp.extras.get(key)
    if sub is None:
        ei = add_remaining_self_loops(gp.edge_index, n)[0] if self_loops else gp.edge_index
        sub = gp.extras[key] = GraphPlans(ei, n)
    return gp, sub


def gcn_conv(x, graph, weight, bias=None, *, edge_weight=None, add_self_loops: bool = True):
    """One GCN layer ``A_hat X W^T + b`` with a torch-layout ``weight`` (F_out, F_in).

    ``graph``: a normalized dense adjacency ``a_hat`` (N, N) (:func:`gcn_norm_adjacency`),
    or an integer ``edge_index`` (2, E): then ``A_hat = D^-1/2 (A + I) D^-1/2`` as PyG's
    ``GCNConv`` (``edge_weight`` (E,) optional, self loops as :func:`gcn_norm_edges`),
    computed once per graph and applied as a sparse product.

    Example:
        >>> ei = np.array([[0, 1], [1, 0]])
        >>> gcn_conv(np.array([[1.0], [3.0]]), ei, np.ones((1, 1))).round(6).tolist()
        [[2.0], [2.0]]
    """
    raw = unbox_all(graph)
    if getattr(raw, "dtype", np.dtype(float)).kind not in "iu":
        if edge_weight is not None:
            raise ConfigError("gcn_conv: edge_weight goes with an edge_index graph; a dense "
                              "a_hat already holds the weights")
        h = ops.matmul(graph, ops.matmul(x, ops.transpose(weight)))
        return h if bias is None else h + bias
    n = _shape(x)[0]
    check_float_operands("gcn_conv", {"x": x, "weight": weight, "edge_weight": edge_weight},
                         _GRAPH_DTYPES)
    parent, gp = _gcn_graph(raw, n, bool(add_self_loops), _device(x))
    _node_rows(x, n, "gcn_conv")
    if edge_weight is None:
        dtype = np.dtype(unbox_all(x).dtype)
        w = gp.extras.get(("unit", dtype))
        if w is None:  # constant for the graph: normalized once per dtype
            w = _gcn_weights(gp, module_of(gp.agg.indptr).ones(gp.agg.nnz, dtype=dtype))
            if device_of(w) == "cpu":  # read-only: the CPU twin may keep its matrix
                w.flags.writeable = False
            gp.extras[("unit", dtype)] = w
    else:
        w = _edge_weights(edge_weight, raw.shape[1], "gcn_conv")
        if add_self_loops:
            w = add_remaining_self_loops(parent.edge_index, n, w)[1]
        w = _gcn_weights(gp, w)
    h = csr_weighted_sum(ops.matmul(x, ops.transpose(weight)), w, plan=gp.agg)
    return h if bias is None else h + bias


# ------------------------------------------------------------------------ GAT
def gat_conv(
    x,
    edge_index,
    weight,
    att_src,
    att_dst,
    bias=None,
    num_heads: int = 1,
    concat: bool = True,
    negative_slope: float = 0.2,
    self_loops: bool = True,
    return_attention: bool = False,
):
    """One graph-attention layer (Velickovic et al., PyG's ``GATConv`` parameters).

    ``h = x W^T`` split into heads (N, heads, F'); ``e_ij = leaky_relu(a_src . h_j +
    a_dst . h_i)`` for each edge j -> i; ``alpha`` = softmax of e over i's in-edges;
    ``out_i = sum_j alpha_ij h_j``. Shapes: ``weight`` (heads*F', F_in), ``att_src`` and
    ``att_dst`` (heads, F'). ``concat``: (N, heads*F') else the mean over heads (N, F').
    ``self_loops`` as PyG's ``GATConv(add_self_loops=True)``: existing i -> i edges are
    removed, then one loop per node is added, so a node attends to itself exactly once.
    """
    n = _shape(x)[0]
    gp = graph_plans(edge_index, n, _device(x), "gat_conv")
    hf = _shape(weight)[0]
    if (
        hf % num_heads
        or _shape(att_src) != (num_heads, hf // num_heads)
        or _shape(att_dst) != _shape(att_src)
    ):
        raise ShapeError(
            f"gat_conv: weight {_shape(weight)} must be (heads*F', F_in) and att_src/att_dst "
            f"(heads, F') with heads={num_heads}; got att_src {_shape(att_src)}, "
            f"att_dst {_shape(att_dst)}"
        )
    if self_loops:
        sub = gp.extras.get("gat")
        if sub is None:
            sub = gp.extras["gat"] = GraphPlans(
                add_self_loops(remove_self_loops(gp.edge_index), n), n)
        gp = sub
    h = ops.reshape(ops.matmul(x, ops.transpose(weight)), (n, num_heads, hf // num_heads))
    a_src = ops.sum(h * att_src, axis=-1)  # (N, heads)
    a_dst = ops.sum(h * att_dst, axis=-1)
    e = leaky_relu(csr_sum(a_src, plan=gp.gather_src) + csr_sum(a_dst, plan=gp.gather_dst),
                   negative_slope)  # (E, heads)
    alpha = plan_segment_softmax(e, gp.seg)  # (E, heads): softmax over each target's in-edges
    out = csr_weighted_sum(h, alpha, plan=gp.agg)  # (N, heads, F')
    out = ops.reshape(out, (n, hf)) if concat else ops.mean(out, axis=1)
    if bias is not None:
        out = out + bias
    return (out, (gp.edge_index.copy(), alpha)) if return_attention else out


__all__ = [
    "add_remaining_self_loops", "add_self_loops", "gat_conv", "gcn_conv", "gcn_norm_adjacency",
    "gcn_norm_edges", "message_passing", "readout", "remove_self_loops", "segment_max",
    "segment_mean", "segment_softmax",
]
