"""Linear algebra: matmul (batched, broadcasting), dot, outer, norms, solve, inv;
pinv, svd and eigh forward only (enough for closed-form linear models).

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.matmul(np.ones((2, 3)), np.ones((3, 4))).shape
    (2, 4)
"""

from __future__ import annotations

import numpy as np

from gpudl.autodiff import Primitive, nondifferentiable
from gpudl.errors import ShapeError
from gpudl.ops.elementwise import abs as _abs
from gpudl.ops.elementwise import sqrt
from gpudl.ops.reductions import max as _max
from gpudl.ops.reductions import sum as _sum
from gpudl.ops.shape import expand_dims, reshape, swapaxes


def _shape(x) -> tuple:
    return x.shape if hasattr(x, "shape") else np.shape(x)


def _matmul_vjp(g, out, a, b):
    # Batch dims may broadcast; autodiff sums the cotangents back to each input's shape.
    return (lambda: _matmul(g, swapaxes(b, -1, -2)), lambda: _matmul(swapaxes(a, -1, -2), g))


_matmul = Primitive("matmul", np.matmul, _matmul_vjp)


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands, batched (broadcast) leading dims.

    Example:
        >>> matmul(np.ones((5, 2, 3)), np.ones((3, 4))).shape
        (5, 2, 4)
    """
    sa, sb = _shape(a), _shape(b)
    if len(sa) == 0 or len(sb) == 0:
        raise ShapeError(f"ops.matmul: operands must be at least 1-D, got shapes {sa} and {sb}")
    if sa[-1] != sb[-2 if len(sb) > 1 else 0]:
        raise ShapeError(
            f"ops.matmul: shapes {sa} and {sb} do not fit: the last dim of a ({sa[-1]}) must "
            f"equal the {'second-to-last' if len(sb) > 1 else 'only'} dim of b "
            f"({sb[-2 if len(sb) > 1 else 0]}). Transpose one operand or fix the layer size."
        )
    if len(sa) == 1 and len(sb) == 1:
        return _sum(a * b)
    if len(sa) == 1:
        return reshape(_matmul(expand_dims(a, 0), b), sb[:-2] + sb[-1:])
    if len(sb) == 1:
        return reshape(_matmul(a, expand_dims(b, -1)), sa[:-1])
    return _matmul(a, b)


def dot(a, b):
    """``np.dot`` for 1-D and 2-D operands (inner product or matrix product)."""
    if len(_shape(a)) > 2 or len(_shape(b)) > 2:
        raise ShapeError(
            f"ops.dot: supports 1-D and 2-D operands, got {_shape(a)} and {_shape(b)}; "
            "use ops.matmul for batched products"
        )
    return matmul(a, b)


def outer(a, b):
    """Outer product of two vectors: ``out[i, j] = a[i] * b[j]``."""
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


def norm(x, ord=None, axis=None, keepdims: bool = False):
    """Vector or matrix norm: L2 / Frobenius (default), L1 (``ord=1``), max (``ord=inf``).

    For ``axis=None`` on a matrix, ``ord=None`` and ``ord="fro"`` give the Frobenius norm
    (the L2 norm of all entries), as NumPy does.
    """
    if ord in (None, 2, "fro"):
        if ord == 2 and axis is None and len(_shape(x)) == 2:
            raise ValueError("ops.norm: the spectral norm (ord=2 on a matrix) is not supported")
        return sqrt(_sum(x * x, axis=axis, keepdims=keepdims))
    if ord == 1:
        return _sum(_abs(x), axis=axis, keepdims=keepdims)
    if ord in (np.inf, "inf"):
        return _max(_abs(x), axis=axis, keepdims=keepdims)
    raise ValueError(f"ops.norm: ord must be None, 1, 2, 'fro' or inf, got {ord!r}")


def _xp(a):
    from gpudl.backend import module_of

    return module_of(a)


def _solve_vjp(g, out, a, b):
    # x = A^-1 b;  gb = A^-T g;  gA = -gb x^T
    gb = solve(swapaxes(a, -1, -2), g)
    if len(_shape(b)) == len(_shape(a)) - 1:  # b is a vector (or a batch of vectors)
        ga = -(expand_dims(gb, -1) * expand_dims(out, -2))
    else:
        ga = -_matmul(gb, swapaxes(out, -1, -2))
    return ga, gb


_solve = Primitive("solve", lambda a, b: _xp(a).linalg.solve(a, b), _solve_vjp)


def solve(a, b):
    """Solve ``a @ x = b`` for square ``a`` (differentiable in both)."""
    sa, sb = _shape(a), _shape(b)
    if len(sa) < 2 or sa[-1] != sa[-2]:
        raise ShapeError(f"ops.solve: a must be square, got shape {sa}")
    if sb[-1 if len(sb) == len(sa) - 1 else -2] != sa[-1]:
        raise ShapeError(f"ops.solve: shapes {sa} and {sb} do not fit")
    return _solve(a, b)


def _inv_vjp(g, out, a):
    t = swapaxes(out, -1, -2)
    return (-_matmul(_matmul(t, g), t),)


inv = Primitive("inv", lambda a: _xp(a).linalg.inv(a), _inv_vjp)

# Forward only: closed-form linear models need them; their gradients are not provided.
pinv = nondifferentiable("pinv", lambda a: _xp(a).linalg.pinv(a))
svd = nondifferentiable(
    "svd", lambda a, full_matrices=False: _xp(a).linalg.svd(a, full_matrices=full_matrices)
)
eigh = nondifferentiable("eigh", lambda a: _xp(a).linalg.eigh(a))
det = nondifferentiable("det", lambda a: _xp(a).linalg.det(a))
