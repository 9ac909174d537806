"""The two bodies of the softmax cross-entropy primitive: kernels/softmax_cross_entropy.cu
on CuPy arrays and the vectorised NumPy twin on NumPy arrays.

Both compute, per row n of logits x (N, C) with label y[n] and label smoothing eps,
``loss[n]``, ``lse[n] = logsumexp(x[n])`` and, on request, the gradient
``coef[n] * (softmax(x[n]) - target[n])`` (rows whose label is ``ignore_index`` give 0).
The primitive, its vjp and the argument checks are in
:mod:`gpudl.functional.cross_entropy`.

Example:
    >>> x = np.array([[2.0, 0.0, 0.0]])
    >>> loss, lse, _ = twin_forward(x, np.array([0]))
    >>> round(float(loss[0]), 4), round(float(lse[0]), 4)
    (0.2395, 2.2395)
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import device_of, module_of, xp_for
from gpudl.cuda import KernelSource, contiguous_inputs, launch, type_name
from gpudl.errors import ShapeError

OP = "F.softmax_cross_entropy"
_BLOCKS = (32, 128, 512)
_KERNELS = ("sce_forward", "sce_forward_backward", "sce_backward")
SCE = KernelSource(
    "softmax_cross_entropy.cu",
    [f"{k}<{t}, {b}>" for k in _KERNELS for t in ("float", "double") for b in _BLOCKS],
)
_NO_IGNORE = np.int32(np.iinfo(np.int32).min)  # never equals a checked label in [0, C)


def block_size(num_classes: int) -> int:
    """Threads per row-block: enough to cover a row in a few 16-byte loads, few idle ones."""
    if num_classes <= 256:
        return 32
    return 128 if num_classes <= 2048 else 512


# ----------------------------------------------------------------------------- NumPy twin
def twin_grad(x, labels, lse, coef, *, ignore_index, eps):
    """(N, C) ``coef[n] * (softmax(x) - target)``, zero rows where ignored (vectorised)."""
    xp = module_of(x)
    n, c = x.shape
    p = x - lse[:, None]  # (N, C); in place from here on: this runs once per training step
    xp.exp(p, out=p)  # softmax from lse, as the kernel computes it
    if eps != 0.0:
        p -= eps / c
    valid = labels != ignore_index if ignore_index is not None else None
    p[xp.arange(n), labels if valid is None else xp.where(valid, labels, 0)] -= 1.0 - eps
    coef = xp.asarray(coef, dtype=x.dtype)  # () or (N,)
    p *= coef if coef.ndim == 0 else coef[:, None]
    if valid is not None:
        p[~valid] = 0  # exact zeros, even where the logits are inf/NaN
    return p


def twin_forward(x, labels, *, ignore_index=None, eps=0.0, with_grad=False, grad_scale=1.0):
    """NumPy twin of the forward kernels: ``(loss (N,), lse (N,), dlogits (N, C) or None)``.

    Stable (the row max is subtracted before exp), vectorised, no loop over rows. Runs on
    CuPy arrays too (the benchmark's composite).
    """
    xp = module_of(x)
    n, c = x.shape
    m = x.max(axis=1)  # (N,)
    e = x - m[:, None]  # (N, C)
    xp.exp(e, out=e)  # in place: one (N, C) temporary, not two
    log_s = xp.log(e.sum(axis=1))  # (N,)
    del e
    lse = m + log_s
    # Without ignore_index every row is valid: the masks would change no value.
    valid = labels != ignore_index if ignore_index is not None else None
    x_y = x[xp.arange(n), labels if valid is None else xp.where(valid, labels, 0)]  # (N,)
    loss = (m - x_y) + log_s  # not lse - x_y: lse is rounded at the logits' magnitude
    if eps != 0.0:
        loss = (1.0 - eps) * loss + eps * ((m - x.sum(axis=1) / c) + log_s)
    if valid is not None:
        loss = xp.where(valid, loss, 0)
    loss = loss.astype(x.dtype, copy=False)
    dlogits = None
    if with_grad:
        dlogits = twin_grad(x, labels, lse, grad_scale, ignore_index=ignore_index, eps=eps)
    return loss, lse, dlogits


# ----------------------------------------------------------------------------- CUDA body
def _kernel(kind: str, dtype, num_classes: int):
    return SCE.get(f"{kind}<{type_name(dtype)}, {block_size(num_classes)}>")


def _labels32(labels):
    # Safe after check_label_range: every value is in [0, C) or equals an int32 ignore_index.
    return xp_for("cuda").ascontiguousarray(labels, dtype=np.int32)


def cuda_forward(x, labels, *, ignore_index=None, eps=0.0, with_grad=False, grad_scale=1.0):
    """Launch the forward (or fused forward+backward) kernel; same outputs as the twin."""
    cupy = xp_for("cuda")
    (x,) = contiguous_inputs(OP, x)
    n, c = x.shape
    dt = x.dtype.type
    loss, lse = cupy.empty(n, x.dtype), cupy.empty(n, x.dtype)
    ig = _NO_IGNORE if ignore_index is None else np.int32(ignore_index)
    head = (x, _labels32(labels), loss, lse)
    if with_grad:
        dlogits = cupy.empty((n, c), x.dtype)
        launch(_kernel("sce_forward_backward", x.dtype, c), (n,), (block_size(c),),
               (*head, dlogits, np.int32(n), np.int32(c), ig, dt(eps), dt(grad_scale)))
        return loss, lse, dlogits
    launch(_kernel("sce_forward", x.dtype, c), (n,), (block_size(c),),
           (*head, np.int32(n), np.int32(c), ig, dt(eps)))
    return loss, lse, None


def cuda_backward(x, labels, lse, g, *, ignore_index=None, eps=0.0, scale=1.0):
    """``g[n] * scale * (softmax(x) - target)`` from the saved lse; g is () or (N,)."""
    cupy = xp_for("cuda")
    (x,) = contiguous_inputs(OP, x)
    n, c = x.shape
    g = cupy.asarray(g, dtype=x.dtype)
    # The stride comes from g's own rank: cupy.ascontiguousarray turns a 0-d g into shape
    # (1,), which read as a per-row g would index past its end for every row > 0.
    g_stride = np.int32(1 if g.ndim else 0)
    if g.ndim and g.shape != (n,):
        raise ShapeError(f"{OP}: the upstream gradient must be () or ({n},), got {g.shape}")
    g = cupy.ascontiguousarray(g)
    dlogits = cupy.empty((n, c), x.dtype)
    ig = _NO_IGNORE if ignore_index is None else np.int32(ignore_index)
    launch(_kernel("sce_backward", x.dtype, c), (n,), (block_size(c),),
           (x, _labels32(labels), lse, g, dlogits, np.int32(n), np.int32(c), ig,
            x.dtype.type(eps), x.dtype.type(scale), g_stride))
    return dlogits


# ----------------------------------------------------------------------------- dispatch
def forward_raw(x, labels, *, ignore_index=None, eps=0.0, with_grad=False, grad_scale=1.0):
    """(loss, lse, dlogits or None) on x's device: the kernels on CUDA, the twin on the CPU."""
    body = cuda_forward if device_of(x) == "cuda" else twin_forward
    return body(x, labels, ignore_index=ignore_index, eps=eps, with_grad=with_grad,
                grad_scale=grad_scale)


def grad_raw(x, labels, lse, g, *, ignore_index, eps, scale):
    """Plain-array gradient ``g * scale * (softmax - target)`` on either device."""
    if x.shape[0] == 0:  # nothing to launch
        return module_of(x).zeros(x.shape, x.dtype)
    if device_of(x) == "cuda":
        return cuda_backward(x, labels, lse, g, ignore_index=ignore_index, eps=eps, scale=scale)
    coef = np.asarray(g, dtype=x.dtype) * x.dtype.type(scale)
    return twin_grad(x, labels, lse, coef, ignore_index=ignore_index, eps=eps)
