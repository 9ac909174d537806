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

import contextlib
import itertools
import linecache
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpudl import backend
from gpudl.backend import check_same_device
from gpudl.errors import ConfigError, GradientError, NonFiniteError, ShapeError

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
        raise GradientError(
            "a traced value cannot be turned into a NumPy array inside gd.grad: that would "
            "cut the gradient. Use gd.ops functions (gd.ops.exp, ...) or gd.stop_gradient(x) "
            "if you really want a constant."
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        op = UFUNC_DISPATCH.get(ufunc.__name__) if method == "__call__" and not kwargs else None
        if op is None:
            raise GradientError(
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
                raise ConfigError(f"primitive {name!r} is registered twice")
            PRIMITIVES[name] = self

    def __repr__(self) -> str:
        return f"Primitive({self.name})"

    def __call__(self, *args, **kwargs):
        for a in args:
            if type(a) is Traced:
                return _bind(self, args, kwargs)
        try:
            out = self.impl(*args, **kwargs)
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
        if _DEBUG_NANS:  # the one check gd.debug_nans costs when it is off
            _check_forward(self, out, args)
        return out


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
    if _DEBUG_NANS:  # where the forward op was called, for a NaN in its backward
        NODE_SITES[node] = _call_site()
    if prim.multiple_results:
        return tuple(Traced(o, top, node, i) for i, o in enumerate(out))
    return Traced(out, top, node)


def nondifferentiable(name: str, impl: Callable) -> Primitive:
    """An op with no gradient (argmax, comparisons, sign): traced inputs give plain outputs."""
    return Primitive(name, impl, None, register=False)


# ----------------------------------------------------------------------------- debug_nans
# gd.debug_nans(): every primitive output (forward) and every vjp cotangent (backward, in
# gpudl._backward) is checked for NaN/Inf while this flag is set. Off, the cost is the one
# `if _DEBUG_NANS` in Primitive.__call__ (and one in backward()).
_DEBUG_NANS = False
NODE_SITES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Node -> forward site
_GPUDL_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# gpudl's own op machinery: a site "inside gpudl" names the first frame outside these.
_MACHINERY = tuple(_GPUDL_DIR + f for f in ("_trace.py", "_backward.py", "autodiff.py",
                                            "ops" + os.sep))


@contextlib.contextmanager
def debug_nans(enabled: bool = True) -> Iterator[None]:
    """Within the block, the first primitive that produces a NaN or Inf raises.

    Forward: every primitive's outputs are checked; backward: every gradient (vjp)
    cotangent. The :class:`~gpudl.errors.NonFiniteError` names the primitive, which
    output (or argument, for a gradient), whether its inputs were already non-finite, and
    the user's ``file:line`` that called it (the first frame outside gpudl), plus the
    gpudl function it ran in. Slow (a check and, on the GPU, a sync per op): for finding
    a NaN, not for training. Off, it costs one flag check per op. Nests; ``enabled=False``
    turns it off inside an enclosing block.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> with gd.debug_nans(), np.errstate(divide="ignore"):
        ...     gd.ops.log(np.array([1.0, 0.0]))
        Traceback (most recent call last):
        ...
        gpudl.errors.NonFiniteError: gd.debug_nans: primitive 'log' produced -inf ...
    """
    global _DEBUG_NANS
    previous, _DEBUG_NANS = _DEBUG_NANS, bool(enabled)
    try:
        yield
    finally:
        _DEBUG_NANS = previous


@contextlib.contextmanager
def nan_checks_paused() -> Iterator[None]:
    """No forward checks inside (the backward pass checks each vjp's result instead)."""
    global _DEBUG_NANS
    previous, _DEBUG_NANS = _DEBUG_NANS, False
    try:
        yield
    finally:
        _DEBUG_NANS = previous


def debug_nans_enabled() -> bool:
    return _DEBUG_NANS


def non_finite_kind(x: Any) -> str | None:
    """``"nan"``, ``"inf"``, ``"-inf"`` for a float array (or number) holding one, else None."""
    raw = unbox_all(x)
    dtype = getattr(raw, "dtype", None)
    if dtype is None:
        if not isinstance(raw, float | complex):
            return None
        raw = np.asarray(raw)
    elif np.dtype(dtype).kind not in "fc":
        return None
    xp = backend.module_of(raw)
    if bool(xp.isfinite(raw).all()):
        return None
    if bool(xp.isnan(raw).any()):
        return "nan"
    return "inf" if bool((raw == xp.inf).any()) else "-inf"


def _call_site() -> tuple[str, str, str]:
    """``(where, source, inner)``: ``file:line`` of the first frame outside gpudl, its
    source line, and the innermost gpudl frame outside the op machinery (the gpudl
    function the op ran in; empty when there is none)."""
    frame, inner = sys._getframe(1), ""
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_GPUDL_DIR):
            break
        if not inner and not name.startswith(_MACHINERY):
            inner = f"{os.path.relpath(name, os.path.dirname(_GPUDL_DIR.rstrip(os.sep)))}:" \
                    f"{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    if frame is None:
        return "an unknown place", "", inner
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}", line, inner


def _raise_non_finite(message: str, prim: str, output: int, phase: str,
                      site: tuple[str, str, str], label: str = "Called at") -> None:
    where, source, inner = site
    err = NonFiniteError(
        f"{message}. {label} {where}" + (f" `{source}`" if source else "")
        + (f", in {inner}" if inner else "") + ". "
        "Common causes: log or division at 0, sqrt of a negative, exp overflow (use "
        "log_softmax / logsumexp forms), a learning rate too high, or NaN in the data."
    )
    err.primitive, err.output, err.phase, err.where = prim, output, phase, where
    raise err


def _bad_inputs(args: tuple) -> str:
    """``"argument 0 (nan), ..."`` for the non-finite ones, or ``""``."""
    return ", ".join(f"argument {i} ({kind})" for i, a in enumerate(args)
                     if (kind := non_finite_kind(a)) is not None)


def _check_forward(prim: Primitive, out: Any, args: tuple) -> None:
    outs = out if prim.multiple_results else (out,)
    for i, o in enumerate(outs):
        kind = non_finite_kind(o)
        if kind is not None:
            which = f"output {i}" if prim.multiple_results else "its output"
            bad = _bad_inputs(args)
            inputs = (f"its inputs already held non-finite values: {bad}" if bad else
                      "its inputs were all finite")
            _raise_non_finite(
                f"gd.debug_nans: primitive {prim.name!r} produced {kind} in {which} "
                f"(shape {tuple(getattr(o, 'shape', ()))}); {inputs}", prim.name, i,
                "forward", _call_site())


def check_cotangent(g: Any, node: Node, argnum: int, upstream: Any) -> None:
    """Raise if the vjp of ``node`` gave a non-finite cotangent for argument ``argnum``."""
    kind = non_finite_kind(g)
    if kind is None:
        return
    ups = upstream if isinstance(upstream, tuple) else (upstream,)
    if any(non_finite_kind(u) is not None for u in ups):
        cause = "the incoming gradient was already non-finite"
    elif bad := _bad_inputs(node.args):
        cause = f"its forward inputs held non-finite values: {bad}"
    else:
        cause = (f"the incoming gradient and the forward inputs were finite, so the "
                 f"derivative of {node.prim.name!r} is not finite at these inputs")
    site = NODE_SITES.get(node, ("an unknown place (the forward pass ran outside "
                                 "gd.debug_nans)", "", ""))
    _raise_non_finite(
        f"gd.debug_nans: the gradient (vjp) of primitive {node.prim.name!r} produced {kind} "
        f"for its argument {argnum} (shape {tuple(getattr(unbox_all(g), 'shape', ()))}): "
        f"{cause}", node.prim.name, argnum, "backward", site,
        label="Its forward op was called at")
