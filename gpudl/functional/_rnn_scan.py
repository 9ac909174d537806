"""Whole-sequence recurrences: the time loop of one LSTM/GRU/Elman layer in one call, and
back-propagation through time in one call (the bodies of the ``rnn_scan`` primitive of
:mod:`gpudl.functional.recurrent`; the cells are in ``_rnn_scan_cells.py``, the CUDA ones
in ``_rnn_kernels.py``).

Layout. Every per-step array is feature-major, (features, N), and contiguous: the
recurrent GEMM is ``W (G, K) @ z_t (K, N)``. OpenBLAS runs that orientation 2-3x faster than
``h (N, H) @ W.T`` for a small batch (N = 32, H = 256, one thread: ~190 µs against ~520 µs).
One buffer ``z`` (T+1, H+I+1, N) holds, per slot, the state h, the input x_t that the step
reading that slot consumes, and a row of ones: so the LSTM and Elman steps are ONE GEMM
with the input projection and both biases folded in (``W = [W_hh | W_ih | b_ih + b_hh]``),
and after the loop every [h_{t-1}; x_t; 1] together is one (K, T*N) matrix, so dW_hh, dW_ih
and db come from ONE GEMM with the (G, T*N) gate gradients. Per step, only the GEMM and the
pointwise cell run, with ``out=`` into preallocated buffers (no temporaries).

Example:
    >>> import numpy as np
    >>> x = np.ones((3, 2, 4)); z = np.zeros((2, 5))
    >>> w_ih, w_hh, b = np.full((20, 4), 0.1), np.full((20, 5), 0.1), np.zeros(20)
    >>> y, h_n, c_n, saved = scan_forward("lstm", x, z, z, w_ih, w_hh, b, b, None, False, True)
    >>> y.shape, h_n.shape, scan_backward(saved, np.ones_like(y), z, z)["x"]().shape
    ((3, 2, 5), (2, 5), (3, 2, 4))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.functional._rnn_kernels import GRUKernelCell, LSTMKernelCell
from gpudl.functional._rnn_scan_cells import CELLS

KINDS = tuple(CELLS)  # lstm, gru, gru_reset_before, rnn_tanh, rnn_relu
_KERNEL_CELLS = {"lstm": LSTMKernelCell, "gru": GRUKernelCell}


class Saved:
    """What the forward keeps for BPTT. It is the primitive's last output, so it looks like
    a 0-d boolean array to the autodiff (a zero cotangent of that shape; never NaN-checked)."""

    __slots__ = ("cell", "z", "cstates", "y", "masks", "reverse", "dims")
    shape = ()
    dtype = np.dtype(bool)

    def __init__(self, **fields: Any):
        for k, v in fields.items():
            setattr(self, k, v)

    def reads(self) -> slice:
        """The z slots the steps read, in time order (step t reads slot t, or t+1 reversed)."""
        t_len = self.dims[0]
        return slice(1, t_len + 1) if self.reverse else slice(0, t_len)


def _slots(t: int, reverse: bool) -> tuple[int, int]:
    """(read, write) slots of the z buffer for step t."""
    return (t + 1, t) if reverse else (t, t + 1)


def scan_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, masks, reverse: bool, save: bool):
    """x (T, N, I), h0/c0 (N, H) -> (y (T, N, H), h_n (N, H), c_n (N, H) or None, Saved).

    ``masks`` (T, N, 1) bool or None: a sequence's state is frozen where it is False and
    its output is zero. ``save``: keep what the backward needs (else only one step's)."""
    xp = module_of(x)
    t_len, n, i_size = x.shape
    hidden = w_hh.shape[1]
    z = xp.empty((t_len + 1, hidden + i_size + 1, n), dtype=x.dtype)  # [h; x; 1] per slot
    reads = slice(1, t_len + 1) if reverse else slice(0, t_len)
    z[reads, hidden:hidden + i_size] = x.transpose(0, 2, 1)  # x_t where step t reads
    z[:, hidden + i_size] = 1
    first = t_len if reverse else 0
    z[first, :hidden] = h0.T
    cls = _KERNEL_CELLS.get(kind) if device_of(x) == "cuda" else None
    cell = (cls or CELLS[kind])(xp, z, reads, w_ih, w_hh, b_ih, b_hh, (t_len, n, hidden), save)
    lstm = kind == "lstm"
    cstates = None
    if lstm:  # cell states: (T+1, H, N)
        cstates = xp.empty((t_len + 1, hidden, n), dtype=x.dtype)
        cstates[first] = c0.T
    ys = m_all = hn = cn = None
    if masks is not None:
        ys = xp.zeros((t_len, hidden, n), dtype=x.dtype)  # zero past each sequence's end
        m_all = masks.reshape(t_len, 1, n)
        hn = xp.empty((hidden, n), dtype=x.dtype)
        cn = xp.empty_like(hn) if lstm else None
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        src, dst = _slots(t, reverse)
        hp, cp = z[src, :hidden], None if cstates is None else cstates[src]
        if masks is None:  # the cell writes the next state in place
            cell.forward(t, z[src], hp, cp, z[dst, :hidden], None if cp is None else cstates[dst])
            continue
        cell.forward(t, z[src], hp, cp, hn, cn)
        m = m_all[t]  # (1, N): the sequences still running at step t
        xp.copyto(ys[t], hn, where=m)
        _select(xp, z[dst, :hidden], m, hn, hp)
        if lstm:
            _select(xp, cstates[dst], m, cn, cp)
    if ys is None:
        ys = z[0:t_len, :hidden] if reverse else z[1:, :hidden]  # (T, H, N), time order
    last = 0 if reverse else t_len
    h_n = xp.ascontiguousarray(z[last, :hidden].T)
    c_n = xp.ascontiguousarray(cstates[last].T) if lstm else None
    saved = Saved(cell=cell, z=z, cstates=cstates, y=ys, masks=m_all, reverse=reverse,
                  dims=(t_len, n, hidden)) if save else None
    # y contiguous (T, N, H): a (N, T, H) batch-first view of it stays BLAS-friendly
    return xp.ascontiguousarray(ys.transpose(0, 2, 1)), h_n, c_n, saved


def _select(xp, dst, m, a, b) -> None:
    """dst = where(m, a, b), in place."""
    xp.copyto(dst, b)
    xp.copyto(dst, a, where=m)


def scan_backward(saved: Saved, dy, dh_n, dc_n) -> dict:
    """BPTT from the cotangents of (y (T, N, H), h_n, c_n). Returns zero-argument functions
    (``x``, ``h0``, ``c0``, ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh``): each input's gradient,
    computed only when asked for (the loop itself runs here, once)."""
    cell, z, cstates = saved.cell, saved.z, saved.cstates
    xp = cell.xp
    t_len, n, hidden = saved.dims
    lstm = cstates is not None
    dh = xp.empty((hidden, n), dtype=z.dtype)
    dh[...] = dh_n.T
    dc = dc_cell = dc_prev = None
    if lstm:
        dc, dc_cell, dc_prev = xp.empty_like(dh), xp.empty_like(dh), xp.empty_like(dh)
        dc[...] = dc_n.T
    dh_prev, dh_cell = xp.empty_like(dh), xp.empty_like(dh)
    masks = None if saved.masks is None else saved.masks.astype(z.dtype)  # (T, 1, N)
    dy = xp.ascontiguousarray(dy.transpose(0, 2, 1))  # (T, H, N): one copy, not T strided reads
    cell.start_backward()
    for t in (range(t_len) if saved.reverse else range(t_len - 1, -1, -1)):
        src, _ = _slots(t, saved.reverse)
        hp, cp = z[src, :hidden], None if not lstm else cstates[src]
        xp.add(dh, dy[t], out=dh_cell)  # the cell's h_new is both y[t] and the next state
        if masks is None:
            cell.backward(t, dh_cell, dc, hp, cp, saved.y[t], dh_prev, dc_prev)
        else:  # masked rows: nothing into the cell, the state's gradient passes straight back
            m = masks[t]  # (1, N)
            dh_cell *= m
            if lstm:
                xp.multiply(dc, m, out=dc_cell)
            cell.backward(t, dh_cell, dc_cell, hp, cp, saved.y[t], dh_prev, dc_prev)
            keep = 1 - m
            dh *= keep
            dh_prev += dh
            if lstm:
                dc *= keep
                dc_prev += dc
        dh, dh_prev = dh_prev, dh
        if lstm:
            dc, dc_prev = dc_prev, dc
    return _gradients(saved, dh, dc)


def _by_time(xp, buf):
    """(T, R, N) -> (R, T*N), one contiguous copy: the layout of the GEMMs over all steps."""
    t_len, rows, n = buf.shape
    return xp.ascontiguousarray(buf.transpose(1, 0, 2)).reshape(rows, t_len * n)


def _gradients(saved: Saved, dh0, dc0) -> dict:
    """Every input's gradient as a zero-argument function, sharing one (G, T*N) gate
    gradient and one (K, T*N) matrix of [h_{t-1}; x_t; 1], each built on first use."""
    cell = saved.cell
    xp, hidden = cell.xp, cell.h
    t_len, n, _ = saved.dims
    i_size = cell.w_ih.shape[1]
    memo: dict[str, Any] = {}

    def once(name, fn):
        if name not in memo:
            memo[name] = fn()
        return memo[name]

    def dgi():  # (G, T*N): the gradient of the pre-activations W_ih x + b_ih
        return once("dgi", lambda: _by_time(xp, cell.dgi_t))

    def zp():  # (H+I+1, T*N)
        return once("zp", lambda: _by_time(xp, saved.z[saved.reads()]))

    def input_side():  # (G, I+1): [dW_ih | db_ih]
        if cell.fused:  # one GEMM over [h; x; 1] gives dW_hh too (the (G, T*N) read once)
            return once("all", lambda: dgi() @ zp().T)[:, hidden:]
        return once("in", lambda: dgi() @ zp()[hidden:].T)

    def w_hh():
        if cell.fused:
            return once("all", lambda: dgi() @ zp().T)[:, :hidden]
        return once("w_hh", lambda: cell.w_hh_gradient(dgi(), zp()[:hidden], _by_time))

    return {
        "x": lambda: (dgi().T @ cell.w_ih).reshape(t_len, n, i_size),
        "h0": lambda: dh0.T, "c0": lambda: None if dc0 is None else dc0.T,
        "w_ih": lambda: input_side()[:, :i_size],
        "b_ih": lambda: input_side()[:, i_size],
        "w_hh": w_hh,
        "b_hh": lambda: cell.b_hh_gradient(input_side()[:, i_size]),
    }
