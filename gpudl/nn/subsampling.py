"""LeNet-5's trainable subsampling (LeCun et al., 1998), as a composite layer.

Each S-layer unit of LeNet-5 (S2, S4) adds the four inputs of its 2x2 window, multiplies
the sum by a trainable coefficient, adds a trainable bias and passes the result through
the squashing function ``f(a) = 1.7159 tanh(2a/3)``; coefficient and bias are shared by all
units of a feature map (LeCun et al. 1998, Sec. II-B). Here the window *mean* is used
(average pooling), which only rescales the coefficient (sum = k*k * mean):

    y[n, c] = f(weight[c] * avg_pool2d(x, k, s)[n, c] + bias[c])

so a channel has 2 parameters (S2 of LeNet-5: 6 maps -> 12). ``weight`` starts at 1 and
``bias`` at 0, so an untrained layer is average pooling followed by ``f``. The
composite is built from differentiable ops (average pooling, a broadcast multiply-add,
the activation), so it needs no backward code and runs on CPU and GPU alike.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn
    >>> sub = nn.Subsampling2d(2, activation=None)
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> p, s = sub.init(gd.random.key(0), x)
    >>> sorted((k, v.shape) for k, v in p.items())
    [('bias', (1,)), ('weight', (1,))]
    >>> sub.apply(p, s, x)[0][0, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_ints,
    layer_label,
    positional_limit,
)
from gpudl.nn.base import Layer, array_device, check_params, float_dtype

#: LeCun et al. (1998), Appendix A: f(a) = A tanh(S a) with A = 1.7159, S = 2/3, chosen so
#: that f(1) = 1 and f(-1) = -1.
LECUN_TANH_A, LECUN_TANH_S = 1.7159, 2.0 / 3.0


def lecun_tanh(x):
    """LeNet-5's squashing function ``1.7159 tanh(2x/3)`` (f(+-1) = +-1).

    Example:
        >>> import numpy as np
        >>> round(float(lecun_tanh(np.array(1.0))), 3)
        1.0
    """
    return LECUN_TANH_A * ops.tanh(LECUN_TANH_S * x)


def _activation(owner, activation) -> Callable | None:
    if activation is None:
        return None
    if isinstance(activation, str):
        if activation == "lecun_tanh":
            return lecun_tanh
        return F.get_activation(activation)
    if callable(activation):
        return activation
    raise LayerArgumentError(
        f"{layer_label(owner)}: activation must be 'lecun_tanh', another activation name "
        f"('sigmoid', 'tanh', ...), a function or None, got {activation!r}")


class Subsampling2d(Layer):
    """Trainable subsampling: ``f(weight[c] * avg_pool(x)[c] + bias[c])`` per channel.

    ``kernel_size``/``stride``/``padding`` as :class:`AvgPool2d` (stride defaults to the
    kernel size); ``activation`` is the squashing function: ``"lecun_tanh"`` (default, the
    paper's ``1.7159 tanh(2a/3)``), any name ``F.get_activation`` knows (``"sigmoid"``,
    ``"tanh"``), a function, or None for none. ``bias=False`` drops the bias. Parameters
    ``weight`` (C,) (init 1) and ``bias`` (C,) (init 0); (N, C, H, W) -> (N, C, Ho, Wo).

    Example:
        >>> import gpudl as gd
        >>> layer = Subsampling2d(2)
        >>> p, s = layer.init(gd.random.key(0), gd.ops.zeros((1, 6, 28, 28)))
        >>> gd.nn.count_params(p), layer.apply(p, s, gd.ops.zeros((3, 6, 28, 28)))[0].shape
        (12, (3, 6, 14, 14))
    """

    base_name = "subsample"

    @positional_limit(3)
    def __init__(self, kernel_size=2, stride=None, padding=0, *,
                 activation: str | Callable | None = "lecun_tanh", bias: bool = True,
                 weight_init=None, bias_init=None, name: str | None = None):
        super().__init__(name)
        self.kernel_size = check_ints(self, "kernel_size", kernel_size)
        self.stride = None if stride is None else check_ints(self, "stride", stride)
        self.padding = check_ints(self, "padding", padding, minimum=0)
        self.fn = _activation(self, activation)
        self.activation = activation
        self.use_bias = check_bool(self, "bias", bias)
        self.weight_init, self.bias_init = weight_init, bias_init

    def _check_input(self, x) -> None:
        if x.ndim != 4:
            raise ShapeError(
                f"{layer_label(self)}: expects a 4-D input (N, C, H, W), got shape "
                f"{tuple(x.shape)}. Add a batch/channel dim (x[None]) or reshape.")

    def _names(self) -> list[str]:
        return ["weight", "bias"] if self.use_bias else ["weight"]

    def init(self, key, x):
        self._check_input(x)
        c, dtype, dev = x.shape[1], float_dtype(x), array_device(x)
        kw, kb = gdr.split(key) if key is not None else (None, None)
        params = {"weight": inits.get(self.weight_init, inits.ones())(
            kw, (c,), dtype=dtype, device=dev)}
        if self.use_bias:
            params["bias"] = inits.get(self.bias_init, inits.zeros())(
                kb, (c,), dtype=dtype, device=dev)
        return params, {}

    def param_shapes(self, x) -> dict:
        """One weight (and bias) per input channel: (C,)."""
        return {name: (x.shape[1],) for name in self._names()}

    def apply(self, params, state, x, *, train=False, key=None):
        self._check_input(x)
        c = x.shape[1]
        check_params(params, self.param_shapes(x), self, x)
        pooled = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)  # (N, C, Ho, Wo)
        y = pooled * ops.reshape(params["weight"], (1, c, 1, 1))
        if self.use_bias:
            y = y + ops.reshape(params["bias"], (1, c, 1, 1))
        return (y if self.fn is None else self.fn(y)), state

    def macs(self, x, y, params):
        kernel = self.kernel_size
        window = int(np.prod(kernel)) if isinstance(kernel, (tuple, list)) else kernel * kernel
        return int(np.prod(y.shape)) * (window + 1)
