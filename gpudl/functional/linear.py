"""``linear(x, w, b)``: the fully connected layer's op, torch's (out, in) weight layout.

Example:
    >>> import numpy as np
    >>> linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
"""

from __future__ import annotations

from gpudl import ops
from gpudl.errors import ShapeError


def linear(x, w, b=None):
    """``y = x @ w.T + b`` for x (..., in), w (out, in), b (out,) or None -> (..., out)."""
    if len(w.shape) != 2:
        raise ShapeError(f"F.linear: weight must be 2-D (out, in), got shape {tuple(w.shape)}")
    if x.shape[-1] != w.shape[1]:
        raise ShapeError(
            f"F.linear: input has {x.shape[-1]} features but the weight (out={w.shape[0]}, "
            f"in={w.shape[1]}) expects {w.shape[1]}; check the layer sizes"
        )
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ShapeError(f"F.linear: bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    y = ops.matmul(x, ops.transpose(w))
    return y if b is None else y + b


__all__ = ["linear"]
