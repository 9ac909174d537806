"""Convolution and pooling layers (NCHW activations, OIHW weights, as PyTorch).

Constructor arguments follow PyTorch except that input channels are inferred:
``Conv2d(out_channels, kernel_size, *, stride=1, padding=0, dilation=1, groups=1, bias=True)``.
Arguments after the kernel size are keyword-only, so torch's ``Conv2d(1, 6, 5)`` (in, out,
kernel) fails with a message instead of building 1 output channel with stride 5.
Default init as torch: weight and bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> conv = nn.Conv2d(6, 5, padding=2)
    >>> p, _ = conv.init(gd.random.key(0), gd.ops.zeros((1, 1, 28, 28)))
    >>> p["weight"].shape
    (6, 1, 5, 5)
"""

from __future__ import annotations

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import (
    check_bool,
    check_float,
    check_int,
    check_ints,
    positional_limit,
)
from gpudl.nn.base import Layer, array_device, check_params, float_dtype, ignores_key


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _check_rank(layer: Layer, x, rank: int, layout: str) -> None:
    if x.ndim != rank:
        raise ShapeError(
            f"nn.{type(layer).__name__}: expects a {rank}-D input {layout}, got shape "
            f"{tuple(x.shape)}. Add a batch/channel dim (x[None]) or reshape."
        )


def _conv_hint(label: str, args: tuple) -> str:
    torch_name = label[3:]
    example = (f"; for torch's {torch_name}{tuple(args[:3])!r} write "
               f"{label}({args[1]!r}, {args[2]!r})" if len(args) >= 3 else "")
    return (f"{label} takes (out_channels, kernel_size, *, stride=1, padding=0, ...) and infers "
            f"in_channels from the input; torch's {torch_name}(in_channels, out_channels, "
            f"kernel_size, ...) order would shift every argument{example}.")


class _ConvBase(Layer):
    rank = 2
    transpose = False

    @positional_limit(2, _conv_hint)
    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, weight_init=None, bias_init=None,
                 name: str | None = None):
        super().__init__(name)
        self.out_channels = check_int(self, "out_channels", out_channels)
        self.kernel_size = check_ints(self, "kernel_size", kernel_size)
        self.stride = check_ints(self, "stride", stride)
        if not (isinstance(padding, str) or isinstance(padding, (tuple, list))):
            check_int(self, "padding", padding, minimum=0)
        self.padding = padding
        self.dilation = check_ints(self, "dilation", dilation)
        self.groups = check_int(self, "groups", groups)
        self.use_bias = check_bool(self, "bias", bias)
        self.weight_init, self.bias_init = weight_init, bias_init

    def _kernel(self) -> tuple[int, ...]:
        k = self.kernel_size
        return (k,) * self.rank if isinstance(k, int) else tuple(k)

    def _weight_shape(self, in_channels: int) -> tuple[int, ...]:
        if in_channels % self.groups or self.out_channels % self.groups:
            raise ShapeError(
                f"nn.{type(self).__name__}: groups={self.groups} must divide in_channels "
                f"({in_channels}) and out_channels ({self.out_channels})"
            )
        if self.transpose:
            return (in_channels, self.out_channels // self.groups, *self._kernel())
        return (self.out_channels, in_channels // self.groups, *self._kernel())

    def init(self, key, x):
        _check_rank(self, x, self.rank + 2, "(N, C, H, W)" if self.rank == 2 else "(N, C, L)")
        shape = self._weight_shape(x.shape[1])
        # torch takes fan_in from weight.shape[1] for both Conv (C_in/g) and ConvTranspose
        # (C_out/g), times the kernel size.
        fan_in = shape[1] * int(np.prod(shape[2:]))
        dtype, dev = float_dtype(x), array_device(x)
        kw, kb = gdr.split(key)
        params = {"weight": inits.get(self.weight_init, inits.torch_default())(
            kw, shape, dtype=dtype, device=dev)}
        if self.use_bias:
            params["bias"] = inits.get(self.bias_init, inits.torch_bias(fan_in))(
                kb, (self.out_channels,), dtype=dtype, device=dev)
        return params, {}

    def param_shapes(self, x) -> dict:
        """The params' shapes for input ``x`` (N, C, ...): weight as torch's, bias (out,)."""
        shapes = {"weight": self._weight_shape(x.shape[1])}
        if self.use_bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def _params(self, params, x):
        check_params(params, self.param_shapes(x), self, x)
        return params["weight"], params.get("bias")

    def macs(self, x, y, params):
        w = params["weight"]
        if self.transpose:  # every input element meets every (C_out/g, *kernel) weight
            return int(np.prod(x.shape)) * int(np.prod(w.shape[1:]))
        # every output element is a dot product over (C_in/g, *kernel)
        return int(np.prod(y.shape)) * int(np.prod(w.shape[1:]))


class Conv2d(_ConvBase):
    """2-D convolution; padding may be an int, a pair, ((top, bottom), (left, right)) or "same"."""

    base_name = "conv"

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        w, b = self._params(params, x)
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups), state


class Conv1d(_ConvBase):
    """1-D convolution over (N, C, L)."""

    base_name = "conv"
    rank = 1

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 3, "(N, C, L)")
        w, b = self._params(params, x)
        return F.conv1d(x, w, b, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups), state


class ConvTranspose2d(_ConvBase):
    """Transposed convolution; weight (C_in, C_out/groups, kH, kW) as torch."""

    base_name = "deconv"
    transpose = True

    @positional_limit(2, _conv_hint)
    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, output_padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, weight_init=None,
                 bias_init=None, name: str | None = None):
        super().__init__(out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, weight_init=weight_init,
                         bias_init=bias_init, name=name)
        self.output_padding = check_ints(self, "output_padding", output_padding, minimum=0)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        w, b = self._params(params, x)
        return F.conv_transpose2d(x, w, b, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding, dilation=self.dilation,
                                  groups=self.groups), state


# ------------------------------------------------------------------------ pooling
class MaxPool2d(Layer):
    """Max pooling; ``stride`` defaults to ``kernel_size``; overlapping (3, stride 2) allowed."""

    base_name = "maxpool"

    @positional_limit(3)
    def __init__(self, kernel_size, stride=None, padding=0, *, name: str | None = None):
        super().__init__(name)
        self.kernel_size = check_ints(self, "kernel_size", kernel_size)
        self.stride = None if stride is None else check_ints(self, "stride", stride)
        self.padding = check_ints(self, "padding", padding, minimum=0)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding), state


class AvgPool2d(MaxPool2d):
    """Average pooling (padding counted in the average, as torch's default)."""

    base_name = "avgpool"

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding), state


def _one_int(layer: Layer, arg: str, value, minimum: int = 1) -> int:
    """A 1-D size: an int or torch's 1-tuple spelling of one."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return check_int(layer, arg, value, minimum)


class MaxPool1d(Layer):
    """Max pooling over (N, C, L) (torch's ``MaxPool1d``); ``stride`` defaults to
    ``kernel_size``. Runs ``F.max_pool1d`` (the 2-D kernels on an (N, C, 1, L) view)."""

    base_name = "maxpool"

    @positional_limit(3)
    def __init__(self, kernel_size, stride=None, padding=0, *, name: str | None = None):
        super().__init__(name)
        self.kernel_size = _one_int(self, "kernel_size", kernel_size)
        self.stride = None if stride is None else _one_int(self, "stride", stride)
        self.padding = _one_int(self, "padding", padding, minimum=0)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 3, "(N, C, L)")
        return F.max_pool1d(x, self.kernel_size, self.stride, self.padding), state


class AvgPool1d(MaxPool1d):
    """Average pooling over (N, C, L) (torch's ``AvgPool1d``); padding counts in the average
    unless ``count_include_pad=False``."""

    base_name = "avgpool"

    @positional_limit(3)
    def __init__(self, kernel_size, stride=None, padding=0, *, count_include_pad: bool = True,
                 name: str | None = None):
        super().__init__(kernel_size, stride, padding, name=name)
        self.count_include_pad = check_bool(self, "count_include_pad", count_include_pad)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 3, "(N, C, L)")
        return F.avg_pool1d(x, self.kernel_size, self.stride, self.padding,
                            count_include_pad=self.count_include_pad), state


class LPPool2d(Layer):
    """Power-average pooling: (sum x^p)^(1/p) over each window (p=2: L2 pooling)."""

    base_name = "lppool"

    @positional_limit(3)
    def __init__(self, norm_type: float, kernel_size, stride=None, *, name: str | None = None):
        super().__init__(name)
        self.p = check_float(self, "norm_type", norm_type, low=0.0, low_open=True)
        self.kernel_size = check_ints(self, "kernel_size", kernel_size)
        self.stride = None if stride is None else check_ints(self, "stride", stride)

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        return F.lp_pool2d(x, self.p, self.kernel_size, self.stride), state


class GlobalAvgPool2d(Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    base_name = "gap"

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        return ops.mean(x, axis=(2, 3)), state


class GlobalMaxPool2d(Layer):
    """Max over H and W: (N, C, H, W) -> (N, C)."""

    base_name = "gmp"

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 4, "(N, C, H, W)")
        return ops.max(x, axis=(2, 3)), state


class GlobalAvgPool1d(Layer):
    """Mean over L: (N, C, L) -> (N, C)."""

    base_name = "gap"

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 3, "(N, C, L)")
        return ops.mean(x, axis=2), state


class GlobalMaxPool1d(Layer):
    """Max over L: (N, C, L) -> (N, C)."""

    base_name = "gmp"

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        _check_rank(self, x, 3, "(N, C, L)")
        return ops.max(x, axis=2), state
