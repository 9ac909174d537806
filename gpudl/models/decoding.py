"""Decoding from autoregressive models: temperature sampling, greedy, and beam search.

Every decoder drives a ``step(tokens, state) -> (log_probs, state)`` function:
``tokens`` (N,) ints are the last emitted tokens, ``log_probs`` (N, V) the model's
log-probabilities of the next token, and ``state`` any pytree (RNN hidden states, the
token history of a transformer...) whose array leaves have the batch on axis 0, so beam
search can reorder it (pass ``reorder=`` for another layout). Decoding runs on plain
NumPy/CuPy arrays, outside ``gd.grad``.

Example:
    >>> import numpy as np
    >>> table = np.log(np.array([[0.1, 0.9], [0.8, 0.2]]))   # next-token log-probs by token
    >>> step = lambda tokens, state: (table[tokens], state)
    >>> greedy_decode(step, np.array([0]), None, 4).tolist()
    [[1, 0, 1, 0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of
from gpudl.errors import ConfigError, ShapeError
from gpudl.tree import tree_map

Step = Callable[[Any, Any], tuple[Any, Any]]


def _log_probs(step: Step, tokens, state, op: str):
    lp, state = step(tokens, state)
    lp = unbox_all(lp)
    if lp.ndim != 2 or lp.shape[0] != tokens.shape[0]:
        raise ShapeError(f"{op}: step must return log_probs (N, V) = ({tokens.shape[0]}, V), "
                         f"got shape {tuple(lp.shape)}")
    return lp, state


def _take_rows(state, idx):
    return tree_map(lambda a: a[idx] if hasattr(a, "shape") and a.ndim else a, state)


def sample_token(log_probs, temperature: float = 1.0, key=None, top_k: int | None = None):
    """One token per row from ``softmax(log_probs / temperature)`` (Gumbel-max trick).

    ``temperature`` 0 gives the arg-max (greedy); small temperatures approach it, large
    ones approach uniform. ``top_k`` keeps only the k most likely tokens. Needs a ``key``
    unless the temperature is 0 (a key or an int seed, as ``gd.random.as_key``); the same
    key gives the same tokens on CPU and GPU.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> lp = np.log(np.array([[0.2, 0.8]]))
        >>> sample_token(lp, 0.0).tolist()
        [1]
    """
    key = None if key is None else gdr.as_key(key, "models.decoding.sample_token")
    lp = unbox_all(log_probs)
    xp = module_of(lp)
    if temperature < 0:
        raise ConfigError(f"sample_token: temperature must be >= 0, got {temperature}")
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"sample_token: top_k must be >= 1, got {top_k}")
        kth = xp.sort(lp, axis=-1)[..., -min(top_k, lp.shape[-1])][..., None]
        lp = xp.where(lp >= kth, lp, -xp.inf)
    if temperature == 0:
        return xp.argmax(lp, axis=-1)
    if key is None:
        raise ConfigError("sample_token: sampling needs a key, e.g. gd.random.key(0) "
                         "(or temperature=0 for greedy)")
    # Gumbel-max: argmax(logits/T + G) is a draw from softmax(logits/T). float64 noise so
    # u never rounds to 0 or 1 for any realistic vocabulary.
    u = gdr.uniform(key, lp.shape, dtype=np.float64, device=device_of(lp))
    u = xp.clip(u, 1e-300, 1.0 - 1e-16)
    gumbel = -xp.log(-xp.log(u))
    return xp.argmax(lp.astype(np.float64) / temperature + gumbel, axis=-1)


def sample_decode(step: Step, tokens, state, length: int, temperature: float = 1.0, key=None,
                  top_k: int | None = None, eos: int | None = None):
    """Sample ``length`` tokens per row, feeding each one back: (N, length) ints.

    After ``eos`` a row keeps emitting ``eos``. ``temperature=0`` is greedy decoding.
    ``key`` (a key or an int seed, as ``gd.random.as_key``) is needed unless it is greedy.
    """
    key = None if key is None else gdr.as_key(key, "models.decoding.sample_decode")
    xp = module_of(unbox_all(tokens))
    tokens = xp.asarray(tokens)
    keys = gdr.split(key, length) if (key is not None and temperature != 0) else [None] * length
    done = xp.zeros(tokens.shape, dtype=bool)
    out = []
    for t in range(length):
        lp, state = _log_probs(step, tokens, state, "sample_decode")
        tokens = sample_token(lp, temperature, keys[t], top_k)
        if eos is not None:
            tokens = xp.where(done, eos, tokens)
            done = done | (tokens == eos)
        out.append(tokens)
    return xp.stack(out, axis=1)


def greedy_decode(step: Step, tokens, state, length: int, eos: int | None = None):
    """Arg-max decoding: the most likely next token at every step, (N, length) ints."""
    return sample_decode(step, tokens, state, length, temperature=0.0, eos=eos)


def beam_search(step: Step, tokens, state, length: int, beam_width: int = 4,
                eos: int | None = None, length_penalty: float = 0.0,
                reorder: Callable[[Any, Any], Any] | None = None):
    """Beam search: the ``beam_width`` best continuations of each row.

    Returns ``(sequences (N, B, length), scores (N, B))`` best first. A hypothesis' score
    is its summed log-probability divided by ``len ** length_penalty`` (``len`` counts
    tokens up to and including ``eos``; 0 = no normalisation, 1 = mean log-probability;
    GNMT uses ~0.6), and hypotheses are ranked by that score at every step. A finished
    hypothesis (it emitted ``eos``) keeps its score and is padded with ``eos``.
    ``reorder(state, idx)`` picks batch rows ``idx`` of the state (default: axis 0 of
    every leaf). With ``beam_width=1`` this is greedy decoding.

    Example:
        >>> import numpy as np
        >>> # first token: 0 (p=.6) or 1 (p=.4); after 0 the next is a coin flip, after 1 sure
        >>> def step(tok, t):
        ...     rows = [[0.6, 0.4], [0.5, 0.5], [0.0, 1.0]] if t == 0 else [[0.5, 0.5], [0.0, 1.0]]
        ...     lp = np.log(np.array(rows) + 1e-12)
        ...     return (lp[:1].repeat(len(tok), 0) if t == 0 else lp[tok]), t + 1
        >>> seqs, scores = beam_search(step, np.array([0]), 0, 2, beam_width=2)
        >>> seqs[0, 0].tolist()          # greedy would pick [0, 0] with p = .3
        [1, 1]
    """
    if beam_width < 1 or length < 1:
        raise ConfigError(f"beam_search: need beam_width >= 1 and length >= 1, got "
                         f"{beam_width}, {length}")
    reorder = reorder or _take_rows
    xp = module_of(unbox_all(tokens))
    tokens = xp.asarray(tokens)
    n, b = tokens.shape[0], beam_width
    rows = xp.repeat(xp.arange(n), b)  # (N*B,): every row starts as B copies
    tokens, state = tokens[rows], reorder(state, rows)
    # Only the first copy is live at the start, so the first step does not pick B copies of
    # one token.
    logp = xp.full((n, b), -xp.inf)
    logp[:, 0] = 0.0
    lengths = xp.zeros((n, b), dtype=np.int64)
    done = xp.zeros((n, b), dtype=bool)
    history = xp.zeros((n, b, 0), dtype=np.int64)
    for _ in range(length):
        lp, state = _log_probs(step, tokens, state, "beam_search")
        v = lp.shape[-1]
        lp = lp.astype(np.float64).reshape(n, b, v)
        if eos is not None:  # finished: the only continuation is eos, at no cost
            frozen = xp.full((v,), -xp.inf)
            frozen[eos] = 0.0
            lp = xp.where(done[..., None], frozen, lp)
        total = logp[..., None] + lp  # (N, B, V)
        new_len = lengths + (~done)  # (N, B)
        norm = total / (xp.maximum(new_len, 1)[..., None].astype(np.float64) ** length_penalty)
        flat = norm.reshape(n, b * v)
        # Stable descending order (ties: lower beam, then lower token id) so results are
        # the same on every device.
        best = xp.argsort(-flat, axis=1, kind="stable")[:, :b]  # (N, B)
        beam, tok = best // v, best % v
        picked = xp.arange(n)[:, None]
        logp = total.reshape(n, b * v)[picked, best]
        lengths = new_len[picked, beam]
        done = done[picked, beam]
        history = xp.concatenate([history[picked, beam], tok[..., None]], axis=2)
        if eos is not None:
            done = done | (tok == eos)
        flat_rows = (picked * b + beam).reshape(-1)
        state = reorder(state, flat_rows)
        tokens = tok.reshape(-1)
    scores = logp / (xp.maximum(lengths, 1).astype(np.float64) ** length_penalty)
    order = xp.argsort(-scores, axis=1, kind="stable")
    picked = xp.arange(n)[:, None]
    return history[picked, order], scores[picked, order]

