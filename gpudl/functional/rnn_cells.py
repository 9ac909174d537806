"""Fused LSTM and GRU cells: CUDA kernels (kernels/lstm_cell.cu, gru_cell.cu) + NumPy twins.

Each cell is two ordinary GEMMs (``ops.matmul``) followed by one fused elementwise
primitive with two bodies (DESIGN principle 3):

* ``lstm_pointwise(gates (N, 4H), c (N, H)) -> (h_new, c_new)``, torch gate order i, f, g, o.
* ``gru_pointwise(gi (N, 3H), gh (N, 3H), h (N, H)) -> h_new``, torch gate order r, z, n.

Only torch's GRU (``reset_after=True``: r scales ``W_hn h + b_hn``) uses the fused kernel.
The course's / Keras ``reset_after=False`` GRU, ``n = tanh(W_in x + b_in + W_hn (r * h) +
b_hn)``, needs r before the hidden matmul, so it runs as a composite of gpudl ops
(:func:`gru_reset_before_step`), differentiable by autodiff, on both devices.

On CuPy arrays the forward and the backward are one kernel launch each; on NumPy arrays
the twins compute the same formulas (both bodies live in ``_rnn_kernels.py``; this module
holds the checks, the primitives with their vjps, and the cells; the sequence functions
are in ``recurrent.py``). The vjps call the backward kernel / twin directly when nothing is
traced at an outer level; under grad-of-grad they switch to the same formulas written with
differentiable gpudl ops, so higher derivatives are exact.

Example:
    >>> import numpy as np
    >>> x, h, c = np.ones((2, 3)), np.zeros((2, 4)), np.zeros((2, 4))
    >>> w_ih, w_hh = np.full((16, 3), 0.1), np.full((16, 4), 0.1)
    >>> h1, c1 = lstm_cell(x, h, c, w_ih, w_hh, None, None)
    >>> h1.shape, c1.shape
    ((2, 4), (2, 4))
"""


from __future__ import annotations

from typing import Any

import numpy as np  # noqa: F401  (the docstring examples use np)

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced
from gpudl.backend import check_same_device
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, ShapeError
from gpudl.functional._checks import CELL_DTYPES, check_float_operands
from gpudl.functional._rnn_kernels import (
    gru_pointwise_backward_raw,
    gru_pointwise_raw,
    lstm_pointwise_backward_raw,
    lstm_pointwise_raw,
)


# ----------------------------------------------------------------------------- checks
def check_cell_shapes(op: str, n_gates: int, x_shape, h_shape, c_shape, w_ih, w_hh, b_ih, b_hh,
                      x_name: str = "x") -> tuple[int, int, int]:
    """Validate a cell's shapes (torch layouts); returns (N, input_size, hidden_size)."""
    gate_desc = {4: "4*hidden (gates i, f, g, o)", 3: "3*hidden (gates r, z, n)",
                 1: "hidden"}[n_gates]
    if len(x_shape) != 2:
        raise ShapeError(f"{op}: {x_name} must be (N, input_size), got shape {x_shape}")
    n, i = x_shape
    if len(h_shape) != 2 or h_shape[0] != n:
        raise ShapeError(
            f"{op}: h must be (N, hidden) = ({n}, hidden) to match {x_name} {x_shape}, "
            f"got shape {h_shape}"
        )
    hidden = h_shape[1]
    if c_shape is not None and tuple(c_shape) != tuple(h_shape):
        raise ShapeError(f"{op}: c must have h's shape {h_shape}, got {c_shape}")
    g = n_gates * hidden
    ws = _shape(w_ih)
    if ws != (g, i):
        raise ShapeError(
            f"{op}: w_ih must be ({gate_desc}, input_size) = ({g}, {i}) for {x_name} with {i} "
            f"features and hidden size {hidden}, got shape {ws}"
        )
    ws = _shape(w_hh)
    if ws != (g, hidden):
        raise ShapeError(
            f"{op}: w_hh must be ({gate_desc}, hidden) = ({g}, {hidden}) for hidden size "
            f"{hidden} (h is {h_shape}), got shape {ws}"
        )
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None and _shape(b) != (g,):
            raise ShapeError(f"{op}: {name} must be ({gate_desc},) = ({g},), got {_shape(b)}")
    return n, i, hidden


def _check_pointwise(op: str, n_gates: int, wide: dict[str, Any], state: dict[str, Any]) -> None:
    check_float_operands(op, {**wide, **state}, CELL_DTYPES)
    (sname, s), = state.items()
    ss = _shape(s)
    if len(ss) != 2:
        raise ShapeError(f"{op}: {sname} must be (N, H), got shape {ss}")
    n, hidden = ss
    for name, a in wide.items():
        if _shape(a) != (n, n_gates * hidden):
            raise ShapeError(
                f"{op}: {name} must be (N, {n_gates}H) = ({n}, {n_gates * hidden}) for "
                f"{sname} of shape {ss}, got shape {_shape(a)}"
            )


# ----------------------------------------------------------------------------- LSTM primitive
def _lstm_forward_raw(gates, c):
    check_same_device((gates, c), "lstm_pointwise")
    return lstm_pointwise_raw(gates, c)


def _lstm_backward_raw(gates, c, c_new, dh, dc):
    dh = dh.astype(gates.dtype, copy=False)
    dc = dc.astype(gates.dtype, copy=False)
    return lstm_pointwise_backward_raw(gates, c, c_new, dh, dc)


def _lstm_backward_composite(gates, c, c_new, dh, dc):
    # The same formulas with differentiable ops: used when an outer grad traces the backward.
    hidden = _shape(c)[1]
    i = ops.sigmoid(gates[:, :hidden])
    f = ops.sigmoid(gates[:, hidden:2 * hidden])
    g = ops.tanh(gates[:, 2 * hidden:3 * hidden])
    o = ops.sigmoid(gates[:, 3 * hidden:])
    tc = ops.tanh(c_new)
    dct = dc + dh * o * (1.0 - tc * tc)
    dgates = ops.concatenate(
        [dct * g * i * (1.0 - i), dct * c * f * (1.0 - f), dct * i * (1.0 - g * g),
         dh * tc * o * (1.0 - o)], axis=1)
    return dgates, dct * f


def _lstm_pointwise_vjp(cots, out, gates, c):
    dh, dc = cots
    c_new = out[1]
    if any(is_traced(v) for v in (dh, dc, gates, c, c_new)):
        return _lstm_backward_composite(gates, c, c_new, dh, dc)
    return _lstm_backward_raw(gates, c, c_new, dh, dc)


_lstm_pointwise = Primitive("lstm_pointwise", _lstm_forward_raw, _lstm_pointwise_vjp,
                            multiple_results=True)


def lstm_pointwise(gates, c):
    """Fused LSTM elementwise step: gates (N, 4H) pre-activations [i, f, g, o], c (N, H).

    Returns ``(h_new, c_new)``; ``c_new = σ(f)·c + σ(i)·tanh(g)``, ``h_new = σ(o)·tanh(c_new)``.

    Example:
        >>> h1, c1 = lstm_pointwise(np.zeros((2, 8)), np.ones((2, 2)))
        >>> c1.tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    _check_pointwise("F.lstm_pointwise", 4, {"gates": gates}, {"c": c})
    return _lstm_pointwise(gates, c)


# ----------------------------------------------------------------------------- GRU primitive
def _gru_forward_raw(gi, gh, h):
    check_same_device((gi, gh, h), "gru_pointwise")
    return gru_pointwise_raw(gi, gh, h)


def _gru_backward_raw(gi, gh, h, dh_new):
    dh_new = dh_new.astype(gi.dtype, copy=False)
    return gru_pointwise_backward_raw(gi, gh, h, dh_new)


def _gru_backward_composite(gi, gh, h, dh_new):
    hidden = _shape(h)[1]
    ghn = gh[:, 2 * hidden:]
    r = ops.sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = ops.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
    n = ops.tanh(gi[:, 2 * hidden:] + r * ghn)
    dn_pre = dh_new * (1.0 - z) * (1.0 - n * n)
    dz_pre = dh_new * (h - n) * z * (1.0 - z)
    dr_pre = dn_pre * ghn * r * (1.0 - r)
    dgi = ops.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    dgh = ops.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    return dgi, dgh, dh_new * z


def _gru_pointwise_vjp(g, out, gi, gh, h):
    if any(is_traced(v) for v in (g, gi, gh, h)):
        return _gru_backward_composite(gi, gh, h, g)
    return _gru_backward_raw(gi, gh, h, g)


_gru_pointwise = Primitive("gru_pointwise", _gru_forward_raw, _gru_pointwise_vjp)


def gru_pointwise(gi, gh, h):
    """Fused GRU elementwise step (torch formulas, gate order r, z, n).

    ``gi = x @ W_ih.T + b_ih`` and ``gh = h @ W_hh.T + b_hh`` (N, 3H) stay apart because r
    scales only the hidden part of n: ``n = tanh(gi_n + r·gh_n)``, ``h' = (1-z)·n + z·h``.

    Example:
        >>> gru_pointwise(np.zeros((1, 3)), np.zeros((1, 3)), np.ones((1, 1))).tolist()
        [[0.5]]
    """
    _check_pointwise("F.gru_pointwise", 3, {"gi": gi, "gh": gh}, {"h": h})
    return _gru_pointwise(gi, gh, h)


# ----------------------------------------------------------------------------- cells
def _affine(x, w, b):
    y = ops.matmul(x, ops.transpose(w))
    return y if b is None else y + b


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step as torch.nn.LSTMCell: x (N, I), h/c (N, H), w_ih (4H, I), w_hh (4H, H).

    Returns ``(h_new, c_new)``. Gates ``x @ w_ih.T + b_ih + h @ w_hh.T + b_hh`` in order
    i, f, g, o; biases (4H,) or None.

    Example:
        >>> x, h = np.ones((2, 3)), np.zeros((2, 4))
        >>> h1, c1 = lstm_cell(x, h, h, np.zeros((16, 3)), np.zeros((16, 4)))
        >>> float(c1[0, 0])
        0.0
    """
    op = "F.lstm_cell"
    check_float_operands(op, {"x": x, "h": h, "c": c, "w_ih": w_ih, "w_hh": w_hh,
                              "b_ih": b_ih, "b_hh": b_hh}, CELL_DTYPES)
    check_cell_shapes(op, 4, _shape(x), _shape(h), _shape(c), w_ih, w_hh, b_ih, b_hh)
    gates = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)  # (N, 4H)
    return _lstm_pointwise(gates, c)


def gru_reset_before_step(gi, h, w_rz_t, w_n_t):
    """The reset-before GRU step (Cho et al. 2014; Keras ``reset_after=False``), a composite.

    ``gi`` (N, 3H) = ``x W_ih^T + b_ih + b_hh`` (every bias is outside r in this form),
    ``w_rz_t`` (H, 2H) = ``W_hh[:2H]^T``, ``w_n_t`` (H, H) = ``W_hh[2H:]^T``:
    ``r, z = σ(gi_rz + h W_rz^T)``, ``n = tanh(gi_n + (r * h) W_hn^T)``,
    ``h' = (1 - z) * n + z * h``.

    Example:
        >>> gru_reset_before_step(np.zeros((1, 3)), np.ones((1, 1)), np.zeros((1, 2)),
        ...                       np.zeros((1, 1))).tolist()
        [[0.5]]
    """
    hidden = _shape(h)[1]
    rz = ops.sigmoid(gi[:, :2 * hidden] + ops.matmul(h, w_rz_t))  # (N, 2H)
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = ops.tanh(gi[:, 2 * hidden:] + ops.matmul(r * h, w_n_t))  # (N, H)
    return (1.0 - z) * n + z * h


def split_gru_hidden_weight(w_hh):
    """``(W_hh[:2H]^T (H, 2H), W_hh[2H:]^T (H, H))`` for :func:`gru_reset_before_step`."""
    hidden = _shape(w_hh)[1]
    return ops.transpose(w_hh[:2 * hidden]), ops.transpose(w_hh[2 * hidden:])


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, reset_after: bool = True):
    """One GRU step as torch.nn.GRUCell: x (N, I), h (N, H), w_ih (3H, I), w_hh (3H, H).

    Gate order r, z, n; ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``. Returns ``h_new`` (N, H). ``reset_after=False`` is the
    course's (and Keras ``reset_after=False``) form ``n = tanh(W_in x + b_in + W_hn (r * h)
    + b_hn)``, computed as a composite (:func:`gru_reset_before_step`); the fused kernel
    serves ``reset_after=True`` only.

    Example:
        >>> gru_cell(np.ones((2, 3)), np.ones((2, 4)), np.zeros((12, 3)), np.zeros((12, 4))).shape
        (2, 4)
    """
    op = "F.gru_cell"
    check_float_operands(op, {"x": x, "h": h, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih,
                              "b_hh": b_hh}, CELL_DTYPES)
    check_cell_shapes(op, 3, _shape(x), _shape(h), None, w_ih, w_hh, b_ih, b_hh)
    if not reset_after:
        gi = _affine(x, w_ih, b_ih)
        return gru_reset_before_step(gi if b_hh is None else gi + b_hh, h,
                                     *split_gru_hidden_weight(w_hh))
    return _gru_pointwise(_affine(x, w_ih, b_ih), _affine(h, w_hh, b_hh), h)


def rnn_activation(nonlinearity: str, op: str = "F.rnn_cell"):
    """The Elman cell's nonlinearity, 'tanh' or 'relu' (as torch.nn.RNNCell)."""
    if nonlinearity == "tanh":
        return ops.tanh
    if nonlinearity == "relu":
        return lambda v: ops.maximum(v, 0.0)
    raise ConfigError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """One Elman RNN step as torch.nn.RNNCell: ``act(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)``.

    x (N, I), h (N, H), w_ih (H, I), w_hh (H, H); a composite of gpudl ops (no kernel).

    Example:
        >>> rnn_cell(np.ones((2, 3)), np.zeros((2, 4)), np.zeros((4, 3)), np.eye(4)).tolist()[0]
        [0.0, 0.0, 0.0, 0.0]
    """
    op = "F.rnn_cell"
    act = rnn_activation(nonlinearity, op)
    check_float_operands(op, {"x": x, "h": h, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih,
                              "b_hh": b_hh}, CELL_DTYPES)
    check_cell_shapes(op, 1, _shape(x), _shape(h), None, w_ih, w_hh, b_ih, b_hh)
    return act(_affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh))


__all__ = ["gru_cell", "gru_pointwise", "gru_reset_before_step", "lstm_cell",
           "lstm_pointwise", "rnn_cell"]
