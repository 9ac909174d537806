"""ONNX converters for the fused activation primitives (``F.leaky_relu``, ``F.elu``/``F.selu``,
``F.hardtanh``, ``F.silu``, ``F.gelu``).

Part of :data:`gpudl.export.onnx_converters.CONVERTERS` (that module imports this one).
Opset 17 has no ``Gelu`` (opset 20 does): GELU is written out, ``0.5 x (1 + erf(x/√2))``
or torch's tanh form.

Example:
    >>> from gpudl.export.onnx_converters import CONVERTERS, Context
    >>> ctx = Context(batch=2)
    >>> CONVERTERS["silu"](ctx, ["x"], ["y"], shapes=[(2, 3)], out_shapes=[(2, 3)])
    >>> [n.op_type for n in ctx.nodes]
    ['Sigmoid', 'Mul']
"""

from __future__ import annotations

import math

import numpy as np

from gpudl.export.onnx_converters import CONVERTERS, converter

__all__: list[str] = []


@converter("leaky_relu")
def _leaky_relu(ctx, inputs, outputs, *, shapes, out_shapes, negative_slope):
    ctx.node("LeakyRelu", inputs, outputs, alpha=float(negative_slope))


@converter("elu")
def _elu(ctx, inputs, outputs, *, shapes, out_shapes, alpha, scale):
    if scale == 1.0:
        ctx.node("Elu", inputs, outputs, alpha=float(alpha))
    else:  # SELU: ONNX's Selu is gamma * elu(x, alpha)
        ctx.node("Selu", inputs, outputs, alpha=float(alpha), gamma=float(scale))


@converter("hardtanh")
def _hardtanh(ctx, inputs, outputs, *, shapes, out_shapes, min_val, max_val):
    CONVERTERS["clip"](ctx, inputs, outputs, shapes=shapes, out_shapes=out_shapes,
                       a_min=min_val, a_max=max_val)


@converter("silu")
def _silu(ctx, inputs, outputs, *, shapes, out_shapes):
    ctx.node("Mul", [inputs[0], ctx.node("Sigmoid", inputs)], outputs)


@converter("gelu")
def _gelu(ctx, inputs, outputs, *, shapes, out_shapes, approximate):
    x = inputs[0]

    def const(v: float) -> str:
        return ctx.node("CastLike", [ctx.initializer(np.asarray(v, np.float32)), x])

    if approximate == "none":
        inner = ctx.node("Erf", [ctx.node("Mul", [x, const(1.0 / math.sqrt(2.0))])])
    else:  # tanh(sqrt(2/pi) (x + 0.044715 x^3))
        cube = ctx.node("Mul", [ctx.node("Mul", [ctx.node("Mul", [x, x]), x]), const(0.044715)])
        inner = ctx.node("Tanh", [ctx.node("Mul", [ctx.node("Add", [x, cube]),
                                                   const(math.sqrt(2.0 / math.pi))])])
    half_x = ctx.node("Mul", [x, const(0.5)])
    ctx.node("Mul", [half_x, ctx.node("Add", [inner, const(1.0)])], outputs)
