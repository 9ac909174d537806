"""The attention path's fused primitives: fewer passes, fewer fresh arrays, fewer tape nodes.

Each body is written with the array module's own ufuncs (``out=``, in place on buffers the
body allocated itself), so one body serves NumPy and CuPy; the vjps run the same fused
formulas on plain arrays and switch to ``gpudl.ops`` when an outer ``gd.grad`` traces them
(grad of grad). Their ONNX converters are in ``gpudl/export/onnx_converters.py``.

* ``linear_rows``: the 2-D GEMM + bias (+ ReLU) of the projections, defined in
  ``gpudl/functional/linear.py`` (``F.linear`` runs on it) and imported from there.
* ``attention_weights(q, k, keep, *, scale)``: ``softmax(scale * q k^T)`` over the keys
  where ``keep`` (boolean, True = attend, broadcast to (..., Lq, Lk) from its own small
  shape such as (N, 1, 1, Lk)), 0 elsewhere; a query with no key to attend to gets a zero
  row. The body owns the scores buffer and normalises it in place (4 passes; the
  composite makes 7 fresh arrays, two of them full-size ``np.where``); the vjp is the
  one-pass softmax backward ``scale * y * (g - sum(g * y))`` and two GEMMs.
* ``packed_self_attention(qkv, keep, num_heads)``: the whole of multi-head self-attention
  between the projections: q, k, v read as views of the packed (N, L, 3E) projection,
  the weights as above, ``weights @ v`` written straight into the merged (N, L, E) layout;
  its vjp writes dq, dk, dv into their thirds of one (N, L, 3E) buffer and reuses the
  weights' cotangent buffer for the softmax backward. Two arrays saved per layer (the
  projection and the weights) and two nodes, where the composite has some fifteen.
* ``split_qkv_heads(qkv, *, num_heads)``: a packed (N, L, 3E) projection -> q, k, v as
  (N, h, L, E/h) views (torch's packing order), for the paths the fused one does not take
  (attention dropout, float masks); the vjp writes the three cotangents into one buffer
  (three slices would each zero-fill a (N, L, 3E) array and add).

Example:
    >>> import numpy as np
    >>> w = attention_weights(np.zeros((1, 2, 3)), np.zeros((1, 4, 3)),
    ...                       np.array([True, True, False, False]), scale=1.0)
    >>> w[0, 0].tolist()
    [0.5, 0.5, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.functional.linear import linear_rows  # noqa: F401 (the attention path's GEMMs)


# ----------------------------------------------------------------------- attention_weights
def _attention_weights_impl(q, k, keep, *, scale):
    xp = module_of(q)
    s = xp.matmul(q, xp.swapaxes(k, -1, -2))  # (..., Lq, Lk), fresh: normalised in place
    return _masked_softmax_(s, keep, scale)


def _masked_softmax_(s, keep, scale):
    """``s`` (..., Lq, Lk), a buffer the caller owns, turned into the masked softmax of
    ``scale * s`` in place; returns it."""
    xp = module_of(s)
    if s.size == 0:
        return s
    if scale != 1.0:
        s *= s.dtype.type(scale)
    # all True (an unpadded batch, no mask): nothing to mask. Read on the host only; a GPU
    # would synchronise to read it, so there the zeros are added instead.
    everywhere = xp is np and bool(keep.all())
    lowest = s.dtype.type(np.finfo(s.dtype).min)  # not -inf: a fully masked row stays finite
    if not everywhere:
        s += xp.where(keep, s.dtype.type(0), lowest)  # in keep's shape, broadcast over s
    m = s.max(axis=-1, keepdims=True)  # (..., Lq, 1)
    if not everywhere:
        xp.maximum(m, lowest, out=m)  # a score below -1e31 plus lowest is -inf: no inf - inf
    s -= m
    xp.exp(s, out=s)
    total = xp.einsum("...k->...", s)[..., None]  # row sums (..., Lq, 1), faster than sum
    if everywhere:
        s *= 1 / total
    else:  # a row with no key to attend to came out uniform: zero it
        alive = xp.any(keep, axis=-1, keepdims=True)
        s *= alive / xp.where(alive, total, 1)
    return s


def softmax_backward(g, y, scale: float = 1.0, out=None):
    """``scale * y * (g - sum(g * y, -1))`` on plain arrays: into ``out`` (``g`` itself when
    the caller owns it) or one fresh array; entries where y = 0 (masked keys) get 0."""
    xp = module_of(y)
    gs = xp.subtract(g, xp.einsum("...k,...k->...", g, y)[..., None], out=out)
    gs *= y
    if scale != 1.0:
        gs *= gs.dtype.type(scale)
    return gs


def _attention_weights_vjp(g, out, q, k, keep, *, scale):
    if any(is_traced(a) for a in (g, out, q, k)):  # an outer grad traces this: gd.ops
        gs = out * (g - ops.sum(g * out, axis=-1, keepdims=True))
        gs = gs * scale if scale != 1.0 else gs
        return (lambda: ops.matmul(gs, k), lambda: ops.matmul(ops.swapaxes(gs, -1, -2), q),
                None)
    gs = softmax_backward(g, out, scale)  # (..., Lq, Lk)
    xp = module_of(gs)
    return lambda: xp.matmul(gs, k), lambda: xp.matmul(xp.swapaxes(gs, -1, -2), q), None


_attention_weights = Primitive("attention_weights", _attention_weights_impl,
                               _attention_weights_vjp)


def attention_weights(q, k, keep, *, scale: float):
    """``softmax(scale * q k^T)`` where ``keep`` (True = attend), 0 elsewhere: q (..., Lq, D),
    k (..., Lk, D) of one float dtype, ``keep`` boolean broadcasting to (..., Lq, Lk)
    without growing it (the caller checks) -> (..., Lq, Lk)."""
    return _attention_weights(q, k, keep, scale=float(scale))


# ------------------------------------------------------------------- packed_self_attention
def _heads_of(packed, num_heads: int, part: int):
    """Part ``part`` (0 q, 1 k, 2 v) of a (N, L, 3E) array as (N, h, L, E/h): a view."""
    n, length, e3 = packed.shape
    five = packed.reshape(n, length, 3, num_heads, e3 // (3 * num_heads))
    return five[:, :, part].transpose(0, 2, 1, 3)


def _matmul_into(a, b, out) -> None:
    """``out[...] = a @ b``; NumPy's BLAS writes straight into a strided view (row stride
    free, unit column stride), older CuPy ignores ``out=``: there a product and a copy."""
    xp = module_of(a)
    if xp is np:
        np.matmul(a, b, out=out)
    else:
        out[...] = xp.matmul(a, b)


def _packed_self_attention_impl(qkv, keep, *, num_heads, scale, weights_used):
    xp = module_of(qkv)
    n, length, e3 = qkv.shape
    q, k, v = (_heads_of(qkv, num_heads, i) for i in range(3))
    w = _masked_softmax_(xp.matmul(q, xp.swapaxes(k, -1, -2)), keep, scale)  # (N, h, L, L)
    out = xp.empty((n, length, num_heads, e3 // (3 * num_heads)), dtype=w.dtype)
    _matmul_into(w, v, out.transpose(0, 2, 1, 3))  # the heads written merged: no copy
    return out.reshape(n, length, e3 // 3), w


def _packed_self_attention_vjp(cots, outs, qkv, keep, *, num_heads, scale, weights_used):
    g, g_w = cots
    w = outs[1]  # (N, h, L, L)
    n, length, e3 = _shape(qkv)
    e = e3 // 3
    if any(is_traced(a) for a in (g, g_w, w, qkv)):  # an outer grad traces this: gd.ops
        q, k, v = split_qkv_heads(qkv, num_heads)
        g_o = ops.transpose(ops.reshape(g, (n, length, num_heads, e // num_heads)), (0, 2, 1, 3))
        g_s = ops.matmul(g_o, ops.swapaxes(v, -1, -2))
        g_s = g_s + g_w if weights_used else g_s
        g_s = w * (g_s - ops.sum(g_s * w, axis=-1, keepdims=True))
        g_s = g_s * scale if scale != 1.0 else g_s
        parts = (ops.matmul(g_s, k), ops.matmul(ops.swapaxes(g_s, -1, -2), q),
                 ops.matmul(ops.swapaxes(w, -1, -2), g_o))
        merged = ops.stack([ops.transpose(p, (0, 2, 1, 3)) for p in parts], axis=2)
        return ops.reshape(merged, (n, length, e3)), None
    xp = module_of(w)
    q, k, v = (_heads_of(qkv, num_heads, i) for i in range(3))
    g_o = g.reshape(n, length, num_heads, e // num_heads).transpose(0, 2, 1, 3)  # (N, h, L, D)
    g_qkv = xp.empty((n, length, e3), dtype=np.result_type(g.dtype, w.dtype))
    # each GEMM writes its third of the (N, L, 3E) cotangent in place: no stacking copy
    _matmul_into(xp.swapaxes(w, -1, -2), g_o, _heads_of(g_qkv, num_heads, 2))  # dv
    g_s = xp.matmul(g_o, xp.swapaxes(v, -1, -2))  # (N, h, L, L), fresh: reused in place
    if weights_used:
        g_s += g_w
    softmax_backward(g_s, w, scale, out=g_s)
    _matmul_into(g_s, k, _heads_of(g_qkv, num_heads, 0))  # dq
    _matmul_into(xp.swapaxes(g_s, -1, -2), q, _heads_of(g_qkv, num_heads, 1))  # dk
    return g_qkv, None


_packed_self_attention = Primitive("packed_self_attention", _packed_self_attention_impl,
                                   _packed_self_attention_vjp, multiple_results=True)


def packed_self_attention(qkv, keep, num_heads: int, scale: float = 1.0,
                          weights_used: bool = False):
    """Self-attention over a packed (N, L, 3E) q|k|v projection (torch's order): each of
    the h heads ``softmax(scale * q k^T)`` masked by ``keep`` (boolean, True = attend,
    broadcasting to (N, h, L, L) without growing it), times v, the heads merged ->
    ``(out (N, L, E), weights (N, h, L, L))``. Set ``weights_used`` when the caller's
    result depends on the weights: otherwise their cotangent is not read (it is zero)."""
    return _packed_self_attention(qkv, keep, num_heads=int(num_heads), scale=float(scale),
                                  weights_used=bool(weights_used))


# ------------------------------------------------------------------------- split_qkv_heads
def _split_qkv_impl(qkv, *, num_heads):
    n, length, e3 = qkv.shape
    parts = qkv.reshape(n, length, 3, num_heads, e3 // (3 * num_heads)).transpose(2, 0, 3, 1, 4)
    return parts[0], parts[1], parts[2]  # (N, h, L, E/h) views of the projection


def _split_qkv_vjp(cots, out, qkv, *, num_heads):
    n, length, e3 = _shape(qkv)
    if any(is_traced(c) for c in cots):  # an outer grad traces this: gd.ops
        merged = ops.stack([ops.transpose(c, (0, 2, 1, 3)) for c in cots], axis=2)
        return (ops.reshape(merged, (n, length, e3)),)
    g = module_of(cots[0]).empty((n, length, 3, num_heads, e3 // (3 * num_heads)),
                                 dtype=np.result_type(*(c.dtype for c in cots)))
    for i, c in enumerate(cots):
        g[:, :, i] = c.transpose(0, 2, 1, 3)
    return (g.reshape(n, length, e3),)


_split_qkv_heads = Primitive("split_qkv_heads", _split_qkv_impl, _split_qkv_vjp,
                             multiple_results=True)


def split_qkv_heads(qkv, num_heads: int):
    """(N, L, 3E) packed q|k|v -> (q, k, v), each (N, h, L, E/h) (3E divisible by 3h)."""
    return _split_qkv_heads(qkv, num_heads=int(num_heads))
