"""Shape ops: reshape, transpose, broadcast, expand/squeeze, tile/repeat, flip, tril/triu
(concatenate/stack/split and pad: ``join.py``).

Most are views or copies whose vjp is the inverse rearrangement; composites (flatten,
tile, flip...) inherit their gradients from the few primitives here and ``getitem``.

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.transpose(np.zeros((1, 2, 3)), (2, 0, 1)).shape
    (3, 1, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gpudl.autodiff import Primitive, unbox_all
from gpudl.backend import module_of, to_numpy
from gpudl.backend import shape_of as _shape
from gpudl.errors import ShapeError


def _axis(axis: int, ndim: int, op: str) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"ops.{op}: axis {axis} is out of range for an array of {ndim} dims")
    return axis % ndim


# --------------------------------------------------------------------------- reshape family
_reshape = Primitive(
    "reshape",
    lambda x, *, shape: np.reshape(x, shape),
    lambda g, out, x, *, shape: (reshape(g, _shape(x)),),
)


def reshape(x, shape):
    """Reshape (``-1`` allowed once).

    Example:
        >>> reshape(np.arange(6.0), (2, -1)).shape
        (2, 3)
    """
    if isinstance(shape, int | np.integer):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    old = _shape(x)
    size = math.prod(old)  # exact Python ints (np.prod costs ~4 us a call, a reshape each)
    if shape.count(-1) > 1:
        raise ShapeError(f"ops.reshape: only one dim may be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            raise ShapeError(
                f"ops.reshape: cannot reshape an array of shape {old} ({size} elements) "
                f"into {shape}: {size} is not a multiple of {known}"
            )
        shape = tuple(size // known if s == -1 else s for s in shape)
    if shape == old:
        return x
    if any(s < 0 for s in shape) or math.prod(shape) != size:
        raise ShapeError(
            f"ops.reshape: cannot reshape an array of shape {old} ({size} elements) "
            f"into {shape} ({math.prod(shape)} elements)"
        )
    return _reshape(x, shape=shape)


def flatten(x, start_axis: int = 0):
    """Flatten dims from ``start_axis`` on (``flatten(x, 1)`` keeps the batch dim, as torch).

    Example:
        >>> flatten(np.zeros((2, 3, 4)), 1).shape
        (2, 12)
    """
    shape = _shape(x)
    start_axis %= max(len(shape), 1)
    return reshape(x, shape[:start_axis] + (-1,))


def ravel(x):
    """The elements as a 1-D array (C order)."""
    return reshape(x, (-1,))


def expand_dims(x, axis: int | Sequence[int]):
    """Insert size-1 dims at ``axis`` (an int or a tuple, NumPy semantics).

    Example:
        >>> expand_dims(np.zeros((2, 3)), (0, -1)).shape
        (1, 2, 3, 1)
    """
    shape = list(_shape(x))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    nd = len(shape) + len(axes)
    axes = sorted(_axis(int(a), nd, "expand_dims") for a in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"ops.expand_dims: repeated axis in {axis}")
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def squeeze(x, axis=None):
    """Remove size-1 dims (all of them, or those in ``axis``)."""
    shape = _shape(x)
    if axis is None:
        axes = {i for i, n in enumerate(shape) if n == 1}
    else:
        given = (axis,) if isinstance(axis, int) else axis
        axes = {_axis(a, len(shape), "squeeze") for a in given}
        bad = sorted(a for a in axes if shape[a] != 1)
        if bad:
            raise ShapeError(f"ops.squeeze: axis {bad} of shape {shape} is not of size 1")
    return reshape(x, tuple(n for i, n in enumerate(shape) if i not in axes))


def _transpose_vjp(g, out, x, *, axes):
    return (transpose(g, tuple(int(a) for a in np.argsort(axes))),)


_transpose = Primitive("transpose", lambda x, *, axes: np.transpose(x, axes), _transpose_vjp)


def transpose(x, axes=None):
    """Permute axes (default: reverse them).

    Example:
        >>> transpose(np.zeros((2, 3, 4)), (2, 0, 1)).shape
        (4, 2, 3)
    """
    ndim = len(_shape(x))
    if axes is None:
        axes = tuple(reversed(range(ndim)))
    else:
        axes = tuple(_axis(int(a), ndim, "transpose") for a in axes)
        if sorted(axes) != list(range(ndim)):
            raise ShapeError(
                f"ops.transpose: axes {axes} are not a permutation of the {ndim} dims of "
                f"shape {_shape(x)}"
            )
    if axes == tuple(range(ndim)):
        return x
    return _transpose(x, axes=axes)


def swapaxes(x, axis1: int, axis2: int):
    """Exchange two axes."""
    ndim = len(_shape(x))
    axes = list(range(ndim))
    a, b = _axis(axis1, ndim, "swapaxes"), _axis(axis2, ndim, "swapaxes")
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


def moveaxis(x, source: int, destination: int):
    """Move one axis to a new position, keeping the others in order."""
    ndim = len(_shape(x))
    src, dst = _axis(source, ndim, "moveaxis"), _axis(destination, ndim, "moveaxis")
    order = [a for a in range(ndim) if a != src]
    order.insert(dst, src)
    return transpose(x, order)


# The vjp returns g unchanged: autodiff's central step sums it back to x's shape.
_broadcast_to = Primitive(
    "broadcast_to",
    lambda x, *, shape: np.broadcast_to(x, shape),
    lambda g, out, x, *, shape: (g,),
)


def broadcast_to(x, shape):
    """A read-only broadcast view of ``x`` with ``shape`` (gradients are summed back)."""
    shape = tuple(int(s) for s in shape)
    if _shape(x) == shape:
        return x
    try:
        np.broadcast_shapes(_shape(x), shape)
        ok = len(shape) >= len(_shape(x)) and np.broadcast_shapes(_shape(x), shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"ops.broadcast_to: cannot broadcast shape {_shape(x)} to {shape}")
    return _broadcast_to(x, shape=shape)


# --------------------------------------------------------------------------- rearrangements
def flip(x, axis=None):
    """Reverse the order of elements along ``axis`` (all axes when None)."""
    from gpudl.ops.indexing import getitem

    ndim = len(_shape(x))
    if axis is None:
        axes = range(ndim)
    else:
        axes = [_axis(int(a), ndim, "flip") for a in np.atleast_1d(axis)]
    index = [slice(None)] * ndim
    for a in axes:
        index[a] = slice(None, None, -1)
    return getitem(x, tuple(index))


def tile(x, reps):
    """Repeat the whole array ``reps`` times per axis (``np.tile``); built from broadcasting.

    Example:
        >>> tile(np.array([1.0, 2.0]), (2, 2)).tolist()
        [[1.0, 2.0, 1.0, 2.0], [1.0, 2.0, 1.0, 2.0]]
    """
    reps = (int(reps),) if isinstance(reps, int | np.integer) else tuple(int(r) for r in reps)
    shape = _shape(x)
    d = max(len(shape), len(reps))
    shape = (1,) * (d - len(shape)) + tuple(shape)
    reps = (1,) * (d - len(reps)) + reps
    # (1, s0, 1, s1, ...) -> (r0, s0, r1, s1, ...) -> (r0*s0, r1*s1, ...)
    inter = tuple(v for s in shape for v in (1, s))
    big = tuple(v for r, s in zip(reps, shape, strict=False) for v in (r, s))
    y = broadcast_to(reshape(x, inter), big)
    return reshape(y, tuple(r * s for r, s in zip(reps, shape, strict=False)))


def repeat(x, repeats, axis: int | None = None):
    """Repeat each element ``repeats`` times along ``axis`` (flattened when None), as NumPy.

    ``repeats`` may be an int or one count per element; the gradient sums the copies.

    Example:
        >>> repeat(np.array([1.0, 2.0]), [1, 2]).tolist()
        [1.0, 2.0, 2.0]
    """
    from gpudl.ops.indexing import take

    if axis is None:
        x, axis = ravel(x), 0
    shape = _shape(x)
    axis = _axis(axis, len(shape), "repeat")
    n = shape[axis]
    reps = to_numpy(repeats)
    if reps.ndim > 1 or (reps.ndim == 1 and reps.shape[0] not in (1, n)) or (reps < 0).any():
        raise ShapeError(
            f"ops.repeat: repeats must be a non-negative int or {n} counts for axis {axis}, "
            f"got {repeats!r}"
        )
    index = np.repeat(np.arange(n), reps)
    return take(x, module_of(unbox_all(x)).asarray(index), axis=axis)


def _tri_mask(x, k: int, lower: bool):
    raw = unbox_all(x)
    xp = module_of(raw)
    n, m = _shape(x)[-2:]
    return xp.tri(n, m, k, dtype=bool) if lower else ~xp.tri(n, m, k - 1, dtype=bool)


def tril(x, k: int = 0):
    """Lower triangle of the last two dims (elements above diagonal ``k`` set to 0)."""
    from gpudl.ops.elementwise import where

    return where(_tri_mask(x, k, True), x, 0)


def triu(x, k: int = 0):
    """Upper triangle of the last two dims (elements below diagonal ``k`` set to 0)."""
    from gpudl.ops.elementwise import where

    return where(_tri_mask(x, k, False), x, 0)
