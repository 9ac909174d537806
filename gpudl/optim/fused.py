"""Fused updates for the plain optimizer aliases: SGD (momentum, Nesterov, L2) and
Adam/AdamW (L2, decoupled decay, AMSGrad).

``optim.sgd(...)``, ``optim.adam(...)`` and ``optim.adamw(...)`` are still the
:func:`~gpudl.optim.base.chain` of small transformations that ``alias.py`` builds, with
that chain's ``init`` and state; only their ``update`` is :func:`fused`'s. When the
arguments are the regular ones (plain NumPy or CuPy arrays, one dtype and shape per leaf
across the grads, params and state, trees in the same key order, the state this
optimizer's ``init`` made), each leaf is updated by ONE call of the fused body (the
``optim_update.cu`` kernel on CUDA, its NumPy twin on the CPU, :mod:`._optim_kernels`)
instead of ~14 array operations with their temporaries; in every other case (traced
grads under an outer ``gd.grad``, another optimizer's state, mismatched trees, dtypes or
shapes) the chain's own ``update`` runs and raises the errors it always raised. Both give
the same bits: the body performs the chain's operations in the chain's order.

Inside ``gd.fit`` the step goes further (:mod:`gpudl.optim.flat`): the parameters and the
state live in flat buffers and one call updates every leaf in place.

A rule (:class:`SgdRule`, :class:`AdamRule`) knows where its pieces sit in the chain's
state, the scalars of the next step, and the body; :func:`fused_rule` finds the rule of
an optimizer (None for chains, masks, the other optimizers).

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> opt = optim.adam(0.1)
    >>> fused_rule(opt).op, fused_rule(optim.chain(optim.clip(1.0), opt))
    ('adam', None)
    >>> p = {"w": np.array([1.0, -1.0])}
    >>> u, s = opt.update({"w": np.array([0.5, -3.0])}, opt.init(p), p)
    >>> u["w"].round(6).tolist(), s[0].count
    ([-0.1, 0.1], 1)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpudl.autodiff import is_traced
from gpudl.backend import device_of, module_of
from gpudl.optim import _optim_kernels as K
from gpudl.optim.base import (
    EmptyState,
    GradientTransformation,
    ScheduleState,
    schedule_value,
)
from gpudl.optim.transforms import ScaleByAdamState, TraceState


def is_plain_array(x: Any) -> bool:
    """A NumPy or CuPy array, or a NumPy scalar (what ``p + u`` gives for a 0-d
    parameter); not a traced value, a Python number or a list."""
    if type(x) is np.ndarray:
        return True
    return not is_traced(x) and (isinstance(x, np.ndarray | np.generic)
                                 or device_of(x) == "cuda")


class _Rule:
    """What :func:`fused` and :mod:`gpudl.optim.flat` need to know about one alias."""

    op: str
    slot_names: tuple[str, ...] = ()  # the per-leaf state arrays, in body order
    needs_params: bool = False  # weight decay reads the parameters

    def __init__(self, op: str, lr: Any, n_parts: int) -> None:
        self.op, self.lr, self.n_parts = op, lr, n_parts

    # -- the chain's state ------------------------------------------------------------
    def _lr_state_ok(self, s: Any) -> bool:
        return type(s) is (ScheduleState if callable(self.lr) else EmptyState)

    def regular_state(self, state: Any) -> bool:
        """The state this alias's ``init`` makes (anything else: the chain decides)."""
        return (type(state) is tuple and len(state) == self.n_parts
                and self._lr_state_ok(state[-1]) and self._parts_ok(state))

    def _parts_ok(self, state: tuple) -> bool:
        raise NotImplementedError

    def _lr_value(self, state: tuple) -> float:
        if callable(self.lr):  # the chain's check and message (a negative lr raises)
            return schedule_value(self.lr, state[-1].count, self.op)
        return self.lr

    def _next_lr_state(self, state: tuple) -> Any:
        s = state[-1]
        return ScheduleState(s.count + 1) if callable(self.lr) else s

    def slots(self, state: tuple) -> tuple:
        """The state trees that hold one array per parameter, in ``slot_names`` order."""
        raise NotImplementedError

    def scalars(self, state: tuple, lr_scale: float = 1.0):
        """The body's scalars for the step after ``state`` (raises as the chain would)."""
        raise NotImplementedError

    def advance(self, state: tuple, new_slots: tuple) -> tuple:
        """The state after one step, holding ``new_slots``."""
        raise NotImplementedError

    def with_slots(self, state: tuple, slots: tuple) -> tuple:
        """``state`` (same counts) holding ``slots`` instead of its own slot trees."""
        raise NotImplementedError

    def body(self, g, p, ins: tuple, outs: tuple, out, k, scratch=None) -> None:
        """One fused call over 1-D arrays: ``ins``/``outs`` are the slot arrays."""
        raise NotImplementedError


class SgdRule(_Rule):
    """``sgd(lr, momentum, nesterov, weight_decay, dampening)`` without a decay mask:
    chain ``[add_decayed_weights] [trace] scale_by_learning_rate``."""

    def __init__(self, op, lr, *, weight_decay, momentum, nesterov, dampening) -> None:
        self.wd, self.mu, self.nesterov, self.dampening = weight_decay, momentum, nesterov, \
            dampening
        self.has_trace = bool(momentum or nesterov)
        self.slot_names = ("momentum_buffer",) if self.has_trace else ()
        self.needs_params = bool(weight_decay)
        self._trace_at = 1 if weight_decay else 0
        super().__init__(op, lr, self._trace_at + self.has_trace + 1)

    def _parts_ok(self, state):
        return ((not self.wd or type(state[0]) is EmptyState)
                and (not self.has_trace or type(state[self._trace_at]) is TraceState))

    def slots(self, state):
        return (state[self._trace_at].momentum_buffer,) if self.has_trace else ()

    def scalars(self, state, lr_scale=1.0):
        flags = (K.L2 if self.wd else 0)
        if self.has_trace:
            flags |= K.MOMENTUM | (K.NESTEROV if self.nesterov else 0)
            flags |= K.FIRST if state[self._trace_at].count == 0 else 0
        return K.sgd_scalars(lr=self._lr_value(state), weight_decay=self.wd, momentum=self.mu,
                             dampening=self.dampening, lr_scale=lr_scale, flags=flags)

    def advance(self, state, new_slots):
        parts = list(state)
        if self.has_trace:
            parts[self._trace_at] = TraceState(state[self._trace_at].count + 1, new_slots[0])
        parts[-1] = self._next_lr_state(state)
        return tuple(parts)

    def with_slots(self, state, slots):
        if not self.has_trace:
            return state
        parts = list(state)
        parts[self._trace_at] = state[self._trace_at]._replace(momentum_buffer=slots[0])
        return tuple(parts)

    def body(self, g, p, ins, outs, out, k, scratch=None):
        buf = ins[0] if ins else None
        buf_out = outs[0] if outs else None
        K.sgd_raw(g, p, buf, out, buf_out, k, scratch)


class AdamRule(_Rule):
    """``adam``/``adamw`` without a decay mask: chain ``[add_decayed_weights]
    scale_by_adam scale_by_learning_rate`` (L2) or ``scale_by_adam [add_decayed_weights]
    scale_by_learning_rate`` (decoupled)."""

    def __init__(self, op, lr, *, betas, eps, amsgrad, weight_decay, decoupled) -> None:
        self.b1, self.b2 = betas
        self.eps, self.amsgrad, self.wd, self.decoupled = eps, amsgrad, weight_decay, decoupled
        self.slot_names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
        self.needs_params = bool(weight_decay)
        self._adam_at = 1 if weight_decay and not decoupled else 0
        super().__init__(op, lr, 2 + bool(weight_decay))

    def _parts_ok(self, state):
        a = state[self._adam_at]
        decay_at = 0 if not self.decoupled else 1
        return (type(a) is ScaleByAdamState and (a.max_exp_avg_sq is None) != self.amsgrad
                and (not self.wd or type(state[decay_at]) is EmptyState))

    def slots(self, state):
        a = state[self._adam_at]
        return (a.exp_avg, a.exp_avg_sq) + ((a.max_exp_avg_sq,) if self.amsgrad else ())

    def scalars(self, state, lr_scale=1.0):
        flags = K.AMSGRAD if self.amsgrad else 0
        if self.wd:
            flags |= K.DECOUPLED if self.decoupled else K.L2
        return K.adam_scalars(self.b1, self.b2, self.eps, t=state[self._adam_at].count + 1,
                              lr=self._lr_value(state), weight_decay=self.wd,
                              lr_scale=lr_scale, flags=flags)

    def advance(self, state, new_slots):
        parts = list(state)
        a = state[self._adam_at]
        vmax = new_slots[2] if self.amsgrad else None
        parts[self._adam_at] = ScaleByAdamState(a.count + 1, new_slots[0], new_slots[1], vmax)
        parts[-1] = self._next_lr_state(state)
        return tuple(parts)

    def with_slots(self, state, slots):
        parts = list(state)
        parts[self._adam_at] = state[self._adam_at]._replace(
            exp_avg=slots[0], exp_avg_sq=slots[1],
            max_exp_avg_sq=slots[2] if self.amsgrad else None)
        return tuple(parts)

    def body(self, g, p, ins, outs, out, k, scratch=None):
        vmax, vmax_out = (ins[2], outs[2]) if self.amsgrad else (None, None)
        K.adam_raw(g, p, ins[0], ins[1], vmax, out, outs[0], outs[1], vmax_out, k, scratch)


# ----------------------------------------------------------------------------- the pure path
def _gather(node: Any, others: tuple, out: list) -> bool:
    """Walk ``node`` (the grads) and ``others`` (state, params) together, matched by key as
    ``tree_map`` matches them; append each leaf tuple to ``out``. False at the first place
    where they differ (the chain then decides: it names the difference)."""
    if node is None:
        return all(o is None for o in others)
    kind = type(node)
    if kind is dict:
        keys = node.keys()
        for o in others:
            if type(o) is not dict or o.keys() != keys:
                return False
        for k, v in node.items():
            if not _gather(v, tuple([o[k] for o in others]), out):
                return False
        return True
    if isinstance(node, list | tuple):
        for o in others:
            if type(o) is not kind or len(o) != len(node):
                return False
        for i, v in enumerate(node):
            if not _gather(v, tuple([o[i] for o in others]), out):
                return False
        return True
    for o in others:
        if o is None or isinstance(o, dict | list | tuple):
            return False
    out.append((node, *others))
    return True


def _rebuild(node: Any, leaves) -> Any:
    """A tree of ``node``'s structure (the grads') with the next items of ``leaves``."""
    if node is None:
        return None
    kind = type(node)
    if kind is dict:
        return {k: _rebuild(v, leaves) for k, v in node.items()}
    if isinstance(node, list | tuple):
        items = [_rebuild(v, leaves) for v in node]
        if kind is list or kind is tuple:
            return items if kind is list else tuple(items)
        return kind(*items)
    return next(leaves)


def _same_array_kind(g: Any, others: tuple) -> bool:
    if type(g) is np.ndarray:  # the common CPU case, without device lookups
        dtype, shape = g.dtype, g.shape
        if dtype.kind == "f" and all(type(x) is np.ndarray for x in others):
            return all(x.dtype == dtype and x.shape == shape for x in others)
    dtype = getattr(g, "dtype", None)
    if not is_plain_array(g) or dtype is None or dtype.kind != "f":
        return False
    device = device_of(g)
    return all(is_plain_array(x) and x.dtype == dtype and x.shape == g.shape
               and device_of(x) == device for x in others)


def regular_leaves(rule: _Rule, grads: Any, state: Any, params: Any) -> list | None:
    """``[(g, *slot leaves, [p]), ...]`` when the fused body can update these trees exactly
    as the chain would (plain float arrays, one dtype, shape and device per leaf; the
    trees match by key), else None."""
    if not rule.regular_state(state) or (rule.needs_params and params is None):
        return None
    # the params are walked even where the rule does not read them: the chain checks
    # their tree, so a mismatch must take the chain (which names it)
    others = rule.slots(state) + (() if params is None else (params,))
    leaves: list = []
    if not _gather(grads, others, leaves):
        return None
    if params is not None and not rule.needs_params:
        leaves = [leaf[:-1] for leaf in leaves]
    for leaf in leaves:
        if not _same_array_kind(leaf[0], leaf[1:]):
            return None
    return leaves


# Leaf size (elements) from which the CPU updates a leaf on its own: large leaves gain
# nothing from a flat copy (the NumPy calls are few), small ones lose to per-call overhead,
# so they are gathered into one flat body call.
LEAF_BY_LEAF_FROM = 1 << 15


def fused_update(rule: _Rule, grads: Any, state: Any, params: Any, fallback):
    """``opt.update`` of a fused alias, fresh outputs. Small leaves (and every leaf on the
    GPU) are updated by ONE body call (multi-tensor): the gradient, the state and (for
    weight decay) the parameters are gathered into flat buffers (one copy each; the
    state's copies are then updated in place and become the new state, its leaves views
    of them), so ResNet-20's 65 tensors cost one launch, or ~14 NumPy calls per 1M
    elements, not ~14 per leaf. Leaves of ``LEAF_BY_LEAF_FROM`` elements or more on the
    CPU get one body call each (the MLP: its two large weights alone, its four small
    leaves together)."""
    leaves = regular_leaves(rule, grads, state, params)
    if not leaves:  # irregular, or no leaves at all: the chain
        return fallback(grads, state, params)
    k = rule.scalars(state)
    n_slots = len(rule.slot_names)
    xp = module_of(leaves[0][0])
    own_from = math.inf if device_of(leaves[0][0]) == "cuda" else LEAF_BY_LEAF_FROM
    updates: list = [None] * len(leaves)
    new_slots: list = [[None] * len(leaves) for _ in range(n_slots)]
    grouped = [i for i, leaf in enumerate(leaves) if leaf[0].size < own_from]
    for i, leaf in enumerate(leaves):
        if leaf[0].size < own_from:
            continue
        g1 = leaf[0].reshape(-1)  # a view of a C-contiguous array, else a copy
        ins = tuple(x.reshape(-1) for x in leaf[1:1 + n_slots])
        outs = tuple(xp.empty_like(g1) for _ in ins)
        u = xp.empty_like(g1)
        rule.body(g1, leaf[-1].reshape(-1) if rule.needs_params else None, ins, outs, u, k)
        updates[i] = u.reshape(leaf[0].shape)
        for acc, o in zip(new_slots, outs):
            acc[i] = o.reshape(leaf[0].shape)
    if grouped:
        columns = list(zip(*(leaves[i] for i in grouped)))  # (grads, *slots, [params])
        flat_g = _concat(xp, columns[0])
        slots = tuple(_concat(xp, c) for c in columns[1:1 + n_slots])
        u = xp.empty_like(flat_g)
        rule.body(flat_g, _concat(xp, columns[-1]) if rule.needs_params else None, slots,
                  slots, u, k)
        shapes = [g.shape for g in columns[0]]
        for acc, flat in zip((updates, *new_slots), (u, *slots)):
            for i, piece in zip(grouped, _split(flat, shapes)):
                acc[i] = piece
    slot_trees = tuple(_rebuild(grads, iter(s)) for s in new_slots)
    return _rebuild(grads, iter(updates)), rule.advance(state, slot_trees)


def _concat(xp, leaves):
    """A new 1-D array holding ``leaves`` one after the other."""
    return xp.concatenate([x.reshape(-1) for x in leaves])


def _split(flat, shapes):
    """Views of consecutive pieces of ``flat`` with the given shapes."""
    start = 0
    for shape in shapes:
        size = 1
        for d in shape:
            size *= d
        yield flat[start:start + size].reshape(shape)
        start += size


def fused(chain_opt: GradientTransformation, rule: _Rule) -> GradientTransformation:
    """``chain_opt`` with the fused ``update`` of ``rule`` (same ``init``, same state)."""

    def update(grads, state, params=None):
        return fused_update(rule, grads, state, params, chain_opt.update)

    update.fused_rule = rule  # type: ignore[attr-defined]
    update.fallback = chain_opt.update  # type: ignore[attr-defined]
    return GradientTransformation(chain_opt.init, update)


def fused_rule(opt: Any) -> _Rule | None:
    """The fused rule of an optimizer built by ``sgd``/``adam``/``adamw`` without a decay
    mask; None for anything else (chains around it, masks, the other optimizers)."""
    if not isinstance(opt, GradientTransformation):
        return None
    return getattr(opt.update, "fused_rule", None)


__all__: list[str] = []
