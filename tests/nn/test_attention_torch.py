"""Attention as torch has it: strict state-dict round trips with torch's
MultiheadAttention / TransformerEncoderLayer / TransformerDecoderLayer (batch_first, eval),
torch's masks, returned weights, ``bias=False`` and the unknown-input-key error."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.errors import UnknownInputKeyError
from gpudl.nn.state_dict import load_state_dict

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")

R = np.random.default_rng(0)
E, HEADS = 8, 2


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def randomize(module, seed=0):
    """torch zeroes MHA biases and sets norms to 1/0 at init: make every parameter count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def to_gpudl(module, layer, x_example):
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    loaded = load_state_dict(layer, sd, strict=True, x_example=x_example)
    back = {k: torch.from_numpy(np.asarray(gd.to_numpy(v)))
            for k, v in gd.state_dict(loaded.params).items()}
    module.load_state_dict(back, strict=True)  # and back into torch, strictly
    assert list(back) == list(sd)
    return loaded.params


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_mha_packed_round_trip_and_masks(bias):
    tm = randomize(torch.nn.MultiheadAttention(E, HEADS, batch_first=True, bias=bias))
    q, kv = f32(2, 3, E), f32(2, 4, E)
    layer = nn.MultiHeadAttention(HEADS, bias=bias)
    params = to_gpudl(tm, layer, {"query": q, "key": kv, "value": kv})
    assert ("in_proj_bias" in params) == bias and "in_proj_weight" in params
    kpm = np.array([[False, False, True, False], [False, True, True, False]])
    am_bool = np.array([[False, True, False, False], [False, False, True, True],
                        [True, False, False, False]])
    am_float = f32(3, 4)
    for am in (None, am_bool, am_float):
        for pad in (None, kpm):
            x = {"query": q, "key": kv, "value": kv, "attn_mask": am, "key_padding_mask": pad,
                 "need_weights": True}
            (y, w), _ = layer.apply(params, {}, x)
            ty, tw = tm(*(torch.from_numpy(a) for a in (q, kv, kv)),
                        attn_mask=None if am is None else torch.from_numpy(am),
                        key_padding_mask=None if pad is None else torch.from_numpy(pad))
            close(y, ty)
            close(w, tw)


def test_mha_per_head_weights_and_causal():
    tm = randomize(torch.nn.MultiheadAttention(E, HEADS, batch_first=True), 1)
    x = f32(2, 5, E)
    layer = nn.MultiHeadAttention(HEADS)
    params = to_gpudl(tm, layer, x)
    (y, w), _ = layer.apply(params, {}, {"query": x, "is_causal": True, "need_weights": True,
                                         "average_attn_weights": False})
    blocked = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    xt = torch.from_numpy(x)
    ty, tw = tm(xt, xt, xt, attn_mask=blocked, average_attn_weights=False)
    assert w.shape == (2, HEADS, 5, 5)
    close(y, ty)
    close(w, tw)
    y2, _ = layer.apply(params, {}, x)  # need_weights off: just the output
    close(y2, tm(xt, xt, xt, need_weights=False)[0])


def test_mha_kdim_vdim_round_trip():
    tm = randomize(torch.nn.MultiheadAttention(E, HEADS, kdim=6, vdim=5, batch_first=True), 2)
    q, k, v = f32(2, 3, E), f32(2, 4, 6), f32(2, 4, 5)
    layer = nn.MultiHeadAttention(HEADS)
    params = to_gpudl(tm, layer, {"query": q, "key": k, "value": v})
    assert sorted(params) == ["in_proj_bias", "k_proj_weight", "out_proj", "q_proj_weight",
                              "v_proj_weight"]
    y, _ = layer.apply(params, {}, {"query": q, "key": k, "value": v})
    close(y, tm(*(torch.from_numpy(a) for a in (q, k, v)))[0])


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_round_trip_and_masks(norm_first):
    tm = randomize(torch.nn.TransformerEncoderLayer(E, HEADS, 16, dropout=0.1, batch_first=True,
                                                    norm_first=norm_first), 3)
    x = f32(2, 5, E)
    layer = nn.TransformerEncoderLayer(HEADS, 16, dropout=0.1, norm_first=norm_first)
    params = to_gpudl(tm, layer, x)
    kpm = np.array([[False, False, False, True, True], [False] * 5])
    src_mask = np.triu(np.ones((5, 5), bool), 1)
    xt = torch.from_numpy(x)
    y, _ = layer.apply(params, {}, {"src": x, "src_mask": src_mask, "src_key_padding_mask": kpm})
    ty = tm(xt, src_mask=torch.from_numpy(src_mask), src_key_padding_mask=torch.from_numpy(kpm))
    close(y, ty)
    close(layer.apply(params, {}, x)[0], tm(xt))


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_round_trip_and_masks(norm_first):
    tm = randomize(torch.nn.TransformerDecoderLayer(E, HEADS, 12, dropout=0.1, batch_first=True,
                                                    norm_first=norm_first), 4)
    x, memory = f32(2, 4, E), f32(2, 5, E)
    layer = nn.TransformerDecoderLayer(HEADS, 12, dropout=0.1, norm_first=norm_first)
    params = to_gpudl(tm, layer, {"x": x, "memory": memory})
    assert "multihead_attn" in params and "cross_attn" not in params
    tgt_mask = np.triu(np.ones((4, 4), bool), 1)
    tkpm = np.array([[False, False, False, True], [False] * 4])
    mkpm = np.array([[False, False, True, False, True], [False] * 5])
    memory_mask = f32(4, 5)
    y, _ = layer.apply(params, {}, {
        "tgt": x, "memory": memory, "tgt_mask": tgt_mask, "memory_mask": memory_mask,
        "tgt_key_padding_mask": tkpm, "memory_key_padding_mask": mkpm})
    t = torch.from_numpy
    ty = tm(t(x), t(memory), tgt_mask=t(tgt_mask), memory_mask=t(memory_mask),
            tgt_key_padding_mask=t(tkpm), memory_key_padding_mask=t(mkpm))
    close(y, ty)
    # the default (no tgt_mask) is causal self-attention: torch's causal tgt_mask
    close(layer.apply(params, {}, {"x": x, "memory": memory})[0],
          tm(t(x), t(memory), tgt_mask=t(tgt_mask)))
    # a given tgt_mask decides alone, as in torch (here: no causal mask at all)
    close(layer.apply(params, {}, {"x": x, "memory": memory,
                                   "tgt_mask": np.zeros((4, 4), bool)})[0],
          tm(t(x), t(memory)))


@pytest.mark.parametrize("layer, x", [
    (nn.MultiHeadAttention(HEADS), {"query": f32(1, 3, E), "src_key_padding_mask": None}),
    (nn.TransformerEncoderLayer(HEADS, 8), {"x": f32(1, 3, E), "key_padding_mask": None}),
    (nn.TransformerDecoderLayer(HEADS, 8), {"x": f32(1, 3, E), "cross_mask": None}),
])
def test_unknown_input_key_is_refused(layer, x):
    with pytest.raises(UnknownInputKeyError, match=r"unknown input key.*accepted keys are"):
        layer.init(gd.random.key(0), x)
    assert issubclass(UnknownInputKeyError, KeyError) and issubclass(UnknownInputKeyError,
                                                                       ValueError)


def test_both_mask_spellings_refused():
    x = f32(1, 3, E)
    keep = np.ones((1, 3), bool)
    with pytest.raises(gd.errors.ConfigError, match="not both"):
        nn.MultiHeadAttention(HEADS).init(gd.random.key(0), {
            "query": x, "key_mask": keep, "key_padding_mask": ~keep})


def test_mha_gradients_float64():
    rng = np.random.default_rng(1)
    layer = nn.MultiHeadAttention(2)
    q, kv = rng.standard_normal((1, 3, 4)), rng.standard_normal((1, 4, 4))
    params, _ = layer.init(gd.random.key(0), {"query": q, "key": kv})
    params = gd.tree.tree_map(lambda a: np.asarray(a, np.float64), params)
    am = rng.standard_normal((3, 4))
    kpm = np.array([[False, True, False, False]])

    def loss(p, q, kv):
        (y, w), _ = layer.apply(p, {}, {"query": q, "key": kv, "attn_mask": am,
                                        "key_padding_mask": kpm, "need_weights": True})
        return gd.ops.sum(y * y) + gd.ops.sum(w * w)

    gd.testing.check_grad(loss, params, q, kv)


def test_torch_masks_and_weights_on_device(device):
    x, kv = f32(2, 3, E), f32(2, 4, E)
    kpm = np.array([[False, False, True, False], [False, True, True, False]])
    inputs = {"query": x, "key": kv, "value": kv, "attn_mask": f32(3, 4),
              "key_padding_mask": kpm, "need_weights": True}
    layer = nn.MultiHeadAttention(HEADS, bias=False)
    params, _ = layer.init(gd.random.key(0), {"query": x, "key": kv})
    (y, w), _ = layer.apply(params, {}, inputs)
    (yd, wd), _ = layer.apply(gd.to_device(params, device), {}, gd.to_device(inputs, device))
    np.testing.assert_allclose(gd.to_numpy(yd), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gd.to_numpy(wd), w, rtol=1e-4, atol=1e-5)
    dec = nn.TransformerDecoderLayer(HEADS, 8)
    d_in = {"x": x, "memory": kv, "memory_key_padding_mask": kpm,
            "tgt_key_padding_mask": np.array([[False] * 3, [False, False, True]])}
    pd, _ = dec.init(gd.random.key(1), d_in)
    out = dec.apply(gd.to_device(pd, device), {}, gd.to_device(d_in, device))[0]
    np.testing.assert_allclose(gd.to_numpy(out), dec.apply(pd, {}, d_in)[0], rtol=1e-4,
                               atol=1e-5)


def test_decoder_gradients_float64_with_torch_masks():
    rng = np.random.default_rng(2)
    dec = nn.TransformerDecoderLayer(2, 6, norm_first=True)
    x, memory = rng.standard_normal((1, 3, 4)), rng.standard_normal((1, 4, 4))
    inputs = {"x": x, "memory": memory, "memory_mask": rng.standard_normal((3, 4)),
              "tgt_key_padding_mask": np.array([[False, False, True]]),
              "memory_key_padding_mask": np.array([[False, True, False, False]])}
    params, _ = dec.init(gd.random.key(0), inputs)
    params = gd.tree.tree_map(lambda a: np.asarray(a, np.float64), params)

    def loss(p, x, memory):
        y, _ = dec.apply(p, {}, {**inputs, "x": x, "memory": memory})
        return gd.ops.sum(y * y)

    gd.testing.check_grad(loss, params, x, memory)


def test_training_dropout_drops_attention_weights_as_torch_does():
    """torch's MultiheadAttention(dropout=p) drops the attention weights, not the output:
    the training output is exactly the (dropped, rescaled) weights applied to the values."""
    layer = nn.MultiHeadAttention(HEADS, dropout=0.5)
    x = f32(2, 3, E)
    params, _ = layer.init(gd.random.key(0), x)
    opts = {"query": x, "need_weights": True, "average_attn_weights": False}
    (y, w), _ = layer.apply(params, {}, opts, train=True, key=gd.random.key(1))
    (_, w_eval), _ = layer.apply(params, {}, opts)
    w, w_eval = np.asarray(w), np.asarray(w_eval)
    kept = w != 0
    assert 0 < kept.mean() < 1  # some weights dropped
    np.testing.assert_allclose(w[kept], 2.0 * w_eval[kept], rtol=1e-6)  # the rest x 1/(1-p)
    wi = np.asarray(params["in_proj_weight"])
    bi = np.asarray(params["in_proj_bias"])
    v = (x @ wi[2 * E:].T + bi[2 * E:]).reshape(2, 3, HEADS, E // HEADS).transpose(0, 2, 1, 3)
    merged = (w @ v).transpose(0, 2, 1, 3).reshape(2, 3, E)
    want = merged @ np.asarray(params["out_proj"]["weight"]).T + np.asarray(params["out_proj"]["bias"])
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_cls", [nn.TransformerEncoderLayer, nn.TransformerDecoderLayer])
def test_block_dropout_is_torchs_placement_and_off_in_eval(layer_cls):
    """Training with dropout: the output changes with the key and its mean over keys comes
    close to the eval output only loosely (LayerNorm is not linear), while eval and train
    with dropout 0 agree exactly."""
    x = f32(2, 4, E)
    inp = {"x": x, "memory": f32(2, 5, E)} if layer_cls is nn.TransformerDecoderLayer else x
    layer = layer_cls(HEADS, 12, dropout=0.2)
    params, _ = layer.init(gd.random.key(0), inp)
    ys = [np.asarray(layer.apply(params, {}, inp, train=True, key=gd.random.key(s))[0])
          for s in (1, 2)]
    assert not np.allclose(ys[0], ys[1])
    no_drop = layer_cls(HEADS, 12, dropout=0.0)
    np.testing.assert_array_equal(np.asarray(no_drop.apply(params, {}, inp, train=True,
                                                          key=gd.random.key(1))[0]),
                                  np.asarray(layer.apply(params, {}, inp)[0]))


@pytest.mark.parametrize("layer_cls", [nn.MultiHeadAttention, nn.TransformerEncoderLayer,
                                       nn.TransformerDecoderLayer])
def test_training_with_dropout_and_no_key_is_a_named_error(layer_cls):
    # as nn.Dropout: without a key the dropout was left out silently (eval output in train)
    x = f32(2, 4, E)
    inp = {"x": x, "memory": f32(2, 5, E)} if layer_cls is nn.TransformerDecoderLayer else x
    args = (HEADS,) if layer_cls is nn.MultiHeadAttention else (HEADS, 12)
    layer = layer_cls(*args, dropout=0.2)
    params, _ = layer.init(gd.random.key(0), inp)
    with pytest.raises(gd.errors.ConfigError, match=r"train=True with dropout=0.2 needs a random key"):
        layer.apply(params, {}, inp, train=True)
    layer.apply(params, {}, inp, train=True, key=gd.random.key(1))  # with a key: fine
    layer.apply(params, {}, inp)  # eval: no key needed
    no_drop = layer_cls(*args, dropout=0.0)
    no_drop.apply(params, {}, inp, train=True)  # nothing to drop: no key needed


def test_key_padding_mask_must_be_one_row_per_batch_entry():
    # torch's (N, S) rule; a 1-D mask failed with a bare IndexError
    x = f32(2, 4, E)
    layer = nn.MultiHeadAttention(HEADS)
    params, _ = layer.init(gd.random.key(0), x)
    layer.apply(params, {}, {"query": x, "key": x, "value": x,
                             "key_padding_mask": np.zeros((2, 4), bool)})
    for bad in (np.zeros(4, bool), np.zeros((1, 4), bool), np.zeros((2, 3), bool)):
        with pytest.raises(gd.errors.ShapeError, match=r"key_mask \(torch's key_padding_mask\) "
                                                       r"must be \(N, Lk\) = \(2, 4\)"):
            layer.apply(params, {}, {"query": x, "key": x, "value": x, "key_padding_mask": bad})
