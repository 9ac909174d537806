"""``model.summary(x)``: layer, output shape, parameter count and MACs, with totals.

The model runs once on the example (in shape mode: no numbers drawn, see
gpudl/nn/shapes.py) with the ``apply`` of every layer it holds wrapped
(layers reached through ``children()`` and through attributes: a Sequential, Residual,
Concat, graph ``nn.Model``, or a model class that keeps its sub-layers as attributes).
A layer whose ``apply`` calls wrapped layers is *expanded*: its children get rows with
dotted names (``encoder.dense1``, the params-tree path where there is one) and the layer
itself gets a row only for parameters that none of its children used. Transformer
encoder/decoder layers are expanded into their attention, feed-forward and norm parts.
Every parameter counts on exactly one row, so the rows add up to the totals. A layer
called several times under the same name (a shared layer, a cell in a loop over time) is
one row: its calls counted, its MACs summed, its parameters counted once; a container
(Sequential, Residual, Concat, graph Model) lists each position it calls a layer at, so a
layer shared by two positions is on two rows and its parameters count on the first.

**What a MAC is here**: one multiply-accumulate of a matrix product or a convolution, as
torch's profilers count them (fvcore, thop, ptflops); elementwise work (activations,
biases, normalization, softmax, pooling, gate nonlinearities) is not counted. Per layer:

* ``Dense`` on (..., I) -> (..., O): ``prod(...) * O * I``; convolutions: each output
  element is a dot product over ``C_in/groups * prod(kernel)``.
* ``RNN``/``LSTM``/``GRU`` on T steps of N sequences: ``T * N * G*H * (I + H)`` per layer
  and direction, G = 1 (Elman), 4 (LSTM), 3 (GRU), I the layer's input size (``D*H``
  above the first layer); every step is counted, also past ``lengths``. The cells: one
  step, ``N * G*H * (I + H)``.
* ``MultiHeadAttention`` with queries (N, Lq, Eq), keys/values (N, Lk, Ek/Ev), width E:
  projections ``N*Lq*E*Eq + N*Lk*E*Ek + N*Lk*E*Ev``, scores ``QK^T`` and the weighted sum
  ``AV`` ``N*Lq*Lk*E`` each (masked entries included: the dense product is computed), and
  the output projection ``N*Lq*E*E``.
* Transformer layers: their attention blocks plus the feed-forward ``2 * N*L*E*ff_dim``.

Work a model does with ``ops``/``F`` calls outside any layer (a GCN's propagation, GPT's
tied output projection) counts only where that model defines ``macs(x, y, params)``.

Example:
    >>> import numpy as np
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.LSTM(8, batch_first=True), nn.TransformerEncoderLayer(2, 16)])
    >>> data = net.summary_dict(np.zeros((2, 5, 3), np.float32))
    >>> [(r["name"], r["macs"]) for r in data["rows"]]  # doctest: +NORMALIZE_WHITESPACE
    [('0', 3520), ('1.self_attn', 3360), ('1.norm1', 0),
     ('1.linear1', 1280), ('1.linear2', 1280), ('1.norm2', 0)]
    >>> data["rows"][0]["macs"] == 5 * 2 * 4 * 8 * (3 + 8)  # T * N * 4H * (I + H)
    True
    >>> data["total_macs"] == sum(r["macs"] for r in data["rows"])
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.nn.attention import MultiHeadAttention, TransformerDecoderLayer, TransformerEncoderLayer
from gpudl.nn.base import Layer, count_params
from gpudl.nn.recurrent import _Recurrent
from gpudl.nn.shapes import all_layers, example_arrays, shape_mode
from gpudl.tree import tree_leaves


def _size(shape) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


def shape_of(value: Any) -> Any:
    """An array's shape as a tuple; nested lists of shapes for tuple/list outputs."""
    if hasattr(value, "shape"):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return [shape_of(v) for v in value]
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    return None


# ------------------------------------------------------------------ MAC formulas
def attention_macs(q, k, v, params: dict) -> int:
    """Projections, ``QK^T``, ``AV`` and the output projection (see the module docstring).
    ``params`` has torch's keys: packed ``in_proj_weight`` (3E, E) or ``q_proj_weight``
    (E, Eq), ``k_proj_weight``, ``v_proj_weight``; then ``out_proj``."""
    e = int(params["out_proj"]["weight"].shape[0])
    nq = _size(q.shape[:-1])  # N * Lq
    lk = int(k.shape[-2])
    if "in_proj_weight" in params:
        wq = wk = wv = (e, int(params["in_proj_weight"].shape[1]))
    else:
        wq, wk, wv = (tuple(params[f"{n}_proj_weight"].shape) for n in "qkv")
    projections = (nq * _size(wq) + _size(k.shape[:-1]) * _size(wk)
                   + _size(v.shape[:-1]) * _size(wv))
    return projections + 2 * nq * lk * e + nq * _size(params["out_proj"]["weight"].shape)


def recurrent_macs(layer: _Recurrent, x, params: dict) -> int:
    """``T * N * G*H * (I + H)`` summed over layers and directions."""
    seq = x["x"] if isinstance(x, dict) else x
    steps_times_batch = int(seq.shape[0]) * int(seq.shape[1])  # T * N in either layout
    return steps_times_batch * sum(
        _size(params[name].shape) for name in params if name.startswith(("weight_ih", "weight_hh")))


def _leaf_macs(layer: Layer, x, y, params: dict) -> int:
    if isinstance(layer, _Recurrent):
        return recurrent_macs(layer, x, params)
    if isinstance(layer, MultiHeadAttention):
        q, k, v, _, _ = layer._parts(x)
        return attention_macs(q, k, v, params)
    return int(layer.macs(x, y, params))


def _transformer_parts(layer: Layer, x, params: dict) -> list[tuple[str, str, Any, int]]:
    """``(name, type, output shape, macs)`` of a transformer layer's parts, in the order
    they run; each part's parameters are ``params[name]``."""
    xs = x["x"] if isinstance(x, dict) else x
    shape, tokens, d = tuple(xs.shape), _size(xs.shape[:-1]), int(xs.shape[-1])
    ff = int(params["linear1"]["weight"].shape[0])
    parts = [("self_attn", "MultiHeadAttention", shape, attention_macs(xs, xs, xs,
                                                                      params["self_attn"])),
             ("norm1", "LayerNorm", shape, 0)]
    if "multihead_attn" in params:
        memory = x["memory"]
        parts += [("multihead_attn", "MultiHeadAttention", shape,
                   attention_macs(xs, memory, memory, params["multihead_attn"])),
                  ("norm2", "LayerNorm", shape, 0)]
    parts += [("linear1", "Dense", (*shape[:-1], ff), tokens * ff * d),
              ("linear2", "Dense", shape, tokens * d * ff)]
    last = "norm3" if isinstance(layer, TransformerDecoderLayer) else "norm2"
    return parts + [(last, "LayerNorm", shape, 0)]


_EXPANDED = (TransformerEncoderLayer, TransformerDecoderLayer)


# ------------------------------------------------------------------ finding the layers
def _path_to(tree: Any, target: Any) -> str | None:
    """Dotted path of ``target`` (by identity) inside a params tree, or None."""
    if not isinstance(tree, dict):
        return None
    for key, value in tree.items():
        if value is target:
            return str(key)
        inner = _path_to(value, target)
        if inner is not None:
            return f"{key}.{inner}"
    return None


# ------------------------------------------------------------------ the recording run
class _Recorder:
    """Rows of one summary run; a stack of frames for the layer calls in progress."""

    def __init__(self, model: Layer, params: dict):
        self.layers, self.names = all_layers(model)
        self.param_ids = {id(leaf) for leaf in tree_leaves(params)}
        self.claimed: set[int] = set()
        self.rows: list[dict] = []
        self.by_key: dict[tuple, dict] = {}
        self.stack: list[dict] = []

    def claim(self, tree: Any) -> int:
        """Scalars of the model's parameters in ``tree`` that no row has counted yet."""
        total = 0
        for leaf in tree_leaves(tree):
            if id(leaf) in self.param_ids and id(leaf) not in self.claimed:
                self.claimed.add(id(leaf))
                total += _size(leaf.shape)
        return total

    def name_for(self, layer: Layer, params: Any) -> str:
        if not self.stack:
            return layer.name or type(layer).__name__.lower()
        parent = self.stack[-1]
        rel = None
        if isinstance(params, dict) and params:
            rel = _path_to(parent["params"], params)
        rel = rel or self.names.get((id(parent["layer"]), id(layer))) \
            or layer.name or layer.prefix()
        return f"{parent['name']}.{rel}" if parent["name"] else rel

    def add(self, name: str, layer_type: str, key: tuple, shape: Any, params: int,
            macs: int, at: int | None = None) -> None:
        row = self.by_key.get(key)
        if row is not None:  # called again: one row, calls and MACs summed
            row.update(output_shape=shape, calls=row["calls"] + 1, macs=row["macs"] + macs,
                       params=row["params"] + params)
            return
        row = {"name": name, "type": layer_type, "output_shape": shape, "params": params,
               "macs": int(macs), "calls": 1}
        self.by_key[key] = row
        self.rows.insert(len(self.rows) if at is None else at, row)

    def wrap(self, layer: Layer):
        original = layer.apply

        def recorded(p, s, x, *, train=False, key=None):
            name = self.name_for(layer, p)
            position = None  # calls at different positions of a container: separate rows
            if self.stack:
                parent = self.stack[-1]
                parent["expanded"] = True
                if callable(getattr(parent["layer"], "children", None)):
                    position = parent["calls"] = parent["calls"] + 1
            # the top-level row is named for the model only when nothing expands it
            frame = {"layer": layer, "params": p, "name": name if self.stack else "",
                     "start": len(self.rows), "expanded": False, "calls": 0,
                     "key": (name, id(layer), position)}
            self.stack.append(frame)
            try:
                y, s2 = original(p, s, x, train=train, key=key)
            finally:
                self.stack.pop()
            self.record(layer, name, frame, p, x, y)
            return y, s2

        return recorded

    def record(self, layer: Layer, name: str, frame: dict, p: Any, x, y) -> None:
        prefix = f"{frame['name']}." if frame["name"] else ""
        if not frame["expanded"] and isinstance(layer, _EXPANDED):
            for part, kind, shape, macs in _transformer_parts(layer, x, p):
                self.add(prefix + part, kind, (*frame["key"], part), shape,
                         self.claim(p.get(part, {})), macs)
            frame["expanded"] = True
        if frame["expanded"]:
            # parameters the layer used itself, outside its children, and the MACs of a
            # ``macs`` it defines for that work of its own
            rest = self.claim(p)
            own = int(layer.macs(x, y, p)) if type(layer).macs is not Layer.macs else 0
            if rest or own:
                self.add(name, type(layer).__name__, frame["key"], shape_of(y), rest, own,
                         at=frame["start"])
            return
        self.add(name, type(layer).__name__, frame["key"], shape_of(y), self.claim(p),
                 _leaf_macs(layer, x, y, p))


def summary_data(model, x_example, key=None) -> dict:
    """Rows ``{name, type, output_shape, params, macs, calls}`` plus totals (trainable vs
    frozen parameters, MACs for this input); the rows add up to the totals.

    Only shapes are needed, so init and the recording run happen in shape mode
    (gpudl/nn/shapes.py): no numbers drawn, Dense/Conv2d outputs as zeros of their shape.
    ``x_example`` may hold arrays or ``ShapeDtype`` leaves."""
    key = gdr.key(0) if key is None else key
    x = example_arrays(x_example)
    with shape_mode(model):
        params, state = model.init(key, x)
        recorder = _Recorder(model, params)
        wrapped = []
        for layer in recorder.layers.values():
            wrapped.append((layer, vars(layer).get("apply")))
            layer.apply = recorder.wrap(layer)
        try:
            out, _ = model.apply(params, state, x, train=False)
        finally:
            for layer, before in reversed(wrapped):
                if before is None:
                    del layer.apply
                else:
                    layer.apply = before
    flags = tree_leaves(model.trainable_mask(params))
    sizes = [_size(leaf.shape) for leaf in tree_leaves(params)]
    trainable = int(sum(n for n, f in zip(sizes, flags, strict=True) if f))
    total = int(sum(sizes))
    rows = recorder.rows
    return {
        "rows": rows,
        "input_shape": shape_of(x_example),
        "output_shape": shape_of(out),
        "total_params": total,
        "trainable_params": trainable,
        "frozen_params": total - trainable,
        "total_macs": int(sum(r["macs"] for r in rows)),
        "state_size": count_params(state),
    }


def summary_table(model, x_example, key=None) -> str:
    """The text of ``model.summary``: one line per row, then the totals."""
    data = summary_data(model, x_example, key)
    with_calls = any(r["calls"] > 1 for r in data["rows"])
    head = ("Layer", "Type", "Output shape", "Params", "MACs") + (("Calls",) if with_calls else ())
    body = [(r["name"], r["type"], str(r["output_shape"]), f"{r['params']:,}", f"{r['macs']:,}")
            + ((str(r["calls"]),) if with_calls else ()) for r in data["rows"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    rule = "-" * len(line(head))
    out = [f"{type(model).__name__} on input {data['input_shape']}", rule, line(head), rule]
    out += [line(b) for b in body]
    out += [
        rule,
        f"Total params: {data['total_params']:,}  (trainable {data['trainable_params']:,}, "
        f"frozen {data['frozen_params']:,})",
        f"Total MACs for this input: {data['total_macs']:,}  (multiply-accumulates of matrix "
        "products and convolutions)",
    ]
    return "\n".join(out)
