"""One ONNX converter per gpudl primitive: :data:`CONVERTERS` (primitive name -> function).

A converter is ``convert(ctx, inputs, outputs, *, shapes, out_shapes, **static)``: it
appends ONNX nodes to ``ctx`` that compute the primitive's ``outputs`` (value names) from
its ``inputs`` (one value name per positional argument; constants are already
initializers), given the static keyword arguments the primitive was called with and the
traced shapes of its arguments and outputs. :class:`Context` makes fresh names, constants
and nodes, and knows which values carry the symbolic batch dimension (so a ``reshape`` to
``(batch, -1)`` is written as ``(0, -1)``: "keep the input's first dimension").

Example:
    >>> ctx = Context(batch=4)
    >>> CONVERTERS["relu"](ctx, ["x"], ["y"], shapes=[(4, 3)], out_shapes=[(4, 3)])
    >>> [(n.op_type, list(n.input), list(n.output)) for n in ctx.nodes]
    [('Relu', ['x'], ['y'])]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl.errors import ExportError

__all__ = ["CONVERTERS", "Context"]


class Context:
    """The graph being built: nodes, initializers, fresh names, batch-carrying values."""

    def __init__(self, batch: int | None = None) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self.batch = batch
        # value name -> its batch axis, for the values that depend on the model's input
        self.batch_axis: dict[str, int] = {}
        # value name -> product of the dims merged into its batch axis before the batch
        # ((T, N, I) -> (T*N, I) gives T); 1 when absent
        self.batch_outer: dict[str, int] = {}
        self.input_array: Any = None  # integer ids: the example array itself
        self.input_name = ""
        self._names: set[str] = set()
        self._count = itertools.count()

    def fresh(self, stem: str) -> str:
        while True:
            name = f"{stem}_{next(self._count)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str] | None = None,
             **attrs: Any) -> str:
        """Append one node; returns its (first) output name."""
        from onnx import helper

        outputs = outputs or [self.fresh(op_type.lower())]
        self.nodes.append(helper.make_node(op_type, inputs, outputs,
                                           name=self.fresh(f"n_{op_type}"), **attrs))
        return outputs[0]

    def initializer(self, arr: np.ndarray, name: str | None = None) -> str:
        from onnx import numpy_helper

        name = name if name is not None and name not in self._names else self.fresh("const")
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def constant(self, value: Any, like: Any = None) -> str:
        """An initializer for a constant argument; Python scalars take ``like``'s dtype."""
        from gpudl.backend import to_numpy

        if isinstance(value, bool | int | float) and like is not None:
            dtype = np.asarray(to_numpy(like) if hasattr(like, "shape") else like).dtype
            if isinstance(value, float) and dtype.kind != "f":
                dtype = np.dtype(np.float32)
            return self.initializer(np.asarray(value, dtype=dtype))
        arr = np.asarray(to_numpy(value))
        if arr.dtype == bool and arr.ndim >= 1 and self.batch is not None and self.batch > 1 \
                and arr.shape[0] == self.batch and not (arr == arr[:1]).all():
            raise ExportError(
                f"gd.export_onnx: a boolean mask of shape {arr.shape} (batch first) reaches the "
                "graph as a constant: the model computed it from its input outside gpudl's "
                "ops (a padding mask from the ids, a comparison), so the export would fix it. "
                "Build the model without it (TransformerClassifier(padding_idx=None)) or "
                "compute it with gd.ops")
        if (self.batch is not None and self.batch > 1 and arr.ndim >= 2
                and arr.shape[0] == self.batch and (arr == arr[:1]).all()):
            # a batch of equal rows built from the example's batch size (an RNN's zero
            # initial state, an all-True mask): one row, which broadcasts to any batch.
            # A mask computed from the input outside gd.ops is caught only when the
            # example's rows differ (the check above): export with a padded example.
            arr = arr[:1]
        return self.initializer(arr)

    def ints(self, values) -> str:
        return self.initializer(np.asarray(list(values), dtype=np.int64))


Converter = Callable[..., None]
CONVERTERS: dict[str, Converter] = {}


def converter(*names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn
    return register


def _simple(prim: str, op_type: str, **attrs: Any) -> None:
    def convert(ctx, inputs, outputs, *, shapes, out_shapes, **static):
        ctx.node(op_type, inputs, outputs, **attrs)
    convert.__name__ = f"convert_{prim}"
    CONVERTERS[prim] = convert


for _prim, _op in {"add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div",
                   "maximum": "Max", "minimum": "Min", "power": "Pow", "negative": "Neg",
                   "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh",
                   "sigmoid": "Sigmoid", "relu": "Relu", "abs": "Abs", "erf": "Erf",
                   "sin": "Sin", "cos": "Cos", "softplus": "Softplus", "matmul": "MatMul",
                   "where": "Where"}.items():
    _simple(_prim, _op)
# non-differentiable primitives (not in PRIMITIVES): the exporter records them too
for _prim, _op in {"equal": "Equal", "less": "Less", "less_equal": "LessOrEqual",
                   "greater": "Greater", "greater_equal": "GreaterOrEqual",
                   "logical_and": "And", "logical_or": "Or", "logical_not": "Not",
                   "sign": "Sign", "floor": "Floor", "ceil": "Ceil", "round": "Round",
                   "isnan": "IsNaN"}.items():
    _simple(_prim, _op)


@converter("top_k_mask")
def _top_k_mask(ctx, inputs, outputs, *, shapes, out_shapes, k, axis):
    from onnx import TensorProto, helper

    # TopK's indices scattered into an all-False mask (TopK keeps the lower index on ties,
    # as ops.top_k_mask does)
    _, idx = ctx.fresh("topk_values"), ctx.fresh("topk_indices")
    ctx.node("TopK", [inputs[0], ctx.ints([k])], [_, idx], axis=int(axis), largest=1, sorted=1)

    def filled(shape_of: str, value: bool) -> str:
        return ctx.node("ConstantOfShape", [ctx.node("Shape", [shape_of])],
                        value=helper.make_tensor("v", TensorProto.BOOL, [1], [value]))

    ctx.node("ScatterElements", [filled(inputs[0], False), idx, filled(idx, True)], outputs,
             axis=int(axis))


@converter("not_equal")
def _not_equal(ctx, inputs, outputs, *, shapes, out_shapes):
    ctx.node("Not", [ctx.node("Equal", inputs)], outputs)


@converter("argmax", "argmin")
def _argmax(ctx, inputs, outputs, *, shapes, out_shapes, axis=None, keepdims=False):
    op_type = "ArgMin" if outputs[0].startswith("argmin") else "ArgMax"
    x = inputs[0]
    if axis is None:
        x, axis = ctx.node("Reshape", [x, ctx.ints([-1])]), 0
    ctx.node(op_type, [x], outputs, axis=int(axis), keepdims=int(bool(keepdims)))


@converter("log1p")
def _log1p(ctx, inputs, outputs, *, shapes, out_shapes):
    one = ctx.initializer(np.ones((), np.float32))
    one = ctx.node("CastLike", [one, inputs[0]])
    ctx.node("Log", [ctx.node("Add", [inputs[0], one])], outputs)


@converter("expm1")
def _expm1(ctx, inputs, outputs, *, shapes, out_shapes):
    one = ctx.node("CastLike", [ctx.initializer(np.ones((), np.float32)), inputs[0]])
    ctx.node("Sub", [ctx.node("Exp", inputs), one], outputs)


@converter("astype")
def _astype(ctx, inputs, outputs, *, shapes, out_shapes, dtype):
    from onnx import helper

    ctx.node("Cast", inputs, outputs, to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


@converter("clip")
def _clip(ctx, inputs, outputs, *, shapes, out_shapes, a_min, a_max):
    bounds = []
    for b in (a_min, a_max):
        bounds.append("" if b is None else ctx.node(
            "CastLike", [ctx.initializer(np.asarray(b, np.float32)), inputs[0]]))
    ctx.node("Clip", [inputs[0], *bounds], outputs)


def _batch_target(ctx, name: str, in_shape: tuple, shape) -> tuple[list[int], tuple | None]:
    """``shape`` with ``-1`` at the axis that holds the batch, and (that axis, the product of
    the dims merged into it before the batch).

    The batch axis of the output is the one whose leading product of dims equals the
    input's product of the dims before its batch axis (a reshape that merges the batch
    with the dims after it, ``(N, C, H, W) -> (N, C*H*W)`` or ``(T, N, I) -> (T*N, I)``).
    """
    shape = [int(s) for s in np.atleast_1d(shape)]
    b = ctx.batch_axis.get(name)
    if b is None or ctx.batch is None or ctx.batch < 2:
        return shape, None
    before = int(np.prod(in_shape[:b], dtype=np.int64)) * ctx.batch_outer.get(name, 1)
    through = before * ctx.batch
    prefix = 1
    for j, n in enumerate(shape):
        if before % prefix == 0 and (prefix * n) % through == 0 and n % ctx.batch == 0:
            shape[j] = -1
            return shape, (j, before // prefix)
        prefix *= n
    raise ExportError(f"gd.export_onnx: reshape {tuple(in_shape)} -> {tuple(shape)} splits the "
                      f"batch dimension (axis {b}); the exported graph would fix the batch "
                      "size. Export with a batch size that is not a factor of other dims")


@converter("reshape")
def _reshape(ctx, inputs, outputs, *, shapes, out_shapes, shape):
    target, axis = _batch_target(ctx, inputs[0], shapes[0], shape)
    ctx.node("Reshape", [inputs[0], ctx.ints(target)], outputs)
    if axis is not None:
        ctx.batch_axis[outputs[0]], ctx.batch_outer[outputs[0]] = axis


@converter("broadcast_to")
def _broadcast_to(ctx, inputs, outputs, *, shapes, out_shapes, shape):
    target = [int(s) for s in np.atleast_1d(shape)]
    b = ctx.batch_axis.get(inputs[0])
    if b is not None:  # Expand broadcasts both ways: a 1 keeps the input's batch
        b += len(target) - len(shapes[0])
        target[b] = 1
        ctx.batch_axis[outputs[0]] = b
    ctx.node("Expand", [inputs[0], ctx.ints(target)], outputs)


@converter("transpose")
def _transpose(ctx, inputs, outputs, *, shapes, out_shapes, axes):
    perm = list(range(len(shapes[0])))[::-1] if axes is None else [int(a) for a in axes]
    ctx.node("Transpose", inputs, outputs, perm=perm)
    if inputs[0] in ctx.batch_axis:
        ctx.batch_axis[outputs[0]] = perm.index(ctx.batch_axis[inputs[0]])
        ctx.batch_outer[outputs[0]] = ctx.batch_outer.get(inputs[0], 1)


def _axes(axis, ndim: int) -> list[int]:
    if axis is None:
        return list(range(ndim))
    return [int(a) % max(ndim, 1) for a in np.atleast_1d(axis)]


@converter("sum")
def _sum(ctx, inputs, outputs, *, shapes, out_shapes, axis=None, keepdims=False):
    ctx.node("ReduceSum", [inputs[0], ctx.ints(_axes(axis, len(shapes[0])))], outputs,
             keepdims=int(bool(keepdims)))


def _reduce(op_type: str) -> Converter:
    def convert(ctx, inputs, outputs, *, shapes, out_shapes, axis=None, keepdims=False):
        ctx.node(op_type, inputs, outputs, axes=_axes(axis, len(shapes[0])),
                 keepdims=int(bool(keepdims)))
    return convert


CONVERTERS["max"] = _reduce("ReduceMax")
CONVERTERS["min"] = _reduce("ReduceMin")
CONVERTERS["logsumexp"] = _reduce("ReduceLogSumExp")


@converter("softmax", "log_softmax")
def _softmax(ctx, inputs, outputs, *, shapes, out_shapes, axis=-1, **_):
    op_type = "LogSoftmax" if outputs[0].startswith("log_softmax") else "Softmax"
    ctx.node(op_type, inputs, outputs, axis=int(axis))


@converter("concatenate")
def _concatenate(ctx, inputs, outputs, *, shapes, out_shapes, axis=0):
    ctx.node("Concat", inputs, outputs, axis=int(axis))


@converter("cumsum")
def _cumsum(ctx, inputs, outputs, *, shapes, out_shapes, axis):
    ctx.node("CumSum", [inputs[0], ctx.initializer(np.asarray(int(axis), np.int64))], outputs)


@converter("einsum")
def _einsum(ctx, inputs, outputs, *, shapes, out_shapes, subscripts, **_):
    ctx.node("Einsum", inputs, outputs, equation=str(subscripts).replace(" ", ""))


@converter("conv2d")
def _conv2d(ctx, inputs, outputs, *, shapes, out_shapes, stride, padding, dilation, groups):
    t, b, left, r = (int(p) for p in padding)
    ctx.node("Conv", inputs, outputs, strides=[int(s) for s in stride],
             pads=[t, left, b, r], dilations=[int(d) for d in dilation], group=int(groups),
             kernel_shape=list(shapes[1][2:]))


@converter("conv_bias")
def _conv_bias(ctx, inputs, outputs, *, shapes, out_shapes):
    # y (N, C, ...) + b (C,) along axis 1: b reshaped to (C, 1, ...) broadcasts from the right
    b = ctx.node("Reshape", [inputs[1], ctx.ints([-1, *(1,) * (len(shapes[0]) - 2)])])
    ctx.node("Add", [inputs[0], b], outputs)


@converter("max_pool2d")
def _max_pool2d(ctx, inputs, outputs, *, shapes, out_shapes, kernel, stride, padding):
    # the second output (argmax, for the backward pass) is not written: eval never reads it
    ph, pw = (int(p) for p in padding)
    ctx.node("MaxPool", inputs, outputs[:1], kernel_shape=[int(k) for k in kernel],
             strides=[int(s) for s in stride], pads=[ph, pw, ph, pw])


@converter("avg_pool2d")
def _avg_pool2d(ctx, inputs, outputs, *, shapes, out_shapes, kernel, stride, padding,
                count_include_pad):
    ph, pw = (int(p) for p in padding)
    ctx.node("AveragePool", inputs, outputs, kernel_shape=[int(k) for k in kernel],
             strides=[int(s) for s in stride], pads=[ph, pw, ph, pw],
             count_include_pad=int(bool(count_include_pad)))


@converter("pad")
def _pad(ctx, inputs, outputs, *, shapes, out_shapes, pad_width, constant_values=0):
    widths = np.broadcast_to(np.asarray(pad_width, np.int64).reshape(-1, 2)
                             if np.ndim(pad_width) else np.full((1, 2), pad_width, np.int64),
                             (len(shapes[0]), 2))
    value = ctx.node("CastLike", [ctx.initializer(np.asarray(constant_values, np.float32)),
                                  inputs[0]])
    ctx.node("Pad", [inputs[0], ctx.ints(list(widths[:, 0]) + list(widths[:, 1])), value],
             outputs, mode="constant")


@converter("conv2d_backward_data")
def _conv_transpose2d(ctx, inputs, outputs, *, shapes, out_shapes, x_hw, stride, padding,
                      dilation, groups):
    """The gradient of conv2d with respect to its input is ONNX's ConvTranspose."""
    t, b, left, r = (int(p) for p in padding)
    k_hw, in_hw = shapes[1][2:], shapes[0][2:]
    natural = [int(stride[i]) * (in_hw[i] - 1) + (k_hw[i] - 1) * int(dilation[i]) + 1
               - (t + b, left + r)[i] for i in range(2)]
    ctx.node("ConvTranspose", inputs, outputs, strides=[int(s) for s in stride],
             pads=[t, left, b, r], dilations=[int(d) for d in dilation], group=int(groups),
             kernel_shape=list(k_hw),
             output_padding=[int(x_hw[i]) - natural[i] for i in range(2)])


# indexing and recurrent cells, fused activations, norms and attention: registered on import
from gpudl.export import (  # noqa: E402,F401
    onnx_attention_converters,
    onnx_fused_converters,
    onnx_sequence_converters,
)

