"""PyTorch parity (CPU, float64): LSTM/GRU/RNN cells and sequences against torch.

Cells against torch.lstm_cell/gru_cell; sequences against torch.nn.LSTM/GRU/RNN run with
gpudl's weights (torch.func.functional_call, so torch differentiates them too), with
variable lengths through pack_padded_sequence. Gate orders are torch's (i, f, g, o) and
(r, z, n); parameter names and layouts are torch's, so weights pass over unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import nn

torch = pytest.importorskip("torch")
from parity_helpers import check, rand  # noqa: E402
from torch.func import functional_call  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def cell_weights(kind, i, h, seed, bias=True):
    g = GATES[kind] * h
    ws = [rand(g, i, seed=seed) * 0.5, rand(g, h, seed=seed + 1) * 0.5]
    return ws + ([rand(g, seed=seed + 2) * 0.5, rand(g, seed=seed + 3) * 0.5] if bias else [])


# ----------------------------------------------------------------------------- cells
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell(bias):
    x, h, c = rand(3, 4, seed=1), rand(3, 5, seed=2), rand(3, 5, seed=3)
    ws = cell_weights("lstm", 4, 5, 10, bias)

    def t_cell(x, h, c, *w):
        return torch.lstm_cell(x, (h, c), *w, *([None, None] if not bias else []))

    check(lambda x, h, c, *w: F.lstm_cell(x, h, c, *w), t_cell, x, h, c, *ws)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell(bias):
    x, h = rand(3, 4, seed=4), rand(3, 5, seed=5)
    ws = cell_weights("gru", 4, 5, 20, bias)

    def t_cell(x, h, *w):
        return torch.gru_cell(x, h, *w, *([None, None] if not bias else []))

    check(lambda x, h, *w: F.gru_cell(x, h, *w), t_cell, x, h, *ws)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell(nonlinearity):
    x, h = rand(3, 4, seed=6), rand(3, 5, seed=7)
    ws = cell_weights("rnn", 4, 5, 30)
    t_fn = torch.rnn_tanh_cell if nonlinearity == "tanh" else torch.rnn_relu_cell
    check(lambda x, h, *w: F.rnn_cell(x, h, *w, nonlinearity=nonlinearity),
          lambda x, h, *w: t_fn(x, h, *w), x, h, *ws)


# ----------------------------------------------------------------------------- one layer
NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def torch_seq(kind, module, x, h0, c0, ws, lengths, batch_first):
    """Run ``module`` with weights ``ws``; pack by ``lengths``; pad the output back."""
    t_len = x.shape[1 if batch_first else 0]
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                   enforce_sorted=False)
    state = (h0, c0) if kind == "lstm" else h0
    y, final = functional_call(module, dict(zip(NAMES, ws)), (inp, state))
    if lengths is not None:
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=t_len)
    return (y, *final) if kind == "lstm" else (y, final)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
def test_sequence(kind, batch_first, lengths):
    n, t_len, i, h = 3, 5, 4, 3
    x = rand(*((n, t_len, i) if batch_first else (t_len, n, i)), seed=40)
    h0, c0 = rand(1, n, h, seed=41), rand(1, n, h, seed=42)
    ws = cell_weights(kind, i, h, 50)
    module = getattr(torch.nn, kind.upper())(i, h, batch_first=batch_first).double()

    if kind == "lstm":
        def gd_fn(x, h0, c0, *w):
            y, (hn, cn) = F.lstm(x, h0, c0, tuple(w), batch_first=batch_first, lengths=lengths)
            return y, hn, cn

        check(gd_fn, lambda x, h0, c0, *w: torch_seq(kind, module, x, h0, c0, w, lengths,
                                                     batch_first), x, h0, c0, *ws)
    else:
        check(lambda x, h0, *w: F.gru(x, h0, tuple(w), batch_first=batch_first, lengths=lengths),
              lambda x, h0, *w: torch_seq(kind, module, x, h0, None, w, lengths, batch_first),
              x, h0, *ws)


def test_rnn_sequence_zero_initial_state():
    x = rand(4, 2, 3, seed=43)
    ws = cell_weights("rnn", 3, 5, 60)
    module = torch.nn.RNN(3, 5).double()
    check(lambda x, *w: F.rnn(x, None, tuple(w)),
          lambda x, *w: functional_call(module, dict(zip(NAMES, w)), (x,)), x, *ws)


# ----------------------------------------------------------------------------- nn layers
def torch_names(num_layers, bidirectional):
    dirs = ["", "_reverse"] if bidirectional else [""]
    return [f"{p}_l{layer}{d}" for layer in range(num_layers) for d in dirs
            for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
def test_layer_multilayer_bidirectional_batch_first(kind, lengths):
    n, t_len, i, h, layers = 3, 4, 3, 4, 2
    tm = getattr(torch.nn, kind)(i, h, num_layers=layers, bidirectional=True,
                                 batch_first=True).double()
    layer = getattr(nn, kind)(h, num_layers=layers, bidirectional=True, batch_first=True,
                              return_state=True)
    x = rand(n, t_len, i, seed=70)
    params, state = layer.init(gd.random.key(0), x)
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    assert sorted(params) == sorted(sd) == sorted(torch_names(layers, True))
    names = sorted(sd)
    h0 = rand(2 * layers, n, h, seed=71)
    c0 = rand(2 * layers, n, h, seed=72)
    is_lstm = kind == "LSTM"

    def gd_fn(x, h0, c0, *w):
        inputs = {"x": x, "h0": h0, **({"c0": c0} if is_lstm else {})}
        if lengths is not None:
            inputs["lengths"] = np.array(lengths)
        (y, final), _ = layer.apply(dict(zip(names, w)), state, inputs)
        return (y, *final) if is_lstm else (y, final)

    def t_fn(x, h0, c0, *w):
        inp = x if lengths is None else pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        y, final = functional_call(tm, dict(zip(names, w)), (inp, (h0, c0) if is_lstm else h0))
        if lengths is not None:
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=t_len)
        return (y, *final) if is_lstm else (y, final)

    check(gd_fn, t_fn, x, h0, c0, *(sd[k] for k in names))


def test_layer_last_step_matches_torch_final_states():
    # return_sequences=False: the forward half at the last valid step and the reverse half
    # at step 0 are torch's h_n of the top layer
    tm = torch.nn.GRU(3, 4, num_layers=1, bidirectional=True, batch_first=True).double()
    layer = nn.GRU(4, bidirectional=True, batch_first=True, return_sequences=False)
    x = rand(3, 5, 3, seed=80)
    lengths = [5, 2, 3]
    params = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    y, _ = layer.apply(params, {}, {"x": x, "lengths": np.array(lengths)})
    packed = pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    _, hn = tm(packed)
    ref = torch.cat([hn[0], hn[1]], dim=-1).detach().numpy()
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_functional_stacked_bidirectional(kind):
    n, t_len, i, h, layers = 2, 4, 3, 3, 2
    tm = getattr(torch.nn, kind.upper())(i, h, num_layers=layers, bidirectional=True).double()
    names = torch_names(layers, True)
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    x, h0, c0 = rand(t_len, n, i, seed=90), rand(4, n, h, seed=91), rand(4, n, h, seed=92)
    lengths = [4, 2]

    def gd_fn(x, h0, c0, *w):
        sets = [tuple(w[4 * k: 4 * k + 4]) for k in range(2 * layers)]
        y, final = F.stacked(kind, x, h0, c0 if kind == "lstm" else None, sets,
                             bidirectional=True, lengths=lengths)
        return (y, *final) if kind == "lstm" else (y, final)

    def t_fn(x, h0, c0, *w):
        packed = pack_padded_sequence(x, torch.tensor(lengths))
        y, final = functional_call(tm, dict(zip(names, w)),
                                   (packed, (h0, c0) if kind == "lstm" else h0))
        y, _ = pad_packed_sequence(y, total_length=t_len)
        return (y, *final) if kind == "lstm" else (y, final)

    check(gd_fn, t_fn, x, h0, c0, *(sd[k] for k in names))
