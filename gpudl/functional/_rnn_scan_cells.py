"""The cells of the whole-sequence recurrences (``_rnn_scan.py``): one step forward and one
step of BPTT each, written with the array module's ufuncs and ``out=`` into preallocated
feature-major (rows, N) buffers, so they run on NumPy arrays (and the Elman and
reset-before GRU cells on CuPy arrays too; the LSTM and GRU ones have kernel twins in
``_rnn_kernels.py``).

The sigmoid is the kernels' ``0.5 * tanh(x / 2) + 0.5``: the halving is folded into the
weight rows of the sigmoid gates (a power-of-two scale: exact in binary floating point),
so a gate costs one tanh and two scalar passes. The backward uses the saved activations:
``σ' = σ (1 - σ)``, ``tanh' = 1 - tanh²``.

Example:
    >>> import numpy as np
    >>> z = np.zeros((3, 4, 1)); z[:, 3] = 1                    # T=2, H=2, I=1, N=1
    >>> cell = CELLS["rnn_tanh"](np, z, slice(0, 2), np.ones((2, 1)), np.eye(2),
    ...                          np.zeros(2), np.zeros(2), (2, 1, 2), False)
    >>> out = np.empty((2, 1)); cell.forward(0, z[0], z[0, :2], None, out, None)
    >>> out.ravel().tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _scaled_columns(xp, scale, *blocks):
    """``scale * [block | block | ...]`` (a bias vector is one column), written once."""
    widths = [1 if b.ndim == 1 else b.shape[1] for b in blocks]
    out = xp.empty((blocks[0].shape[0], sum(widths)), dtype=blocks[0].dtype)
    start = 0
    for b, width in zip(blocks, widths):
        xp.multiply(b.reshape(-1, width), scale, out=out[:, start:start + width])
        start += width
    return out


# Rows of the source a block of transposed_copy reads: 32 float32 rows of 256 columns are
# 32 KB, the block's reads stay in L1 while its columns are written
TRANSPOSE_BLOCK_ROWS = 32


def transposed_copy(xp, a):
    """``a.T`` (2-D) in C order. NumPy's own copy of a large transposed view walks the
    source down its columns, a cache miss a value: char-LM's (1024, 256) W_hh took 303 us;
    in blocks of :data:`TRANSPOSE_BLOCK_ROWS` source rows it takes 82 us (2-core EPYC).
    CuPy's copy is left as it is."""
    if xp is not np:
        return xp.ascontiguousarray(a.T)
    out = np.empty((a.shape[1], a.shape[0]), dtype=a.dtype)
    for r in range(0, a.shape[0], TRANSPOSE_BLOCK_ROWS):
        out[:, r:r + TRANSPOSE_BLOCK_ROWS] = a[r:r + TRANSPOSE_BLOCK_ROWS].T
    return out


class Cell:
    """Common parts. ``halved``: gate ranges (in units of H rows) computed as sigmoids.
    ``fused``: the step's GEMM reads the whole [h; x; 1] slot (W = [W_hh | W_ih | b]);
    otherwise the input side of every step comes from one batched GEMM up front (``gi``).

    A cell's steps: ``forward(t, zin (K, N), hp, cp, hn, cn)`` writes the new state into
    ``hn`` (and ``cn``); ``backward(t, dh, dc, hp, cp, y, dh_prev, dc_prev)`` writes step
    t's pre-activation gradient into ``dgi_t[t]`` (G, N) and the state's into ``dh_prev``
    (``dc_prev``); states (H, N), feature-major."""

    halved: tuple[tuple[int, int], ...] = ()
    fused = True

    def __init__(self, xp, z, reads, w_ih, w_hh, b_ih, b_hh, dims, save):
        t_len, n, hidden = dims
        self.xp, self.h, self.save, self.dims = xp, hidden, save, dims
        self.w_ih, self.w_hh, self.b_hh = w_ih, w_hh, b_hh
        g = w_hh.shape[0]
        self.scale = xp.ones((g, 1), dtype=w_hh.dtype)
        for lo, hi in self.halved:
            self.scale[lo * hidden:hi * hidden] = 0.5
        if self.fused:  # (G, H+I+1), scaled rows: exact
            self.w = _scaled_columns(xp, self.scale, w_hh, w_ih, b_ih + b_hh)
        else:  # gi (T, G, N) = [W_ih | b] @ [x_t; 1], every step in one batched GEMM
            w_i1 = _scaled_columns(xp, self.scale, w_ih, self.input_bias(b_ih, b_hh))
            self.gi = xp.matmul(w_i1, z[reads, hidden:])
        self.u = xp.empty((hidden, n), dtype=w_hh.dtype)
        self.v = xp.empty_like(self.u)
        self.dgi_t = None

    def input_bias(self, b_ih, b_hh):
        return b_ih + b_hh

    def buffer(self, rows: int):
        """(T, rows, N) when saving for the backward, else one step's (1, rows, N)."""
        t_len, n, _ = self.dims
        return self.xp.empty((t_len if self.save else 1, rows, n), dtype=self.w_hh.dtype)

    def slot(self, t: int) -> int:
        return t if self.save else 0

    def sigmoid_rows(self, a) -> None:
        """Pre-activations (halved on the sigmoid rows) -> activations, in place."""
        self.xp.tanh(a, out=a)
        for lo, hi in self.halved:
            s = a[lo * self.h:hi * self.h]
            s *= 0.5
            s += 0.5

    def start_backward(self) -> None:
        t_len, n, _ = self.dims
        self.dgi_t = self.xp.empty((t_len, self.w_hh.shape[0], n), dtype=self.w_hh.dtype)
        # W_hh^T in C order: the per-step GEMM ran 11% faster than on the transposed view
        # (char-LM, (256, 1024) @ (1024, 32): 85 against 95 us, 32 steps a sequence)
        self.w_hh_t = transposed_copy(self.xp, self.w_hh)  # (H, G)

    def w_hh_gradient(self, dgi, zh, by_time):
        """dW_hh (G, H) from the (G, T*N) gate gradients and the (H, T*N) h_{t-1}."""
        return dgi @ zh.T

    def b_hh_gradient(self, db_ih):
        return self.xp.array(db_ih)  # both biases sit in the same place


class LSTMCell(Cell):
    """torch's LSTM, gates i, f, g, o: c' = f c + i g, h' = o tanh(c'). Saves the step's
    activations (T, 4H, N) and tanh(c') (T, H, N); the backward forms the derivatives from
    them (measured ~1% faster than forming them in the forward, and 1/6 less memory)."""

    halved = ((0, 2), (3, 4))  # i, f and o

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.acts = self.buffer(4 * self.h)  # (T, 4H, N): i, f, g, o after activation
        self.tanh_c = self.buffer(self.h)  # (T, H, N)
        self.w2 = self.xp.empty((2 * self.h, self.dims[1]), dtype=self.w_hh.dtype)

    def forward(self, t, zin, hp, cp, hn, cn):
        xp, h = self.xp, self.h
        a = self.acts[self.slot(t)]
        xp.matmul(self.w, zin, out=a)  # [W_hh | W_ih | b] [h; x; 1]: (4H, N)
        self.sigmoid_rows(a)
        i, f, g, o = a[:h], a[h:2 * h], a[2 * h:3 * h], a[3 * h:]
        xp.multiply(f, cp, out=cn)
        xp.multiply(i, g, out=self.u)
        cn += self.u
        tc = self.tanh_c[self.slot(t)]
        xp.tanh(cn, out=tc)
        xp.multiply(o, tc, out=hn)

    def backward(self, t, dh, dc, hp, cp, y, dh_prev, dc_prev):
        xp, h, u, v = self.xp, self.h, self.u, self.v
        a, tc, d = self.acts[t], self.tanh_c[t], self.dgi_t[t]
        i, f, g, o = a[:h], a[h:2 * h], a[2 * h:3 * h], a[3 * h:]
        xp.multiply(tc, tc, out=u)  # u = dc_total = dc + dh o (1 - tanh(c')^2)
        xp.subtract(1, u, out=u)
        u *= o
        u *= dh
        u += dc
        xp.multiply(u, g, out=d[:h])  # di = u g i (1 - i), df = u c f (1 - f): one block
        xp.multiply(u, cp, out=d[h:2 * h])
        d[:2 * h] *= a[:2 * h]
        xp.subtract(1, a[:2 * h], out=self.w2)
        d[:2 * h] *= self.w2
        do = d[3 * h:]  # do = dh tanh(c') o (1 - o)
        xp.multiply(dh, tc, out=do)
        do *= o
        xp.subtract(1, o, out=v)
        do *= v
        xp.multiply(g, g, out=v)  # dg = u i (1 - g^2)
        xp.subtract(1, v, out=v)
        v *= i
        xp.multiply(u, v, out=d[2 * h:3 * h])
        xp.multiply(u, f, out=dc_prev)
        xp.matmul(self.w_hh_t, d, out=dh_prev)


class GRUCell(Cell):
    """torch's GRU (reset_after): r, z = σ(gi + gh), n = tanh(gi_n + r (W_hn h + b_hn)),
    h' = n + z (h - n). The r and z parts of b_hh join the input side (gi)."""

    halved = ((0, 2),)  # r and z
    fused = False

    def __init__(self, *args: Any):
        super().__init__(*args)
        h = self.h
        self.w = self.w_hh * self.scale  # (3H, H)
        self.b_hn = self.b_hh[2 * h:, None]  # (H, 1)
        self.acts = self.buffer(3 * h)  # (T, 3H, N): r, z, n
        self.ghn = self.buffer(h)  # (T, H, N): W_hn h + b_hn
        self.gh = self.xp.empty((3 * h, self.dims[1]), dtype=self.w_hh.dtype)
        self.dgh_t = None

    def input_bias(self, b_ih, b_hh):
        h = b_hh.shape[0] // 3
        return b_ih + self.xp.concatenate([b_hh[:2 * h], self.xp.zeros_like(b_hh[2 * h:])])

    def forward(self, t, zin, hp, cp, hn, cn):
        xp, h = self.xp, self.h
        a, gi, gh = self.acts[self.slot(t)], self.gi[t], self.gh
        xp.matmul(self.w, hp, out=gh)
        rz = a[:2 * h]
        xp.add(gi[:2 * h], gh[:2 * h], out=rz)
        self.sigmoid_rows(rz)
        r, z, nn = a[:h], a[h:2 * h], a[2 * h:]
        ghn = self.ghn[self.slot(t)]
        xp.add(gh[2 * h:], self.b_hn, out=ghn)
        xp.multiply(r, ghn, out=nn)
        nn += gi[2 * h:]
        xp.tanh(nn, out=nn)
        xp.subtract(hp, nn, out=hn)
        hn *= z
        hn += nn

    def start_backward(self) -> None:
        super().start_backward()
        self.dgh_t = self.xp.empty_like(self.dgi_t)

    def backward(self, t, dh, dc, hp, cp, y, dh_prev, dc_prev):
        xp, h, u, v = self.xp, self.h, self.u, self.v
        a, ghn, d, dgh = self.acts[t], self.ghn[t], self.dgi_t[t], self.dgh_t[t]
        r, z, nn = a[:h], a[h:2 * h], a[2 * h:]
        _gru_tail(xp, h, u, v, dh, hp, z, nn, d)  # dn, dz into d
        xp.multiply(d[2 * h:], ghn, out=u)  # dr = dn ghn r (1 - r)
        u *= r
        xp.subtract(1, r, out=v)
        xp.multiply(u, v, out=d[:h])
        dgh[:2 * h] = d[:2 * h]
        xp.multiply(d[2 * h:], r, out=dgh[2 * h:])
        xp.matmul(self.w_hh_t, dgh, out=dh_prev)
        xp.multiply(dh, z, out=u)
        dh_prev += u

    def w_hh_gradient(self, dgi, zh, by_time):
        return by_time(self.xp, self.dgh_t) @ zh.T

    def b_hh_gradient(self, db_ih):
        h = self.h
        dn_r = self.dgh_t[:, 2 * h:].sum(axis=(0, 2))  # b_hn sits inside r's product
        return self.xp.concatenate([db_ih[:2 * h], dn_r])


def _gru_tail(xp, h, u, v, dh, hp, z, nn, d) -> None:
    """dn = dh (1 - z)(1 - n^2) into d[2H:], dz = dh (h - n) z (1 - z) into d[H:2H]."""
    xp.multiply(nn, nn, out=u)
    xp.subtract(1, u, out=u)
    xp.subtract(1, z, out=v)
    u *= v
    xp.multiply(dh, u, out=d[2 * h:])
    xp.subtract(hp, nn, out=u)
    u *= dh
    u *= z
    xp.multiply(u, v, out=d[h:2 * h])


class GRUResetBeforeCell(Cell):
    """The course's / Keras ``reset_after=False`` GRU: r, z = σ(gi + W_rz h),
    n = tanh(gi_n + W_hn (r h)), every bias on the input side."""

    halved = ((0, 2),)
    fused = False

    def __init__(self, *args: Any):
        super().__init__(*args)
        h = self.h
        self.w_rz = self.w_hh[:2 * h] * 0.5  # (2H, H), halved for the sigmoid
        self.acts = self.buffer(3 * h)  # (T, 3H, N): r, z, n
        self.rh = self.buffer(h)  # (T, H, N): r h_{t-1}, for dW_hn

    def forward(self, t, zin, hp, cp, hn, cn):
        xp, h = self.xp, self.h
        a, gi, rh = self.acts[self.slot(t)], self.gi[t], self.rh[self.slot(t)]
        rz = a[:2 * h]
        xp.matmul(self.w_rz, hp, out=rz)
        rz += gi[:2 * h]
        self.sigmoid_rows(rz)
        r, z, nn = a[:h], a[h:2 * h], a[2 * h:]
        xp.multiply(r, hp, out=rh)
        xp.matmul(self.w_hh[2 * h:], rh, out=nn)
        nn += gi[2 * h:]
        xp.tanh(nn, out=nn)
        xp.subtract(hp, nn, out=hn)
        hn *= z
        hn += nn

    def backward(self, t, dh, dc, hp, cp, y, dh_prev, dc_prev):
        xp, h, u, v = self.xp, self.h, self.u, self.v
        a, d = self.acts[t], self.dgi_t[t]
        r, z, nn = a[:h], a[h:2 * h], a[2 * h:]
        _gru_tail(xp, h, u, v, dh, hp, z, nn, d)
        xp.matmul(self.w_hh_t[:, 2 * h:], d[2 * h:], out=u)  # u = d(r h)
        xp.multiply(u, r, out=dh_prev)  # dh_prev = d(rh) r + dh z + W_rz^T [dr; dz]
        xp.subtract(1, r, out=v)  # dr = d(rh) h r (1 - r)
        v *= r
        v *= hp
        xp.multiply(u, v, out=d[:h])
        xp.multiply(dh, z, out=u)
        dh_prev += u
        xp.matmul(self.w_hh_t[:, :2 * h], d[:2 * h], out=v)
        dh_prev += v

    def w_hh_gradient(self, dgi, zh, by_time):
        h = self.h
        return self.xp.concatenate([dgi[:2 * h] @ zh.T, dgi[2 * h:] @ by_time(self.xp, self.rh).T])


class ElmanCell(Cell):
    """torch's RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or relu."""

    relu = False

    def forward(self, t, zin, hp, cp, hn, cn):
        self.xp.matmul(self.w, zin, out=hn)
        if self.relu:
            self.xp.maximum(hn, 0, out=hn)
        else:
            self.xp.tanh(hn, out=hn)

    def backward(self, t, dh, dc, hp, cp, y, dh_prev, dc_prev):
        # y: the step's output (the cell's; zero where masked, where dh is zero too)
        xp, d = self.xp, self.dgi_t[t]
        if self.relu:
            xp.greater(y, 0, out=self.u)  # 1.0 / 0.0
        else:
            xp.multiply(y, y, out=self.u)
            xp.subtract(1, self.u, out=self.u)
        xp.multiply(dh, self.u, out=d)
        xp.matmul(self.w_hh_t, d, out=dh_prev)


class ElmanReluCell(ElmanCell):
    relu = True


CELLS = {"lstm": LSTMCell, "gru": GRUCell, "gru_reset_before": GRUResetBeforeCell,
         "rnn_tanh": ElmanCell, "rnn_relu": ElmanReluCell}
