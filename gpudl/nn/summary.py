"""``model.summary(x)``: layer, output shape, parameter count and MACs, with totals.

Leaf layers are recorded by running the model once on the example with each leaf's
``apply`` wrapped, so any container (Sequential, Residual, Concat, graph Model) works.
A layer object used twice appears on two rows but its parameters count once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.nn.base import count_params
from gpudl.tree import tree_leaves


def _walk(layer, path: str, out: dict[int, str], params: Any) -> None:
    children = getattr(layer, "children", None)
    if children is None:
        out.setdefault(id(layer), path or type(layer).__name__.lower())
        return
    for name, child in children():
        _walk(child, f"{path}.{name}" if path else name, out, None)


def _subtree(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def summary_data(model, x_example, key=None) -> dict:
    """Rows ``{name, type, output_shape, params, macs}`` plus totals (trainable vs frozen)."""
    key = gdr.key(0) if key is None else key
    params, state = model.init(key, x_example)
    paths: dict[int, str] = {}
    _walk(model, "", paths, params)
    leaves = {}
    stack = [model]
    while stack:
        layer = stack.pop()
        children = getattr(layer, "children", None)
        if children is None:
            leaves[id(layer)] = layer
        else:
            stack.extend(child for _, child in children())
    rows: list[dict] = []
    counted: set[int] = set()

    def wrap(layer):
        original = layer.apply

        def recorded(p, s, x, *, train=False, key=None):
            y, s2 = original(p, s, x, train=train, key=key)
            first = id(layer) not in counted
            counted.add(id(layer))
            shape = tuple(y.shape) if hasattr(y, "shape") else [tuple(v.shape) for v in y]
            rows.append({
                "name": paths.get(id(layer), type(layer).__name__),
                "type": type(layer).__name__,
                "output_shape": shape,
                "params": count_params(p) if first else 0,
                "macs": int(layer.macs(x, y, p)) if hasattr(y, "shape") else 0,
            })
            return y, s2

        layer.apply = recorded

    for layer in leaves.values():
        wrap(layer)
    try:
        out, _ = model.apply(params, state, x_example, train=False)
    finally:
        for layer in leaves.values():
            del layer.apply
    mask = model.trainable_mask(params)
    flags = tree_leaves(mask)
    sizes = [int(np.prod(leaf.shape)) for leaf in tree_leaves(params)]
    trainable = int(sum(n for n, f in zip(sizes, flags, strict=True) if f))
    total = int(sum(sizes))
    return {
        "rows": rows,
        "input_shape": tuple(x_example.shape) if hasattr(x_example, "shape") else None,
        "output_shape": tuple(out.shape) if hasattr(out, "shape") else None,
        "total_params": total,
        "trainable_params": trainable,
        "frozen_params": total - trainable,
        "total_macs": int(sum(r["macs"] for r in rows)),
        "state_size": count_params(state),
    }


def summary_table(model, x_example, key=None) -> str:
    data = summary_data(model, x_example, key)
    head = ("Layer", "Type", "Output shape", "Params", "MACs")
    body = [(r["name"], r["type"], str(r["output_shape"]), f"{r['params']:,}", f"{r['macs']:,}")
            for r in data["rows"]]
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
        f"Total MACs for this input: {data['total_macs']:,}",
    ]
    return "\n".join(out)
