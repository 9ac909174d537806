"""CSR plans: the sparse structure of a graph, built once per graph, and the primitives
that multiply by it (message passing, segment sums, gathers), backward included.

A :class:`CSRPlan` holds a sparse matrix S (R, M) in CSR form (``indptr``, ``col``) plus,
for each nonzero, ``wid``: the index of the weight that scales it, in the order the
entries were given (edge order). Built from entries ``(rows[e], cols[e])``:

* message passing over ``edge_index`` (sources; targets): rows = targets, cols = sources;
  ``S x`` sums each node's in-edge messages, with per-edge weights ``w[e]``;
* a segment sum of edge values: rows = segment ids, cols = ``arange(E)``;
* a gather ``x[index]``: one nonzero per row (``is_gather``).

Every product is one of two primitives, :data:`csr_sum` (``S x``) and
:data:`csr_weighted_sum` (``S_w x``, w per nonzero and head), and their vjps are the same
primitives on the transposed plan (``plan.T``, built on first use and kept): grad of grad
works, and no backward needs a scatter-add. The gradient of the weights is the per-edge
dot product ``g[row_e] . x[col_e]``, from the plan's two gathers.

"Built once per graph": :func:`graph_plans` and :func:`segment_plan` keep the plans of
the last few index arrays in a small cache keyed by *content*: a lookup compares the
array with a private copy of the one the plans were built from (shape, dtype, device,
then every element). Identity (``id``) is never trusted: an array freed and another
allocated at the same address, or an array changed in place, gives a different content
and a new plan; an equal array (a fresh copy of the same edges each step) reuses the
plan. The element-wise comparison costs one pass over the indices (tens of microseconds
for 40,000 ints on one core), far less than building the plan (a sort) or a product.

Example:
    >>> import numpy as np
    >>> plan = build_plan(np.array([1, 1, 0]), np.array([0, 2, 1]), 2, 3)
    >>> csr_sum(np.array([[1.0], [2.0], [4.0]]), plan=plan).tolist()  # out[1] = x0 + x2
    [[2.0], [5.0]]
"""

from __future__ import annotations

import threading

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced, stop_gradient, unbox_all
from gpudl.backend import device_of, module_of, to_device
from gpudl.errors import DTypeError, IndexRangeError, ShapeError
from gpudl.functional._graph_kernels import (
    csr_max_raw,
    csr_sum_raw,
    csr_weighted_sum_raw,
    edge_dot_raw,
)

INT32_LIMIT = 2**31 - 1
CACHE_SIZE = 8  # index arrays whose plans are kept (a few graphs, their batches and loops)


class CSRPlan:
    """A sparse matrix (R, M) in CSR order, with the edge order of its nonzeros.

    ``indptr`` (R+1,), ``col`` (K,), ``wid`` (K,): int32 on the graph's device.
    ``entry_rows`` / ``entry_cols`` (K,): row and column of entry e in the given order
    (weight e scales entry e). ``T`` (the transpose), ``gather_rows`` (x[entry_rows]) and
    ``gather_cols`` (x[entry_cols]) are built on first use and kept.
    """

    __slots__ = ("indptr", "col", "wid", "n_rows", "n_cols", "nnz", "entry_rows", "entry_cols",
                 "is_gather", "host", "_transpose", "_gathers", "__weakref__")

    def __init__(self, indptr, col, wid, n_cols: int, entry_rows, entry_cols,
                 is_gather: bool = False):
        self.indptr, self.col, self.wid = indptr, col, wid
        self.n_rows, self.n_cols, self.nnz = int(indptr.shape[0]) - 1, int(n_cols), int(col.shape[0])
        self.entry_rows, self.entry_cols = entry_rows, entry_cols
        self.is_gather = is_gather
        self.host: dict = {}  # what the CPU twin reuses (scipy matrices, segment starts)
        self._transpose: CSRPlan | None = None
        self._gathers: dict[str, CSRPlan] = {}

    def __repr__(self) -> str:
        return f"CSRPlan({self.n_rows}x{self.n_cols}, nnz={self.nnz})"

    @property
    def T(self) -> CSRPlan:  # noqa: N802 - the matrix transpose, as NumPy's .T
        if self._transpose is None:
            t = build_plan(self.entry_cols, self.entry_rows, self.n_cols, self.n_rows)
            t._transpose, self._transpose = self, t
        return self._transpose

    def _gather(self, which: str) -> CSRPlan:
        """(K, n) plan picking, for each entry e, row ``entry_<which>[e]`` of an array."""
        g = self._gathers.get(which)
        if g is None:
            index = self.entry_rows if which == "rows" else self.entry_cols
            source = self if which == "rows" else self.T
            g = gather_plan(index, source.n_rows)
            # Its transpose sums entry values by row (or column): the sorted order of
            # `source` already, so no second sort.
            g._transpose = CSRPlan(source.indptr, source.wid, source.wid, self.nnz, index,
                                   g.wid)
            g._transpose._transpose = g
            self._gathers[which] = g
        return g

    @property
    def gather_rows(self) -> CSRPlan:
        return self._gather("rows")

    @property
    def gather_cols(self) -> CSRPlan:
        return self._gather("cols")


def build_plan(rows, cols, n_rows: int, n_cols: int) -> CSRPlan:
    """The plan of entries ``(rows[e], cols[e])``: indices already range-checked, on the
    device the products will run on. Entries of one row keep their given order."""
    xp = module_of(rows)
    k = int(rows.shape[0])
    if max(k, n_rows, n_cols) > INT32_LIMIT:
        raise ShapeError(f"graph structure: {k} entries over {n_rows} x {n_cols} nodes; "
                         f"plans index with int32 (at most {INT32_LIMIT}). Split the graph.")
    # Unique keys (row, position): any sort is then the stable one, on NumPy and CuPy alike.
    keys = rows.astype(np.int64) * max(k, 1) + xp.arange(k, dtype=np.int64)
    order = xp.argsort(keys)
    indptr = xp.zeros(n_rows + 1, dtype=np.int32)
    indptr[1:] = xp.cumsum(xp.bincount(rows, minlength=n_rows))
    entry_rows, entry_cols = rows.astype(np.int32), cols.astype(np.int32)
    return CSRPlan(indptr, entry_cols[order], order.astype(np.int32), n_cols, entry_rows,
                   entry_cols)


def gather_plan(index, n_cols: int) -> CSRPlan:
    """The plan of ``x[index]``: row e holds one nonzero, column ``index[e]`` (int32)."""
    xp = module_of(index)
    ar = xp.arange(index.shape[0], dtype=np.int32)
    index = index.astype(np.int32, copy=False)
    return CSRPlan(xp.arange(index.shape[0] + 1, dtype=np.int32), index, ar, n_cols, ar, index,
                   is_gather=True)


# ----------------------------------------------------------------------------- the cache
class GraphPlans:
    """The plans of one ``edge_index`` (2, E) over ``num_nodes`` nodes.

    ``agg``: targets <- sources (message passing); ``seg``: targets <- edges (a sum of
    edge values per target); ``gather_src`` / ``gather_dst``: edges <- nodes. ``extras``
    holds what callers derive from the same graph once (self-loop variants, GCN weights).
    """

    __slots__ = ("edge_index", "num_nodes", "agg", "extras")

    def __init__(self, edge_index, num_nodes: int):
        self.edge_index, self.num_nodes = edge_index, num_nodes
        self.agg = build_plan(edge_index[1], edge_index[0], num_nodes, num_nodes)
        self.extras: dict = {}

    @property
    def seg(self) -> CSRPlan:
        return self.agg.gather_rows.T

    @property
    def gather_src(self) -> CSRPlan:
        return self.agg.gather_cols

    @property
    def gather_dst(self) -> CSRPlan:
        return self.agg.gather_rows


_lock = threading.Lock()
_cache: list[tuple[tuple, object, object]] = []  # (key, private copy of the index, value)


def _cached(kind: str, index, extent: int, device: str, make):
    """The value ``make(index on device)`` for this index content (see the module doc)."""
    key = (kind, int(extent), tuple(index.shape), index.dtype.str, device_of(index), device)
    xp = module_of(index)
    with _lock:
        candidates = [(i, e) for i, e in enumerate(_cache) if e[0] == key]
    for i, (_, source, value) in candidates:
        if bool(xp.array_equal(source, index)):
            with _lock:  # most recently used first
                if i < len(_cache) and _cache[i][2] is value:
                    _cache.insert(0, _cache.pop(i))
            return value
    # The plans are built from a private copy: a caller's later in-place change can reach
    # neither them nor the copy the next lookup compares with.
    source = index.copy()
    value = make(source if device_of(source) == device else to_device(source, device))
    with _lock:
        _cache.insert(0, (key, source, value))
        del _cache[CACHE_SIZE:]
    return value


def clear_cache() -> None:
    """Forget every cached plan (tests; memory after a very large graph)."""
    with _lock:
        _cache.clear()


def _check_ids(ids, extent: int, op: str, what: str):
    raw = unbox_all(ids)
    if not hasattr(raw, "dtype") or raw.dtype.kind not in "iu":
        raise DTypeError(f"{op}: {what} must be integers, got "
                         f"{getattr(raw, 'dtype', type(raw).__name__)}; cast with "
                         ".astype('int64')")
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= extent):
        raise IndexRangeError(f"{op}: {what} must lie in [0, {extent}), got range "
                              f"[{int(raw.min())}, {int(raw.max())}]")
    return raw


def check_edge_index(edge_index, num_nodes: int, op: str):
    """The raw (2, E) integer ``edge_index`` with every entry in [0, num_nodes)."""
    raw = unbox_all(edge_index)
    if len(getattr(raw, "shape", ())) != 2 or raw.shape[0] != 2:
        raise ShapeError(f"{op}: edge_index must be (2, E) (sources; targets), got "
                         f"{getattr(raw, 'shape', None)}")
    return _check_ids(raw, num_nodes, op, "edge_index entries")


def check_segment_ids(ids, num_segments: int, op: str, what: str = "segment_ids"):
    """The raw 1-D integer ids, every one in [0, num_segments)."""
    raw = _check_ids(ids, num_segments, op, what)
    if raw.ndim != 1:
        raise ShapeError(f"{op}: {what} must be 1-D (one id per row), got shape {raw.shape}")
    return raw


def graph_plans(edge_index, num_nodes: int, device: str, op: str) -> GraphPlans:
    """The (cached) plans of ``edge_index`` on ``device``; checks the index on a miss."""
    raw = unbox_all(edge_index)
    if len(getattr(raw, "shape", ())) != 2 or raw.shape[0] != 2 or raw.dtype.kind not in "iu":
        check_edge_index(raw, num_nodes, op)  # raises the right error

    def make(ei):
        check_edge_index(ei, num_nodes, op)
        return GraphPlans(ei, num_nodes)

    return _cached("edges", raw, num_nodes, device, make)


def segment_plan(ids, num_segments: int, device: str, op: str,
                 what: str = "segment_ids") -> CSRPlan:
    """The (cached) plan summing rows of an (E, ...) array by ``ids`` (E,) into segments."""
    raw = unbox_all(ids)
    if not hasattr(raw, "dtype") or raw.dtype.kind not in "iu" or raw.ndim != 1:
        check_segment_ids(raw, num_segments, op, what)  # raises the right error

    def make(seg_ids):
        check_segment_ids(seg_ids, num_segments, op, what)
        xp = module_of(seg_ids)
        plan = build_plan(seg_ids, xp.arange(seg_ids.shape[0]), num_segments, seg_ids.shape[0])
        plan._transpose = gather_plan(seg_ids, num_segments)  # x[ids]: no sort, a take
        plan._transpose._transpose = plan
        return plan

    return _cached("segments", raw, num_segments, device, make)


# ----------------------------------------------------------------------------- primitives
def _size(shape) -> int:
    """Elements in ``shape`` (explicit: a -1 in a reshape is ambiguous for empty arrays)."""
    return int(np.prod(shape, dtype=np.int64))


def _check_x(x, plan: CSRPlan, name: str) -> None:
    if x.ndim < 1 or x.shape[0] != plan.n_cols:
        raise ShapeError(f"graph product: {name} must have {plan.n_cols} rows (one per "
                         f"source node or edge), got shape {x.shape}")


def _sum_impl(x, *, plan: CSRPlan):
    _check_x(x, plan, "x")
    out = csr_sum_raw(plan, x.reshape(x.shape[0], _size(x.shape[1:])))  # (R, J)
    return out.reshape((plan.n_rows,) + x.shape[1:])


def _sum_vjp(g, out, x, *, plan: CSRPlan):
    return (lambda: csr_sum(g, plan=plan.T),)


def _weighted_impl(x, w, *, plan: CSRPlan):
    _check_x(x, plan, "x")
    if w.shape[0] != plan.nnz or x.shape[1:w.ndim] != w.shape[1:]:
        raise ShapeError(f"graph product: weights must be ({plan.nnz},) + {x.shape[1:w.ndim]} "
                         f"(one per edge, and per head), got {w.shape}")
    heads = _size(w.shape[1:])
    x3 = x.reshape(x.shape[0], heads, _size(x.shape[w.ndim:]))  # (M, H, C)
    out = csr_weighted_sum_raw(plan, x3, w.reshape(plan.nnz, heads))
    return out.reshape((plan.n_rows,) + x.shape[1:])


def _edge_dot(g, x, w, plan: CSRPlan):
    """d/dw of ``S_w x`` against ``g``: ``g[row_e] . x[col_e]`` over the non-head axes."""
    w_shape = tuple(unbox_all(w).shape)
    rest = _size(unbox_all(x).shape[len(w_shape):])
    if not (is_traced(g) or is_traced(x)):  # first order: gathers and one fused dot
        heads = _size(w_shape[1:])
        return edge_dot_raw(plan, g.reshape(g.shape[0], heads, rest),
                            x.reshape(x.shape[0], heads, rest)).reshape(w_shape)
    # Under an outer gd.grad: the same formula in differentiable pieces.
    prod = csr_sum(g, plan=plan.gather_rows) * csr_sum(x, plan=plan.gather_cols)  # (K, ...)
    return ops.sum(ops.reshape(prod, w_shape + (rest,)), axis=-1)


def _weighted_vjp(g, out, x, w, *, plan: CSRPlan):
    return (lambda: csr_weighted_sum(g, w, plan=plan.T), lambda: _edge_dot(g, x, w, plan))


csr_sum = Primitive("graph_csr_sum", _sum_impl, _sum_vjp)
csr_weighted_sum = Primitive("graph_csr_weighted_sum", _weighted_impl, _weighted_vjp)


def csr_max(x, plan: CSRPlan, fill: float):
    """Row maxima of a plain array (no gradient): x (M, ...) -> (R, ...)."""
    raw = unbox_all(x)
    _check_x(raw, plan, "x")
    out = csr_max_raw(plan, raw.reshape(raw.shape[0], _size(raw.shape[1:])), fill)
    return out.reshape((plan.n_rows,) + raw.shape[1:])


def row_counts(plan: CSRPlan, dtype):
    """Nonzeros per row (R,) as ``dtype``: in-degrees, segment sizes."""
    return (plan.indptr[1:] - plan.indptr[:-1]).astype(dtype)


# ----------------------------------------------------------------------------- segment reductions
def plan_segment_mean(data, plan: CSRPlan):
    """Mean of the rows of ``data`` (E, ...) per plan row (0 for an empty one)."""
    raw = unbox_all(data)
    counts = module_of(plan.indptr).maximum(row_counts(plan, raw.dtype), 1)
    return csr_sum(data, plan=plan) / counts.reshape((-1,) + (1,) * (raw.ndim - 1))


def plan_segment_max(data, plan: CSRPlan):
    """Maximum per plan row (0 for an empty one); the gradient goes to the arg-max rows,
    split evenly between exact ties."""
    raw = unbox_all(data)
    xp = module_of(raw)
    m = csr_max(raw, plan, -np.inf)  # (S, ...), -inf for an empty segment
    hit = (raw == csr_sum(m, plan=plan.T)).astype(raw.dtype)  # (E, ...): the arg-max rows
    counts = csr_sum(hit, plan=plan)
    share = hit / csr_sum(xp.maximum(counts, 1), plan=plan.T)
    # Forward value: exactly m; gradient: the tie share of each arg-max row.
    delta = csr_sum((data - stop_gradient(data)) * share, plan=plan)
    return xp.where(counts > 0, m, 0).astype(raw.dtype) + delta


def plan_segment_softmax(scores, plan: CSRPlan):
    """Softmax of ``scores`` (E, ...) within each plan row (a node's in-edges)."""
    # The shift only needs to be constant within a segment: no gradient through it.
    shift = csr_sum(csr_max(unbox_all(scores), plan, -np.inf), plan=plan.T)
    e = ops.exp(scores - shift)
    return e / csr_sum(csr_sum(e, plan=plan), plan=plan.T)
