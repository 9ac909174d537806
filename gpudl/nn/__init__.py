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

from gpudl.nn import initializers
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
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    LPPool2d,
    MaxPool2d,
)
from gpudl.nn.core import (
    ELU,
    GELU,
    SELU,
    Activation,
    Dense,
    Flatten,
    Hardtanh,
    Identity,
    Lambda,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Maxout,
    PReLU,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Step,
    Swish,
    Tanh,
)
from gpudl.nn.graph import Add, Concatenate, Input, Model, Multiply
from gpudl.nn.normalization import BatchNorm1d, BatchNorm2d, Dropout, Embedding, LayerNorm
from gpudl.nn.recurrent import GRU, LSTM, RNN
from gpudl.nn.subsampling import Subsampling2d

__all__ = [n for n in dir() if not n.startswith("_")]
