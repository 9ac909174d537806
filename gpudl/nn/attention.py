"""Attention layers: MultiHeadAttention, positional encoding, transformer encoder/decoder.

Batch-first (N, L, E) throughout. Masks are boolean with True = attend (keep).
Transformer layers are post-LN as the course draws them (``x = LN(x + sublayer(x))``);
``norm_first=True`` gives the pre-LN variant (``x = x + sublayer(LN(x))``).

``apply`` inputs: MultiHeadAttention takes ``x`` (self-attention) or a dict
``{"query", "key", "value", "mask", "key_mask"}``; encoder layers take ``x`` or
``{"x", "mask", "key_mask"}``; decoder layers take ``{"x", "memory", "mask",
"memory_key_mask"}`` (causal self-attention is on by default).

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> enc = nn.TransformerEncoderLayer(num_heads=2, ff_dim=32)
    >>> p, s = enc.init(gd.random.key(0), gd.ops.zeros((2, 5, 8)))
    >>> enc.apply(p, s, gd.ops.ones((2, 5, 8)))[0].shape
    (2, 5, 8)
"""

from __future__ import annotations

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.backend import device_of
from gpudl.errors import ShapeError
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_float,
    check_int,
    layer_label,
    positional_limit,
)
from gpudl.nn.base import Layer, check_params
from gpudl.nn.core import Dense
from gpudl.nn.normalization import LayerNorm

_MHA_KEYS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _mha_shapes(q, k, v, embed_dim: int | None = None) -> dict:
    """q/k/v projections (E, E_q/E_k/E_v) and the output projection (E, E), with biases."""
    e = embed_dim or q.shape[-1]
    return {name: {"weight": (e, e if src is None else src.shape[-1]), "bias": (e,)}
            for name, src in zip(_MHA_KEYS, (q, k, v, None))}


class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product attention with learned q/k/v/out projections."""

    base_name = "mha"

    @positional_limit(1, lambda label, args: (
        f"{label} takes (num_heads, *, embed_dim=None, causal=False, dropout=0.0) and infers "
        f"embed_dim from the input; for torch's MultiheadAttention(embed_dim, num_heads) = "
        f"MultiheadAttention{tuple(args[:2])!r} write {label}({args[1]!r})."))
    def __init__(self, num_heads: int, *, embed_dim: int | None = None, causal: bool = False,
                 dropout: float = 0.0, name: str | None = None):
        super().__init__(name)
        self.num_heads = check_int(self, "num_heads", num_heads)
        self.embed_dim = None if embed_dim is None else check_int(self, "embed_dim", embed_dim)
        self.causal = check_bool(self, "causal", causal)
        self.dropout = check_float(self, "dropout", dropout, 0.0, 1.0, high_open=True)

    @staticmethod
    def _parts(x):
        if isinstance(x, dict):
            q = x["query"]
            return q, x.get("key", q), x.get("value", x.get("key", q)), x.get("mask"), x.get("key_mask")
        return x, x, x, None, None

    def init(self, key, x):
        q, k, v, _, _ = self._parts(x)
        e = self.embed_dim or q.shape[-1]
        if e % self.num_heads:
            raise ShapeError(
                f"nn.MultiHeadAttention: embed_dim {e} is not divisible by num_heads "
                f"{self.num_heads}. The first argument is the number of heads (torch's "
                "MultiheadAttention(embed_dim, num_heads) order is not used: embed_dim is "
                "inferred from the input).")
        keys = gdr.split(key, 4)
        params = {}
        for name, src, kk in zip(_MHA_KEYS, (q, k, v, None), keys):
            example = src if src is not None else ops.zeros((1, e), dtype=q.dtype, device=device_of(q))
            params[name] = Dense(e).init(kk, example)[0]
        return params, {}

    def param_shapes(self, x) -> dict:
        q, k, v, _, _ = self._parts(x)
        return _mha_shapes(q, k, v, self.embed_dim)

    def apply(self, params, state, x, *, train=False, key=None):
        q, k, v, mask, key_mask = self._parts(x)
        check_params(params, self.param_shapes(x), self, q)
        p = params
        out = F.multi_head_attention(
            q, k, v, self.num_heads, p["q_proj"]["weight"], p["k_proj"]["weight"],
            p["v_proj"]["weight"], p["out_proj"]["weight"], p["q_proj"]["bias"],
            p["k_proj"]["bias"], p["v_proj"]["bias"], p["out_proj"]["bias"],
            mask=mask, key_mask=key_mask, causal=self.causal)
        if self.dropout and train:
            out = F.dropout(out, self.dropout, key, train=True)
        return out, state


class PositionalEncoding(Layer):
    """Add sinusoidal position encodings to (N, L, E) inputs (no parameters)."""

    def apply(self, params, state, x, *, train=False, key=None):
        pe = F.sinusoidal_positional_encoding(x.shape[1], x.shape[2], dtype=x.dtype,
                                              device=device_of(ops.zeros_like(x)))
        return x + pe, state


def _block_hint(label: str, args: tuple) -> str:
    return (f"{label} takes (num_heads, ff_dim, *, dropout=0.0, norm_first=False, ...) and "
            "infers d_model from the input; for torch's (d_model, nhead, dim_feedforward) "
            f"write {label}(nhead, dim_feedforward) and pass the rest by keyword.")


class _Block(Layer):
    """Shared pieces of the transformer layers: feed-forward and residual+norm wiring."""

    @positional_limit(2, _block_hint)
    def __init__(self, num_heads: int, ff_dim: int, *, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu", eps: float = 1e-5,
                 name: str | None = None):
        super().__init__(name)
        self.num_heads = check_int(self, "num_heads", num_heads)
        self.ff_dim = check_int(self, "ff_dim", ff_dim)
        self.dropout = check_float(self, "dropout", dropout, 0.0, 1.0, high_open=True)
        self.norm_first = check_bool(self, "norm_first", norm_first)
        if not isinstance(activation, str):
            raise LayerArgumentError(f"{layer_label(self)}: activation must be a name such as "
                                     f"'relu' or 'gelu', got {activation!r}")
        F.get_activation(activation)  # an unknown name fails here, not at the first forward
        self.activation = activation
        self.eps = check_float(self, "eps", eps, low=0.0, low_open=True)

    def _check_heads(self, x):
        """Head dim 1 (num_heads == embedding size) is what torch's (d_model, nhead) order
        gives, e.g. TransformerEncoderLayer(16, 4) on 16-dim inputs: refuse it."""
        e = x.shape[-1]
        if self.num_heads == e and e > 1:
            raise LayerArgumentError(
                f"{layer_label(self)}: num_heads={self.num_heads} equals the embedding size "
                f"{e} (heads of size 1). This looks like torch's TransformerEncoderLayer("
                f"d_model, nhead, dim_feedforward) order: gpudl takes (num_heads, ff_dim, ...) "
                f"and infers d_model from the input, so write {layer_label(self)}(nhead, "
                f"dim_feedforward), e.g. {layer_label(self)}({self.ff_dim}, {4 * e}) for "
                f"torch's ({e}, {self.ff_dim}).")

    def _shapes(self, d: int, attention: dict, norms: tuple[str, ...]) -> dict:
        """Every param's shape for model width ``d``: attention blocks, FF and norms."""
        ln = {"weight": (d,), "bias": (d,)}
        return {**attention, **{n: ln for n in norms},
                "linear1": {"weight": (self.ff_dim, d), "bias": (self.ff_dim,)},
                "linear2": {"weight": (d, self.ff_dim), "bias": (d,)}}

    def _ff_init(self, key, x):
        k1, k2 = gdr.split(key)
        p1 = Dense(self.ff_dim).init(k1, x)[0]
        h = ops.zeros((*x.shape[:-1], self.ff_dim), dtype=x.dtype, device=device_of(x))
        return {"linear1": p1, "linear2": Dense(x.shape[-1]).init(k2, h)[0]}

    def _ff(self, p, x):
        act = F.get_activation(self.activation)
        h = act(ops.matmul(x, ops.transpose(p["linear1"]["weight"])) + p["linear1"]["bias"])
        return ops.matmul(h, ops.transpose(p["linear2"]["weight"])) + p["linear2"]["bias"]

    def _sublayer(self, x, fn, norm_params, key, train):
        """Post-LN: LN(x + drop(fn(x))); pre-LN: x + drop(fn(LN(x)))."""
        ln = LayerNorm(eps=self.eps)

        def norm(v):
            return ln.apply(norm_params, {}, v)[0]

        y = fn(norm(x)) if self.norm_first else fn(x)
        if self.dropout and train:
            y = F.dropout(y, self.dropout, key, train=True)
        return x + y if self.norm_first else norm(x + y)


class TransformerEncoderLayer(_Block):
    """Self-attention + position-wise feed-forward, each with residual and LayerNorm."""

    base_name = "encoder"

    def init(self, key, x):
        xs = x["x"] if isinstance(x, dict) else x
        self._check_heads(xs)
        k1, k2, k3, k4 = gdr.split(key, 4)
        return {
            "self_attn": MultiHeadAttention(self.num_heads).init(k1, xs)[0],
            "norm1": LayerNorm().init(k2, xs)[0],
            **self._ff_init(k3, xs),
            "norm2": LayerNorm().init(k4, xs)[0],
        }, {}

    def param_shapes(self, x) -> dict:
        xs = x["x"] if isinstance(x, dict) else x
        return self._shapes(xs.shape[-1], {
            "self_attn": _mha_shapes(xs, xs, xs)}, ("norm1", "norm2"))

    def apply(self, params, state, x, *, train=False, key=None):
        inputs = x if isinstance(x, dict) else {"x": x}
        xs = inputs["x"]
        check_params(params, self.param_shapes(x), self, xs)
        k1, k2 = gdr.split(key) if key is not None else (None, None)
        mha = MultiHeadAttention(self.num_heads)

        def attend(v):
            return mha.apply(params["self_attn"], {}, {"query": v, "mask": inputs.get("mask"),
                                                       "key_mask": inputs.get("key_mask")})[0]

        xs = self._sublayer(xs, attend, params["norm1"], k1, train)
        xs = self._sublayer(xs, lambda v: self._ff(params, v), params["norm2"], k2, train)
        return xs, state


class TransformerDecoderLayer(_Block):
    """Causal self-attention, cross-attention over ``memory``, then feed-forward."""

    base_name = "decoder"

    def init(self, key, x):
        xs, memory = x["x"], x.get("memory")
        self._check_heads(xs)
        keys = gdr.split(key, 6)
        params = {
            "self_attn": MultiHeadAttention(self.num_heads).init(keys[0], xs)[0],
            "norm1": LayerNorm().init(keys[1], xs)[0],
            **self._ff_init(keys[4], xs),
            "norm3": LayerNorm().init(keys[5], xs)[0],
        }
        if memory is not None:
            params["cross_attn"] = MultiHeadAttention(self.num_heads).init(
                keys[2], {"query": xs, "key": memory})[0]
            params["norm2"] = LayerNorm().init(keys[3], xs)[0]
        return params, {}

    def param_shapes(self, x) -> dict:
        xs, memory = x["x"], x.get("memory")
        attention = {"self_attn": _mha_shapes(xs, xs, xs)}
        norms = ("norm1", "norm3")
        if memory is not None:
            attention["cross_attn"] = _mha_shapes(xs, memory, memory)
            norms = ("norm1", "norm2", "norm3")
        return self._shapes(xs.shape[-1], attention, norms)

    def apply(self, params, state, x, *, train=False, key=None):
        xs, memory = x["x"], x.get("memory")
        check_params(params, self.param_shapes(x), self, xs)
        k1, k2, k3 = gdr.split(key, 3) if key is not None else (None, None, None)
        self_attn = MultiHeadAttention(self.num_heads, causal=x.get("causal", True))
        cross = MultiHeadAttention(self.num_heads)

        def attend(v):
            return self_attn.apply(params["self_attn"], {}, {"query": v, "mask": x.get("mask")})[0]

        xs = self._sublayer(xs, attend, params["norm1"], k1, train)
        if memory is not None:
            def cross_attend(v):
                return cross.apply(params["cross_attn"], {}, {
                    "query": v, "key": memory, "value": memory,
                    "key_mask": x.get("memory_key_mask")})[0]

            xs = self._sublayer(xs, cross_attend, params["norm2"], k2, train)
        xs = self._sublayer(xs, lambda v: self._ff(params, v), params["norm3"], k3, train)
        return xs, state
