"""Softmax cross-entropy: one primitive with two bodies (CUDA kernel, NumPy twin), one vjp.

``softmax_cross_entropy(logits, labels)`` is torch's ``F.cross_entropy`` on integer labels:
``loss[n] = (1 - eps) * (lse[n] - x[n, y[n]]) + eps * (lse[n] - mean_c x[n, c])`` with
``lse = logsumexp(x, axis=-1)``, rows whose label is ``ignore_index`` contributing 0.

On CuPy arrays it launches ``kernels/softmax_cross_entropy.cu`` (one block per row, an
online max/sum in one pass over the row); on NumPy arrays the vectorised twin computes the
same loss, lse and gradient (both bodies are in ``_cross_entropy_kernels.py``; this module
holds the primitive, its vjp and the argument checks). Both share the vjp:

* reduction ``'mean'``/``'sum'`` under ``gd.grad``: the forward launch also writes the
  gradient for a unit upstream cotangent (``softmax - target`` times ``1/n_valid`` or 1), and
  the vjp multiplies it by the scalar upstream ``g`` in place, handing the buffer over as
  the cotangent. When ``g`` is the grad call's own all-ones seed (the loss is returned as
  is, or only added to other terms) that multiply is skipped: one read of the logits and
  one write of the gradient in total. Memory trade-off: one extra (N, C) buffer lives from
  the forward to the backward (the activations' size again); in exchange the backward reads no logits and
  recomputes no exponentials. A second backward over the same tape recomputes from lse.
  ``FUSED_REDUCED_BACKWARD = False`` switches to the recompute path (3 instead of 4 passes
  over N*C elements when g != 1 must be applied; see benchmarks/kernels_cross_entropy.py).
* reduction ``'none'``: the forward saves only lse (N,); the backward kernel recomputes
  ``g[n] * (softmax - target)`` from it.
* grad-of-grad: when the logits are traced by an outer ``gd.grad``, the vjp is written with
  differentiable ops (``exp(x - logsumexp(x)) - target``) instead of the saved buffer.

Outside ``gd.grad`` (evaluation) only the forward runs: no (N, C) buffer is written.
"""

from __future__ import annotations

import numpy as np

from gpudl import ops
from gpudl.autodiff import Primitive, is_traced, is_unit_cotangent, unbox_all
from gpudl.backend import check_same_device, module_of
from gpudl.errors import ConfigError, ShapeError
from gpudl.functional._checks import DTypeWording, check_float_operands, check_not_apply_output
from gpudl.functional._cross_entropy_kernels import OP, forward_raw, grad_raw
from gpudl.functional.labels import check_label_dtype, check_label_range, check_label_shape

REDUCTIONS = ("mean", "sum", "none")
FUSED_REDUCED_BACKWARD = True  # see the module docstring
_INT32 = np.iinfo(np.int32)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_LOGITS_DTYPES = DTypeWording(unsupported="{op}: {name} must be float32 or float64, got {dtype}; "
                                          "cast with logits.astype('float32')")


# ----------------------------------------------------------------------------- checks
def _check_options(reduction, ignore_index, label_smoothing) -> float:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"{OP}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer)
        or not _INT32.min < int(ignore_index) <= _INT32.max
    ):
        raise ConfigError(f"{OP}: ignore_index must be None or an int32 integer (torch uses "
                         f"-100), got {ignore_index!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"{OP}: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    return eps


def _check_dtypes(x, labels) -> None:
    check_float_operands(OP, {"logits": x}, _LOGITS_DTYPES)
    check_label_dtype(labels, OP)


# ----------------------------------------------------------------------------- the primitive
class _Saved:
    """What the forward keeps for the vjp. It is the primitive's second output, so it must
    look like a 0-d array to the autodiff (which fills a zero cotangent of this shape)."""

    __slots__ = ("lse", "dlogits", "n_valid", "dtype")
    shape = ()

    def __init__(self, lse, dlogits, n_valid: int, dtype):
        self.lse, self.dlogits, self.n_valid, self.dtype = lse, dlogits, n_valid, dtype

    def take_dlogits(self):
        """Hand the saved gradient buffer over (once): the vjp scales it in place."""
        d, self.dlogits = self.dlogits, None
        return d


def _unit_scale(reduction: str, n_valid: int) -> float:
    if reduction == "mean":
        return 1.0 / n_valid if n_valid else 0.0
    return 1.0


def _sce_impl(x, labels, *, reduction, ignore_index, label_smoothing, save_grad,
              n_valid=None):
    x, labels = unbox_all(x), unbox_all(labels)
    if n_valid is None:  # called directly, not through softmax_cross_entropy's checks
        check_same_device([x, labels], OP)
        _check_dtypes(x, labels)
        if x.ndim != 2:
            raise ShapeError(f"{OP}: the primitive takes logits (N, C) and labels (N,), got "
                             f"{x.shape} and {labels.shape}")
        check_label_shape(labels.shape, x.shape, OP)
        # The price of never launching on an unchecked label: one small device-to-host copy.
        n_valid = check_label_range(labels, x.shape[1], OP, ignore_index=ignore_index)
    xp = module_of(x)
    scale = _unit_scale(reduction, n_valid)
    with_grad = save_grad and reduction != "none"
    if x.shape[0] == 0:  # nothing to launch
        loss, lse = xp.zeros(0, x.dtype), xp.zeros(0, x.dtype)
        dlogits = xp.zeros(x.shape, x.dtype) if with_grad else None
    else:
        loss, lse, dlogits = forward_raw(x, labels, ignore_index=ignore_index,
                                         eps=label_smoothing, with_grad=with_grad,
                                         grad_scale=scale)
    if reduction == "sum":
        loss = xp.asarray(loss.sum())
    elif reduction == "mean":  # over non-ignored rows, as torch; 0 of them gives NaN (0/0)
        loss = xp.asarray(loss.sum() / n_valid) if n_valid else xp.full((), np.nan, x.dtype)
    # a boolean dtype: gd.debug_nans skips it (not a float array to check for NaN)
    return loss, _Saved(lse, dlogits, n_valid, np.dtype(bool))


def _grad_composite(x, labels, g, *, reduction, ignore_index, eps, scale):
    """The same gradient written with differentiable ops, for grad-of-grad."""
    raw = unbox_all(x)
    xp = module_of(raw)
    n, c = raw.shape
    valid = labels != ignore_index if ignore_index is not None else xp.ones(n, dtype=bool)
    target = xp.full((n, c), eps / c, dtype=raw.dtype)  # (N, C), a constant
    target[xp.arange(n), xp.where(valid, labels, 0)] += 1.0 - eps
    weight = (valid * scale).astype(raw.dtype)[:, None]  # (N, 1)
    p = ops.exp(x - ops.logsumexp(x, axis=1, keepdims=True))
    d = (p - target) * weight
    return d * (ops.reshape(g, (n, 1)) if reduction == "none" else g)


def _sce_vjp(cots, outs, x, labels, *, reduction, ignore_index, label_smoothing, save_grad,
             n_valid=None):
    g = cots[0]
    saved = unbox_all(outs[1])
    kw = {"ignore_index": ignore_index, "eps": label_smoothing}
    scale = _unit_scale(reduction, saved.n_valid)

    def grad_logits():
        if is_traced(x):  # an outer trace differentiates this gradient: stay differentiable
            return _grad_composite(x, labels, g, reduction=reduction, scale=scale, **kw)
        if reduction == "none":
            if is_traced(g):
                unit = grad_raw(x, labels, saved.lse, np.ones((), x.dtype), scale=1.0, **kw)
                return ops.reshape(g, (x.shape[0], 1)) * unit
            return grad_raw(x, labels, saved.lse, g, scale=1.0, **kw)
        dl = saved.take_dlogits()
        if dl is None:  # not fused, or a second backward over this tape: recompute
            ones = np.ones((), x.dtype)
            dl = grad_raw(x, labels, saved.lse, ones if is_traced(g) else g, scale=scale, **kw)
            return g * dl if is_traced(g) else dl
        if is_traced(g):
            return g * dl
        if not is_unit_cotangent(g):  # the loss itself: g == 1, skip a pass over (N, C)
            dl *= module_of(dl).asarray(g, dtype=dl.dtype)  # the buffer becomes the cotangent
        return dl

    return (grad_logits, None)


_sce = Primitive("softmax_cross_entropy", _sce_impl, _sce_vjp, multiple_results=True)


# ----------------------------------------------------------------------------- public API
def softmax_cross_entropy(logits, labels, reduction: str = "mean", ignore_index: int | None = None,
                          label_smoothing: float = 0.0):
    """Cross-entropy of integer ``labels`` under ``softmax(logits)``, as torch's F.cross_entropy.

    Shapes (torch's): logits (N, C) with labels (N,); logits (N, C, d1, ..., dk) with labels
    (N, d1, ..., dk) (the class axis is 1, e.g. segmentation maps or (N, C, T) sequences;
    for (N, T, C) logits pass ``logits.reshape(-1, C)`` and ``labels.reshape(-1)``); logits
    (C,) with a 0-d label. ``reduction``: 'mean' (over rows whose label is not
    ``ignore_index``; NaN if there is none, as torch), 'sum', or 'none' (labels' shape).
    ``label_smoothing`` eps: the target is ``(1 - eps) * onehot + eps / C``. Labels outside
    [0, C) raise ``LabelRangeError`` (an IndexError) before anything runs; non-integer or
    misshapen labels raise ``LabelDTypeError`` / ``LabelShapeError`` (gpudl/functional/labels.py).

    Example:
        >>> import numpy as np
        >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> round(float(softmax_cross_entropy(logits, np.array([0, 2]))), 4)
        0.6691
        >>> softmax_cross_entropy(logits, np.array([0, -100]), reduction="none",
        ...                       ignore_index=-100).round(4).tolist()
        [0.2395, 0.0]
    """
    check_not_apply_output(OP, logits, "logits")
    eps = _check_options(reduction, ignore_index, label_smoothing)
    raw = unbox_all(logits)
    labels = unbox_all(labels)
    if not hasattr(labels, "dtype"):
        labels = module_of(raw).asarray(labels)
    check_same_device([raw, labels], OP)
    dtype = getattr(raw, "dtype", None)
    if dtype not in _FLOATS or labels.dtype.kind not in "iu":
        _check_dtypes(raw, labels)  # raises the named error
    shape = raw.shape
    if len(shape) == 0 or shape[1 if len(shape) > 1 else 0] == 0:
        raise ShapeError(f"{OP}: logits need a class axis with at least one class, got shape "
                         f"{tuple(shape)}; expected (N, C), (N, C, d1, ...) or (C,)")
    c = check_label_shape(labels.shape, shape, OP, class_axis=0 if len(shape) == 1 else 1)
    # Checked here, once: the primitive gets n_valid and does not check again. The one
    # device-to-host copy of the step (none inside gpudl.functional.labels.labels_within).
    n_valid = check_label_range(labels, c, OP, ignore_index=ignore_index)
    x2 = logits
    if len(shape) != 2:  # move the class axis last, then one row per labelled position
        x2 = ops.moveaxis(logits, 1, -1) if len(shape) > 2 else logits
        x2 = ops.reshape(x2, (labels.size, c))
    save = FUSED_REDUCED_BACKWARD and reduction != "none" and is_traced(logits)
    # int64 labels: the vjp's comparisons with ignore_index then work for any integer dtype
    # on CuPy too (see check_label_range); a copy of N integers at most.
    labels64 = labels.reshape(-1).astype(np.int64, copy=False)
    loss, _ = _sce(x2, labels64, reduction=reduction, ignore_index=ignore_index,
                   label_smoothing=eps, save_grad=save, n_valid=n_valid)
    if reduction == "none" and len(shape) != 2:
        loss = ops.reshape(loss, () if len(shape) == 1 else (shape[0], *shape[2:]))
    return loss


__all__ = ["softmax_cross_entropy"]
