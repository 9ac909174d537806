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

import functools
import math

import numpy as np

from gpudl import ops
from gpudl.autodiff import unbox_all
from gpudl.backend import get_device, module_of, xp_for
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError
from gpudl.functional._attention_fused import (
    attention_weights,
    linear_rows,
    packed_self_attention,
    split_qkv_heads,
)
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
    _check_boolean_mask(mask)
    keep = unbox_all(mask)
    lowest = float(np.finfo(raw.dtype).min)
    weights = softmax(ops.where(keep, scores, lowest), axis=axis)
    return ops.where(keep, weights, 0.0)


def _check_boolean_mask(mask) -> None:
    keep = unbox_all(mask)
    if getattr(getattr(keep, "dtype", None), "kind", None) != "b":
        raise ArgumentTypeError(
            f"attention: mask must be boolean (True = keep), got "
            f"{getattr(keep, 'dtype', type(keep))}; build it with a comparison, e.g. lengths > t"
        )


def _keep_mask(mask, causal: bool, score_shape: tuple, like):
    """The boolean keep mask (True = attend) from ``mask`` and ``causal``, checked against
    the scores' shape (..., Lq, Lk); None when neither is given."""
    keep = None
    if mask is not None:
        keep = mask  # may be traced: ops below keep it connected to the input
        try:
            np.broadcast_shapes(tuple(keep.shape), score_shape)
        except ValueError:
            raise ShapeError(
                f"attention: mask of shape {tuple(keep.shape)} does not broadcast to the scores' "
                f"shape {score_shape} (..., Lq, Lk)"
            ) from None
        _check_boolean_mask(keep)
    if causal:
        xp = module_of(unbox_all(like))
        tri = xp.tril(xp.ones(score_shape[-2:], dtype=bool))
        keep = tri if keep is None else ops.logical_and(keep, tri)
    return keep


def _fusable(q, k, keep, score_shape: tuple) -> bool:
    """The fused primitive takes float q and k of one dtype and a mask that broadcasts to
    the scores without growing them; anything else takes the composite."""
    dq, dk = unbox_all(q).dtype, unbox_all(k).dtype
    if dq != dk or dq.kind != "f":
        return False
    return keep is None or np.broadcast_shapes(tuple(keep.shape), score_shape) == score_shape


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
    lq, lk = sq[-2], sk[-2]
    try:
        score_shape = (*np.broadcast_shapes(sq[:-2], sk[:-2]), lq, lk)  # (..., Lq, Lk)
    except ValueError:
        raise ShapeError(f"attention: the batch dims of q {sq} and k {sk} do not broadcast") from None
    keep = _keep_mask(mask, causal, score_shape, q)
    if bias is not None:
        _check_bias(bias, score_shape)
    if bias is None and _fusable(q, k, keep, score_shape):
        xp = module_of(unbox_all(q))
        keep = xp.ones((1, 1), dtype=bool) if keep is None else keep
        weights = attention_weights(q, k, keep, scale=scale)  # (..., Lq, Lk)
    else:  # a float mask, mixed or integer dtypes: the composite
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale  # (..., Lq, Lk)
        if bias is not None:  # a float mask, added as torch adds its float attn_mask
            dtype = unbox_all(scores).dtype
            # gd.ops: a learned bias (relative positions) gets its gradient
            scores = scores + (bias if unbox_all(bias).dtype == dtype else ops.astype(bias, dtype))
        weights = masked_softmax(scores, keep)
    if dropout_rate:
        from gpudl.functional.dropout import dropout

        weights = dropout(weights, dropout_rate, key)
    out = ops.matmul(weights, v)
    return (out, weights) if return_weights else out


def _check_bias(bias, score_shape: tuple) -> None:
    """A float ``bias`` broadcastable to the scores (..., Lq, Lk), or a named error."""
    dtype = getattr(unbox_all(bias), "dtype", None)
    if dtype is None or dtype.kind != "f":
        hint = (" A boolean keep-mask (torch's bool attn_mask) goes in mask= (True = keep)"
                if dtype is not None and dtype.kind == "b" else "")
        raise DTypeError(f"attention: bias is added to the scores, so it must be a float array; "
                         f"got {dtype or type(bias).__name__}.{hint}")
    try:
        fits = np.broadcast_shapes(_shape(bias), score_shape) == score_shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"attention: bias of shape {_shape(bias)} does not broadcast to the "
                         f"scores' shape {score_shape} (..., Lq, Lk)")


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
    dims and the heads are concatenated before ``w_o``. With ``w_k`` and ``w_v`` None,
    ``w_q`` is torch's packed ``in_proj_weight`` (3E, E_in) (and ``b_q`` its packed
    ``in_proj_bias`` (3E,)). ``mask`` (Lq, Lk), (N, Lq, Lk) or
    (N, heads, Lq, Lk), ``key_mask`` (N, Lk) for padding: boolean True = keep, or float
    added to the scores. ``dropout_rate``/``dropout_key`` drop attention weights (torch's
    ``MultiheadAttention(dropout=p)`` in training). With ``return_weights`` also returns the
    per-head weights (N, heads, Lq, Lk).

    Example:
        >>> x = np.ones((2, 3, 4)); w = np.eye(4)
        >>> multi_head_attention(x, x, x, 2, w, w, w, w).shape
        (2, 3, 4)
        >>> multi_head_attention(x, x, x, 2, np.ones((12, 4)), None, None, w).shape
        (2, 3, 4)
    """
    sq = _shape(query)
    if len(sq) != 3:
        raise ShapeError(f"multi_head_attention: inputs must be (N, L, E), got query {sq}")
    packed = w_k is None and w_v is None  # w_q (3E, E_in), b_q (3E,): torch's in_proj
    e = _check_in_projections(w_q, w_k, w_v, b_q, b_k, b_v)
    if e % num_heads:
        raise ShapeError(
            f"multi_head_attention: embedding dim {e} is not divisible by num_heads={num_heads}"
        )
    # the softmax's 1/sqrt(head dim) folded into q's projection: an (E, E_in) multiply
    # instead of a pass over the (N, h, Lq, Lk) scores, each way
    scale = 1.0 / math.sqrt(e // num_heads)
    if key_mask is not None:
        sk = _shape(key)
        if _shape(key_mask) != (sk[0], sk[1]):  # a 1-D mask failed with a bare IndexError
            raise ShapeError(f"multi_head_attention: key_mask (torch's key_padding_mask) must "
                             f"be (N, Lk) = {(sk[0], sk[1])}, one row per batch entry, got "
                             f"{_shape(key_mask)}")
    keep, bias = _combine_masks(mask, key_mask, np.result_type(unbox_all(query).dtype,
                                                                unbox_all(w_q).dtype))
    if packed and query is key and key is value:  # self-attention: ONE GEMM for q, k, v
        xp, dtype = module_of(unbox_all(w_q)), unbox_all(w_q).dtype
        rows = xp.asarray([scale] * e + [1.0] * (2 * e), dtype=dtype)  # (3E,) q's rows scaled
        qkv = linear_rows(query, w_q * rows[:, None], None if b_q is None else b_q * rows)
        scores = (sq[0], num_heads, sq[1], sq[1])  # (N, h, L, L)
        full = _keep_mask(keep, causal, scores, qkv)
        if bias is None and not dropout_rate and _fusable(qkv, qkv, full, scores):
            # scores, masked softmax, weights @ v and the head merge: one primitive
            full = xp.ones((1, 1), dtype=bool) if full is None else full
            out, weights = packed_self_attention(qkv, full, num_heads, weights_used=return_weights)
            y = linear_rows(out, w_o, b_o)  # (N, L, E)
            return (y, weights) if return_weights else y
        q, k, v = split_qkv_heads(qkv, num_heads)  # 3 x (N, h, L, E/h), views of (N, L, 3E)
    else:
        if packed:
            thirds = (slice(0, e), slice(e, 2 * e), slice(2 * e, 3 * e))
            w_q, w_k, w_v = (w_q[r] for r in thirds)
            b_q, b_k, b_v = (None,) * 3 if b_q is None else (b_q[r] for r in thirds)
        q = linear_rows(query, w_q * scale, None if b_q is None else b_q * scale)
        q, k, v = (_heads(t, num_heads) for t in (q, linear_rows(key, w_k, b_k),
                                                   linear_rows(value, w_v, b_v)))
    out, weights = scaled_dot_product_attention(
        q, k, v, mask=keep, causal=causal, scale=1.0, return_weights=True,
        bias=bias, dropout_rate=dropout_rate, key=dropout_key,
    )
    n, _, lq, dh = _shape(out)
    merged = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (n, lq, num_heads * dh))
    y = linear_rows(merged, w_o, b_o)
    return (y, weights) if return_weights else y


def _heads(t, num_heads: int):
    """(N, L, E) -> (N, h, L, E/h): a view (reshape, then a transpose)."""
    n, length, e = _shape(t)
    return ops.transpose(ops.reshape(t, (n, length, num_heads, e // num_heads)), (0, 2, 1, 3))


def _check_in_projections(w_q, w_k, w_v, b_q, b_k, b_v) -> int:
    """E, the projected width: of w_q (E, E_in), or of the packed w_q (3E, E_in) when w_k
    and w_v are None (then b_q is the packed (3E,) bias or None)."""
    sw = _shape(w_q)
    if w_k is not None and w_v is not None:
        return sw[0]
    if w_k is not None or w_v is not None or len(sw) != 2 or sw[0] % 3:
        raise ShapeError(
            f"multi_head_attention: give w_q, w_k and w_v (E, E_in) each, or the packed "
            f"(3E, E_in) in-projection as w_q with w_k and w_v None; got w_q {sw}, w_k "
            f"{None if w_k is None else _shape(w_k)}, w_v {None if w_v is None else _shape(w_v)}")
    if b_q is not None and (_shape(b_q) != (sw[0],) or b_k is not None or b_v is not None):
        raise ShapeError(
            f"multi_head_attention: with a packed w_q {sw}, b_q must be the packed ({sw[0]},) "
            f"bias and b_k, b_v None; got b_q {_shape(b_q)}, b_k "
            f"{None if b_k is None else _shape(b_k)}, b_v {None if b_v is None else _shape(b_v)}")
    return sw[0] // 3


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
    xp = xp_for(get_device() if device is None else device)
    return xp.array(_sinusoidal_table(int(length), int(dim), float(base)), dtype=dtype)


@functools.lru_cache(maxsize=16)
def _sinusoidal_table(length: int, dim: int, base: float) -> np.ndarray:
    """The float64 host table, computed once per shape (a model asks every forward pass);
    read-only, callers get a converted copy."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (ceil(dim/2),)
    pe = np.zeros((length, 2 * freq.size))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)
    pe = np.ascontiguousarray(pe[:, :dim])
    pe.flags.writeable = False
    return pe


__all__ = [
    "additive_attention", "additive_attention_scores", "causal_mask", "masked_softmax",
    "multi_head_attention", "scaled_dot_product_attention", "sinusoidal_positional_encoding",
]
