"""Attention (scaled dot-product, masks, additive, multi-head), positional encodings and
embedding lookup against float64 loops; the fused primitives of ``_attention_fused.py``
against loops, their gradients (``GRAD_CASES``, grad of grad included) and on the device."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError, ShapeError
from gpudl.functional import _attention_fused as AF
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


def test_sdpa_float_bias_is_added_and_differentiated(device, xp, rng):
    # torch's float attn_mask; a learned bias (relative positions) must get its gradient
    # (it was cut off the tape: always zero)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 2))
    bias = rng.standard_normal((3, 5))  # broadcast over the batch
    got = At.scaled_dot_product_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v),
                                          bias=xp.asarray(bias))
    scores = np.einsum("bid,bjd->bij", q, k) / 2.0 + bias
    w = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(host(got), (w / w.sum(-1, keepdims=True)) @ v, rtol=1e-12)
    check_grad(lambda b, a: At.scaled_dot_product_attention(a, k, v, bias=b), bias, q)
    g32 = gd.grad(lambda b: At.scaled_dot_product_attention(
        q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), bias=b).sum())(bias)
    g64 = gd.grad(lambda b: At.scaled_dot_product_attention(q, k, v, bias=b).sum())(bias)
    assert g32.dtype == np.float64 and np.abs(g64).max() > 0.01  # cast on the tape
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)


def test_sdpa_bias_must_be_a_float_array_of_the_scores_shape():
    q, k, v = np.ones((2, 4)), np.ones((3, 4)), np.ones((3, 2))
    with pytest.raises(DTypeError, match="keep-mask .*goes in mask="):
        At.scaled_dot_product_attention(q, k, v, bias=np.ones((2, 3), bool))  # torch's bool mask
    with pytest.raises(DTypeError, match="must be a float array; got int64"):
        At.scaled_dot_product_attention(q, k, v, bias=np.ones((2, 3), np.int64))
    with pytest.raises(ShapeError, match=r"bias of shape \(2, 4\) does not broadcast"):
        At.scaled_dot_product_attention(q, k, v, bias=np.ones((2, 4)))


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
    # a negative padding_idx counts from the end, as torch's (it matched no index before)
    g_neg = gd.grad(lambda t: embedding(t, idx, padding_idx=-1).sum())(w)
    np.testing.assert_array_equal(g_neg, g_pad)
    for bad in (5, -6, 1.5, True):  # torch: "Padding_idx must be within num_embeddings"
        with pytest.raises(IndexError, match=r"padding_idx must be an int in \[-5, 5\)"):
            embedding(w, idx, padding_idx=bad)
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 5\).*got range \[0, 5\]"):
        embedding(w, np.array([0, 5]))
    with pytest.raises(DTypeError, match="indices must be integers"):
        embedding(w, np.array([0.0]))


# ------------------------------------------------- the fused primitives (_attention_fused.py)
def _keep_with_empty_row():
    """(2, 1, 3, 3) keep mask, True = attend: padding, and a query with no key at all."""
    keep = np.array([[[True, True, False], [True, False, False], [False, False, False]],
                     [[True, True, True], [False, True, True], [True, True, False]]])
    return keep[:, None]


def _grad_of_grad(f, *args):
    """``x -> d/dx <f(x), u>``: differentiating it runs the vjp's traced (gd.ops) branch."""
    u = [np.random.default_rng(9).standard_normal(np.shape(gd.to_numpy(o)))
         for o in gd.tree.tree_leaves(f(*args))]

    def inner(*xs):
        outs = gd.tree.tree_leaves(f(*xs))
        return sum(gd.ops.sum(o * w) for o, w in zip(outs, u, strict=True))

    return lambda *xs: gd.grad(inner, argnums=tuple(range(len(xs))))(*xs)


def _linear_case(relu=False):
    r = np.random.default_rng(0)
    return (lambda x, w, b: AF.linear_rows(x, w, b, relu=relu),
            (r.standard_normal((2, 3, 8))[..., ::2], r.standard_normal((5, 4)), r.standard_normal(5)))


def _attention_weights_case():
    r = np.random.default_rng(1)
    k = r.standard_normal((2, 1, 3, 8))[..., ::2]  # non-contiguous, broadcast over heads
    return (lambda q, k: AF.attention_weights(q, k, _keep_with_empty_row(), scale=0.7),
            (r.standard_normal((2, 2, 3, 4)), k))


def _packed_case(weights_used):
    qkv = np.random.default_rng(2).standard_normal((2, 3, 24))[..., ::2]  # (N, L, 3E), E = 4

    def f(t):
        out, w = AF.packed_self_attention(t, _keep_with_empty_row(), 2, scale=0.8,
                                          weights_used=weights_used)
        return (out, w) if weights_used else out
    return f, (qkv,)


def _split_case():
    return (lambda t: AF.split_qkv_heads(t, 2),
            (np.random.default_rng(3).standard_normal((2, 3, 24))[..., ::2],))


def _second_order(case):
    f, args = case()
    return _grad_of_grad(f, *args), args


GRAD_CASES = {  # float64, run by tests/test_registry.py; the last of each: grad of grad
    "linear_rows": [_linear_case, lambda: _linear_case(relu=True),
                    lambda: _second_order(lambda: _linear_case(relu=True))],
    "attention_weights": [_attention_weights_case, lambda: _second_order(_attention_weights_case)],
    "packed_self_attention": [lambda: _packed_case(False), lambda: _packed_case(True),
                              lambda: _second_order(lambda: _packed_case(True))],
    "split_qkv_heads": [_split_case, lambda: _second_order(_split_case)],
}


def _packed_reference(qkv, keep, heads, scale):
    """Per head and query, a loop over the kept keys: (out (N, L, E), weights (N, h, L, L))."""
    n, length, e3 = qkv.shape
    e, dh = e3 // 3, e3 // 3 // heads
    keep = np.broadcast_to(keep, (n, heads, length, length))
    out, weights = np.zeros((n, length, e)), np.zeros((n, heads, length, length))
    for b in range(n):
        for hd in range(heads):
            q, k, v = (qkv[b, :, part * e + hd * dh: part * e + (hd + 1) * dh] for part in range(3))
            for i in range(length):
                js = [j for j in range(length) if keep[b, hd, i, j]]
                if not js:
                    continue
                s = [scale * float(q[i] @ k[j]) for j in js]
                ex = [math.exp(t - max(s)) for t in s]
                for w, j in zip(ex, js, strict=True):
                    weights[b, hd, i, j] = w / sum(ex)
                    out[b, i, hd * dh:(hd + 1) * dh] += w / sum(ex) * v[j]
    return out, weights


def test_fused_primitives_match_loops():
    rng = np.random.default_rng(4)
    qkv, keep = rng.standard_normal((2, 3, 12)), _keep_with_empty_row()
    out, w = AF.packed_self_attention(qkv, keep, 2, scale=0.6, weights_used=True)
    ref_out, ref_w = _packed_reference(qkv, keep, 2, 0.6)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-15)
    everywhere = np.ones((2, 1, 1, 3), dtype=bool)  # nothing masked: the body skips the mask
    np.testing.assert_allclose(AF.packed_self_attention(qkv, everywhere, 2, scale=0.6)[0],
                               _packed_reference(qkv, everywhere, 2, 0.6)[0], rtol=1e-12)
    q, k, v = AF.split_qkv_heads(qkv, 2)
    np.testing.assert_allclose(AF.attention_weights(q, k, keep, scale=0.6), ref_w, rtol=1e-12,
                               atol=1e-15)
    assert not AF.attention_weights(q, k, keep, scale=0.6)[0, :, 2].any()  # nothing to attend
    np.testing.assert_array_equal(v[1, 1, 2], qkv[1, 2, 10:12])  # (N, h, L, D): head 1 of v
    x, wt, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    ref = np.array([[[sum(x[i, j, c] * wt[o, c] for c in range(4)) + b[o] for o in range(5)]
                     for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(AF.linear_rows(x, wt, b), ref, rtol=1e-12)
    np.testing.assert_allclose(AF.linear_rows(x, wt), ref - b, rtol=1e-12)  # no bias: ops
    np.testing.assert_allclose(AF.linear_rows(x, wt, b, relu=True), np.maximum(ref, 0), rtol=1e-12)
    # relu'(0) = 0 (torch's): a row whose pre-activation is exactly 0 passes no gradient
    zero = np.zeros((1, 4))
    dx, dw, db = gd.grad(lambda x, w, b: AF.linear_rows(x, w, b, relu=True).sum(),
                         argnums=(0, 1, 2))(zero, wt, np.zeros(5))
    assert not dx.any() and not dw.any() and not db.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_primitives_on_device_match_cpu(device, xp, dtype):
    rng = np.random.default_rng(5)
    qkv = rng.standard_normal((2, 3, 12)).astype(dtype)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 4), (5, 4), (5,)))
    keep = _keep_with_empty_row()

    def run(t, x, w, b, keep):
        out, wts = AF.packed_self_attention(t, keep, 2, scale=0.6, weights_used=True)
        q, k, _ = AF.split_qkv_heads(t, 2)
        return (gd.ops.sum(out * out) + gd.ops.sum(wts * wts)
                + gd.ops.sum(AF.attention_weights(q, k, keep, scale=0.6) ** 3)
                + gd.ops.sum(AF.linear_rows(x, w, b) ** 2)
                + gd.ops.sum(AF.linear_rows(x, w, b, relu=True) ** 3))

    grad = gd.value_and_grad(run, argnums=(0, 1, 2, 3))
    want = grad(qkv, x, w, b, keep)
    got = grad(*(xp.asarray(a) for a in (qkv, x, w, b, keep)))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for g, c in zip(gd.tree.tree_leaves(got), gd.tree.tree_leaves(want), strict=True):
        np.testing.assert_allclose(host(g), c, rtol=tol, atol=tol)


def test_multi_head_attention_packed_paths_agree(rng):
    """The packed in-projection (torch's in_proj_weight) gives what three matrices give, in
    every path: fused self-attention, its weights, cross-attention, dropout and float masks."""
    n, length, e, heads = 2, 4, 6, 3
    x = rng.standard_normal((n, length, e))
    w_in, b_in = rng.standard_normal((3 * e, e)) * 0.5, rng.standard_normal(3 * e) * 0.1
    w_o, b_o = rng.standard_normal((e, e)) * 0.5, rng.standard_normal(e) * 0.1
    key_mask = np.array([[True, True, True, False], [True, False, False, False]])
    apart = (w_in[:e], w_in[e:2 * e], w_in[2 * e:], w_o, b_in[:e], b_in[e:2 * e], b_in[2 * e:], b_o)
    packed = (w_in, None, None, w_o, b_in, None, None, b_o)
    for kw in ({"key_mask": key_mask}, {"causal": True}, {"mask": rng.standard_normal((4, 4))}):
        want, want_w = At.multi_head_attention(x, x, x.copy(), heads, *apart, **kw,
                                               return_weights=True)
        got, got_w = At.multi_head_attention(x, x, x, heads, *packed, **kw, return_weights=True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got_w, want_w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(At.multi_head_attention(x, x, x, heads, *packed, **kw), want,
                                   rtol=1e-12, atol=1e-14)
    drop = {"dropout_rate": 0.5, "dropout_key": gd.random.key(0)}
    np.testing.assert_allclose(At.multi_head_attention(x, x, x, heads, *packed, **drop),
                               At.multi_head_attention(x, x, x, heads, *apart, **drop), rtol=1e-12)
    check_grad(lambda a, w, b: At.multi_head_attention(a, a, a, heads, w, None, None, w_o, b,
                                                       key_mask=key_mask), x, w_in, b_in)


def test_multi_head_attention_packed_weight_errors():
    x, w = np.ones((2, 3, 4)), np.ones((4, 4))
    with pytest.raises(ShapeError, match=r"packed \(3E, E_in\) in-projection as w_q.*got w_q \(4, 4\)"):
        At.multi_head_attention(x, x, x, 2, w, None, None, w)
    with pytest.raises(ShapeError, match="w_k and w_v None; got w_q .* w_k None, w_v"):
        At.multi_head_attention(x, x, x, 2, w, None, w, w)
    with pytest.raises(ShapeError, match=r"b_q must be the packed \(12,\) bias.*got b_q \(4,\)"):
        At.multi_head_attention(x, x, x, 2, np.ones((12, 4)), None, None, w, np.ones(4))
    with pytest.raises(TypeError, match="masks must be boolean .* or float .*, got int64"):
        At.multi_head_attention(x, x, x, 2, np.ones((12, 4)), None, None, w,
                                mask=np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ShapeError, match=r"mask of shape \(2, 2\) does not broadcast"):
        At.multi_head_attention(x, x, x, 2, np.ones((12, 4)), None, None, w,
                                mask=np.ones((2, 2), dtype=bool))


def test_fused_primitives_export_to_onnx(tmp_path):
    """The converters of the two primitives the exported models do not reach (a split
    projection, the weights on their own) against onnxruntime, at two batch sizes."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    causal = np.tril(np.ones((3, 3), dtype=bool))

    class Probe:
        def apply(self, params, state, x, train=False):
            q, k, v = AF.split_qkv_heads(x, 2)  # x (N, 3, 12)
            w = AF.attention_weights(q, k, causal, scale=0.5)
            return gd.ops.matmul(w, v) + AF.packed_self_attention(x, causal, 2)[1][..., :2], state

    x = np.random.default_rng(6).standard_normal((2, 3, 12)).astype(np.float32)
    gd.export_onnx(Probe(), {}, {}, x, tmp_path / "probe.onnx")
    session = ort.InferenceSession(str(tmp_path / "probe.onnx"), providers=["CPUExecutionProvider"])
    for batch in (2, 4):
        xb = np.random.default_rng(batch).standard_normal((batch, 3, 12)).astype(np.float32)
        (got,) = session.run(None, {"input": xb})
        np.testing.assert_allclose(got, Probe().apply({}, {}, xb)[0], rtol=1e-5, atol=1e-6)
