"""Transformer models: attention layers against torch with copied weights, the encoder
classifier's masking and pooling, GPT causality and generation, and overfitting."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import optim
from gpudl.data import char_corpus
from gpudl.models.transformer import GPT, TransformerClassifier
from gpudl.nn import MultiHeadAttention, TransformerDecoderLayer, TransformerEncoderLayer


def _copy_mha(torch_mha, p):
    """gpudl's MHA params carry torch's keys: a strict load_state_dict copies them."""
    import torch

    torch_mha.load_state_dict({k: torch.from_numpy(np.asarray(v))
                               for k, v in gd.state_dict(p).items()}, strict=True)


def _copy_linear_norm(torch_layer, p, names):
    import torch

    with torch.no_grad():
        for ours, theirs in names.items():
            mod = getattr(torch_layer, theirs)
            mod.weight.copy_(torch.from_numpy(np.asarray(p[ours]["weight"])))
            mod.bias.copy_(torch.from_numpy(np.asarray(p[ours]["bias"])))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_multi_head_attention_matches_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    n, lq, lk, e, heads = 2, 4, 5, 8, 2
    rng = np.random.default_rng(0)
    q = rng.normal(size=(n, lq, e)).astype(dtype)
    kv = rng.normal(size=(n, lk, e)).astype(dtype)
    keep = np.ones((n, lk), bool)
    keep[1, 3:] = False  # padding in the second batch row
    mha = MultiHeadAttention(heads)
    p, _ = mha.init(gd.random.key(0), {"query": q, "key": kv})
    tm = torch.nn.MultiheadAttention(e, heads, batch_first=True)
    tm = tm.double() if dtype == np.float64 else tm
    _copy_mha(tm, p)
    ours, _ = mha.apply(p, {}, {"query": q, "key": kv, "value": kv, "key_mask": keep})
    with torch.no_grad():  # torch's key_padding_mask: True = pad, the opposite of ours
        theirs, _ = tm(torch.from_numpy(q), torch.from_numpy(kv), torch.from_numpy(kv),
                       key_padding_mask=torch.from_numpy(~keep))
    np.testing.assert_allclose(ours, theirs.numpy(), atol=tol, rtol=tol)
    causal = MultiHeadAttention(heads, causal=True)
    ours, _ = causal.apply(p, {}, q)
    with torch.no_grad():
        mask = torch.triu(torch.ones(lq, lq, dtype=torch.bool), 1)  # True = not allowed
        tq = torch.from_numpy(q)
        theirs, _ = tm(tq, tq, tq, attn_mask=mask)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=tol, rtol=tol)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(norm_first):
    torch = pytest.importorskip("torch")
    n, t, e, heads, ff = 3, 6, 8, 2, 16
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, t, e))
    keep = np.arange(t)[None] < np.array([6, 4, 1])[:, None]
    layer = TransformerEncoderLayer(heads, ff, norm_first=norm_first)
    p, _ = layer.init(gd.random.key(0), x)
    tl = torch.nn.TransformerEncoderLayer(e, heads, ff, dropout=0.0, batch_first=True,
                                          norm_first=norm_first).double().eval()
    _copy_mha(tl.self_attn, p["self_attn"])
    _copy_linear_norm(tl, p, {k: k for k in ("linear1", "linear2", "norm1", "norm2")})
    ours, _ = layer.apply(p, {}, {"x": x, "key_mask": keep})
    with torch.no_grad():
        theirs = tl(torch.from_numpy(x), src_key_padding_mask=torch.from_numpy(~keep))
    # rows are compared where a query is real: torch's fast path may zero padded queries
    np.testing.assert_allclose(ours[keep], theirs.numpy()[keep], atol=1e-10)


def test_decoder_block_without_memory_matches_torch_causal_encoder():
    # A GPT block is a decoder layer without cross-attention: torch's pre-LN GELU encoder
    # layer under a causal mask computes the same thing (our norm3 is its norm2).
    torch = pytest.importorskip("torch")
    n, t, e, heads, ff = 2, 5, 8, 4, 32
    x = np.random.default_rng(2).normal(size=(n, t, e))
    block = TransformerDecoderLayer(heads, ff, norm_first=True, activation="gelu")
    p, _ = block.init(gd.random.key(1), {"x": x})
    tl = torch.nn.TransformerEncoderLayer(e, heads, ff, dropout=0.0, batch_first=True,
                                          norm_first=True, activation="gelu").double().eval()
    _copy_mha(tl.self_attn, p["self_attn"])
    _copy_linear_norm(tl, p, {"linear1": "linear1", "linear2": "linear2", "norm1": "norm1",
                              "norm3": "norm2"})
    ours, _ = block.apply(p, {}, {"x": x})
    with torch.no_grad():
        mask = torch.nn.Transformer.generate_square_subsequent_mask(t, dtype=torch.float64)
        theirs = tl(torch.from_numpy(x), src_mask=mask, is_causal=True)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-10)


def test_classifier_training_gradients_match_torch():
    """The whole training-step graph (embedding, packed q|k|v projection, fused attention
    with padding, FF, post-LN, mean pooling, head, cross-entropy) against torch's modules
    with the same weights, float64: the loss and every parameter's gradient."""
    torch = pytest.importorskip("torch")
    vocab, d, heads, ff, t = 11, 8, 2, 16, 5
    ids = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10], [2, 0, 0, 0, 0]])
    labels = np.array([0, 2, 1])
    clf = TransformerClassifier(vocab, 3, d_model=d, num_heads=heads, ff_dim=ff, num_layers=2)
    p, _ = clf.init(gd.random.key(3), ids)
    p = gd.tree.tree_map(lambda a: np.asarray(a, np.float64), p)
    loss, grads = gd.value_and_grad(
        lambda p: F.softmax_cross_entropy(clf.apply(p, {}, ids)[0], labels))(p)

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, d, padding_idx=0)
            self.layer1, self.layer2 = (torch.nn.TransformerEncoderLayer(
                d, heads, ff, dropout=0.0, batch_first=True) for _ in range(2))
            self.head = torch.nn.Linear(d, 3)

        def forward(self, x):
            keep = x != 0
            h = self.embed(x) * d ** 0.5 + torch.from_numpy(
                np.asarray(F.sinusoidal_positional_encoding(t, d, dtype=np.float64)))
            for layer in (self.layer1, self.layer2):
                h = layer(h, src_key_padding_mask=~keep)
            m = keep[..., None].to(h.dtype)
            return self.head((h * m).sum(1) / m.sum(1))

    twin = Twin().double().train()
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in gd.state_dict(p).items()},
                         strict=True)
    t_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(ids)), torch.from_numpy(labels))
    t_loss.backward()
    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-12)
    ours = gd.state_dict(grads)
    for name, param in twin.named_parameters():
        np.testing.assert_allclose(np.asarray(ours[name]), param.grad.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- classifier
@pytest.mark.parametrize("pooling", ["mean", "max", "first"])
def test_classifier_padding_does_not_change_logits(pooling):
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0], [4, 4, 4, 4]])
    clf = TransformerClassifier(10, 3, d_model=16, num_heads=2, num_layers=2, pooling=pooling)
    p, _ = clf.init(gd.random.key(0), ids)
    logits, _ = clf.apply(p, {}, ids)
    assert logits.shape == (3, 3)
    longer = np.concatenate([ids, np.zeros((3, 3), np.int64)], axis=1)
    np.testing.assert_allclose(clf.apply(p, {}, longer)[0], logits, atol=1e-5)
    by_lengths, _ = clf.apply(p, {}, {"ids": ids, "lengths": np.array([3, 2, 4])})
    np.testing.assert_allclose(by_lengths, logits, atol=1e-6)
    for row, length in enumerate([3, 2, 4]):  # each sequence alone
        np.testing.assert_allclose(clf.apply(p, {}, ids[row: row + 1, :length])[0][0],
                                   logits[row], atol=1e-5)


def test_classifier_mean_pool_reference():
    ids = np.array([[5, 6, 0], [7, 0, 0]])
    clf = TransformerClassifier(10, 2, d_model=8, num_heads=2, num_layers=1)
    p, _ = clf.init(gd.random.key(1), ids)
    feats = clf.features(p, ids)
    layer = clf.layers[0]
    for row, length in enumerate([2, 1]):  # reference: encode the real tokens only, average
        e = np.asarray(p["embed"]["weight"])[ids[row, :length]] * np.sqrt(8)
        e = e + F.sinusoidal_positional_encoding(length, 8)
        h, _ = layer.apply(p["layer1"], {}, e[None])
        np.testing.assert_allclose(feats[row], h[0].mean(0), atol=1e-5)


def test_classifier_learns_a_token_presence_rule():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 10, (64, 6))
    ids[rng.random(64) < 0.5, rng.integers(0, 6)] = 1  # class 1: token 1 somewhere
    ids[:, 5][rng.random(64) < 0.3] = 0
    labels = (ids == 1).any(axis=1).astype(np.int64)
    clf = TransformerClassifier(10, 2, d_model=16, num_heads=2, ff_dim=32, num_layers=1)
    p, _ = clf.init(gd.random.key(0), ids)
    opt = optim.adam(1e-2)
    st = opt.init(p)
    for _ in range(40):
        g = gd.grad(lambda p: F.softmax_cross_entropy(clf.apply(p, {}, ids)[0], labels))(p)
        u, st = opt.update(g, st, p)
        p = optim.apply_updates(p, u)
    assert (clf.apply(p, {}, ids)[0].argmax(1) == labels).mean() > 0.95


def test_classifier_dropout_needs_train_key_and_is_off_in_eval():
    ids = np.array([[5, 6, 7]])
    clf = TransformerClassifier(10, 2, d_model=8, num_heads=2, dropout=0.5)
    p, _ = clf.init(gd.random.key(0), ids)
    a, _ = clf.apply(p, {}, ids)
    np.testing.assert_array_equal(a, clf.apply(p, {}, ids)[0])
    b, _ = clf.apply(p, {}, ids, train=True, key=gd.random.key(1))
    assert not np.allclose(a, b)


# ----------------------------------------------------------------------------- GPT
def test_gpt_is_causal_and_shapes():
    gpt = GPT(11, d_model=16, num_heads=2, num_layers=2, max_len=8)
    ids = np.random.default_rng(0).integers(0, 11, (2, 8))
    p, _ = gpt.init(gd.random.key(0), ids)
    logits, _ = gpt.apply(p, {}, ids)
    assert logits.shape == (2, 8, 11)
    changed = ids.copy()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    other, _ = gpt.apply(p, {}, changed)
    np.testing.assert_allclose(other[:, :5], logits[:, :5], atol=1e-6)  # the past is unchanged
    assert not np.allclose(other[:, 5:], logits[:, 5:])
    with pytest.raises(gd.ShapeError, match="max_len"):
        gpt.apply(p, {}, np.zeros((1, 9), np.int64))
    tied = GPT(11, d_model=16, num_heads=2, max_len=8, tie_weights=True)
    pt, _ = tied.init(gd.random.key(0), ids)
    assert "head" not in pt and tied.apply(pt, {}, ids)[0].shape == (2, 8, 11)


def test_gpt_generate_greedy_matches_full_rollout_and_sampling_is_keyed():
    gpt = GPT(9, d_model=16, num_heads=2, num_layers=1, max_len=6)
    prefix = np.array([[1, 2], [3, 4]])
    p, _ = gpt.init(gd.random.key(3), prefix)
    out = gpt.generate(p, prefix, 7, temperature=0.0)  # runs past max_len: context cropped
    assert out.shape == (2, 9)
    seq = prefix
    for _ in range(7):
        logits, _ = gpt.apply(p, {}, seq[:, -6:])
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    beam1 = gpt.generate(p, prefix, 7, beam_width=1)
    np.testing.assert_array_equal(beam1, out)
    s1 = gpt.generate(p, prefix, 5, temperature=1.0, key=gd.random.key(0))
    np.testing.assert_array_equal(s1, gpt.generate(p, prefix, 5, temperature=1.0,
                                                   key=gd.random.key(0)))


def test_gpt_overfits_a_tiny_corpus():
    text = "the quick brown fox jumps over the lazy dog. " * 4
    x, y, vocab = char_corpus(text, seq_len=32)
    gpt = GPT(len(vocab), d_model=32, num_heads=4, num_layers=2, max_len=32)
    p, _ = gpt.init(gd.random.key(0), x)
    opt = optim.adam(3e-3)
    st = opt.init(p)
    for _ in range(150):
        loss, g = gd.value_and_grad(
            lambda p: F.sequence_cross_entropy(gpt.apply(p, {}, x)[0], y))(p)
        u, st = opt.update(g, st, p)
        p = optim.apply_updates(p, u)
    assert float(loss) < 0.05
    out = gpt.generate(p, x[:, :8], 24, temperature=0.0)  # memorised continuations
    np.testing.assert_array_equal(out, x)


def test_transformer_models_on_device(device):
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    clf = TransformerClassifier(10, 3, d_model=16, num_heads=2)
    p, _ = clf.init(gd.random.key(0), ids)
    cpu, _ = clf.apply(p, {}, ids)
    dev, _ = clf.apply(gd.to_device(p, device), {}, gd.to_device(ids, device))
    np.testing.assert_allclose(gd.to_numpy(dev), cpu, atol=1e-4)
    gpt = GPT(10, d_model=16, num_heads=2, max_len=8)
    p, _ = gpt.init(gd.random.key(0), ids)
    out = gpt.generate(gd.to_device(p, device), gd.to_device(ids[:, :2], device), 4,
                       temperature=0.0)
    np.testing.assert_array_equal(gd.to_numpy(out), gpt.generate(p, ids[:, :2], 4, 0.0))


def test_transformer_recipes_need_at_least_one_layer():
    from gpudl.models.transformer import GPT, TransformerClassifier

    # num_layers=0 built an encoder-less model without a word
    for make in (lambda: TransformerClassifier(20, 3, num_layers=0), lambda: GPT(20, num_layers=-1)):
        with pytest.raises(gd.errors.LayerArgumentError, match="num_layers must be an int >= 1"):
            make()
