"""Adversarial examples: the fast gradient sign method (FGSM, Goodfellow et al. 2015).

Example:
    >>> import numpy as np, gpudl as gd
    >>> x = np.array([[0.5, 0.5]])
    >>> fgsm(lambda x: (x * np.array([[1.0, -1.0]])).sum(), x, eps=0.1).tolist()
    [[0.6, 0.4]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gpudl as gd
from gpudl.errors import ConfigError

Array = Any  # a NumPy or CuPy array


def fgsm(loss_fn: Callable[[Array], Array], x: Array, eps: float,
         clip: tuple[float, float] | None = (0.0, 1.0), targeted: bool = False) -> Array:
    """``clip(x + eps * sign(d loss / dx))``: one signed-gradient step that raises the loss.

    ``loss_fn(x)`` is a scalar (close over the labels and parameters, e.g.
    ``lambda x: F.softmax_cross_entropy(model(params, x), y)``). Every input element moves
    by at most ``eps`` (the L-infinity budget) and the result is clipped to ``clip``
    (``None``: no clipping; images in [0, 1] by default). ``targeted=True`` steps *down*
    the loss instead, towards the class the loss was written for.

    Example:
        >>> import numpy as np
        >>> fgsm(lambda x: (x ** 2).sum(), np.array([0.95, -0.3]), 0.1, clip=(-1, 1)).tolist()
        [1.0, -0.4]
    """
    if eps < 0:
        raise ConfigError(f"fgsm: eps must be >= 0, got {eps}")
    xp = gd.get_array_module(x)
    g = gd.grad(loss_fn)(x)
    step = xp.sign(g).astype(x.dtype) * eps
    adv = x - step if targeted else x + step
    if clip is not None:
        adv = xp.clip(adv, clip[0], clip[1])
    return adv.astype(x.dtype)
