"""Every layer exported by gpudl.nn: inferred shapes, torch-style names, gradients.

The table below must have an entry for each Layer subclass in ``gpudl.nn.__all__``;
adding a layer without one fails ``test_every_layer_has_a_table_entry``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn import activations as nn_activations
from gpudl.nn.base import has_params
from gpudl.testing import check_grad
from gpudl.tree import flatten_with_paths, tree_map

R = np.random.default_rng(0)


def f64(*shape):
    return R.standard_normal(shape)


def _model():
    x = nn.Input((4,), dtype=np.float64)
    return nn.Model(x, nn.Dense(3)(nn.Tanh()(x)))


# name -> (make layer, make example, expected output shape, expected param shapes)
# Output shape None = the example's shape. A list output shape = a list of outputs.
ACT = lambda: f64(2, 5)  # noqa: E731
TABLE = {
    "Dense": (lambda: nn.Dense(3), lambda: f64(2, 4), (2, 3),
              {"weight": (3, 4), "bias": (3,)}),
    "Conv1d": (lambda: nn.Conv1d(4, 3, padding=1), lambda: f64(2, 2, 5), (2, 4, 5),
               {"weight": (4, 2, 3), "bias": (4,)}),
    "Conv2d": (lambda: nn.Conv2d(3, 3, stride=2, padding=1), lambda: f64(2, 2, 5, 5),
               (2, 3, 3, 3), {"weight": (3, 2, 3, 3), "bias": (3,)}),
    # (4-1)*2 - 2*1 + (3-1) + 1 + 1 = 8
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(3, 3, stride=2, padding=1, output_padding=1),
                        lambda: f64(2, 2, 4, 4), (2, 3, 8, 8),
                        {"weight": (2, 3, 3, 3), "bias": (3,)}),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), lambda: f64(2, 3, 4, 4), (2, 3, 2, 2), {}),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), lambda: f64(2, 3, 4, 4), (2, 3, 2, 2), {}),
    "LPPool2d": (lambda: nn.LPPool2d(2, 2), lambda: f64(2, 3, 4, 4), (2, 3, 2, 2), {}),
    "GlobalAvgPool2d": (nn.GlobalAvgPool2d, lambda: f64(2, 3, 4, 4), (2, 3), {}),
    "GlobalMaxPool2d": (nn.GlobalMaxPool2d, lambda: f64(2, 3, 4, 4), (2, 3), {}),
    "MaxPool1d": (lambda: nn.MaxPool1d(3, 2, 1), lambda: f64(2, 3, 7), (2, 3, 4), {}),
    "AvgPool1d": (lambda: nn.AvgPool1d(2), lambda: f64(2, 3, 7), (2, 3, 3), {}),
    "GlobalAvgPool1d": (nn.GlobalAvgPool1d, lambda: f64(2, 3, 7), (2, 3), {}),
    "GlobalMaxPool1d": (nn.GlobalMaxPool1d, lambda: f64(2, 3, 7), (2, 3), {}),
    "Flatten": (nn.Flatten, lambda: f64(2, 3, 2, 2), (2, 12), {}),
    "Reshape": (lambda: nn.Reshape((2, 6)), lambda: f64(2, 12), (2, 2, 6), {}),
    "BatchNorm1d": (nn.BatchNorm1d, lambda: f64(4, 3), (4, 3), {"weight": (3,), "bias": (3,)}),
    "BatchNorm2d": (nn.BatchNorm2d, lambda: f64(2, 3, 4, 4), (2, 3, 4, 4),
                    {"weight": (3,), "bias": (3,)}),
    "LayerNorm": (nn.LayerNorm, ACT, (2, 5), {"weight": (5,), "bias": (5,)}),
    "Dropout": (lambda: nn.Dropout(0.5), ACT, (2, 5), {}),
    "Embedding": (lambda: nn.Embedding(10, 4), lambda: np.array([[1, 2, 9], [0, 0, 3]]),
                  (2, 3, 4), {"weight": (10, 4)}),
    "Activation": (lambda: nn.Activation("tanh"), ACT, (2, 5), {}),
    "Identity": (nn.Identity, ACT, (2, 5), {}),
    "PReLU": (lambda: nn.PReLU(None), lambda: f64(2, 3, 4), (2, 3, 4), {"weight": (3,)}),
    "Maxout": (lambda: nn.Maxout(2), lambda: f64(2, 6), (2, 3), {}),
    "Lambda": (lambda: nn.Lambda(lambda x: x * 2.0), ACT, (2, 5), {}),
    "Sequential": (lambda: nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(2)]),
                   lambda: f64(2, 4), (2, 2),
                   {"0.weight": (3, 4), "0.bias": (3,),
                    "2.weight": (2, 3), "2.bias": (2,)}),
    "Residual": (lambda: nn.Residual(nn.Dense(4)), lambda: f64(2, 4), (2, 4),
                 {"body.weight": (4, 4), "body.bias": (4,)}),
    "Parallel": (lambda: nn.Parallel([nn.Dense(2), nn.Dense(3, bias=False)]),
                 lambda: f64(2, 4), [(2, 2), (2, 3)],
                 {"dense1.weight": (2, 4), "dense1.bias": (2,), "dense2.weight": (3, 4)}),
    "Concat": (lambda: nn.Concat([nn.Dense(2), nn.Tanh()], axis=-1), lambda: f64(2, 4),
               (2, 6), {"dense1.weight": (2, 4), "dense1.bias": (2,)}),
    "Add": (nn.Add, lambda: [f64(2, 4), f64(2, 4)], (2, 4), {}),
    "Multiply": (nn.Multiply, lambda: [f64(2, 4), f64(2, 4)], (2, 4), {}),
    "Concatenate": (nn.Concatenate, lambda: [f64(2, 3), f64(2, 2)], (2, 5), {}),
    "Model": (_model, lambda: f64(2, 4), (2, 3), {"dense1.weight": (3, 4), "dense1.bias": (3,)}),
    "MultiHeadAttention": (lambda: nn.MultiHeadAttention(2), lambda: f64(2, 5, 4), (2, 5, 4),
                           {"in_proj_weight": (12, 4), "in_proj_bias": (12,),
                            "out_proj.weight": (4, 4), "out_proj.bias": (4,)}),
    "PositionalEncoding": (nn.PositionalEncoding, lambda: f64(2, 5, 4), (2, 5, 4), {}),
    "TransformerEncoderLayer": (lambda: nn.TransformerEncoderLayer(num_heads=2, ff_dim=8),
                                lambda: f64(2, 5, 4), (2, 5, 4), None),
    "TransformerDecoderLayer": (lambda: nn.TransformerDecoderLayer(num_heads=2, ff_dim=8),
                                lambda: {"x": f64(2, 5, 4), "memory": f64(2, 3, 4)}, (2, 5, 4),
                                None),
    "RNN": (lambda: nn.RNN(3), lambda: f64(5, 2, 4), (5, 2, 3),
            {"weight_ih_l0": (3, 4), "weight_hh_l0": (3, 3), "bias_ih_l0": (3,),
             "bias_hh_l0": (3,)}),
    "LSTM": (lambda: nn.LSTM(3, batch_first=True), lambda: f64(2, 5, 4), (2, 5, 3),
             {"weight_ih_l0": (12, 4), "weight_hh_l0": (12, 3), "bias_ih_l0": (12,),
              "bias_hh_l0": (12,)}),
    "GRU": (lambda: nn.GRU(3, bidirectional=True), lambda: f64(5, 2, 4), (5, 2, 6),
            {f"{w}_l0{d}": s for d in ("", "_reverse")
             for w, s in (("weight_ih", (9, 4)), ("weight_hh", (9, 3)), ("bias_ih", (9,)),
                          ("bias_hh", (9,)))}),
    "RNNCell": (lambda: nn.RNNCell(3), lambda: f64(2, 4), (2, 3),
                {"weight_ih": (3, 4), "weight_hh": (3, 3), "bias_ih": (3,), "bias_hh": (3,)}),
    "LSTMCell": (lambda: nn.LSTMCell(3), lambda: f64(2, 4), [(2, 3), (2, 3)],
                 {"weight_ih": (12, 4), "weight_hh": (12, 3), "bias_ih": (12,),
                  "bias_hh": (12,)}),
    "GRUCell": (lambda: nn.GRUCell(3), lambda: f64(2, 4), (2, 3),
                {"weight_ih": (9, 4), "weight_hh": (9, 3), "bias_ih": (9,), "bias_hh": (9,)}),
    "Subsampling2d": (lambda: nn.Subsampling2d(2), lambda: f64(2, 3, 4, 4), (2, 3, 2, 2),
                      {"weight": (3,), "bias": (3,)}),
    # Graph layers take the graph [x (N, F), edge_index (2, E)] (no batch axis).
    "GCNConv": (lambda: nn.GCNConv(3), lambda: [f64(4, 2), np.array([[0, 1, 2], [1, 2, 3]])],
                (4, 3), {"lin.weight": (3, 2), "bias": (3,)}),
    "GATConv": (lambda: nn.GATConv(3, heads=2),
                lambda: [f64(4, 2), np.array([[0, 1, 2], [1, 2, 3]])], (4, 6),
                {"lin.weight": (6, 2), "att_src": (1, 2, 3), "att_dst": (1, 2, 3),
                 "bias": (6,)}),
}

# The activation layers built from the registry (nn.ReLU, nn.LeakyReLU, ...) keep the
# shape with their default arguments; tests/functional/test_activations.py checks their
# values. Hand-written ones (PReLU, Maxout) have rows above.
TABLE.update({cls.__name__: (cls, ACT, (2, 5), {})
              for cls in nn_activations.layer_classes().values()
              if cls not in nn_activations.HAND_WRITTEN.values()})

# Not layers to instantiate on their own: the base class.
ABSTRACT = {"Layer"}

LEAF_NAME = re.compile(
    r"^(weight|bias|running_mean|running_var|num_batches_tracked|(weight|bias)_(ih|hh)(_l\d+(_reverse)?)?"
    r"|att_src|att_dst|in_proj_(weight|bias)|[qkv]_proj_weight)$")  # att_*: PyG's GATConv;
# in_proj_*/[qkv]_proj_weight: torch's MultiheadAttention
SEGMENT = re.compile(r"^([a-z][a-z0-9_]*|[0-9]+)$")  # a name, or a Sequential position (torch)


def _layer_classes() -> dict[str, type]:
    out = {}
    for name in nn.__all__:
        obj = getattr(nn, name)
        if isinstance(obj, type) and issubclass(obj, nn.Layer) and obj.__name__ not in ABSTRACT:
            out[obj.__name__] = obj
    return out


def _shapes(tree) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in flatten_with_paths(tree)}


def _out_shape(y):
    return [tuple(v.shape) for v in y] if isinstance(y, (list, tuple)) else tuple(y.shape)


def test_every_layer_has_a_table_entry():
    missing = sorted(set(_layer_classes()) - set(TABLE))
    assert not missing, f"add these layers to TABLE in {__file__}: {missing}"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_init_shapes_agree_with_apply(name):
    make, example, out_shape, param_shapes = TABLE[name]
    layer, x = make(), example()
    params, state = layer.init(gd.random.key(0), x)
    if param_shapes is not None:
        assert _shapes(params) == param_shapes
    for key, _ in flatten_with_paths(params) + flatten_with_paths(state):
        *prefix, leaf = key.split(".")
        assert LEAF_NAME.match(leaf), f"{name}: leaf {key!r} is not a torch-style name"
        assert all(SEGMENT.match(p) for p in prefix), f"{name}: key {key!r}"
    y, new_state = layer.apply(params, state, x)
    assert _out_shape(y) == out_shape
    assert _shapes(new_state) == _shapes(state)
    # Params from init carry float dtype from the (float64) example.
    floats = [v for _, v in flatten_with_paths(params)]
    if name != "Embedding":
        assert all(v.dtype == np.float64 for v in floats)
    # Shapes inferred from a batch of 2 must serve any batch: apply to a batch of 3.
    if not isinstance(out_shape, list) and name not in ("TransformerDecoderLayer",) \
            and not isinstance(x, list):
        axis = 1 if name in ("RNN", "GRU") else 0  # time-major recurrent input
        x3 = np.concatenate([x, x[:1] if axis == 0 else x[:, :1]], axis=axis)
        y3, _ = layer.apply(params, state, x3)
        expected = list(out_shape)
        expected[axis] += 1
        assert tuple(y3.shape) == tuple(expected)


@pytest.mark.parametrize("name", sorted(n for n, e in TABLE.items()
                                        if not isinstance(e[2], list)
                                        and n not in ("Add", "Multiply", "Concatenate",
                                                      "TransformerDecoderLayer")))
def test_next_layer_is_built_from_the_applied_shape(name):
    # Sequential.init sizes each layer from the previous layer's *applied* output.
    make, example, out_shape, _ = TABLE[name]
    net = nn.Sequential([make(), nn.Dense(2, name="head")])
    params, state = net.init(gd.random.key(1), example())
    assert params["head"]["weight"].shape == (2, out_shape[-1])
    y, _ = net.apply(params, state, example())
    assert y.shape == (*out_shape[:-1], 2)


def test_dense_without_bias():
    layer = nn.Dense(3, bias=False)
    x = f64(2, 4)
    params, _ = layer.init(gd.random.key(0), x)
    assert list(params) == ["weight"]
    y, _ = layer.apply(params, {}, x)
    np.testing.assert_allclose(y, x @ params["weight"].T)


def test_dense_matches_reference_on_leading_dims():
    layer = nn.Dense(3)
    x = f64(2, 5, 4)
    p, _ = layer.init(gd.random.key(0), x)
    y, _ = layer.apply(p, {}, x)
    ref = np.einsum("bti,oi->bto", x, p["weight"]) + p["bias"]
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_activation_layers_forward_kwargs():
    x = np.array([[-2.0, 0.5]])
    y, _ = nn.LeakyReLU(negative_slope=0.2).apply({}, {}, x)
    np.testing.assert_allclose(y, [[-0.4, 0.5]])
    y, _ = nn.Softmax(axis=0).apply({}, {}, np.array([[0.0], [0.0]]))
    np.testing.assert_allclose(y, [[0.5], [0.5]])


def test_prelu_default_is_one_shared_slope_as_torch():
    p, _ = nn.PReLU().init(gd.random.key(0), np.zeros((2, 3, 4)))
    np.testing.assert_allclose(p["weight"], [0.25])
    y, _ = nn.PReLU().apply({"weight": np.array([0.5])}, {}, np.array([[-2.0, 2.0]]))
    np.testing.assert_allclose(y, [[-1.0, 2.0]])


def test_prelu_learns_one_slope_per_channel():
    layer = nn.PReLU(num_parameters=None)
    x = np.array([[-1.0, -2.0, 3.0]])
    p, _ = layer.init(gd.random.key(0), x)
    np.testing.assert_allclose(p["weight"], [0.25, 0.25, 0.25])
    p = {"weight": np.array([0.1, 0.5, 0.9])}
    np.testing.assert_allclose(layer.apply(p, {}, x)[0], [[-0.1, -1.0, 3.0]])
    g = gd.grad(lambda w: layer.apply({"weight": w}, {}, x)[0].sum())(p["weight"])
    np.testing.assert_allclose(g, [-1.0, -2.0, 0.0])


def test_maxout_and_lambda_values():
    y, _ = nn.Maxout(2).apply({}, {}, np.array([[1.0, 5.0, 3.0, 2.0]]))
    np.testing.assert_allclose(y, [[5.0, 3.0]])
    y, _ = nn.Lambda(lambda v: v + 1).apply({}, {}, np.zeros(2))
    np.testing.assert_allclose(y, [1.0, 1.0])


def test_embedding_trainable_and_frozen():
    vecs = np.arange(12.0).reshape(4, 3)
    frozen = nn.Embedding.from_pretrained(vecs)
    idx = np.array([[3, 0]])
    p, s = frozen.init(None, idx)
    assert p["weight"].dtype == np.float64 and p["weight"] is not vecs
    np.testing.assert_allclose(frozen.apply(p, s, idx)[0], vecs[[[3, 0]]])
    assert frozen.trainable_mask(p) == {"weight": False}
    g = gd.grad(lambda w: frozen.apply({"weight": w}, s, idx)[0].sum())(p["weight"])
    np.testing.assert_allclose(g, 0.0)  # frozen: no gradient, like requires_grad=False

    tuned = nn.Embedding.from_pretrained(vecs, freeze=False)
    assert tuned.trainable_mask(p) == {"weight": True}
    g = gd.grad(lambda w: tuned.apply({"weight": w}, s, idx)[0].sum())(p["weight"])
    np.testing.assert_allclose(g, [[1, 1, 1], [0, 0, 0], [0, 0, 0], [1, 1, 1]])

    emb = nn.Embedding(50, 8)
    p, _ = emb.init(gd.random.key(0), idx)
    assert p["weight"].dtype == np.float32  # integer example: default float32
    assert abs(float(p["weight"].std()) - 1.0) < 0.1  # N(0, 1) as torch


# ----------------------------------------------------------------------------- gradients
def _params_of(name):
    make, example, _, _ = TABLE[name]
    layer, x = make(), example()
    params, state = layer.init(gd.random.key(0), x)
    return layer, x, params, state


GRAD_LAYERS = sorted(n for n, entry in TABLE.items() if has_params(entry[0]()))


@pytest.mark.parametrize("name", GRAD_LAYERS)
def test_gradients_wrt_params_and_input(name):
    layer, x, params, state = _params_of(name)
    assert gd.tree.tree_leaves(params)
    train = name.startswith("BatchNorm")  # batch statistics: the gradient that trains

    def f(p, inp):
        return layer.apply(p, state, inp, train=train)[0]

    check_grad(f, params, x)  # the Embedding's integer input is skipped by check_grad


def test_batchnorm_eval_gradient():
    layer, x, params, state = _params_of("BatchNorm2d")
    state = {"running_mean": np.array([0.1, -0.2, 0.3]), "running_var": np.array([1.5, 0.5, 2.0])}
    check_grad(lambda p, inp: layer.apply(p, state, inp)[0], params, x)


def test_layer_norm_without_affine_has_no_params_entry():
    net = nn.Sequential([nn.Dense(5), nn.LayerNorm(affine=False), nn.BatchNorm1d(affine=False)])
    x = f64(6, 3)
    params, state = net.init(gd.random.key(0), x)
    assert sorted(params) == ["0"]  # nothing to save or load for the norms
    assert sorted(state) == ["2"]
    y, _ = net.apply(params, state, x)
    h = x @ params["0"]["weight"].T + params["0"]["bias"]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, h / np.sqrt(1 + 1e-5), rtol=1e-10)
    check_grad(lambda p, inp: net.apply(p, state, inp)[0], params, x)


def test_tree_map_over_params_is_plain():
    # Params are plain nested dicts of arrays: tree utilities work on them directly.
    _, _, params, _ = _params_of("Sequential")
    doubled = tree_map(lambda a: a * 2, params)
    np.testing.assert_allclose(doubled["0"]["weight"], params["0"]["weight"] * 2)


def test_recurrent_initial_states_must_match_layers_directions_and_kind():
    # torch's rule: (num_layers * num_directions, N, hidden); extra rows were dropped
    # silently, too few failed with a bare IndexError, and a GRU ignored a c0
    x = np.random.default_rng(0).standard_normal((3, 2, 5))  # (T, N, I)
    lstm = nn.LSTM(4, num_layers=2)
    p, s = lstm.init(gd.random.key(0), x)
    ok = np.zeros((2, 2, 4))
    lstm.apply(p, s, {"x": x, "h0": ok, "c0": ok})
    for h0 in (np.zeros((4, 2, 4)), np.zeros((1, 2, 4)), np.zeros((2, 3, 4))):
        with pytest.raises(gd.errors.ShapeError, match=r"h0 must be \(num_layers \* num_dir"
                                                       r"ections, N, hidden\) = \(2, 2, 4\)"):
            lstm.apply(p, s, {"x": x, "h0": h0, "c0": ok})
    with pytest.raises(gd.errors.ShapeError, match=r"c0 must be .* got \(4, 2, 4\)"):
        lstm.apply(p, s, {"x": x, "h0": ok, "c0": np.zeros((4, 2, 4))})
    gru = nn.GRU(4, bidirectional=True)
    pg, sg = gru.init(gd.random.key(0), x)
    gru.apply(pg, sg, {"x": x, "h0": np.zeros((2, 2, 4))})
    with pytest.raises(gd.errors.ConfigError, match="only an LSTM has a cell state"):
        gru.apply(pg, sg, {"x": x, "h0": np.zeros((2, 2, 4)), "c0": np.zeros((2, 2, 4))})
