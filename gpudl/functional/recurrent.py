"""Recurrent sequence functions: ``lstm``, ``gru``, ``rnn`` (one layer, one direction) and
``stacked`` (multi-layer, bidirectional), torch layouts and semantics.

One layer in one direction is ONE primitive, ``rnn_scan``: its forward runs all T steps
in one call and its vjp runs back-propagation through time in one call (no per-step tape
nodes), with dW_hh, dW_ih, the biases and dx as one GEMM each over all steps
(``_rnn_scan.py``; the NumPy cells in ``_rnn_scan_cells.py``, the CUDA ones launch the
``lstm_pointwise`` / ``gru_pointwise`` kernels per step). When an outer ``gd.grad``
differentiates that vjp (grad of grad), the same layer is differentiated as the per-step
loop of gpudl ops (:func:`_composite`, on the cells of :mod:`gpudl.functional.rnn_cells`),
so higher derivatives are exact.

Variable-length batches (``lengths``, as torch's ``pack_padded_sequence``): a sequence's
state is frozen after its last valid step (before its first one when ``reverse=True``),
its outputs past the end are zero, and the final state is the one at its last valid step.

Example:
    >>> import numpy as np
    >>> x = np.ones((5, 2, 3))                                  # (T, N, I)
    >>> p = {"weight_ih": np.full((16, 3), 0.1), "weight_hh": np.full((16, 4), 0.1)}
    >>> y, (h, c) = lstm(x, None, None, p, lengths=[5, 2])
    >>> y.shape, h.shape, float(y[4, 1, 0])
    ((5, 2, 4), (1, 2, 4), 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced, unbox_all, vjp
from gpudl.backend import check_same_device, module_of, to_numpy
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, ShapeError, TreeMismatchError, TreeTypeError
from gpudl.functional._checks import CELL_DTYPES, check_float_operands
from gpudl.functional._rnn_scan import scan_backward, scan_forward
from gpudl.functional.rnn_cells import (
    _gru_pointwise,
    _lstm_pointwise,
    check_cell_shapes,
    gru_reset_before_step,
    rnn_activation,
    split_gru_hidden_weight,
)

_N_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


# ----------------------------------------------------------------------------- unstack
def _unstack_vjp(gs, out, x):
    return (ops.stack(list(gs), axis=0),)


# Splits (T, ...) into T views in one node: its vjp is one stack. T getitems would each
# scatter into a zero (T, ...) array in the backward pass: O(T^2) memory traffic.
_unstack = Primitive("rnn_unstack", lambda x: tuple(x[t] for t in range(x.shape[0])),
                     _unstack_vjp, multiple_results=True)


def unstack(x) -> tuple:
    """Split along axis 0 into a tuple of arrays (differentiable; the inverse of ops.stack)."""
    if len(_shape(x)) == 0 or _shape(x)[0] == 0:
        raise ShapeError(f"F.unstack: needs an array with a non-empty axis 0, got {_shape(x)}")
    return _unstack(x)


# ----------------------------------------------------------------------------- arguments
def _unpack_params(op: str, params: Any):
    """(w_ih, w_hh, b_ih, b_hh) from a torch-named dict or a 2- or 4-sequence.

    A dict may hold one ``bias`` (one bias per gate, Keras's count) instead of
    ``bias_ih``/``bias_hh``: it is used as ``b_ih``, with no ``b_hh``."""
    if isinstance(params, dict):
        allowed = {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "bias"}
        unknown = set(params) - allowed
        both = "bias" in params and ({"bias_ih", "bias_hh"} & set(params))
        if unknown or both or "weight_ih" not in params or "weight_hh" not in params:
            raise TreeMismatchError(
                f"{op}: params must be a dict with 'weight_ih', 'weight_hh' and optional "
                f"'bias_ih', 'bias_hh' (torch names without the _l0 suffix) or one 'bias' "
                f"(one bias per gate), got keys {sorted(params)}"
            )
        return (params["weight_ih"], params["weight_hh"],
                params.get("bias_ih", params.get("bias")), params.get("bias_hh"))
    if isinstance(params, list | tuple) and len(params) in (2, 4):
        w_ih, w_hh, *rest = params
        return (w_ih, w_hh, *(rest or (None, None)))
    raise TreeTypeError(
        f"{op}: params must be a dict {{'weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'}} or a "
        f"tuple (w_ih, w_hh[, b_ih, b_hh]), got {type(params).__name__}"
    )


def _initial_state(op: str, name: str, s, n: int, hidden: int, like):
    if s is None:
        return module_of(unbox_all(like)).zeros((n, hidden), dtype=like.dtype)
    shape = _shape(s)
    if shape == (1, n, hidden):
        return ops.reshape(s, (n, hidden))
    if shape != (n, hidden):
        raise ShapeError(
            f"{op}: {name} must be (N, hidden) = ({n}, {hidden}) or torch's (1, N, hidden), "
            f"got shape {shape}"
        )
    return s


def _step_masks(op: str, lengths, t_len: int, n: int, like):
    """Boolean (T, N, 1) masks, True where step t is inside sequence n, on x's device."""
    lens = np.asarray(to_numpy(lengths) if not isinstance(lengths, list | tuple) else lengths)
    if lens.shape != (n,) or lens.dtype.kind not in "iu":
        raise ShapeError(
            f"{op}: lengths must be {n} integers (one per sequence), got shape {lens.shape} "
            f"dtype {lens.dtype}"
        )
    if (lens < 0).any() or (lens > t_len).any():
        raise ShapeError(
            f"{op}: lengths must lie in [0, T] = [0, {t_len}], got min {lens.min()} "
            f"max {lens.max()}"
        )
    masks = np.arange(t_len)[:, None, None] < lens[None, :, None]  # (T, N, 1)
    return module_of(unbox_all(like)).asarray(masks)


# ----------------------------------------------------------------------------- the primitive
_OUTPUTS = {True: ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"),
            False: ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")}


def _split_args(kind: str, args: tuple) -> tuple:
    """(x, h0, c0 or None, w_ih, w_hh, b_ih, b_hh): only the LSTM passes c0."""
    if kind == "lstm":
        return args
    x, h0, *rest = args
    return (x, h0, None, *rest)


def _scan_impl(*args, kind, reverse, masks, save):
    check_same_device(args, "F.rnn_scan")
    y, h_n, c_n, saved = scan_forward(kind, *_split_args(kind, args), masks, reverse, save)
    return (y, h_n, c_n, saved) if kind == "lstm" else (y, h_n, saved)


def _scan_vjp(cots, outs, *args, kind, reverse, masks, save):
    saved = unbox_all(outs[-1])
    if saved is None or any(is_traced(v) for v in (*cots, *args)):
        # An outer grad differentiates this backward: the same loop as differentiable ops.
        _, f_vjp = vjp(lambda *a: _composite(kind, *_split_args(kind, a), masks, reverse),
                       *args)
        return f_vjp(tuple(cots[:-1]))
    dtype = args[0].dtype
    dy, dh_n = (c.astype(dtype, copy=False) for c in cots[:2])
    dc_n = cots[2].astype(dtype, copy=False) if kind == "lstm" else None
    grads = scan_backward(saved, dy, dh_n, dc_n)
    return tuple(grads[name] for name in _OUTPUTS[kind == "lstm"])


# The whole layer, all T steps forward in one call and BPTT in one vjp (_rnn_scan.py), so
# no per-step tape nodes. Positional: x (T, N, I), h0 (N, H)[, c0 (N, H)], w_ih, w_hh, b_ih,
# b_hh; static: kind (_rnn_scan.KINDS), reverse, masks (T, N, 1) bool or None, save.
_rnn_scan = Primitive("rnn_scan", _scan_impl, _scan_vjp, multiple_results=True)


def _composite(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, masks, reverse):
    """The per-step loop of gpudl ops (differentiable to any order): what ``rnn_scan``
    computes, for grad-of-grad. Returns (y (T, N, H), h_n (N, H)[, c_n])."""
    t_len, n, i = _shape(x)
    g, hidden = _shape(w_hh)
    reset_before, fused_gru = kind == "gru_reset_before", kind == "gru"
    proj = ops.matmul(ops.reshape(x, (t_len * n, i)), ops.transpose(w_ih)) + b_ih  # (T*N, G)
    if not fused_gru:  # torch GRU's b_hh stays inside the cell (r multiplies its n part)
        proj = proj + b_hh
    proj_steps = _unstack(ops.reshape(proj, (t_len, n, g)))  # T x (N, G)
    w_hh_t = ops.transpose(w_hh)  # (H, G)
    if reset_before:
        w_rz_t, w_n_t = split_gru_hidden_weight(w_hh)  # (H, 2H), (H, H)
    act = rnn_activation(kind[4:]) if kind.startswith("rnn_") else None
    h, c = h0, c0
    outputs: list[Any] = [None] * t_len
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        c_new = None
        if reset_before:
            h_new = gru_reset_before_step(proj_steps[t], h, w_rz_t, w_n_t)
        elif kind == "lstm":
            h_new, c_new = _lstm_pointwise(proj_steps[t] + ops.matmul(h, w_hh_t), c)
        elif fused_gru:
            h_new = _gru_pointwise(proj_steps[t], ops.matmul(h, w_hh_t) + b_hh, h)
        else:
            h_new = act(proj_steps[t] + ops.matmul(h, w_hh_t))
        if masks is None:
            h, c, outputs[t] = h_new, c_new, h_new
        else:
            m = masks[t]  # (N, 1): finished (or not yet started) sequences keep their state
            h = ops.where(m, h_new, h)
            if c_new is not None:
                c = ops.where(m, c_new, c)
            outputs[t] = ops.where(m, h_new, 0.0)
    y = ops.stack(outputs, axis=0)  # (T, N, H)
    return (y, h, c) if kind == "lstm" else (y, h)


# ----------------------------------------------------------------------------- the layer
def _run(op: str, kind: str, x, h0, c0, params, batch_first: bool, lengths, reverse: bool,
         nonlinearity: str = "tanh", reset_after: bool = True):
    w_ih, w_hh, b_ih, b_hh = _unpack_params(op, params)
    check_float_operands(op, {"x": x, "h0": h0, "c0": c0, "weight_ih": w_ih, "weight_hh": w_hh,
                              "bias_ih": b_ih, "bias_hh": b_hh}, CELL_DTYPES)
    if kind == "rnn":
        rnn_activation(nonlinearity, op)  # checks the name
    xs = _shape(x)
    if len(xs) != 3 or 0 in xs[:2]:
        layout = "(N, T, input_size)" if batch_first else "(T, N, input_size)"
        raise ShapeError(f"{op}: x must be {layout} with T, N >= 1, got shape {xs}")
    if batch_first:
        x = ops.transpose(x, (1, 0, 2))
    t_len, n, i = _shape(x)
    ws = _shape(w_hh)
    if len(ws) != 2:
        raise ShapeError(f"{op}: weight_hh must be 2-D (gates*hidden, hidden), got shape {ws}")
    hidden = ws[1]
    h = _initial_state(op, "h0", h0, n, hidden, x)
    c = _initial_state(op, "c0", c0, n, hidden, x) if kind == "lstm" else None
    check_cell_shapes(op, _N_GATES[kind], (n, i), _shape(h), None if c is None else _shape(c),
                      w_ih, w_hh, b_ih, b_hh, x_name="x[t]")
    masks = None if lengths is None else _step_masks(op, lengths, t_len, n, x)
    zeros = None
    if b_ih is None or b_hh is None:  # absent biases are zeros (never traced, no gradient)
        zeros = module_of(unbox_all(x)).zeros(_N_GATES[kind] * hidden, dtype=x.dtype)
    scan_kind = {"lstm": "lstm", "gru": "gru" if reset_after else "gru_reset_before",
                 "rnn": f"rnn_{nonlinearity}"}[kind]
    args = (x, h, *(() if c is None else (c,)), w_ih, w_hh,
            zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh)
    y, h_n, *rest = _rnn_scan(*args, kind=scan_kind, reverse=bool(reverse), masks=masks,
                              save=any(is_traced(a) for a in args))
    if batch_first:
        y = ops.transpose(y, (1, 0, 2))
    h_n = ops.reshape(h_n, (1, n, hidden))
    if kind == "lstm":
        return y, (h_n, ops.reshape(rest[0], (1, n, hidden)))
    return y, h_n


def lstm(x, h0, c0, params, batch_first: bool = False, lengths=None, reverse: bool = False):
    """One-layer, one-direction LSTM over a sequence (torch.nn.LSTM semantics).

    x (T, N, I) or (N, T, I) with ``batch_first``; h0/c0 (N, H), (1, N, H) or None (zeros);
    ``params``: ``{"weight_ih" (4H, I), "weight_hh" (4H, H), "bias_ih" (4H,), "bias_hh"
    (4H,)}`` (biases optional) or a tuple in that order. ``lengths`` (N,) ints: padded
    steps are skipped. ``reverse`` runs from the last (valid) step to the first.
    Returns ``(y (T, N, H) or (N, T, H), (h_n (1, N, H), c_n (1, N, H)))``.

    Example:
        >>> p = (np.zeros((8, 3)), np.zeros((8, 2)))
        >>> y, (h, c) = lstm(np.ones((4, 1, 3)), None, None, p)
        >>> y.shape, c.shape
        ((4, 1, 2), (1, 1, 2))
    """
    return _run("F.lstm", "lstm", x, h0, c0, params, batch_first, lengths, reverse)


def gru(x, h0, params, batch_first: bool = False, lengths=None, reverse: bool = False,
        reset_after: bool = True):
    """One-layer, one-direction GRU over a sequence (torch.nn.GRU semantics).

    As :func:`lstm` with weights (3H, I), (3H, H), biases (3H,), no cell state.
    Returns ``(y, h_n (1, N, H))``. ``reset_after=False``: the course's / Keras's
    reset-before form ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)`` (a composite of
    gpudl ops; only the default torch form uses the fused GRU kernel).

    Example:
        >>> y, h = gru(np.ones((4, 1, 3)), None, (np.zeros((6, 3)), np.zeros((6, 2))))
        >>> y.shape, h.shape
        ((4, 1, 2), (1, 1, 2))
    """
    return _run("F.gru", "gru", x, h0, None, params, batch_first, lengths, reverse,
                reset_after=reset_after)


def rnn(x, h0, params, batch_first: bool = False, lengths=None, reverse: bool = False,
        nonlinearity: str = "tanh"):
    """One-layer, one-direction Elman RNN (torch.nn.RNN), ``nonlinearity`` 'tanh' or 'relu'.

    Weights (H, I), (H, H), biases (H,). Returns ``(y, h_n (1, N, H))``.

    Example:
        >>> y, h = rnn(np.ones((4, 1, 3)), None, (np.zeros((2, 3)), np.eye(2)))
        >>> y.shape
        (4, 1, 2)
    """
    return _run("F.rnn", "rnn", x, h0, None, params, batch_first, lengths, reverse,
                nonlinearity)


def stacked(kind: str, x, h0, c0, layers: Sequence[Any], bidirectional: bool = False,
            batch_first: bool = False, lengths=None, nonlinearity: str = "tanh",
            reset_after: bool = True):
    """Multi-layer (and bidirectional) ``kind`` in {'lstm', 'gru', 'rnn'}, torch layout.

    ``layers``: per-(layer, direction) params in torch order (layer-major: l0, l0_reverse,
    l1, ...), each as :func:`lstm` takes them. h0/c0: (L*D, N, H) or None. Layer l > 0 reads
    the previous layer's (T, N, D*H) output ([forward, reverse] halves). No inter-layer
    dropout here (the nn layer adds it). Returns ``(y (T, N, D*H), h_n)`` for 'gru'/'rnn'
    and ``(y, (h_n, c_n))`` for 'lstm', h_n/c_n (L*D, N, H). ``reset_after``: 'gru' only,
    as :func:`gru`.

    Example:
        >>> p = (np.zeros((8, 3)), np.zeros((8, 2)))
        >>> y, (h, c) = stacked("lstm", np.ones((4, 1, 3)), None, None, [p, p], True)
        >>> y.shape, h.shape
        ((4, 1, 4), (2, 1, 2))
    """
    if kind not in _N_GATES:
        raise ConfigError(f"F.stacked: kind must be 'lstm', 'gru' or 'rnn', got {kind!r}")
    d = 2 if bidirectional else 1
    if len(layers) == 0 or len(layers) % d:
        raise ConfigError(
            f"F.stacked: got {len(layers)} parameter sets; need num_layers * {d} (one per "
            f"layer{' and direction' if d == 2 else ''}, torch order)"
        )
    if batch_first:
        x = ops.transpose(x, (1, 0, 2))
    finals_h, finals_c = [], []
    for layer in range(len(layers) // d):
        outs = []
        for direction in range(d):
            k = layer * d + direction
            h = None if h0 is None else h0[k]
            c = None if c0 is None else c0[k]
            kw = dict(lengths=lengths, reverse=direction == 1)
            if kind == "lstm":
                y, (h_n, c_n) = lstm(x, h, c, layers[k], **kw)
                finals_c.append(c_n)
            elif kind == "gru":
                y, h_n = gru(x, h, layers[k], reset_after=reset_after, **kw)
            else:
                y, h_n = rnn(x, h, layers[k], nonlinearity=nonlinearity, **kw)
            outs.append(y)
            finals_h.append(h_n)
        x = outs[0] if d == 1 else ops.concatenate(outs, axis=2)  # (T, N, D*H)
    y = ops.transpose(x, (1, 0, 2)) if batch_first else x
    h_n = ops.concatenate(finals_h, axis=0)
    if kind == "lstm":
        return y, (h_n, ops.concatenate(finals_c, axis=0))
    return y, h_n


__all__ = ["gru", "lstm", "rnn", "stacked", "unstack"]
