"""Basic layers: Dense, Flatten, Reshape, Identity, Lambda, and activations as layers.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> p, s = nn.Dense(3).init(gd.random.key(0), gd.ops.zeros((2, 5)))
    >>> p["weight"].shape, p["bias"].shape
    ((3, 5), (3,))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ShapeError
from gpudl.functional.linear import linear
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    layer_label,
    positional_limit,
)
from gpudl.nn.base import Layer, array_device, float_dtype, require_params

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

    @positional_limit(1)
    def __init__(self, start_axis: int = 1, *, name: str | None = None):
        super().__init__(name)
        self.start_axis = check_int(self, "start_axis", start_axis, minimum=None)

    def apply(self, params, state, x, *, train=False, key=None):
        return ops.flatten(x, self.start_axis), state


class Reshape(Layer):
    """Reshape every example: (N, ...) -> (N, *shape)."""

    @positional_limit(1)
    def __init__(self, shape, *, name: str | None = None):
        super().__init__(name)
        self.shape = tuple(shape)

    def apply(self, params, state, x, *, train=False, key=None):
        return ops.reshape(x, (x.shape[0], *self.shape)), state


class Identity(Layer):
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


# ------------------------------------------------------------------------ activations
class Activation(Layer):
    """An activation by name (``nn.Activation("relu")``); keyword arguments go to the function.

    Example:
        >>> import numpy as np
        >>> act = Activation("leaky_relu", negative_slope=0.2)
        >>> act.apply({}, {}, np.array([-1.0, 2.0]))[0].tolist()
        [-0.2, 2.0]
    """

    @positional_limit(1, lambda label, args: (
        f"Hyper-parameters go by keyword ({label}('leaky_relu', negative_slope=0.2)) and so "
        "does the layer name (name='...'); or use the layer class, e.g. nn.LeakyReLU(0.2)."))
    def __init__(self, activation: str | Callable, *, name: str | None = None, **kwargs):
        super().__init__(name)
        from gpudl.functional.activations import get_activation

        if isinstance(activation, str):
            self.fn = get_activation(activation)
        elif callable(activation):
            self.fn = activation
        else:
            raise LayerArgumentError(
                f"{layer_label(self)}: activation must be a name such as 'relu' or a function, "
                f"got {activation!r} ({type(activation).__name__})")
        _check_kwargs(self, self.fn, kwargs)
        self.kwargs = kwargs
        self._prefix = activation if isinstance(activation, str) else "activation"

    def prefix(self) -> str:
        return self._prefix

    def apply(self, params, state, x, *, train=False, key=None):
        return self.fn(x, **self.kwargs), state


def _check_kwargs(layer: Layer, fn: Callable, kwargs: dict) -> None:
    """Unknown keyword arguments fail at construction, not at the first forward pass."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins/primitives without a signature: checked on call
        return
    try:
        sig.bind(None, **kwargs)
    except TypeError as e:
        raise LayerArgumentError(
            f"{layer_label(layer)}: the activation {getattr(fn, '__name__', fn)!r} does not take "
            f"{sorted(kwargs)} ({e}); its signature is {sig}") from None


def _no_hyper_parameters(label: str, args: tuple) -> str:
    return (f"{label} has no hyper-parameters; give the layer name by keyword: "
            f"{label}(name='...'). (torch's inplace flag has no meaning here: gpudl never "
            "modifies arrays in place.)")


class _Fixed(Activation):
    """An activation layer without hyper-parameters (``fn_name`` names the function)."""

    fn_name = ""

    @positional_limit(0, _no_hyper_parameters)
    def __init__(self, *, name: str | None = None):
        super().__init__(self.fn_name, name=name)


class ReLU(_Fixed):
    """max(x, 0); derivative 0 at 0."""

    fn_name = "relu"


class Sigmoid(_Fixed):
    """1 / (1 + exp(-x))."""

    fn_name = "sigmoid"


class Tanh(_Fixed):
    """Hyperbolic tangent."""

    fn_name = "tanh"


class SELU(_Fixed):
    """Scaled ELU with torch's constants."""

    fn_name = "selu"


class SiLU(_Fixed):
    """x * sigmoid(x) (Swish)."""

    fn_name = "silu"


Swish = SiLU


class LeakyReLU(Activation):
    """``x if x > 0 else negative_slope * x``; torch's order and default (0.01).

    Example:
        >>> import numpy as np
        >>> LeakyReLU(0.2).apply({}, {}, np.array([-1.0, 3.0]))[0].tolist()
        [-0.2, 3.0]
    """

    @positional_limit(1)
    def __init__(self, negative_slope: float = 0.01, *, name: str | None = None):
        slope = check_float(self, "negative_slope", negative_slope)
        super().__init__("leaky_relu", name=name, negative_slope=slope)


class ELU(Activation):
    """``x if x > 0 else alpha * (exp(x) - 1)`` (torch's ``ELU(alpha=1.0)``)."""

    @positional_limit(1)
    def __init__(self, alpha: float = 1.0, *, name: str | None = None):
        super().__init__("elu", name=name, alpha=check_float(self, "alpha", alpha))


class GELU(Activation):
    """``x * Phi(x)``; ``approximate="tanh"`` for the tanh approximation (as torch)."""

    @positional_limit(1)
    def __init__(self, approximate: str = "none", *, name: str | None = None):
        check_choice(self, "approximate", approximate, ("none", "tanh"))
        super().__init__("gelu", name=name, approximate=approximate)


class Softplus(Activation):
    """``log(1 + exp(beta x)) / beta``, linear above ``threshold`` (torch's order)."""

    @positional_limit(2)
    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *, name: str | None = None):
        beta = check_float(self, "beta", beta, low=0.0, low_open=True)
        threshold = check_float(self, "threshold", threshold)
        super().__init__("softplus", name=name, beta=beta, threshold=threshold)


class Hardtanh(Activation):
    """``clip(x, min_val, max_val)`` (torch's order and defaults -1, 1)."""

    @positional_limit(2)
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, *,
                 name: str | None = None):
        lo, hi = check_float(self, "min_val", min_val), check_float(self, "max_val", max_val)
        if lo >= hi:
            raise LayerArgumentError(
                f"{layer_label(self)}: min_val must be below max_val, got min_val={min_val}, "
                f"max_val={max_val}")
        super().__init__("hardtanh", name=name, min_val=lo, max_val=hi)


class Step(Activation):
    """Heaviside step (forward only, no gradient); ``at_zero`` is its value at 0."""

    @positional_limit(1)
    def __init__(self, at_zero: float = 1.0, *, name: str | None = None):
        super().__init__("step", name=name, at_zero=check_float(self, "at_zero", at_zero))


class _AxisActivation(Activation):
    fn_name = ""

    @positional_limit(1)
    def __init__(self, axis: int = -1, *, temperature: float = 1.0, dim: int | None = None,
                 name: str | None = None):
        if dim is not None:  # torch's name for the axis
            if axis != -1:
                raise LayerArgumentError(
                    f"{layer_label(self)}: give axis or dim (torch's name), not both; got "
                    f"axis={axis}, dim={dim}")
            axis = dim
        axis = check_int(self, "axis", axis, minimum=None)
        temperature = check_float(self, "temperature", temperature, low=0.0, low_open=True)
        super().__init__(self.fn_name, name=name, axis=axis, temperature=temperature)


class Softmax(_AxisActivation):
    """Softmax over ``axis`` (default -1; torch's ``dim=`` works too), optional temperature.

    Example:
        >>> import numpy as np
        >>> Softmax(0).apply({}, {}, np.zeros((2, 1)))[0].tolist()
        [[0.5], [0.5]]
    """

    fn_name = "softmax"


class LogSoftmax(_AxisActivation):
    """Log-softmax over ``axis`` (default -1; torch's ``dim=`` works too)."""

    fn_name = "log_softmax"


class PReLU(Layer):
    """Leaky ReLU with a learned slope, initialised to 0.25, as torch.nn.PReLU.

    ``num_parameters=1`` (torch's default) learns one shared slope; ``num_parameters=C``
    learns one per channel (axis 1); ``num_parameters=None`` infers C from the input.
    """

    @positional_limit(2)
    def __init__(self, num_parameters: int | None = 1, init: float = 0.25, *,
                 name: str | None = None):
        super().__init__(name)
        if num_parameters is not None:
            num_parameters = check_int(self, "num_parameters", num_parameters)
        self.num_parameters = num_parameters
        self.init_value = check_float(self, "init", init)

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

    @positional_limit(2)
    def __init__(self, num_pieces: int, axis: int = -1, *, name: str | None = None):
        super().__init__(name)
        self.num_pieces = check_int(self, "num_pieces", num_pieces)
        self.axis = check_int(self, "axis", axis, minimum=None)

    def apply(self, params, state, x, *, train=False, key=None):
        from gpudl.functional.activations import maxout

        return maxout(x, self.num_pieces, axis=self.axis), state
