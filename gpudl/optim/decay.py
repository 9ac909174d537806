"""Weight decay (L2), the L1 penalty, and the usual "no decay for biases and norms" mask.

Two kinds of weight decay, as in PyTorch:

- **L2 / coupled** (``sgd``, ``adam``, ... ``weight_decay=``): ``wd * p`` is added to the
  *gradient* before the optimizer's rule, so adaptive methods rescale it like any
  gradient (Adam then decays large-gradient weights less).
- **Decoupled** (``adamw``): ``wd * p`` is added to the *direction* after the adaptive
  rule, so the step is ``p <- p * (1 - lr*wd) - lr * adam_direction`` (Loshchilov &
  Hutter). For plain SGD (no momentum) the two are the same.

Both are :func:`add_decayed_weights`; only its place in the chain differs.

Example:
    >>> import numpy as np
    >>> t = add_decayed_weights(0.1)
    >>> p = {"weight": np.ones((2, 2)), "bias": np.ones(2)}
    >>> u, _ = t.update({"weight": np.zeros((2, 2)), "bias": np.zeros(2)}, t.init(p), p)
    >>> float(u["weight"][0, 0]), float(u["bias"][0])
    (0.1, 0.1)
    >>> t = add_decayed_weights(0.1, mask=weight_decay_mask)    # biases excluded
    >>> u, _ = t.update({"weight": np.zeros((2, 2)), "bias": np.zeros(2)}, t.init(p), p)
    >>> float(u["bias"][0])
    0.0
"""

from __future__ import annotations

from typing import Any

from gpudl.backend import module_of
from gpudl.errors import ConfigError
from gpudl.optim.base import EmptyState, GradientTransformation, check_hparam, check_structure
from gpudl.optim.masking import masked
from gpudl.tree import tree_map


def _need_params(op: str, params: Any) -> None:
    if params is None:
        raise ConfigError(f"{op}: needs the current params; call update(grads, state, params)")


def add_decayed_weights(weight_decay: float, mask: Any = None) -> GradientTransformation:
    """Add ``weight_decay * p`` to the updates (leaves where ``mask`` is true; all by default).

    Example: see the module docstring.
    """
    op = "add_decayed_weights"
    wd = check_hparam(op, "weight_decay", weight_decay)

    def update(grads, state, params=None):
        _need_params(op, params)
        check_structure(params, grads, op)
        if wd == 0.0:
            return grads, state
        return tree_map(lambda g, p: g + p * wd, grads, params), state

    t = GradientTransformation(lambda params: EmptyState(), update)
    return t if mask is None else masked(t, mask)


def add_l1(l1: float, mask: Any = None) -> GradientTransformation:
    """Add the L1 penalty's (sub)gradient ``l1 * sign(p)`` to the updates.

    Example:
        >>> import numpy as np
        >>> t = add_l1(0.5)
        >>> p = np.array([2.0, -3.0, 0.0])
        >>> t.update(np.zeros(3), t.init(p), p)[0].tolist()
        [0.5, -0.5, 0.0]
    """
    op = "add_l1"
    lam = check_hparam(op, "l1", l1)

    def update(grads, state, params=None):
        _need_params(op, params)
        check_structure(params, grads, op)
        return tree_map(lambda g, p: g + module_of(p).sign(p) * lam, grads, params), state

    t = GradientTransformation(lambda params: EmptyState(), update)
    return t if mask is None else masked(t, mask)


def weight_decay_mask(params: Any) -> Any:
    """A mask tree: true for leaves to decay; false for biases (names starting with ``bias``,
    or ``b``/``b_*`` as in ``b_ih``) and for 1-D or scalar leaves (biases, norm scales).

    Example:
        >>> import numpy as np
        >>> weight_decay_mask({"fc": {"weight": np.ones((2, 3)), "bias": np.ones(2)},
        ...                    "ln": {"weight": np.ones(3)}})
        {'fc': {'weight': True, 'bias': False}, 'ln': {'weight': False}}
    """

    def is_bias(name: str) -> bool:
        return name.startswith("bias") or name == "b" or name.startswith("b_")

    def walk(node: Any, name: str) -> Any:
        if node is None:
            return None
        if isinstance(node, dict):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            items = [walk(v, name) for v in node]
            return type(node)(*items) if type(node) not in (list, tuple) else type(node)(items)
        return not is_bias(name) and getattr(node, "ndim", 0) >= 2

    return walk(params, "")
