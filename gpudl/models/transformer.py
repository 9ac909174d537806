"""Transformer models: an encoder classifier and a GPT-style decoder-only language model.

Example:
    >>> import numpy as np, gpudl as gd
    >>> ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])       # 0 = padding
    >>> clf = TransformerClassifier(vocab_size=10, num_classes=3, d_model=16, num_heads=2)
    >>> p, s = clf.init(gd.random.key(0), ids)
    >>> clf.apply(p, s, ids)[0].shape
    (2, 3)
"""

from __future__ import annotations

import math

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import asarray, module_of
from gpudl.errors import ConfigError, ShapeError
from gpudl.models import decoding
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import check_int
from gpudl.nn.attention import TransformerDecoderLayer, TransformerEncoderLayer
from gpudl.nn.base import Layer, array_device
from gpudl.nn.core import Dense
from gpudl.nn.normalization import Embedding, LayerNorm

_POOLING = ("mean", "max", "first")


def _split(key, n):
    return list(gdr.split(key, n)) if key is not None else [None] * n


class TransformerClassifier(Layer):
    """Embedding * sqrt(d) + sinusoidal positions -> N encoder layers -> pooling -> Dense.

    Input ids (N, T), or ``{"ids": (N, T), "lengths": (N,)}``. Padding (``ids ==
    padding_idx``, or steps past ``lengths``) is masked out of attention as keys
    (``key_mask``) and left out of the pooling: ``mean`` and ``max`` over the valid tokens,
    ``first`` takes position 0 (a [CLS] token the caller puts there). Output logits
    (N, num_classes). Encoder layers are post-LN (``norm_first=True`` for pre-LN); each
    ``layer<i>`` holds torch's ``TransformerEncoderLayer`` keys (``self_attn.in_proj_weight``,
    ``linear1``, ``norm1``, ...).
    """

    base_name = "transformer_classifier"

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 32, num_heads: int = 4,
                 ff_dim: int = 64, num_layers: int = 2, pooling: str = "mean",
                 dropout: float = 0.0, padding_idx: int | None = 0, norm_first: bool = False,
                 name: str | None = None):
        super().__init__(name)
        if pooling not in _POOLING:
            raise ConfigError(f"TransformerClassifier: pooling must be one of {_POOLING}, "
                             f"got {pooling!r}")
        self.d_model, self.pooling, self.padding_idx, self.dropout = (d_model, pooling,
                                                                      padding_idx, dropout)
        self.embed = Embedding(vocab_size, d_model, padding_idx=padding_idx)
        num_layers = check_int(self, "num_layers", num_layers)  # 0 built no encoder at all
        self.layers = [TransformerEncoderLayer(num_heads, ff_dim, dropout=dropout,
                                               norm_first=norm_first)
                       for _ in range(num_layers)]
        self.head = Dense(num_classes)

    def _keep(self, ids, lengths):
        xp = module_of(unbox_all(ids))
        if lengths is not None:
            return xp.arange(ids.shape[1])[None, :] < xp.asarray(lengths)[:, None]
        if self.padding_idx is not None:
            # through gd.ops, so an ONNX export computes the mask from its input
            return ops.not_equal(ids if hasattr(ids, "dtype") else xp.asarray(ids),
                                 self.padding_idx)
        return xp.ones(ids.shape, dtype=bool)

    def _embed(self, params, ids):
        e = self.embed.apply(params["embed"], {}, ids)[0] * math.sqrt(self.d_model)
        pe = F.sinusoidal_positional_encoding(ids.shape[1], self.d_model, dtype=e.dtype,
                                              device=array_device(ids))
        return e + pe  # (N, T, d)

    def init(self, key, x):
        ids = x["ids"] if isinstance(x, dict) else x
        keys = _split(key, len(self.layers) + 2)
        params = {"embed": self.embed.init(keys[0], ids)[0]}
        h = self._embed(params, ids)
        for i, layer in enumerate(self.layers):
            params[f"layer{i + 1}"] = layer.init(keys[i + 1], h)[0]
        params["head"] = self.head.init(keys[-1], h[:, 0])[0]
        return params, {}

    def features(self, params, x, train: bool = False, key=None):
        """Pooled encoder features (N, d_model); ``key`` (dropout, when training) is a key
        or an int seed (``gd.random.as_key``)."""
        key = None if key is None else gdr.as_key(key, "TransformerClassifier.features")
        ids, lengths = (x["ids"], x.get("lengths")) if isinstance(x, dict) else (x, None)
        keep = self._keep(ids, lengths)  # (N, T) True = a real token
        h = self._embed(params, ids)
        keys = _split(key, len(self.layers) + 1)
        if self.dropout and train:
            h = F.dropout(h, self.dropout, keys[-1], train=True)
        for i, layer in enumerate(self.layers):
            h = layer.apply(params[f"layer{i + 1}"], {}, {"x": h, "key_mask": keep},
                            train=train, key=keys[i])[0]
        if self.pooling == "first":
            return h[:, 0]
        if self.pooling == "max":
            lowest = float(np.finfo(unbox_all(h).dtype).min)
            return ops.max(ops.where(keep[..., None], h, lowest), axis=1)  # keep (N, T, 1)
        real = ops.astype(keep, unbox_all(h).dtype)  # (N, T) 1 = a real token
        weights = real / ops.maximum(ops.sum(real, axis=1, keepdims=True), 1.0)  # (N, T)
        # the mean as a (1, T) @ (T, d) product per sequence: one read of h each way, where
        # where + sum + divide made three full-size arrays
        pooled = ops.matmul(ops.expand_dims(weights, 1), h)  # (N, 1, d)
        return ops.reshape(pooled, (pooled.shape[0], pooled.shape[2]))  # (N, d)

    def apply(self, params, state, x, *, train=False, key=None):
        return self.head.apply(params["head"], {}, self.features(params, x, train, key))[0], state


class GPT(Layer):
    """Decoder-only (GPT-style) language model with causal self-attention.

    Token embedding + learned position embedding (max_len positions) -> N pre-LN blocks
    (causal self-attention, feed-forward) -> final LayerNorm -> Dense over the vocabulary
    (``tie_weights`` reuses the token embedding instead). ``apply``: ids (N, T <= max_len)
    -> logits (N, T, V). Each ``block<i>`` holds torch's attention keys
    (``self_attn.in_proj_weight``, ``self_attn.out_proj``, ``linear1``, ``norm1``, ``norm3``).
    ``generate`` continues a prefix by sampling (``temperature``,
    ``top_k``), greedily (``temperature=0``) or by beam search (``beam_width``).
    """

    base_name = "gpt"

    def __init__(self, vocab_size: int, d_model: int = 64, num_heads: int = 4,
                 ff_dim: int | None = None, num_layers: int = 2, max_len: int = 128,
                 dropout: float = 0.0, norm_first: bool = True, tie_weights: bool = False,
                 name: str | None = None):
        super().__init__(name)
        self.vocab_size, self.max_len, self.dropout = vocab_size, max_len, dropout
        self.tie_weights = tie_weights
        num_layers = check_int(self, "num_layers", num_layers)
        self.tok_embed = Embedding(vocab_size, d_model, weight_init=inits.normal(std=0.02))
        self.pos_embed = Embedding(max_len, d_model, weight_init=inits.normal(std=0.02))
        self.blocks = [TransformerDecoderLayer(num_heads, ff_dim or 4 * d_model,
                                               dropout=dropout, norm_first=norm_first,
                                               activation="gelu")
                       for _ in range(num_layers)]
        self.ln_f = LayerNorm()
        self.head = Dense(vocab_size, bias=False)

    def _check(self, ids):
        if len(ids.shape) != 2 or ids.shape[1] > self.max_len:
            raise ShapeError(f"GPT: ids must be (N, T) with T <= max_len = {self.max_len}, "
                             f"got shape {tuple(ids.shape)}")

    def init(self, key, x):
        self._check(x)
        keys = _split(key, len(self.blocks) + 4)
        params = {"tok_embed": self.tok_embed.init(keys[0], x)[0],
                  "pos_embed": self.pos_embed.init(keys[1], x)[0]}
        h = self.tok_embed.apply(params["tok_embed"], {}, x)[0]
        for i, block in enumerate(self.blocks):
            params[f"block{i + 1}"] = block.init(keys[i + 2], {"x": h})[0]
        params["ln_f"] = self.ln_f.init(keys[-2], h)[0]
        if not self.tie_weights:
            params["head"] = self.head.init(keys[-1], h)[0]
        return params, {}

    def apply(self, params, state, x, *, train=False, key=None):
        self._check(x)
        t = x.shape[1]
        positions = module_of(unbox_all(x)).arange(t)
        h = self.tok_embed.apply(params["tok_embed"], {}, x)[0] \
            + self.pos_embed.apply(params["pos_embed"], {}, positions)[0]  # (N, T, d)
        keys = _split(key, len(self.blocks) + 1)
        if self.dropout and train:
            h = F.dropout(h, self.dropout, keys[-1], train=True)
        for i, block in enumerate(self.blocks):
            h = block.apply(params[f"block{i + 1}"], {}, {"x": h}, train=train, key=keys[i])[0]
        h = self.ln_f.apply(params["ln_f"], {}, h)[0]
        if self.tie_weights:
            return ops.matmul(h, ops.transpose(params["tok_embed"]["weight"])), state
        return self.head.apply(params["head"], {}, h)[0], state

    def step_fn(self, params):
        """``step(tokens, history) -> (log_probs, history)``: the state is the token history
        (N, t); each step reruns the (last ``max_len``) context, no key/value cache."""
        def step(tokens, history):
            xp = module_of(unbox_all(tokens))
            history = xp.concatenate([history, tokens[:, None]], axis=1)
            logits, _ = self.apply(params, {}, history[:, -self.max_len:])
            return F.log_softmax(logits[:, -1], axis=-1), history
        return step

    def generate(self, params, prefix, length: int, temperature: float = 1.0, key=None,
                 top_k: int | None = None, beam_width: int | None = None, eos: int | None = None,
                 length_penalty: float = 0.0):
        """``prefix`` (N, T0) ids -> (N, T0 + length): the prefix and its continuation.

        ``key`` is a key or an int seed (``gd.random.as_key``), needed when sampling with
        ``temperature`` > 0 (not for greedy or beam search).
        """
        key = None if key is None else gdr.as_key(key, "GPT.generate")
        prefix = asarray(prefix, dtype=np.int64, device=array_device(params["tok_embed"]["weight"]))
        xp = module_of(prefix)
        if prefix.ndim != 2 or prefix.shape[1] < 1:
            raise ShapeError(f"GPT.generate: prefix must be (N, T0) with T0 >= 1, got "
                             f"{tuple(prefix.shape)}")
        step = self.step_fn(params)
        history, last = prefix[:, :-1], prefix[:, -1]
        if beam_width:
            seqs, _ = decoding.beam_search(step, last, history, length, beam_width, eos=eos,
                                           length_penalty=length_penalty)
            new = seqs[:, 0]
        else:
            new = decoding.sample_decode(step, last, history, length, temperature, key,
                                         top_k=top_k, eos=eos)
        return xp.concatenate([prefix, new.astype(prefix.dtype)], axis=1)
