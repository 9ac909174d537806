"""model.summary / summary_dict: parameter counts and MACs against hand counts."""

from __future__ import annotations

import numpy as np

import gpudl as gd
from gpudl import nn
from gpudl.models import lenet5


def test_lenet5_parameter_count():
    # conv 6@5x5 on 1 channel, conv 16@5x5 on 6, then 16*5*5 -> 120 -> 84 -> 10
    by_hand = (6 * 1 * 5 * 5 + 6) + (16 * 6 * 5 * 5 + 16) + (400 * 120 + 120) \
        + (120 * 84 + 84) + (84 * 10 + 10)
    assert by_hand == 61_706
    data = lenet5().summary_dict(np.zeros((1, 1, 28, 28), np.float32))
    assert data["total_params"] == by_hand
    assert data["trainable_params"] == by_hand and data["frozen_params"] == 0
    assert data["output_shape"] == (1, 10)
    shapes = [r["output_shape"] for r in data["rows"] if r["type"] in ("Conv2d", "AvgPool2d")]
    assert shapes == [(1, 6, 28, 28), (1, 6, 14, 14), (1, 16, 10, 10), (1, 16, 5, 5)]


def test_vgg_block_parameter_count_and_macs():
    block = nn.Sequential([
        nn.Conv2d(64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
    ])
    conv1, conv2 = 64 * 3 * 3 * 3 + 64, 64 * 64 * 3 * 3 + 64
    assert (conv1, conv2) == (1_792, 36_928)
    data = block.summary_dict(np.zeros((1, 3, 8, 8), np.float32))
    assert data["total_params"] == conv1 + conv2 == 38_720
    assert [r["params"] for r in data["rows"]] == [conv1, 0, conv2, 0, 0]
    assert data["output_shape"] == (1, 64, 4, 4)
    # MACs: each of the 64*8*8 outputs is a dot product over C_in*3*3
    assert data["rows"][0]["macs"] == 64 * 8 * 8 * (3 * 9)
    assert data["rows"][2]["macs"] == 64 * 8 * 8 * (64 * 9)


def test_dense_macs_by_hand():
    net = nn.Sequential([nn.Dense(5), nn.ReLU(), nn.Dense(2, bias=False)])
    data = net.summary_dict(np.zeros((3, 4), np.float32))
    assert [r["macs"] for r in data["rows"]] == [3 * 5 * 4, 0, 3 * 2 * 5]
    assert data["total_macs"] == 60 + 30
    assert data["total_params"] == 4 * 5 + 5 + 5 * 2
    assert [r["name"] for r in data["rows"]] == ["0", "1", "2"]
    assert [r["output_shape"] for r in data["rows"]] == [(3, 5), (3, 5), (3, 2)]


def test_conv_macs_by_hand():
    conv = nn.Conv2d(4, 3, stride=2, padding=1, groups=2)
    data = nn.Sequential([conv]).summary_dict(np.zeros((2, 2, 6, 6), np.float32))
    # output (2, 4, 3, 3); each output sums over C_in/groups * 3 * 3 = 9 products
    assert data["rows"][0]["output_shape"] == (2, 4, 3, 3)
    assert data["rows"][0]["macs"] == 2 * 4 * 3 * 3 * 9
    assert data["total_params"] == 4 * 1 * 3 * 3 + 4


def test_summary_table_text_and_frozen_counts():
    vectors = np.ones((10, 3), np.float32)
    net = nn.Sequential([nn.Embedding.from_pretrained(vectors), nn.Flatten(), nn.Dense(2)])
    x = np.zeros((1, 4), np.int64)
    data = net.summary_dict(x)
    assert data["frozen_params"] == 30
    assert data["trainable_params"] == 12 * 2 + 2
    assert data["total_params"] == 30 + 26
    lines: list[str] = []
    net.summary(x, print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 56" in text and "trainable 26" in text and "frozen 30" in text
    assert "Embedding" in text and "Output shape" in text and "MACs" in text


def test_summary_of_graph_model_without_example_and_state_size():
    x = nn.Input((3,))
    model = nn.Model(x, nn.BatchNorm1d()(nn.Dense(4)(x)))
    data = model.summary_dict()
    assert data["total_params"] == 3 * 4 + 4 + 4 + 4
    # running mean and var (4 each) and num_batches_tracked (a scalar), not parameters
    assert data["state_size"] == 9
    assert data["input_shape"] == (1, 3)


def test_summary_restores_layers():
    dense = nn.Dense(2)
    net = nn.Sequential([dense])
    net.summary_dict(np.zeros((1, 2), np.float32))
    assert "apply" not in vars(dense)  # the recording wrapper is removed again
    assert gd.nn.count_params(net.init(gd.random.key(0), np.zeros((1, 2)))[0]) == 6


# ----------------------------------------------------------- recurrent, attention, transformer
def _rows(model, x):
    data = model.summary_dict(x)
    assert data["total_macs"] == sum(r["macs"] for r in data["rows"])
    assert data["total_params"] == sum(r["params"] for r in data["rows"])
    return data


def test_lstm_macs_by_hand_layers_and_directions():
    t, n, i, h = 7, 3, 5, 4
    lstm = nn.LSTM(h, num_layers=2, bidirectional=True)
    data = _rows(nn.Sequential([lstm]), np.zeros((t, n, i), np.float32))
    # per layer and direction: T * N * 4H * (I + H); layer 2 reads both directions (2H)
    by_hand = 2 * t * n * 4 * h * (i + h) + 2 * t * n * 4 * h * (2 * h + h)
    assert data["rows"][0]["macs"] == by_hand == 14_112
    assert data["rows"][0]["output_shape"] == (t, n, 2 * h)


def test_gru_and_rnn_macs_batch_first_lengths_and_state():
    t, n, i, h = 6, 2, 3, 5
    x = np.zeros((n, t, i), np.float32)
    gru = nn.GRU(h, batch_first=True)
    assert _rows(nn.Sequential([gru]), x)["rows"][0]["macs"] == t * n * 3 * h * (i + h)
    rnn = nn.RNN(h, batch_first=True, return_state=True, return_sequences=False)
    data = _rows(nn.Sequential([rnn]), {"x": x, "lengths": np.array([6, 2])})
    assert data["rows"][0]["macs"] == t * n * 1 * h * (i + h)   # every step is computed
    assert data["rows"][0]["output_shape"] == [(n, h), (1, n, h)]
    lstm = nn.LSTM(h, return_state=True)
    data = _rows(nn.Sequential([lstm]), np.zeros((t, n, i), np.float32))
    assert data["rows"][0]["output_shape"] == [(t, n, h), [(1, n, h), (1, n, h)]]


class _Unrolled(nn.Layer):
    """A hand-written loop over time with a cell, then a head: one row per layer."""

    def __init__(self):
        super().__init__()
        self.cell, self.head = nn.LSTMCell(4), nn.Dense(2)

    def init(self, key, x):
        k1, k2 = gd.random.split(key)
        pc = self.cell.init(k1, x[:, 0])[0]
        return {"cell": pc, "head": self.head.init(k2, np.zeros((x.shape[0], 4), x.dtype))[0]}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        h = c = np.zeros((x.shape[0], 4), x.dtype)
        for t in range(x.shape[1]):
            (h, c), _ = self.cell.apply(params["cell"], {}, (x[:, t], (h, c)))
        return self.head.apply(params["head"], {}, h)[0], state


def test_cells_in_a_loop_are_one_row_with_calls():
    n, t, i, h = 3, 5, 6, 4
    data = _rows(_Unrolled(), np.zeros((n, t, i), np.float32))
    cell, head = data["rows"]
    assert (cell["name"], cell["type"], cell["calls"]) == ("cell", "LSTMCell", t)
    assert cell["macs"] == t * n * 4 * h * (i + h)              # one step: N * 4H * (I + H)
    assert cell["output_shape"] == [(n, h), (n, h)]
    assert cell["params"] == 4 * h * (i + h) + 2 * 4 * h        # counted once, not T times
    assert (head["name"], head["macs"], head["calls"]) == ("head", n * 2 * h, 1)
    lines: list[str] = []
    _Unrolled().summary(np.zeros((n, t, i), np.float32), print_fn=lines.append)
    assert "Calls" in lines[0]
    gru_cell = nn.GRUCell(h)
    single = _rows(nn.Sequential([gru_cell]), np.zeros((n, i), np.float32))
    assert single["rows"][0]["macs"] == n * 3 * h * (i + h)


def test_multi_head_attention_macs_by_hand():
    n, lq, lk, e, ek, ev = 2, 3, 5, 8, 6, 4
    mha = nn.MultiHeadAttention(2)
    q = np.zeros((n, lq, e), np.float32)
    data = _rows(nn.Sequential([mha]), q)
    # q, k, v projections + QK^T + AV + output projection
    assert data["rows"][0]["macs"] == 3 * n * lq * e * e + 2 * n * lq * lq * e + n * lq * e * e
    cross = {"query": q, "key": np.zeros((n, lk, ek), np.float32),
             "value": np.zeros((n, lk, ev), np.float32)}
    data = _rows(nn.Sequential([nn.MultiHeadAttention(2)]), cross)
    by_hand = (n * lq * e * e + n * lk * e * ek + n * lk * e * ev   # projections
               + n * lq * lk * e + n * lq * lk * e                   # QK^T, AV (all heads)
               + n * lq * e * e)                                     # output projection
    assert data["rows"][0]["macs"] == by_hand == 2_048


def test_transformer_layers_expand_into_their_parts():
    n, t, d, ff = 2, 5, 8, 16
    x = np.zeros((n, t, d), np.float32)
    data = _rows(nn.Sequential([nn.TransformerEncoderLayer(2, ff)]), x)
    names = [r["name"] for r in data["rows"]]
    assert names == ["0.self_attn", "0.norm1", "0.linear1", "0.linear2", "0.norm2"]
    attn = 4 * n * t * d * d + 2 * n * t * t * d
    assert [r["macs"] for r in data["rows"]] == [attn, 0, n * t * d * ff, n * t * ff * d, 0]
    assert [r["params"] for r in data["rows"]] == [4 * (d * d + d), 2 * d, ff * d + ff,
                                                   d * ff + d, 2 * d]
    assert data["rows"][2]["output_shape"] == (n, t, ff)

    s = 7
    memory = np.zeros((n, s, d), np.float32)
    dec = nn.TransformerDecoderLayer(2, ff)
    data = _rows(dec, {"x": x, "memory": memory})
    assert [r["name"] for r in data["rows"]] == ["self_attn", "norm1", "multihead_attn", "norm2",
                                                 "linear1", "linear2", "norm3"]
    cross = 2 * n * t * d * d + 2 * n * s * d * d + 2 * n * t * s * d
    assert data["rows"][2]["macs"] == cross
    assert data["total_macs"] == attn + cross + 2 * n * t * d * ff


def test_composites_expand_with_dotted_names():
    x = np.zeros((2, 3, 6, 6), np.float32)
    net = nn.Sequential([
        nn.Residual(nn.Sequential([nn.Conv2d(3, 3, padding=1), nn.ReLU()])),
        nn.Concat([nn.Conv2d(2, 1), nn.Sequential([nn.Conv2d(1, 1)])]),
        nn.Parallel([nn.Identity(), nn.Conv2d(1, 1)]),
    ])
    data = _rows(net, x)
    assert [r["name"] for r in data["rows"]] == [
        "0.body.0", "0.body.1", "1.conv1", "1.sequential1.0", "2.identity1", "2.conv1"]
    assert data["rows"][0]["macs"] == 2 * 3 * 6 * 6 * (3 * 9)
    assert data["rows"][-1]["output_shape"] == (2, 1, 6, 6)

    inp = nn.Input((4,))
    inner = nn.Sequential([nn.Dense(3), nn.Tanh()], name="block")
    out = nn.Dense(2, name="out")(nn.Add()([inner(inp), nn.Dense(3)(inp)]))
    data = _rows(nn.Model(inp, out), np.zeros((5, 4), np.float32))
    assert [r["name"] for r in data["rows"]] == ["block.0", "block.1", "dense1",
                                                 "add1", "out"]
    assert [r["macs"] for r in data["rows"]] == [5 * 3 * 4, 0, 5 * 3 * 4, 0, 5 * 2 * 3]


def test_models_with_sub_layers_as_attributes_expand():
    from gpudl.models.transformer import GPT, TransformerClassifier

    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    clf = TransformerClassifier(vocab_size=10, num_classes=3, d_model=8, num_heads=2,
                                ff_dim=16, num_layers=2)
    data = _rows(clf, ids)
    names = [r["name"] for r in data["rows"]]
    assert names[0] == "embed" and names[-1] == "head" and "layer2.linear1" in names
    layer = 4 * 2 * 4 * 8 * 8 + 2 * 2 * 4 * 4 * 8 + 2 * 2 * 4 * 8 * 16
    assert data["total_macs"] == 2 * layer + 2 * 3 * 8
    gpt = GPT(vocab_size=10, d_model=8, num_heads=2, num_layers=1, max_len=8)
    data = _rows(gpt, ids)
    assert [r["name"] for r in data["rows"]][:3] == ["tok_embed", "pos_embed", "block1.self_attn"]


def test_layer_parameters_outside_children_get_their_own_row():
    class Scaled(nn.Layer):
        def __init__(self):
            super().__init__()
            self.body = nn.Dense(3)

        def init(self, key, x):
            return {"body": self.body.init(key, x)[0], "scale": np.ones(3, np.float32)}, {}

        def apply(self, params, state, x, *, train=False, key=None):
            return self.body.apply(params["body"], {}, x)[0] * params["scale"], state

        def macs(self, x, y, params):
            return 7  # pretend work of its own

    data = _rows(nn.Sequential([Scaled()]), np.zeros((2, 4), np.float32))
    assert [(r["name"], r["params"], r["macs"]) for r in data["rows"]] == [
        ("0", 3, 7), ("0.body", 15, 2 * 3 * 4)]


def test_a_shared_layer_in_a_container_keeps_a_row_per_position():
    shared = nn.Dense(4)
    block = nn.Sequential([shared, nn.Tanh(), shared])
    data = _rows(block, np.zeros((2, 4), np.float32))
    assert [(r["name"], r["params"], r["macs"], r["calls"]) for r in data["rows"]] == [
        ("0", 20, 32, 1), ("1", 0, 0, 1), ("0", 0, 32, 1)]

    class Twice(nn.Layer):  # a container called in a loop: its positions merge over calls
        def __init__(self):
            super().__init__()
            self.block = block

        def init(self, key, x):
            return {"block": block.init(key, x)[0]}, {}

        def apply(self, params, state, x, *, train=False, key=None):
            for _ in range(3):
                x = block.apply(params["block"], {}, x)[0]
            return x, state

    data = _rows(Twice(), np.zeros((2, 4), np.float32))
    assert [(r["name"], r["params"], r["macs"], r["calls"]) for r in data["rows"]] == [
        ("block.0", 20, 96, 3), ("block.1", 0, 0, 3), ("block.0", 0, 96, 3)]
