"""Gradient transformations: pure ``init``/``update`` pairs, ``chain`` and ``apply_updates``.

A :class:`GradientTransformation` is two pure functions (optax's design):

- ``init(params) -> state``: the optimizer state, a tree of arrays (on the params'
  device, in the params' dtype) and Python ints (step counts);
- ``update(grads, state, params=None) -> (updates, new_state)``: ``updates`` has the
  structure of ``grads``. Updates are already scaled by ``-lr``, so a step is
  ``params = apply_updates(params, updates)`` (a plain sum).

Every rule works leaf-wise with the leaf's own array module (NumPy or CuPy), so an
update runs on the device that holds the parameters, never converting to NumPy.
Hyperparameters are plain Python floats, which keep float32 leaves float32 under
NumPy 2's promotion rules.

``None`` in a tree is an empty subtree: masked-out leaves (see ``masking.py``) are
``None`` in the trees an inner transformation sees, so it keeps no state for them.

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> opt = optim.chain(optim.clip(1.0), optim.scale(-0.1))
    >>> params = {"w": np.array([1.0, 2.0])}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": np.array([5.0, -0.5])}, state, params)
    >>> optim.apply_updates(params, updates)["w"].tolist()
    [0.9, 2.05]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from gpudl.backend import module_of
from gpudl.errors import (
    ArgumentTypeError,
    ConfigError,
    OptimizerStateError,
    ShapeError,
    TreeMismatchError,
)
from gpudl.tree import assert_same_structure, flatten_with_paths, tree_map

Schedule = Callable[[int], float]


class GradientTransformation(NamedTuple):
    """A pair of pure functions ``init(params) -> state`` and
    ``update(grads, state, params=None) -> (updates, state)``."""

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class EmptyState(NamedTuple):
    """The state of a stateless transformation (a tree with no leaves)."""


class ScheduleState(NamedTuple):
    """How many updates have been made: the argument of a learning-rate schedule."""

    count: int


# ----------------------------------------------------------------------------- checks
def check_structure(ref: Any, grads: Any, op: str, ref_name: str = "params") -> None:
    """Raise :class:`TreeMismatchError` (prefixed by ``op``) when ``grads`` and ``ref`` differ.

    The message names the keys missing from, or extra in, the grads tree.
    """
    try:
        assert_same_structure(ref, grads, names=(ref_name, "grads"))
    except TreeMismatchError as exc:
        raise TreeMismatchError(
            f"{op}: the grads tree does not match the {ref_name} tree ({exc}). Pass the "
            f"gradients of the same parameters the optimizer was initialised with."
        ) from None


def check_hparam(op: str, name: str, value: Any, *, low: float = 0.0, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A hyperparameter as a Python float, checked to lie in its range (ValueError names it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{op}: {name} must be a real number, got "
                                f"{type(value).__name__} {value!r}")
    value = float(value)
    bad = math.isnan(value) or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        lo = "(" if low_open else "["
        hi = "" if high is None else f"{high})" if high_open else f"{high}]"
        rng = f"{lo}{low}, {hi or 'inf)'}"
        raise ConfigError(f"{op}: {name} must be in {rng}, got {value}")
    return value


def as_schedule(lr: Any, op: str, name: str = "lr") -> Schedule | float:
    """A float learning rate (checked >= 0) or a ``step -> lr`` callable (checked when called)."""
    if callable(lr):
        return lr
    return check_hparam(op, name, lr)


def schedule_value(lr: Any, count: int, op: str, name: str = "lr") -> float:
    value = float(lr(count))
    if math.isnan(value) or value < 0.0:
        raise ConfigError(f"{op}: the {name} schedule gave {value} at step {count}; it must "
                          "return a number >= 0 at every step")
    return value


class _Box:
    """An opaque leaf holding a tuple, so tree_map can return several trees at once."""

    __slots__ = ("items",)

    def __init__(self, items: tuple):
        self.items = items


def map_leaves(f: Callable, n_out: int, grads: Any, *others: Any, op: str = "update") -> tuple:
    """``f(g, *o) -> tuple of n_out`` leaf-wise over trees matched by key; ``n_out`` trees back.

    Structures must already be checked (``None`` subtrees in ``grads`` are skipped); a
    leaf of ``others`` (optimizer state) whose shape is not its gradient's raises
    :class:`OptimizerStateError` naming it (state made for other params would broadcast).
    """

    def leaf(g, *o):
        # The state trees are made together by init: the first one stands for all.
        if o and getattr(o[0], "shape", None) != getattr(g, "shape", None):
            _state_shapes(op, grads, others)
        return _Box(tuple(f(g, *o)))

    boxed = tree_map(leaf, grads, *others)
    return tuple(tree_map(lambda b, i=i: b.items[i], boxed) for i in range(n_out))


def _state_shapes(op: str, grads: Any, others: tuple) -> None:
    """Name the first state leaf whose shape is not its gradient's (the error path)."""
    for other in others:
        state = dict(flatten_with_paths(other))
        for path, g in flatten_with_paths(grads):
            got = getattr(state.get(path), "shape", None)
            if got is not None and tuple(got) != tuple(g.shape):
                raise OptimizerStateError(
                    f"{op}: the optimizer state for '{path}' has shape {tuple(got)} but its "
                    f"gradient has shape {tuple(g.shape)}: the state was made for other params "
                    "(another head or model). Make it with opt_state = opt.init(params) from "
                    "these params.")


# ----------------------------------------------------------------------------- combinators
def chain(*transforms: GradientTransformation, name: str = "chain") -> GradientTransformation:
    """Apply transformations one after the other; the state is a tuple of their states.

    ``update`` checks that ``grads`` matches ``params`` (when given); ``name`` labels errors.

    Example:
        >>> import numpy as np
        >>> opt = chain(scale(2.0), scale(-0.5))
        >>> opt.update({"w": np.array([3.0])}, opt.init({"w": np.zeros(1)}))[0]["w"].tolist()
        [-3.0]
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise ArgumentTypeError(
                f"{name}: argument {i} must be a GradientTransformation (init/update pair), got "
                f"{type(t).__name__}"
            )

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise OptimizerStateError(
                f"{name}.update: the state must be a tuple of {len(transforms)} states (from "
                f"this optimizer's init), got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple) else "")
                + "; it looks like another optimizer's state. Make it with "
                "opt_state = opt.init(params) from this optimizer."
            )
        if params is not None:
            check_structure(params, grads, name)
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            try:
                grads, s = t.update(grads, s, params)
            except OptimizerStateError as err:
                if not str(err).startswith(f"{name}.update"):
                    raise OptimizerStateError(f"{name}.update: {err}") from None
                raise
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def check_state(op: str, state: Any, expected: type) -> None:
    """An optimizer state of the kind this transformation's ``init`` makes, or a named
    :class:`OptimizerStateError` (another optimizer's state: sgd's given to adam)."""
    if type(state) is not expected:
        raise OptimizerStateError(
            f"{op}: the state is a {type(state).__name__}, expected a {expected.__name__}: "
            "it was made by another optimizer (or another configuration of this one). Make "
            "it with opt_state = opt.init(params) from the optimizer whose update you call.")


def _shape_changes(params: Any, updates: Any) -> None:
    """Raise ShapeError naming the first leaf whose update has another shape (error path)."""
    ups = dict(flatten_with_paths(updates))
    for path, p in flatten_with_paths(params):
        got, want = getattr(ups.get(path), "shape", None), getattr(p, "shape", ())
        if got is not None and tuple(got) != tuple(want):
            raise ShapeError(
                f"apply_updates: the update for '{path}' has shape {tuple(got)} but the "
                f"parameter has shape {tuple(want)}; an update must have its parameter's shape "
                "(adding it would broadcast). Pass the updates that opt.update made from the "
                "gradients of these same params.")


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` leaf-wise, keeping each parameter's dtype and shape.

    An update of another shape than its parameter raises :class:`~gpudl.errors.ShapeError`
    naming the leaf (it would broadcast and silently change the parameter's shape).

    Example:
        >>> import numpy as np
        >>> apply_updates({"w": np.ones(2, np.float32)}, {"w": np.array([0.5, -1.0])})["w"]
        array([1.5, 0. ], dtype=float32)
    """
    check_structure(params, updates, "apply_updates", "params")

    def add(p, u):
        u_shape = getattr(u, "shape", None)
        if u_shape is not None and u_shape != getattr(p, "shape", ()):
            _shape_changes(params, updates)
        out = p + u
        dtype = getattr(p, "dtype", None)
        if dtype is not None and out.dtype != dtype:
            out = out.astype(dtype)  # e.g. float64 updates must not upcast float32 params
        return out

    return tree_map(add, params, updates)


def scale_updates(updates: Any, factor: float) -> Any:
    """Multiply every update by a Python float (e.g. a reduce-on-plateau ``state.scale``)."""
    factor = float(factor)
    return updates if factor == 1.0 else tree_map(lambda u: u * factor, updates)


# ----------------------------------------------------------------------------- basic pieces
def identity() -> GradientTransformation:
    """Pass the gradients through unchanged."""
    return GradientTransformation(lambda params: EmptyState(), lambda g, s, p=None: (g, s))


def set_to_zero() -> GradientTransformation:
    """Zero updates (what frozen parameters get)."""

    def update(grads, state, params=None):
        return tree_map(lambda g: module_of(g).zeros_like(g), grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale(factor: float) -> GradientTransformation:
    """Multiply updates by a constant ``factor`` (any sign).

    Example:
        >>> import numpy as np
        >>> scale(-0.1).update(np.array([1.0, 2.0]), EmptyState())[0].tolist()
        [-0.1, -0.2]
    """
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise ArgumentTypeError(f"scale: factor must be a real number, got "
                                f"{type(factor).__name__} {factor!r}")
    factor = float(factor)

    def update(grads, state, params=None):
        return tree_map(lambda g: g * factor, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_schedule(schedule: Schedule) -> GradientTransformation:
    """Multiply updates by ``schedule(count)``, where ``count`` (in the state) starts at 0."""
    if not callable(schedule):
        raise ArgumentTypeError(f"scale_by_schedule: schedule must be callable step -> factor, got "
                        f"{type(schedule).__name__}")

    def update(grads, state, params=None):
        check_state("scale_by_schedule", state, ScheduleState)
        factor = float(schedule(state.count))
        return tree_map(lambda g: g * factor, grads), ScheduleState(state.count + 1)

    return GradientTransformation(lambda params: ScheduleState(0), update)


def scale_by_learning_rate(lr: float | Schedule, *, op: str = "scale_by_learning_rate"
                           ) -> GradientTransformation:
    """Multiply updates by ``-lr``; ``lr`` is a float or a schedule ``step -> lr``.

    With a schedule, step ``t`` (0 for the first update) uses ``lr(t)``: the state holds
    ``t`` as a Python int, so checkpoints keep it.

    Example:
        >>> import numpy as np
        >>> t = scale_by_learning_rate(lambda step: 0.1 / (step + 1))
        >>> s = t.init(np.zeros(1))
        >>> u, s = t.update(np.ones(1), s); u2, s = t.update(np.ones(1), s)
        >>> u.tolist(), u2.tolist(), s.count
        ([-0.1], [-0.05], 2)
    """
    lr = as_schedule(lr, op)
    if not callable(lr):
        neg = -lr

        def update_const(grads, state, params=None):
            return tree_map(lambda g: g * neg, grads), state

        return GradientTransformation(lambda params: EmptyState(), update_const)

    def update(grads, state, params=None):
        check_state(op, state, ScheduleState)
        neg = -schedule_value(lr, state.count, op)
        return tree_map(lambda g: g * neg, grads), ScheduleState(state.count + 1)

    return GradientTransformation(lambda params: ScheduleState(0), update)
