"""Layers as init/apply pairs, combinators, Keras-style graphs, initializers, summary.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dense(3)])
    >>> params, state = net.init(gd.random.key(0), gd.ops.zeros((1, 4)))
    >>> y, state = net.apply(params, state, gd.ops.ones((5, 4)))
    >>> y.shape
    (5, 3)
"""

from gpudl.nn import activations as _activations
from gpudl.nn import initializers
from gpudl.nn.activations import Activation, Maxout, PReLU
from gpudl.nn.arguments import LayerArgumentError
from gpudl.nn.attention import (
    MultiHeadAttention,
    PositionalEncoding,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)
from gpudl.nn.base import Layer, Sequential, count_params
from gpudl.nn.cells import GRUCell, LSTMCell, RNNCell
from gpudl.nn.combinators import Concat, Parallel, Residual
from gpudl.nn.conv import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    GlobalAvgPool1d,
    GlobalAvgPool2d,
    GlobalMaxPool1d,
    GlobalMaxPool2d,
    LPPool2d,
    MaxPool1d,
    MaxPool2d,
)
from gpudl.nn.core import Dense, Flatten, Identity, Lambda, Linear, Reshape
from gpudl.nn.gnn import GATConv, GCNConv
from gpudl.nn.graph import Add, Concatenate, Input, Model, Multiply
from gpudl.nn.normalization import BatchNorm1d, BatchNorm2d, Dropout, Embedding, LayerNorm
from gpudl.nn.recurrent import GRU, LSTM, RNN
from gpudl.nn.shapes import ShapeDtype
from gpudl.nn.subsampling import Subsampling2d

# One class per registered activation (nn.ReLU, nn.LeakyReLU, nn.Softmax, ...), built from
# the registration in gpudl/functional/activations.py.
globals().update(_activations.layer_classes())


def __getattr__(name: str):
    """Layer classes of activations registered after this import (user code, tests)."""
    classes = _activations.layer_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # layers
    "Dense", "Linear", "Flatten", "Reshape", "Identity", "Lambda",
    "Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "LPPool2d",
    "GlobalAvgPool2d", "GlobalMaxPool2d", "Subsampling2d",
    "MaxPool1d", "AvgPool1d", "GlobalAvgPool1d", "GlobalMaxPool1d",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Dropout", "Embedding",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "MultiHeadAttention", "PositionalEncoding", "TransformerEncoderLayer",
    "TransformerDecoderLayer", "GCNConv", "GATConv",
    # activations: the by-name layer, PReLU (a parameter), then one per registration
    "Activation", "PReLU", *sorted(_activations.layer_classes()),
    # containers and graphs
    "Layer", "Sequential", "Residual", "Parallel", "Concat",
    "Input", "Model", "Add", "Concatenate", "Multiply",
    # helpers
    "count_params", "initializers", "LayerArgumentError", "ShapeDtype",
]
