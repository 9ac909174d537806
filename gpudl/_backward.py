"""The backward pass: walk the tape in reverse topological order, run each vjp rule, and
fit every cotangent to its input's shape and dtype in one place (:func:`_fit_cotangent`).

The topological order is built iteratively (:func:`postorder`), so a chain of 10,000 ops
needs no recursion; ``gpudl.nn`` graphs use the same walk. :mod:`gpudl.autodiff`
re-exports every name here.

Example:
    >>> postorder(["c"], {"c": ["a", "b"], "b": ["a"], "a": []}.__getitem__)
    ['a', 'b', 'c']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import _trace, backend
from gpudl._trace import PRIMITIVES, Node, Primitive, Traced, unbox_all
from gpudl.errors import GradientError


def _zeros_like(x):
    raw = unbox_all(x)
    xp = backend.module_of(raw)
    return xp.zeros(raw.shape, dtype=raw.dtype)


def _fit_cotangent(g, like, prim: Primitive, argnum: int):
    """Sum a broadcast cotangent back to ``like``'s shape and cast to its dtype (one place)."""
    shape = like.shape if hasattr(like, "shape") else np.shape(like)
    gshape = g.shape if hasattr(g, "shape") else np.shape(g)
    if gshape != shape:
        extra = len(gshape) - len(shape)
        if extra >= 0 and all(n in (1, gshape[i + extra]) for i, n in enumerate(shape)):
            axes = tuple(range(extra)) + tuple(
                i + extra for i, n in enumerate(shape) if n == 1 and gshape[i + extra] != 1
            )
            if axes:
                g = PRIMITIVES["sum"](g, axis=axes, keepdims=False)
        elif _broadcasts_to(gshape, shape):  # e.g. a scalar cotangent for a whole array
            g = PRIMITIVES["broadcast_to"](g, shape=shape)
        elif math.prod(gshape) != math.prod(shape):
            raise GradientError(
                f"gd.grad: the vjp of {prim.name!r} returned a cotangent of shape {gshape} "
                f"for argument {argnum} of shape {shape}; it must have that shape or one "
                "that broadcasts with it. Fix the primitive's vjp rule."
            )
        if g.shape != shape:
            g = PRIMITIVES["reshape"](g, shape=shape)
    dtype = getattr(like, "dtype", None)
    if dtype is not None and getattr(g, "dtype", dtype) != dtype:
        g = PRIMITIVES["astype"](g, dtype=dtype)
    return g


def _broadcasts_to(gshape: tuple, shape: tuple) -> bool:
    try:
        return np.broadcast_shapes(gshape, shape) == tuple(shape)
    except ValueError:
        return False


def postorder(roots: Sequence, parents: Callable[[Any], Sequence]) -> list:
    """Every node reachable from ``roots``, each after all its parents (iterative DFS, so
    chains of any length need no recursion). Used for the tape and for nn graphs."""
    order: list = []
    visited: set[int] = set()
    stack: list[tuple[Any, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in reversed(parents(node)) if id(p) not in visited)
    return order


def _toposort(roots: Sequence[Node]) -> list[Node]:
    """Nodes reachable from ``roots``, inputs first."""
    return postorder(roots, lambda node: [parent for _, parent, _ in node.parents])


def _accumulate(cots: dict, node: Node, index: int | None, g) -> None:
    key = id(node)
    if index is None:
        prev = cots.get(key)
        cots[key] = g if prev is None else prev + g
        return
    slots = cots.setdefault(key, [None] * len(node.out))
    slots[index] = g if slots[index] is None else slots[index] + g


def backward(roots: Sequence[tuple[Traced, Any]]) -> dict[int, Any]:
    """Run the backward pass from ``[(traced_output, cotangent)]``; returns {id(node): cot}.

    Under ``gd.debug_nans()`` each vjp's cotangents are checked (and the forward checks
    of the ops inside the vjp rules are paused, so the error names the rule's primitive).
    """
    if _trace._DEBUG_NANS:
        with _trace.nan_checks_paused():
            return _backward(roots, check=True)
    return _backward(roots, check=False)


def _backward(roots: Sequence[tuple[Traced, Any]], check: bool) -> dict[int, Any]:
    cots: dict[int, Any] = {}
    for y, g in roots:
        _accumulate(cots, y.node, y.index, g)
    for node in reversed(_toposort([y.node for y, _ in roots])):
        if node.prim is None:
            continue  # an input leaf: keep its cotangent for the caller
        c = cots.pop(id(node), None)
        if c is None:
            continue
        if node.prim.multiple_results:
            c = tuple(
                _zeros_like(o) if ci is None else ci for ci, o in zip(c, node.out, strict=True)
            )
        gs = node.prim.vjp(c, node.out, *node.args, **node.kwargs)
        if len(gs) != len(node.args):
            raise GradientError(
                f"gd.grad: the vjp of {node.prim.name!r} returned {len(gs)} cotangents for "
                f"{len(node.args)} positional arguments; it must return one per argument "
                "(None where there is no gradient)."
            )
        for argnum, parent, index in node.parents:
            gi = gs[argnum]
            if callable(gi):  # a deferred rule: computed only because this input needs it
                gi = gi()
            if gi is not None:
                gi = _fit_cotangent(gi, node.args[argnum], node.prim, argnum)
                if check:
                    _trace.check_cotangent(gi, node, argnum, c)
                _accumulate(cots, parent, index, gi)
    return cots
