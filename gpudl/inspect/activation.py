"""Activation maximization: gradient ascent on the input to excite one unit.

Example:
    >>> import numpy as np
    >>> w = np.array([1.0, -1.0])
    >>> x, values = activation_maximization(lambda x: (x * w).sum(), np.zeros(2), steps=10,
    ...                                     lr=0.1, l2=0.0)
    >>> bool(values[-1] > values[0])
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import gpudl as gd
from gpudl import ops

Array = Any  # a NumPy or CuPy array


def activation_maximization(unit_fn: Callable[[Array], Array], x0: Array, steps: int = 100,
                            lr: float = 0.1, l2: float = 1e-3,
                            clip: tuple[float, float] | None = None) -> tuple[Array, np.ndarray]:
    """Maximise ``unit_fn(x) - l2 * ||x||²`` over the input by gradient ascent from ``x0``.

    ``unit_fn(x)`` is the scalar activation to excite, e.g. one logit
    ``lambda x: model(params, x)[0, 7]`` or a channel mean ``lambda x: feats(x)[0, 3].mean()``.
    The L2 penalty keeps the input bounded (Simonyan et al. 2014); ``clip`` optionally
    projects ``x`` to a range after every step. Returns the final input and the
    activation before each step and after the last one (NumPy, ``steps + 1`` values).

    Example:
        >>> x, v = activation_maximization(lambda x: -((x - 3.0) ** 2).sum(), np.zeros(1),
        ...                                steps=50, lr=0.1, l2=0.0)
        >>> round(float(x[0]), 3)
        3.0
    """
    xp = gd.get_array_module(x0)

    def objective(x):
        return unit_fn(x) - l2 * ops.sum(x * x)

    step_fn = gd.value_and_grad(objective)
    x = x0.copy()
    values = []
    for _ in range(steps):
        values.append(float(gd.to_numpy(unit_fn(x))))
        _, g = step_fn(x)
        x = (x + lr * g).astype(x0.dtype)
        if clip is not None:
            x = xp.clip(x, clip[0], clip[1])
    values.append(float(gd.to_numpy(unit_fn(x))))
    return x, np.asarray(values)
