"""ONNX converters for the fused primitives: activations (``F.leaky_relu``,
``F.elu``/``F.selu``, ``F.hardtanh``, ``F.silu``, ``F.gelu``) and normalizations
(BatchNorm in eval and train form, LayerNorm).

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


@converter("batch_norm_eval")
def _batch_norm_eval(ctx, inputs, outputs, *, shapes, out_shapes, eps):
    # inputs x, gamma, beta, running_mean, running_var: ONNX's own order
    ctx.node("BatchNormalization", inputs, outputs, epsilon=float(eps))


@converter("batch_norm_train")
def _batch_norm_train(ctx, inputs, outputs, *, shapes, out_shapes, eps):
    # batch statistics (a model run with train=True): y, the batch mean and biased var (C,)
    x, gamma, beta = inputs
    nd = len(shapes[0])
    axes = [0, *range(2, nd)]
    per_channel = ctx.ints([1, -1] + [1] * (nd - 2))
    mean = ctx.node("ReduceMean", [x], axes=axes, keepdims=1)
    centered = ctx.node("Sub", [x, mean])
    var = ctx.node("ReduceMean", [ctx.node("Mul", [centered, centered])], axes=axes, keepdims=1)
    eps_c = ctx.node("CastLike", [ctx.initializer(np.asarray(eps, np.float32)), x])
    normed = ctx.node("Div", [centered, ctx.node("Sqrt", [ctx.node("Add", [var, eps_c])])])
    scaled = ctx.node("Mul", [normed, ctx.node("Reshape", [gamma, per_channel])])
    ctx.node("Add", [scaled, ctx.node("Reshape", [beta, per_channel])], outputs[:1])
    ctx.node("Reshape", [mean, ctx.ints([-1])], outputs[1:2])
    ctx.node("Reshape", [var, ctx.ints([-1])], outputs[2:3])


@converter("layer_norm")
def _layer_norm(ctx, inputs, outputs, *, shapes, out_shapes, eps):
    # over gamma's trailing dims; mean/rstd (kept for the backward) are not written
    ctx.node("LayerNormalization", inputs, outputs[:1], axis=-len(shapes[1]),
             epsilon=float(eps))
