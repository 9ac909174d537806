"""The two bodies of the fused activations and dropout: kernels/activation.cu and NumPy twins.

* :data:`ACTIVATION_KERNELS` declares every instance of ``kernels/activation.cu``: forward
  and backward per activation and dtype, and ``dropout_apply``;
* :func:`activation_raw` / :func:`activation_backward_raw` / :func:`dropout_raw` dispatch:
  one kernel launch on CUDA arrays (float16 goes through float32, integers through
  float64), the NumPy twin (``_activation_twins.py``) otherwise;
* importing this module registers the sigmoid and tanh CUDA bodies with
  ``gpudl.ops.elementwise`` (ops sits below the kernel loader, so it cannot import them):
  ``ops.sigmoid``/``ops.tanh``, hence ``F.sigmoid``/``F.tanh``, launch one kernel each way.

The primitives, their vjps and argument checks are in ``activations.py`` and ``dropout.py``.
Activation names: ``sigmoid``, ``tanh``, ``relu``, ``leaky_relu`` (p0 = slope), ``elu``
(p0 = alpha, p1 = scale; SELU is ``elu`` with its constants), ``hardtanh`` (p0 = min,
p1 = max), ``silu``, ``gelu``, ``gelu_tanh``.

Example:
    >>> activation_raw("leaky_relu", np.array([-2.0, 3.0]), 0.1).tolist()
    [-0.2, 3.0]
    >>> activation_backward_raw("relu", np.ones(2), np.array([-1.0, 1.0]), None).tolist()
    [0.0, 1.0]
"""

from __future__ import annotations

import numpy as np

from gpudl.backend import device_of, module_of
from gpudl.cuda import DEFAULT_BLOCK, KernelSource, contiguous_inputs, grid_1d, launch, type_name
from gpudl.functional._activation_twins import BACKWARD_TWINS, FORWARD_TWINS, dropout_twin
from gpudl.ops import elementwise as _elementwise

# activation name -> the ActivationOp enumerator of kernels/activation.cu
KERNEL_OPS = {"sigmoid": "ACT_SIGMOID", "tanh": "ACT_TANH", "relu": "ACT_RELU",
              "leaky_relu": "ACT_LEAKY_RELU", "elu": "ACT_ELU", "hardtanh": "ACT_HARDTANH",
              "silu": "ACT_SILU", "gelu": "ACT_GELU", "gelu_tanh": "ACT_GELU_TANH"}
ACTIVATION_KERNELS = KernelSource(
    "activation.cu",
    [f"activation_{d}<{t}, {e}>" for d in ("forward", "backward") for e in KERNEL_OPS.values()
     for t in ("float", "double")] + [f"dropout_apply<{t}>" for t in ("float", "double")],
)

FORWARD_TWINS = {**FORWARD_TWINS, "sigmoid": lambda x, p0=0.0, p1=0.0: _elementwise.sigmoid_twin(x),
                 "tanh": lambda x, p0=0.0, p1=0.0: np.tanh(x)}
BACKWARD_TWINS = {
    **BACKWARD_TWINS,
    "sigmoid": lambda g, x, y, p0=0.0, p1=0.0: _elementwise.sigmoid_backward_twin(g, y),
    "tanh": lambda g, x, y, p0=0.0, p1=0.0: _elementwise.tanh_backward_twin(g, y),
}
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------- CUDA bodies
def _kernel_dtype(dtype) -> np.dtype:
    """The dtype a kernel computes ``dtype`` in: float16 in float32, integers in float64."""
    dtype = np.dtype(dtype)
    if dtype in _KERNEL_DTYPES:
        return dtype
    return np.dtype(np.float32 if dtype == np.float16 else np.float64)


def activation_cuda(op: str, x, p0: float = 0.0, p1: float = 0.0):
    """One launch of ``activation_forward<T, OP>``: y (same shape and dtype as x).

    float16 is computed in float32 and rounded back; integers in float64 (relu gives
    integers back, as ``np.maximum(x, 0)``; the others give float64, as NumPy's ufuncs).
    """
    cupy = module_of(x)
    work = _kernel_dtype(x.dtype)
    xk = x.astype(work, copy=False)
    (xk,) = contiguous_inputs(f"F.{op}", xk)
    y = cupy.empty(xk.shape, dtype=work)
    if y.size:
        t = work.type
        launch(ACTIVATION_KERNELS.get(f"activation_forward<{type_name(work)}, {KERNEL_OPS[op]}>"),
               grid_1d(y.size), (DEFAULT_BLOCK,), (xk, y, np.int32(y.size), t(p0), t(p1)))
    back = x.dtype if x.dtype == np.float16 or (op == "relu" and x.dtype.kind != "f") else work
    return y.astype(back, copy=False)


def activation_backward_cuda(op: str, g, x, y, p0: float = 0.0, p1: float = 0.0):
    """One launch of ``activation_backward<T, OP>``: dx = g * f'(x) in g's float dtype.

    ELU's kernel takes ``scale * alpha`` (formed here in double, as the twin forms it) and
    ``scale``; y may be None for the activations whose derivative needs only x.
    """
    cupy = module_of(g)
    out_dtype = np.result_type(g.dtype, x.dtype) if x.dtype.kind == "f" else g.dtype
    work = _kernel_dtype(out_dtype)
    if y is None:
        y = x
    g, x, y = (a.astype(work, copy=False) for a in (g, x, y))
    g, x, y = contiguous_inputs(f"F.{op} backward", g, x, y, dtype=work)
    dx = cupy.empty(x.shape, dtype=work)
    if dx.size:
        if op == "elu":
            p0, p1 = p1 * p0, p1  # (alpha, scale) -> (scale * alpha, scale)
        t = work.type
        launch(ACTIVATION_KERNELS.get(f"activation_backward<{type_name(work)}, {KERNEL_OPS[op]}>"),
               grid_1d(dx.size), (DEFAULT_BLOCK,), (g, x, y, dx, np.int32(dx.size), t(p0), t(p1)))
    return dx.astype(out_dtype, copy=False)


def dropout_cuda(x, keep, scale: float):
    """One launch of ``dropout_apply<T>``: y = (x * keep) * scale, keep a bool array."""
    cupy = module_of(x)
    work = _kernel_dtype(x.dtype)
    (xk,) = contiguous_inputs("F.dropout", x.astype(work, copy=False))
    (keep,) = contiguous_inputs("F.dropout", keep.astype(np.bool_, copy=False))
    y = cupy.empty(xk.shape, dtype=work)
    if y.size:
        launch(ACTIVATION_KERNELS.get(f"dropout_apply<{type_name(work)}>"), grid_1d(y.size),
               (DEFAULT_BLOCK,), (xk, keep, y, np.int32(y.size), work.type(scale)))
    return y.astype(x.dtype, copy=False) if x.dtype.kind == "f" else y


# ----------------------------------------------------------------------------- dispatch
def _on_cuda(a) -> bool:
    return type(a) is not np.ndarray and device_of(a) == "cuda"


def activation_raw(op: str, x, p0: float = 0.0, p1: float = 0.0):
    """Forward body of activation ``op`` on x's device (kernel or twin)."""
    if _on_cuda(x):
        return activation_cuda(op, x, p0, p1)
    return FORWARD_TWINS[op](x, p0, p1)


def activation_backward_raw(op: str, g, x, y, p0: float = 0.0, p1: float = 0.0):
    """Backward body: ``g * f'(x)`` (y = f(x), the saved output, or None where unused)."""
    if _on_cuda(g):
        return activation_backward_cuda(op, g, x, y, p0, p1)
    g, x = np.asarray(g), np.asarray(x)
    dtype = np.result_type(g, x) if x.dtype.kind == "f" else g.dtype  # the twins' one dtype
    g, x = g.astype(dtype, copy=False), x.astype(dtype, copy=False)
    if y is not None:
        y = np.asarray(y).astype(dtype, copy=False)
    return BACKWARD_TWINS[op](g, x, y, p0, p1)


def dropout_raw(x, keep, scale: float):
    """``(x * keep) * scale`` on x's device (one kernel launch, or two NumPy passes)."""
    if _on_cuda(x):
        return dropout_cuda(x, keep, scale)
    return dropout_twin(x, keep, scale)


_elementwise.CUDA_BODIES.update(
    sigmoid=lambda x: activation_cuda("sigmoid", x),
    sigmoid_backward=lambda g, out: activation_backward_cuda("sigmoid", g, out, out),
    tanh=lambda x: activation_cuda("tanh", x),
    tanh_backward=lambda g, out: activation_backward_cuda("tanh", g, out, out),
)
