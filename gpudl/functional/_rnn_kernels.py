"""The two bodies of the fused LSTM and GRU pointwise primitives: the CUDA kernels
(kernels/lstm_cell.cu, kernels/gru_cell.cu) on CuPy arrays and their NumPy twins.

* LSTM: ``(gates (N, 4H), c (N, H)) -> (h_new, c_new)``, torch gate order i, f, g, o;
  backward ``-> (dgates (N, 4H), dc_prev (N, H))``.
* GRU: ``(gi (N, 3H), gh (N, 3H), h (N, H)) -> h_new``, torch gate order r, z, n;
  backward ``-> (dgi, dgh (N, 3H), dh_prev (N, H))``.

The whole-sequence loop (``_rnn_scan.py``) launches them once per step through
:class:`LSTMKernelCell` and :class:`GRUKernelCell` (below) on CuPy arrays.

The twins compute the kernels' formulas (sigmoid as ``0.5 * tanh(x / 2) + 0.5``, the
kernels' ``gpudl_sigmoid``). The primitives, their checks and vjps, and the cells built
on them are in :mod:`gpudl.functional.rnn_cells`; the sequence functions in
:mod:`gpudl.functional.recurrent`.

Example:
    >>> h1, c1 = lstm_pointwise_twin(np.zeros((1, 8)), np.ones((1, 2)))
    >>> c1.tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.cuda import DEFAULT_BLOCK, KernelSource, contiguous_inputs, grid_1d, launch, type_name
from gpudl.functional._rnn_scan_cells import Cell, GRUCell, LSTMCell

_TYPES = ("float", "double")
LSTM_KERNELS = KernelSource(
    "lstm_cell.cu",
    [f"lstm_pointwise_{d}<{t}>" for d in ("forward", "backward") for t in _TYPES],
)
GRU_KERNELS = KernelSource(
    "gru_cell.cu",
    [f"gru_pointwise_{d}<{t}>" for d in ("forward", "backward") for t in _TYPES],
)


def _sigmoid(x):
    # Same formula as gpudl_sigmoid in kernels/common.cuh: never overflows.
    return np.tanh(x * 0.5) * 0.5 + 0.5


# ----------------------------------------------------------------------------- LSTM twins
def lstm_pointwise_twin(gates, c):
    """NumPy body of ``lstm_pointwise``: (gates (N, 4H), c (N, H)) -> (h_new, c_new)."""
    hidden = c.shape[1]
    i = _sigmoid(gates[:, :hidden])
    f = _sigmoid(gates[:, hidden:2 * hidden])
    g = np.tanh(gates[:, 2 * hidden:3 * hidden])
    o = _sigmoid(gates[:, 3 * hidden:])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def lstm_pointwise_backward_twin(gates, c, c_new, dh, dc):
    """NumPy body of the backward: -> (dgates (N, 4H), dc_prev (N, H))."""
    hidden = c.shape[1]
    i = _sigmoid(gates[:, :hidden])
    f = _sigmoid(gates[:, hidden:2 * hidden])
    g = np.tanh(gates[:, 2 * hidden:3 * hidden])
    o = _sigmoid(gates[:, 3 * hidden:])
    tc = np.tanh(c_new)
    dct = dc + dh * o * (1.0 - tc * tc)
    dgates = np.empty_like(gates)
    dgates[:, :hidden] = dct * g * i * (1.0 - i)
    dgates[:, hidden:2 * hidden] = dct * c * f * (1.0 - f)
    dgates[:, 2 * hidden:3 * hidden] = dct * i * (1.0 - g * g)
    dgates[:, 3 * hidden:] = dh * tc * o * (1.0 - o)
    return dgates, dct * f


# ----------------------------------------------------------------------------- LSTM kernels
def lstm_pointwise_cuda(gates, c):
    """CUDA body of ``lstm_pointwise`` (CuPy arrays)."""
    cupy = module_of(gates)
    t = type_name(gates.dtype)
    gates, c = contiguous_inputs("lstm_pointwise", gates, c, dtype=gates.dtype)
    n, hidden = c.shape
    h_new = cupy.empty((n, hidden), dtype=c.dtype)
    c_new = cupy.empty((n, hidden), dtype=c.dtype)
    if n * hidden:
        launch(LSTM_KERNELS.get(f"lstm_pointwise_forward<{t}>"), grid_1d(n * hidden),
               (DEFAULT_BLOCK,),
               (gates, c, h_new, c_new, np.int32(n), np.int32(hidden)))
    return h_new, c_new


def lstm_pointwise_backward_cuda(gates, c, c_new, dh, dc):
    """CUDA body of the backward (CuPy arrays)."""
    cupy = module_of(gates)
    t = type_name(gates.dtype)
    gates, c, c_new, dh, dc = contiguous_inputs(
        "lstm_pointwise backward", gates, c, c_new, dh, dc, dtype=gates.dtype)
    n, hidden = c.shape
    dgates = cupy.empty(gates.shape, dtype=gates.dtype)
    dc_prev = cupy.empty((n, hidden), dtype=c.dtype)
    if n * hidden:
        launch(LSTM_KERNELS.get(f"lstm_pointwise_backward<{t}>"), grid_1d(n * hidden),
               (DEFAULT_BLOCK,),
               (gates, c, c_new, dh, dc, dgates, dc_prev, np.int32(n), np.int32(hidden)))
    return dgates, dc_prev


# ----------------------------------------------------------------------------- GRU twins
def gru_pointwise_twin(gi, gh, h):
    """NumPy body of ``gru_pointwise``: (gi, gh (N, 3H), h (N, H)) -> h_new (N, H)."""
    hidden = h.shape[1]
    r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = _sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
    n = np.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
    return (1.0 - z) * n + z * h


def gru_pointwise_backward_twin(gi, gh, h, dh_new):
    """NumPy body of the backward: -> (dgi (N, 3H), dgh (N, 3H), dh_prev (N, H))."""
    hidden = h.shape[1]
    ghn = gh[:, 2 * hidden:]
    r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = _sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
    n = np.tanh(gi[:, 2 * hidden:] + r * ghn)
    dn_pre = dh_new * (1.0 - z) * (1.0 - n * n)
    dz_pre = dh_new * (h - n) * z * (1.0 - z)
    dr_pre = dn_pre * ghn * r * (1.0 - r)
    dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    return dgi, dgh, dh_new * z


# ----------------------------------------------------------------------------- GRU kernels
def gru_pointwise_cuda(gi, gh, h):
    """CUDA body of ``gru_pointwise`` (CuPy arrays)."""
    cupy = module_of(gi)
    t = type_name(gi.dtype)
    gi, gh, h = contiguous_inputs("gru_pointwise", gi, gh, h, dtype=gi.dtype)
    n, hidden = h.shape
    h_new = cupy.empty((n, hidden), dtype=h.dtype)
    if n * hidden:
        launch(GRU_KERNELS.get(f"gru_pointwise_forward<{t}>"), grid_1d(n * hidden),
               (DEFAULT_BLOCK,),
               (gi, gh, h, h_new, np.int32(n), np.int32(hidden)))
    return h_new


def gru_pointwise_backward_cuda(gi, gh, h, dh_new):
    """CUDA body of the backward (CuPy arrays)."""
    cupy = module_of(gi)
    t = type_name(gi.dtype)
    gi, gh, h, dh_new = contiguous_inputs(
        "gru_pointwise backward", gi, gh, h, dh_new, dtype=gi.dtype)
    n, hidden = h.shape
    dgi = cupy.empty(gi.shape, dtype=gi.dtype)
    dgh = cupy.empty(gh.shape, dtype=gh.dtype)
    dh_prev = cupy.empty((n, hidden), dtype=h.dtype)
    if n * hidden:
        launch(GRU_KERNELS.get(f"gru_pointwise_backward<{t}>"), grid_1d(n * hidden),
               (DEFAULT_BLOCK,),
               (gi, gh, h, dh_new, dgi, dgh, dh_prev, np.int32(n), np.int32(hidden)))
    return dgi, dgh, dh_prev


# ----------------------------------------------------------------------------- dispatch
def lstm_pointwise_raw(gates, c):
    """``(h_new, c_new)`` on gates' device: the kernel on CUDA, the twin on the CPU."""
    if device_of(gates) == "cuda":
        return lstm_pointwise_cuda(gates, c)
    return lstm_pointwise_twin(gates, c)


def lstm_pointwise_backward_raw(gates, c, c_new, dh, dc):
    """``(dgates, dc_prev)`` on gates' device."""
    if device_of(gates) == "cuda":
        return lstm_pointwise_backward_cuda(gates, c, c_new, dh, dc)
    return lstm_pointwise_backward_twin(gates, c, c_new, dh, dc)


def gru_pointwise_raw(gi, gh, h):
    """``h_new`` on gi's device."""
    if device_of(gi) == "cuda":
        return gru_pointwise_cuda(gi, gh, h)
    return gru_pointwise_twin(gi, gh, h)


def gru_pointwise_backward_raw(gi, gh, h, dh_new):
    """``(dgi, dgh, dh_prev)`` on gi's device."""
    if device_of(gi) == "cuda":
        return gru_pointwise_backward_cuda(gi, gh, h, dh_new)
    return gru_pointwise_backward_twin(gi, gh, h, dh_new)


# ----------------------------------------------------------------------------- sequence cells
class LSTMKernelCell(LSTMCell):
    """The LSTM cell of the whole-sequence loop on CuPy arrays: one GEMM per step (as the
    NumPy cell, unscaled), then the fused lstm_pointwise kernel pair on (N, 4H) gates."""

    halved = ()

    def __init__(self, *args):
        Cell.__init__(self, *args)
        t_len, n, h = self.dims
        kept = t_len if self.save else 1
        self.pre = self.xp.empty((4 * h, n), dtype=self.w_hh.dtype)  # (4H, N)
        self.gates = self.xp.empty((kept, n, 4 * h), dtype=self.w_hh.dtype)  # pre-activations
        self.c_new = self.xp.empty((kept, n, h), dtype=self.w_hh.dtype)

    def forward(self, t, zin, hp, cp, hn, cn):
        k = self.slot(t)
        self.xp.matmul(self.w, zin, out=self.pre)
        self.gates[k] = self.pre.T
        h_new, self.c_new[k] = lstm_pointwise_cuda(self.gates[k], cp.T)
        hn[...] = h_new.T
        cn[...] = self.c_new[k].T

    def backward(self, t, dh, dc, hp, cp, y, dh_prev, dc_prev):
        dgates, dc_cell = lstm_pointwise_backward_cuda(self.gates[t], cp.T, self.c_new[t],
                                                       dh.T, dc.T)
        d = self.dgi_t[t]
        d[...] = dgates.T
        dc_prev[...] = dc_cell.T
        self.xp.matmul(self.w_hh_t, d, out=dh_prev)


class GRUKernelCell(GRUCell):
    """The GRU (reset_after) cell of the whole-sequence loop on CuPy arrays: the fused
    gru_pointwise kernel pair per step on (N, 3H) gi and gh."""

    halved = ()

    def __init__(self, *args):
        Cell.__init__(self, *args)
        h = self.h
        self.b_hn = self.b_hh[2 * h:, None]  # (H, 1); b_hr, b_hz are in gi
        self.gh = self.buffer(3 * h)  # (T, 3H, N): W_hh h + [0; 0; b_hn]
        self.dgh_t = None

    def forward(self, t, zin, hp, cp, hn, cn):
        gh = self.gh[self.slot(t)]
        self.xp.matmul(self.w_hh, hp, out=gh)
        gh[2 * self.h:] += self.b_hn
        hn[...] = gru_pointwise_cuda(self.gi[t].T, gh.T, hp.T).T

    def backward(self, t, dh, dc, hp, cp, y, dh_prev, dc_prev):
        dgi, dgh, dh_direct = gru_pointwise_backward_cuda(self.gi[t].T, self.gh[t].T, hp.T, dh.T)
        self.dgi_t[t] = dgi.T
        self.dgh_t[t] = dgh.T
        self.xp.matmul(self.w_hh_t, self.dgh_t[t], out=dh_prev)
        dh_prev += dh_direct.T
