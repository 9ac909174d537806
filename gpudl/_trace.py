"""The tape's building blocks: traces, nodes, traced values and the primitive registry.

A :class:`Primitive` called on plain arrays is just its ``impl``; called on
:class:`Traced` values it records a :class:`Node` on the innermost trace (:func:`_bind`).
Nested traces (grad of grad) box values of outer traces again. The backward pass over
these nodes is in :mod:`gpudl._backward`; the user API (``grad``, ``vjp``...) in
:mod:`gpudl.autodiff`, which re-exports every name here.

Example:
    >>> import numpy as np
    >>> double = Primitive("double_demo", lambda x: 2 * x, lambda g, out, x: (2 * g,),
    ...                    register=False)
    >>> double(np.array([1.0, 2.0])).tolist()
    [2.0, 4.0]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from gpudl import backend
from gpudl.backend import check_same_device
from gpudl.errors import ShapeError

# name -> Primitive. Tests walk this registry to make sure every primitive has a gradient check.
PRIMITIVES: dict[str, Primitive] = {}

# numpy ufunc name -> gpudl op, filled in by gpudl.ops, so np.tanh(traced) works.
UFUNC_DISPATCH: dict[str, Callable] = {}

_trace_ids = itertools.count(1)


class Trace:
    """One grad call. Later (inner) traces have higher levels."""

    __slots__ = ("level",)

    def __init__(self) -> None:
        self.level = next(_trace_ids)


class Node:
    """One recorded primitive application (or an input leaf when ``prim`` is None)."""

    __slots__ = ("prim", "args", "kwargs", "out", "parents", "__weakref__")

    def __init__(self, prim, args, kwargs, out, parents):
        self.prim = prim
        self.args = args  # inputs with this trace's boxes removed
        self.kwargs = kwargs
        self.out = out  # result(s) with this trace's boxes removed
        self.parents = parents  # ((argnum, parent_node, parent_output_index), ...)


class Traced:
    """A value being differentiated. Behaves like an array: operators, ``.shape``, ``.T``...

    Users never build these; they appear only inside functions passed to ``gd.grad``.
    """

    __slots__ = ("value", "trace", "node", "index")
    __array_priority__ = 1000.0

    def __init__(self, value, trace: Trace, node: Node, index: int | None = None):
        self.value = value
        self.trace = trace
        self.node = node
        self.index = index

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: self.value.size)

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Traced(level={self.trace.level}, {unbox_all(self)!r})"

    def __float__(self) -> float:
        return float(unbox_all(self))

    def __int__(self) -> int:
        return int(unbox_all(self))

    def __bool__(self) -> bool:
        return bool(unbox_all(self))

    def item(self):
        return unbox_all(self).item()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "a traced value cannot be turned into a NumPy array inside gd.grad: that would "
            "cut the gradient. Use gd.ops functions (gd.ops.exp, ...) or gd.stop_gradient(x) "
            "if you really want a constant."
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        op = UFUNC_DISPATCH.get(ufunc.__name__) if method == "__call__" and not kwargs else None
        if op is None:
            raise TypeError(
                f"numpy.{ufunc.__name__} ({method}) is not differentiable by gpudl; "
                f"use the gpudl op of the same name from gd.ops instead"
            )
        return op(*inputs)


backend.BOXED_TYPES = (Traced,)


def unbox_all(x: Any) -> Any:
    """The plain array inside any number of trace levels (identity for plain arrays)."""
    while type(x) is Traced:
        x = x.value
    return x


def is_traced(x: Any) -> bool:
    return type(x) is Traced


class Primitive:
    """A differentiable op: forward ``impl`` and ``vjp`` rule side by side.

    ``impl(*arrays, **static)`` computes on plain arrays. ``vjp(g, out, *arrays, **static)``
    returns one cotangent per positional argument (None where there is none). The
    cotangent may have a broadcast shape: it is summed back to the input's shape centrally.
    Only positional arguments can be traced; keyword arguments are static. With
    ``multiple_results=True`` the impl returns a tuple and the vjp gets a tuple of
    cotangents (zeros for unused outputs). ``register=False`` keeps a primitive out of
    :data:`PRIMITIVES` (test-only rules; the registry demands a gradient case for the rest).

    Example:
        >>> import numpy as np
        >>> square = Primitive(
        ...     "square_demo", lambda x: x * x, lambda g, out, x: (2 * g * x,), register=False
        ... )
        >>> float(square(np.array(3.0)))
        9.0
    """

    __slots__ = ("name", "impl", "vjp", "differentiable", "multiple_results")

    def __init__(
        self,
        name: str,
        impl: Callable,
        vjp: Callable | None = None,
        *,
        multiple_results: bool = False,
        register: bool = True,
    ) -> None:
        self.name = name
        self.impl = impl
        self.vjp = vjp
        self.differentiable = vjp is not None
        self.multiple_results = multiple_results
        if register:
            if name in PRIMITIVES:
                raise ValueError(f"primitive {name!r} is registered twice")
            PRIMITIVES[name] = self

    def __repr__(self) -> str:
        return f"Primitive({self.name})"

    def __call__(self, *args, **kwargs):
        for a in args:
            if type(a) is Traced:
                return _bind(self, args, kwargs)
        try:
            return self.impl(*args, **kwargs)
        except TypeError:
            # NumPy and CuPy arrays mixed: say so by name instead of CuPy's generic TypeError.
            check_same_device(args, self.name)
            raise
        except ValueError as exc:
            if "broadcast" not in str(exc):
                raise
            shapes = [getattr(a, "shape", type(a).__name__) for a in args]
            raise ShapeError(
                f"{self.name}: operand shapes {shapes} do not broadcast together ({exc}). "
                "Align the trailing dims or reshape one operand."
            ) from exc


def _bind(prim: Primitive, args: tuple, kwargs: dict):
    top: Trace | None = None
    for a in args:
        if type(a) is Traced and (top is None or a.trace.level > top.level):
            top = a.trace
    unboxed = tuple(a.value if type(a) is Traced and a.trace is top else a for a in args)
    out = prim(*unboxed, **kwargs)
    if not prim.differentiable:
        return out
    parents = tuple(
        (i, a.node, a.index) for i, a in enumerate(args) if type(a) is Traced and a.trace is top
    )
    node = Node(prim, unboxed, kwargs, out, parents)
    if prim.multiple_results:
        return tuple(Traced(o, top, node, i) for i, o in enumerate(out))
    return Traced(out, top, node)


def nondifferentiable(name: str, impl: Callable) -> Primitive:
    """An op with no gradient (argmax, comparisons, sign): traced inputs give plain outputs."""
    return Primitive(name, impl, None, register=False)
