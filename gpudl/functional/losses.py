"""Losses with torch's names, argument orders, reductions and numerics.

All are composites of ``gd.ops`` (plus ``softplus``/``log_softmax`` primitives) but
``sequence_cross_entropy``, which runs the fused softmax cross-entropy primitive of
``F.softmax_cross_entropy`` (its own module) on the (N*T, V) rows. Every loss
checks shapes and says what it expected and how to fix it; integer class labels go
through the check shared with the fused kernel (``gpudl/functional/labels.py``).

Example:
    >>> import numpy as np
    >>> from gpudl.functional import losses as L
    >>> float(L.mse_loss(np.array([1.0, 2.0]), np.array([1.0, 4.0])))
    2.0
"""

from __future__ import annotations

import math

import numpy as np

from gpudl import ops
from gpudl.autodiff import is_traced, stop_gradient, unbox_all
from gpudl.backend import check_same_device, module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ConfigError, DTypeError, ShapeError
from gpudl.functional import cross_entropy as CE
from gpudl.functional._checks import check_broadcasts_to, check_not_apply_output
from gpudl.functional.activations import log_softmax, softplus
from gpudl.functional.labels import check_labels

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss, reduction: str, op: str):
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    if reduction == "none":
        return loss
    raise ConfigError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_reduction(reduction: str, op: str, allowed=_REDUCTIONS, *, input=None, name="input"):
    """``reduction`` among ``allowed``; ``input`` (the prediction) not apply's (y, state)."""
    check_not_apply_output(f"F.{op}", input, name)
    if reduction not in allowed:
        raise ConfigError(f"{op}: reduction must be one of {allowed}, got {reduction!r}")


def _same_shape(a, b, op: str, names=("input", "target")) -> None:
    sa, sb = _shape(a), _shape(b)
    if sa != sb:
        raise ShapeError(
            f"{op}: {names[0]} has shape {sa} but {names[1]} has shape {sb}; they must match "
            f"(reshape the target, e.g. y.reshape(pred.shape), or fix the model's output size)"
        )


# ------------------------------------------------------------------------ regression
def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error ``(input - target)^2``.

    The course's ½-scaled sum is ``0.5 * mse_loss(pred, y, reduction="sum")``.

    Example:
        >>> float(mse_loss(np.array([0.0, 0.0]), np.array([1.0, 3.0]), reduction="sum"))
        10.0
    """
    _check_reduction(reduction, "mse_loss", input=input)
    _same_shape(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction: str = "mean"):
    """Mean absolute error ``|input - target|``."""
    _check_reduction(reduction, "l1_loss", input=input)
    _same_shape(input, target, "l1_loss")
    return _reduce(ops.abs(input - target), reduction, "l1_loss")


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """torch's Huber: ``0.5 d^2`` for ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    Example:
        >>> float(huber_loss(np.array([3.0]), np.array([0.0])))
        2.5
    """
    _check_reduction(reduction, "huber_loss", input=input)
    _same_shape(input, target, "huber_loss")
    if delta <= 0:
        raise ConfigError(f"huber_loss: delta must be > 0, got {delta}")
    d = input - target
    a = ops.abs(d)
    loss = ops.where(ops.less(a, delta), 0.5 * d * d, delta * (a - 0.5 * delta))
    return _reduce(loss, reduction, "huber_loss")


# ------------------------------------------------------------------------ binary classification
def _binary_target(input, target, op: str, input_name: str = "input"):
    """``target`` in ``input``'s shape: (N,) labels for (N, 1) outputs and the reverse are
    reshaped (never broadcast to (N, N)); any other difference is a ShapeError."""
    si, st = _shape(input), _shape(target)
    if si != st and (si == st + (1,) or st == si + (1,)):
        return ops.reshape(target, si)
    _same_shape(input, target, op, (input_name, "target"))
    return target


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """BCE on probabilities: ``-(t log p + (1-t) log(1-p))``, each log clamped to >= -100 (torch).

    Prefer :func:`binary_cross_entropy_with_logits` (stable); this form is for models that
    end in a sigmoid. Labels (N,) for outputs (N, 1), or the reverse, are reshaped to the
    input's shape (never broadcast to (N, N)); other shape differences raise ShapeError.

    Example:
        >>> round(float(binary_cross_entropy(np.array([0.5]), np.array([1.0]))), 6)
        0.693147
    """
    _check_reduction(reduction, "binary_cross_entropy", input=input)
    target = _binary_target(input, target, "binary_cross_entropy")
    check_broadcasts_to("binary_cross_entropy", "weight", weight, _shape(input))
    raw = unbox_all(input)
    if raw.size and (float(raw.min()) < 0.0 or float(raw.max()) > 1.0):
        raise ConfigError(
            f"binary_cross_entropy: input must be probabilities in [0, 1], got range "
            f"[{float(raw.min()):.4g}, {float(raw.max()):.4g}]; apply a sigmoid first or use "
            f"binary_cross_entropy_with_logits on the raw outputs"
        )

    def clamped_log(p):
        # log(0) = -inf would give a NaN gradient (0 * inf): use a safe argument instead.
        positive = ops.greater(p, 0)
        return ops.maximum(
            ops.where(positive, ops.log(ops.where(positive, p, 1.0)), -100.0), -100.0
        )

    loss = -(target * clamped_log(input) + (1.0 - target) * clamped_log(1.0 - input))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(
    input, target, weight=None, pos_weight=None, reduction: str = "mean"
):
    """BCE on logits in the stable softplus form (torch semantics, ``pos_weight`` per class).

    ``loss = (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)``, never overflows. Labels
    (N,) for logits (N, 1), or the reverse, are reshaped to the input's shape (never
    broadcast to (N, N)); other shape differences raise ShapeError.

    Example:
        >>> round(float(binary_cross_entropy_with_logits(np.array([0.0]), np.array([1.0]))), 6)
        0.693147
    """
    op = "binary_cross_entropy_with_logits"
    _check_reduction(reduction, op, input=input)
    target = _binary_target(input, target, op, "input (logits)")
    check_broadcasts_to(op, "weight", weight, _shape(input))
    check_broadcasts_to(op, "pos_weight", pos_weight, _shape(input))
    sp = softplus(-input)  # = -log sigmoid(x)
    if pos_weight is None:
        loss = (1.0 - target) * input + sp
    else:
        loss = (1.0 - target) * input + (1.0 + (pos_weight - 1.0) * target) * sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, op)


# ------------------------------------------------------------------------ multi-class
def nll_loss(input, target, weight=None, reduction: str = "mean", ignore_index: int | None = None):
    """Negative log-likelihood of integer labels under log-probabilities (torch ``nll_loss``).

    ``input`` (N, C) or (N, C, d1, ...) log-probabilities; ``target`` (N,) or (N, d1, ...).
    ``mean`` divides by the summed weights of non-ignored targets; if every target is
    ignored it returns 0 (torch returns NaN).

    Example:
        >>> lp = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
        >>> round(float(nll_loss(lp, np.array([0, 1]))), 6)
        1.497866
    """
    _check_reduction(reduction, "nll_loss", input=input)
    s = _shape(input)
    if len(s) < 2:
        raise ShapeError(
            f"nll_loss: input (log-probabilities) must be (N, C) or (N, C, d1, ...) with "
            f"target (N,) or (N, d1, ...); got input {s} and target {_shape(target)}"
        )
    labels, n_valid = check_labels(target, s, "nll_loss", ignore_index=ignore_index,
                                   input_name="input", arg="target")
    xp = module_of(labels)
    keep = xp.ones(labels.shape, dtype=bool) if ignore_index is None else labels != ignore_index
    safe = xp.where(keep, labels, 0)
    lp = ops.moveaxis(input, 1, -1) if len(s) > 2 else input  # (N, ..., C)
    picked = ops.take_along_axis(lp, safe[..., None], axis=-1)[..., 0]  # (N, ...)
    w = keep.astype(unbox_all(input).dtype)
    if weight is not None:
        if _shape(weight) != (s[1],):
            raise ShapeError(f"nll_loss: weight must have shape ({s[1]},), got {_shape(weight)}")
        w = ops.take(weight, safe, axis=0) * w
    loss = -picked * w
    if reduction == "none":
        return loss
    total = ops.sum(loss)
    if reduction == "sum":
        return total
    return (
        total / ops.maximum(ops.sum(w), 1e-12)
        if weight is not None
        else total / float(max(n_valid, 1))  # n_valid == keep.sum(), counted by the check
    )


def sequence_cross_entropy(
    logits, labels, mask=None, ignore_index: int | None = None, reduction: str = "mean"
):
    """Per-token cross-entropy for sequences: ``logits`` (N, T, V), ``labels`` (N, T).

    Padding is left out by ``mask`` (N, T), True/1 = a real token, or by ``ignore_index``.
    ``mean`` averages over real tokens (0 when there is none); ``none`` gives (N, T) with
    padding zeroed. Runs the fused softmax cross-entropy on the (N*T, V) rows.

    Example:
        >>> logits = np.zeros((1, 2, 4)); labels = np.array([[1, 3]])
        >>> round(float(sequence_cross_entropy(logits, labels, mask=np.array([[1, 0]]))), 6)
        1.386294
    """
    op = "sequence_cross_entropy"
    _check_reduction(reduction, op, input=logits, name="logits")
    s, ts = _shape(logits), _shape(labels)
    if len(s) != 3:
        raise ShapeError(
            f"{op}: logits must be (N, T, V) and labels (N, T); got logits {s} and labels {ts}"
        )
    dtype = getattr(unbox_all(logits), "dtype", None)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise DTypeError(f"{op}: logits must be float32 or float64, got {dtype}; cast with "
                         "logits.astype('float32')")
    # the one label check (one copy to the host on the GPU); the primitive gets its n_valid
    raw, n_valid = check_labels(labels, s, op, class_axis=2, ignore_index=ignore_index)
    check_same_device([unbox_all(logits), raw], op)
    xp = module_of(raw)
    ignore = ignore_index
    if mask is not None:
        m = unbox_all(mask)
        if tuple(m.shape) != ts:
            raise ShapeError(f"{op}: mask must have the labels' shape {ts}, got {tuple(m.shape)}")
        # masked tokens become ignored ones (-1 never is a valid label)
        ignore = -1 if ignore_index is None else ignore_index
        raw = xp.where(m != 0, raw, ignore)
        n_valid = int((raw != ignore).sum())
    rows = ops.reshape(logits, (s[0] * s[1], s[2]))  # (N*T, V)
    flat = raw.reshape(-1).astype(np.int64, copy=False)
    kind = "sum" if reduction == "mean" and n_valid == 0 else reduction  # not 0/0: 0
    save = CE.FUSED_REDUCED_BACKWARD and kind != "none" and is_traced(logits)
    loss, _ = CE._sce(rows, flat, reduction=kind, ignore_index=ignore, label_smoothing=0.0,
                      save_grad=save, n_valid=n_valid)
    return ops.reshape(loss, ts) if kind == "none" else loss


# ------------------------------------------------------------------------ divergences
def kl_div(input, target, reduction: str = "batchmean", log_target: bool = False):
    """KL(target || model) with torch's argument order: ``input`` log-probs, ``target`` probs.

    Pointwise ``target * (log target - input)`` (0 where target is 0). ``batchmean`` (the
    mathematically right one, default here) divides the sum by the batch size; torch's
    default ``mean`` divides by the number of elements.

    Example:
        >>> p = np.array([[0.5, 0.5]])
        >>> float(kl_div(np.log(p), p))
        0.0
    """
    op = "kl_div"
    _check_reduction(reduction, op, ("batchmean", "mean", "sum", "none"), input=input)
    _same_shape(input, target, op, ("input (log-probabilities)", "target"))
    if log_target:
        pointwise = ops.exp(target) * (target - input)
    else:
        positive = ops.greater(target, 0)
        safe = ops.where(positive, target, 1.0)
        pointwise = ops.where(positive, target * (ops.log(safe) - input), 0.0)
    if reduction == "batchmean":
        n = _shape(input)[0] if _shape(input) else 1
        return ops.sum(pointwise) / float(n)
    return _reduce(pointwise, reduction, op)


def gaussian_kl(mu, logvar, reduction: str = "mean"):
    """VAE latent loss KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims.

    ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` per sample; ``mean`` over the batch
    (axis 0), ``sum`` over it, ``none`` gives one value per sample.

    Example:
        >>> float(gaussian_kl(np.zeros((2, 3)), np.zeros((2, 3))))
        0.0
    """
    _check_reduction(reduction, "gaussian_kl", input=mu, name="mu")
    _same_shape(mu, logvar, "gaussian_kl", ("mu", "logvar"))
    s = _shape(mu)
    per = -0.5 * (1.0 + logvar - mu * mu - ops.exp(logvar))
    per_sample = ops.sum(per, axis=tuple(range(1, len(s)))) if len(s) > 1 else per
    return _reduce(per_sample, reduction, "gaussian_kl")


def gaussian_nll_loss(
    input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean"
):
    """torch's Gaussian NLL ``0.5 (log var + (input - target)^2 / var)`` (+ 0.5 log 2pi if full).

    ``var`` has the input's shape, or lacks its last dim, or has last dim 1 (one variance
    shared by the features). It is clamped to >= eps for stability, with the gradient
    passed through unchanged (as torch does).

    Example:
        >>> float(gaussian_nll_loss(np.zeros(2), np.zeros(2), np.ones(2)))
        0.0
    """
    op = "gaussian_nll_loss"
    _check_reduction(reduction, op, input=input)
    _same_shape(input, target, op)
    si, sv = _shape(input), _shape(var)
    if sv != si:
        if sv == si[:-1]:
            var = ops.expand_dims(var, -1)
        elif not (sv[:-1] == si[:-1] and sv and sv[-1] == 1):
            raise ShapeError(
                f"{op}: var has shape {sv}; expected the input's shape {si}, {si[:-1]}, "
                f"or {si[:-1] + (1,)}"
            )
    raw = unbox_all(var)
    if raw.size and float(raw.min()) < 0:
        raise ConfigError(f"{op}: var must be non-negative, got a minimum of {float(raw.min()):.4g}")
    var = var + stop_gradient(ops.maximum(var, eps) - var)  # clamp, identity gradient
    d = input - target
    loss = 0.5 * (ops.log(var) + d * d / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction, op)


# ------------------------------------------------------------------------ contrastive and GAN
def nt_xent(z1, z2, temperature: float = 0.5):
    """SimCLR's NT-Xent loss for two views ``z1``, ``z2`` of shape (N, D).

    Cosine similarities of all 2N embeddings over ``temperature``; each one's positive is
    its other view, the other 2N - 2 are negatives; mean cross-entropy over the 2N rows.

    Example:
        >>> z = np.eye(2)
        >>> round(float(nt_xent(z, z, temperature=1.0)), 4)
        0.5514
    """
    check_not_apply_output("F.nt_xent", z1, "z1")
    check_not_apply_output("F.nt_xent", z2, "z2")
    _same_shape(z1, z2, "nt_xent", ("z1", "z2"))
    s = _shape(z1)
    if len(s) != 2 or s[0] < 1:
        raise ShapeError(f"nt_xent: embeddings must be (N, D) with N >= 1, got {s}")
    if temperature <= 0:
        raise ConfigError(f"nt_xent: temperature must be > 0, got {temperature}")
    n = s[0]
    z = ops.concatenate([z1, z2], axis=0)  # (2N, D)
    norm = ops.sqrt(ops.sum(z * z, axis=1, keepdims=True))
    z = z / ops.maximum(norm, 1e-8)
    sim = ops.matmul(z, ops.transpose(z)) / float(temperature)  # (2N, 2N)
    xp = module_of(unbox_all(sim))
    self_pairs = xp.eye(2 * n, dtype=bool)
    sim = ops.where(self_pairs, -np.inf, sim)  # a sample is not its own negative
    positives = xp.concatenate([xp.arange(n, 2 * n), xp.arange(0, n)])
    lp = log_softmax(sim, axis=1)
    return -ops.mean(ops.take_along_axis(lp, positives[:, None], axis=1))


def gan_discriminator_loss(real_logits, fake_logits):
    """``-log D(x) - log(1 - D(G(z)))`` on logits (mean over each batch), stable.

    Example:
        >>> round(float(gan_discriminator_loss(np.zeros(2), np.zeros(2))), 6)
        1.386294
    """
    check_not_apply_output("F.gan_discriminator_loss", real_logits, "real_logits")
    check_not_apply_output("F.gan_discriminator_loss", fake_logits, "fake_logits")
    return ops.mean(softplus(-real_logits)) + ops.mean(softplus(fake_logits))


def gan_generator_loss(fake_logits, non_saturating: bool = True):
    """Generator loss on the discriminator's logits for generated samples.

    Non-saturating (default, Goodfellow et al.'s practical form): ``-log D(G(z))``.
    ``non_saturating=False`` gives the minimax form ``log(1 - D(G(z)))``, whose gradient
    vanishes when the discriminator wins.
    """
    check_not_apply_output("F.gan_generator_loss", fake_logits, "fake_logits")
    if non_saturating:
        return ops.mean(softplus(-fake_logits))
    return -ops.mean(softplus(fake_logits))


# Regularizers (L2/L1 penalties, sparsity, contractive) live in functional/regularizers.py.


__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "gan_discriminator_loss",
    "gan_generator_loss", "gaussian_kl", "gaussian_nll_loss", "huber_loss", "kl_div", "l1_loss",
    "mse_loss", "nll_loss", "nt_xent", "sequence_cross_entropy",
]
