"""word2vec skip-gram with negative sampling (Mikolov et al. 2013) and neighbour queries.

Two tables: ``in_embed`` (the word vectors v) and ``out_embed`` (context vectors u).
For a (center c, context o) pair and k sampled negatives n_1..n_k the loss is
``-log sigma(u_o . v_c) - sum_i log sigma(-u_{n_i} . v_c)``; negatives are drawn from the
unigram distribution raised to 3/4, with an explicit key.

Example:
    >>> import numpy as np, gpudl as gd
    >>> ids = np.array([4, 5, 6, 4, 5, 6, 4, 5, 6])
    >>> centers, contexts = skipgram_pairs(ids, window=1)
    >>> centers[:4].tolist(), contexts[:4].tolist()
    ([4, 5, 5, 6], [5, 4, 6, 5])
    >>> model = SkipGram(vocab_size=7, dim=8)
    >>> params, _ = model.init(gd.random.key(0), centers)
    >>> neg = sample_negatives(gd.random.key(1), unigram_table(ids, 7), (len(centers), 3))
    >>> float(sgns_loss(params, centers, contexts, neg)) > 0
    True
"""

from __future__ import annotations

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import get_device, module_of, to_numpy, xp_for
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn.base import Layer, array_device


def skipgram_pairs(ids, window: int = 2, key=None, dynamic_window: bool = False):
    """(center, context) id pairs for every token and every neighbour within ``window``.

    ``dynamic_window`` (word2vec's trick, needs ``key``): each center uses a window drawn
    uniformly from 1..window, so close neighbours count more; ``key`` is a key or an int
    seed (``gd.random.as_key``). Returns two int64 arrays.
    """
    key = None if key is None else gdr.as_key(key, "models.word2vec.skipgram_pairs")
    ids = np.asarray(to_numpy(ids), dtype=np.int64).reshape(-1)
    if window < 1:
        raise ConfigError(f"skipgram_pairs: window must be >= 1, got {window}")
    n = ids.size
    spans = np.full(n, window)
    if dynamic_window:
        if key is None:
            raise ConfigError("skipgram_pairs: dynamic_window needs a key")
        spans = to_numpy(gdr.randint(key, (n,), 1, window + 1, device="cpu"))
    centers, contexts = [], []
    for offset in range(-window, window + 1):
        if offset == 0:
            continue
        pos = np.arange(max(0, -offset), min(n, n - offset))
        pos = pos[spans[pos] >= abs(offset)]
        centers.append(pos)
        contexts.append(pos + offset)
    c, o = np.concatenate(centers), np.concatenate(contexts)
    order = np.lexsort((o, c))  # by center position, then context position
    return ids[c[order]], ids[o[order]]


def unigram_table(ids, vocab_size: int, power: float = 0.75):
    """Negative-sampling distribution (vocab_size,): counts ** power, normalised."""
    counts = np.bincount(np.asarray(to_numpy(ids), dtype=np.int64).reshape(-1),
                         minlength=vocab_size).astype(np.float64)
    p = counts ** power
    if p.sum() == 0:
        raise ConfigError("unigram_table: no tokens")
    return p / p.sum()


def sample_negatives(key, probs, shape, device: str | None = None):
    """Draw ids from ``probs`` (V,) by inverse CDF: same key, same ids on CPU and GPU.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "models.word2vec.sample_negatives")
    xp = xp_for(device or get_device())
    cdf = xp.asarray(np.cumsum(np.asarray(to_numpy(probs), dtype=np.float64)))
    u = gdr.uniform(key, shape, dtype=np.float64, device=device or get_device()) * cdf[-1]
    return xp.minimum(xp.searchsorted(cdf, u, side="right"), cdf.size - 1).astype(np.int64)


def sgns_loss(params, centers, contexts, negatives, reduction: str = "mean"):
    """Skip-gram negative-sampling loss; ``centers``/``contexts`` (B,), ``negatives`` (B, K).

    ``-log sigma(x) = softplus(-x)`` keeps it finite for large scores.
    """
    if len(negatives.shape) != 2 or negatives.shape[0] != centers.shape[0]:
        raise ShapeError(f"sgns_loss: negatives must be (B, K) with B = {centers.shape[0]}, "
                         f"got {tuple(negatives.shape)}")
    v = F.embedding(params["in_embed"]["weight"], centers)  # (B, D)
    u_pos = F.embedding(params["out_embed"]["weight"], contexts)  # (B, D)
    u_neg = F.embedding(params["out_embed"]["weight"], negatives)  # (B, K, D)
    pos = ops.sum(v * u_pos, axis=-1)  # (B,)
    neg = ops.matmul(u_neg, ops.expand_dims(v, -1))[..., 0]  # (B, K)
    loss = F.softplus(-pos) + ops.sum(F.softplus(neg), axis=-1)
    if reduction == "none":
        return loss
    return ops.mean(loss) if reduction == "mean" else ops.sum(loss)


class SkipGram(Layer):
    """Embedding tables for skip-gram: ``apply`` maps center ids to their word vectors.

    Init as the original word2vec: ``in_embed`` uniform(-0.5/dim, 0.5/dim), ``out_embed``
    zeros. Train with :func:`sgns_loss`; query with :func:`nearest`.
    """

    base_name = "skipgram"

    def __init__(self, vocab_size: int, dim: int = 50, name: str | None = None):
        super().__init__(name)
        self.vocab_size, self.dim = vocab_size, dim

    def init(self, key, x):
        dev = array_device(x)
        b = 0.5 / self.dim
        return {"in_embed": {"weight": gdr.uniform(key, (self.vocab_size, self.dim), np.float32,
                                                   -b, b, device=dev)},
                "out_embed": {"weight": ops.zeros((self.vocab_size, self.dim), device=dev)}}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        return F.embedding(params["in_embed"]["weight"], x), state


def nearest(params_or_vectors, query, k: int = 5, exclude_self: bool = True):
    """The ``k`` most cosine-similar words to each query id: ``(ids (Q, k), sims (Q, k))``.

    ``params_or_vectors``: SkipGram params (uses ``in_embed``) or a (V, D) table;
    ``query`` an id or ids (Q,). Ties go to the lower id.

    Example:
        >>> vec = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> nearest(vec, 0, k=1)[0].tolist()
        [[1]]
    """
    table = params_or_vectors
    if isinstance(table, dict):
        table = table["in_embed"]["weight"]
    w = unbox_all(table)
    xp = module_of(w)
    q = xp.atleast_1d(xp.asarray(query, dtype=np.int64))
    unit = w / xp.maximum(xp.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    sims = unit[q] @ unit.T  # (Q, V)
    if exclude_self:
        sims[xp.arange(q.size), q] = -xp.inf
    order = xp.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, xp.take_along_axis(sims, order, axis=1)
