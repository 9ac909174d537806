"""Params are checked against the shapes the layer's configuration and input imply: another
configuration's weights (another head, layer size, input size) fail with a named error
that gives the leaf path, the expected and the given shape, instead of running silently."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.errors import ParamShapeError, ShapeError, TreeMismatchError, TreeTypeError
from gpudl.tree import tree_map

KEY = gd.random.key(0)


def _zeros(*shape):
    return np.zeros(shape, np.float32)


def _ints(*shape):
    return np.zeros(shape, np.int64)


# (layer, example input): every parametrised layer of the catalogue, with options that
# change its shapes (no bias, groups, bidirectional stacks, cross-attention).
CATALOGUE = [
    (lambda: nn.Dense(3), _zeros(2, 5)),
    (lambda: nn.Dense(3, bias=False), _zeros(2, 7, 5)),
    (lambda: nn.Conv2d(6, 3, padding=1), _zeros(1, 4, 8, 8)),
    (lambda: nn.Conv2d(6, (3, 1), groups=2, bias=False), _zeros(1, 4, 8, 8)),
    (lambda: nn.Conv1d(5, 3), _zeros(2, 3, 9)),
    (lambda: nn.ConvTranspose2d(6, 2, stride=2, groups=2), _zeros(1, 4, 5, 5)),
    (lambda: nn.PReLU(None), _zeros(2, 3, 4, 4)),
    (lambda: nn.PReLU(), _zeros(2, 3)),
    (lambda: nn.BatchNorm2d(), _zeros(2, 3, 4, 4)),
    (lambda: nn.BatchNorm1d(), _zeros(4, 5)),
    (lambda: nn.LayerNorm((3, 4)), _zeros(2, 3, 4)),
    (lambda: nn.Embedding(10, 4, padding_idx=0), _ints(2, 3)),
    (lambda: nn.LSTM(6, num_layers=2, bidirectional=True), _zeros(5, 2, 3)),
    (lambda: nn.GRU(4, bias=False, batch_first=True), _zeros(2, 5, 3)),
    (lambda: nn.RNN(4), {"x": _zeros(5, 2, 3)}),
    (lambda: nn.LSTMCell(8), _zeros(4, 3)),
    (lambda: nn.GRUCell(8, bias=False), _zeros(4, 3)),
    (lambda: nn.RNNCell(5, nonlinearity="relu"), (_zeros(4, 3), _zeros(4, 5))),
    (lambda: nn.MultiHeadAttention(2), _zeros(2, 5, 8)),
    (lambda: nn.MultiHeadAttention(2, embed_dim=6),
     {"query": _zeros(2, 5, 8), "key": _zeros(2, 7, 4), "value": _zeros(2, 7, 3)}),
    (lambda: nn.TransformerEncoderLayer(2, 16), _zeros(2, 5, 8)),
    (lambda: nn.TransformerDecoderLayer(2, 16), {"x": _zeros(2, 5, 8)}),
    (lambda: nn.TransformerDecoderLayer(2, 16),
     {"x": _zeros(2, 5, 8), "memory": _zeros(2, 3, 6)}),
    (lambda: nn.Subsampling2d(2), _zeros(1, 6, 8, 8)),
    (lambda: nn.GCNConv(4, bias=False), (_zeros(5, 3), np.array([[0, 1], [1, 2]]))),
    (lambda: nn.GATConv(4, heads=3, concat=False), {"x": _zeros(5, 3),
                                                    "edge_index": np.array([[0, 1], [1, 2]])}),
]


@pytest.mark.parametrize("make, x", CATALOGUE)
def test_param_shapes_are_what_init_makes(make, x):
    """One source of truth: the shapes the check expects are those init produces."""
    layer = make()
    params, _ = layer.init(KEY, x)
    assert tree_map(lambda a: tuple(a.shape), params) == layer.param_shapes(x)


# (layer, the layer whose params are given, input, leaf path, expected, got)
MISMATCHES = [
    (nn.Dense(3), nn.Dense(5), _zeros(2, 4), "weight", (3, 4), (5, 4)),
    (nn.Dense(3), nn.Dense(3, bias=False), _zeros(2, 4), None, None, None),  # missing key
    (nn.Conv2d(6, 5), nn.Conv2d(8, 5), _zeros(1, 3, 12, 12), "weight", (6, 3, 5, 5),
     (8, 3, 5, 5)),
    (nn.Conv2d(6, 5), nn.Conv2d(6, 3), _zeros(1, 3, 12, 12), "weight", (6, 3, 5, 5),
     (6, 3, 3, 3)),
    (nn.ConvTranspose2d(4, 2), nn.ConvTranspose2d(6, 2), _zeros(1, 3, 5, 5), "weight",
     (3, 4, 2, 2), (3, 6, 2, 2)),
    (nn.Embedding(10, 4), nn.Embedding(12, 4), _ints(2, 3), "weight", (10, 4), (12, 4)),
    (nn.LSTM(8), nn.LSTM(6), _zeros(5, 2, 3), "weight_ih_l0", (32, 3), (24, 3)),
    (nn.GRU(8), nn.LSTM(8), _zeros(5, 2, 3), "weight_ih_l0", (24, 3), (32, 3)),
    (nn.LSTMCell(8), nn.LSTMCell(4), _zeros(4, 3), "weight_ih", (32, 3), (16, 3)),
    (nn.BatchNorm2d(), nn.BatchNorm2d(), _zeros(2, 3, 4, 4), "weight", (3,), (4,)),
    (nn.LayerNorm(), nn.LayerNorm(), _zeros(2, 4), "weight", (4,), (6,)),
    (nn.PReLU(3), nn.PReLU(1), _zeros(2, 3), "weight", (3,), (1,)),
    (nn.MultiHeadAttention(2, embed_dim=6), nn.MultiHeadAttention(2, embed_dim=4),
     _zeros(2, 5, 8), "q_proj_weight", (6, 8), (4, 8)),
    (nn.TransformerEncoderLayer(2, 16), nn.TransformerEncoderLayer(2, 32), _zeros(2, 5, 8),
     "linear1.weight", (16, 8), (32, 8)),
]


def _params_for(layer, x, like):
    """Params of ``like`` made on an input of ``x``'s kind (BatchNorm/LayerNorm: 4/6 wide)."""
    if isinstance(like, nn.BatchNorm2d):
        x = _zeros(2, 4, 4, 4)
    elif isinstance(like, nn.LayerNorm):
        x = _zeros(2, 6)
    return like.init(KEY, x)[0]


@pytest.mark.parametrize("layer, like, x, path, expected, got", MISMATCHES)
def test_params_of_another_configuration_fail_naming_the_leaf(layer, like, x, path,
                                                              expected, got):
    params = _params_for(layer, x, like)
    state = layer.init(KEY, x)[1]
    if path is None:
        with pytest.raises(TreeMismatchError, match=r"missing keys \['bias'\]"):
            layer.apply(params, state, x)
        return
    with pytest.raises(ParamShapeError) as err:
        layer.apply(params, state, x)
    e = err.value
    assert (e.path, e.expected, e.got) == (path, expected, got)
    assert f"parameter '{path}' has shape {got}, expected {expected}" in str(e)
    assert isinstance(e, ShapeError) and isinstance(e, ValueError)  # old except clauses work


def test_dense3_given_dense5_params_names_layer_path_and_shapes():
    p5, _ = nn.Dense(5).init(KEY, _zeros(2, 4))
    with pytest.raises(ParamShapeError, match=r"nn.Dense: parameter 'weight' has shape \(5, 4\), "
                       r"expected \(3, 4\) for an input of shape \(2, 4\)"):
        nn.Dense(3).apply(p5, {}, _zeros(2, 4))


def _mlp(head: int):
    return nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(head)])


def test_containers_prefix_the_child_path():
    x = _zeros(2, 4)
    p5, s5 = _mlp(5).init(KEY, x)
    with pytest.raises(ParamShapeError) as err:
        _mlp(3).apply(p5, s5, x)
    assert err.value.path == "2.weight"
    assert "'2.weight' has shape (5, 4), expected (3, 4)" in str(err.value)

    nested = nn.Sequential([_mlp(3), nn.Dense(2)])
    other = nn.Sequential([_mlp(5), nn.Dense(2)])
    with pytest.raises(ParamShapeError) as err:
        nested.apply(other.init(KEY, x)[0], {}, x)
    assert err.value.path == "0.2.weight"

    res = nn.Residual(nn.Dense(4), projection=nn.Dense(4))
    p = res.init(KEY, x)[0]
    bad = dict(p, projection=dict(p["projection"], bias=np.zeros(5, np.float32)))
    with pytest.raises(ParamShapeError) as err:
        res.apply(bad, {}, x)
    assert err.value.path == "projection.bias"

    inp = nn.Input((4,))
    model = nn.Model(inp, nn.Dense(3)(nn.Dense(4)(inp)))
    model5 = nn.Model(inp, nn.Dense(5)(nn.Dense(4)(inp)))
    with pytest.raises(ParamShapeError) as err:
        model.apply(model5.init(KEY)[0], {}, x)
    assert err.value.path == "dense2.weight"


def test_errors_survive_pickling():
    err = ParamShapeError("weight", (3, 4), (5, 4), "nn.Dense").within("dense2")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.path == "dense2.weight"


def test_fit_with_params_of_another_head_fails_before_training():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    other, _ = _mlp(5).init(KEY, x)
    with pytest.raises(ParamShapeError, match="'2.weight' has shape"):
        gd.fit(_mlp(3), (x, y), loss="cross_entropy", optimizer=optim.sgd(0.1), epochs=1,
               params=other, verbose=0)


def test_apply_without_params_or_state_says_what_to_do():
    net = _mlp(3)
    x = _zeros(2, 4)
    for params, state in ((None, None), (net.init(KEY, x)[0], None), ([], {})):
        with pytest.raises(TreeTypeError, match=r"model.init\(key, x_example\) first"):
            net.apply(params, state, x)
    with pytest.raises(TypeError, match="params must be the dict returned by init"):
        nn.Dense(3).apply(None, {}, x)  # also a TypeError: the builtin meaning is kept
    with pytest.raises(TreeTypeError, match="parameter 'weight' must be an array"):
        nn.Dense(3).apply({"weight": [[0.0] * 4] * 3, "bias": np.zeros(3)}, {}, x)
    inp = nn.Input((4,))
    with pytest.raises(TreeTypeError):
        nn.Model(inp, nn.Dense(2)(inp)).apply(None, None, x)


def test_empty_sequential_is_refused_at_construction():
    with pytest.raises(nn.LayerArgumentError, match="empty list of layers.*nn.Identity"):
        nn.Sequential([])


def test_every_parametrised_layer_declares_its_shapes():
    containers = {nn.Sequential, nn.Residual, nn.Parallel, nn.Concat, nn.Model}
    leaf_layers = [getattr(nn, n) for n in nn.__all__ if isinstance(getattr(nn, n), type)
                   and issubclass(getattr(nn, n), nn.Layer)
                   and getattr(nn, n).init is not nn.Layer.init
                   and getattr(nn, n) not in containers]
    assert len(leaf_layers) >= 15
    missing = [c.__name__ for c in leaf_layers if not hasattr(c, "param_shapes")]
    assert not missing, f"layers without param_shapes (and so without the check): {missing}"
    covered = {type(make()) for make, _ in CATALOGUE}
    assert not set(leaf_layers) - covered, "add them to CATALOGUE"
