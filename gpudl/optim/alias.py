"""The optimizers: SGD (momentum, Nesterov), AdaGrad, RMSprop, AdaDelta, Adam, AdamW, AdaMax.

Each is a :func:`~gpudl.optim.base.chain` of small transformations and follows
``torch.optim`` exactly: the same defaults, the same update rule, the same meaning of
``weight_decay``. ``lr`` is a float or a schedule ``step -> lr`` (see ``schedules.py``);
the step count lives in the optimizer state and starts at 0.

``weight_decay`` is L2 (added to the gradient, torch's meaning) everywhere except
:func:`adamw`, where it is decoupled; ``decay_mask`` (a mask tree, prefix or callable such
as :func:`~gpudl.optim.decay.weight_decay_mask`) limits which leaves are decayed. See
``decay.py`` for the difference.

``sgd``, ``adam`` and ``adamw`` (without a ``decay_mask`` on a non-zero decay) also carry
a fused update (:mod:`gpudl.optim.fused`): the same state and the same bits as their
chain, computed by one body call (``kernels/optim_update.cu`` on the GPU, its NumPy twin
on the CPU) instead of ~14 array operations per leaf; inside ``gd.fit`` the parameters
and state are then updated in place in flat buffers (:mod:`gpudl.optim.flat`). Any
other use (a chain around them, traced gradients, mismatched trees) runs the chain.

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> opt = optim.sgd(0.1, momentum=0.9)
    >>> state = opt.init(params)
    >>> grads = {"w": 2 * params["w"]}              # d/dw of ||w||^2
    >>> updates, state = opt.update(grads, state, params)
    >>> optim.apply_updates(params, updates)["w"].tolist()
    [0.8, -1.6]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from gpudl.optim.base import (
    GradientTransformation,
    Schedule,
    as_schedule,
    chain,
    check_hparam,
    scale_by_learning_rate,
)
from gpudl.optim.decay import add_decayed_weights
from gpudl.optim.fused import AdamRule, SgdRule, fused
from gpudl.optim.transforms import (
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_adamax,
    scale_by_rms,
    trace,
)


def _named(alias: Callable) -> Callable:
    """Errors raised by the pieces an alias builds say which optimizer they came from."""

    @functools.wraps(alias)
    def build(*args, **kwargs):
        try:
            return alias(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            if str(exc).startswith(f"{alias.__name__}:"):
                raise
            raise type(exc)(f"{alias.__name__}: {exc}") from None

    return build


def _l2(op: str, weight_decay: float, decay_mask: Any) -> list[GradientTransformation]:
    wd = check_hparam(op, "weight_decay", weight_decay)
    return [add_decayed_weights(wd, decay_mask)] if wd else []


def _lr(op: str, lr: float | Schedule) -> GradientTransformation:
    return scale_by_learning_rate(as_schedule(lr, op), op=op)


@_named
def sgd(lr: float | Schedule, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0, dampening: float = 0.0, decay_mask: Any = None
        ) -> GradientTransformation:
    """Stochastic gradient descent as ``torch.optim.SGD``.

    ``g <- g + weight_decay * p``; with momentum ``buf <- momentum * buf + (1 - dampening) * g``
    (``buf = g`` on the first step) and the step is ``p <- p - lr * buf``; with Nesterov
    ``p <- p - lr * (g + momentum * buf)``.

    The course writes Nesterov as a look-ahead: ``v <- mu v - lr grad(w + mu v);
    w <- w + v``. That needs the gradient at the look-ahead point ``w + mu v``. With the
    change of variables ``w' = w + mu v`` (and ``v = -lr buf``) the same iteration becomes
    ``buf <- mu buf + grad(w'); w' <- w' - lr (grad(w') + mu buf)``, which needs only the
    gradient at the current parameters: that is the form here (PyTorch's and optax's).
    The two sequences are the same points, shifted by ``mu v`` (for a constant ``lr``).

    Example:
        >>> import numpy as np
        >>> opt = sgd(0.5)
        >>> opt.update(np.array([1.0]), opt.init(np.zeros(1)))[0].tolist()
        [-0.5]
    """
    op = "sgd"
    momentum = check_hparam(op, "momentum", momentum)
    parts = _l2(op, weight_decay, decay_mask)
    if momentum or nesterov:
        parts.append(trace(momentum, nesterov, dampening))
    opt = chain(*parts, _lr(op, lr), name=op)
    if weight_decay and decay_mask is not None:
        return opt  # a masked decay keeps the composable chain (see fused.py)
    return fused(opt, SgdRule(op, as_schedule(lr, op), weight_decay=float(weight_decay),
                              momentum=momentum, nesterov=bool(nesterov),
                              dampening=float(dampening)))


@_named
def adagrad(lr: float | Schedule = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            decay_mask: Any = None) -> GradientTransformation:
    """AdaGrad as ``torch.optim.Adagrad``: ``sum <- sum + g^2``,
    ``p <- p - lr_t * g / (sqrt(sum) + eps)`` with ``lr_t = lr / (1 + t * lr_decay)``
    (``t`` = 0 on the first step).

    Example:
        >>> import numpy as np
        >>> opt = adagrad(0.1)
        >>> round(float(opt.update(np.array([3.0]), opt.init(np.zeros(1)))[0][0]), 6)
        -0.1
    """
    op = "adagrad"
    decay = check_hparam(op, "lr_decay", lr_decay)
    lr = as_schedule(lr, op)
    if decay:
        base = lr

        def lr(step: int) -> float:  # noqa: F811 - wraps the given lr
            value = base(step) if callable(base) else base
            return value / (1.0 + step * decay)

    return chain(*_l2(op, weight_decay, decay_mask),
                 scale_by_adagrad(initial_accumulator_value, eps), _lr(op, lr), name=op)


@_named
def rmsprop(lr: float | Schedule = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
            weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
            decay_mask: Any = None, *, decay: float | None = None) -> GradientTransformation:
    """RMSprop as ``torch.optim.RMSprop``: ``s <- alpha s + (1 - alpha) g^2``;
    ``d = g / (sqrt(s) + eps)`` (centered: ``sqrt(s - a^2)`` with ``a`` the running mean of
    ``g``); with momentum ``buf <- momentum buf + d`` and ``p <- p - lr buf``, else
    ``p <- p - lr d``. ``decay`` is another name for ``alpha`` (Keras/TF call it rho).

    Example:
        >>> import numpy as np
        >>> opt = rmsprop(0.01)
        >>> round(float(opt.update(np.array([2.0]), opt.init(np.zeros(1)))[0][0]), 6)
        -0.1
    """
    op = "rmsprop"
    if decay is not None:
        alpha = decay
    momentum = check_hparam(op, "momentum", momentum)
    parts = _l2(op, weight_decay, decay_mask) + [scale_by_rms(alpha, eps, centered)]
    if momentum:
        parts.append(trace(momentum))  # dampening 0: buf = momentum*buf + d, as torch
    return chain(*parts, _lr(op, lr), name=op)


@_named
def adadelta(lr: float | Schedule = 1.0, rho: float = 0.9, eps: float = 1e-6,
             weight_decay: float = 0.0, decay_mask: Any = None) -> GradientTransformation:
    """AdaDelta as ``torch.optim.Adadelta``: ``s <- rho s + (1-rho) g^2``;
    ``delta = sqrt(acc + eps) / sqrt(s + eps) * g``; ``acc <- rho acc + (1-rho) delta^2``;
    ``p <- p - lr delta``.

    Example:
        >>> import numpy as np
        >>> opt = adadelta()
        >>> round(float(opt.update(np.array([1.0]), opt.init(np.zeros(1)))[0][0]), 6)
        -0.003162
    """
    op = "adadelta"
    return chain(*_l2(op, weight_decay, decay_mask), scale_by_adadelta(rho, eps), _lr(op, lr),
                 name=op)


@_named
def adam(lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
         decay_mask: Any = None) -> GradientTransformation:
    """Adam as ``torch.optim.Adam``: ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``. ``weight_decay`` is L2
    (added to ``g``); for decoupled decay use :func:`adamw`.

    Example:
        >>> import numpy as np
        >>> opt = adam(0.1)
        >>> round(float(opt.update(np.array([-3.0]), opt.init(np.zeros(1)))[0][0]), 6)
        0.1
    """
    op = "adam"
    opt = chain(*_l2(op, weight_decay, decay_mask), scale_by_adam(betas, eps, amsgrad),
                _lr(op, lr), name=op)
    return _fused_adam(opt, op, lr, betas, eps, amsgrad, weight_decay, decay_mask, False)


@_named
def adamw(lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
          decay_mask: Any = None) -> GradientTransformation:
    """AdamW as ``torch.optim.AdamW``: Adam's step plus decoupled weight decay,
    ``p <- p * (1 - lr*wd) - lr * adam_direction`` (the decay is not rescaled by ``v``).

    Example:
        >>> import numpy as np
        >>> opt = adamw(0.1, weight_decay=0.5)
        >>> p = np.array([2.0])
        >>> round(float(opt.update(np.array([0.0]), opt.init(p), p)[0][0]), 6)   # -lr*wd*p
        -0.1
    """
    op = "adamw"
    wd = check_hparam(op, "weight_decay", weight_decay)
    parts = [scale_by_adam(betas, eps, amsgrad)]
    if wd:
        parts.append(add_decayed_weights(wd, decay_mask))
    opt = chain(*parts, _lr(op, lr), name=op)
    return _fused_adam(opt, op, lr, betas, eps, amsgrad, wd, decay_mask, True)


def _fused_adam(opt: GradientTransformation, op: str, lr, betas, eps, amsgrad, weight_decay,
                decay_mask, decoupled: bool) -> GradientTransformation:
    """``opt`` with the fused update (one body call per leaf, see ``fused.py``); a masked
    weight decay keeps the composable chain."""
    if weight_decay and decay_mask is not None:
        return opt
    b1, b2 = (float(b) for b in betas)  # already checked by scale_by_adam
    return fused(opt, AdamRule(op, as_schedule(lr, op), betas=(b1, b2), eps=float(eps),
                               amsgrad=bool(amsgrad), weight_decay=float(weight_decay),
                               decoupled=decoupled))


@_named
def adamax(lr: float | Schedule = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
           eps: float = 1e-8, weight_decay: float = 0.0, decay_mask: Any = None
           ) -> GradientTransformation:
    """AdaMax as ``torch.optim.Adamax``: ``m <- b1 m + (1-b1) g``,
    ``u <- max(b2 u, |g| + eps)``, ``p <- p - lr / (1-b1^t) * m / u``.

    Example:
        >>> import numpy as np
        >>> opt = adamax(0.1)
        >>> round(float(opt.update(np.array([4.0]), opt.init(np.zeros(1)))[0][0]), 6)
        -0.1
    """
    op = "adamax"
    return chain(*_l2(op, weight_decay, decay_mask), scale_by_adamax(betas, eps), _lr(op, lr),
                 name=op)
