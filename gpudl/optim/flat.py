"""Parameters and optimizer state in flat buffers: the multi-tensor, in-place update that
``gd.fit`` runs for the fused optimizers (:mod:`gpudl.optim.fused`).

A :class:`FlatTrees` copies a params tree and a fused optimizer's state into one flat
buffer per tree (all leaves of one dtype on one device), and hands out trees of *views*
of those buffers: ``flat.params`` has the params' structure, ``flat.opt_state`` the
optimizer's state structure (same NamedTuples, same counts). :meth:`FlatTrees.load_grads`
gathers a gradient tree into a flat buffer (one copy) and :meth:`FlatTrees.apply` updates
every leaf at once, in place: one kernel launch on the GPU, ~14 NumPy calls per 64K
elements on the CPU (instead of ~14 per leaf, each with a fresh temporary). The bits are
those of ``opt.update`` + ``optim.apply_updates`` (the same body, see ``fused.py``).

In place means: only the caller that created the FlatTrees may hold its arrays. The
training step (:mod:`gpudl.train.step`) keeps that promise: it never writes arrays it was
given, makes a FlatTrees (a copy) after handing its trees out, gives the objective a
fresh tree of the views (:meth:`FlatTrees.fresh_params`) and asks
:meth:`FlatTrees.unshared` afterwards whether anyone kept one (a view, a leaf, or any
container of that tree: it holds leaves), from the views' reference counts.

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> opt = optim.sgd(0.5, momentum=0.9)
    >>> params = {"w": np.array([1.0, 2.0]), "b": np.array([0.0])}
    >>> flat = FlatTrees.adopt(opt, params, opt.init(params))
    >>> flat.load_grads({"w": np.array([1.0, -1.0]), "b": np.array([2.0])})
    True
    >>> flat.apply()
    >>> flat.params["w"].tolist(), flat.params["b"].tolist(), params["w"].tolist()
    ([0.5, 2.5], [-1.0], [1.0, 2.0])
    >>> flat.opt_state[0].count
    1
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from gpudl.backend import device_of, module_of
from gpudl.optim import _optim_kernels as K
from gpudl.optim.fused import _gather, fused_rule, is_plain_array
from gpudl.tree import TreeDef, tree_flatten


class _Probe:
    pass


def _reference_baselines() -> tuple[int, int]:
    """What sys.getrefcount reads, in this interpreter, for an object held by one list
    (read in a loop over it) and for one held by one attribute."""
    probe = _Probe()
    probe.item = object()
    return [sys.getrefcount(x) for x in [object()]][0], sys.getrefcount(probe.item)


_IN_ONE_LIST, _BY_ONE_ATTRIBUTE = _reference_baselines()


def _unflatten(td: TreeDef, it) -> Any:
    """tree_unflatten without its recursive closure: no reference cycle, so the tree it
    builds is freed as soon as nobody holds it (unshared() reads reference counts)."""
    if td.kind == "leaf":
        return next(it)
    if td.kind == "none":
        return None
    if td.kind == "dict":
        return {k: _unflatten(c, it) for k, c in zip(td.meta, td.children)}
    items = [_unflatten(c, it) for c in td.children]
    if td.kind == "list":
        return items
    return td.meta(*items) if td.meta is not None else tuple(items)


def _concat_into(xp, leaves: list, out) -> None:
    """Copy ``leaves`` one after the other into the 1-D ``out`` (one pass)."""
    if len(leaves) == 1:
        xp.copyto(out, leaves[0].reshape(-1))
    else:
        xp.concatenate([leaf.reshape(-1) for leaf in leaves], out=out)


class FlatTrees:
    """A params tree and a fused optimizer's state in flat buffers (see the module)."""

    def __init__(self, rule, treedef, shapes: list, flat_p, flat_slots: tuple, state: Any,
                 grad_buffer=None, scratch=None) -> None:
        self.rule, self.treedef, self.shapes = rule, treedef, shapes
        self.flat_p, self.flat_slots = flat_p, flat_slots
        self.dtype, self.device = flat_p.dtype, device_of(flat_p)
        refs = sys.getrefcount(flat_p)
        self._leaves = self._views(flat_p)
        self._view_refs = sys.getrefcount(flat_p) - refs  # each view holds its base (NumPy)
        self.params = self.fresh_params()
        self.slot_trees = tuple(_unflatten(treedef, iter(self._views(f))) for f in flat_slots)
        self.opt_state = rule.with_slots(state, self.slot_trees)
        xp = module_of(flat_p)
        self.flat_g = xp.empty_like(flat_p) if grad_buffer is None else grad_buffer
        self.scratch = K.scratch_for(flat_p.size, flat_p) if scratch is None else scratch
        # Each view held by self._leaves and self.params; the flat buffer by self.flat_p
        # and the views: the counts unshared() expects.
        self._clean = [_IN_ONE_LIST + 1] * len(self._leaves) + [
            _BY_ONE_ATTRIBUTE + self._view_refs]

    def _views(self, flat) -> list:
        views, start = [], 0
        for shape in self.shapes:
            size = 1
            for d in shape:
                size *= d
            views.append(flat[start:start + size].reshape(shape))
            start += size
        return views

    @classmethod
    def adopt(cls, optimizer, params: Any, opt_state: Any) -> FlatTrees | None:
        """Copies of ``params`` and ``opt_state`` in new flat buffers, or None when
        ``optimizer`` has no fused rule or the trees are not regular (mixed dtypes or
        devices, non-array leaves, a state this optimizer's ``init`` did not make)."""
        rule = fused_rule(optimizer)
        if rule is None or not rule.regular_state(opt_state):
            return None
        p_leaves, treedef = tree_flatten(params)
        if not p_leaves or not all(is_plain_array(p) for p in p_leaves):
            return None
        dtype, device = p_leaves[0].dtype, device_of(p_leaves[0])
        if dtype.kind != "f" or any(p.dtype != dtype or device_of(p) != device
                                    for p in p_leaves):
            return None
        slot_leaves = []
        for tree in rule.slots(opt_state):
            leaves, tdef = tree_flatten(tree)
            if tdef != treedef or any(
                    not is_plain_array(s) or s.dtype != dtype or s.shape != p.shape
                    or device_of(s) != device for s, p in zip(leaves, p_leaves)):
                return None
            slot_leaves.append(leaves)
        xp = module_of(p_leaves[0])
        n = sum(p.size for p in p_leaves)
        flat_p = xp.empty(n, dtype)
        _concat_into(xp, p_leaves, flat_p)
        flat_slots = []
        for leaves in slot_leaves:
            flat_slots.append(xp.empty(n, dtype))
            _concat_into(xp, leaves, flat_slots[-1])
        return cls(rule, treedef, [p.shape for p in p_leaves], flat_p, tuple(flat_slots),
                   opt_state)

    def copy(self) -> FlatTrees:
        """The same trees in new buffers (the gathered gradient and scratch are shared:
        nobody outside ever sees them)."""
        xp = module_of(self.flat_p)
        return FlatTrees(self.rule, self.treedef, self.shapes, xp.array(self.flat_p),
                         tuple(xp.array(f) for f in self.flat_slots), self.opt_state,
                         self.flat_g, self.scratch)

    def load_grads(self, grads: Any) -> bool:
        """Gather ``grads`` (the params' structure, matched by key) into the flat gradient
        buffer; False, with nothing gathered, when they do not fit (structure, shape,
        dtype, device)."""
        pairs: list = []
        if not _gather(self.params, (grads,), pairs):  # in the params' (the buffer's) order
            return False
        for (_, g), shape in zip(pairs, self.shapes):
            if not is_plain_array(g) or g.dtype != self.dtype or g.shape != shape \
                    or device_of(g) != self.device:
                return False
        _concat_into(module_of(self.flat_g), [g for _, g in pairs], self.flat_g)
        return True

    def apply(self, lr_scale: float = 1.0) -> None:
        """One optimizer step with the loaded gradient, in place, updates scaled by
        ``lr_scale``. The step's scalars (and a schedule's errors) come first, so a step
        that raises there has written nothing."""
        k = self.rule.scalars(self.opt_state, lr_scale)
        k = k._replace(flags=k.flags | K.WRITE_PARAMS)
        self.rule.body(self.flat_g, self.flat_p, self.flat_slots, self.flat_slots, self.flat_p,
                       k, self.scratch)
        self.opt_state = self.rule.advance(self.opt_state, self.slot_trees)

    def fresh_params(self) -> Any:
        """A new params tree (new containers) of the parameter views."""
        return _unflatten(self.treedef, iter(self._leaves))

    def _counts(self) -> list[int]:
        counts = [sys.getrefcount(leaf) for leaf in self._leaves]
        counts.append(sys.getrefcount(self.flat_p))
        return counts

    def unshared(self) -> bool:
        """True when only this object holds the parameter views (a kept tree holds its
        leaves, a kept view the flat buffer). Reference cycles that gpudl's tree helpers
        leave behind may hold them until the next collection: one young-generation
        collection (then one more) before saying no."""
        for generation in (None, 0, 1):
            if generation is not None:
                gc.collect(generation)
            if self._counts() == self._clean:
                return True
        return False


__all__: list[str] = []
