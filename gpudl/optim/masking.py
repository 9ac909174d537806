"""Apply transformations to part of the parameters: masks, frozen leaves, parameter groups.

Masks and labels are trees with the parameters' structure, or *prefixes* of it (a bool
or a label at a dict key covers that whole subtree), or callables ``params -> tree``
(called with the params at ``init`` and with the grads, which share the params'
names and shapes, at ``update``).

Leaves an inner transformation does not own are ``None`` in the trees it sees, so it
keeps no state for them and its updates leave them alone.

Example (per-group learning rates, a frozen backbone):
    >>> import numpy as np
    >>> from gpudl import optim
    >>> params = {"backbone": {"weight": np.ones(2)}, "head": {"weight": np.ones(2)}}
    >>> opt = optim.multi_transform({"slow": optim.sgd(0.01), "fast": optim.sgd(0.1)},
    ...                             {"backbone": "slow", "head": "fast"})
    >>> grads = {"backbone": {"weight": np.ones(2)}, "head": {"weight": np.ones(2)}}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> u["backbone"]["weight"].tolist(), u["head"]["weight"].tolist()
    ([-0.01, -0.01], [-0.1, -0.1])
    >>> frozen = optim.freeze({"backbone": True, "head": False}, optim.adam(1e-3))
    >>> u, _ = frozen.update(grads, frozen.init(params), params)
    >>> u["backbone"]["weight"].tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from gpudl.backend import module_of
from gpudl.errors import ArgumentTypeError, ConfigError, TreeMismatchError
from gpudl.optim.base import EmptyState, GradientTransformation, check_hparam, check_structure
from gpudl.tree import is_leaf, tree_leaves, tree_map


def expand_prefix(prefix: Any, tree: Any, op: str, what: str = "mask") -> Any:
    """A tree shaped like ``tree`` whose leaves come from ``prefix`` (a tree or a prefix of it).

    Example:
        >>> expand_prefix({"a": True, "b": False}, {"a": {"w": 1, "b": 2}, "b": 3}, "doc")
        {'a': {'w': True, 'b': True}, 'b': False}
    """

    def walk(pre: Any, node: Any, path: str) -> Any:
        if node is None:
            return None
        if not isinstance(pre, (dict, list, tuple)):
            return tree_map(lambda _: pre, node)
        where = path or "<root>"
        if isinstance(pre, dict) != isinstance(node, dict) or is_leaf(node):
            raise TreeMismatchError(
                f"{op}: the {what} has a {type(pre).__name__} at {where} where the params "
                f"have a {type(node).__name__}")
        if isinstance(pre, dict):
            missing = [k for k in node if k not in pre]
            extra = [k for k in pre if k not in node]
            if missing or extra:
                raise TreeMismatchError(
                    f"{op}: the {what} does not match the params at {where}: keys missing from "
                    f"the {what}: {missing}; extra keys in the {what}: {extra}")
            return {k: walk(pre[k], v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if len(pre) != len(node):
            raise TreeMismatchError(
                f"{op}: the {what} has {len(pre)} children at {where}, the params {len(node)}")
        items = [walk(p, v, f"{path}.{i}" if path else str(i))
                 for i, (p, v) in enumerate(zip(pre, node, strict=True))]
        return type(node)(*items) if type(node) not in (list, tuple) else type(node)(items)

    return walk(prefix, tree, "")


def _resolve(spec: Any, tree: Any, op: str, what: str) -> Any:
    return expand_prefix(spec(tree) if callable(spec) else spec, tree, op, what)


def _select(tree: Any, flags: Any) -> Any:
    """``tree`` with the leaves whose flag is false replaced by ``None``."""
    return tree_map(lambda x, keep: x if keep else None, tree, flags)


def _overlay(base: Any, part: Any, flags: Any, pick: Callable) -> Any:
    if isinstance(flags, dict):
        return {k: _overlay(base[k], part[k] if part is not None else None, flags[k], pick)
                for k in flags}
    if isinstance(flags, (list, tuple)):
        items = [_overlay(b, part[i] if part is not None else None, f, pick)
                 for i, (b, f) in enumerate(zip(base, flags, strict=True))]
        return type(flags)(*items) if type(flags) not in (list, tuple) else type(flags)(items)
    if flags is None:
        return None
    return pick(bool(flags), base, part)


class MaskedState(NamedTuple):
    inner_state: Any


def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    """Apply ``inner`` only where ``mask`` is true; elsewhere updates pass through unchanged
    and ``inner`` keeps no state (optax's ``masked``).

    Example:
        >>> import numpy as np
        >>> from gpudl.optim.base import scale
        >>> t = masked(scale(10.0), {"w": True, "bias": False})
        >>> g = {"w": np.ones(1), "bias": np.ones(1)}
        >>> u, _ = t.update(g, t.init(g))
        >>> u["w"].tolist(), u["bias"].tolist()
        ([10.0], [1.0])
    """
    op = "masked"
    if not isinstance(inner, GradientTransformation):
        raise ArgumentTypeError(f"{op}: inner must be a GradientTransformation, got {type(inner).__name__}")

    def init(params):
        flags = _resolve(mask, params, op, "mask")
        return MaskedState(inner.init(_select(params, flags)))

    def update(grads, state, params=None):
        if params is not None:
            check_structure(params, grads, op)
        flags = _resolve(mask, grads, op, "mask")
        sub_params = None if params is None else _select(params, flags)
        sub_updates, inner_state = inner.update(_select(grads, flags), state.inner_state,
                                                sub_params)
        return _overlay(grads, sub_updates, flags, lambda f, b, p: p if f else b), \
            MaskedState(inner_state)

    return GradientTransformation(init, update)


def freeze(mask: Any, inner: GradientTransformation | None = None) -> GradientTransformation:
    """Frozen parameters (``mask`` true) get exactly zero updates.

    With ``inner`` (the optimizer of the trainable parameters), frozen leaves never enter
    ``inner``: no optimizer state is kept or changed for them, and decoupled weight decay
    does not touch them. Without it, ``freeze(mask)`` only zeroes those updates: put it last
    in a :func:`chain` (placed first, a later weight decay would still move them).

    Example:
        >>> import numpy as np
        >>> from gpudl import optim
        >>> opt = freeze({"w": True, "b": False}, optim.sgd(0.1))
        >>> p = {"w": np.ones(1), "b": np.ones(1)}
        >>> u, s = opt.update(p, opt.init(p), p)
        >>> u["w"].tolist(), u["b"].tolist()
        ([0.0], [-0.1])
    """
    op = "freeze"
    if inner is not None and not isinstance(inner, GradientTransformation):
        raise ArgumentTypeError(f"{op}: inner must be a GradientTransformation, got {type(inner).__name__}")

    def zero(flag, g, p):
        if not flag:
            return p
        return module_of(g).zeros_like(g)

    def init(params):
        if inner is None:
            return MaskedState(None)
        flags = _resolve(mask, params, op, "mask")
        trainable = tree_map(lambda f: not f, flags)
        return MaskedState(inner.init(_select(params, trainable)))

    def update(grads, state, params=None):
        if params is not None:
            check_structure(params, grads, op)
        flags = _resolve(mask, grads, op, "mask")
        if inner is None:
            return _overlay(grads, grads, flags, lambda f, g, p: zero(f, g, p)), state
        trainable = tree_map(lambda f: not f, flags)
        sub_params = None if params is None else _select(params, trainable)
        sub_updates, inner_state = inner.update(_select(grads, trainable), state.inner_state,
                                                sub_params)
        return _overlay(grads, sub_updates, flags, lambda f, g, p: zero(f, g, p)), \
            MaskedState(inner_state)

    return GradientTransformation(init, update)


class MultiTransformState(NamedTuple):
    inner_states: dict


def multi_transform(transforms: dict[Hashable, GradientTransformation], labels: Any
                    ) -> GradientTransformation:
    """A different transformation per parameter group: ``labels`` gives each leaf a key of
    ``transforms`` (as a tree, a prefix or a callable). Use it for per-group learning rates.

    Example: ``multi_transform({"backbone": sgd(1e-3), "head": adam(1e-2)},
    {"backbone": "backbone", "head": "head"})`` (see the module docstring).
    """
    op = "multi_transform"
    if not isinstance(transforms, dict) or not transforms:
        raise ArgumentTypeError(f"{op}: transforms must be a non-empty dict "
                        "label -> GradientTransformation")
    for name, t in transforms.items():
        if not isinstance(t, GradientTransformation):
            raise ArgumentTypeError(f"{op}: transforms[{name!r}] must be a GradientTransformation, got "
                            f"{type(t).__name__}")

    def label_tree(tree):
        tree_labels = _resolve(labels, tree, op, "labels")
        unknown = sorted({str(x) for x in tree_leaves(tree_labels) if x not in transforms})
        if unknown:
            raise ConfigError(f"{op}: labels {unknown} have no transformation; known labels: "
                             f"{list(transforms)}")
        return tree_labels

    def init(params):
        lab = label_tree(params)
        return MultiTransformState({
            name: t.init(_select(params, tree_map(lambda x, n=name: x == n, lab)))
            for name, t in transforms.items()})

    def update(grads, state, params=None):
        if params is not None:
            check_structure(params, grads, op)
        lab = label_tree(grads)
        updates, new_states = grads, {}
        for name, t in transforms.items():
            flags = tree_map(lambda x, n=name: x == n, lab)
            sub_params = None if params is None else _select(params, flags)
            sub, new_states[name] = t.update(_select(grads, flags), state.inner_states[name],
                                             sub_params)
            updates = _overlay(updates, sub, flags, lambda f, b, p: p if f else b)
        return updates, MultiTransformState(new_states)

    return GradientTransformation(init, update)


def scale_by_group(scales: dict[Hashable, float], labels: Any) -> GradientTransformation:
    """Multiply each group's updates by its factor (a per-group learning-rate multiplier).

    Example:
        >>> import numpy as np
        >>> t = scale_by_group({"slow": 0.1, "fast": 1.0}, {"a": "slow", "b": "fast"})
        >>> g = {"a": np.ones(1), "b": np.ones(1)}
        >>> u, _ = t.update(g, t.init(g))
        >>> u["a"].tolist(), u["b"].tolist()
        ([0.1], [1.0])
    """
    op = "scale_by_group"
    factors = {k: check_hparam(op, f"scales[{k!r}]", v) for k, v in dict(scales).items()}

    def update(grads, state, params=None):
        lab = _resolve(labels, grads, op, "labels")
        unknown = sorted({str(x) for x in tree_leaves(lab) if x not in factors})
        if unknown:
            raise ConfigError(f"{op}: labels {unknown} have no scale; known labels: {list(factors)}")
        return tree_map(lambda g, lb: g * factors[lb], grads, lab), state

    return GradientTransformation(lambda params: EmptyState(), update)
