"""ONNX converters for indexing (slices, embedding lookups) and the recurrent cells.

Part of :data:`gpudl.export.onnx_converters.CONVERTERS` (that module imports this one):
``getitem`` (basic indexing as Slice/Squeeze/Unsqueeze, one integer array as Gather),
``rnn_unstack`` (Split + Squeeze along time) and the fused LSTM/GRU cell updates written
out in ONNX's elementwise ops (torch's gate orders).

Example:
    >>> from gpudl.export.onnx_converters import CONVERTERS, Context
    >>> ctx = Context(batch=2)
    >>> CONVERTERS["rnn_unstack"](ctx, ["x"], ["a", "b"], shapes=[(2, 4)], out_shapes=[(4,)] * 2)
    >>> [n.op_type for n in ctx.nodes]
    ['Split', 'Squeeze', 'Squeeze']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.errors import ExportError
from gpudl.export.onnx_converters import converter

__all__: list[str] = []


@converter("getitem")
def _getitem(ctx, inputs, outputs, *, shapes, out_shapes, index=None, **static):
    """Basic indexing (slices with steps, integers, ``None``, ``...``) as Slice/Squeeze."""
    key = index if isinstance(index, tuple) else (index,)
    arrays = [i for i, k in enumerate(key) if hasattr(k, "shape") and np.ndim(k) > 0]
    if len(arrays) == 1 and all(k == slice(None) for i, k in enumerate(key) if i != arrays[0]):
        _gather(ctx, inputs[0], outputs[0], key[arrays[0]], arrays[0])
        return
    if any(not isinstance(k, slice | int | type(None) | type(Ellipsis)) or isinstance(k, bool)
           for k in key):
        raise ExportError(f"gd.export_onnx: getitem with index {index!r} (advanced indexing) "
                          "has no ONNX converter yet; only slices, integers, None and ...")
    ndim = len(shapes[0])
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    expanded: list = []
    for k in key:
        expanded.extend([slice(None)] * (ndim - n_real) if k is Ellipsis else [k])
    expanded += [slice(None)] * (ndim + expanded.count(None) - len(expanded))
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    dim = out_dim = 0
    b = ctx.batch_axis.get(inputs[0])
    for k in expanded:
        if dim == b and k is not None:
            b = None if isinstance(k, int) else -1 - out_dim  # found: its output axis
        if k is None:
            unsqueeze.append(out_dim)
            out_dim += 1
            continue
        size = shapes[0][dim]
        if isinstance(k, int):
            i = k % size
            starts.append(i), ends.append(i + 1), axes.append(dim), steps.append(1)
            squeeze.append(dim)
        elif k != slice(None):
            start, stop, step = k.indices(size)
            if step < 0 and stop < 0:
                stop = -(2 ** 62)
            starts.append(start), ends.append(stop), axes.append(dim), steps.append(step)
            out_dim += 1
        else:
            out_dim += 1
        dim += 1
    value = inputs[0]
    if axes:
        value = ctx.node("Slice", [value, ctx.ints(starts), ctx.ints(ends), ctx.ints(axes),
                                   ctx.ints(steps)])
    if squeeze:
        value = ctx.node("Squeeze", [value, ctx.ints(squeeze)])
    if unsqueeze:
        value = ctx.node("Unsqueeze", [value, ctx.ints(unsqueeze)])
    ctx.node("Identity", [value], outputs)
    if b is not None and b < 0:
        ctx.batch_axis[outputs[0]] = -1 - b


@converter("rnn_unstack")
def _rnn_unstack(ctx, inputs, outputs, *, shapes, out_shapes):
    """(T, ...) -> T arrays (...): Split along the time axis, then Squeeze it."""
    parts = [ctx.fresh("step") for _ in outputs]
    ctx.node("Split", [inputs[0], ctx.ints([1] * len(outputs))], parts, axis=0)
    zero = ctx.ints([0])
    for part, out in zip(parts, outputs, strict=True):
        ctx.node("Squeeze", [part, zero], [out])


def _gate(ctx, gates: str, k: int, hidden: int) -> str:
    """Columns ``k * hidden : (k + 1) * hidden`` of a (N, G * hidden) gate matrix."""
    return ctx.node("Slice", [gates, ctx.ints([k * hidden]), ctx.ints([(k + 1) * hidden]),
                              ctx.ints([1])])


@converter("lstm_pointwise")
def _lstm_pointwise(ctx, inputs, outputs, *, shapes, out_shapes):
    """gates (N, 4H) in torch's order i, f, g, o and c (N, H) -> (h_new, c_new)."""
    gates, c = inputs
    hidden = shapes[0][1] // 4
    i, f, o = (ctx.node("Sigmoid", [_gate(ctx, gates, k, hidden)]) for k in (0, 1, 3))
    g = ctx.node("Tanh", [_gate(ctx, gates, 2, hidden)])
    ctx.node("Add", [ctx.node("Mul", [f, c]), ctx.node("Mul", [i, g])], [outputs[1]])
    ctx.node("Mul", [o, ctx.node("Tanh", [outputs[1]])], [outputs[0]])


@converter("gru_pointwise")
def _gru_pointwise(ctx, inputs, outputs, *, shapes, out_shapes):
    """gi, gh (N, 3H) in torch's order r, z, n and h (N, H) -> h_new."""
    gi, gh, h = inputs
    hidden = shapes[2][1]
    r, z = (ctx.node("Sigmoid", [ctx.node("Add", [_gate(ctx, gi, k, hidden),
                                                  _gate(ctx, gh, k, hidden)])])
            for k in (0, 1))
    n = ctx.node("Tanh", [ctx.node("Add", [_gate(ctx, gi, 2, hidden),
                                           ctx.node("Mul", [r, _gate(ctx, gh, 2, hidden)])])])
    # h_new = n + z * (h - n)
    ctx.node("Add", [n, ctx.node("Mul", [z, ctx.node("Sub", [h, n])])], outputs)


def _gather(ctx, x: str, out: str, ids: Any, axis: int) -> None:
    """``x[:, ..., ids]`` with an integer array at ``axis``: Gather (an embedding lookup)."""
    from gpudl.backend import to_numpy

    if ctx.input_array is not None and (ids is ctx.input_array or (
            np.shape(ids) == ctx.input_array.shape
            and np.shares_memory(np.asarray(to_numpy(ids)), ctx.input_array))):
        index = ctx.input_name
        ctx.batch_axis[out] = axis
    else:
        index = ctx.initializer(np.asarray(to_numpy(ids)).astype(np.int64))
        if x in ctx.batch_axis and ctx.batch_axis[x] < axis:
            ctx.batch_axis[out] = ctx.batch_axis[x]
    ctx.node("Gather", [x, index], [out], axis=int(axis))


def _cols(ctx, value: str, start: int, stop: int) -> str:
    """Columns ``start:stop`` of a (N, C) value."""
    return ctx.node("Slice", [value, ctx.ints([start]), ctx.ints([stop]), ctx.ints([1])])


@converter("rnn_scan")
def _rnn_scan(ctx, inputs, outputs, *, shapes, out_shapes, kind, reverse, masks, save):
    """One recurrent layer (``F.lstm``/``gru``/``rnn``), unrolled over its T steps: per
    step the input and hidden products (MatMul with the transposed weights), then the
    cell (the LSTM and GRU ones as the ``lstm_pointwise``/``gru_pointwise`` converters
    write them). Outputs y (T, N, H), h_n and, for the LSTM, c_n (N, H)."""
    from gpudl.backend import to_numpy

    if masks is not None and not np.asarray(to_numpy(masks)).all():
        raise ExportError("gd.export_onnx: a recurrent layer with lengths (variable-length "
                          "sequences) has no ONNX converter yet; export it on full-length "
                          "sequences (no 'lengths')")
    lstm = kind == "lstm"
    if lstm:
        x, h, c, w_ih, w_hh, b_ih, b_hh = inputs
    else:
        (x, h, w_ih, w_hh, b_ih, b_hh), c = inputs, None
    t_len, hidden = shapes[0][0], shapes[1][-1]
    w_ih_t = ctx.node("Transpose", [w_ih], perm=[1, 0])  # (I, G)
    w_hh_t = ctx.node("Transpose", [w_hh], perm=[1, 0])  # (H, G)
    zero = ctx.ints([0])
    parts = [ctx.fresh("step") for _ in range(t_len)]
    ctx.node("Split", [x, ctx.ints([1] * t_len)], parts, axis=0)  # T x (1, N, I)
    ys: list[str] = [""] * t_len
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        x_t = ctx.node("Squeeze", [parts[t], zero])  # (N, I)
        gi = ctx.node("Add", [ctx.node("MatMul", [x_t, w_ih_t]), b_ih])  # (N, G)
        if kind == "gru":  # torch's GRU: b_hh stays with W_hh h (r scales its n part)
            gh = ctx.node("Add", [ctx.node("MatMul", [h, w_hh_t]), b_hh])
            h_new = ctx.fresh("h")
            _gru_pointwise(ctx, [gi, gh, h], [h_new], shapes=[None, None, (0, hidden)],
                           out_shapes=None)
        elif kind == "gru_reset_before":  # every bias outside r; n sees W_hn (r h)
            gi = ctx.node("Add", [gi, b_hh])
            rz = ctx.node("Sigmoid", [ctx.node("Add", [
                _cols(ctx, gi, 0, 2 * hidden),
                ctx.node("MatMul", [h, _cols(ctx, w_hh_t, 0, 2 * hidden)])])])
            r, z = _cols(ctx, rz, 0, hidden), _cols(ctx, rz, hidden, 2 * hidden)
            n = ctx.node("Tanh", [ctx.node("Add", [
                _cols(ctx, gi, 2 * hidden, 3 * hidden),
                ctx.node("MatMul", [ctx.node("Mul", [r, h]),
                                    _cols(ctx, w_hh_t, 2 * hidden, 3 * hidden)])])])
            h_new = ctx.node("Add", [n, ctx.node("Mul", [z, ctx.node("Sub", [h, n])])])
        else:
            pre = ctx.node("Add", [ctx.node("Add", [gi, b_hh]),
                                   ctx.node("MatMul", [h, w_hh_t])])  # (N, G)
            if lstm:
                h_new, c_new = ctx.fresh("h"), ctx.fresh("c")
                _lstm_pointwise(ctx, [pre, c], [h_new, c_new],
                                shapes=[(0, 4 * hidden), (0, hidden)], out_shapes=None)
                c = c_new
            else:
                h_new = ctx.node("Tanh" if kind == "rnn_tanh" else "Relu", [pre])
        h = h_new
        ys[t] = ctx.node("Unsqueeze", [h, zero])  # (1, N, H)
    ctx.node("Concat", ys, [outputs[0]], axis=0)
    ctx.node("Identity", [h], [outputs[1]])
    if lstm:
        ctx.node("Identity", [c], [outputs[2]])
