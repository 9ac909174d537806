"""``gd.export_onnx``: a model's eval forward pass as an ONNX graph (needs ``gpudl[onnx]``).

The forward pass ``model.apply(params, state, x, train=False)`` runs once under a trace
whose leaves are the input and every param and state array; the recorded primitive nodes
are the graph. Each primitive becomes ONNX nodes through its one converter in
:data:`gpudl.export.onnx_converters.CONVERTERS`; params and state become initializers
named with their torch-style ``state_dict`` keys (``0.weight``, ``bn1.running_mean``);
the input's first dimension is the symbolic batch ``N``. A primitive without a converter
raises :class:`~gpudl.errors.ExportError` naming it and the model's line that used it.

An integer example is token ids (``int64`` input): the embedding's lookup of exactly that
array becomes a ``Gather``. Non-differentiable primitives (comparisons, ``argmax``) are
recorded too. What a model computes from its input with NumPy itself (a padding mask from
the ids) reaches the graph as a constant: a boolean one whose rows differ raises; export
from an example with padding in some rows so that such a mask is caught.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.Dense(3), nn.ReLU()])
    >>> params, state = net.init(0, np.zeros((2, 4), np.float32))
    >>> names = [n.op_type for n in trace_to_onnx(net, params, state,
    ...                                           np.zeros((2, 4), np.float32)).graph.node]
    >>> names
    ['Transpose', 'MatMul', 'Add', 'Relu', 'Identity']
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gpudl import _trace
from gpudl._backward import postorder
from gpudl._trace import Node, Trace, Traced
from gpudl.backend import device, to_device, to_numpy
from gpudl.errors import ExportError, GradientError
from gpudl.export.onnx_converters import CONVERTERS, Context
from gpudl.tree import flatten_with_paths, tree_flatten, tree_unflatten

__all__ = ["export_onnx", "trace_to_onnx", "OPSET"]

#: the ONNX opset of exported graphs (``ai.onnx``)
OPSET = 17


def _box(tree: Any, trace: Trace, prefix: str, names: dict) -> Any:
    """``tree`` with every float leaf a traced leaf; ``names`` maps its Node to the key."""
    if tree is None:
        return None
    paths = [p for p, _ in flatten_with_paths(tree)]
    leaves, treedef = tree_flatten(tree)
    boxed = []
    for path, leaf in zip(paths, leaves, strict=True):
        arr = np.asarray(to_numpy(leaf)) if hasattr(leaf, "shape") else None
        if arr is None or arr.dtype.kind != "f":
            boxed.append(leaf)
            continue
        node = Node(None, (), {}, None, ())
        names[node] = (f"{prefix}{path}" if path else prefix.rstrip(".")) or "input", arr
        boxed.append(Traced(leaf, trace, node))
    return tree_unflatten(treedef, boxed)


def _merged_keys(params: dict, state: dict | None) -> dict[str, str]:
    """``"params.<path>"``/``"state.<path>"`` -> torch-style key (``gd.state_dict``'s)."""
    keys = {}
    for prefix, tree in (("params.", params), ("state.", state)):
        if tree is not None:
            for path, _ in flatten_with_paths(tree):
                keys[prefix + path] = path
    return keys


_REDUCTIONS = {"sum", "max", "min", "logsumexp"}


def _propagate_batch_axis(ctx, inputs, shapes, out_names, node) -> None:
    """Outputs the converter left unmarked keep the first batch input's axis, counted from
    the right (elementwise broadcasting, matmul, pooling, slicing by time step)."""
    first = next((i for i, n in enumerate(inputs) if n in ctx.batch_axis), None)
    if first is None:
        return
    outs = node.out if node.prim.multiple_results else (node.out,)
    b = ctx.batch_axis[inputs[first]] - len(shapes[first])
    axis = node.kwargs.get("axis")
    if node.prim.name in _REDUCTIONS and axis is not None and not node.kwargs.get("keepdims"):
        nd = len(shapes[first])
        axes = {int(a) % nd for a in np.atleast_1d(axis)}
        b = b + nd  # from the left: less the reduced axes before it
        if b in axes:
            return
        b -= sum(a < b for a in axes)
        b -= np.ndim(outs[0])
    for name, o in zip(out_names, outs, strict=True):
        if name not in ctx.batch_axis and np.ndim(o) + b >= 0:
            ctx.batch_axis[name] = np.ndim(o) + b
            if inputs[first] in ctx.batch_outer:
                ctx.batch_outer[name] = ctx.batch_outer[inputs[first]]


def _bind_all(prim, args: tuple, kwargs: dict):
    """``_trace._bind`` that records non-differentiable primitives too (comparisons inside
    ``leaky_relu``, ``argmax``): their results are data, so the graph must compute them."""
    if prim.differentiable or prim.multiple_results or prim.name not in CONVERTERS:
        result = _ORIGINAL_BIND(prim, args, kwargs)
        for r in result if isinstance(result, tuple) else (result,):
            if type(r) is Traced:  # gd.stop_gradient(r) hands out r.value: found again
                _RECORDED[id(r.value)] = (r.node, r.index)
        return result
    top = max((a.trace for a in args if type(a) is Traced), key=lambda t: t.level)
    unboxed = tuple(a.value if type(a) is Traced and a.trace is top else a for a in args)
    out = prim(*unboxed, **kwargs)
    parents = tuple((i, a.node, a.index) for i, a in enumerate(args)
                    if type(a) is Traced and a.trace is top)
    node = Node(prim, unboxed, kwargs, out, parents)
    _trace.NODE_SITES[node] = _trace._call_site()
    _RECORDED[id(out)] = (node, None)  # ops.where unboxes its condition: found by identity
    return Traced(out, top, node)


_ORIGINAL_BIND = _trace._bind
# id(raw output) -> (node, output index) of each primitive recorded during the trace: a raw
# array that reaches a later primitive unboxed (a comparison inside ops.where, a
# gd.stop_gradient) is connected to the node that computed it
_RECORDED: dict[int, tuple[Node, int | None]] = {}


def _recorded(arg: Any) -> tuple[Node, int | None] | None:
    found = _RECORDED.get(id(arg))
    if found is None:
        return None
    node, index = found
    return found if (node.out if index is None else node.out[index]) is arg else None


def _inputs_of(node: Node) -> list[tuple[int, Node, int | None]]:
    """``(argnum, parent, output index)``: the traced parents, and the recorded comparisons
    that reached ``node`` unboxed (``ops.where``'s condition)."""
    edges = list(node.parents)
    taken = {e[0] for e in edges}
    for i, arg in enumerate(node.args):
        if i not in taken and (rec := _recorded(arg)) is not None:
            edges.append((i, *rec))
    return edges


def _traced_apply(model, params, state, x):
    """``model.apply(..., train=False)`` recording every node and its call site.

    ``_bind`` records call sites (for the error message) while ``_DEBUG_NANS`` is set; the
    NaN checks themselves are off meanwhile (masks hold -inf). A model that turns a traced
    comparison into a NumPy array (a GradientError) is traced again with comparisons as
    constants: the boolean-mask check of the converters then names the problem.
    """
    saved = _trace._DEBUG_NANS, _trace._check_forward, _trace._bind, _trace._MACHINERY
    _RECORDED.clear()
    _trace._MACHINERY = (*saved[3], os.path.abspath(__file__))  # sites skip _bind_all
    try:
        _trace._DEBUG_NANS, _trace._check_forward = True, lambda *a: None
        _trace._bind = _bind_all
        try:
            return model.apply(params, state, x, train=False)
        except GradientError:
            _trace._bind = _ORIGINAL_BIND
            try:
                return model.apply(params, state, x, train=False)
            except GradientError as exc:
                raise ExportError(
                    "gd.export_onnx: the model turns its input (or a value computed from it) "
                    "into a NumPy array, e.g. np.asarray(ids) != pad for a padding mask, so the "
                    "export would fix that value to this example. Compute it with gd.ops "
                    f"(gd.ops.not_equal(ids, pad)) instead; the trace said: {exc}") from None
    finally:
        _trace._DEBUG_NANS, _trace._check_forward, _trace._bind, _trace._MACHINERY = saved


_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "where", "power"}


def _check_batch_constant(ctx, node, argnum, arg, from_parent, values) -> None:
    """A constant whose rows differ along the batch axis of the operand it meets
    elementwise was computed from the input outside gd.ops (a top-k mask): refuse it."""
    if node.prim.name not in _ELEMENTWISE or not ctx.batch or ctx.batch < 2:
        return
    arr = np.asarray(to_numpy(arg)) if hasattr(arg, "shape") else None
    if arr is None or arr.ndim == 0:
        return
    for i, (parent, index) in from_parent.items():
        name, other = values[(id(parent), index)], node.args[i]
        b = ctx.batch_axis.get(name)
        if b is None or np.ndim(other) != arr.ndim or arr.shape[b] != ctx.batch:
            continue
        if not (arr == arr.take([0], axis=b)).all():
            raise ExportError(
                f"gd.export_onnx: primitive {node.prim.name!r} gets a constant of shape "
                f"{arr.shape} (argument {argnum}) that differs along the batch axis: the "
                "model computed it from its input outside gpudl's ops (a mask from a top-k "
                "or a comparison in NumPy), so the export would fix it to this example. "
                f"Compute it with gd.ops{_site(node)}")


def _site(node: Node) -> str:
    where = _trace.NODE_SITES.get(node)
    return f" at {where[0]}" + (f" ({where[2]})" if where and where[2] else "") if where else ""


def trace_to_onnx(model: Any, params: dict, state: dict | None, example: Any,
                  opset: int = OPSET, input_name: str = "input", output_name: str = "output"):
    """The ``onnx.ModelProto`` of ``model.apply(params, state, example, train=False)``.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> from gpudl import nn
        >>> net = nn.Sequential([nn.Dense(2)])
        >>> p, s = net.init(0, np.zeros((1, 3), np.float32))
        >>> trace_to_onnx(net, p, s, np.zeros((1, 3), np.float32)).opset_import[0].version
        17
    """
    import onnx  # noqa: F401  (a missing extra fails here, before the trace)

    x = np.asarray(to_numpy(example))
    if x.dtype.kind not in "fiu":
        raise ExportError(f"gd.export_onnx: example must be a float array or integer ids; got "
                          f"dtype {x.dtype}. Pass an input like the model's.")
    if x.dtype.kind in "iu":  # token ids: gathered by an embedding (getitem's converter)
        x = x.astype(np.int64)
    if x.ndim and x.shape[0] == 1:
        # a batch of 1 hides which axis of a reshape's result holds the batch ((1, C*H*W)
        # would be fixed to batch 1): trace the example twice over; the graph has a free
        # batch dim N either way
        x = np.concatenate([x, x])
    trace, names = Trace(), {}
    bp = _box(params, trace, "params.", names)
    bs = _box(state, trace, "state.", names)
    ctx = Context(batch=int(x.shape[0]) if x.ndim else None)
    if x.dtype.kind == "f":
        bx = _box(x, trace, "input", names)
    else:
        # ids are a traced leaf too, so what the model computes from them with gd.ops (a
        # padding mask) is part of the graph; the embedding's gather unboxes them, and its
        # converter finds exactly this array by identity
        ctx.input_array, ctx.input_name = x, input_name
        ctx.batch_axis[input_name] = 0
        node = Node(None, (), {}, None, ())
        names[node] = "input", x
        bx = Traced(x, trace, node)
    keys = _merged_keys(params, state)
    # _bind records each node's call site (for the error message) while _DEBUG_NANS is
    # set; the NaN checks themselves are switched off meanwhile (masks hold -inf).
    out = _traced_apply(model, bp, bs, bx)
    if isinstance(out, tuple):  # (output, new_state)
        out = out[0]
    if type(out) is not Traced or out.trace is not trace:
        raise ExportError("gd.export_onnx: the model's output does not depend on its input "
                          "through gpudl primitives; nothing to export")
    try:
        return _emit(out, trace, names, keys, ctx, x, input_name, output_name, opset)
    finally:
        _RECORDED.clear()


def _emit(out, trace, names, keys, ctx, x, input_name, output_name, opset):
    import onnx
    from onnx import helper

    order = postorder([out.node], lambda n: [p[1] for p in _inputs_of(n)])
    values: dict[tuple[int, int | None], str] = {}
    input_node = next((n for n, (name, _) in names.items() if name == "input"), None)
    for node in order:
        if node.prim is None:
            name, arr = names[node]
            if node is input_node:
                values[(id(node), None)] = input_name
                ctx.batch_axis[input_name] = 0
            else:
                key = keys.get(name, name)
                values[(id(node), None)] = ctx.initializer(arr, key)
            continue
        conv = CONVERTERS.get(node.prim.name)
        if conv is None:
            raise ExportError(
                f"gd.export_onnx: primitive {node.prim.name!r}{_site(node)} has no ONNX "
                f"converter, so the model cannot be exported to ONNX yet ({len(CONVERTERS)} "
                "primitives have one: gpudl.export.onnx_converters.CONVERTERS). Add a "
                "converter there, or export a model without this op.")
        from_parent = {argnum: (parent, index) for argnum, parent, index in _inputs_of(node)}
        inputs, shapes = [], []
        # a Python scalar takes the dtype of a traced operand (x > 0 compares in x's dtype)
        # (ids != 0 compares in the ids' integer dtype)
        like = next((node.args[i] for i in sorted(from_parent)
                     if getattr(node.args[i], "dtype", np.dtype(bool)).kind == "f"),
                    next((node.args[i] for i in sorted(from_parent)
                          if getattr(node.args[i], "dtype", np.dtype(bool)).kind in "iu"),
                         node.out))
        for i, arg in enumerate(node.args):
            if i in from_parent:
                parent, index = from_parent[i]
                inputs.append(values[(id(parent), index)])
            else:
                _check_batch_constant(ctx, node, i, arg, from_parent, values)
                inputs.append(ctx.constant(arg, like=like))
            shapes.append(tuple(np.shape(arg)))
        outs = node.out if node.prim.multiple_results else (node.out,)
        out_names = [ctx.fresh(node.prim.name) for _ in outs]
        try:
            conv(ctx, inputs, out_names, shapes=shapes, out_shapes=[np.shape(o) for o in outs],
                 **node.kwargs)
        except ExportError as exc:
            raise ExportError(f"{exc}{_site(node)}") from None
        _propagate_batch_axis(ctx, inputs, shapes, out_names, node)
        if node.prim.multiple_results:
            for i, n in enumerate(out_names):
                values[(id(node), i)] = n
        else:
            values[(id(node), None)] = out_names[0]
    final = values[(id(out.node), out.index)]
    if input_name not in {i for n in ctx.nodes for i in n.input}:
        raise ExportError("gd.export_onnx: the model's output does not depend on its input "
                          "through gpudl primitives (computed from the raw array?); nothing "
                          "to export")
    ctx.nodes.append(helper.make_node("Identity", [final], [output_name]))
    dtype = helper.np_dtype_to_tensor_dtype(x.dtype)
    out_arr = np.asarray(to_numpy(_trace.unbox_all(out)))
    in_shape = ["N", *x.shape[1:]]
    out_shape = ["N", *out_arr.shape[1:]] if ctx.batch_axis.get(final) == 0 else list(out_arr.shape)
    graph = helper.make_graph(
        ctx.nodes, "gpudl_model",
        [helper.make_tensor_value_info(input_name, dtype, in_shape)],
        [helper.make_tensor_value_info(output_name,
                                       helper.np_dtype_to_tensor_dtype(out_arr.dtype),
                                       out_shape)],
        initializer=ctx.initializers)
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                    producer_name="gpudl")
    model_proto.ir_version = min(model_proto.ir_version, 9)  # onnxruntime >= 1.18 reads 9
    onnx.checker.check_model(model_proto)
    return model_proto


def export_onnx(model: Any, params: dict, state: dict | None, example: Any,
                path: str | os.PathLike, opset: int = OPSET) -> Any:
    """Write ``model``'s eval forward pass to ``path`` as ONNX (opset 17, batch dim ``N``).

    ``example`` is one input batch (its batch size is free in the exported graph; a batch of
    one row is traced as two copies of it, so reshapes that merge the batch stay free).
    Arrays on the GPU are fine: the trace runs on host copies (ONNX initializers are host
    data). Returns the ``onnx.ModelProto``. Needs ``pip install 'gpudl[onnx]'``.

    Example:
        >>> import numpy as np, gpudl as gd, tempfile, os
        >>> from gpudl import models
        >>> net = models.mlp(hidden=(8,))
        >>> x = np.zeros((2, 1, 28, 28), np.float32)
        >>> p, s = net.init(0, x)
        >>> path = os.path.join(tempfile.mkdtemp(), "mlp.onnx")
        >>> proto = gd.export_onnx(net, p, s, x, path)
        >>> [i.name for i in proto.graph.initializer if not i.name.startswith("const")]
        ['1.weight', '1.bias', '3.weight', '3.bias']
    """
    import onnx

    if not isinstance(opset, int) or opset < OPSET:
        raise ExportError(f"gd.export_onnx: opset must be an int >= {OPSET}; got {opset!r}")
    # One device for the whole trace: the CPU (a model on the GPU exports the same graph).
    with device("cpu"):
        params, state, example = to_device((params, state, example), "cpu")
        proto = trace_to_onnx(model, params, state, example, opset=opset)
    onnx.save(proto, os.fspath(path))
    return proto
