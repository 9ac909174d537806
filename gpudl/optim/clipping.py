"""Gradient clipping: by value and by global norm (as ``torch.nn.utils.clip_grad_*_``).

The norm stays on the gradients' device (a 0-d array): clipping never waits for the GPU.

Example:
    >>> import numpy as np
    >>> g = {"a": np.array([3.0]), "b": np.array([4.0])}
    >>> float(global_norm(g))
    5.0
    >>> t = clip_by_global_norm(1.0)
    >>> u, _ = t.update(g, t.init(g))
    >>> [round(float(u[k][0]), 4) for k in "ab"]
    [0.6, 0.8]
"""

from __future__ import annotations

from typing import Any

from gpudl.backend import module_of
from gpudl.optim.base import EmptyState, GradientTransformation, check_hparam
from gpudl.tree import tree_leaves, tree_map


def clip(max_delta: float) -> GradientTransformation:
    """Clip every update element to ``[-max_delta, max_delta]`` (``clip_grad_value_``).

    Example:
        >>> import numpy as np
        >>> clip(1.0).update(np.array([-3.0, 0.5, 2.0]), EmptyState())[0].tolist()
        [-1.0, 0.5, 1.0]
    """
    d = check_hparam("clip", "max_delta", max_delta)

    def update(grads, state, params=None):
        return tree_map(lambda g: module_of(g).clip(g, -d, d), grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def global_norm(tree: Any):
    """The L2 norm of all leaves together, ``sqrt(sum of squares)``, as a 0-d array on the
    leaves' device (``float(...)`` reads it; 0.0 for a tree without leaves).

    Example:
        >>> import numpy as np
        >>> float(global_norm([np.array([1.0, 2.0]), np.array([[2.0]])]))
        3.0
    """
    leaves = tree_leaves(tree)
    if not leaves:
        return 0.0
    xp = module_of(leaves[0])
    total = None
    for leaf in leaves:
        sq = xp.sum(xp.square(leaf))
        total = sq if total is None else total + sq
    return xp.sqrt(total)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale all updates by ``min(1, max_norm / (norm + 1e-6))`` (torch's
    ``clip_grad_norm_``), so the global norm is at most ``max_norm``.

    Example: see the module docstring.
    """
    m = check_hparam("clip_by_global_norm", "max_norm", max_norm, low_open=True)

    def update(grads, state, params=None):
        if not tree_leaves(grads):
            return grads, state
        norm = global_norm(grads)
        xp = module_of(norm)
        factor = xp.minimum(m / (norm + 1e-6), 1.0)  # stays on the device
        # A 0-d array is not a "weak" scalar under NumPy 2: cast it to each leaf's dtype.
        return tree_map(lambda g: g * factor.astype(g.dtype), grads), state

    return GradientTransformation(lambda params: EmptyState(), update)
