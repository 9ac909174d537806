"""Joining, splitting and padding: concatenate, stack, split, pad.

``concatenate`` and ``pad`` are primitives (their vjps slice the cotangent back);
``stack`` and ``split`` are composites of them, ``expand_dims`` and ``getitem``.

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.concatenate([np.zeros((1, 2)), np.ones((2, 2))], axis=0).shape
    (3, 2)
"""

from __future__ import annotations

import numpy as np

from gpudl.autodiff import Primitive
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, ShapeError
from gpudl.ops.shape import _axis, expand_dims, ravel


# --------------------------------------------------------------------------- join and split
def _concatenate_vjp(g, out, *xs, axis):
    from gpudl.ops.indexing import getitem

    def piece(lo, hi):
        index = [slice(None)] * len(_shape(g))
        index[axis] = slice(lo, hi)
        return lambda: getitem(g, tuple(index))

    grads, start = [], 0
    for x in xs:
        n = _shape(x)[axis]
        grads.append(piece(start, start + n))  # deferred: constants need no slice
        start += n
    return tuple(grads)


_concatenate = Primitive(
    "concatenate", lambda *xs, axis: np.concatenate(xs, axis=axis), _concatenate_vjp
)


def concatenate(arrays, axis: int = 0):
    """Join arrays along an existing axis (all other dims must match).

    Example:
        >>> concatenate([np.zeros((2, 1)), np.ones((2, 3))], axis=1).shape
        (2, 4)
    """
    arrays = list(arrays)
    if not arrays:
        raise ShapeError("ops.concatenate: needs at least one array, got an empty list")
    shapes = [_shape(a) for a in arrays]
    ndim = len(shapes[0])
    if ndim == 0:
        raise ShapeError("ops.concatenate: zero-dimensional arrays cannot be concatenated; "
                         "use ops.stack")
    if axis is None:
        return concatenate([ravel(a) for a in arrays], axis=0)
    axis = _axis(axis, ndim, "concatenate")
    for i, s in enumerate(shapes):
        if len(s) != ndim or any(
            a != b for d, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if d != axis
        ):
            raise ShapeError(
                f"ops.concatenate: array {i} has shape {s} but array 0 has shape {shapes[0]}; "
                f"all dims except axis {axis} must match"
            )
    if len(arrays) == 1:
        return arrays[0]
    return _concatenate(*arrays, axis=axis)


def stack(arrays, axis: int = 0):
    """Join arrays of one shape along a new axis.

    Example:
        >>> stack([np.zeros(3), np.ones(3)], axis=1).shape
        (3, 2)
    """
    arrays = list(arrays)
    if not arrays:
        raise ShapeError("ops.stack: needs at least one array, got an empty list")
    shapes = [_shape(a) for a in arrays]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            raise ShapeError(
                f"ops.stack: all arrays must have one shape; array {i} has shape {s} but "
                f"array 0 has shape {shapes[0]}"
            )
    axis = _axis(axis, len(shapes[0]) + 1, "stack")
    expanded = [expand_dims(a, axis) for a in arrays]
    return expanded[0] if len(expanded) == 1 else _concatenate(*expanded, axis=axis)


def split(x, indices_or_sections, axis: int = 0) -> list:
    """Split into pieces (NumPy semantics: a count of equal sections or split indices).

    Example:
        >>> [p.shape for p in split(np.zeros((5, 2)), [1, 3])]
        [(1, 2), (2, 2), (2, 2)]
    """
    from gpudl.ops.indexing import getitem

    shape = _shape(x)
    axis = _axis(axis, len(shape), "split")
    n = shape[axis]
    if isinstance(indices_or_sections, int | np.integer):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ShapeError(
                f"ops.split: axis {axis} of size {n} does not split into {k} equal sections; "
                "pass split indices instead (e.g. [2, 5])"
            )
        bounds = [i * (n // k) for i in range(k + 1)]
    else:
        # NumPy clips indices to [0, n] and allows empty pieces.
        bounds = [0, *[int(np.clip(i if i >= 0 else i + n, 0, n)) for i in indices_or_sections], n]
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        index = [slice(None)] * len(shape)
        index[axis] = slice(lo, max(lo, hi))
        pieces.append(getitem(x, tuple(index)))
    return pieces


# --------------------------------------------------------------------------- pad
def _pad_vjp(g, out, x, *, pad_width, constant_values):
    from gpudl.ops.indexing import getitem

    index = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, _shape(x), strict=False))
    return (getitem(g, index),)


def _pad_impl(x, *, pad_width, constant_values):
    # A dtype-typed fill keeps float32 arrays float32 on every backend.
    fill = np.dtype(x.dtype).type(constant_values)
    return np.pad(x, pad_width, mode="constant", constant_values=fill)


_pad = Primitive("pad", _pad_impl, _pad_vjp)


def pad(x, pad_width, mode: str = "constant", constant_values=0):
    """Constant padding; ``pad_width`` as NumPy: an int, a pair, or one pair per axis.

    Example:
        >>> pad(np.ones((1, 2)), ((0, 0), (1, 2))).tolist()
        [[0.0, 1.0, 1.0, 0.0, 0.0]]
    """
    if mode != "constant":
        raise ConfigError(f"ops.pad: only mode='constant' is differentiable here, got {mode!r}")
    ndim = len(_shape(x))
    try:
        width = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))
    except ValueError:
        raise ShapeError(
            f"ops.pad: pad_width {pad_width!r} does not fit an array of {ndim} dims; give an "
            "int, a (before, after) pair, or one pair per axis"
        ) from None
    if (width < 0).any():
        raise ConfigError(f"ops.pad: pad widths must be >= 0, got {pad_width}")
    width = tuple((int(a), int(b)) for a, b in width)
    return _pad(x, pad_width=width, constant_values=constant_values)
