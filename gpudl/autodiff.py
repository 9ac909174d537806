"""Reverse-mode automatic differentiation over pure functions of pytrees.

How it works (the tape is built only inside a grad call):

* ``grad``/``value_and_grad``/``vjp`` open a *trace* and box every array leaf of the
  differentiated arguments in a :class:`Traced` value.
* Every differentiable op is a :class:`Primitive`: a forward ``impl`` on plain NumPy/CuPy
  arrays and a ``vjp`` rule written with differentiable gpudl ops. Called on plain arrays
  a primitive is just its ``impl`` (a fast path with no tape). Called on traced values it
  records a :class:`Node` on the tape.
* Nested traces (grad of grad) work like HIPS autograd: a Traced may wrap a value of an
  outer trace; a primitive unboxes the innermost trace's values, recurses, and boxes the
  result again. Because vjp rules use differentiable ops, the backward pass of an inner
  trace is itself recorded by the outer one.
* The backward pass walks nodes in reverse topological order (built iteratively, so a
  chain of 10,000 ops needs no recursion) and reduces every broadcast cotangent back to
  its input's shape in one place (:func:`_fit_cotangent`).

Example:
    >>> import numpy as np, gpudl as gd
    >>> gd.grad(lambda x: (x * x).sum())(np.array([1.0, 2.0]))
    array([2., 4.])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import backend
from gpudl.backend import check_same_device
from gpudl.errors import GradientError, ShapeError, TreeMismatchError
from gpudl.tree import (
    assert_same_structure,
    flatten_with_paths,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
)

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


# The all-ones seed cotangents of running grad calls, by id. Ops that pass a cotangent
# through unchanged (add, identity reshapes) hand the very same object on, so a fused
# kernel can tell "the upstream gradient is exactly 1" and skip a scaling pass.
_UNIT_SEEDS: dict[int, Any] = {}


def is_unit_cotangent(g: Any) -> bool:
    """True when ``g`` is the all-ones seed of a running ``grad``/``value_and_grad`` call."""
    return id(g) in _UNIT_SEEDS and _UNIT_SEEDS[id(g)] is g


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


# ----------------------------------------------------------------------------- backward pass
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
        elif int(np.prod(gshape)) != int(np.prod(shape)):
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
    """Run the backward pass from ``[(traced_output, cotangent)]``; returns {id(node): cot}."""
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
                _accumulate(cots, parent, index, gi)
    return cots


# ----------------------------------------------------------------------------- user API
def _box_leaves(tree: Any, trace: Trace, where: str) -> Any:
    def box(path_leaf):
        path, leaf = path_leaf
        if isinstance(leaf, float | int | bool):
            leaf = np.asarray(leaf)
        dtype = getattr(unbox_all(leaf), "dtype", None)
        if dtype is None or np.dtype(dtype).kind not in "fc":
            name = f"{where}{'.' + path if path else ''}"
            raise GradientError(
                f"gd.grad: {name} has dtype {dtype}; gradients exist only for floating-point "
                f"arrays. Cast it (x.astype('float32')) or leave it out of argnums."
            )
        return Traced(leaf, trace, Node(None, (), {}, None, ()))

    leaves = flatten_with_paths(tree)
    boxed = [box(pl) for pl in leaves]
    _, treedef = tree_flatten(tree)
    return tree_unflatten(treedef, boxed)


def _unbox_level(tree: Any, trace: Trace) -> Any:
    def unbox(x):
        return x.value if type(x) is Traced and x.trace is trace else x

    return tree_map(unbox, tree)


def _leaf_grads(boxed_tree: Any, cots: dict) -> Any:
    def grad_of(b):
        g = cots.get(id(b.node))
        if g is None:
            return _zeros_like(b.value)
        strides = getattr(g, "strides", None) if type(g) is not Traced else None
        if strides and 0 in strides and g.size > 1:
            # A broadcast view (read-only in NumPy): give users a real array to update.
            g = g.copy()
        return g

    return tree_map(grad_of, boxed_tree)


def _normalize_argnums(argnums: int | Sequence[int], nargs: int, fname: str) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not -nargs <= n < nargs:
            raise GradientError(f"{fname}: argnums={argnums} but the function got {nargs} args")
    return tuple(n % nargs for n in nums)


def _split_aux(result: Any, has_aux: bool, fname: str) -> tuple[Any, Any]:
    if not has_aux:
        return result, None
    if not (isinstance(result, tuple | list) and len(result) == 2):
        got = f"a {type(result).__name__}"
        if isinstance(result, tuple | list):
            got += f" of length {len(result)}"
        raise GradientError(
            f"{fname}(has_aux=True): the function must return a pair (value, aux), got {got}"
        )
    return result[0], result[1]


def value_and_grad(
    fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> Callable:
    """Return ``f(*args) -> (value, grads)``; with ``has_aux``, ``((value, aux), grads)``.

    ``fun`` must return a scalar (size-1) array. ``grads`` has the structure of
    ``args[argnums]`` (a tuple of such trees when ``argnums`` is a tuple).

    Example:
        >>> loss, g = value_and_grad(lambda w, x: ((x @ w) ** 2).sum())(np.ones(2), np.eye(2))
        >>> float(loss), g.tolist()
        (2.0, [2.0, 2.0])
    """

    def wrapped(*args, **kwargs):
        nums = _normalize_argnums(argnums, len(args), "gd.value_and_grad")
        trace = Trace()
        args = list(args)
        boxed = {}
        for n in nums:
            boxed[n] = _box_leaves(args[n], trace, f"argument {n}")
            args[n] = boxed[n]
        result = fun(*args, **kwargs)
        out, aux = _split_aux(result, has_aux, "gd.value_and_grad")
        raw_out = unbox_all(out)
        if not hasattr(raw_out, "shape") and not isinstance(raw_out, float | int):
            hint = (
                "; if the extra items are auxiliary data, pass has_aux=True and return "
                "(value, aux)"
                if isinstance(raw_out, tuple | list) and not has_aux
                else ""
            )
            raise GradientError(
                f"gd.grad: the function returned a {type(raw_out).__name__}; grad needs a "
                f"scalar (size-1) array output{hint}."
            )
        if hasattr(raw_out, "shape") and int(np.prod(raw_out.shape)) != 1:
            raise GradientError(
                f"gd.grad: the function returned an array of shape {raw_out.shape}; "
                "grad needs a scalar (size-1) output. Reduce it (.sum() or .mean()), or use "
                "gd.vjp(f, x) and pass a cotangent of that shape."
            )
        cots = {}
        if type(out) is Traced and out.trace is trace:
            raw = unbox_all(out)
            seed = backend.module_of(raw).ones(raw.shape, dtype=raw.dtype)
            _UNIT_SEEDS[id(seed)] = seed  # held alive, so its id cannot be reused meanwhile
            try:
                cots = backward([(out, seed)])
            finally:
                del _UNIT_SEEDS[id(seed)]
        grads = tuple(_leaf_grads(boxed[n], cots) for n in nums)
        value = _unbox_level(out, trace)
        grads_out = grads[0] if isinstance(argnums, int) else grads
        if has_aux:
            return (value, _unbox_level(aux, trace)), grads_out
        return value, grads_out

    wrapped.__name__ = f"value_and_grad({getattr(fun, '__name__', 'f')})"
    wrapped.__doc__ = fun.__doc__
    return wrapped


def grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """Return a function computing the gradient of scalar ``fun`` w.r.t. ``args[argnums]``.

    Example:
        >>> import gpudl as gd
        >>> d2 = gd.grad(gd.grad(gd.ops.tanh))   # second derivative
        >>> round(float(d2(np.array(0.5))), 6)
        -0.726862
    """
    vg = value_and_grad(fun, argnums=argnums, has_aux=has_aux)

    def wrapped(*args, **kwargs):
        (value_aux, grads) = vg(*args, **kwargs)
        if has_aux:
            return grads, value_aux[1]
        return grads

    wrapped.__name__ = f"grad({getattr(fun, '__name__', 'f')})"
    return wrapped


def vjp(fun: Callable, *primals: Any, has_aux: bool = False):
    """Return ``(out, vjp_fn)``; ``vjp_fn(cotangent)`` gives one cotangent tree per primal.

    ``cotangent`` has the structure and shapes of ``out`` (any pytree of arrays).

    Example:
        >>> out, f_vjp = vjp(lambda x: x * 3.0, np.ones(2))
        >>> f_vjp(np.array([1.0, 2.0]))[0].tolist()
        [3.0, 6.0]
    """
    trace = Trace()
    boxed = [_box_leaves(p, trace, f"primal {i}") for i, p in enumerate(primals)]
    out, aux = _split_aux(fun(*boxed), has_aux, "gd.vjp")
    out_paths = flatten_with_paths(out)

    def vjp_fn(cotangent: Any):
        try:
            assert_same_structure(out, cotangent, names=("output", "cotangent"))
        except TreeMismatchError as exc:
            raise GradientError(f"gd.vjp: the cotangent must match the output: {exc}") from None
        # Match leaves by key (dict order may differ), then in the output's order.
        cot_leaves = tree_leaves(tree_map(lambda _, c: c, out, cotangent))
        roots = []
        for (path, y), g in zip(out_paths, cot_leaves, strict=True):
            y_shape = np.shape(unbox_all(y))
            if np.shape(unbox_all(g)) != y_shape:
                where = f" at {path}" if path else ""
                raise GradientError(
                    f"gd.vjp: cotangent shape {np.shape(unbox_all(g))}{where} differs from the "
                    f"output shape {y_shape}; pass a cotangent shaped like the output"
                )
            if type(y) is Traced and y.trace is trace:
                roots.append((y, g))
        cots = backward(roots) if roots else {}
        return tuple(_leaf_grads(b, cots) for b in boxed)

    value = _unbox_level(out, trace)
    if has_aux:
        return value, vjp_fn, _unbox_level(aux, trace)
    return value, vjp_fn


def stop_gradient(x: Any) -> Any:
    """``x`` as a constant: no gradient flows through it (works on pytrees).

    Example:
        >>> grad(lambda x: (x * stop_gradient(x)).sum())(np.array([3.0])).tolist()
        [3.0]
    """
    return tree_map(unbox_all, x)
