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
    assert [r["name"] for r in data["rows"]] == ["dense1", "relu1", "dense2"]
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
    assert "embedding1" in text and "Output shape" in text and "MACs" in text


def test_summary_of_graph_model_without_example_and_state_size():
    x = nn.Input((3,))
    model = nn.Model(x, nn.BatchNorm1d()(nn.Dense(4)(x)))
    data = model.summary_dict()
    assert data["total_params"] == 3 * 4 + 4 + 4 + 4
    assert data["state_size"] == 8  # running mean and var, not parameters
    assert data["input_shape"] == (1, 3)


def test_summary_restores_layers():
    dense = nn.Dense(2)
    net = nn.Sequential([dense])
    net.summary_dict(np.zeros((1, 2), np.float32))
    assert "apply" not in vars(dense)  # the recording wrapper is removed again
    assert gd.nn.count_params(net.init(gd.random.key(0), np.zeros((1, 2)))[0]) == 6
