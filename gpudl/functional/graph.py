"""Graph ops: GCN normalization, message passing over an ``edge_index``, segment
reductions (sum/mean/max/softmax), graph-level readouts, GCN and GAT layers (functional).

Conventions (PyTorch Geometric's): ``edge_index`` is an integer array (2, E) whose row 0
holds source nodes and row 1 target nodes; a message flows source -> target and is
aggregated at the target. ``batch`` (num_nodes,) says which graph each node belongs to.

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
from gpudl.autodiff import stop_gradient, unbox_all
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, DTypeError, IndexRangeError, ShapeError
from gpudl.functional.activations import leaky_relu


def _check_ids(ids, num_segments: int, op: str, what: str = "segment_ids"):
    raw = unbox_all(ids)
    if not hasattr(raw, "dtype") or raw.dtype.kind not in "iu":
        raise DTypeError(f"{op}: {what} must be integers, got {getattr(raw, 'dtype', type(raw))}")
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= num_segments):
        raise IndexRangeError(
            f"{op}: {what} must lie in [0, {num_segments}), got range "
            f"[{int(raw.min())}, {int(raw.max())}]"
        )
    return raw


def _check_edge_index(edge_index, num_nodes: int, op: str):
    raw = unbox_all(edge_index)
    if len(getattr(raw, "shape", ())) != 2 or raw.shape[0] != 2:
        raise ShapeError(
            f"{op}: edge_index must be (2, E) (sources; targets), got {getattr(raw, 'shape', None)}"
        )
    return _check_ids(raw, num_nodes, op, "edge_index entries")


# ------------------------------------------------------------------------ segment reductions
def segment_mean(data, segment_ids, num_segments: int):
    """Mean of the rows of ``data`` in each segment (0 for an empty segment)."""
    ids = _check_ids(segment_ids, num_segments, "segment_mean")
    xp = module_of(ids)
    counts = xp.bincount(ids, minlength=num_segments).astype(unbox_all(data).dtype)
    counts = xp.maximum(counts, 1).reshape((num_segments,) + (1,) * (len(_shape(data)) - 1))
    return ops.segment_sum(data, ids, num_segments) / counts


def _segment_max_values(raw, ids, num_segments: int):
    """Plain per-segment maxima (-inf for empty segments)."""
    xp = module_of(raw)
    out = xp.full((num_segments,) + raw.shape[1:], -np.inf, dtype=raw.dtype)
    xp.maximum.at(out, ids, raw)
    return out


def segment_max(data, segment_ids, num_segments: int):
    """Maximum of the rows of ``data`` in each segment (0 for an empty segment, as PyG).

    The gradient goes to the arg-max rows, split evenly between exact ties.
    """
    ids = _check_ids(segment_ids, num_segments, "segment_max")
    raw = unbox_all(data)
    m = _segment_max_values(raw, ids, num_segments)
    xp = module_of(raw)
    hit = raw == m[ids]  # (E, ...)
    counts = xp.zeros(m.shape, dtype=raw.dtype)
    xp.add.at(counts, ids, hit.astype(raw.dtype))
    share = hit.astype(raw.dtype) / xp.maximum(counts, 1)[ids]
    # Forward value: exactly m; gradient: the tie share of each arg-max row.
    delta = ops.segment_sum((data - stop_gradient(data)) * share, ids, num_segments)
    return xp.where(counts > 0, m, 0).astype(raw.dtype) + delta


def segment_softmax(scores, segment_ids, num_segments: int):
    """Softmax of ``scores`` (E,) or (E, H) within each segment (e.g. over a node's in-edges).

    Example:
        >>> segment_softmax(np.array([0.0, 0.0, 5.0]), np.array([0, 0, 1]), 2).tolist()
        [0.5, 0.5, 1.0]
    """
    ids = _check_ids(segment_ids, num_segments, "segment_softmax")
    # The shift only needs to be constant within a segment: no gradient through it.
    m = _segment_max_values(unbox_all(scores), ids, num_segments)
    e = ops.exp(scores - m[ids])
    denom = ops.segment_sum(e, ids, num_segments)
    return e / ops.take(denom, ids, axis=0)


def readout(x, batch, num_graphs: int, reduce: str = "sum"):
    """Graph-level pooling: ``reduce`` ('sum' | 'mean' | 'max') node features (N, F) per graph.

    Example:
        >>> readout(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2, "mean").tolist()
        [[2.0], [5.0]]
    """
    if reduce == "sum":
        return ops.segment_sum(x, _check_ids(batch, num_graphs, "readout", "batch"), num_graphs)
    if reduce == "mean":
        return segment_mean(x, batch, num_graphs)
    if reduce == "max":
        return segment_max(x, batch, num_graphs)
    raise ConfigError(f"readout: reduce must be 'sum', 'mean' or 'max', got {reduce!r}")


# ------------------------------------------------------------------------ message passing
def message_passing(
    x, edge_index, edge_weight=None, aggr: str = "sum", num_nodes: int | None = None
):
    """Aggregate ``x[source] * edge_weight`` at each target node: (N, F) -> (N, F).

    ``aggr``: 'sum' (scatter-add), 'mean' or 'max'. Nodes with no in-edges get 0.
    """
    n = _shape(x)[0] if num_nodes is None else num_nodes
    ei = _check_edge_index(edge_index, n, "message_passing")
    msgs = ops.take(x, ei[0], axis=0)  # (E, F)
    if edge_weight is not None:
        if _shape(edge_weight) != (ei.shape[1],):
            raise ShapeError(
                f"message_passing: edge_weight must be (E,) = ({ei.shape[1]},), "
                f"got {_shape(edge_weight)}"
            )
        msgs = msgs * ops.reshape(edge_weight, (-1,) + (1,) * (len(_shape(x)) - 1))
    if aggr == "sum":
        return ops.segment_sum(msgs, ei[1], n)
    if aggr == "mean":
        return segment_mean(msgs, ei[1], n)
    if aggr == "max":
        return segment_max(msgs, ei[1], n)
    raise ConfigError(f"message_passing: aggr must be 'sum', 'mean' or 'max', got {aggr!r}")


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


def gcn_norm_edges(
    edge_index, num_nodes: int, edge_weight=None, self_loops: bool = True, dtype=np.float32
):
    """Sparse GCN normalization: ``(edge_index', w)`` with ``w_e = d_src^-1/2 a_e d_dst^-1/2``.

    Unit edge weights (``edge_weight=None``) are made in ``dtype`` (match the features').

    Degrees count the in-edges of each target (``A + I`` rows for a symmetric graph), so
    ``message_passing(x, *gcn_norm_edges(...))`` equals ``gcn_norm_adjacency(A) @ x``.
    ``self_loops`` as PyG's ``gcn_norm``: :func:`add_remaining_self_loops` (an existing
    loop is replaced by one loop with its weight, not doubled; the loops come last).
    """
    ei = _check_edge_index(edge_index, num_nodes, "gcn_norm_edges")
    xp = module_of(ei)
    if edge_weight is None:
        edge_weight = xp.ones(ei.shape[1], dtype=dtype)
    if self_loops:
        ei, edge_weight = add_remaining_self_loops(ei, num_nodes, edge_weight)
    deg = ops.segment_sum(edge_weight, ei[1], num_nodes)
    positive = ops.greater(deg, 0)
    inv_sqrt = ops.where(positive, 1.0 / ops.sqrt(ops.where(positive, deg, 1.0)), 0.0)
    return ei, ops.take(inv_sqrt, ei[0]) * edge_weight * ops.take(inv_sqrt, ei[1])


def gcn_conv(x, a_hat, weight, bias=None):
    """One GCN layer ``A_hat X W^T + b`` with a normalized dense adjacency ``a_hat`` (N, N)
    and a torch-layout ``weight`` (F_out, F_in)."""
    h = ops.matmul(a_hat, ops.matmul(x, ops.transpose(weight)))
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
    ei = _check_edge_index(edge_index, n, "gat_conv")
    if self_loops:
        ei = add_self_loops(remove_self_loops(ei), n)
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
    h = ops.reshape(ops.matmul(x, ops.transpose(weight)), (n, num_heads, hf // num_heads))
    a_src = ops.sum(h * att_src, axis=-1)  # (N, heads)
    a_dst = ops.sum(h * att_dst, axis=-1)
    src, dst = ei[0], ei[1]
    e = leaky_relu(ops.take(a_src, src, axis=0) + ops.take(a_dst, dst, axis=0), negative_slope)
    alpha = segment_softmax(e, dst, n)  # (E, heads)
    msgs = ops.take(h, src, axis=0) * ops.expand_dims(alpha, -1)  # (E, heads, F')
    out = ops.segment_sum(msgs, dst, n)  # (N, heads, F')
    out = ops.reshape(out, (n, hf)) if concat else ops.mean(out, axis=1)
    if bias is not None:
        out = out + bias
    return (out, (ei, alpha)) if return_attention else out


__all__ = [
    "add_remaining_self_loops", "add_self_loops", "gat_conv", "gcn_conv", "gcn_norm_adjacency",
    "gcn_norm_edges", "message_passing", "readout", "remove_self_loops", "segment_max",
    "segment_mean", "segment_softmax",
]
