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

Where things live: traces, traced values, :class:`Primitive` and the :data:`PRIMITIVES`
registry in :mod:`gpudl._trace`; the backward pass in :mod:`gpudl._backward`; the user
API (``grad``, ``value_and_grad``, ``vjp``, ``stop_gradient``) here. This module
re-exports every name of the other two, so ``from gpudl.autodiff import ...`` is the one
import for all of them.

Example:
    >>> import numpy as np, gpudl as gd
    >>> gd.grad(lambda x: (x * x).sum())(np.array([1.0, 2.0]))
    array([2., 4.])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import backend
from gpudl._backward import (  # noqa: F401  (re-exported: gpudl.autodiff is the one import)
    _accumulate,
    _broadcasts_to,
    _fit_cotangent,
    _toposort,
    _zeros_like,
    backward,
    postorder,
)
from gpudl._trace import (  # noqa: F401  (re-exported: gpudl.autodiff is the one import)
    PRIMITIVES,
    UFUNC_DISPATCH,
    Node,
    Primitive,
    Trace,
    Traced,
    _bind,
    _trace_ids,
    debug_nans,
    is_traced,
    nondifferentiable,
    unbox_all,
)
from gpudl.errors import GradientError, TreeMismatchError
from gpudl.tree import (
    assert_same_structure,
    flatten_with_paths,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
)

# The all-ones seed cotangents of running grad calls, by id. Ops that pass a cotangent
# through unchanged (add, identity reshapes) hand the very same object on, so a fused
# kernel can tell "the upstream gradient is exactly 1" and skip a scaling pass.
_UNIT_SEEDS: dict[int, Any] = {}


def is_unit_cotangent(g: Any) -> bool:
    """True when ``g`` is the all-ones seed of a running ``grad``/``value_and_grad`` call."""
    return id(g) in _UNIT_SEEDS and _UNIT_SEEDS[id(g)] is g


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
        if hasattr(raw_out, "shape") and math.prod(raw_out.shape) != 1:
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
