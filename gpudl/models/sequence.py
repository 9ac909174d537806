"""Recurrent models: RNN/LSTM/GRU classifiers and regressors, a character-level language
model with sampling, a many-to-one classifier on variable-length token sequences, and a
seq2seq encoder-decoder with Bahdanau (additive) attention.

All are ``nn`` layers (``init``/``apply``), batch-first, with torch-named parameters.

Example:
    >>> import gpudl as gd
    >>> from gpudl.data import adding_task
    >>> x, y = adding_task(8, length=10)
    >>> net = rnn_classifier(1, hidden=16, kind="gru", bidirectional=True)
    >>> p, s = net.init(gd.random.key(0), x)
    >>> net.apply(p, s, x)[0].shape
    (8, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import asarray, module_of, to_numpy
from gpudl.errors import ConfigError
from gpudl.models import decoding
from gpudl.nn.base import Layer, Sequential, array_device
from gpudl.nn.core import Dense
from gpudl.nn.normalization import Embedding
from gpudl.nn.recurrent import GRU, LSTM, RNN

_KINDS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def recurrent(kind: str, hidden: int, **kwargs) -> Layer:
    """``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` by name, batch-first."""
    if kind not in _KINDS:
        raise ConfigError(f"recurrent: kind must be one of {sorted(_KINDS)}, got {kind!r}")
    return _KINDS[kind](hidden, batch_first=True, **kwargs)


def rnn_classifier(num_outputs: int, hidden: int = 32, kind: str = "lstm", num_layers: int = 1,
                   bidirectional: bool = False, dropout: float = 0.0, per_step: bool = False,
                   nonlinearity: str = "tanh") -> Sequential:
    """(N, T, I) -> (N, num_outputs) from the last step (or (N, T, num_outputs) ``per_step``).

    ``kind`` 'rnn' (Elman), 'lstm' or 'gru'; deep (``num_layers``) and ``bidirectional``
    variants (the last step's forward half and the first step's reverse half feed the head).
    Outputs are logits for a classifier, values for a regressor (the adding task).
    """
    kw = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    return Sequential([
        recurrent(kind, hidden, num_layers=num_layers, bidirectional=bidirectional,
                  dropout=dropout, return_sequences=per_step, name="rnn", **kw),
        Dense(num_outputs, name="head"),
    ])


def rnn_regressor(num_outputs: int = 1, **kwargs) -> Sequential:
    """:func:`rnn_classifier` with one output by default (adding task, sine prediction)."""
    return rnn_classifier(num_outputs, **kwargs)


def _ids_lengths(x) -> tuple[Any, Any]:
    if isinstance(x, dict):
        return x["ids"], x.get("lengths")
    return x, None


class SequenceClassifier(Layer):
    """Many-to-one classifier on padded token ids (sentiment style).

    Embedding -> recurrent -> the state at each sequence's last valid step -> Dense.
    Input: ids (N, T), or ``{"ids": (N, T), "lengths": (N,)}`` for right-padded batches
    (``data.bucket_batches`` makes them); output logits (N, num_classes).
    """

    base_name = "sequence_classifier"

    def __init__(self, vocab_size: int, num_classes: int = 2, embed_dim: int = 32,
                 hidden: int = 32, kind: str = "lstm", num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, padding_idx: int | None = 0,
                 name: str | None = None):
        super().__init__(name)
        self.embed = Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.rnn = recurrent(kind, hidden, num_layers=num_layers, bidirectional=bidirectional,
                             dropout=dropout, return_sequences=False)
        self.head, self.dropout = Dense(num_classes), dropout

    def init(self, key, x):
        ids, _ = _ids_lengths(x)
        k1, k2, k3 = gdr.split(key, 3)
        pe, _ = self.embed.init(k1, ids)
        e, _ = self.embed.apply(pe, {}, ids)
        pr, _ = self.rnn.init(k2, e)
        h, _ = self.rnn.apply(pr, {}, e)
        return {"embed": pe, "rnn": pr, "head": self.head.init(k3, h)[0]}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        ids, lengths = _ids_lengths(x)
        k1, k2 = gdr.split(key) if key is not None else (None, None)
        e, _ = self.embed.apply(params["embed"], {}, ids)  # (N, T, E)
        h, _ = self.rnn.apply(params["rnn"], {}, {"x": e, "lengths": lengths}, train=train,
                              key=k1)  # (N, D*H)
        if self.dropout and train:
            h = F.dropout(h, self.dropout, k2, train=True)
        return self.head.apply(params["head"], {}, h)[0], state


class CharLM(Layer):
    """Character-level language model: Embedding -> LSTM/GRU -> Dense over the vocabulary.

    ``apply``: ids (N, T) -> logits (N, T, V); train with ``F.sequence_cross_entropy``
    against the ids shifted by one (``data.char_corpus`` gives both).
    ``sample(params, prefix, length, temperature, key)`` continues a prefix (a string when
    the model holds a ``vocab``, else ids (N, T0)); ``temperature=0`` is greedy.
    """

    base_name = "char_lm"

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden: int = 128,
                 num_layers: int = 1, kind: str = "lstm", dropout: float = 0.0, vocab=None,
                 name: str | None = None):
        super().__init__(name)
        if kind not in ("lstm", "gru", "rnn"):
            raise ConfigError(f"CharLM: kind must be 'lstm', 'gru' or 'rnn', got {kind!r}")
        self.vocab, self.kind, self.vocab_size = vocab, kind, vocab_size
        self.embed = Embedding(vocab_size, embed_dim)
        self.rnn = recurrent(kind, hidden, num_layers=num_layers, dropout=dropout,
                             return_state=True)
        self.head = Dense(vocab_size)

    def init(self, key, x):
        k1, k2, k3 = gdr.split(key, 3)
        pe, _ = self.embed.init(k1, x)
        e, _ = self.embed.apply(pe, {}, x)
        pr, _ = self.rnn.init(k2, e)
        (h, _), _ = self.rnn.apply(pr, {}, e)
        return {"embed": pe, "rnn": pr, "head": self.head.init(k3, h)[0]}, {}

    def forward(self, params, ids, hidden=None, train=False, key=None):
        """Logits (N, T, V) and the final hidden state (torch layout, (L, N, H) arrays).

        ``key`` (dropout, when training) is a key or an int seed (``gd.random.as_key``).
        """
        key = None if key is None else gdr.as_key(key, "CharLM.forward")
        inputs = {"x": self.embed.apply(params["embed"], {}, ids)[0]}
        if hidden is not None:
            inputs.update({"h0": hidden[0], "c0": hidden[1]} if self.kind == "lstm"
                          else {"h0": hidden})
        (y, final), _ = self.rnn.apply(params["rnn"], {}, inputs, train=train, key=key)
        return self.head.apply(params["head"], {}, y)[0], final

    def apply(self, params, state, x, *, train=False, key=None):
        return self.forward(params, x, train=train, key=key)[0], state

    # ---------------------------------------------------------------- decoding
    def _start(self, params, prefix):
        """(ids (N, T0), last tokens (N,), batch-first state after all but the last token)."""
        ids = prefix
        if isinstance(prefix, str):
            if self.vocab is None:
                raise ConfigError("CharLM.sample: a string prefix needs the model's vocab "
                                 "(CharLM(..., vocab=vocab)); or pass token ids (N, T0)")
            ids = np.asarray([self.vocab.encode(prefix)], dtype=np.int64)
        # on the parameters' device, so a string prefix works for a model on the GPU
        ids = asarray(ids, dtype=np.int64, device=array_device(params["embed"]["weight"]))
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ConfigError(f"CharLM: prefix must hold at least one token per row, (N, T0); "
                             f"got shape {tuple(ids.shape)}")
        state = None
        if ids.shape[1] > 1:
            _, final = self.forward(params, ids[:, :-1])
            state = _batch_first(final)
        return ids, ids[:, -1], state

    def step_fn(self, params):
        """``step(tokens (N,), state) -> (log_probs (N, V), state)`` for :mod:`decoding`."""
        def step(tokens, state):
            hidden = None if state is None else _torch_layout(state)
            logits, final = self.forward(params, tokens[:, None], hidden)
            return F.log_softmax(logits[:, 0], axis=-1), _batch_first(final)
        return step

    def sample(self, params, prefix, length: int, temperature: float = 1.0, key=None,
               top_k: int | None = None):
        """Continue ``prefix`` by ``length`` sampled tokens: a string for a string prefix
        (prefix included), else the new ids (N, length). ``key`` is a key or an int seed
        (``gd.random.as_key``), needed unless ``temperature`` is 0."""
        key = None if key is None else gdr.as_key(key, "CharLM.sample")
        ids, tokens, state = self._start(params, prefix)
        new = decoding.sample_decode(self.step_fn(params), tokens, state, length,
                                     temperature=temperature, key=key, top_k=top_k)
        if isinstance(prefix, str):
            return prefix + self._text(to_numpy(new)[0])
        return new

    def beam_search(self, params, prefix, length: int, beam_width: int = 4,
                    length_penalty: float = 0.0):
        """The most likely continuation of ``prefix`` found by beam search (as :meth:`sample`)."""
        ids, tokens, state = self._start(params, prefix)
        seqs, _ = decoding.beam_search(self.step_fn(params), tokens, state, length, beam_width,
                                       length_penalty=length_penalty)
        best = seqs[:, 0]
        if isinstance(prefix, str):
            return prefix + self._text(to_numpy(best)[0])
        return best

    def _text(self, ids) -> str:
        """Decoded characters; ``<pad>``/``<unk>``/``<bos>``/``<eos>`` (which an untrained or
        barely trained model may still emit) are dropped from the text."""
        from gpudl.data.text import SPECIALS

        return "".join(t for t in self.vocab.decode(ids) if t not in SPECIALS)


def _batch_first(final):
    """torch-layout (L, N, H) hidden (or (h, c)) -> dict of (N, L, H) arrays."""
    if isinstance(final, tuple):
        return {"h": ops.swapaxes(final[0], 0, 1), "c": ops.swapaxes(final[1], 0, 1)}
    return {"h": ops.swapaxes(final, 0, 1)}


def _torch_layout(state):
    if "c" in state:
        return ops.swapaxes(state["h"], 0, 1), ops.swapaxes(state["c"], 0, 1)
    return ops.swapaxes(state["h"], 0, 1)


class Seq2Seq(Layer):
    """Encoder-decoder with Bahdanau attention (Bahdanau, Cho & Bengio 2015), GRU cells.

    Encoder: Embedding -> (bidirectional) GRU over the source; its final state through
    ``bridge`` (Dense + tanh) starts the decoder. Decoder step t: context_t = additive
    attention with query s_{t-1} over the encoder outputs (padding masked out),
    s_t = GRUCell([emb(y_{t-1}); context_t], s_{t-1}), logits = Dense([s_t; context_t;
    emb(y_{t-1})]). ``apply`` uses teacher forcing: input ``{"src": (N, S), "tgt_in":
    (N, T), "src_lengths": (N,) optional}`` with ``tgt_in`` = ``shift_right(tgt, bos)``;
    output logits (N, T, V_tgt). ``greedy``/``beam`` decode from ``bos`` until ``eos``.
    Token ids follow ``data.Vocab``: pad 0, bos 2, eos 3.
    """

    base_name = "seq2seq"

    def __init__(self, src_vocab: int, tgt_vocab: int, embed_dim: int = 32, hidden: int = 64,
                 attn_dim: int | None = None, bidirectional: bool = True, bos: int = 2,
                 eos: int = 3, padding_idx: int = 0, name: str | None = None):
        super().__init__(name)
        self.src_embed = Embedding(src_vocab, embed_dim, padding_idx=padding_idx)
        self.tgt_embed = Embedding(tgt_vocab, embed_dim, padding_idx=padding_idx)
        self.encoder = GRU(hidden, bidirectional=bidirectional, batch_first=True,
                           return_state=True)
        self.hidden, self.attn_dim = hidden, attn_dim or hidden
        self.d_enc = hidden * (2 if bidirectional else 1)
        self.embed_dim, self.tgt_vocab, self.bos, self.eos = embed_dim, tgt_vocab, bos, eos

    def init(self, key, x):
        # {"src", "tgt_in"} as apply takes it, or {"src", "tgt"} as seq2seq_loss_fn's batches
        src = x["src"]
        tgt_in = x["tgt_in"] if "tgt_in" in x else shift_right(x["tgt"], self.bos)
        ks = gdr.split(key, 8)
        dev, f32 = array_device(src), np.float32
        p = {"src_embed": self.src_embed.init(ks[0], src)[0],
             "tgt_embed": self.tgt_embed.init(ks[1], tgt_in)[0]}
        e = self.src_embed.apply(p["src_embed"], {}, src)[0]
        p["encoder"] = self.encoder.init(ks[2], e)[0]
        h, a, d = self.hidden, self.attn_dim, self.d_enc

        def example(width):
            return ops.zeros((1, width), dtype=f32, device=dev)

        p["bridge"] = Dense(h).init(ks[3], example(d))[0]
        bound_q, bound_k = 1 / np.sqrt(h), 1 / np.sqrt(d)
        p["attention"] = {
            "w_q": gdr.uniform(ks[4], (a, h), f32, -bound_q, bound_q, device=dev),
            "w_k": gdr.uniform(ks[5], (a, d), f32, -bound_k, bound_k, device=dev),
            "v": gdr.uniform(ks[6], (a,), f32, -1 / np.sqrt(a), 1 / np.sqrt(a), device=dev)}
        cell_in = self.embed_dim + d
        kc = gdr.split(ks[7], 5)
        bound = 1 / np.sqrt(h)
        p["decoder"] = {name: gdr.uniform(k, shape, f32, -bound, bound, device=dev)
                        for name, k, shape in zip(
                            ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), kc,
                            ((3 * h, cell_in), (3 * h, h), (3 * h,), (3 * h,)))}
        p["out"] = Dense(self.tgt_vocab).init(kc[4], example(h + d + self.embed_dim))[0]
        return p, {}

    def encode(self, params, src, src_lengths=None) -> dict:
        """Decoder start state: ``{"h": (N, H), "memory": (N, S, D*H), "mask": (N, S)}``."""
        e = self.src_embed.apply(params["src_embed"], {}, src)[0]
        (memory, h_n), _ = self.encoder.apply(params["encoder"], {},
                                              {"x": e, "lengths": src_lengths})
        final = ops.concatenate([h_n[i] for i in range(h_n.shape[0])], axis=-1)  # (N, D*H)
        h0 = ops.tanh(Dense(self.hidden).apply(params["bridge"], {}, final)[0])
        xp = module_of(unbox_all(src))
        s = src.shape[1]
        mask = xp.ones(src.shape, dtype=bool) if src_lengths is None else \
            xp.arange(s)[None, :] < xp.asarray(src_lengths)[:, None]
        return {"h": h0, "memory": memory, "mask": mask}

    def decode_step(self, params, tokens, state):
        """One decoder step: ``(logits (N, V), new state, attention weights (N, S))``."""
        att, dec = params["attention"], params["decoder"]
        emb = self.tgt_embed.apply(params["tgt_embed"], {}, tokens)[0]  # (N, E)
        context, weights = F.additive_attention(state["h"], state["memory"], state["memory"],
                                                att["w_q"], att["w_k"], att["v"],
                                                mask=state["mask"])
        h = F.gru_cell(ops.concatenate([emb, context], axis=-1), state["h"], dec["weight_ih"],
                       dec["weight_hh"], dec["bias_ih"], dec["bias_hh"])
        logits = Dense(self.tgt_vocab).apply(
            params["out"], {}, ops.concatenate([h, context, emb], axis=-1))[0]
        return logits, {**state, "h": h}, weights

    def forward(self, params, src, tgt_in, src_lengths=None):
        """Teacher-forced logits (N, T, V) and attention weights (N, T, S)."""
        state = self.encode(params, src, src_lengths)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            lg, state, w = self.decode_step(params, tgt_in[:, t], state)
            logits.append(lg)
            weights.append(w)
        return ops.stack(logits, axis=1), ops.stack(weights, axis=1)

    def apply(self, params, state, x, *, train=False, key=None):
        return self.forward(params, x["src"], x["tgt_in"], x.get("src_lengths"))[0], state

    def _step_fn(self, params):
        def step(tokens, st):
            logits, st, _ = self.decode_step(params, tokens, st)
            return F.log_softmax(logits, axis=-1), st
        return step

    def greedy(self, params, src, src_lengths=None, max_len: int = 20):
        """Greedy decoding: (N, max_len) token ids (``eos`` repeats after the end)."""
        state = self.encode(params, src, src_lengths)
        start = module_of(unbox_all(src)).full((src.shape[0],), self.bos, dtype=np.int64)
        return decoding.greedy_decode(self._step_fn(params), start, state, max_len, eos=self.eos)

    def beam(self, params, src, src_lengths=None, max_len: int = 20, beam_width: int = 4,
             length_penalty: float = 1.0):
        """Beam-search decoding: the best hypothesis per row (N, max_len)."""
        state = self.encode(params, src, src_lengths)
        start = module_of(unbox_all(src)).full((src.shape[0],), self.bos, dtype=np.int64)
        seqs, _ = decoding.beam_search(self._step_fn(params), start, state, max_len, beam_width,
                                       eos=self.eos, length_penalty=length_penalty)
        return seqs[:, 0]


def shift_right(tgt, bos: int):
    """Teacher-forcing decoder input: ``[bos, y_0, ..., y_{T-2}]`` for targets (N, T)."""
    xp = module_of(unbox_all(tgt))
    return xp.concatenate([xp.full((tgt.shape[0], 1), bos, dtype=tgt.dtype), tgt[:, :-1]], 1)


def seq2seq_loss_fn(model: Seq2Seq, pad: int | None = 0):
    """Teacher forcing as ``gd.fit``'s custom step for a :class:`Seq2Seq`.

    The batch is a dict ``{"src": (N, S), "tgt": (N, T)}`` (plus ``"src_lengths"`` for
    right-padded sources); the decoder reads ``shift_right(tgt, bos)`` and is scored on
    ``tgt`` with ``F.sequence_cross_entropy`` (tokens equal to ``pad`` left out; None
    scores all). ``aux`` holds ``y_true``/``y_pred`` (targets, logits), so
    ``metrics=["accuracy"]`` is the per-token accuracy (over every position).

    Example:
        >>> import numpy as np, gpudl as gd
        >>> src = np.random.default_rng(0).integers(4, 10, (16, 4))
        >>> data = {"src": src, "tgt": src[:, ::-1].copy()}
        >>> m = Seq2Seq(10, 10, embed_dim=4, hidden=8)
        >>> h = gd.fit(m, data, loss_fn=seq2seq_loss_fn(m), optimizer=gd.optim.adam(1e-2),
        ...            metrics=["accuracy"], epochs=1, batch_size=8, verbose=0)
        >>> sorted(h.history)
        ['accuracy', 'loss']
    """

    def loss_fn(params, state, batch, key):
        tgt = batch["tgt"]
        logits, _ = model.forward(params, batch["src"], shift_right(tgt, model.bos),
                                  batch.get("src_lengths"))
        loss = F.sequence_cross_entropy(logits, tgt, ignore_index=pad)
        return loss, (state, {"y_true": tgt, "y_pred": unbox_all(logits)})

    return loss_fn
