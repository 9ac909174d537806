"""Linear algebra: matmul (batched, broadcasting), dot, outer, norms, solve, inv, det;
pinv, svd, eigh and lstsq forward only (enough for closed-form linear models).

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.matmul(np.ones((2, 3)), np.ones((3, 4))).shape
    (2, 4)
"""

from __future__ import annotations

import numpy as np

from gpudl.autodiff import Primitive, is_traced, nondifferentiable
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, GradientError, ShapeError
from gpudl.ops.elementwise import abs as _abs
from gpudl.ops.elementwise import multiply, not_equal, power, where
from gpudl.ops.reductions import max as _max
from gpudl.ops.reductions import min as _min
from gpudl.ops.reductions import sum as _sum
from gpudl.ops.shape import expand_dims, reshape, swapaxes


def _mT(x):
    return swapaxes(x, -1, -2)


def _matmul_vjp(g, out, a, b):
    # Batch dims may broadcast; autodiff sums the cotangents back to each input's shape.
    return (lambda: _matmul(g, _mT(b)), lambda: _matmul(_mT(a), g))


_matmul = Primitive("matmul", np.matmul, _matmul_vjp)


def _batch_dims_broadcast(a: tuple, b: tuple) -> bool:
    # Checked only for batched operands, so the common 2-D case costs nothing extra.
    return all(x == y or x == 1 or y == 1 for x, y in zip(reversed(a), reversed(b)))


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands, batched (broadcast) leading dims.

    Example:
        >>> matmul(np.ones((5, 2, 3)), np.ones((3, 4))).shape
        (5, 2, 4)
    """
    sa, sb = _shape(a), _shape(b)
    if len(sa) == 0 or len(sb) == 0:
        raise ShapeError(
            f"ops.matmul: operands must be at least 1-D, got shapes {sa} and {sb}; "
            "use ops.multiply (or *) for scalars"
        )
    kb = sb[-2 if len(sb) > 1 else 0]
    if sa[-1] != kb:
        raise ShapeError(
            f"ops.matmul: shapes {sa} and {sb} do not fit: the last dim of a ({sa[-1]}) must "
            f"equal the {'second-to-last' if len(sb) > 1 else 'only'} dim of b ({kb}). "
            "Transpose one operand or fix the layer size."
        )
    if (len(sa) > 2 or len(sb) > 2) and not _batch_dims_broadcast(sa[:-2], sb[:-2]):
        raise ShapeError(
            f"ops.matmul: shapes {sa} and {sb} do not fit: the batch dims {sa[:-2]} and "
            f"{sb[:-2]} do not broadcast"
        )
    if len(sa) == 1 and len(sb) == 1:
        return _sum(multiply(a, b))
    if len(sa) == 1:
        return reshape(_matmul(expand_dims(a, 0), b), sb[:-2] + sb[-1:])
    if len(sb) == 1:
        return reshape(_matmul(a, expand_dims(b, -1)), sa[:-1])
    return _matmul(a, b)


def dot(a, b):
    """``np.dot`` for scalars, 1-D and 2-D operands (inner product or matrix product).

    Example:
        >>> float(dot(np.array([1.0, 2.0]), np.array([3.0, 4.0])))
        11.0
    """
    sa, sb = _shape(a), _shape(b)
    if len(sa) == 0 or len(sb) == 0:
        return multiply(a, b)
    if len(sa) > 2 or len(sb) > 2:
        raise ShapeError(
            f"ops.dot: supports operands of at most 2 dims, got shapes {sa} and {sb}; "
            "use ops.matmul for batched products or ops.einsum for general contractions"
        )
    return matmul(a, b)


def outer(a, b):
    """Outer product of two vectors (flattened first, as NumPy): ``out[i, j] = a[i] * b[j]``.

    Example:
        >>> outer(np.array([1.0, 2.0]), np.array([1.0, 0.0, 3.0])).shape
        (2, 3)
    """
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


# --------------------------------------------------------------------------- norms
def _norm2_vjp(g, out, x, *, axis, keepdims):
    from gpudl.ops.reductions import _expand_back, _keepdims_shape

    out_k = out if keepdims else reshape(out, _keepdims_shape(_shape(x), axis))
    # x / ||x||, with 0 at x = 0 (the minimum-norm subgradient, as torch uses).
    nonzero = not_equal(out_k, 0)
    safe = where(nonzero, out_k, 1.0)
    return (_expand_back(g, x, axis, keepdims) * where(nonzero, x / safe, 0.0),)


_norm2 = Primitive(
    "norm2",
    lambda x, *, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    _norm2_vjp,
)


def norm(x, ord=None, axis=None, keepdims: bool = False):  # noqa: A002 - NumPy's name
    """``np.linalg.norm``: vector norms (any ``ord`` > 0, inf, -inf) and the matrix norms
    ``'fro'``, 1, -1, inf, -inf. ``ord=None`` is the L2 norm of all entries (Frobenius).

    The L2 gradient at 0 is 0 (not NaN), so norm penalties are safe at the origin.

    Example:
        >>> float(norm(np.array([3.0, 4.0])))
        5.0
        >>> float(norm(np.array([[1.0, -2.0], [3.0, 4.0]]), ord=1))  # max column sum
        6.0
    """
    from gpudl.ops.reductions import _norm_axis

    ndim = len(_shape(x))
    if axis is None and ord is not None and ndim not in (1, 2):
        raise ShapeError(
            f"ops.norm: ord={ord!r} with axis=None needs a 1-D or 2-D array, got shape "
            f"{_shape(x)}; pass axis="
        )
    axes = _norm_axis(axis if axis is not None else tuple(range(ndim)), x)
    if ord is None:
        return _norm2(x, axis=axes, keepdims=keepdims)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes, keepdims)
    if len(axes) != 2:
        raise ShapeError(f"ops.norm: axis must name 1 or 2 dims, got {axis}")
    return _matrix_norm(x, ord, axes, keepdims)


def _vector_norm(x, ord, axes, keepdims):  # noqa: A002
    if ord == 2:
        return _norm2(x, axis=axes, keepdims=keepdims)
    if ord in (np.inf, "inf"):
        return _max(_abs(x), axis=axes, keepdims=keepdims)
    if ord in (-np.inf, "-inf"):
        return _min(_abs(x), axis=axes, keepdims=keepdims)
    if ord == 1:
        return _sum(_abs(x), axis=axes, keepdims=keepdims)
    if isinstance(ord, int | float) and ord > 0:
        p = float(ord)
        return power(_sum(power(_abs(x), p), axis=axes, keepdims=keepdims), 1.0 / p)
    raise ConfigError(f"ops.norm: vector ord must be > 0, inf or -inf, got {ord!r}")


def _matrix_norm(x, ord, axes, keepdims):  # noqa: A002
    row, col = axes
    if ord == "fro":
        return _norm2(x, axis=axes, keepdims=keepdims)
    if ord in (1, -1, np.inf, -np.inf):
        # 1: max over columns of the column sums; inf: max over rows of the row sums.
        inner, outer_axis = (row, col) if ord in (1, -1) else (col, row)
        sums = _sum(_abs(x), axis=inner, keepdims=True)
        pick = _max if ord in (1, np.inf) else _min
        out = pick(sums, axis=outer_axis, keepdims=True)
        return out if keepdims else reshape(
            out, tuple(n for i, n in enumerate(_shape(out)) if i not in axes)
        )
    raise ConfigError(
        f"ops.norm: matrix ord must be 'fro', 1, -1, inf or -inf, got {ord!r} "
        "(the spectral and nuclear norms are not supported)"
    )


# --------------------------------------------------------------------------- solve, inv, det
def _solve_impl(a, b):
    # Broadcast the batch dims explicitly: NumPy 2 and CuPy then agree that b is a
    # (batch of) matrix, whatever the ranks.
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    xp = module_of(a)
    a = xp.broadcast_to(a, batch + a.shape[-2:])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    return xp.linalg.solve(a, b)


def _solve_vjp(g, out, a, b):
    # x = A^-1 b:  gb = A^-T g,  gA = -gb x^T
    gb = _solve(_mT(a), g)
    return (lambda: -_matmul(gb, _mT(out))), gb


_solve = Primitive("solve", _solve_impl, _solve_vjp)


def solve(a, b):
    """Solve ``a @ x = b`` for square ``a`` (differentiable in both). ``b`` is a vector
    when 1-D, otherwise a (batch of) matrix, as in NumPy 2.

    Example:
        >>> solve(np.array([[2.0, 0.0], [0.0, 4.0]]), np.array([2.0, 2.0])).tolist()
        [1.0, 0.5]
    """
    sa, sb = _shape(a), _shape(b)
    if len(sa) < 2 or sa[-1] != sa[-2]:
        raise ShapeError(f"ops.solve: a must be a (batch of) square matrix, got shape {sa}")
    if len(sb) == 0 or sb[0 if len(sb) == 1 else -2] != sa[-1]:
        raise ShapeError(
            f"ops.solve: shapes {sa} and {sb} do not fit: b needs {sa[-1]} rows "
            f"(shape ({sa[-1]},) or (..., {sa[-1]}, K))"
        )
    if len(sb) == 1:
        return reshape(_solve(a, expand_dims(b, -1)), sa[:-2] + sb)
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ShapeError(f"ops.solve: the batch dims of {sa} and {sb} do not broadcast") from None
    return _solve(a, b)


def _inv_vjp(g, out, a):
    t = _mT(out)
    return (-_matmul(_matmul(t, g), t),)


_inv = Primitive("inv", lambda a: module_of(a).linalg.inv(a), _inv_vjp)


def inv(a):
    """Inverse of a (batch of) square matrix (differentiable).

    Example:
        >>> inv(np.array([[2.0, 0.0], [0.0, 4.0]])).tolist()
        [[0.5, 0.0], [0.0, 0.25]]
    """
    sa = _shape(a)
    if len(sa) < 2 or sa[-1] != sa[-2]:
        raise ShapeError(f"ops.inv: needs a (batch of) square matrix, got shape {sa}")
    return _inv(a)


def _det_vjp(g, out, a):
    # d det(A) = det(A) tr(A^-1 dA)  ->  gA = g det(A) A^-T  (A must be invertible)
    scale = expand_dims(g * out, (-1, -2))
    return (scale * _mT(inv(a)),)


_det = Primitive("det", lambda a: module_of(a).linalg.det(a), _det_vjp)


def det(a):
    """Determinant of a (batch of) square matrix (differentiable where ``a`` is invertible)."""
    sa = _shape(a)
    if len(sa) < 2 or sa[-1] != sa[-2]:
        raise ShapeError(f"ops.det: needs a (batch of) square matrix, got shape {sa}")
    return _det(a)


# --------------------------------------------------------------------------- forward only
# Closed-form linear models need these; their gradients are not provided.
_pinv = nondifferentiable("pinv", lambda a, *, rcond: module_of(a).linalg.pinv(a, rcond))
_svd = nondifferentiable(
    "svd",
    lambda a, *, full_matrices, compute_uv: module_of(a).linalg.svd(
        a, full_matrices=full_matrices, compute_uv=compute_uv
    ),
)
_eigh = nondifferentiable("eigh", lambda a, *, UPLO: module_of(a).linalg.eigh(a, UPLO=UPLO))
_lstsq = nondifferentiable("lstsq", lambda a, b, *, rcond: module_of(a).linalg.lstsq(a, b, rcond=rcond))


def _forward_only(op: str, *args) -> None:
    """pinv/svd/eigh/lstsq have no gradient here: refuse traced inputs instead of silently
    giving a zero gradient."""
    if any(is_traced(a) for a in args):
        raise GradientError(
            f"ops.{op} is forward-only in gpudl: its input is being differentiated, and its "
            f"gradient is not implemented. Use ops.solve/ops.inv (differentiable), or wrap the "
            f"input in gd.stop_gradient(...) if you mean a constant."
        )


def pinv(a, rcond: float = 1e-15):
    """Moore-Penrose pseudo-inverse (forward only: no gradient)."""
    _forward_only("pinv", a)
    return _pinv(a, rcond=rcond)


def svd(a, full_matrices: bool = True, compute_uv: bool = True):
    """Singular value decomposition, NumPy's signature (forward only).

    Example:
        >>> u, s, vt = svd(np.eye(3)[:, :2], full_matrices=False)
        >>> s.tolist()
        [1.0, 1.0]
    """
    _forward_only("svd", a)
    return _svd(a, full_matrices=full_matrices, compute_uv=compute_uv)


def eigh(a, UPLO: str = "L"):  # noqa: N803 - NumPy's name
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix (forward only)."""
    _forward_only("eigh", a)
    return _eigh(a, UPLO=UPLO)


def lstsq(a, b, rcond=None):
    """Least-squares solution of ``a @ x = b``: ``(x, residuals, rank, s)`` (forward only)."""
    _forward_only("lstsq", a, b)
    return _lstsq(a, b, rcond=rcond)
