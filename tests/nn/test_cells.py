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
    assert list(p) == ["gru_cell1"]
    tm = torch.nn.GRUCell(I, H).double()
    with torch.no_grad():
        for name, v in p["gru_cell1"].items():
            getattr(tm, name).copy_(torch.from_numpy(v))
    ref = tm(torch.from_numpy(x), torch.from_numpy(h)).detach().numpy()
    np.testing.assert_allclose(cell.apply(p["gru_cell1"], {}, (x, h))[0], ref, rtol=1e-10)


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
