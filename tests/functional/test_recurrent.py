"""The recurrent sequence functions (gpudl/functional/recurrent.py): lstm, gru, rnn,
stacked, with variable lengths, reverse, batch_first and bidirectional layers.

The reference runs each sequence on its own with the reference cells of test_rnn.py (no
masking). Gradient cases are ``GRAD_CASES`` (run by tests/test_registry.py); the ``cuda``
tests run on a GPU, or on the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_rnn import (
    H,
    I,
    N,
    as_dict,
    make_params,
    naive_gru_reset_before,
    ref_gru_cell,
    ref_lstm_cell,
    ref_rnn_cell,
)

import gpudl as gd
from gpudl.errors import ShapeError, TreeMismatchError
from gpudl.functional import recurrent as R
from gpudl.testing import check_grad


# ----------------------------------------------------------------------------- reference
def ref_sequence(kind, x, h0, c0, p, lengths, reverse, nonlinearity="tanh"):
    """Each sequence on its own: steps 0..L-1 (or L-1..0), outputs zero past the end."""
    t_len, n, _ = x.shape
    hidden = p[1].shape[1]
    y = np.zeros((t_len, n, hidden))
    h_n, c_n = np.zeros((n, hidden)), np.zeros((n, hidden))
    for a in range(n):
        h, c = h0[a:a + 1], c0[a:a + 1]
        steps = range(lengths[a])
        for t in (reversed(steps) if reverse else steps):
            xt = x[t, a:a + 1]
            if kind == "lstm":
                h, c = ref_lstm_cell(xt, h, c, *p)
            elif kind == "gru":
                h = ref_gru_cell(xt, h, *p)
            else:
                h = ref_rnn_cell(xt, h, *p, nonlinearity)
            y[t, a] = h[0]
        h_n[a], c_n[a] = h[0], c[0]
    return y, h_n, c_n


# ----------------------------------------------------------------------------- sequences
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "rnn_relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
def test_sequence_matches_per_sequence_reference(rng, kind, reverse, lengths):
    t_len = 4
    x = rng.standard_normal((t_len, N, I))
    h0, c0 = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    nonlinearity = "relu" if kind == "rnn_relu" else "tanh"
    kind = kind[:3] if kind == "rnn_relu" else kind
    p = make_params(kind, rng)
    lens = [t_len] * N if lengths is None else lengths
    ry, rh, rc = ref_sequence(kind, x, h0, c0, p, lens, reverse, nonlinearity)
    kw = dict(lengths=lengths, reverse=reverse)
    if kind == "lstm":
        y, (h_n, c_n) = R.lstm(x, h0, c0, as_dict(p), **kw)
        np.testing.assert_allclose(c_n, rc[None], rtol=1e-12, atol=1e-12)
    elif kind == "gru":
        y, h_n = R.gru(x, h0[None], as_dict(p), **kw)  # torch's (1, N, H) also accepted
    else:
        y, h_n = R.rnn(x, h0, p, nonlinearity=nonlinearity, **kw)
    assert y.shape == (t_len, N, H) and h_n.shape == (1, N, H)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, rh[None], rtol=1e-12, atol=1e-12)


def test_sequence_batch_first_float32_and_zero_state(rng):
    x = rng.standard_normal((N, 4, I)).astype(np.float32)  # (N, T, I)
    p = [a.astype(np.float32) for a in make_params("lstm", rng)]
    y, (h_n, c_n) = R.lstm(x, None, None, p, batch_first=True, lengths=np.array([2, 4, 3]))
    assert y.shape == (N, 4, H) and y.dtype == np.float32 and h_n.dtype == np.float32
    z = np.zeros((N, H))
    ry, rh, _ = ref_sequence("lstm", x.transpose(1, 0, 2).astype(np.float64), z, z,
                             [a.astype(np.float64) for a in p], [2, 4, 3], False)
    np.testing.assert_allclose(y, ry.transpose(1, 0, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n[0], rh, rtol=1e-5, atol=1e-6)
    assert np.all(y[0, 2:] == 0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_check_grad_sequences_with_lengths(rng, kind, reverse):
    x = rng.standard_normal((3, N, 4))
    h0, c0 = rng.standard_normal((N, 2)), rng.standard_normal((N, 2))
    p = as_dict(make_params(kind, rng, hidden=2, inp=4))
    lens = np.array([3, 1, 2])
    if kind == "lstm":
        check_grad(lambda x, h0, c0, p: R.lstm(x, h0, c0, p, lengths=lens, reverse=reverse),
                   x, h0, c0, p)
    else:  # batch_first: x.transpose is a non-contiguous view
        check_grad(lambda x, h0, p: R.gru(x, h0, p, lengths=lens, reverse=reverse,
                                          batch_first=True), x.transpose(1, 0, 2), h0, p)


def test_stacked_bidirectional_matches_manual(rng):
    x = rng.standard_normal((4, N, I))
    layers = [make_params("lstm", rng), make_params("lstm", rng),
              make_params("lstm", rng, inp=2 * H), make_params("lstm", rng, inp=2 * H)]
    h0, c0 = rng.standard_normal((4, N, H)), rng.standard_normal((4, N, H))
    lens = [4, 2, 3]
    y, (h_n, c_n) = R.stacked("lstm", x, h0, c0, layers, bidirectional=True, lengths=lens)
    inp, hs, cs = x, [], []
    for layer in range(2):
        outs = []
        for d in range(2):
            k = 2 * layer + d
            yy, hh, cc = ref_sequence("lstm", inp, h0[k], c0[k], layers[k], lens, d == 1)
            outs.append(yy)
            hs.append(hh)
            cs.append(cc)
        inp = np.concatenate(outs, axis=2)
    np.testing.assert_allclose(y, inp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, np.stack(hs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n, np.stack(cs), rtol=1e-12, atol=1e-12)
    check_grad(lambda x, l0, l1: R.stacked("gru", x, None, None, [l0, l1], batch_first=True),
               rng.standard_normal((2, 3, 4)), make_params("gru", rng, 2, 4),
               make_params("gru", rng, 2, 2))


# ----------------------------------------------------------------------------- the primitive
def test_first_order_is_one_bptt_and_second_order_is_exact(rng, monkeypatch):
    """A first-order gradient runs the whole-sequence vjp (no per-step tape); a traced vjp
    (grad of grad) differentiates the per-step composite of gpudl ops instead."""
    calls = []
    composite = R._composite
    monkeypatch.setattr(R, "_composite", lambda *a: calls.append(a[0]) or composite(*a))
    x = rng.standard_normal((3, 2, 4))
    p = as_dict(make_params("lstm", rng, hidden=2, inp=4))
    lens = np.array([3, 2])

    def loss(x, p):
        y, (h_n, c_n) = R.lstm(x, None, None, p, lengths=lens)
        return (y ** 2).sum() + (h_n * c_n).sum()

    out, f_vjp = gd.vjp(loss, x, p)
    assert calls == []
    np.testing.assert_allclose(out, loss(x, p), rtol=1e-14)  # saving or not: same values
    first, again = f_vjp(np.ones(())), f_vjp(np.ones(()))  # the saved buffers stay intact
    for a, b in zip(gd.tree.tree_flatten(first)[0], gd.tree.tree_flatten(again)[0]):
        np.testing.assert_array_equal(a, b)
    check_grad(lambda x, w: gd.grad(lambda v: loss(v, {**p, "weight_hh": w}))(x),
               x, p["weight_hh"])
    assert calls and set(calls) == {"lstm"}
    q = as_dict(make_params("gru", rng, hidden=2, inp=4))
    check_grad(lambda x, w: gd.grad(lambda v: (R.gru(v, None, {**q, "weight_hh": w},
                                                     reverse=True)[0] ** 2).sum())(x),
               x, q["weight_hh"])


def test_float32_layer_matches_torch():
    """The training benchmark's case (float32 LSTM, torch's nn.LSTM on the same weights):
    outputs and every gradient, reverse and lengths as pack_padded_sequence."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    rng = np.random.default_rng(5)
    t_len, n, i, h = 4, 3, 5, 6
    x = rng.standard_normal((t_len, n, i)).astype(np.float32)
    lengths = [4, 2, 3]
    module = torch.nn.LSTM(i, h, bidirectional=True)
    names = [k for k in module.state_dict()]
    w = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    g = rng.standard_normal((t_len, n, 2 * h)).astype(np.float32)

    def ours(x, w):
        sets = [{k[:-len(sfx)]: w[k] for k in names if k.endswith(sfx)}
                for sfx in ("_l0", "_l0_reverse")]
        return R.stacked("lstm", x, None, None, sets, bidirectional=True, lengths=lengths)[0]

    y, f_vjp = gd.vjp(ours, x, w)
    dx, dw = f_vjp(g)
    tx = torch.tensor(x, requires_grad=True)
    packed = pack_padded_sequence(tx, torch.tensor(lengths), enforce_sorted=False)
    ty, _ = pad_packed_sequence(module(packed)[0], total_length=t_len)
    grads = torch.autograd.grad(ty, [tx, *module.parameters()], torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, grads[0].numpy(), rtol=1e-4, atol=1e-5)
    for k, tg in zip(names, grads[1:], strict=True):
        assert dw[k].dtype == np.float32
        np.testing.assert_allclose(dw[k], tg.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


# ----------------------------------------------------------------------------- gradient cases
# Collected by tests/test_registry.py: float64.
def _unstack_case():
    rng = np.random.default_rng(13)
    # Only some slices reach the output: the others get zero cotangents.
    return (lambda x: R.unstack(x)[0] * 2.0 + R.unstack(x)[2]), (rng.standard_normal((4, 3, 2)),)


def _scan_case(kind, seed, lengths=None, reverse=False, batch_first=False, states=True):
    """One layer through the ``rnn_scan`` primitive: every input's gradient (x, h0, c0,
    both weights and biases), float64, pre-activations of order 1 (no saturation)."""
    def make():
        rng = np.random.default_rng(seed)
        t, n, i, h = 3, 2, 3, 2
        base = "lstm" if kind == "lstm" else kind[:3]  # lstm, gru or rnn weights
        p = as_dict(make_params(base, rng, hidden=h, inp=i))
        x = rng.standard_normal((n, t, i) if batch_first else (t, n, i))
        h0, c0 = rng.standard_normal((n, h)) * 0.5, rng.standard_normal((n, h)) * 0.5
        kw = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
        if kind == "lstm":
            return (lambda x, h0, c0, p: R.lstm(x, h0, c0, p, **kw)), (x, h0, c0, p)
        if kind.startswith("gru"):
            kw["reset_after"] = kind == "gru"
            if not states:
                return (lambda x, p: R.gru(x, None, p, **kw)), (x, p)
            return (lambda x, h0, p: R.gru(x, h0, p, **kw)), (x, h0, p)
        return (lambda x, h0, p: R.rnn(x, h0, p, nonlinearity=kind[4:], **kw)), (x, h0, p)
    return make


GRAD_CASES = {
    "rnn_unstack": [_unstack_case],
    "rnn_scan": [_scan_case("lstm", 14, lengths=np.array([3, 2]), reverse=True),
                 _scan_case("lstm", 15, batch_first=True),  # x: a non-contiguous view
                 _scan_case("gru", 16, lengths=np.array([1, 3])),
                 _scan_case("gru_reset_before", 17, reverse=True, states=False),
                 _scan_case("rnn_tanh", 18, lengths=np.array([2, 3]), reverse=True),
                 _scan_case("rnn_relu", 19)],
}


# ----------------------------------------------------------------------------- errors
def test_clear_errors(rng):
    x = rng.standard_normal((N, I))
    p = make_params("lstm", rng)
    xs = rng.standard_normal((4, N, I))
    with pytest.raises(ShapeError, match=r"lengths must lie in \[0, T\]"):
        R.lstm(xs, None, None, p, lengths=[5, 1, 1])
    with pytest.raises(ShapeError, match="lengths must be 3 integers"):
        R.lstm(xs, None, None, p, lengths=[1.0, 1.0, 1.0])
    with pytest.raises(ShapeError, match="h0 must be"):
        R.lstm(xs, np.zeros((2, N, H)), None, p)
    with pytest.raises(ShapeError, match=r"x must be \(T, N, input_size\)"):
        R.gru(x, None, make_params("gru", rng))
    with pytest.raises(ValueError, match="weight_ih"):
        R.rnn(xs, None, {"w": p[0]})
    with pytest.raises(ValueError, match="nonlinearity"):
        R.rnn(xs, None, make_params("rnn", rng), nonlinearity="sigmoid")


# ----------------------------------------------------------------------------- GPU parity
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sequence_grads_gpu_match_cpu(rng, kind):
    x = rng.standard_normal((5, N, I))
    p = as_dict(make_params(kind, rng))
    lens = np.array([5, 2, 4])

    def loss(x, p):
        out = (R.lstm(x, None, None, p, lengths=lens, reverse=True) if kind == "lstm"
               else R.gru(x, None, p, lengths=lens))
        return (out[0] ** 2).sum() + out[1][0].sum() if kind == "lstm" else (
            (out[0] ** 2).sum() + out[1].sum())

    cpu = gd.value_and_grad(loss, argnums=(0, 1))(x, p)
    gpu = gd.value_and_grad(loss, argnums=(0, 1))(*gd.to_device((x, p), "cuda"))
    for a, b in zip(gd.tree.tree_flatten(cpu)[0], gd.tree.tree_flatten(gpu)[0], strict=True):
        np.testing.assert_allclose(gd.to_numpy(b), a, rtol=1e-10, atol=1e-10)
    check_grad(loss, *gd.to_device((x, p), "cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(np.float32, dict(rtol=1e-4, atol=1e-5)),
                                       (np.float64, dict(rtol=1e-10, atol=1e-12))])
def test_gpu_sequences_match_cpu(rng, dtype, tol):
    """LSTM with lengths and a reversed GRU (H = 33) in both dtypes: value and gradients."""
    t, n, i, h = 4, 3, 5, 33
    x, h0, c0 = (rng.standard_normal(s).astype(dtype) for s in ((t, n, i), (n, h), (n, h)))
    lens = np.array([4, 1, 3])
    cases = [
        (lambda x, h0, c0, p: R.lstm(x, h0, c0, p, lengths=lens),
         (x, h0, c0, [a.astype(dtype) for a in make_params("lstm", rng, h, i)])),
        (lambda x, h0, p: R.gru(x, h0, p, reverse=True),
         (x, h0, [a.astype(dtype) for a in make_params("gru", rng, h, i)])),
    ]
    for f, args in cases:
        def loss(*a, f=f):
            leaves = gd.tree.tree_flatten(f(*a))[0]
            return sum(gd.ops.sum(v * v) for v in leaves)

        argnums = tuple(range(len(args)))
        want = gd.value_and_grad(loss, argnums=argnums)(*args)
        got = gd.value_and_grad(loss, argnums=argnums)(*gd.to_device(args, "cuda"))
        for a, b in zip(gd.tree.tree_flatten(got)[0], gd.tree.tree_flatten(want)[0], strict=True):
            assert a.dtype == dtype
            np.testing.assert_allclose(gd.to_numpy(a), b, **tol)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru_reset_before"])
def test_array_module_cells_gpu_match_cpu(rng, kind):
    """The Elman and reset-before GRU cells run the same array code on CuPy arrays."""
    x, h0 = rng.standard_normal((3, 2, 2)), rng.standard_normal((2, 3))
    p = as_dict(make_params("rnn" if kind.startswith("rnn") else "gru", rng, 3, 2))
    lens = np.array([3, 1])

    def loss(x, h0, p):
        if kind == "gru_reset_before":
            y, h_n = R.gru(x, h0, p, lengths=lens, reverse=True, reset_after=False)
        else:
            y, h_n = R.rnn(x, h0, p, lengths=lens, nonlinearity=kind[4:])
        return (y ** 2).sum() + (h_n * h_n).sum()

    want = gd.value_and_grad(loss, argnums=(0, 1, 2))(x, h0, p)
    got = gd.value_and_grad(loss, argnums=(0, 1, 2))(*gd.to_device((x, h0, p), "cuda"))
    for a, b in zip(gd.tree.tree_flatten(got)[0], gd.tree.tree_flatten(want)[0], strict=True):
        np.testing.assert_allclose(gd.to_numpy(a), b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- course forms
def test_reset_before_gru_sequence_matches_course_loop(rng):
    t_len, n, i, hidden = 4, 3, 2, 5
    x, h0 = rng.standard_normal((t_len, n, i)), rng.standard_normal((n, hidden))
    p = {"weight_ih": rng.standard_normal((3 * hidden, i)),
         "weight_hh": rng.standard_normal((3 * hidden, hidden)),
         "bias_ih": rng.standard_normal(3 * hidden), "bias_hh": rng.standard_normal(3 * hidden)}
    lengths = [4, 1, 3]
    y, h_n = R.gru(x, h0, p, lengths=lengths, reset_after=False)
    ref_y, ref_h = np.zeros((t_len, n, hidden)), h0.copy()
    for t in range(t_len):
        new = naive_gru_reset_before(x[t], ref_h, p["weight_ih"], p["weight_hh"],
                                     p["bias_ih"], p["bias_hh"])
        live = (t < np.array(lengths))[:, None]
        ref_h = np.where(live, new, ref_h)
        ref_y[t] = np.where(live, new, 0.0)
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n[0], ref_h, rtol=1e-12)
    check_grad(lambda v, w: R.gru(v, None, w, reset_after=False, reverse=True)[0], x, p)
    y2, _ = R.stacked("gru", x, None, None, [p], reset_after=False)
    np.testing.assert_allclose(y2, R.gru(x, None, p, reset_after=False)[0])


def test_single_bias_dict_is_b_ih_with_zero_b_hh(rng):
    x = rng.standard_normal((3, 2, 4))
    w = {"weight_ih": rng.standard_normal((8, 4)), "weight_hh": rng.standard_normal((8, 2))}
    b = rng.standard_normal(8)
    y, _ = R.lstm(x, None, None, {**w, "bias": b})
    ref, _ = R.lstm(x, None, None, {**w, "bias_ih": b, "bias_hh": np.zeros(8)})
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    with pytest.raises(TreeMismatchError, match="one 'bias'"):
        R.lstm(x, None, None, {**w, "bias": b, "bias_hh": b})
