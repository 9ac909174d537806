"""Basic layers: Dense, Flatten, Reshape, Identity, Lambda.

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
from gpudl.functional.linear import linear, linear_relu
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_int,
    positional_limit,
)
from gpudl.nn.base import Layer, array_device, check_params, float_dtype, ignores_key

_device = array_device


def _linear_hint(label: str, args: tuple) -> str:
    out = args[1] if len(args) > 1 else "out_features"
    return (f"{label} (nn.Linear) takes (features, *, bias=True, ...) and infers in_features "
            f"from the input; for torch's Linear(in_features, out_features) = "
            f"Linear{tuple(args[:2])!r} write nn.Linear({out}).")


class Dense(Layer):
    """Fully connected layer ``y = x @ W.T + b`` with torch's (out, in) weight layout.

    Defaults as torch.nn.Linear: weight and bias uniform(-1/sqrt(in), 1/sqrt(in)).
    Works on any leading dims: (..., in) -> (..., out). The input size is inferred, so
    the only positional argument is the output size: torch's ``Linear(784, 10)`` is
    ``nn.Linear(10)``; the rest is keyword-only (``nn.Linear(10, bias=False)``).

    Example:
        >>> import gpudl as gd
        >>> p, _ = Dense(10, bias=False).init(gd.random.key(0), gd.ops.zeros((2, 784)))
        >>> p["weight"].shape, sorted(p)
        ((10, 784), ['weight'])
    """

    base_name = "dense"

    @positional_limit(1, _linear_hint)
    def __init__(self, features: int, *, bias: bool = True, weight_init=None, bias_init=None,
                 name: str | None = None):
        super().__init__(name)
        self.features = check_int(self, "features", features)
        self.use_bias = check_bool(self, "bias", bias, hint=(
            "For torch's Linear(in_features, out_features) write nn.Linear(out_features): "
            "in_features is inferred from the input."))
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

    def param_shapes(self, x) -> dict:
        """The params' shapes for input ``x`` (..., in): weight (out, in), bias (out,)."""
        shapes = {"weight": (self.features, x.shape[-1])}
        if self.use_bias:
            shapes["bias"] = (self.features,)
        return shapes

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        return self._product(params, x, linear), state

    def apply_then_relu(self, params, state, x):
        """``apply`` followed by ReLU as one op (``linear_relu``): ``nn.Sequential`` runs a
        Dense and the ReLU after it this way (one tape node, the ReLU in place)."""
        return self._product(params, x, linear_relu), state

    def fuses_relu(self) -> bool:
        """Whether :meth:`apply_then_relu` may stand for ``apply`` + ReLU: a plain Dense
        with a bias (a subclass may change ``apply``)."""
        return type(self) is Dense and self.use_bias

    def _product(self, params, x, product):
        w = params.get("weight") if isinstance(params, dict) else None
        w_shape = getattr(w, "shape", ())
        if len(w_shape) == 2 and w_shape[0] == self.features and x.shape[-1] != w_shape[1]:
            raise ShapeError(
                f"nn.Dense{' ' + repr(self.name) if self.name else ''}: input has {x.shape[-1]} "
                f"features but the weight expects {w_shape[1]} (weight shape {w_shape})"
            )
        check_params(params, self.param_shapes(x), self, x)
        return product(x, w, params.get("bias"))

    def macs(self, x, y, params):
        return int(np.prod(y.shape)) * int(x.shape[-1])


Linear = Dense


class Flatten(Layer):
    """Flatten all dims after the batch dim: (N, ...) -> (N, prod(...))."""

    @positional_limit(1)
    def __init__(self, start_axis: int = 1, *, name: str | None = None):
        super().__init__(name)
        self.start_axis = check_int(self, "start_axis", start_axis, minimum=None)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        return ops.flatten(x, self.start_axis), state


class Reshape(Layer):
    """Reshape every example: (N, ...) -> (N, *shape)."""

    @positional_limit(1)
    def __init__(self, shape, *, name: str | None = None):
        super().__init__(name)
        self.shape = tuple(shape)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        return ops.reshape(x, (x.shape[0], *self.shape)), state


class Identity(Layer):
    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        return x, state


class Lambda(Layer):
    """Wrap a function of the input (no parameters): ``nn.Lambda(lambda x: x * 2)``."""

    @positional_limit(1)
    def __init__(self, fn: Callable[[Any], Any], *, name: str | None = None):
        super().__init__(name)
        if not callable(fn):
            raise LayerArgumentError(f"nn.Lambda: fn must be callable, got {fn!r}")
        self.fn = fn

    def prefix(self) -> str:
        return "lambda"

    def apply(self, params, state, x, *, train=False, key=None):
        return self.fn(x), state
