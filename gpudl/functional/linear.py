"""``linear(x, w, b)``: the fully connected layer's op, torch's (out, in) weight layout.

``linear`` (what ``nn.Dense`` calls) runs on ``linear_rows``, a primitive with one body
for NumPy and CuPy: ``x @ w.T + b`` for x (..., E_in), w (E_out, E_in), b (E_out,) as ONE
2-D GEMM over all the rows of x (a reshape, a view where x's layout allows), the bias (and
optionally a ReLU) applied in place into the GEMM's own output. Against the composite
(transpose, matmul, add; and a reshape on either side for >2-D inputs) that is one tape
node instead of three to five and no fresh array for the bias add; a batched
(N, L, E_in) @ (E_in, E_out) would also make the weight gradient N small GEMMs and a sum
over N. vjp: dx = g w, dw = g^T x (one GEMM), db = the row sum (g masked by out > 0 first
with ``relu``); each is computed only when asked for. The attention path
(``_attention_fused.py``) uses it too; its ONNX converter (Transpose, MatMul, Add, Relu)
is in ``gpudl/export/onnx_attention_converters.py``.

Example:
    >>> import numpy as np
    >>> linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
    >>> linear_rows(np.ones((2, 3, 4)), np.ones((5, 4)), np.zeros(5)).shape
    (2, 3, 5)
"""

from __future__ import annotations

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced, unbox_all
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ShapeError
from gpudl.functional import activations
from gpudl.functional._activation_twins import keep_where
from gpudl.ops.elementwise import relu_into


def _linear_rows_impl(x, w, b, *, relu):
    xp = module_of(x)
    y = xp.matmul(x.reshape(-1, x.shape[-1]), w.T)  # (rows, E_out), fresh: ours to overwrite
    y += b
    if relu:  # in place: no second (rows, E_out) array, no node of its own
        if xp is np:
            relu_into(y, y)
        else:
            xp.maximum(y, y.dtype.type(0), out=y)
    return y.reshape(*x.shape[:-1], w.shape[0])


def _linear_rows_vjp(g, out, x, w, b, *, relu):
    e_out, e_in = _shape(w)
    if any(is_traced(a) for a in (g, out, x, w)):  # an outer grad traces this: gd.ops
        if relu:  # relu'(0) = 0, as torch; the output is > 0 exactly where the input is
            g = g * ops.astype(ops.greater(out, 0), unbox_all(out).dtype)
        g2 = ops.reshape(g, (-1, e_out))
        return (lambda: ops.reshape(ops.matmul(g2, w), _shape(x)),
                lambda: ops.matmul(ops.transpose(g2), ops.reshape(x, (-1, e_in))),
                lambda: ops.sum(g2, axis=0))
    g2 = g.reshape(-1, e_out)  # (rows, E_out)
    if relu:  # where(out > 0, g, 0) exactly as relu's vjp: an inf/NaN g of a dead unit -> 0
        mask, xp = out.reshape(-1, e_out) > 0, module_of(g2)
        g2 = keep_where(mask, g2, np.empty_like(g2)) if xp is np else xp.where(mask, g2, 0)
    return (lambda: (g2 @ w).reshape(x.shape), lambda: g2.T @ x.reshape(-1, e_in),
            lambda: g2.sum(axis=0))


_linear_rows = Primitive("linear_rows", _linear_rows_impl, _linear_rows_vjp)


def linear_rows(x, w, b=None, relu: bool = False):
    """``x @ w.T + b`` for x (..., E_in), w (E_out, E_in) (torch's Linear layout), b
    (E_out,) or None, as one 2-D GEMM over the rows of x -> (..., E_out); ``relu`` applies
    ReLU to the result (torch's derivative at 0: 0). No checks (``linear`` makes them).

    Operands of one float dtype with a bias take the fused primitive; others (no bias,
    mixed dtypes) the same 2-D product composed of ``gd.ops``.

    Example:
        >>> import numpy as np
        >>> linear_rows(np.ones((1, 2)), np.ones((3, 2)), np.full(3, -3.0), relu=True).tolist()
        [[0.0, 0.0, 0.0]]
    """
    sx, sw = _shape(x), _shape(w)
    if b is not None and _same_float(x, w, b) and len(sw) == 2 and len(sx) >= 1 \
            and sx[-1] == sw[1] and _shape(b) == (sw[0],):
        return _linear_rows(x, w, b, relu=bool(relu))
    if len(sx) == 2:  # already rows: no reshapes on the tape
        y = ops.matmul(x, ops.transpose(w))
    else:
        y = ops.reshape(ops.matmul(ops.reshape(x, (-1, sx[-1])), ops.transpose(w)),
                        (*sx[:-1], sw[0]))  # (..., E_out)
    if b is not None:
        y = y + b
    return activations.relu(y) if relu else y


def _same_float(*arrays) -> bool:
    dtypes = {getattr(unbox_all(a), "dtype", None) for a in arrays}
    return len(dtypes) == 1 and getattr(next(iter(dtypes)), "kind", None) == "f"


def linear(x, w, b=None):
    """``y = x @ w.T + b`` for x (..., in), w (out, in), b (out,) or None -> (..., out).

    Example:
        >>> import numpy as np
        >>> linear(np.ones((2, 5, 3)), np.ones((4, 3)), np.arange(4.0))[0, 0].tolist()
        [3.0, 4.0, 5.0, 6.0]
    """
    _check_linear("F.linear", x, w, b)
    return linear_rows(x, w, b)  # a single example (in,) is one row: -> (out,)


def linear_relu(x, w, b=None):
    """``relu(linear(x, w, b))`` as one tape node where the fused primitive applies (what
    ``nn.Sequential`` runs for a Dense followed by a ReLU): the same values and gradients
    as the two ops, with linear's checks.

    Example:
        >>> import numpy as np
        >>> linear_relu(np.ones((1, 2)), np.ones((2, 2)), np.array([-3.0, 1.0])).tolist()
        [[0.0, 3.0]]
    """
    _check_linear("F.linear", x, w, b)
    return linear_rows(x, w, b, relu=True)


def _check_linear(op: str, x, w, b) -> None:
    sx, sw = _shape(x), _shape(w)
    if len(sw) != 2:
        raise ShapeError(f"{op}: weight must be 2-D (out, in), got shape {tuple(sw)}")
    if len(sx) < 1:
        raise ShapeError(f"{op}: input must have at least 1 dim (..., {sw[1]}), got a "
                         f"scalar; reshape it to (1, {sw[1]})")
    if sx[-1] != sw[1]:
        raise ShapeError(
            f"{op}: input has {sx[-1]} features but the weight (out={sw[0]}, "
            f"in={sw[1]}) expects {sw[1]}; check the layer sizes"
        )
    if b is not None and tuple(_shape(b)) != (sw[0],):
        raise ShapeError(f"{op}: bias must have shape ({sw[0]},), got {tuple(_shape(b))}")


__all__ = ["linear", "linear_relu", "linear_rows"]
