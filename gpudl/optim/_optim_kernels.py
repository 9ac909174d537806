"""The two bodies of the fused optimizer updates: kernels/optim_update.cu on CuPy arrays
and the NumPy twin on NumPy arrays.

Both compute, elementwise over 1-D arrays of one dtype, the update of
:mod:`gpudl.optim.fused` (Adam/AdamW, SGD with momentum/Nesterov): the new optimizer
state and either the new parameters ``p + u`` (``WRITE_PARAMS``, in place when ``out`` is
``p``) or the updates ``u``. They use the composable chain's operations in the chain's
order (``m * b1 + g * (1 - b1)``, ...), each rounded once, so the twin, the kernel and
the chain agree bit for bit. The twin writes with ``out=`` into the outputs and two
scratch buffers, a chunk at a time: its ~14 passes then run over data in cache, and a
flat buffer of a whole model costs 14 NumPy calls per chunk rather than 14 per leaf.

Example:
    >>> g, p = np.array([0.5, -2.0]), np.array([1.0, 1.0])
    >>> m, v, out = np.zeros(2), np.zeros(2), np.empty(2)
    >>> k = adam_scalars(0.9, 0.999, 1e-8, t=1, lr=0.1, flags=WRITE_PARAMS)
    >>> adam_raw(g, p, m, v, None, out, m, v, None, k)
    >>> out.round(6).tolist(), m.round(6).tolist()        # first Adam step: lr * sign(g)
    ([0.9, 1.1], [0.05, -0.2])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.cuda import DEFAULT_BLOCK, KernelSource, grid_1d, launch, type_name

OPTIM_KERNELS = KernelSource(
    "optim_update.cu",
    [f"{k}_update<{t}>" for k in ("adam", "sgd") for t in ("float", "double")],
)

# Flags, as kernels/optim_update.cu defines them.
L2, DECOUPLED, AMSGRAD, WRITE_PARAMS, SCALE = 1, 2, 4, 8, 16
MOMENTUM, FIRST, NESTEROV, DAMP = 32, 64, 128, 256

# Elements per chunk of the twin (its two scratch buffers have this size at most). Large:
# measured on the 2-core EPYC, Adam over the MLP's 235K floats took 0.37 ms in chunks of
# 64K elements, 0.34 ms in one (16K: 0.49 ms); cache-sized chunks buy less than their
# extra NumPy calls cost.
CHUNK = 1 << 20


class AdamScalars(NamedTuple):
    """The host scalars of one Adam/AdamW step (Python floats; ``flags`` an int)."""

    b1: float
    one_minus_b1: float
    b2: float
    one_minus_b2: float
    bc1: float
    bc2_sqrt: float
    eps: float
    weight_decay: float
    neg_lr: float
    lr_scale: float
    flags: int


class SgdScalars(NamedTuple):
    """The host scalars of one SGD step."""

    weight_decay: float
    momentum: float
    one_minus_dampening: float
    neg_lr: float
    lr_scale: float
    flags: int


def adam_scalars(b1: float, b2: float, eps: float, *, t: int, lr: float,
                 weight_decay: float = 0.0, lr_scale: float = 1.0, flags: int = 0
                 ) -> AdamScalars:
    """Step ``t`` (1 for the first) of Adam, with the chain's bias corrections."""
    if lr_scale != 1.0:
        flags |= SCALE
    return AdamScalars(b1, 1.0 - b1, b2, 1.0 - b2, 1.0 - b1 ** t, math.sqrt(1.0 - b2 ** t),
                       eps, weight_decay, -lr, lr_scale, flags)


def sgd_scalars(*, lr: float, weight_decay: float = 0.0, momentum: float = 0.0,
                dampening: float = 0.0, lr_scale: float = 1.0, flags: int = 0) -> SgdScalars:
    if lr_scale != 1.0:
        flags |= SCALE
    if dampening != 0.0:
        flags |= DAMP
    return SgdScalars(weight_decay, momentum, 1.0 - dampening, -lr, lr_scale, flags)


# ----------------------------------------------------------------------------- NumPy twin
def _chunked(body, n: int, arrays: tuple, scratch, dtype, k) -> None:
    """``body(*chunks of arrays, s, t, k)`` over ``CHUNK``-element slices (None stays None).
    ``t`` is None where the caller writes updates (``out`` is free scratch until its final
    value is written)."""
    size, write = min(n, CHUNK), k.flags & WRITE_PARAMS
    if scratch is None:
        scratch = (np.empty(size, dtype), np.empty(size, dtype) if write else None)
    s_all, t_all = scratch[0], scratch[1] if write else None
    if n <= CHUNK:
        body(*arrays, s_all[:n], None if t_all is None else t_all[:n], k)
        return
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        w = sl.stop - start
        body(*(None if a is None else a[sl] for a in arrays), s_all[:w],
             None if t_all is None else t_all[:w], k)


def _adam_chunk(g, p, m, v, vmax, out, mo, vo, vmo, s, t, k: AdamScalars) -> None:
    f = k.flags
    if t is None:  # writing updates: the output is the direction's scratch
        t = out
    if f & L2:
        np.multiply(p, k.weight_decay, out=t)
        np.add(g, t, out=t)
        g = t
    np.multiply(m, k.b1, out=mo)
    np.multiply(g, k.one_minus_b1, out=s)
    np.add(mo, s, out=mo)
    np.multiply(g, g, out=s)
    np.multiply(s, k.one_minus_b2, out=s)
    np.multiply(v, k.b2, out=vo)
    np.add(vo, s, out=vo)
    second = vo
    if f & AMSGRAD:
        second = np.maximum(vmax, vo, out=vmo)
    # A bias correction that has rounded to 1 in the arrays' dtype divides exactly: its pass
    # is left out, the same bits (betas 0.9, 0.999: float32's bc1 is 1 from step 165 on, most
    # of a run, its bc2_sqrt from step 16,628; float64's from steps 356 and 37,412).
    one = mo.dtype.type(1)
    np.sqrt(second, out=s)
    if mo.dtype.type(k.bc2_sqrt) != one:
        np.divide(s, k.bc2_sqrt, out=s)
    np.add(s, k.eps, out=s)  # the denominator
    if mo.dtype.type(k.bc1) != one:
        np.divide(mo, k.bc1, out=t)
        np.divide(t, s, out=t)  # Adam's direction
    else:
        np.divide(mo, s, out=t)
    if f & DECOUPLED:
        np.multiply(p, k.weight_decay, out=s)
        np.add(t, s, out=t)
    np.multiply(t, k.neg_lr, out=t)
    if f & SCALE:
        np.multiply(t, k.lr_scale, out=t)
    if f & WRITE_PARAMS:
        np.add(p, t, out=out)


def _sgd_chunk(g, p, buf, out, bo, s, t, k: SgdScalars) -> None:
    f = k.flags
    if t is None:
        t = out
    if f & L2:
        np.multiply(p, k.weight_decay, out=s)
        np.add(g, s, out=s)
        g = s  # s holds g' from here on
    d = g
    if f & MOMENTUM:
        if f & FIRST:
            np.copyto(bo, g)
        else:
            np.multiply(buf, k.momentum, out=bo)
            if f & DAMP:
                np.multiply(g, k.one_minus_dampening, out=t)
                np.add(bo, t, out=bo)
            else:
                np.add(bo, g, out=bo)
        if f & NESTEROV:
            np.multiply(bo, k.momentum, out=t)
            np.add(g, t, out=t)
            d = t
        else:
            d = bo
    np.multiply(d, k.neg_lr, out=t)
    if f & SCALE:
        np.multiply(t, k.lr_scale, out=t)
    if f & WRITE_PARAMS:
        np.add(p, t, out=out)


def adam_twin(g, p, m, v, vmax, out, m_out, v_out, vmax_out, k: AdamScalars,
              scratch=None) -> None:
    """NumPy body of ``adam_update``: 1-D arrays of one dtype; ``p``/``vmax`` may be None
    when no flag reads them. ``scratch``: two arrays of at least ``min(n, CHUNK)``."""
    _chunked(_adam_chunk, g.shape[0], (g, p, m, v, vmax, out, m_out, v_out, vmax_out),
             scratch, g.dtype, k)


def sgd_twin(g, p, buf, out, buf_out, k: SgdScalars, scratch=None) -> None:
    """NumPy body of ``sgd_update`` (1-D arrays; ``buf``/``p`` None where unused)."""
    _chunked(_sgd_chunk, g.shape[0], (g, p, buf, out, buf_out), scratch, g.dtype, k)


# ----------------------------------------------------------------------------- CUDA body
def _typed(dtype, values):
    dt = np.dtype(dtype).type
    return tuple(dt(x) for x in values)


def adam_cuda(g, p, m, v, vmax, out, m_out, v_out, vmax_out, k: AdamScalars) -> None:
    """Launch ``adam_update`` (CuPy 1-D contiguous arrays; the launcher checks them)."""
    n = g.shape[0]
    if n == 0:
        return
    p = g if p is None else p  # read but unused without L2/DECOUPLED/WRITE_PARAMS
    ams = k.flags & AMSGRAD
    vmax, vmax_out = (vmax, vmax_out) if ams else (v, v_out)  # never touched without it
    launch(OPTIM_KERNELS.get(f"adam_update<{type_name(g.dtype)}>"), grid_1d(n), (DEFAULT_BLOCK,),
           (g, p, m, v, vmax, out, m_out, v_out, vmax_out, np.int32(n),
            *_typed(g.dtype, k[:-1]), np.int32(k.flags)))


def sgd_cuda(g, p, buf, out, buf_out, k: SgdScalars) -> None:
    """Launch ``sgd_update`` (CuPy 1-D contiguous arrays)."""
    n = g.shape[0]
    if n == 0:
        return
    p = g if p is None else p
    if not k.flags & MOMENTUM:
        buf, buf_out = g, out  # never read or written without MOMENTUM
    elif k.flags & FIRST:
        buf = g  # the first step does not read the buffer
    launch(OPTIM_KERNELS.get(f"sgd_update<{type_name(g.dtype)}>"), grid_1d(n), (DEFAULT_BLOCK,),
           (g, p, buf, out, buf_out, np.int32(n), *_typed(g.dtype, k[:-1]),
            np.int32(k.flags)))


# ----------------------------------------------------------------------------- dispatch
def adam_raw(g, p, m, v, vmax, out, m_out, v_out, vmax_out, k: AdamScalars,
             scratch=None) -> None:
    """One Adam/AdamW step over 1-D arrays on g's device (kernel on CUDA, twin on CPU)."""
    if device_of(g) == "cuda":
        adam_cuda(g, p, m, v, vmax, out, m_out, v_out, vmax_out, k)
    else:
        adam_twin(g, p, m, v, vmax, out, m_out, v_out, vmax_out, k, scratch)


def sgd_raw(g, p, buf, out, buf_out, k: SgdScalars, scratch=None) -> None:
    """One SGD step over 1-D arrays on g's device."""
    if device_of(g) == "cuda":
        sgd_cuda(g, p, buf, out, buf_out, k)
    else:
        sgd_twin(g, p, buf, out, buf_out, k, scratch)


def scratch_for(n: int, like) -> tuple | None:
    """The twin's two scratch buffers for ``n`` elements like ``like`` (None on CUDA)."""
    if device_of(like) == "cuda":
        return None
    size = max(1, min(n, CHUNK))
    xp = module_of(like)
    return xp.empty(size, like.dtype), xp.empty(size, like.dtype)
