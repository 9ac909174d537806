"""nn.Sequential as torch's container: len, iteration, ``net[i]``, ``net["name"]`` and
``net[a:b]`` keeping the children's names, so ``select`` splits params and state."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.errors import ArgumentTypeError, IndexRangeError, MissingKeyError, TreeTypeError
from gpudl.tree import tree_leaves


def _cnn():
    net = nn.Sequential([
        nn.Conv2d(4, 3, padding=1), nn.BatchNorm2d(), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 3, padding=1), nn.BatchNorm2d(), nn.ReLU(),
        nn.GlobalAvgPool2d(), nn.Dense(3),
    ])
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8))
    params, state = net.init(0, x)
    return net, params, state, x


def _same(a, b):
    la, lb = tree_leaves(a), tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)


def test_len_iteration_and_item_access_as_torch():
    net, *_ = _cnn()
    assert len(net) == 9 and list(net) == net.layers
    assert net[0] is net.layers[0] and net[-1] is net.layers[8] and net[np.int64(1)] is net.layers[1]
    assert net["5"] is net.layers[5] and net.names == [str(i) for i in range(9)]


@pytest.mark.parametrize("k", [1, 3, 5, 8])
@pytest.mark.parametrize("train", [False, True])
def test_halves_with_split_params_and_state_equal_the_whole_model(k, train):
    net, params, state, x = _cnn()
    y, new_state = net.apply(params, state, x, train=train)
    first, rest = net[:k], net[k:]
    assert first.names == net.names[:k] and rest.names == net.names[k:]
    assert set(first.select(params)) | set(rest.select(params)) == set(params)
    assert not set(first.select(params)) & set(rest.select(params))
    h, s1 = first.apply(first.select(params), first.select(state), x, train=train)
    y2, s2 = rest.apply(rest.select(params), rest.select(state), h, train=train)
    np.testing.assert_allclose(y2, y, rtol=1e-12, atol=1e-14)
    _same({**state, **s1, **s2}, new_state)  # BatchNorm running statistics, both halves
    if train:
        assert not np.allclose(new_state["5"]["running_mean"], state["5"]["running_mean"])


def test_a_slice_is_a_sequential_that_can_be_differentiated_and_sliced_again():
    net, params, state, x = _cnn()
    body = net[1:-1]
    assert isinstance(body, nn.Sequential) and body.names == net.names[1:8]
    assert body[2:4].names == ["3", "4"] and net[::4].names == ["0", "4", "8"]
    p = net[:5].select(params)
    g = gd.grad(lambda q: net[:5].apply(q, net[:5].select(state), x)[0].sum())(p)
    assert sorted(g) == ["0", "1", "4"]


def test_shared_layers_keep_their_one_name():
    shared = nn.Dense(4)
    net = nn.Sequential([shared, nn.Tanh(), shared, nn.Dense(2)])
    x = np.ones((2, 4))
    params, state = net.init(0, x)
    assert net[1:].names == ["1", "0", "3"]
    h = net[:2].apply(net[:2].select(params), {}, x)[0]
    np.testing.assert_allclose(net[2:].apply(net[2:].select(params), {}, h)[0],
                               net.apply(params, state, x)[0], rtol=1e-12)


def test_errors():
    net, params, _, _ = _cnn()
    with pytest.raises(IndexRangeError, match=r"index 9 is out of range for a Sequential of 9"):
        net[9]
    with pytest.raises(IndexError):
        net[-10]
    with pytest.raises(IndexRangeError, match=r"the slice \[9:\] selects no layer"):
        net[9:]
    with pytest.raises(MissingKeyError, match="no child named 'conv9'.*'0'"):
        net["conv9"]
    with pytest.raises(ArgumentTypeError, match="index with an int, a slice or a child's name"):
        net[1.0]
    with pytest.raises(TreeTypeError, match="nn.Sequential.select"):
        net[:2].select(None)
