"""LSTM/GRU/Elman cells and their fused pointwise primitives (NumPy twin and CUDA kernel).

References are written here independently: per-element float64 loops with math.exp for the
pointwise parts and torch's documented cell formulas with per-gate weight slices (the
sequence functions, built on these cells, are tested in test_recurrent.py). Gradient cases
are ``GRAD_CASES`` (run by tests/test_registry.py); the ``cuda`` tests run on a GPU, or on
the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError, ShapeError
from gpudl.functional import _rnn_kernels as K
from gpudl.functional import rnn_cells as C
from gpudl.testing import check_grad


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ----------------------------------------------------------------------------- references
def ref_lstm_pointwise(gates, c):
    n, hidden = c.shape
    h_new, c_new = np.zeros((n, hidden)), np.zeros((n, hidden))
    for a in range(n):
        for j in range(hidden):
            i = sig(gates[a, j])
            f = sig(gates[a, hidden + j])
            g = math.tanh(gates[a, 2 * hidden + j])
            o = sig(gates[a, 3 * hidden + j])
            c_new[a, j] = f * c[a, j] + i * g
            h_new[a, j] = o * math.tanh(c_new[a, j])
    return h_new, c_new


def ref_lstm_pointwise_backward(gates, c, dh, dc):
    n, hidden = c.shape
    dgates, dc_prev = np.zeros((n, 4 * hidden)), np.zeros((n, hidden))
    for a in range(n):
        for j in range(hidden):
            i = sig(gates[a, j])
            f = sig(gates[a, hidden + j])
            g = math.tanh(gates[a, 2 * hidden + j])
            o = sig(gates[a, 3 * hidden + j])
            tc = math.tanh(f * c[a, j] + i * g)
            d_c = dc[a, j] + dh[a, j] * o * (1 - tc ** 2)
            dgates[a, j] = d_c * g * i * (1 - i)
            dgates[a, hidden + j] = d_c * c[a, j] * f * (1 - f)
            dgates[a, 2 * hidden + j] = d_c * i * (1 - g ** 2)
            dgates[a, 3 * hidden + j] = dh[a, j] * tc * o * (1 - o)
            dc_prev[a, j] = d_c * f
    return dgates, dc_prev


def ref_gru_pointwise(gi, gh, h):
    n, hidden = h.shape
    out = np.zeros((n, hidden))
    for a in range(n):
        for j in range(hidden):
            r = sig(gi[a, j] + gh[a, j])
            z = sig(gi[a, hidden + j] + gh[a, hidden + j])
            nn_ = math.tanh(gi[a, 2 * hidden + j] + r * gh[a, 2 * hidden + j])
            out[a, j] = (1 - z) * nn_ + z * h[a, j]
    return out


def ref_gru_pointwise_backward(gi, gh, h, d):
    n, hidden = h.shape
    dgi, dgh, dh = np.zeros((n, 3 * hidden)), np.zeros((n, 3 * hidden)), np.zeros((n, hidden))
    for a in range(n):
        for j in range(hidden):
            r = sig(gi[a, j] + gh[a, j])
            z = sig(gi[a, hidden + j] + gh[a, hidden + j])
            ghn = gh[a, 2 * hidden + j]
            nn_ = math.tanh(gi[a, 2 * hidden + j] + r * ghn)
            dn = d[a, j] * (1 - z) * (1 - nn_ ** 2)
            dz = d[a, j] * (h[a, j] - nn_) * z * (1 - z)
            dr = dn * ghn * r * (1 - r)
            dgi[a, [j, hidden + j, 2 * hidden + j]] = dr, dz, dn
            dgh[a, [j, hidden + j, 2 * hidden + j]] = dr, dz, dn * r
            dh[a, j] = d[a, j] * z
    return dgi, dgh, dh


def _sl(w, k, hidden):
    return w[k * hidden:(k + 1) * hidden]


def ref_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    # torch.nn.LSTMCell docs: one weight slice per gate.
    hidden = h.shape[1]
    pre = [x @ _sl(w_ih, k, hidden).T + _sl(b_ih, k, hidden) + h @ _sl(w_hh, k, hidden).T
           + _sl(b_hh, k, hidden) for k in range(4)]
    i, f, o = (1 / (1 + np.exp(-pre[k])) for k in (0, 1, 3))
    g = np.tanh(pre[2])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def ref_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    hidden = h.shape[1]
    a = [x @ _sl(w_ih, k, hidden).T + _sl(b_ih, k, hidden) for k in range(3)]
    b = [h @ _sl(w_hh, k, hidden).T + _sl(b_hh, k, hidden) for k in range(3)]
    r = 1 / (1 + np.exp(-(a[0] + b[0])))
    z = 1 / (1 + np.exp(-(a[1] + b[1])))
    n = np.tanh(a[2] + r * b[2])
    return (1 - z) * n + z * h


def ref_rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    return np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)


# ----------------------------------------------------------------------------- data
N, H, I = 3, 5, 7
_G = {"lstm": 4, "gru": 3, "rnn": 1}


def make_params(kind, rng, hidden=H, inp=I, scale=0.5):
    g = _G[kind] * hidden
    return (rng.standard_normal((g, inp)) * scale, rng.standard_normal((g, hidden)) * scale,
            rng.standard_normal(g) * 0.3, rng.standard_normal(g) * 0.3)


def as_dict(p):
    return dict(zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), p, strict=True))


# ----------------------------------------------------------------------------- twins
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_lstm_twin_matches_naive(rng, dtype, tol):
    gates, c = rng.standard_normal((N, 4 * H)) * 2, rng.standard_normal((N, H))
    h_new, c_new = K.lstm_pointwise_twin(gates.astype(dtype), c.astype(dtype))
    rh, rc = ref_lstm_pointwise(gates, c)
    assert h_new.dtype == dtype and c_new.dtype == dtype
    np.testing.assert_allclose(h_new, rh, rtol=tol, atol=tol)
    np.testing.assert_allclose(c_new, rc, rtol=tol, atol=tol)
    dh, dc = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    dg, dcp = K.lstm_pointwise_backward_twin(gates, c, rc, dh, dc)
    rdg, rdc = ref_lstm_pointwise_backward(gates, c, dh, dc)
    np.testing.assert_allclose(dg, rdg, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dcp, rdc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_gru_twin_matches_naive(rng, dtype, tol):
    gi, gh = rng.standard_normal((N, 3 * H)) * 2, rng.standard_normal((N, 3 * H)) * 2
    h = rng.standard_normal((N, H))
    out = K.gru_pointwise_twin(gi.astype(dtype), gh.astype(dtype), h.astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref_gru_pointwise(gi, gh, h), rtol=tol, atol=tol)
    d = rng.standard_normal((N, H))
    for got, want in zip(K.gru_pointwise_backward_twin(gi, gh, h, d),
                         ref_gru_pointwise_backward(gi, gh, h, d), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_sigmoid_twin_does_not_overflow():
    gates = np.full((1, 8), -1000.0, dtype=np.float32)
    with np.errstate(all="raise"):
        h, c = K.lstm_pointwise_twin(gates, np.ones((1, 2), np.float32))
    assert np.all(np.isfinite(h)) and np.allclose(c, 0.0)


# ----------------------------------------------------------------------------- cells
def test_lstm_cell_matches_torch_formulas(rng):
    x, h, c = (rng.standard_normal(s) for s in ((N, I), (N, H), (N, H)))
    p = make_params("lstm", rng)
    got = C.lstm_cell(x, h, c, *p)
    for g, w in zip(got, ref_lstm_cell(x, h, c, *p), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    zero = np.zeros(4 * H)
    got = C.lstm_cell(x, h, c, p[0], p[1], None, None)
    np.testing.assert_allclose(got[0], ref_lstm_cell(x, h, c, p[0], p[1], zero, zero)[0])


def test_gru_and_rnn_cells_match_torch_formulas(rng):
    x, h = rng.standard_normal((N, I)), rng.standard_normal((N, H))
    p = make_params("gru", rng)
    np.testing.assert_allclose(C.gru_cell(x, h, *p), ref_gru_cell(x, h, *p), rtol=1e-12)
    p = make_params("rnn", rng)
    for nl in ("tanh", "relu"):
        np.testing.assert_allclose(C.rnn_cell(x, h, *p, nonlinearity=nl),
                                   ref_rnn_cell(x, h, *p, nl), rtol=1e-12)


def test_cells_keep_float32(rng):
    x, h = rng.standard_normal((N, I)).astype(np.float32), np.zeros((N, H), np.float32)
    p = [a.astype(np.float32) for a in make_params("lstm", rng)]
    assert all(o.dtype == np.float32 for o in C.lstm_cell(x, h, h, *p))
    p = [a.astype(np.float32) for a in make_params("gru", rng)]
    assert C.gru_cell(x, h, *p).dtype == np.float32


# ----------------------------------------------------------------------------- gradients
def test_check_grad_cells(rng):
    x, h, c = (rng.standard_normal(s) for s in ((N, I), (N, H), (N, H)))
    check_grad(C.lstm_cell, x, h, c, *make_params("lstm", rng))
    check_grad(C.gru_cell, x, h, *make_params("gru", rng))
    check_grad(lambda *a: C.rnn_cell(*a, nonlinearity="tanh"), x, h, *make_params("rnn", rng))


def test_first_order_uses_backward_body_and_second_order_is_exact(rng, monkeypatch):
    calls = {"lstm": 0, "gru": 0}
    for kind, name in (("lstm", "_lstm_backward_raw"), ("gru", "_gru_backward_raw")):
        orig = getattr(C, name)

        def counted(*a, _orig=orig, _kind=kind):
            calls[_kind] += 1
            return _orig(*a)

        monkeypatch.setattr(C, name, counted)
    x, h, c = (rng.standard_normal(s) for s in ((N, I), (N, H), (N, H)))
    pl, pg = make_params("lstm", rng), make_params("gru", rng)
    gd.grad(lambda x: C.lstm_cell(x, h, c, *pl)[0].sum())(x)
    gd.grad(lambda x: C.gru_cell(x, h, *pg).sum())(x)
    assert calls == {"lstm": 1, "gru": 1}

    # grad-of-grad: the inner backward must be differentiable (composite path).
    def lstm_inner(x, h, c, w_hh):
        return gd.grad(lambda x, h, c: (C.lstm_cell(x, h, c, pl[0], w_hh)[0] ** 2).sum()
                       + C.lstm_cell(x, h, c, pl[0], w_hh)[1].sum(), argnums=(0, 1, 2))(x, h, c)

    check_grad(lstm_inner, x, h, c, pl[1])
    check_grad(lambda x, h: gd.grad(lambda h: (C.gru_cell(x, h, *pg) ** 2).sum())(h), x, h)

    # Against a cell built only from generic ops.
    def composite_lstm(x, h, c, w_ih, w_hh, b_ih, b_hh):
        gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = (gates[:, k * H:(k + 1) * H] for k in range(4))
        c_new = gd.ops.sigmoid(f) * c + gd.ops.sigmoid(i) * gd.ops.tanh(g)
        return gd.ops.sigmoid(o) * gd.ops.tanh(c_new), c_new

    def hvp(cell):
        return gd.grad(lambda x: (gd.grad(lambda x: (cell(x, h, c, *pl)[0] ** 3).sum())(x)
                                  ** 2).sum())(x)

    np.testing.assert_allclose(hvp(C.lstm_cell), hvp(composite_lstm), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- gradient cases
# Collected by tests/test_registry.py: float64 and moderate (|pre-activation| ~ 1) so no
# gate saturates; the gates/gi arrays are sliced views (non-contiguous), which the ops accept.
def _lstm_pointwise_case():
    rng = np.random.default_rng(11)
    gates = rng.standard_normal((3, 24))[:, 2:22]  # (N=3, 4H=20), non-contiguous view
    c = rng.standard_normal((3, 5))
    return C.lstm_pointwise, (gates, c)


def _lstm_pointwise_one_output_case():
    # Only c_new used: the cotangent of h_new is filled with zeros.
    rng = np.random.default_rng(15)
    return ((lambda g, c: C.lstm_pointwise(g, c)[1]),
            (rng.standard_normal((2, 8)), rng.standard_normal((2, 2))), {"mode": "full"})


def _gru_pointwise_case():
    rng = np.random.default_rng(12)
    gi = rng.standard_normal((3, 17))[:, 1:16]  # (N=3, 3H=15), non-contiguous view
    gh = rng.standard_normal((3, 15))
    h = rng.standard_normal((3, 5))
    return C.gru_pointwise, (gi, gh, h)


GRAD_CASES = {
    "lstm_pointwise": [_lstm_pointwise_case, _lstm_pointwise_one_output_case],
    "gru_pointwise": [_gru_pointwise_case],
}


# ----------------------------------------------------------------------------- errors
def test_clear_errors(rng):
    x, h = rng.standard_normal((N, I)), rng.standard_normal((N, H))
    p = make_params("lstm", rng)
    with pytest.raises(ShapeError, match=r"w_ih must be .*\(20, 7\).*got shape \(20, 6\)"):
        C.lstm_cell(x, h, h, p[0][:, :6], *p[1:])
    with pytest.raises(ShapeError, match="h must be"):
        C.lstm_cell(x, h[:2], h[:2], *p)
    pg = make_params("gru", rng)
    with pytest.raises(ShapeError, match=r"w_hh must be .*\(15, 5\).*got shape \(15, 4\)"):
        C.gru_cell(x, h, pg[0], pg[1][:, :4], *pg[2:])
    with pytest.raises(ShapeError, match=r"gates must be \(N, 4H\)"):
        C.lstm_pointwise(np.zeros((N, 3 * H)), h)
    with pytest.raises(ShapeError, match=r"gh must be \(N, 3H\)"):
        C.gru_pointwise(np.zeros((N, 3 * H)), np.zeros((N, 4 * H)), h)
    with pytest.raises(DTypeError, match="float16"):
        C.lstm_cell(x.astype(np.float16), h, h, *p)
    with pytest.raises(DTypeError, match="w_hh has dtype float32 but x has float64"):
        C.gru_cell(x, h, *[a if k != 1 else a.astype(np.float32)
                           for k, a in enumerate(make_params("gru", rng))])


# ----------------------------------------------------------------------------- GPU parity
@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol,atol", [(np.float32, 1e-4, 1e-5), (np.float64, 1e-10, 1e-12)])
def test_kernels_match_twins(rng, dtype, rtol, atol):
    # atol covers cancellation in (1 - n^2), (h - n): tanhf differs from NumPy by ~1 ulp.
    cp = gd.backend.xp_for("cuda")
    for n, hidden in ((3, 5), (1, 1), (64, 300)):
        wide = rng.standard_normal((n, 4 * hidden + 3)).astype(dtype)
        gates = wide[:, 1:-2]
        c, dh, dc = (rng.standard_normal((n, hidden)).astype(dtype) for _ in range(3))
        want = K.lstm_pointwise_twin(gates, c)
        # A strided CuPy view: the launcher path must copy it to C order first.
        got = K.lstm_pointwise_cuda(cp.asarray(wide)[:, 1:-2], cp.asarray(c))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(cp.asnumpy(g), w, rtol=rtol, atol=atol)
        c_new = want[1]  # one c_new for both bodies
        want = K.lstm_pointwise_backward_twin(gates, c, c_new, dh, dc)
        got = K.lstm_pointwise_backward_cuda(*(cp.asarray(a) for a in (gates, c, c_new, dh, dc)))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(cp.asnumpy(g), w, rtol=rtol, atol=atol)
        gi, gh = (rng.standard_normal((n, 3 * hidden)).astype(dtype) for _ in range(2))
        h = rng.standard_normal((n, hidden)).astype(dtype)
        np.testing.assert_allclose(
            cp.asnumpy(K.gru_pointwise_cuda(cp.asarray(gi), cp.asarray(gh), cp.asarray(h))),
            K.gru_pointwise_twin(gi, gh, h), rtol=rtol, atol=atol)
        got = K.gru_pointwise_backward_cuda(*(cp.asarray(a) for a in (gi, gh, h, dh)))
        for g, w in zip(got, K.gru_pointwise_backward_twin(gi, gh, h, dh), strict=True):
            np.testing.assert_allclose(cp.asnumpy(g), w, rtol=rtol, atol=atol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(np.float32, dict(rtol=1e-4, atol=1e-5)),
                                       (np.float64, dict(rtol=1e-10, atol=1e-12))])
def test_gpu_cells_match_cpu(rng, dtype, tol):
    """The LSTM and GRU cells, value and every gradient, H = 33 (not a warp multiple)."""
    n, i, h = 2, 3, 33
    x, h0, c0 = (rng.standard_normal(s).astype(dtype) for s in ((n, i), (n, h), (n, h)))
    cases = [(lambda x, h, c, *p: C.lstm_cell(x, h, c, *p)[0] * C.lstm_cell(x, h, c, *p)[1],
              (x, h0, c0, *make_params("lstm", rng, h, i))),
             (C.gru_cell, (x, h0, *make_params("gru", rng, h, i)))]
    for f, args in cases:
        args = tuple(a.astype(dtype) for a in args)
        r = rng.standard_normal((n, h)).astype(dtype)
        argnums = tuple(range(len(args)))

        def loss(*a, f=f):
            return gd.ops.sum(f(*a[:-1]) * a[-1])

        want = gd.value_and_grad(loss, argnums=argnums)(*args, r)
        got = gd.value_and_grad(loss, argnums=argnums)(*gd.to_device((*args, r), "cuda"))
        for a, b in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
            assert a.dtype == dtype
            np.testing.assert_allclose(gd.to_numpy(a), b, **tol)


# ----------------------------------------------------------------------------- reset-before GRU
def naive_gru_reset_before(x, h, w_ih, w_hh, b_ih, b_hh):
    """The course's GRU, element by element: r, z = σ(W x + b + U h + c);
    n = tanh(W_n x + b_in + U_n (r ⊙ h) + b_hn); h' = (1 - z) ⊙ n + z ⊙ h."""
    n_rows, hidden = h.shape
    out = np.zeros_like(h)
    for b in range(n_rows):
        r = [sig(w_ih[j] @ x[b] + b_ih[j] + w_hh[j] @ h[b] + b_hh[j]) for j in range(hidden)]
        z = [sig(w_ih[hidden + j] @ x[b] + b_ih[hidden + j] + w_hh[hidden + j] @ h[b]
                 + b_hh[hidden + j]) for j in range(hidden)]
        rh = np.array(r) * h[b]
        for j in range(hidden):
            k = 2 * hidden + j
            nj = math.tanh(w_ih[k] @ x[b] + b_ih[k] + w_hh[k] @ rh + b_hh[k])
            out[b, j] = (1 - z[j]) * nj + z[j] * h[b, j]
    return out


def test_gru_cell_reset_before_matches_course_equation(rng):
    x, h = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    w_ih, w_hh = rng.standard_normal((12, 5)), rng.standard_normal((12, 4))
    b_ih, b_hh = rng.standard_normal(12), rng.standard_normal(12)
    got = C.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=False)
    np.testing.assert_allclose(got, naive_gru_reset_before(x, h, w_ih, w_hh, b_ih, b_hh),
                               rtol=1e-12, atol=1e-14)
    # It differs from torch's reset-after form whenever r != 1.
    assert not np.allclose(got, C.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh))
    zero = np.zeros(12)
    np.testing.assert_allclose(C.gru_cell(x, h, w_ih, w_hh, reset_after=False),
                               naive_gru_reset_before(x, h, w_ih, w_hh, zero, zero), rtol=1e-12)
    h_nc = rng.standard_normal((4, 3)).T  # a non-contiguous state
    check_grad(lambda *a: C.gru_cell(*a, reset_after=False), x, h_nc, w_ih, w_hh, b_ih, b_hh)
    f32 = [a.astype(np.float32) for a in (x, h, w_ih, w_hh)]
    assert C.gru_cell(*f32, reset_after=False).dtype == np.float32


@pytest.mark.parametrize("shape", [(1024, 256), (70, 33), (1, 5), (31, 1), (0, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_copy_in_blocks_is_the_transpose(shape, dtype):
    # The BPTT's W_hh^T (gpudl/functional/_rnn_scan_cells.py): blocks of rows, a last
    # partial block, a strided source; the result is C-ordered and owns its data.
    from gpudl.functional._rnn_scan_cells import transposed_copy

    a = np.random.default_rng(0).standard_normal((shape[0], 2 * shape[1])).astype(dtype)
    for src in (a[:, :shape[1]], a[:, ::2]):  # row-strided and column-strided views
        out = transposed_copy(np, src)
        assert out.flags.c_contiguous and out.flags.owndata and out.dtype == dtype
        np.testing.assert_array_equal(out, src.T)
