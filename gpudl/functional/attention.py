"""Attention: scaled dot-product (masks, causal), additive (Bahdanau), multi-head, and
sinusoidal positional encodings.

Masks are boolean with **True = keep** (attend), False = masked out, broadcastable to the
scores' shape (..., Lq, Lk); a float ``bias`` (torch's float masks) is added to the scores.
(torch's ``nn.MultiheadAttention`` boolean masks use the opposite sign:
``nn.MultiHeadAttention`` reads them under torch's names with torch's sign.) A row whose
keys are all masked out by a boolean mask gives zeros, never NaN, and a zero gradient.

Example:
    >>> import numpy as np
    >>> from gpudl.functional.attention import scaled_dot_product_attention
    >>> q = k = v = np.ones((1, 2, 4))
    >>> scaled_dot_product_attention(q, k, v, causal=True).shape
    (1, 2, 4)
"""

from __future__ import annotations

import math

import numpy as np

from gpudl import ops
from gpudl.autodiff import unbox_all
from gpudl.backend import get_device, module_of, xp_for
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError
from gpudl.functional.activations import softmax


def causal_mask(lq: int, lk: int | None = None, device: str | None = None):
    """Boolean (Lq, Lk) mask, True where key j <= query i (torch's top-left alignment)."""
    lk = lq if lk is None else lk
    xp = xp_for(get_device() if device is None else device)
    return xp.tril(xp.ones((lq, lk), dtype=bool))


def masked_softmax(scores, mask=None, axis: int = -1):
    """Softmax over ``axis`` where ``mask`` is True; masked entries get weight 0.

    Masked scores are replaced by the dtype's lowest finite value (not -inf), so a fully
    masked row softmaxes to a uniform row that the mask then zeroes: no NaN in either pass.
    """
    if mask is None:
        return softmax(scores, axis=axis)
    raw = unbox_all(scores)
    keep = unbox_all(mask)
    if getattr(getattr(keep, "dtype", None), "kind", None) != "b":
        raise ArgumentTypeError(
            f"attention: mask must be boolean (True = keep), got "
            f"{getattr(keep, 'dtype', type(keep))}; build it with a comparison, e.g. lengths > t"
        )
    lowest = float(np.finfo(raw.dtype).min)
    weights = softmax(ops.where(keep, scores, lowest), axis=axis)
    return ops.where(keep, weights, 0.0)


def scaled_dot_product_attention(
    q,
    k,
    v,
    mask=None,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
    dropout_rate: float = 0.0,
    key=None,
    bias=None,
):
    """``softmax(q k^T * scale) v`` with ``scale = 1/sqrt(D)`` by default.

    Shapes: ``q`` (..., Lq, D), ``k`` (..., Lk, D), ``v`` (..., Lk, Dv) -> (..., Lq, Dv).
    ``mask``: boolean, True = keep, broadcastable to (..., Lq, Lk); ``bias``: float,
    added to the scores (torch's float masks). ``causal``: query i
    sees keys j <= i. ``scale=1.0`` gives plain dot-product (Luong) attention.
    ``dropout_rate``/``key`` drop attention weights in training. With ``return_weights``
    returns ``(out, weights)``.

    Example:
        >>> q = np.zeros((1, 3)); k = np.zeros((2, 3)); v = np.array([[1.0], [3.0]])
        >>> scaled_dot_product_attention(q, k, v).tolist()
        [[2.0]]
    """
    sq, sk, sv = _shape(q), _shape(k), _shape(v)
    if len(sq) < 2 or len(sk) < 2 or len(sv) < 2:
        raise ShapeError(f"attention: q, k, v must be at least 2-D, got {sq}, {sk}, {sv}")
    if sq[-1] != sk[-1]:
        raise ShapeError(
            f"attention: q's feature dim {sq[-1]} (shape {sq}) must equal k's {sk[-1]} (shape {sk})"
        )
    if sk[-2] != sv[-2]:
        raise ShapeError(
            f"attention: k and v must have the same number of keys (axis -2), got k {sk} and v {sv}"
        )
    scale = 1.0 / math.sqrt(sq[-1]) if scale is None else float(scale)
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale  # (..., Lq, Lk)
    if bias is not None:  # a float mask, added as torch adds its float attn_mask
        scores = scores + unbox_all(bias).astype(unbox_all(scores).dtype, copy=False)
    lq, lk = sq[-2], sk[-2]
    keep = None
    if mask is not None:
        keep = mask  # may be traced: ops below keep it connected to the input
        try:
            np.broadcast_shapes(tuple(keep.shape), _shape(scores))
        except ValueError:
            raise ShapeError(
                f"attention: mask of shape {tuple(keep.shape)} does not broadcast to the scores' "
                f"shape {_shape(scores)} (..., Lq, Lk)"
            ) from None
    if causal:
        xp = module_of(unbox_all(scores))
        tri = xp.tril(xp.ones((lq, lk), dtype=bool))
        keep = tri if keep is None else ops.logical_and(keep, tri)
    weights = masked_softmax(scores, keep)
    if dropout_rate:
        from gpudl.functional.dropout import dropout

        weights = dropout(weights, dropout_rate, key)
    out = ops.matmul(weights, v)
    return (out, weights) if return_weights else out


def additive_attention_scores(query, keys, w_q, w_k, v):
    """Bahdanau scores ``v^T tanh(W_q q + W_k k_j)``.

    ``query`` (N, Dq), ``keys`` (N, L, Dk), ``w_q`` (H, Dq), ``w_k`` (H, Dk) (torch Linear
    layout), ``v`` (H,) -> scores (N, L).
    """
    sq, sk = _shape(query), _shape(keys)
    if len(sq) != 2 or len(sk) != 3 or sq[0] != sk[0]:
        raise ShapeError(
            f"additive attention: query must be (N, Dq) and keys (N, L, Dk), got {sq}, {sk}"
        )
    if _shape(w_q) != (_shape(v)[0], sq[1]) or _shape(w_k) != (_shape(v)[0], sk[2]):
        raise ShapeError(
            f"additive attention: w_q must be (H, Dq), w_k (H, Dk), v (H,); got "
            f"{_shape(w_q)}, {_shape(w_k)}, {_shape(v)} for Dq={sq[1]}, Dk={sk[2]}"
        )
    hq = ops.matmul(query, ops.transpose(w_q))  # (N, H)
    hk = ops.matmul(keys, ops.transpose(w_k))  # (N, L, H)
    return ops.matmul(ops.tanh(hk + ops.expand_dims(hq, 1)), v)  # (N, L)


def additive_attention(query, keys, values, w_q, w_k, v, mask=None):
    """Bahdanau attention: ``(context (N, Dv), weights (N, L))``; ``mask`` (N, L) True = keep."""
    weights = masked_softmax(additive_attention_scores(query, keys, w_q, w_k, v), mask)
    context = ops.matmul(ops.expand_dims(weights, 1), values)[:, 0]  # (N, Dv)
    return context, weights


def _project(x, w, b):
    y = ops.matmul(x, ops.transpose(w))
    return y if b is None else y + b


def _combine_masks(mask, key_mask, dtype):
    """``(keep, bias)`` broadcastable to (N, h, Lq, Lk) from ``mask`` and ``key_mask``: the
    boolean parts (True = keep) and-ed, the float parts (additive) summed; either None."""
    # gd.ops throughout: a mask computed from the input (an ONNX export's padding mask)
    # stays connected to it
    parts = []
    if mask is not None:
        parts.append(mask[:, None] if mask.ndim == 3 else mask)  # (N, 1, Lq, Lk): every head
    if key_mask is not None:
        parts.append(key_mask[:, None, None, :])  # (N, 1, 1, Lk)
    if not parts:
        return None, None
    keep = bias = None
    for p in parts:
        if p.dtype.kind == "b":
            keep = p if keep is None else ops.logical_and(keep, p)
        elif p.dtype.kind == "f":
            p = p.astype(dtype, copy=False)
            bias = p if bias is None else bias + p
        else:
            raise ArgumentTypeError(
                f"multi_head_attention: masks must be boolean (True = keep) or float (added "
                f"to the scores), got {p.dtype}; build a boolean one with a comparison")
    return keep, bias


def multi_head_attention(
    query,
    key,
    value,
    num_heads: int,
    w_q,
    w_k,
    w_v,
    w_o,
    b_q=None,
    b_k=None,
    b_v=None,
    b_o=None,
    mask=None,
    key_mask=None,
    causal: bool = False,
    return_weights: bool = False,
    dropout_rate: float = 0.0,
    dropout_key=None,
):
    """Multi-head attention on batch-first inputs (N, L, E) with torch Linear-layout weights.

    ``w_q``/``w_k``/``w_v``/``w_o`` are (E, E_in) (out, in); each head attends in E/num_heads
    dims and the heads are concatenated before ``w_o``. ``mask`` (Lq, Lk), (N, Lq, Lk) or
    (N, heads, Lq, Lk), ``key_mask`` (N, Lk) for padding: boolean True = keep, or float
    added to the scores. ``dropout_rate``/``dropout_key`` drop attention weights (torch's
    ``MultiheadAttention(dropout=p)`` in training). With ``return_weights`` also returns the
    per-head weights (N, heads, Lq, Lk).

    Example:
        >>> x = np.ones((2, 3, 4)); w = np.eye(4)
        >>> multi_head_attention(x, x, x, 2, w, w, w, w).shape
        (2, 3, 4)
    """
    sq = _shape(query)
    if len(sq) != 3:
        raise ShapeError(f"multi_head_attention: inputs must be (N, L, E), got query {sq}")
    q, k, v = _project(query, w_q, b_q), _project(key, w_k, b_k), _project(value, w_v, b_v)
    e = _shape(q)[-1]
    if e % num_heads:
        raise ShapeError(
            f"multi_head_attention: embedding dim {e} is not divisible by num_heads={num_heads}"
        )

    def heads(t):  # (N, L, E) -> (N, h, L, E/h)
        n, length, _ = _shape(t)
        return ops.transpose(ops.reshape(t, (n, length, num_heads, e // num_heads)), (0, 2, 1, 3))

    keep, bias = _combine_masks(mask, key_mask, unbox_all(q).dtype)
    out, weights = scaled_dot_product_attention(
        heads(q), heads(k), heads(v), mask=keep, causal=causal, return_weights=True, bias=bias,
        dropout_rate=dropout_rate, key=dropout_key,
    )
    n, _, lq, dh = _shape(out)
    merged = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (n, lq, num_heads * dh))
    y = _project(merged, w_o, b_o)
    return (y, weights) if return_weights else y


def sinusoidal_positional_encoding(
    length: int, dim: int, base: float = 10000.0, dtype=np.float32, device: str | None = None
):
    """Vaswani et al.'s encodings (length, dim): ``PE[p, 2i] = sin(p / base^(2i/dim))``,
    ``PE[p, 2i+1] = cos(p / base^(2i/dim))``. Odd ``dim`` drops the last cosine column.

    Example:
        >>> sinusoidal_positional_encoding(2, 4, dtype=np.float64)[1].round(4).tolist()
        [0.8415, 0.5403, 0.01, 1.0]
    """
    if length < 0 or dim < 1:
        raise ConfigError(
            f"sinusoidal_positional_encoding: need length >= 0 and dim >= 1, got {length}, {dim}"
        )
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (ceil(dim/2),)
    pe = np.zeros((length, 2 * freq.size))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)
    xp = xp_for(get_device() if device is None else device)
    return xp.asarray(pe[:, :dim], dtype=dtype)


__all__ = [
    "additive_attention", "additive_attention_scores", "causal_mask", "masked_softmax",
    "multi_head_attention", "scaled_dot_product_attention", "sinusoidal_positional_encoding",
]
