"""Shape ops: reshape, transpose, broadcast, expand/squeeze, concatenate/stack/split, pad.

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.concatenate([np.zeros((1, 2)), np.ones((2, 2))], axis=0).shape
    (3, 2)
"""

from __future__ import annotations

import numpy as np

from gpudl.autodiff import Primitive


def _shape(x) -> tuple:
    return x.shape if hasattr(x, "shape") else np.shape(x)


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
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        size = int(np.prod(_shape(x)))
        if known == 0 or size % known:
            raise ValueError(f"ops.reshape: cannot reshape {_shape(x)} into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if shape == _shape(x):
        return x
    if int(np.prod(shape)) != int(np.prod(_shape(x))):
        raise ValueError(
            f"ops.reshape: cannot reshape an array of shape {_shape(x)} "
            f"({int(np.prod(_shape(x)))} elements) into {shape}"
        )
    return _reshape(x, shape=shape)


def flatten(x, start_axis: int = 0):
    """Flatten dims from ``start_axis`` on (``flatten(x, 1)`` keeps the batch dim, as torch)."""
    shape = _shape(x)
    start_axis %= max(len(shape), 1)
    return reshape(x, shape[:start_axis] + (-1,))


def ravel(x):
    return reshape(x, (-1,))


def expand_dims(x, axis: int):
    shape = list(_shape(x))
    axis = axis if axis >= 0 else axis + len(shape) + 1
    shape.insert(axis, 1)
    return reshape(x, tuple(shape))


def squeeze(x, axis=None):
    shape = _shape(x)
    if axis is None:
        axes = {i for i, n in enumerate(shape) if n == 1}
    else:
        axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
        bad = [a for a in axes if shape[a] != 1]
        if bad:
            raise ValueError(f"ops.squeeze: axis {bad} of shape {shape} is not of size 1")
    return reshape(x, tuple(n for i, n in enumerate(shape) if i not in axes))


def _transpose_vjp(g, out, x, *, axes):
    return (transpose(g, tuple(np.argsort(axes))),)


_transpose = Primitive("transpose", lambda x, *, axes: np.transpose(x, axes), _transpose_vjp)


def transpose(x, axes=None):
    """Permute axes (default: reverse them)."""
    ndim = len(_shape(x))
    axes = tuple(reversed(range(ndim))) if axes is None else tuple(a % ndim for a in axes)
    if axes == tuple(range(ndim)):
        return x
    return _transpose(x, axes=axes)


def swapaxes(x, axis1: int, axis2: int):
    axes = list(range(len(_shape(x))))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return transpose(x, axes)


def moveaxis(x, source: int, destination: int):
    ndim = len(_shape(x))
    order = [a for a in range(ndim) if a != source % ndim]
    order.insert(destination % ndim, source % ndim)
    return transpose(x, order)


# The vjp returns g unchanged: autodiff's central step sums it back to x's shape.
_broadcast_to = Primitive(
    "broadcast_to",
    lambda x, *, shape: np.broadcast_to(x, shape),
    lambda g, out, x, *, shape: (g,),
)


def broadcast_to(x, shape):
    shape = tuple(shape)
    if _shape(x) == shape:
        return x
    return _broadcast_to(x, shape=shape)


# --------------------------------------------------------------------------- join and split
def _concatenate_vjp(g, out, *xs, axis):
    from gpudl.ops.indexing import getitem

    grads, start = [], 0
    for x in xs:
        n = _shape(x)[axis]
        index = [slice(None)] * g.ndim
        index[axis] = slice(start, start + n)
        grads.append(getitem(g, tuple(index)))
        start += n
    return tuple(grads)


_concatenate = Primitive(
    "concatenate", lambda *xs, axis: np.concatenate(xs, axis=axis), _concatenate_vjp
)


def concatenate(arrays, axis: int = 0):
    """Join arrays along an existing axis."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("ops.concatenate: needs at least one array")
    ndim = len(_shape(arrays[0]))
    return _concatenate(*arrays, axis=axis % max(ndim, 1))


def stack(arrays, axis: int = 0):
    """Join arrays along a new axis."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("ops.stack: needs at least one array")
    shapes = {_shape(a) for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"ops.stack: all arrays must have one shape, got {sorted(shapes)}")
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis)


def split(x, indices_or_sections, axis: int = 0):
    """Split into pieces (NumPy semantics: a count of equal sections or split indices)."""
    from gpudl.ops.indexing import getitem

    n = _shape(x)[axis]
    if isinstance(indices_or_sections, int):
        if n % indices_or_sections:
            raise ValueError(
                f"ops.split: axis {axis} of size {n} does not split into "
                f"{indices_or_sections} equal sections"
            )
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step))
    else:
        bounds = [0, *indices_or_sections, n]
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * len(_shape(x))
        index[axis] = slice(lo, hi)
        pieces.append(getitem(x, tuple(index)))
    return pieces


# --------------------------------------------------------------------------- pad
def _pad_vjp(g, out, x, *, pad_width, constant_values):
    from gpudl.ops.indexing import getitem

    index = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, _shape(x)))
    return (getitem(g, index),)


_pad = Primitive(
    "pad",
    lambda x, *, pad_width, constant_values: np.pad(
        x, pad_width, mode="constant", constant_values=constant_values
    ),
    _pad_vjp,
)


def pad(x, pad_width, constant_values=0.0):
    """Constant padding; ``pad_width`` as NumPy: an int, a pair, or one pair per axis."""
    ndim = len(_shape(x))
    width = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))
    if (width < 0).any():
        raise ValueError(f"ops.pad: pad widths must be >= 0, got {pad_width}")
    width = tuple((int(a), int(b)) for a, b in width)
    return _pad(x, pad_width=width, constant_values=constant_values)


def flip(x, axis=None):
    """Reverse the order of elements along ``axis`` (all axes when None)."""
    from gpudl.ops.indexing import getitem

    ndim = len(_shape(x))
    axes = range(ndim) if axis is None else [a % ndim for a in np.atleast_1d(axis)]
    index = [slice(None)] * ndim
    for a in axes:
        index[a] = slice(None, None, -1)
    return getitem(x, tuple(index))
