"""Basic layers: Dense, Flatten, Reshape, Identity, Lambda, and activations as layers.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> p, s = nn.Dense(3).init(gd.random.key(0), gd.ops.zeros((2, 5)))
    >>> p["weight"].shape, p["bias"].shape
    ((3, 5), (3,))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ShapeError
from gpudl.functional.linear import linear
from gpudl.nn import initializers as inits
from gpudl.nn.base import Layer, array_device, float_dtype, require_params

_device = array_device


class Dense(Layer):
    """Fully connected layer ``y = x @ W.T + b`` with torch's (out, in) weight layout.

    Defaults as torch.nn.Linear: weight and bias uniform(-1/sqrt(in), 1/sqrt(in)).
    Works on any leading dims: (..., in) -> (..., out).
    """

    base_name = "dense"

    def __init__(self, features: int, bias: bool = True, weight_init=None, bias_init=None,
                 name: str | None = None):
        super().__init__(name)
        if int(features) < 1:
            raise ValueError(f"nn.Dense: features must be >= 1, got {features}")
        self.features, self.use_bias = int(features), bias
        self.weight_init, self.bias_init = weight_init, bias_init

    def init(self, key, x):
        if x.ndim < 1:
            raise ShapeError(f"nn.Dense: input must have at least 1 dim, got shape {x.shape}")
        n_in = x.shape[-1]
        kw, kb = gdr.split(key)
        dtype, dev = float_dtype(x), _device(x)
        w = inits.get(self.weight_init, inits.torch_default())(
            kw, (self.features, n_in), dtype=dtype, device=dev)
        params = {"weight": w}
        if self.use_bias:
            params["bias"] = inits.get(self.bias_init, inits.torch_bias(n_in))(
                kb, (self.features,), dtype=dtype, device=dev)
        return params, {}

    def apply(self, params, state, x, *, train=False, key=None):
        require_params(params, ["weight", "bias"] if self.use_bias else ["weight"], self)
        w = params["weight"]
        if x.shape[-1] != w.shape[1]:
            raise ShapeError(
                f"nn.Dense{' ' + repr(self.name) if self.name else ''}: input has {x.shape[-1]} "
                f"features but the weight expects {w.shape[1]} (weight shape {w.shape})"
            )
        return linear(x, w, params.get("bias")), state

    def macs(self, x, y, params):
        return int(np.prod(y.shape)) * int(x.shape[-1])


Linear = Dense


class Flatten(Layer):
    """Flatten all dims after the batch dim: (N, ...) -> (N, prod(...))."""

    def __init__(self, start_axis: int = 1, name: str | None = None):
        super().__init__(name)
        self.start_axis = start_axis

    def apply(self, params, state, x, *, train=False, key=None):
        return ops.flatten(x, self.start_axis), state


class Reshape(Layer):
    """Reshape every example: (N, ...) -> (N, *shape)."""

    def __init__(self, shape, name: str | None = None):
        super().__init__(name)
        self.shape = tuple(shape)

    def apply(self, params, state, x, *, train=False, key=None):
        return ops.reshape(x, (x.shape[0], *self.shape)), state


class Identity(Layer):
    def apply(self, params, state, x, *, train=False, key=None):
        return x, state


class Lambda(Layer):
    """Wrap a function of the input (no parameters): ``nn.Lambda(lambda x: x * 2)``."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None):
        super().__init__(name)
        self.fn = fn

    def prefix(self) -> str:
        return "lambda"

    def apply(self, params, state, x, *, train=False, key=None):
        return self.fn(x), state


# ------------------------------------------------------------------------ activations
class Activation(Layer):
    """An activation by name (``nn.Activation("relu")``); kwargs go to the function."""

    def __init__(self, activation: str | Callable, name: str | None = None, **kwargs):
        super().__init__(name)
        from gpudl.functional.activations import get_activation

        self.fn = get_activation(activation) if isinstance(activation, str) else activation
        self.kwargs = kwargs
        self._prefix = activation if isinstance(activation, str) else "activation"

    def prefix(self) -> str:
        return self._prefix

    def apply(self, params, state, x, *, train=False, key=None):
        return self.fn(x, **self.kwargs), state


def _activation_layer(class_name: str, fn_name: str, doc: str):
    def __init__(self, name: str | None = None, **kwargs):
        Activation.__init__(self, fn_name, name=name, **kwargs)

    return type(class_name, (Activation,), {"__init__": __init__, "__doc__": doc})


ReLU = _activation_layer("ReLU", "relu", "max(x, 0); derivative 0 at 0.")
Sigmoid = _activation_layer("Sigmoid", "sigmoid", "1 / (1 + exp(-x)).")
Tanh = _activation_layer("Tanh", "tanh", "Hyperbolic tangent.")
LeakyReLU = _activation_layer("LeakyReLU", "leaky_relu", "x if x > 0 else slope * x.")
ELU = _activation_layer("ELU", "elu", "x if x > 0 else alpha * (exp(x) - 1).")
SELU = _activation_layer("SELU", "selu", "Scaled ELU with torch's constants.")
GELU = _activation_layer("GELU", "gelu", "x * Phi(x) (approximate='tanh' optional).")
SiLU = _activation_layer("SiLU", "silu", "x * sigmoid(x) (Swish).")
Swish = SiLU
Softplus = _activation_layer("Softplus", "softplus", "log(1 + exp(beta x)) / beta, stable.")
Hardtanh = _activation_layer("Hardtanh", "hardtanh", "clip(x, min_val, max_val).")
Softmax = _activation_layer("Softmax", "softmax", "Softmax over `axis` (default -1).")
LogSoftmax = _activation_layer("LogSoftmax", "log_softmax", "Log-softmax over `axis`.")
Step = _activation_layer("Step", "step", "Heaviside step (forward only, no gradient).")


class PReLU(Layer):
    """Leaky ReLU with a learned slope, initialised to 0.25, as torch.nn.PReLU.

    ``num_parameters=1`` (torch's default) learns one shared slope; ``num_parameters=C``
    learns one per channel (axis 1); ``num_parameters=None`` infers C from the input.
    """

    def __init__(self, num_parameters: int | None = 1, init: float = 0.25,
                 name: str | None = None):
        super().__init__(name)
        self.num_parameters, self.init_value = num_parameters, init

    def init(self, key, x):
        n = self.num_parameters or (x.shape[1] if x.ndim > 1 else 1)
        return {"weight": ops.full((n,), self.init_value, dtype=float_dtype(x),
                                   device=_device(x))}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        from gpudl.functional.activations import prelu

        require_params(params, ["weight"], self)
        return prelu(x, params["weight"]), state


class Maxout(Layer):
    """Max over ``num_pieces`` groups of features (Goodfellow et al.); no parameters of its own."""

    def __init__(self, num_pieces: int, axis: int = -1, name: str | None = None):
        super().__init__(name)
        self.num_pieces, self.axis = num_pieces, axis

    def apply(self, params, state, x, *, train=False, key=None):
        from gpudl.functional.activations import maxout

        return maxout(x, self.num_pieces, axis=self.axis), state
