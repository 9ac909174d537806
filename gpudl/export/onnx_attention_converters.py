"""ONNX converters for the fused attention primitives of
``gpudl/functional/_attention_fused.py`` and of ``gpudl/functional/linear.py``: ``linear_rows``
(GEMM + bias, optionally ReLU; ``F.linear`` and ``nn.Dense`` run on it),
``attention_weights``, ``split_qkv_heads`` and ``packed_self_attention`` (scores, masked
softmax, weights @ v and the head merge), written out in ONNX's MatMul/Softmax/Where.

Part of :data:`gpudl.export.onnx_converters.CONVERTERS` (that module imports this one).

Example:
    >>> from gpudl.export.onnx_converters import CONVERTERS, Context
    >>> ctx = Context(batch=2)
    >>> CONVERTERS["linear_rows"](ctx, ["x", "w", "b"], ["y"], shapes=[(2, 3), (4, 3), (4,)],
    ...                           out_shapes=[(2, 4)], relu=True)
    >>> [n.op_type for n in ctx.nodes]
    ['Transpose', 'MatMul', 'Add', 'Relu']
"""

from __future__ import annotations

import numpy as np

from gpudl.export.onnx_converters import converter

__all__: list[str] = []


@converter("linear_rows")
def _linear_rows(ctx, inputs, outputs, *, shapes, out_shapes, relu=False):
    wt = ctx.node("Transpose", [inputs[1]], perm=[1, 0])  # (E_in, E_out)
    y = ctx.node("Add", [ctx.node("MatMul", [inputs[0], wt]), inputs[2]],
                 None if relu else outputs)
    if relu:
        ctx.node("Relu", [y], outputs)


def _masked_softmax_nodes(ctx, scores: str, keep: str, scale: float, out: str) -> None:
    """softmax(scale * scores) over the last axis where ``keep``, 0 elsewhere (a row with
    nothing kept gives zeros): the formula of ``_masked_softmax_``."""
    if scale != 1.0:
        factor = ctx.node("CastLike", [ctx.initializer(np.asarray(scale, np.float32)), scores])
        scores = ctx.node("Mul", [scores, factor])
    lowest = ctx.node("CastLike", [ctx.initializer(np.asarray(np.finfo(np.float32).min,
                                                              np.float32)), scores])
    zero = ctx.node("CastLike", [ctx.initializer(np.zeros((), np.float32)), scores])
    soft = ctx.node("Softmax", [ctx.node("Where", [keep, scores, lowest])], axis=-1)
    ctx.node("Where", [keep, soft, zero], [out])


def _swap_last(ctx, name: str, ndim: int) -> str:
    return ctx.node("Transpose", [name], perm=[*range(ndim - 2), ndim - 1, ndim - 2])


@converter("attention_weights")
def _attention_weights(ctx, inputs, outputs, *, shapes, out_shapes, scale):
    q, k, keep = inputs
    scores = ctx.node("MatMul", [q, _swap_last(ctx, k, len(shapes[1]))])
    _masked_softmax_nodes(ctx, scores, keep, scale, outputs[0])


def _qkv_heads_nodes(ctx, qkv: str, shape: tuple, num_heads: int) -> list[str]:
    """q, k, v (N, h, L, E/h) of a packed (N, L, 3E) value: Reshape, Split, Transpose."""
    head_dim = shape[2] // (3 * num_heads)
    five = ctx.node("Reshape", [qkv, ctx.ints([0, 0, 3, num_heads, head_dim])])
    parts = [ctx.fresh("split") for _ in range(3)]
    ctx.node("Split", [five], parts, axis=2)  # 3 x (N, L, 1, h, E/h)
    return [ctx.node("Transpose", [ctx.node("Reshape", [p, ctx.ints([0, 0, num_heads, head_dim])])],
                     perm=[0, 2, 1, 3]) for p in parts]


def _mark_batch(ctx, source: str, names: list[str], axes: dict[int, int]) -> None:
    """``names`` carry the batch where ``source`` does, at ``axes[source's batch axis]``."""
    b = ctx.batch_axis.get(source)
    if b is None:
        return
    for name in names:
        ctx.batch_axis[name] = axes[b]
        if source in ctx.batch_outer:
            ctx.batch_outer[name] = ctx.batch_outer[source]


@converter("split_qkv_heads")
def _split_qkv_heads(ctx, inputs, outputs, *, shapes, out_shapes, num_heads):
    for name, out in zip(_qkv_heads_nodes(ctx, inputs[0], shapes[0], num_heads), outputs,
                         strict=True):
        ctx.node("Identity", [name], [out])
    _mark_batch(ctx, inputs[0], outputs, {0: 0, 1: 2})  # (N, L, 3E) -> (N, h, L, E/h)


@converter("packed_self_attention")
def _packed_self_attention(ctx, inputs, outputs, *, shapes, out_shapes, num_heads, scale,
                           weights_used):
    qkv, keep = inputs
    q, k, v = _qkv_heads_nodes(ctx, qkv, shapes[0], num_heads)
    scores = ctx.node("MatMul", [q, _swap_last(ctx, k, 4)])  # (N, h, L, L)
    _masked_softmax_nodes(ctx, scores, keep, scale, outputs[1])
    heads = ctx.node("Transpose", [ctx.node("MatMul", [outputs[1], v])], perm=[0, 2, 1, 3])
    ctx.node("Reshape", [heads, ctx.ints([0, 0, shapes[0][2] // 3])], [outputs[0]])
    _mark_batch(ctx, qkv, outputs[:1], {0: 0, 1: 1})  # out (N, L, E)
    _mark_batch(ctx, qkv, outputs[1:], {0: 0, 1: 2})  # weights (N, h, L, L)
