"""Torch/Keras habits that used to be silently misread now work as torch does or fail loudly.

Each test provokes one trap from the API audit: a hyper-parameter landing in the ``name``
slot, torch-order positional calls into gpudl's inferred-size signatures, the
initializer's argument order, and arguments that were accepted and ignored.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.errors import GpudlError
from gpudl.nn import initializers as inits

R = np.random.default_rng(11)
KEY = gd.random.key(0)


def _apply(layer, x):
    p, s = layer.init(KEY, x)
    return layer.apply(p, s, x)[0]


# ------------------------------------------------- 1. activations: hyper-parameter first
def test_activation_hyper_parameter_is_the_first_positional_argument():
    x = np.array([[-2.0, -0.5, 0.0, 1.5]])
    np.testing.assert_allclose(_apply(nn.LeakyReLU(0.2), x), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(_apply(nn.ELU(0.5), x), np.where(x > 0, x, 0.5 * np.expm1(x)))
    np.testing.assert_allclose(_apply(nn.Softplus(2.0), x), np.log1p(np.exp(2.0 * x)) / 2.0,
                               rtol=1e-12)
    np.testing.assert_allclose(_apply(nn.Hardtanh(-0.5, 0.5), x), np.clip(x, -0.5, 0.5))
    z = R.standard_normal((3, 2))
    e = np.exp(z - z.max(axis=0))
    np.testing.assert_allclose(_apply(nn.Softmax(0), z), e / e.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(_apply(nn.Softmax(dim=0), z), e / e.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(_apply(nn.LogSoftmax(0), z), np.log(e / e.sum(axis=0)),
                               rtol=1e-12)
    for layer in (nn.LeakyReLU(0.2), nn.ELU(0.5), nn.Softplus(2.0), nn.Softmax(0)):
        assert layer.name is None  # nothing ended up in the name slot
    assert nn.LeakyReLU(0.2, name="act").name == "act"


def test_old_positional_name_gets_a_message_not_a_wrong_slope():
    with pytest.raises(nn.LayerArgumentError, match=r"negative_slope must be a number, got "
                                                    r"'act'.*name='act'"):
        nn.LeakyReLU("act")
    with pytest.raises(nn.LayerArgumentError, match="nn.ReLU takes no positional arguments"):
        nn.ReLU("relu1")
    with pytest.raises(nn.LayerArgumentError, match="inplace"):
        nn.ReLU(True)
    with pytest.raises(nn.LayerArgumentError, match=r"nn.Activation takes 1 positional"):
        nn.Activation("relu", "act")
    with pytest.raises(nn.LayerArgumentError, match="does not take"):
        nn.Activation("relu", slope=0.1)  # caught at construction, not at the first forward
    with pytest.raises(nn.LayerArgumentError, match=r"beta must be in \(0, inf\)"):
        nn.Softplus(0.0)
    with pytest.raises(nn.LayerArgumentError, match="min_val must be below max_val"):
        nn.Hardtanh(1.0, -1.0)


# The activation layers are built from the registry; their signatures are the torch order.
ACTIVATION_SIGNATURES = {
    "ReLU": "(*, name: 'str | None' = None)",
    "Sigmoid": "(*, name: 'str | None' = None)",
    "Tanh": "(*, name: 'str | None' = None)",
    "SELU": "(*, name: 'str | None' = None)",
    "SiLU": "(*, name: 'str | None' = None)",
    "Swish": "(*, name: 'str | None' = None)",
    "LeakyReLU": "(negative_slope: 'float' = 0.01, *, name: 'str | None' = None)",
    "ELU": "(alpha: 'float' = 1.0, *, name: 'str | None' = None)",
    "GELU": "(approximate: \"Literal['none', 'tanh']\" = 'none', *, name: 'str | None' = None)",
    "Softplus": "(beta: 'float' = 1.0, threshold: 'float' = 20.0, *, name: 'str | None' = None)",
    "Hardtanh": "(min_val: 'float' = -1.0, max_val: 'float' = 1.0, *, name: 'str | None' = None)",
    "Step": "(at_zero: 'float' = 1.0, *, name: 'str | None' = None)",
    "Softmax": "(axis: 'int' = -1, *, temperature: 'float' = 1.0, dim: 'int | None' = None, "
               "name: 'str | None' = None)",
    "LogSoftmax": "(axis: 'int' = -1, *, temperature: 'float' = 1.0, dim: 'int | None' = None, "
                  "name: 'str | None' = None)",
    "PReLU": "(num_parameters: 'int | None' = 1, init: 'float' = 0.25, *, "
             "name: 'str | None' = None)",
    "Maxout": "(num_pieces: 'int', axis: 'int' = -1, *, name: 'str | None' = None)",
}


@pytest.mark.parametrize("cls_name", sorted(ACTIVATION_SIGNATURES))
def test_activation_layer_signatures_and_docs(cls_name):
    cls = getattr(nn, cls_name)
    assert str(inspect.signature(cls)) == ACTIVATION_SIGNATURES[cls_name]
    assert cls.__doc__ and cls.__module__ == "gpudl.nn.activations"


def test_activation_layer_argument_errors():
    with pytest.raises(nn.LayerArgumentError, match=r"nn.LeakyReLU takes 1 positional argument "
                                                    r"\(negative_slope\), got 2"):
        nn.LeakyReLU(0.1, 0.2)
    with pytest.raises(nn.LayerArgumentError, match=r"nn.Softplus takes 2 positional"):
        nn.Softplus(1.0, 20.0, "sp")
    with pytest.raises(TypeError, match="unexpected keyword argument 'slope'"):
        nn.LeakyReLU(slope=0.1)
    with pytest.raises(nn.LayerArgumentError, match=r"approximate must be one of \['none', "
                                                    r"'tanh'\], got 'fast'"):
        nn.GELU("fast")
    with pytest.raises(nn.LayerArgumentError, match="give axis or dim"):
        nn.Softmax(0, dim=1)
    with pytest.raises(nn.LayerArgumentError, match="axis must be an int"):
        nn.LogSoftmax(1.5)
    with pytest.raises(nn.LayerArgumentError, match=r"temperature must be in \(0, inf\)"):
        nn.Softmax(temperature=0.0)
    with pytest.raises(nn.LayerArgumentError, match="at_zero must be a number"):
        nn.Step(True)
    with pytest.raises(nn.LayerArgumentError, match="min_val must be below max_val, got "
                                                    "min_val=1, max_val=1"):
        nn.Hardtanh(1, 1)
    assert nn.Softmax(dim=0).kwargs == {"axis": 0, "temperature": 1.0}
    assert nn.Swish is nn.SiLU and nn.SiLU().prefix() == "silu"


@pytest.mark.parametrize("make", [
    lambda: nn.Dense(3, name=0.2),
    lambda: nn.Conv2d(3, 3, name=1),
    lambda: nn.Dropout(0.5, name=True),
    lambda: nn.BatchNorm2d(name=0.1),
    lambda: nn.LSTM(4, name=2),
    lambda: nn.Sequential([nn.ReLU()], name=3),
    lambda: nn.Identity(0.2),
    lambda: nn.Concatenate(1, 2),
    lambda: nn.Subsampling2d(2, name=6),
    lambda: nn.Embedding.from_pretrained(np.eye(3), name=1),
])
def test_non_str_name_is_rejected_everywhere(make):
    with pytest.raises(nn.LayerArgumentError, match="name must be a str or None"):
        make()


def test_the_error_is_a_gpudl_error_and_both_type_and_value_error():
    with pytest.raises(GpudlError):
        nn.Dense(3, name=1)
    assert issubclass(nn.LayerArgumentError, TypeError)
    assert issubclass(nn.LayerArgumentError, ValueError)


# ------------------------------------------------------------ 2. torch-order positionals
def test_linear_torch_order_is_refused_with_the_fix():
    with pytest.raises(nn.LayerArgumentError, match=r"for torch's Linear\(in_features, "
                                                    r"out_features\) = Linear\(4, 10\) write "
                                                    r"nn.Linear\(10\)"):
        nn.Linear(4, 10)
    with pytest.raises(nn.LayerArgumentError, match="bias must be True or False, got 10"):
        nn.Linear(4, bias=10)
    with pytest.raises(nn.LayerArgumentError, match="features must be an int >= 1"):
        nn.Dense(0)
    with pytest.raises(nn.LayerArgumentError, match="features must be an int"):
        nn.Dense(4.0)
    assert nn.Dense(np.int64(4)).features == 4
    assert str(inspect.signature(nn.Dense)).startswith("(features: 'int', *, bias")


def test_batchnorm_num_features_is_checked_and_momentum_is_keyword_only():
    x = R.standard_normal((8, 4))
    layer = nn.BatchNorm1d(4)  # torch's spelling now means what torch means
    p, s = layer.init(KEY, x)
    _, s2 = layer.apply(p, s, x, train=True)
    np.testing.assert_allclose(s2["running_var"], 0.9 + 0.1 * x.var(axis=0, ddof=1))
    assert (s2["running_var"] > 0).all()
    with pytest.raises(gd.ShapeError, match="num_features=4 but the input has 3 channels"):
        nn.BatchNorm1d(4).init(KEY, np.zeros((2, 3)))
    with pytest.raises(nn.LayerArgumentError, match=r"momentum must be in \[0, 1\], got 4"):
        nn.BatchNorm1d(momentum=4)
    assert nn.BatchNorm2d(momentum=None).momentum is None  # torch's cumulative average
    with pytest.raises(nn.LayerArgumentError, match=r"eps=\.\.\., momentum=\.\.\."):
        nn.BatchNorm2d(64, 1e-5, 0.1)  # torch's positional (num_features, eps, momentum)
    with pytest.raises(nn.LayerArgumentError, match="num_features must be an int"):
        nn.BatchNorm1d(0.9)  # a Keras-style momentum in the first slot
    with pytest.raises(nn.LayerArgumentError, match=r"eps must be in \(0, inf\)"):
        nn.BatchNorm2d(eps=0.0)
    with pytest.raises(nn.LayerArgumentError, match="affine must be True or False"):
        nn.BatchNorm2d(affine=1)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_torch_order_is_refused(cls):
    name = cls.__name__
    with pytest.raises(nn.LayerArgumentError,
                       match=rf"torch's {name}\(input_size, hidden_size\) = {name}\(4, 6\) "
                             rf"write nn.{name}\(6\)"):
        cls(4, 6)
    with pytest.raises(nn.LayerArgumentError, match="num_layers must be an int >= 1, got 0"):
        cls(4, num_layers=0)
    with pytest.raises(nn.LayerArgumentError, match="num_layers must be an int >= 1, got 2.0"):
        cls(4, num_layers=2.0)
    with pytest.raises(nn.LayerArgumentError, match="batch_first must be True or False"):
        cls(4, batch_first=1)
    with pytest.raises(nn.LayerArgumentError, match=r"dropout must be in \[0, 1\)"):
        cls(4, dropout=1.5)


def test_transformer_layers_torch_order_is_refused():
    x = np.zeros((2, 3, 16))
    with pytest.raises(nn.LayerArgumentError, match=r"looks like torch's TransformerEncoderLayer"
                                                    r"\(d_model, nhead"):
        nn.TransformerEncoderLayer(16, 4).init(KEY, x)
    with pytest.raises(nn.LayerArgumentError, match="num_heads=16 equals the embedding size"):
        nn.TransformerDecoderLayer(16, 4).init(KEY, {"x": x})
    with pytest.raises(nn.LayerArgumentError, match=r"\(num_heads, ff_dim, \*"):
        nn.TransformerEncoderLayer(4, 64, 0.1)  # torch's positional dropout
    with pytest.raises(nn.LayerArgumentError, match="unknown activation|'relu' or 'gelu'"):
        nn.TransformerEncoderLayer(4, 64, activation=0)
    # The documented order still works: (num_heads, ff_dim).
    p, s = nn.TransformerEncoderLayer(4, 32).init(KEY, x)
    assert p["linear1"]["weight"].shape == (32, 16)
    assert p["self_attn"]["in_proj_weight"].shape == (48, 16)


def test_multi_head_attention_and_conv_torch_order_are_refused():
    with pytest.raises(nn.LayerArgumentError, match=r"torch's MultiheadAttention\(embed_dim, "
                                                    r"num_heads\) = MultiheadAttention\(16, 4\) "
                                                    r"write nn.MultiHeadAttention\(4\)"):
        nn.MultiHeadAttention(16, 4)
    with pytest.raises(nn.LayerArgumentError, match=r"torch's Conv2d\(1, 6, 5\) write "
                                                    r"nn.Conv2d\(6, 5\)"):
        nn.Conv2d(1, 6, 5)
    with pytest.raises(nn.LayerArgumentError, match="ConvTranspose2d"):
        nn.ConvTranspose2d(8, 4, 4, 2)
    with pytest.raises(nn.LayerArgumentError, match="bias must be True or False"):
        nn.Conv2d(6, 5, bias=3)
    assert nn.Conv2d(6, 5, stride=2, padding="same").stride == 2


def test_embedding_takes_torch_padding_idx_position():
    emb = nn.Embedding(10, 4, 0)  # torch: Embedding(num_embeddings, embedding_dim, padding_idx)
    p, _ = emb.init(KEY, np.array([[0, 1]]))
    np.testing.assert_array_equal(p["weight"][0], 0.0)
    assert nn.Embedding(10, 4, -1).padding_idx == 9  # torch normalises a negative index
    with pytest.raises(nn.LayerArgumentError, match="padding_idx must be in"):
        nn.Embedding(10, 4, 10)
    with pytest.raises(nn.LayerArgumentError, match="takes 3 positional arguments"):
        nn.Embedding(10, 4, None, "normal")


def test_other_layers_validate_their_arguments():
    with pytest.raises(nn.LayerArgumentError, match=r"rate must be in \[0, 1\)"):
        nn.Dropout(1.0)
    with pytest.raises(nn.LayerArgumentError, match="takes 1 positional"):
        nn.Dropout(0.5, True)  # torch's (p, inplace)
    with pytest.raises(nn.LayerArgumentError, match="kernel_size must be an int >= 1"):
        nn.MaxPool2d(0)
    with pytest.raises(nn.LayerArgumentError, match="normalized_shape must be an int"):
        nn.LayerNorm(0.5)
    with pytest.raises(nn.LayerArgumentError, match="torch's nn.Sequential"):
        nn.Sequential(nn.Dense(2), nn.ReLU())
    with pytest.raises(nn.LayerArgumentError, match="a list of layers"):
        nn.Sequential(nn.Dense(2))


# ------------------------------------------------------------------- 3. initializers
def test_normal_initializer_takes_mean_and_std_by_keyword():
    w = inits.normal(mean=2.0, std=0.5)(KEY, (200, 200), dtype=np.float64, device="cpu")
    assert abs(w.mean() - 2.0) < 0.01 and abs(w.std() - 0.5) < 0.01
    with pytest.raises(nn.LayerArgumentError, match=r"normal\(mean=0.0, std=0.02\)"):
        inits.normal(0.0, 0.02)  # torch's order would have given a constant before
    with pytest.raises(nn.LayerArgumentError, match=r"std must be in \(0, inf\), got 0"):
        inits.normal(std=0.0)
    with pytest.raises(nn.LayerArgumentError, match="std must be in"):
        inits.normal(mean=0.0, std=-1.0)
    with pytest.raises(nn.LayerArgumentError, match="low must be below high"):
        inits.uniform(1.0, -1.0)
    # Name lookup still gives the standard normal.
    w = inits.get("normal", None)(KEY, (100, 100), dtype=np.float64, device="cpu")
    assert abs(w.std() - 1.0) < 0.03


# ------------------------------------------------------------- 4. ignored nonlinearity
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_gated_layers_refuse_nonlinearity(cls):
    with pytest.raises(nn.LayerArgumentError, match=r"nonlinearity='relu'.*would be ignored"):
        cls(4, nonlinearity="relu")
    with pytest.raises(nn.LayerArgumentError, match="nonlinearity"):
        cls(4, nonlinearity="tanh")


def test_rnn_nonlinearity_is_used():
    x = R.standard_normal((3, 2, 4))
    relu = nn.RNN(5, nonlinearity="relu")
    p, s = relu.init(KEY, x)
    y = relu.apply(p, s, x)[0]
    h = np.zeros((2, 5))
    for t in range(3):  # naive Elman reference
        h = np.maximum(x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"]
                       + h @ p["weight_hh_l0"].T + p["bias_hh_l0"], 0.0)
        np.testing.assert_allclose(y[t], h, rtol=1e-12)
    assert nn.RNN(5).nonlinearity == "tanh"
    with pytest.raises(nn.LayerArgumentError, match="nonlinearity must be one of"):
        nn.RNN(5, nonlinearity="sigmoid")


# ------------------------------------------------------------- 5. torch's spellings
def test_dropout_takes_torch_p():
    assert nn.Dropout(p=0.2).rate == 0.2 and nn.Dropout(0.3).rate == 0.3
    assert nn.Dropout().rate == nn.Dropout(rate=0.5).rate == 0.5
    x = np.ones((50, 40))
    a = nn.Dropout(p=0.25).apply({}, {}, x, train=True, key=KEY)[0]
    np.testing.assert_array_equal(a, nn.Dropout(0.25).apply({}, {}, x, train=True, key=KEY)[0])
    with pytest.raises(nn.LayerArgumentError, match=r"both rate=0.2 and p=0.3.*give one"):
        nn.Dropout(0.2, p=0.3)
    with pytest.raises(nn.LayerArgumentError, match=r"nn.Dropout: p must be in \[0, 1\)"):
        nn.Dropout(p=1.0)


# ------------------------------------------------------------- 6. int seeds for keys
def _leaves_equal(a, b):
    la, lb = gd.tree.tree_leaves(a), gd.tree.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(u, v) for u, v in zip(la, lb, strict=True))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential([nn.Dense(4), nn.Dropout(0.5), nn.Dense(2)]),
    lambda: nn.Dense(3),
    lambda: nn.Residual(nn.Sequential([nn.Dense(5), nn.Dropout(0.5)]), projection=nn.Dense(5)),
    lambda: nn.TransformerEncoderLayer(num_heads=1, ff_dim=8, dropout=0.5),
])
def test_an_int_seed_is_the_key_of_that_seed(make):
    layer = make()
    x = R.standard_normal((3, 2, 5)) if isinstance(layer, nn.TransformerEncoderLayer) \
        else R.standard_normal((3, 5))
    params, state = layer.init(7, x)
    assert _leaves_equal((params, state), layer.init(gd.random.key(7), x))
    y = layer.apply(params, state, x, train=True, key=np.uint64(3))[0]
    np.testing.assert_array_equal(y, layer.apply(params, state, x, train=True,
                                                 key=gd.random.key(3))[0])


def test_int_seeds_in_graph_models_user_layers_and_initializers():
    inp = nn.Input((4,))
    model = nn.Model(inp, nn.Dense(2)(nn.Dropout(0.5)(inp)))
    assert _leaves_equal(model.init(1), model.init(gd.random.key(1)))

    class Noisy(nn.Layer):  # a user's layer: its init and apply see real keys
        def init(self, key, x):
            return {"w": gd.random.normal(key, x.shape[1:], dtype=np.float64, device="cpu")}, {}

        def apply(self, params, state, x, *, train=False, key=None):
            return x + params["w"] + gd.random.normal(key, x.shape, dtype=np.float64,
                                                      device="cpu"), state

    p, s = Noisy().init(2, np.zeros((1, 3)))
    assert _leaves_equal(p, Noisy().init(gd.random.key(2), np.zeros((1, 3)))[0])
    np.testing.assert_array_equal(Noisy().apply(p, s, np.zeros((1, 3)), key=5)[0],
                                  Noisy().apply(p, s, np.zeros((1, 3)), key=gd.random.key(5))[0])
    for init in (inits.he_normal(), inits.uniform(), inits.orthogonal()):
        np.testing.assert_array_equal(init(4, (3, 3), device="cpu"),
                                      init(gd.random.key(4), (3, 3), device="cpu"))


def test_bad_seeds_raise_what_random_key_raises():
    from gpudl.errors import ArgumentTypeError, ConfigError
    net = nn.Sequential([nn.Dense(2)])
    with pytest.raises(ArgumentTypeError, match=r"nn.Sequential.init: key must be a key .* or "
                                                r"an int seed, got float 0.5"):
        net.init(0.5, np.ones((1, 2)))
    with pytest.raises(ArgumentTypeError, match="got bool True"):
        net.init(True, np.ones((1, 2)))
    with pytest.raises(ConfigError, match=r"nn.Sequential.apply: an int seed must be in "
                                          r"\[0, 2\*\*64\)"):
        net.apply(*net.init(0, np.ones((1, 2))), np.ones((1, 2)), key=-1)
