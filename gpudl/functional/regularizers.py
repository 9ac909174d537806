"""Regularizers: L2 and L1 weight penalties, KL sparsity, and the contractive penalty.

Example:
    >>> import numpy as np
    >>> from gpudl.functional import regularizers as R
    >>> params = {"weight": np.array([3.0, 4.0]), "bias": np.array([9.0])}
    >>> float(R.l2_penalty(params)), float(R.l2_penalty(params, exclude_bias=True))
    (106.0, 25.0)
"""

from __future__ import annotations

import numpy as np

from gpudl import ops
from gpudl.autodiff import unbox_all, vjp
from gpudl.backend import module_of
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError
from gpudl.functional.losses import _check_reduction
from gpudl.tree import flatten_with_paths


def _weights(params, exclude_bias: bool, op: str) -> list:
    if not isinstance(exclude_bias, (bool, np.bool_)):
        raise ArgumentTypeError(f"{op}: exclude_bias must be True or False, got {exclude_bias!r} "
                        f"({type(exclude_bias).__name__}); the penalty's strength is applied by "
                        f"the caller: lam * {op}(params)")
    return [
        leaf
        for path, leaf in flatten_with_paths(params)
        if not (exclude_bias and path.rsplit(".", 1)[-1] == "bias")
    ]


def l2_penalty(params, exclude_bias: bool = False):
    """``sum(w^2)`` over every array in the parameter tree (weight decay's penalty).

    Every leaf counts by default, biases included, as the optimizers' ``weight_decay``
    (and torch's) decays every parameter it is given; ``exclude_bias=True`` leaves out
    leaves named ``bias`` (the usual textbook form, which penalises weights only). The
    course's ``(lambda/2) ||w||^2`` is ``0.5 * lam * l2_penalty(params, exclude_bias=True)``.

    Example:
        >>> params = {"fc": {"weight": np.array([1.0, 2.0]), "bias": np.array([5.0])}}
        >>> float(l2_penalty(params)), float(l2_penalty(params, exclude_bias=True))
        (30.0, 5.0)
    """
    terms = [ops.sum(w * w) for w in _weights(params, exclude_bias, "l2_penalty")]
    return sum(terms[1:], terms[0]) if terms else 0.0


def l1_penalty(params, exclude_bias: bool = False):
    """``sum(|w|)`` over the parameter tree; ``exclude_bias=True`` leaves out ``bias`` leaves.

    Example:
        >>> params = {"fc": {"weight": np.array([1.0, -2.0]), "bias": np.array([5.0])}}
        >>> float(l1_penalty(params)), float(l1_penalty(params, exclude_bias=True))
        (8.0, 3.0)
    """
    terms = [ops.sum(ops.abs(w)) for w in _weights(params, exclude_bias, "l1_penalty")]
    return sum(terms[1:], terms[0]) if terms else 0.0


def sparsity_kl(rho: float, rho_hat, eps: float = 1e-8):
    """Sparse-autoencoder penalty ``sum_j KL(rho || rho_hat_j)`` of Bernoulli rates.

    ``rho`` is the target mean activation (e.g. 0.05); ``rho_hat`` the observed mean
    activation of each hidden unit, e.g. ``ops.mean(sigmoid_hidden, axis=0)``.

    Example:
        >>> float(sparsity_kl(0.1, np.array([0.1, 0.1])))
        0.0
    """
    if not 0.0 < rho < 1.0:
        raise ConfigError(f"sparsity_kl: rho must lie in (0, 1), got {rho}")
    r = ops.clip(rho_hat, eps, 1.0 - eps)
    return ops.sum(rho * ops.log(rho / r) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - r)))


def contractive_penalty(f, x, reduction: str = "mean"):
    """Squared Frobenius norm of the encoder's Jacobian ``||d f(x) / d x||_F^2`` (Rifai et al.).

    ``f`` maps a batch (N, D) row-wise to codes (N, H) (no batch-coupling layers such as
    BatchNorm). Cost: one forward and H backward passes through ``f`` (``gd.vjp`` with one
    unit cotangent per code unit); differentiable again, so ``gd.grad`` of a loss that
    includes it trains through the Jacobian (grad-of-grad). For a sigmoid encoder use the
    closed form :func:`contractive_penalty_sigmoid` (one pass). ``mean``/``sum`` over N.

    Example:
        >>> x = np.ones((2, 3))
        >>> float(contractive_penalty(lambda v: 2.0 * v, x))
        12.0
    """
    _check_reduction(reduction, "contractive_penalty", ("mean", "sum"))
    out, f_vjp = vjp(f, x)
    s = _shape(out)
    if len(s) != 2 or s[0] != _shape(x)[0]:
        raise ShapeError(f"contractive_penalty: f must map (N, D) to (N, H), got {s}")
    xp = module_of(unbox_all(out))
    total = None
    for j in range(s[1]):
        e = xp.zeros(s, dtype=unbox_all(out).dtype)
        e[:, j] = 1.0
        (row,) = f_vjp(e)  # (N, D): d out[n, j] / d x[n]
        term = ops.sum(row * row)
        total = term if total is None else total + term
    if total is None:
        total = 0.0
    return total / float(s[0]) if reduction == "mean" else total


def contractive_penalty_sigmoid(h, weight, reduction: str = "mean"):
    """Closed-form contractive penalty for ``h = sigmoid(x @ weight.T + b)``.

    ``||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2`` per sample; ``weight`` (H, D).

    Example:
        >>> h = np.full((1, 2), 0.5); w = np.ones((2, 3))
        >>> float(contractive_penalty_sigmoid(h, w))
        0.375
    """
    _check_reduction(reduction, "contractive_penalty_sigmoid", ("mean", "sum"))
    sh, sw = _shape(h), _shape(weight)
    if len(sh) != 2 or len(sw) != 2 or sh[1] != sw[0]:
        raise ShapeError(
            f"contractive_penalty_sigmoid: h must be (N, H) and weight (H, D); got {sh}, {sw}"
        )
    d = h * (1.0 - h)
    total = ops.sum(ops.matmul(d * d, ops.sum(weight * weight, axis=1)))
    return total / float(sh[0]) if reduction == "mean" else total


__all__ = [
    "contractive_penalty", "contractive_penalty_sigmoid", "l1_penalty", "l2_penalty",
    "sparsity_kl",
]
