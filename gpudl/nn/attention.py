"""Attention layers: MultiHeadAttention, positional encoding, transformer encoder/decoder.

Batch-first (N, L, E) throughout. Transformer layers are post-LN as the course draws them
(``x = LN(x + sublayer(x))``); ``norm_first=True`` gives the pre-LN variant
(``x = x + sublayer(LN(x))``).

Parameter keys are torch's ``state_dict`` keys, so ``torch.nn.MultiheadAttention(...,
batch_first=True)``, ``TransformerEncoderLayer`` and ``TransformerDecoderLayer`` weights
load strictly: ``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E,) packing q, k, v when
query, key and value all have E features, else ``q_proj_weight`` (E, Eq), ``k_proj_weight``
(E, Ek), ``v_proj_weight`` (E, Ev) and ``in_proj_bias``; then ``out_proj.weight``/``bias``
(``bias=False`` drops every bias). Encoder layers hold ``self_attn``, ``linear1``,
``linear2``, ``norm1``, ``norm2``; decoder layers ``self_attn``, ``multihead_attn``
(cross-attention over ``memory``), ``linear1``, ``linear2``, ``norm1``..``norm3``.

``apply`` inputs (an unknown key raises ``UnknownInputKeyError`` listing the accepted ones):

* MultiHeadAttention: ``x`` (self-attention) or ``{"query", "key", "value", "attn_mask",
  "key_padding_mask", "need_weights", "average_attn_weights", "is_causal"}``.
* TransformerEncoderLayer: ``x`` or ``{"x" (or "src"), "src_mask",
  "src_key_padding_mask", "is_causal"}``.
* TransformerDecoderLayer: ``{"x" (or "tgt"), "memory", "tgt_mask", "memory_mask",
  "tgt_key_padding_mask", "memory_key_padding_mask", "tgt_is_causal"}``; causal
  self-attention is on unless a ``tgt_mask`` is given (then the mask decides, as in torch)
  or ``tgt_is_causal`` is False.

Masks use torch's meaning: boolean True = may NOT attend (``key_padding_mask`` True =
padding), or float added to the scores. gpudl's own names keep gpudl's sign, True = keep:
``mask``/``key_mask`` (MHA, encoder), ``mask``/``memory_key_mask`` (decoder). With
``need_weights=True`` MultiHeadAttention returns ``((out, weights), state)``; the weights
are averaged over heads (N, Lq, Lk), or per head (N, h, Lq, Lk) with
``average_attn_weights=False``.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> enc = nn.TransformerEncoderLayer(num_heads=2, ff_dim=32)
    >>> p, s = enc.init(gd.random.key(0), gd.ops.zeros((2, 5, 8)))
    >>> enc.apply(p, s, gd.ops.ones((2, 5, 8)))[0].shape
    (2, 5, 8)
    >>> sorted(p["self_attn"])
    ['in_proj_bias', 'in_proj_weight', 'out_proj']
"""

from __future__ import annotations

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of
from gpudl.errors import ConfigError, ShapeError, UnknownInputKeyError
from gpudl.functional.attention import linear_rows
from gpudl.nn import initializers as inits
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

_MHA_INPUTS = ("query", "key", "value", "attn_mask", "key_padding_mask", "need_weights",
               "average_attn_weights", "is_causal", "mask", "key_mask")
_ENCODER_INPUTS = ("x", "src", "src_mask", "src_key_padding_mask", "is_causal", "mask",
                   "key_mask")
_DECODER_INPUTS = ("x", "tgt", "memory", "tgt_mask", "memory_mask", "tgt_key_padding_mask",
                   "memory_key_padding_mask", "tgt_is_causal", "memory_is_causal", "causal",
                   "mask", "memory_key_mask")


def check_input_keys(layer: Layer, x, accepted: tuple[str, ...]) -> None:
    """Refuse dict inputs with keys the layer does not read (they would be ignored)."""
    if isinstance(x, dict):
        unknown = [k for k in x if k not in accepted]
        if unknown:
            raise UnknownInputKeyError(
                f"{layer_label(layer)}: unknown input key(s) {unknown}; accepted keys are "
                f"{list(accepted)}. Torch-named masks (attn_mask, key_padding_mask, ...) "
                "use torch's sign (True = masked out); mask/key_mask use True = keep.")


def _from_torch_sign(mask):
    """A torch-convention mask (bool True = masked out, or float additive) in gpudl's
    convention (bool True = keep, or float additive); None stays None."""
    if mask is None:
        return None
    raw = unbox_all(mask)
    return ~raw if getattr(raw.dtype, "kind", None) == "b" else raw


def _either_mask(layer: Layer, x: dict, torch_name: str, gpudl_name: str):
    """The mask given as ``torch_name`` (torch's sign) or ``gpudl_name`` (True = keep), in
    gpudl's sign; giving both is refused."""
    if x.get(torch_name) is not None and x.get(gpudl_name) is not None:
        raise ConfigError(f"{layer_label(layer)}: give {torch_name!r} (torch's sign, True = "
                          f"masked out) or {gpudl_name!r} (True = keep), not both")
    return _from_torch_sign(x.get(torch_name)) if x.get(torch_name) is not None else x.get(gpudl_name)


def _mha_shapes(q, k, v, embed_dim: int | None = None, bias: bool = True) -> dict:
    """torch's MultiheadAttention parameters for queries/keys/values of these widths."""
    e = embed_dim or q.shape[-1]
    eq, ek, ev = q.shape[-1], k.shape[-1], v.shape[-1]
    if eq == ek == ev == e:
        shapes = {"in_proj_weight": (3 * e, e)}
    else:
        shapes = {"q_proj_weight": (e, eq), "k_proj_weight": (e, ek), "v_proj_weight": (e, ev)}
    if bias:
        shapes["in_proj_bias"] = (3 * e,)
    shapes["out_proj"] = {"weight": (e, e), **({"bias": (e,)} if bias else {})}
    return shapes


class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product attention with learned q/k/v/out projections, keyed
    as torch's ``nn.MultiheadAttention`` (see the module docstring)."""

    base_name = "mha"

    @positional_limit(1, lambda label, args: (
        f"{label} takes (num_heads, *, embed_dim=None, bias=True, causal=False, dropout=0.0) "
        f"and infers embed_dim from the input; for torch's MultiheadAttention(embed_dim, "
        f"num_heads) = MultiheadAttention{tuple(args[:2])!r} write {label}({args[1]!r})."))
    def __init__(self, num_heads: int, *, embed_dim: int | None = None, bias: bool = True,
                 causal: bool = False, dropout: float = 0.0, name: str | None = None):
        super().__init__(name)
        self.num_heads = check_int(self, "num_heads", num_heads)
        self.embed_dim = None if embed_dim is None else check_int(self, "embed_dim", embed_dim)
        self.bias = check_bool(self, "bias", bias)
        self.causal = check_bool(self, "causal", causal)
        self.dropout = check_float(self, "dropout", dropout, 0.0, 1.0, high_open=True)

    def _parts(self, x):
        """(query, key, value, mask, key_mask), the masks in gpudl's True = keep sign."""
        if isinstance(x, dict):
            check_input_keys(self, x, _MHA_INPUTS)
            q = x["query"]
            k = x.get("key", q)
            return (q, k, x.get("value", k), _either_mask(self, x, "attn_mask", "mask"),
                    _either_mask(self, x, "key_padding_mask", "key_mask"))
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
        # torch's MultiheadAttention._reset_parameters: Xavier-uniform input projections
        # (the packed (3E, E) matrix as one), zero biases, out_proj as a Linear's weight
        kq, kk, kv, ko = gdr.split(key, 4)
        shapes = _mha_shapes(q, k, v, self.embed_dim, self.bias)
        dtype, dev = q.dtype, device_of(q)
        glorot = inits.glorot_uniform()
        if "in_proj_weight" in shapes:
            params = {"in_proj_weight": glorot(kq, shapes["in_proj_weight"], dtype, dev)}
        else:
            params = {f"{n}_proj_weight": glorot(kn, shapes[f"{n}_proj_weight"], dtype, dev)
                      for n, kn in zip("qkv", (kq, kk, kv))}
        if self.bias:
            params["in_proj_bias"] = ops.zeros((3 * e,), dtype=dtype, device=dev)
        params["out_proj"] = {"weight": inits.torch_default()(ko, (e, e), dtype, dev)}
        if self.bias:
            params["out_proj"]["bias"] = ops.zeros((e,), dtype=dtype, device=dev)
        return params, {}

    def param_shapes(self, x) -> dict:
        q, k, v, _, _ = self._parts(x)
        return _mha_shapes(q, k, v, self.embed_dim, self.bias)

    def apply(self, params, state, x, *, train=False, key=None):
        _check_dropout_key(self, train, key)
        q, k, v, mask, key_mask = self._parts(x)
        check_params(params, self.param_shapes(x), self, q)
        opts = x if isinstance(x, dict) else {}
        # dropout on the attention weights, where torch's MultiheadAttention puts it
        need = bool(opts.get("need_weights", False))
        out, weights = _attend(params, q, k, v, self.num_heads, mask, key_mask,
                              bool(opts.get("is_causal", False)) or self.causal,
                              self.dropout if train else 0.0, key, need_weights=need)
        if need:
            if opts.get("average_attn_weights", True):
                weights = ops.mean(weights, axis=1)  # (N, Lq, Lk), torch's default
            return (out, weights), state
        return out, state


def _check_dropout_key(layer: Layer, train: bool, key) -> None:
    """Training with dropout needs a key, as nn.Dropout: without one the dropout was left
    out silently, and the model trained unregularised."""
    if train and layer.dropout and key is None:
        raise ConfigError(
            f"{layer_label(layer)}: train=True with dropout={layer.dropout} needs a random key: "
            "model.apply(params, state, x, train=True, key=gd.random.key(step)) (a fresh key "
            "each step; gd.fit passes one), or train=False for evaluation")


def _attend(params: dict, q, k, v, num_heads: int, mask=None, key_mask=None, causal=False,
            dropout: float = 0.0, key=None, need_weights: bool = False):
    """Run ``F.multi_head_attention`` on torch-keyed MHA params: (out, per-head weights, or
    None unless ``need_weights``); ``dropout`` (with ``key``) drops attention weights."""
    b = params.get("in_proj_bias")
    if "in_proj_weight" in params:  # packed: F.multi_head_attention splits it
        wq, wk, wv = params["in_proj_weight"], None, None
        bq, bk, bv = b, None, None
    else:
        wq, wk, wv = (params[f"{n}_proj_weight"] for n in "qkv")
        e = wq.shape[0]
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
    result = F.multi_head_attention(
        q, k, v, num_heads, wq, wk, wv, params["out_proj"]["weight"], bq, bk, bv,
        params["out_proj"].get("bias"), mask=mask, key_mask=key_mask, causal=causal,
        return_weights=need_weights, dropout_rate=dropout if key is not None else 0.0,
        dropout_key=key)
    return result if need_weights else (result, None)


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

    def _ff(self, p, x, key=None):
        """linear2(drop(act(linear1(x)))): torch's feed-forward, its inner dropout included
        (``key`` None: no dropout)."""
        # one 2-D GEMM per Linear over all N*L rows, the bias (and a ReLU) applied in place
        act = F.get_activation(self.activation)
        h = linear_rows(x, p["linear1"]["weight"], p["linear1"]["bias"], relu=act is F.relu)
        h = h if act is F.relu else act(h)
        if key is not None:
            h = F.dropout(h, self.dropout, key, train=True)
        return linear_rows(h, p["linear2"]["weight"], p["linear2"]["bias"])

    def _sublayer(self, x, fn, norm_params, key, train):
        """Post-LN: LN(x + drop(fn(x))); pre-LN: x + drop(fn(LN(x))). ``fn(v, inner_key)``
        gets a key for its own dropout (attention weights, the FF's hidden layer) when
        training with dropout, else None: torch's dropout placement."""
        ln = LayerNorm(eps=self.eps)

        def norm(v):
            return ln.apply(norm_params, {}, v)[0]

        drop = bool(self.dropout and train and key is not None)
        inner, outer = gdr.split(key) if drop else (None, None)
        y = fn(norm(x), inner) if self.norm_first else fn(x, inner)
        if drop:
            y = F.dropout(y, self.dropout, outer, train=True)
        return x + y if self.norm_first else norm(x + y)


class TransformerEncoderLayer(_Block):
    """Self-attention + position-wise feed-forward, each with residual and LayerNorm."""

    base_name = "encoder"

    def _inputs(self, x):
        """(x, mask, key_mask, causal) with the masks in gpudl's True = keep sign."""
        if not isinstance(x, dict):
            return x, None, None, False
        check_input_keys(self, x, _ENCODER_INPUTS)
        xs = x["x"] if "x" in x else x["src"]
        return (xs, _either_mask(self, x, "src_mask", "mask"),
                _either_mask(self, x, "src_key_padding_mask", "key_mask"), bool(x.get("is_causal")))

    def init(self, key, x):
        xs = self._inputs(x)[0]
        self._check_heads(xs)
        k1, k2, k3, k4 = gdr.split(key, 4)
        return {  # torch's order
            "self_attn": MultiHeadAttention(self.num_heads).init(k1, xs)[0],
            **self._ff_init(k3, xs),
            "norm1": LayerNorm().init(k2, xs)[0],
            "norm2": LayerNorm().init(k4, xs)[0],
        }, {}

    def param_shapes(self, x) -> dict:
        xs = self._inputs(x)[0]
        return self._shapes(xs.shape[-1], {
            "self_attn": _mha_shapes(xs, xs, xs)}, ("norm1", "norm2"))

    def apply(self, params, state, x, *, train=False, key=None):
        _check_dropout_key(self, train, key)
        xs, mask, key_mask, causal = self._inputs(x)
        check_params(params, self.param_shapes(x), self, xs)
        k1, k2 = gdr.split(key) if key is not None else (None, None)

        def self_attend(v, k):
            return _attend(params["self_attn"], v, v, v, self.num_heads, mask, key_mask,
                          causal, self.dropout, k)[0]

        xs = self._sublayer(xs, self_attend, params["norm1"], k1, train)
        xs = self._sublayer(xs, lambda v, k: self._ff(params, v, k), params["norm2"], k2, train)
        return xs, state


class TransformerDecoderLayer(_Block):
    """Causal self-attention, cross-attention (``multihead_attn``) over ``memory``, then
    feed-forward."""

    base_name = "decoder"

    def _inputs(self, x) -> dict:
        x = x if isinstance(x, dict) else {"x": x}
        check_input_keys(self, x, _DECODER_INPUTS)
        mask = _either_mask(self, x, "tgt_mask", "mask")
        causal = x.get("causal", x.get("tgt_is_causal", x.get("tgt_mask") is None))
        return {"x": x["x"] if "x" in x else x["tgt"], "memory": x.get("memory"),
                "mask": mask, "key_mask": _from_torch_sign(x.get("tgt_key_padding_mask")),
                "causal": bool(causal), "memory_mask": _from_torch_sign(x.get("memory_mask")),
                "memory_key_mask": _either_mask(self, x, "memory_key_padding_mask", "memory_key_mask"),
                "memory_causal": bool(x.get("memory_is_causal", False))}

    def init(self, key, x):
        inputs = self._inputs(x)
        xs, memory = inputs["x"], inputs["memory"]
        self._check_heads(xs)
        keys = gdr.split(key, 6)
        params = {"self_attn": MultiHeadAttention(self.num_heads).init(keys[0], xs)[0]}
        if memory is not None:
            params["multihead_attn"] = MultiHeadAttention(self.num_heads).init(
                keys[2], {"query": xs, "key": memory})[0]
        params.update(self._ff_init(keys[4], xs))  # torch's order
        params["norm1"] = LayerNorm().init(keys[1], xs)[0]
        if memory is not None:
            params["norm2"] = LayerNorm().init(keys[3], xs)[0]
        params["norm3"] = LayerNorm().init(keys[5], xs)[0]
        return params, {}

    def param_shapes(self, x) -> dict:
        inputs = self._inputs(x)
        xs, memory = inputs["x"], inputs["memory"]
        attention = {"self_attn": _mha_shapes(xs, xs, xs)}
        norms = ("norm1", "norm3")
        if memory is not None:
            attention["multihead_attn"] = _mha_shapes(xs, memory, memory)
            norms = ("norm1", "norm2", "norm3")
        return self._shapes(xs.shape[-1], attention, norms)

    def apply(self, params, state, x, *, train=False, key=None):
        _check_dropout_key(self, train, key)
        i = self._inputs(x)
        xs, memory = i["x"], i["memory"]
        check_params(params, self.param_shapes(x), self, xs)
        k1, k2, k3 = gdr.split(key, 3) if key is not None else (None, None, None)

        def self_attend(v, k):
            return _attend(params["self_attn"], v, v, v, self.num_heads, i["mask"],
                          i["key_mask"], i["causal"], self.dropout, k)[0]

        xs = self._sublayer(xs, self_attend, params["norm1"], k1, train)
        if memory is not None:
            def cross_attend(v, k):
                return _attend(params["multihead_attn"], v, memory, memory, self.num_heads,
                              i["memory_mask"], i["memory_key_mask"], i["memory_causal"],
                              self.dropout, k)[0]

            xs = self._sublayer(xs, cross_attend, params["norm2"], k2, train)
        xs = self._sublayer(xs, lambda v, k: self._ff(params, v, k), params["norm3"], k3, train)
        return xs, state
