"""word2vec skip-gram with negative sampling: pairs, negatives, the loss against a float64
loop, training on a two-topic corpus, and nearest-neighbour queries."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.models.word2vec import (
    SkipGram,
    nearest,
    sample_negatives,
    sgns_loss,
    skipgram_pairs,
    unigram_table,
)


def test_skipgram_pairs_match_naive_loops():
    ids = np.array([7, 3, 5, 3, 9, 1])
    c, o = skipgram_pairs(ids, window=2)
    expected = [(ids[i], ids[j]) for i in range(len(ids))
                for j in range(max(0, i - 2), min(len(ids), i + 3)) if j != i]
    assert list(zip(c.tolist(), o.tolist())) == [(int(a), int(b)) for a, b in expected]
    cd, od = skipgram_pairs(ids, window=2, key=gd.random.key(0), dynamic_window=True)
    pairs = set(zip(c.tolist(), o.tolist()))
    assert set(zip(cd.tolist(), od.tolist())) <= pairs
    assert 2 * (len(ids) - 1) <= len(cd) <= len(c)  # at least every adjacent pair
    with pytest.raises(ValueError, match="key"):
        skipgram_pairs(ids, 2, dynamic_window=True)


def test_unigram_table_and_negative_sampling():
    ids = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3])
    probs = unigram_table(ids, 5)
    counts = np.array([8, 2, 0, 1, 0], float)
    np.testing.assert_allclose(probs, counts ** 0.75 / (counts ** 0.75).sum())
    neg = sample_negatives(gd.random.key(0), probs, (20000, 5))
    assert neg.shape == (20000, 5) and neg.dtype == np.int64
    freq = np.bincount(neg.ravel(), minlength=5) / neg.size
    np.testing.assert_allclose(freq, probs, atol=0.01)
    assert freq[2] == 0 and freq[4] == 0  # never-seen words are never drawn
    np.testing.assert_array_equal(neg, sample_negatives(gd.random.key(0), probs, (20000, 5)))
    assert not np.array_equal(neg, sample_negatives(gd.random.key(1), probs, (20000, 5)))


def test_sgns_loss_and_gradient_match_float64_loop():
    rng = np.random.default_rng(0)
    v, d, b, k = 7, 4, 5, 3
    params = {"in_embed": {"weight": rng.normal(size=(v, d))},
              "out_embed": {"weight": rng.normal(size=(v, d))}}
    centers, contexts = rng.integers(0, v, b), rng.integers(0, v, b)
    negatives = rng.integers(0, v, (b, k))
    w_in, w_out = params["in_embed"]["weight"], params["out_embed"]["weight"]

    def log_sigmoid(z):
        return -np.log1p(np.exp(-z))

    expected = []
    for i in range(b):
        vc = w_in[centers[i]]
        loss = -log_sigmoid(w_out[contexts[i]] @ vc)
        for j in range(k):
            loss -= log_sigmoid(-(w_out[negatives[i, j]] @ vc))
        expected.append(loss)
    np.testing.assert_allclose(sgns_loss(params, centers, contexts, negatives, "none"),
                               expected, rtol=1e-12)
    np.testing.assert_allclose(sgns_loss(params, centers, contexts, negatives),
                               np.mean(expected), rtol=1e-12)
    gd.testing.check_grad(lambda p: sgns_loss(p, centers, contexts, negatives), params)


def _topic_corpus(seed=0, sentences=300):
    """Sentences of 6 words from one of two topics: words 0-4 or 5-9."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(0, 5, 6) + 5 * rng.integers(2)
                           for _ in range(sentences)])


def test_skipgram_trains_and_neighbours_share_a_topic():
    ids = _topic_corpus()
    centers, contexts = skipgram_pairs(ids, window=2)
    probs = unigram_table(ids, 10)
    model = SkipGram(10, dim=16)
    params, _ = model.init(gd.random.key(0), centers)
    assert params["in_embed"]["weight"].shape == (10, 16)
    assert not params["out_embed"]["weight"].any()  # word2vec starts context vectors at 0
    rng = np.random.default_rng(1)
    opt = optim.adam(0.05)
    st = opt.init(params)
    losses = []
    for i in range(80):
        batch = rng.integers(0, len(centers), 256)
        neg = sample_negatives(gd.random.fold_in(gd.random.key(1), i), probs, (256, 5))
        loss, g = gd.value_and_grad(sgns_loss)(params, centers[batch], contexts[batch], neg)
        u, st = opt.update(g, st, params)
        params = optim.apply_updates(params, u)
        losses.append(float(loss))
    assert np.mean(losses[-10:]) < 0.7 * losses[0]
    neighbours, sims = nearest(params, np.arange(10), k=3)
    assert ((neighbours < 5) == (np.arange(10) < 5)[:, None]).all()
    assert np.all(np.diff(sims, axis=1) <= 0)
    vectors, _ = model.apply(params, {}, np.array([2, 7]))
    assert vectors.shape == (2, 16)


def test_nearest_matches_naive_cosine():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(12, 5))
    ids, sims = nearest(table, [3, 8], k=4)
    for row, q in enumerate([3, 8]):
        cos = [table[q] @ table[j] / np.linalg.norm(table[q]) / np.linalg.norm(table[j])
               if j != q else -np.inf for j in range(12)]
        order = sorted(range(12), key=lambda j: -cos[j])[:4]
        assert ids[row].tolist() == order
        np.testing.assert_allclose(sims[row], [cos[j] for j in order], rtol=1e-12)
    with_self, _ = nearest(table, 3, k=1, exclude_self=False)
    assert with_self.tolist() == [[3]]


def test_word2vec_on_device(device):
    ids = _topic_corpus(sentences=20)
    centers, contexts = skipgram_pairs(ids, 2)
    probs = unigram_table(ids, 10)
    neg = sample_negatives(gd.random.key(3), probs, (len(centers), 4), device=device)
    np.testing.assert_array_equal(gd.to_numpy(neg),
                                  sample_negatives(gd.random.key(3), probs, (len(centers), 4),
                                                   device="cpu"))
    params, _ = SkipGram(10, 8).init(gd.random.key(0), centers)
    params["out_embed"]["weight"] = params["in_embed"]["weight"][::-1].copy()
    cpu = sgns_loss(params, centers, contexts, gd.to_numpy(neg))
    dev = sgns_loss(gd.to_device(params, device), gd.to_device(centers, device),
                    gd.to_device(contexts, device), neg)
    np.testing.assert_allclose(float(dev), float(cpu), rtol=1e-5)
    ids_d, _ = nearest(gd.to_device(params, device), [1, 6], k=3)
    np.testing.assert_array_equal(gd.to_numpy(ids_d), nearest(params, [1, 6], k=3)[0])
