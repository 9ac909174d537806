"""Attention (scaled dot-product, masks, additive, multi-head), positional encodings and
embedding lookup against float64 loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError, ShapeError
from gpudl.functional import attention as At
from gpudl.functional.embedding import embedding
from gpudl.testing import check_grad


def host(a):
    return gd.to_numpy(a)


def sdpa_ref(q, k, v, keep=None, scale=None):
    """Loop over batch and query rows; masked-out keys are skipped, an empty row gives 0."""
    d = q.shape[-1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for b in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            js = [j for j in range(k.shape[-2]) if keep is None or keep[b + (i, j)]]
            if not js:
                continue
            s = [scale * float(q[b + (i,)] @ k[b + (j,)]) for j in js]
            m = max(s)
            e = [math.exp(t - m) for t in s]
            for w, j in zip(e, js, strict=False):
                out[b + (i,)] += w / sum(e) * v[b + (j,)]
    return out


def test_sdpa_plain_and_causal(device, xp, rng):
    q, k, v = (
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal((2, 5, 4)),
        rng.standard_normal((2, 5, 2)),
    )
    got = At.scaled_dot_product_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v))
    np.testing.assert_allclose(host(got), sdpa_ref(q, k, v), rtol=1e-12)
    causal = np.broadcast_to(np.tril(np.ones((3, 5), dtype=bool)), (2, 3, 5))
    got = At.scaled_dot_product_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), causal=True)
    np.testing.assert_allclose(host(got), sdpa_ref(q, k, v, causal), rtol=1e-12)
    got = At.scaled_dot_product_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), scale=1.0)
    np.testing.assert_allclose(host(got), sdpa_ref(q, k, v, scale=1.0), rtol=1e-12)


def test_sdpa_mask_and_fully_masked_row_has_no_nan(device, xp, rng):
    q, k, v = (
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal((2, 4, 4)),
        rng.standard_normal((2, 4, 3)),
    )
    keep = rng.uniform(size=(2, 3, 4)) > 0.4
    keep[0, 1] = False  # a query that may attend to nothing
    out, w = At.scaled_dot_product_attention(
        xp.asarray(q), xp.asarray(k), xp.asarray(v), mask=xp.asarray(keep), return_weights=True
    )
    np.testing.assert_allclose(host(out), sdpa_ref(q, k, v, keep), rtol=1e-12, atol=1e-15)
    assert not host(out)[0, 1].any() and not host(w)[0, 1].any()
    for dtype in (np.float32, np.float64):
        grads = gd.grad(
            lambda a, b, c: At.scaled_dot_product_attention(a, b, c, mask=keep).sum(),
            argnums=(0, 1, 2),
        )(q.astype(dtype), k.astype(dtype), v.astype(dtype))
        assert all(np.isfinite(g).all() for g in grads)
        assert not grads[0][0, 1].any()
    check_grad(
        lambda a, b, c: At.scaled_dot_product_attention(a, b, c, mask=keep, causal=True), q, k, v
    )


def test_sdpa_errors():
    with pytest.raises(ShapeError, match="feature dim 4"):
        At.scaled_dot_product_attention(np.ones((2, 4)), np.ones((3, 5)), np.ones((3, 2)))
    with pytest.raises(ShapeError, match="same number of keys"):
        At.scaled_dot_product_attention(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)))
    with pytest.raises(ShapeError, match="does not broadcast"):
        At.scaled_dot_product_attention(
            np.ones((2, 4)), np.ones((3, 4)), np.ones((3, 2)), mask=np.ones((2, 2), dtype=bool)
        )
    with pytest.raises(TypeError, match="mask must be boolean"):
        At.scaled_dot_product_attention(
            np.ones((2, 4)), np.ones((3, 4)), np.ones((3, 2)), mask=np.ones((2, 3))
        )


def test_additive_attention(device, xp, rng):
    n, length, dq, dk, h, dv = 2, 4, 3, 5, 6, 2
    q, keys = rng.standard_normal((n, dq)), rng.standard_normal((n, length, dk))
    vals = rng.standard_normal((n, length, dv))
    wq, wk, v = rng.standard_normal((h, dq)), rng.standard_normal((h, dk)), rng.standard_normal(h)
    scores = np.array(
        [
            [
                sum(v[a] * math.tanh(wq[a] @ q[i] + wk[a] @ keys[i, j]) for a in range(h))
                for j in range(length)
            ]
            for i in range(n)
        ]
    )
    got = At.additive_attention_scores(*(xp.asarray(t) for t in (q, keys, wq, wk, v)))
    np.testing.assert_allclose(host(got), scores, rtol=1e-12)
    mask = np.array([[True, True, False, True], [False, True, True, True]])
    ctx, w = At.additive_attention(
        *(xp.asarray(t) for t in (q, keys, vals, wq, wk, v)), mask=xp.asarray(mask)
    )
    e = np.where(mask, np.exp(scores - scores.max(axis=1, keepdims=True)), 0.0)
    ref_w = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(host(w), ref_w, rtol=1e-12)
    np.testing.assert_allclose(host(ctx), np.einsum("nl,nld->nd", ref_w, vals), rtol=1e-12)
    check_grad(
        lambda a, b, c: At.additive_attention(a, keys, vals, b, wk, c, mask=mask)[0], q, wq, v
    )


def test_multi_head_attention_against_per_head_loop(device, xp, rng):
    n, lq, lk, e, heads = 2, 3, 4, 6, 3
    x, mem = rng.standard_normal((n, lq, e)), rng.standard_normal((n, lk, e))
    ws = [rng.standard_normal((e, e)) * 0.5 for _ in range(4)]
    bs = [rng.standard_normal(e) * 0.1 for _ in range(4)]
    key_mask = np.array([[True, True, True, False], [True, True, True, True]])
    q, k, v = x @ ws[0].T + bs[0], mem @ ws[1].T + bs[1], mem @ ws[2].T + bs[2]
    dh = e // heads
    concat = np.zeros((n, lq, e))
    keep = np.broadcast_to(key_mask[:, None, :], (n, lq, lk))
    for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        concat[..., sl] = sdpa_ref(q[..., sl], k[..., sl], v[..., sl], keep)
    ref = concat @ ws[3].T + bs[3]
    got = At.multi_head_attention(
        xp.asarray(x),
        xp.asarray(mem),
        xp.asarray(mem),
        heads,
        *(xp.asarray(w) for w in ws),
        *(xp.asarray(b) for b in bs),
        key_mask=xp.asarray(key_mask),
    )
    np.testing.assert_allclose(host(got), ref, rtol=1e-10)
    check_grad(
        lambda a, w: At.multi_head_attention(a, a, a, heads, w, ws[1], ws[2], ws[3], causal=True),
        x,
        ws[0],
    )
    with pytest.raises(ShapeError, match="not divisible by num_heads=4"):
        At.multi_head_attention(x, x, x, 4, *ws)


def test_sinusoidal_positional_encoding(device, xp):
    pe = At.sinusoidal_positional_encoding(7, 5, device=device)
    assert pe.shape == (7, 5) and pe.dtype == np.float32
    ref = np.zeros((7, 5))
    for p in range(7):
        for i in range(5):
            angle = p / 10000 ** (2 * (i // 2) / 5)
            ref[p, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    np.testing.assert_allclose(host(pe), ref, rtol=1e-6, atol=1e-7)


def test_embedding(device, xp, rng):
    w = rng.standard_normal((5, 3))
    idx = np.array([[0, 4, 4], [2, 1, 0]])
    out = embedding(xp.asarray(w), xp.asarray(idx))
    ref = np.array([[w[i] for i in row] for row in idx])
    np.testing.assert_allclose(host(out), ref)
    g = gd.grad(lambda t: (embedding(t, idx) * ref).sum())(w)
    expect = np.zeros_like(w)
    for row_i, row in enumerate(idx):
        for j, i in enumerate(row):
            expect[i] += ref[row_i, j]
    np.testing.assert_allclose(g, expect)
    g_pad = gd.grad(lambda t: embedding(t, idx, padding_idx=4).sum())(w)
    assert not g_pad[4].any() and g_pad[0].tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 5\).*got range \[0, 5\]"):
        embedding(w, np.array([0, 5]))
    with pytest.raises(DTypeError, match="indices must be integers"):
        embedding(w, np.array([0.0]))
