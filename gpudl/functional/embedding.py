"""Embedding lookup: a gather of rows whose gradient scatter-adds into the table.

Example:
    >>> import numpy as np
    >>> from gpudl.functional.embedding import embedding
    >>> embedding(np.arange(6.0).reshape(3, 2), np.array([[2, 0]])).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
"""

from __future__ import annotations

from gpudl import ops
from gpudl.autodiff import stop_gradient, unbox_all
from gpudl.errors import DTypeError, IndexRangeError, ShapeError
from gpudl.functional._checks import is_int


def embedding(weight, indices, padding_idx: int | None = None):
    """Rows of ``weight`` (V, D) picked by integer ``indices`` (any shape) -> indices.shape + (D,).

    Repeated indices accumulate their gradients. ``padding_idx`` (torch): that row gets no
    gradient (its output is still ``weight[padding_idx]``, usually zeros). For a frozen
    table wrap ``weight`` in ``gd.stop_gradient``.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> gd.grad(lambda w: embedding(w, np.array([1, 1])).sum())(np.zeros((2, 1))).tolist()
        [[0.0], [2.0]]
    """
    raw = unbox_all(indices)
    shape = unbox_all(weight).shape
    if len(shape) != 2:
        raise ShapeError(f"embedding: weight must be (num_embeddings, dim), got shape {shape}")
    if not hasattr(raw, "dtype") or raw.dtype.kind not in "iu":
        raise DTypeError(
            f"embedding: indices must be integers, got dtype {getattr(raw, 'dtype', type(raw))}; "
            f"cast with idx.astype('int64')"
        )
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= shape[0]):
        raise IndexRangeError(
            f"embedding: indices must lie in [0, {shape[0]}) for a table of {shape[0]} rows, "
            f"got range [{int(raw.min())}, {int(raw.max())}]; grow num_embeddings or fix the "
            f"vocabulary mapping"
        )
    if padding_idx is not None:
        v = shape[0]
        if not is_int(padding_idx) or not -v <= padding_idx < v:
            raise IndexRangeError(
                f"embedding: padding_idx must be an int in [-{v}, {v}) (a row of the table, "
                f"negative counting from the end as torch), got {padding_idx!r}")
        padding_idx = int(padding_idx) % v  # torch's reading of a negative index
    out = ops.take(weight, raw, axis=0)
    if padding_idx is not None:
        pad = ops.equal(indices, padding_idx)[..., None]  # gd.ops: part of an ONNX export
        out = ops.where(pad, stop_gradient(out), out)
    return out


__all__ = ["embedding"]
