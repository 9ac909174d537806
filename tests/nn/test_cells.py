"""nn.LSTMCell / nn.GRUCell / nn.RNNCell: thin layers over F.lstm_cell / gru_cell / rnn_cell."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import nn
from gpudl.testing import check_grad

R = np.random.default_rng(3)
N, I, H = 3, 5, 4


def _init(layer, x):
    return layer.init(gd.random.key(1), x)


@pytest.mark.parametrize("cls, gates", [(nn.LSTMCell, 4), (nn.GRUCell, 3), (nn.RNNCell, 1)])
def test_param_names_shapes_count_and_torch_init(cls, gates):
    x = R.standard_normal((N, I))
    params, state = _init(cls(H), x)
    assert state == {}
    assert {k: v.shape for k, v in params.items()} == {
        "weight_ih": (gates * H, I), "weight_hh": (gates * H, H),
        "bias_ih": (gates * H,), "bias_hh": (gates * H,)}
    # torch.nn.{LSTM,GRU,RNN}Cell: G*H*(I + H) weights + 2*G*H biases.
    assert nn.count_params(params) == gates * H * (I + H) + 2 * gates * H
    bound = 1.0 / math.sqrt(H)  # torch: every tensor uniform(-1/sqrt(H), 1/sqrt(H))
    values = np.concatenate([v.ravel() for v in params.values()])
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound
    assert all(v.dtype == np.float64 for v in params.values())
    p_nobias, _ = _init(cls(H, bias=False), x)
    assert sorted(p_nobias) == ["weight_hh", "weight_ih"]
    assert nn.count_params(p_nobias) == gates * H * (I + H)


def test_lstm_cell_matches_functional_op():
    x, h, c = R.standard_normal((N, I)), R.standard_normal((N, H)), R.standard_normal((N, H))
    layer = nn.LSTMCell(H)
    p, s = _init(layer, x)
    ref_h, ref_c = F.lstm_cell(x, h, c, p["weight_ih"], p["weight_hh"], p["bias_ih"],
                               p["bias_hh"])
    for inputs in ((x, (h, c)), {"x": x, "h": h, "c": c}):
        (h1, c1), s1 = layer.apply(p, s, inputs)
        np.testing.assert_allclose(h1, ref_h, rtol=1e-12)
        np.testing.assert_allclose(c1, ref_c, rtol=1e-12)
        assert s1 == {}
    # x alone: zero initial (h, c), as torch's cell(x)
    zeros = np.zeros((N, H))
    ref0 = F.lstm_cell(x, zeros, zeros, p["weight_ih"], p["weight_hh"], p["bias_ih"],
                       p["bias_hh"])
    (h0, c0), _ = layer.apply(p, s, x)
    np.testing.assert_allclose(h0, ref0[0], rtol=1e-12)
    np.testing.assert_allclose(c0, ref0[1], rtol=1e-12)


def test_gru_and_rnn_cells_match_functional_ops():
    x, h = R.standard_normal((N, I)), R.standard_normal((N, H))
    gru = nn.GRUCell(H)
    p, s = _init(gru, x)
    ref = F.gru_cell(x, h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    np.testing.assert_allclose(gru.apply(p, s, (x, h))[0], ref, rtol=1e-12)
    np.testing.assert_allclose(gru.apply(p, s, {"x": x, "h": h})[0], ref, rtol=1e-12)
    for nonlinearity in ("tanh", "relu"):
        rnn = nn.RNNCell(H, nonlinearity=nonlinearity)
        p, s = _init(rnn, x)
        ref = F.rnn_cell(x, h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"],
                         nonlinearity=nonlinearity)
        np.testing.assert_allclose(rnn.apply(p, s, (x, h))[0], ref, rtol=1e-12)
    # Without a bias, the functional op gets None biases.
    nb = nn.GRUCell(H, bias=False)
    p, s = _init(nb, x)
    ref = F.gru_cell(x, h, p["weight_ih"], p["weight_hh"])
    np.testing.assert_allclose(nb.apply(p, s, (x, h))[0], ref, rtol=1e-12)


def test_cell_against_naive_elman_reference():
    x, h = R.standard_normal((N, I)), R.standard_normal((N, H))
    rnn = nn.RNNCell(H)
    p, s = _init(rnn, x)
    ref = np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])
    np.testing.assert_allclose(rnn.apply(p, s, (x, h))[0], ref, rtol=1e-12)


def test_unrolled_cell_equals_sequence_layer():
    # A cell looped over time with the layer's l0 weights gives nn.LSTM's output.
    seq = R.standard_normal((6, N, I))
    lstm = nn.LSTM(H)
    pl, sl = lstm.init(gd.random.key(2), seq)
    cell_params = {k[: -len("_l0")]: v for k, v in pl.items()}
    cell = nn.LSTMCell(H)
    h = c = np.zeros((N, H))
    outs = []
    for t in range(seq.shape[0]):
        (h, c), _ = cell.apply(cell_params, {}, (seq[t], (h, c)))
        outs.append(h)
    np.testing.assert_allclose(np.stack(outs), lstm.apply(pl, sl, seq)[0], rtol=1e-10)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_gradients(cls):
    x, h, c = R.standard_normal((N, I)), R.standard_normal((N, H)), R.standard_normal((N, H))
    layer = cls(H)
    p, s = _init(layer, x)
    if cls is nn.LSTMCell:
        check_grad(lambda q, a, b, d: layer.apply(q, s, (a, (b, d)))[0], p, x, h, c)
    else:
        check_grad(lambda q, a, b: layer.apply(q, s, (a, b))[0], p, x, h)


def test_in_sequential_naming_and_torch_parity():
    torch = pytest.importorskip("torch")
    x, h = R.standard_normal((N, I)), R.standard_normal((N, H))
    cell = nn.GRUCell(H)
    net = nn.Sequential([cell])
    p, s = net.init(gd.random.key(0), x)
    assert list(p) == ["0"]
    tm = torch.nn.GRUCell(I, H).double()
    with torch.no_grad():
        for name, v in p["0"].items():
            getattr(tm, name).copy_(torch.from_numpy(v))
    ref = tm(torch.from_numpy(x), torch.from_numpy(h)).detach().numpy()
    np.testing.assert_allclose(cell.apply(p["0"], {}, (x, h))[0], ref, rtol=1e-10)


def test_cell_errors():
    with pytest.raises(nn.LayerArgumentError, match=r"torch's LSTMCell\(input_size, hidden_size"):
        nn.LSTMCell(5, 4)
    with pytest.raises(nn.LayerArgumentError, match="nonlinearity"):
        nn.GRUCell(4, nonlinearity="relu")
    with pytest.raises(nn.LayerArgumentError, match="'tanh', 'relu'"):
        nn.RNNCell(4, nonlinearity="sigmoid")
    with pytest.raises(nn.LayerArgumentError, match="hidden_size must be an int >= 1"):
        nn.GRUCell(0)
    cell = nn.LSTMCell(H)
    p, s = _init(cell, np.zeros((N, I)))
    with pytest.raises(gd.ShapeError, match=r"expects x of shape \(N, input_size\)"):
        cell.apply(p, s, np.zeros((6, N, I)))
    with pytest.raises(ValueError, match=r"pair \(h, c\)"):
        cell.apply(p, s, (np.zeros((N, I)), np.zeros((N, H))))
    with pytest.raises(ValueError, match="no cell state"):
        nn.GRUCell(H).apply({}, {}, {"x": np.zeros((N, I)), "c": np.zeros((N, H))})


# ----------------------------------------------------------------------------- course forms
@pytest.mark.parametrize("cls, gates, extra", [
    (nn.RNN, 1, {}), (nn.LSTM, 4, {}), (nn.GRU, 3, {"reset_after": False})])
def test_single_bias_gives_keras_counts(cls, gates, extra):
    # Keras: SimpleRNN(32) on 32 features = 2,080; LSTM(32) = 8,320; GRU(32,
    # reset_after=False) = 6,240: G * (32*32 + 32*32 + 32).
    x = np.zeros((3, 2, 32), np.float32)
    layer = cls(32, bias="single", **extra)
    p, _ = layer.init(gd.random.key(0), x)
    assert sorted(p) == ["bias_l0", "weight_hh_l0", "weight_ih_l0"]
    assert nn.count_params(p) == gates * 2080 == gates * (32 * 32 + 32 * 32 + 32)
    assert layer.param_shapes(x) == {k: v.shape for k, v in p.items()}
    bi, _ = cls(4, bias="single", bidirectional=True, num_layers=2).init(gd.random.key(0), x)
    assert sorted(k for k in bi if k.startswith("bias")) == [
        "bias_l0", "bias_l0_reverse", "bias_l1", "bias_l1_reverse"]


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_single_bias_is_torch_with_zero_bias_hh(cls):
    cell = cls in (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
    x = R.standard_normal((N, I) if cell else (3, N, I))
    single = cls(H, bias="single")
    p, s = single.init(gd.random.key(2), x)
    sfx = "" if cell else "_l0"
    torch_p = {k: v for k, v in p.items() if not k.startswith("bias")}
    torch_p[f"bias_ih{sfx}"] = p[f"bias{sfx}"]
    torch_p[f"bias_hh{sfx}"] = np.zeros_like(p[f"bias{sfx}"])
    y, _ = single.apply(p, s, x)
    ref, _ = cls(H).apply(torch_p, s, x)
    for a, b in zip(y if isinstance(y, tuple) else (y,), ref if isinstance(ref, tuple)
                    else (ref,), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    check_grad(lambda params, v: single.apply(params, s, v)[0], p, x)


def naive_gru_reset_before(x, h, w_ih, w_hh, b_ih, b_hh):
    """The course's GRU in float64 with per-gate slices: r, z = σ(W x + b + U h + c),
    n = tanh(W_n x + b_in + U_n (r ⊙ h) + b_hn), h' = (1 - z) ⊙ n + z ⊙ h."""
    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    hd = h.shape[1]
    gate = [slice(k * hd, (k + 1) * hd) for k in range(3)]
    r = sigmoid(x @ w_ih[gate[0]].T + b_ih[gate[0]] + h @ w_hh[gate[0]].T + b_hh[gate[0]])
    z = sigmoid(x @ w_ih[gate[1]].T + b_ih[gate[1]] + h @ w_hh[gate[1]].T + b_hh[gate[1]])
    n = np.tanh(x @ w_ih[gate[2]].T + b_ih[gate[2]] + (r * h) @ w_hh[gate[2]].T
                + b_hh[gate[2]])
    return (1 - z) * n + z * h


def test_reset_before_gru_layers_match_course_equation():
    x = R.standard_normal((4, N, I))
    gru = nn.GRU(H, reset_after=False, bias="single")
    p, s = gru.init(gd.random.key(3), x)
    y, _ = gru.apply(p, s, x)
    h, zero = np.zeros((N, H)), np.zeros(3 * H)
    for t in range(4):
        h = naive_gru_reset_before(x[t], h, p["weight_ih_l0"], p["weight_hh_l0"],
                                   p["bias_l0"], zero)
        np.testing.assert_allclose(y[t], h, rtol=1e-12, atol=1e-14)
    check_grad(lambda params, v: gru.apply(params, s, v)[0], p, x)

    cell = nn.GRUCell(H, reset_after=False)
    pc, sc = cell.init(gd.random.key(4), x[0])
    h0 = R.standard_normal((N, H))
    got, _ = cell.apply(pc, sc, (x[0], h0))
    np.testing.assert_allclose(got, naive_gru_reset_before(
        x[0], h0, pc["weight_ih"], pc["weight_hh"], pc["bias_ih"], pc["bias_hh"]), rtol=1e-12)
    check_grad(lambda params, v: cell.apply(params, sc, (v, h0))[0], pc, x[0])


def test_course_form_argument_errors():
    with pytest.raises(nn.LayerArgumentError, match="'single'"):
        nn.GRU(4, bias="double")
    with pytest.raises(nn.LayerArgumentError, match="reset_after applies to nn.GRU"):
        nn.LSTM(4, reset_after=False)
    with pytest.raises(nn.LayerArgumentError, match="reset_after applies to nn.GRU"):
        nn.RNNCell(4, reset_after=False)
    nn.GRUCell(4, reset_after=False, bias=False)
