"""Split a trained ``nn.Sequential`` into a feature extractor and a head (for Grad-CAM).

Grad-CAM and feature-map plots need the activations of an inner layer. A trained
Sequential's params are keyed by its children's names (positions ``0``, ``3`` as torch, or a
``name=``); slicing it
(``model[:k]``, ``model[k:]``) keeps those names, so each half takes its share of the
trained params and state (``Sequential.select``). This wraps the two halves as functions
of one array, in evaluation mode.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.Conv2d(2, 3, padding=1), nn.ReLU(), nn.GlobalAvgPool2d(),
    ...                      nn.Dense(4)])
    >>> x = np.zeros((1, 1, 5, 5), np.float32)
    >>> params, state = net.init(gd.random.key(0), x)
    >>> features, head = split_sequential(net, params, state, "1")
    >>> features(x).shape, head(features(x)).shape
    ((1, 2, 5, 5), (1, 4))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpudl.errors import ConfigError
from gpudl.nn.base import Sequential

Array = Any  # a NumPy or CuPy array


def split_sequential(model: Sequential, params: dict, state: dict, at: str | int
                     ) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """``(features, head)`` with ``head(features(x)) == model.apply(params, state, x)[0]``
    in evaluation mode; ``features`` ends with the child ``at``.

    ``at`` is a child's name as ``model.summary`` lists it at the top level (``"4"``, or a
    ``name=``) or its position as an int (negative counts from the end). Both functions use the trained
    ``params`` and ``state`` (BatchNorm running statistics) and are differentiable, so
    they go straight into ``inspect.grad_cam(features, head, x)``.
    """
    if not isinstance(model, Sequential):
        raise ConfigError(f"split_sequential: model must be an nn.Sequential, got "
                          f"{type(model).__name__}; for another model write the two "
                          "functions by hand (features: x -> (N, C, H, W) activations, "
                          "head: activations -> (N, K) scores)")
    names = model.names
    if isinstance(at, str):
        if at not in names:
            raise ConfigError(f"split_sequential: no child named {at!r}; the children are "
                              f"{names}")
        # a shared layer appears under one name at several positions: split at the first
        cut = names.index(at) + 1
    else:
        if not -len(names) <= int(at) < len(names):
            raise ConfigError(f"split_sequential: at={at} is out of range for a Sequential "
                              f"of {len(names)} children")
        cut = int(at) % len(names) + 1

    def part(sub: Sequential | None) -> Callable[[Array], Array]:
        if sub is None:  # split after the last child: the head is the identity
            return lambda a: a
        p, s = sub.select(params), sub.select(state)
        return lambda v: sub.apply(p, s, v, train=False)[0]

    return part(model[:cut]), part(model[cut:] if cut < len(names) else None)


__all__ = ["split_sequential"]
