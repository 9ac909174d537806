"""The two bodies of the graph plan products: kernels/graph.cu on CUDA, NumPy twins.

A plan (:class:`gpudl.functional._graph_structure.CSRPlan`) is a sparse matrix in CSR
form: ``indptr`` (R+1), and per nonzero k in row order ``col[k]`` (the row of x it reads)
and ``wid[k]`` (the row of w that scales it). The bodies compute

* ``csr_sum``:          out[r] = sum_{k in row r} x[col[k]]                 x (M, J)
* ``csr_weighted_sum``: out[r, h] = sum_{k in row r} w[wid[k], h] * x[col[k], h]
                        x (M, H, C), w (E, H)
* ``csr_max``:          out[r] = max_{k in row r} x[col[k]] (``fill`` for an empty row)

The CPU twin multiplies by a ``scipy.sparse`` CSR matrix (its loop sums each row in k
order, from 0, as the kernel); without scipy it gathers the rows and adds them with
``np.add.reduceat`` over the sorted segments (the same sums, other rounding). A plan whose
rows hold one nonzero each is a gather: ``x[col]`` on both paths.

Example:
    >>> from gpudl.functional._graph_structure import build_plan
    >>> plan = build_plan(np.array([1, 0, 1]), np.array([0, 1, 2]), 2, 3)  # out[1] = x0 + x2
    >>> csr_sum_twin(plan, np.array([[1.0], [2.0], [4.0]])).tolist()
    [[2.0], [5.0]]
"""

from __future__ import annotations

import weakref

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.cuda import DEFAULT_BLOCK, KernelSource, contiguous_inputs, grid_1d, launch, type_name
from gpudl.errors import ShapeError

try:  # scipy comes with the `data` extra; the reduceat path below works without it
    import scipy.sparse as _scipy_sparse
except ImportError:  # pragma: no cover - exercised by forcing USE_SCIPY off in the tests
    _scipy_sparse = None

GRAPH_KERNELS = KernelSource(
    "graph.cu",
    [f"{k}<{t}>" for k in ("csr_sum", "csr_weighted_sum", "csr_max")
     for t in ("float", "double")],
)

# The CPU twin's sparse product: scipy's CSR matrix when it imports; the tests switch this
# off to run (and compare) the reduceat path, which is what a machine without scipy runs.
USE_SCIPY = _scipy_sparse is not None


# ----------------------------------------------------------------------------- NumPy twins
def _host(plan) -> dict:
    """Host-side arrays a plan's twin reuses: the non-empty rows and their first nonzero."""
    cached = plan.host.get("segments")
    if cached is None:
        starts = plan.indptr[:-1].astype(np.intp)
        nonempty = np.flatnonzero(plan.indptr[1:] > plan.indptr[:-1])
        cached = plan.host["segments"] = (nonempty, starts[nonempty])
    return cached


def _reduceat_sum(plan, values):
    """Row sums of ``values`` (K, ...) in plan order: np.add.reduceat over sorted segments."""
    out = np.zeros((plan.n_rows,) + values.shape[1:], dtype=values.dtype)
    nonempty, starts = _host(plan)
    if nonempty.size:
        out[nonempty] = np.add.reduceat(values, starts, axis=0)
    return out


def _scipy_matrix(plan, data):
    """The plan as a scipy CSR matrix (R, M) holding ``data`` (K,) in plan order."""
    return _scipy_sparse.csr_matrix((data, plan.col, plan.indptr),
                                    shape=(plan.n_rows, plan.n_cols), copy=False)


def _weighted_matrix(plan, w):
    """The plan as a scipy matrix with one weight per nonzero (w (E, 1)).

    Weights that cannot change (a view of a read-only array that owns its memory: GCN's
    normalized weights, cached per graph) keep their matrix in the plan, found by the
    owner's identity (a weak reference) and the view's address, shape and strides; any
    other array is gathered into a fresh matrix on every call.
    """
    owner = w if w.base is None else w.base
    frozen = isinstance(owner, np.ndarray) and owner.base is None and not owner.flags.writeable
    view = (w.__array_interface__["data"][0], w.shape, w.strides, w.dtype)
    if frozen:
        ref, seen, a = plan.host.get("frozen", (None, None, None))
        if ref is not None and ref() is owner and seen == view:
            return a
    a = _scipy_matrix(plan, np.take(w[:, 0], plan.wid))
    if frozen:
        plan.host["frozen"] = (weakref.ref(owner), view, a)
    return a


def csr_sum_twin(plan, x):
    """NumPy body: x (M, J) -> out (R, J), ``out[r] = sum_{k in row r} x[col[k]]``."""
    if plan.is_gather:
        return np.take(x, plan.col, axis=0)
    if not USE_SCIPY or plan.nnz == 0 or x.shape[1] == 0:
        return _reduceat_sum(plan, np.take(x, plan.col, axis=0))
    key = ("ones", x.dtype)
    a = plan.host.get(key)
    if a is None:  # the unweighted matrix is the same on every call: built once
        a = plan.host[key] = _scipy_matrix(plan, np.ones(plan.nnz, dtype=x.dtype))
    return np.asarray(a @ x, dtype=x.dtype)


def csr_weighted_sum_twin(plan, x, w):
    """NumPy body: x (M, H, C), w (E, H) -> out (R, H, C)."""
    heads = x.shape[1]
    if plan.is_gather:
        return np.take(x, plan.col, axis=0) * np.take(w, plan.wid, axis=0)[:, :, None]
    if not USE_SCIPY or plan.nnz == 0 or x.shape[2] == 0:
        msgs = np.take(x, plan.col, axis=0) * np.take(w, plan.wid, axis=0)[:, :, None]
        return _reduceat_sum(plan, msgs)
    if heads == 1:
        out = _weighted_matrix(plan, w) @ x[:, 0]
        return np.asarray(out, dtype=x.dtype)[:, None]
    # One product for all heads: row (r, h) of the expanded matrix holds row r's nonzeros,
    # reading x[col[k], h] scaled by w[wid[k], h] (in k order, as the kernel).
    indptr, col, widx = _head_layout(plan, heads)
    a = _scipy_sparse.csr_matrix((np.take(w.reshape(-1), widx), col, indptr),
                                 shape=(plan.n_rows * heads, plan.n_cols * heads), copy=False)
    out = a @ x.reshape(plan.n_cols * heads, x.shape[2])
    return np.asarray(out, dtype=x.dtype).reshape((plan.n_rows,) + x.shape[1:])


def _head_layout(plan, heads: int):
    """The plan expanded to rows (r, h): (indptr, col, weight index into w.ravel()), kept."""
    key = ("heads", heads)
    cached = plan.host.get(key)
    if cached is None:
        counts = np.diff(plan.indptr).astype(np.int64)  # (R,)
        k = np.arange(plan.nnz, dtype=np.int64)
        row = np.repeat(np.arange(plan.n_rows, dtype=np.int64), counts)  # (K,)
        h = np.arange(heads, dtype=np.int64)
        # Order the (k, h) pairs by (row, h), then k: unique keys, so any sort is stable.
        order = np.argsort(((row[:, None] * heads + h) * plan.nnz + k[:, None]).ravel())
        kk, hh = order // heads, order % heads
        indptr = np.zeros(plan.n_rows * heads + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.repeat(counts, heads))
        cached = plan.host[key] = (indptr, plan.col[kk].astype(np.int64) * heads + hh,
                                   plan.wid[kk].astype(np.int64) * heads + hh)
    return cached


def csr_max_twin(plan, x, fill):
    """NumPy body: x (M, J) -> out (R, J), row maxima (``fill`` for an empty row)."""
    if plan.is_gather:
        return np.take(x, plan.col, axis=0)
    out = np.full((plan.n_rows,) + x.shape[1:], fill, dtype=x.dtype)
    nonempty, starts = _host(plan)
    if nonempty.size and x.shape[1]:
        # np.maximum propagates NaN, as the kernel's comparison.
        out[nonempty] = np.maximum.reduceat(np.take(x, plan.col, axis=0), starts, axis=0)
    return out


# ----------------------------------------------------------------------------- CUDA bodies
def _check_rows(op: str, plan, x, what: str = "x") -> None:
    # The kernels read x[col[k]]: a plan never sees an x with fewer rows than it was built
    # for (the callers check shapes first; this is the launcher's last line).
    if x.shape[0] != plan.n_cols:
        raise ShapeError(f"{op}: {what} has {x.shape[0]} rows, the graph plan needs "
                         f"{plan.n_cols}")


def csr_sum_cuda(plan, x, op: str = "graph csr_sum"):
    """CUDA body (CuPy arrays): same result as csr_sum_twin."""
    cupy = module_of(x)
    _check_rows(op, plan, x)
    (x,) = contiguous_inputs(op, x)
    rows, feat = plan.n_rows, x.shape[1]
    out = cupy.empty((rows, feat), dtype=x.dtype)
    if out.size:
        launch(GRAPH_KERNELS.get(f"csr_sum<{type_name(x.dtype)}>"), grid_1d(out.size),
               (DEFAULT_BLOCK,), (plan.indptr, plan.col, x, out, np.int32(rows), np.int32(feat)))
    return out


def csr_weighted_sum_cuda(plan, x, w, op: str = "graph csr_weighted_sum"):
    """CUDA body (CuPy arrays): same result as csr_weighted_sum_twin."""
    cupy = module_of(x)
    _check_rows(op, plan, x)
    if w.shape[0] != plan.nnz or w.shape[1] != x.shape[1]:
        raise ShapeError(f"{op}: w must be ({plan.nnz}, {x.shape[1]}), got {w.shape}")
    x, w = contiguous_inputs(op, x, w, dtype=x.dtype)
    rows, heads, chan = plan.n_rows, x.shape[1], x.shape[2]
    out = cupy.empty((rows, heads, chan), dtype=x.dtype)
    if out.size:
        launch(GRAPH_KERNELS.get(f"csr_weighted_sum<{type_name(x.dtype)}>"), grid_1d(out.size),
               (DEFAULT_BLOCK,), (plan.indptr, plan.col, plan.wid, x, w, out, np.int32(rows),
                                  np.int32(heads), np.int32(chan)))
    return out


def csr_max_cuda(plan, x, fill, op: str = "graph csr_max"):
    """CUDA body (CuPy arrays): same result as csr_max_twin."""
    cupy = module_of(x)
    _check_rows(op, plan, x)
    (x,) = contiguous_inputs(op, x)
    rows, feat = plan.n_rows, x.shape[1]
    out = cupy.empty((rows, feat), dtype=x.dtype)
    if out.size:
        launch(GRAPH_KERNELS.get(f"csr_max<{type_name(x.dtype)}>"), grid_1d(out.size),
               (DEFAULT_BLOCK,), (plan.indptr, plan.col, x, out, np.int32(rows), np.int32(feat),
                                  x.dtype.type(fill)))
    return out


# ----------------------------------------------------------------------------- edge dots
def edge_dot_raw(plan, g, x):
    """Per nonzero (edge order) and head: ``sum_c g[entry_rows[e], h, c] * x[entry_cols[e],
    h, c]``; g (R, H, C), x (M, H, C) -> (K, H). The weights' gradient of csr_weighted_sum.

    Both devices: two row gathers and one einsum (no (K, H, C) product kept).
    """
    xp = module_of(x)
    return xp.einsum("ehc,ehc->eh", xp.take(g, plan.entry_rows, axis=0),
                     xp.take(x, plan.entry_cols, axis=0))


# ----------------------------------------------------------------------------- dispatch
def csr_sum_raw(plan, x):
    return (csr_sum_cuda if device_of(x) == "cuda" else csr_sum_twin)(plan, x)


def csr_weighted_sum_raw(plan, x, w):
    return (csr_weighted_sum_cuda if device_of(x) == "cuda" else csr_weighted_sum_twin)(
        plan, x, w)


def csr_max_raw(plan, x, fill):
    return (csr_max_cuda if device_of(x) == "cuda" else csr_max_twin)(plan, x, fill)
