"""Generated datasets and text utilities (vocab, char corpus, bucketed batches)."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.data import (
    DatasetError,
    Vocab,
    adding_task,
    blobs,
    bucket_batches,
    char_corpus,
    copy_task,
    moons,
    pad_batch,
    polynomial,
    read_text,
    sine,
    spirals,
    stdlib_text,
    xor,
)
from gpudl.data.text import word_tokenize


def test_xor():
    x, y = xor()
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, x[:, 0].astype(int) ^ x[:, 1].astype(int))


@pytest.mark.parametrize("make, kwargs, n, dim, classes", [
    (blobs, dict(n=120, centers=4, dim=3), 120, 3, 4),
    (moons, dict(n=101), 101, 2, 2),
    (spirals, dict(n_per_class=30, classes=3), 90, 2, 3),
])
def test_classification_sets_shapes_labels_determinism(make, kwargs, n, dim, classes):
    x, y = make(**kwargs, seed=0)
    assert x.shape == (n, dim) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64 and set(y.tolist()) == set(range(classes))
    x2, y2 = make(**kwargs, seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = make(**kwargs, seed=1)
    assert not np.array_equal(x, x3)


def test_blobs_cluster_around_their_centres_and_moons_are_balanced():
    x, y = blobs(600, centers=3, std=0.1, seed=2)
    for k in range(3):
        assert x[y == k].std(axis=0).max() < 0.15
    _, ym = moons(101)
    assert np.bincount(ym).tolist() == [50, 51]
    xm, ym = moons(200, noise=0.0)
    upper = xm[ym == 0]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-5)


def test_polynomial_and_sine():
    x, y = polynomial(n=50, coefs=(1.0, -2.0, 0.5), noise=0.0, seed=3)
    assert x.shape == y.shape == (50, 1)
    np.testing.assert_allclose(y, 1 - 2 * x + 0.5 * x ** 2, rtol=1e-5, atol=1e-5)
    assert x.min() >= -2 and x.max() <= 2
    xs, ys = sine(n=4, length=20, seed=0)
    assert xs.shape == ys.shape == (4, 20, 1)
    np.testing.assert_array_equal(xs[:, 1:], ys[:, :-1])  # next-value targets
    assert np.abs(xs).max() <= 1.0


def test_adding_task_target_is_the_marked_sum():
    x, y = adding_task(n=50, length=12, seed=0)
    assert x.shape == (50, 12, 2) and y.shape == (50, 1) and x.dtype == np.float32
    for i in range(50):
        marks = np.nonzero(x[i, :, 1])[0]
        assert len(marks) == 2 and marks[0] < 6 <= marks[1]  # one mark in each half
        assert y[i, 0] == pytest.approx(float(x[i, marks, 0].astype(np.float64).sum()), rel=1e-6)
    assert np.all((x[..., 0] >= 0) & (x[..., 0] < 1))


def test_copy_task():
    x, y = copy_task(n=20, seq_len=5, delay=7, num_symbols=4, seed=0)
    assert x.shape == y.shape == (20, 17) and x.dtype == np.int64
    np.testing.assert_array_equal(y[:, -5:], x[:, :5])
    assert np.all(y[:, :-5] == 0)
    assert np.all(x[:, 5 + 7 - 1] == 5)  # the "go" marker
    assert np.all((x[:, :5] >= 1) & (x[:, :5] <= 4))
    assert np.all(np.delete(x, list(range(5)) + [11], axis=1) == 0)


def test_vocab_specials_build_encode_decode():
    v = Vocab.build("b a b c b a".split())
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (v.pad, v.unk, v.bos, v.eos) == (0, 1, 2, 3)
    assert v.itos[4:] == ["b", "a", "c"]  # by frequency, ties by first appearance
    ids = v.encode(["a", "zzz", "c"], add_bos=True, add_eos=True)
    assert ids == [2, 5, 1, 6, 3]
    assert v.decode(ids) == ["<bos>", "a", "<unk>", "c", "<eos>"]
    assert len(Vocab.build("b a b c b a".split(), min_freq=2)) == 6
    assert Vocab.build("b a b c b a".split(), max_size=1).itos[4:] == ["b"]
    assert Vocab(["<pad>", "x"]).itos == ["<pad>", "<unk>", "<bos>", "<eos>", "x"]


def test_char_corpus_targets_are_shifted_by_one():
    text = "hello world, hello gpudl! " * 5
    x, y, vocab = char_corpus(text, seq_len=8)
    assert x.shape == y.shape == ((len(text) - 1) // 8, 8) and x.dtype == np.int64
    np.testing.assert_array_equal(x.ravel()[1:], y.ravel()[:-1])
    assert "".join(vocab.decode(x.ravel())) == text[: x.size]
    assert "".join(vocab.decode(y.ravel())) == text[1: x.size + 1]
    with pytest.raises(DatasetError, match="shorter than seq_len"):
        char_corpus("abc", seq_len=8)


def test_pad_batch_and_bucket_batches():
    ids, lengths = pad_batch([[1, 2, 3], [4], []], pad=0)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [4, 0, 0], [0, 0, 0]])
    assert lengths.tolist() == [3, 1, 0]
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(4, 50, rng.integers(1, 30))) for _ in range(103)]
    batches = bucket_batches(seqs, batch_size=8, key=gd.random.key(0))
    seen = np.concatenate([idx for _, _, idx in batches])
    assert sorted(seen.tolist()) == list(range(103))  # every sequence exactly once
    spans = []
    for b_ids, b_len, idx in batches:
        assert len(idx) <= 8
        assert b_ids.shape == (len(idx), max(len(seqs[i]) for i in idx))  # no extra padding
        assert b_len.tolist() == [len(seqs[i]) for i in idx]
        for row, i in zip(b_ids, idx):
            assert row[: len(seqs[i])].tolist() == seqs[i] and np.all(row[len(seqs[i]):] == 0)
        spans.append((b_len.min(), b_len.max()))
    # length buckets: sorted by length, batches' length ranges do not interleave
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    total_pad = sum(b.size - b_len.sum() for b, b_len, _ in batches)
    naive = sum(8 * max(len(s) for s in seqs[i:i + 8]) - sum(len(s) for s in seqs[i:i + 8])
                for i in range(0, 103, 8))
    assert total_pad < naive / 3
    again = bucket_batches(seqs, batch_size=8, key=gd.random.key(0))
    assert [b[2].tolist() for b in again] == [b[2].tolist() for b in batches]
    unshuffled = bucket_batches(seqs, batch_size=8)
    assert [b[2].tolist() for b in unshuffled] != [b[2].tolist() for b in batches]


def test_stdlib_text_read_text_and_tokenizer(tmp_path):
    text = stdlib_text(max_chars=5000)
    assert 1000 < len(text) <= 5000 and "def " in text
    p = tmp_path / "corpus.txt"
    p.write_text("Hello, world!", encoding="utf-8")
    assert read_text(p) == "Hello, world!"
    with pytest.raises(DatasetError, match="no file"):
        read_text(tmp_path / "nope.txt")
    assert word_tokenize('Hello, "world"!') == ["hello", ",", '"', "world", '"', "!"]


def test_vocab_max_size_counts_corpus_tokens_exactly_after_dropping_specials():
    from gpudl.errors import ConfigError

    text = "a a a b b c d d d d <unk> <unk> <unk> <unk> <unk>".split()
    # a literal "<unk>" in the corpus is a special, not a corpus token: it takes no slot
    assert Vocab.build(text, max_size=2).itos == ["<pad>", "<unk>", "<bos>", "<eos>", "d", "a"]
    assert Vocab.build(text).itos[4:] == ["d", "a", "b", "c"]
    for k in (1, 2, 3, 4, np.int64(3)):
        assert len(Vocab.build(text, max_size=k)) == 4 + k
    assert len(Vocab.build(text, max_size=100)) == 8
    # 0 used to mean "no limit" and -1 dropped the last token: both refused now
    for bad in (0, -1, 2.5, 2.0, True, "3"):
        with pytest.raises(ConfigError, match=r"Vocab.build: max_size \(.*\) must be an int >= 1"):
            Vocab.build(text, max_size=bad)


def test_vocab_decode_requires_integer_ids_in_range():
    from gpudl.errors import ArgumentTypeError, DTypeError, IndexRangeError, ShapeError

    v = Vocab.build("b a b c b a".split())  # 7 tokens
    assert v.decode(np.array([4, 5, 6], dtype=np.int32)) == ["b", "a", "c"]
    assert v.decode([np.int64(6), 0]) == ["c", "<pad>"]
    assert v.decode([]) == [] and v.decode(np.zeros(0, np.int64)) == []
    assert v.decode(i for i in (4, 5)) == ["b", "a"]
    for bad in ([-1], [99], [7], np.array([4, -2])):
        with pytest.raises(IndexRangeError, match=r"Vocab.decode: ids must be in \[0, 7\)"):
            v.decode(bad)
    for bad in ([2.7], [4.0], np.array([4.0, 5.0]), [True], ["a"]):
        with pytest.raises(DTypeError, match="Vocab.decode: ids must be integers"):
            v.decode(bad)
    with pytest.raises(ShapeError, match=r"must be 1-D .*got shape \(1, 2\)"):
        v.decode(np.array([[4, 5]]))
    with pytest.raises(ArgumentTypeError, match=r"wrap one id in a list"):
        v.decode(4)


def test_text_size_arguments_are_checked():
    from gpudl.errors import ConfigError

    for bad in (0, -1, 2.5, None):
        with pytest.raises(ConfigError, match=r"data.char_corpus: seq_len .* must be an int >= 1"):
            char_corpus("abc" * 3, seq_len=bad)
    seqs = [[1, 2], [3], [4, 5, 6]]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError,
                           match=r"data.bucket_batches: batch_size .* must be an int >= 1"):
            bucket_batches(seqs, bad)
    assert [b[2].tolist() for b in bucket_batches(seqs, np.int64(2))] == [[1, 0], [2]]
