"""The scaling rules behind the optimizers: momentum and the adaptive methods.

Each rule follows PyTorch's ``torch.optim`` update exactly (same defaults, same place
for ``eps``), without the learning rate: the aliases in ``alias.py`` chain a rule with
:func:`~gpudl.optim.base.scale_by_learning_rate`. Leaves are updated with their own
array module, so the state lives on the parameters' device in their dtype.

Example:
    >>> import numpy as np
    >>> t = scale_by_adam()
    >>> u, s = t.update(np.array([0.5]), t.init(np.zeros(1)))
    >>> round(float(u[0]), 6)    # first Adam step: m_hat / (sqrt(v_hat) + eps) = sign(g)
    1.0
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from gpudl.backend import module_of
from gpudl.errors import ConfigError
from gpudl.optim.base import (
    GradientTransformation,
    check_hparam,
    check_state,
    check_structure,
    map_leaves,
)
from gpudl.tree import tree_map


def _zeros(params: Any, fill: float = 0.0) -> Any:
    def make(p):
        z = module_of(p).zeros_like(p)
        if fill:
            z += fill
        return z

    return tree_map(make, params)


def _check(op: str, state_tree: Any, grads: Any) -> None:
    check_structure(state_tree, grads, op, "optimizer state")


def _betas(op: str, betas: tuple[float, float]) -> tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ConfigError(f"{op}: betas must be a pair (beta1, beta2) such as (0.9, 0.999), "
                          f"got {betas!r}") from None
    return (check_hparam(op, "betas[0]", b1, high=1.0, high_open=True),
            check_hparam(op, "betas[1]", b2, high=1.0, high_open=True))


# ----------------------------------------------------------------------------- momentum
class TraceState(NamedTuple):
    count: int
    momentum_buffer: Any


def trace(momentum: float, nesterov: bool = False, dampening: float = 0.0
          ) -> GradientTransformation:
    """SGD momentum as ``torch.optim.SGD``: ``buf = momentum*buf + (1-dampening)*g``
    (``buf = g`` on the first step); the update is ``buf``, or ``g + momentum*buf`` with
    Nesterov. See :func:`gpudl.optim.sgd` for how this Nesterov form relates to the
    look-ahead form.
    """
    op = "trace"
    mu = check_hparam(op, "momentum", momentum)
    damp = check_hparam(op, "dampening", dampening, high=1.0)
    if nesterov and (mu <= 0.0 or damp != 0.0):
        raise ConfigError(f"{op}: nesterov=True needs momentum > 0 and dampening = 0 "
                         f"(got momentum={mu}, dampening={damp})")

    def init(params):
        return TraceState(0, _zeros(params))

    def update(grads, state, params=None):
        check_state(op, state, TraceState)
        _check(op, state.momentum_buffer, grads)
        first = state.count == 0

        def leaf(g, buf):
            buf = g * 1.0 if first else buf * mu + g * (1.0 - damp)  # g * 1.0: a fresh copy
            return (g + buf * mu if nesterov else buf), buf

        updates, bufs = map_leaves(leaf, 2, grads, state.momentum_buffer, op=op)
        return updates, TraceState(state.count + 1, bufs)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- Adam family
class ScaleByAdamState(NamedTuple):
    count: int
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any  # None unless amsgrad


def scale_by_adam(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                  amsgrad: bool = False) -> GradientTransformation:
    """Adam's direction as torch: ``m_hat / (sqrt(v_hat) + eps)`` (eps after the sqrt of
    the bias-corrected ``v``); with ``amsgrad`` the running maximum of ``v`` is used."""
    op = "scale_by_adam"
    b1, b2 = _betas(op, betas)
    eps = check_hparam(op, "eps", eps)

    def init(params):
        return ScaleByAdamState(0, _zeros(params), _zeros(params),
                                _zeros(params) if amsgrad else None)

    def update(grads, state, params=None):
        check_state(op, state, ScaleByAdamState)
        _check(op, state.exp_avg, grads)
        t = state.count + 1
        bc1 = 1.0 - b1 ** t
        bc2_sqrt = math.sqrt(1.0 - b2 ** t)

        def leaf(g, m, v, vmax=None):
            xp = module_of(g)
            m = m * b1 + g * (1.0 - b1)
            v = v * b2 + (g * g) * (1.0 - b2)
            if vmax is not None:
                vmax = xp.maximum(vmax, v)
            denom = xp.sqrt(v if vmax is None else vmax) / bc2_sqrt + eps
            return (m / bc1) / denom, m, v, vmax

        if amsgrad:
            u, m, v, vmax = map_leaves(leaf, 4, grads, state.exp_avg, state.exp_avg_sq,
                                       state.max_exp_avg_sq, op=op)
        else:
            u, m, v, vmax = map_leaves(leaf, 4, grads, state.exp_avg, state.exp_avg_sq, op=op)
            vmax = None
        return u, ScaleByAdamState(t, m, v, vmax)

    return GradientTransformation(init, update)


class ScaleByAdamaxState(NamedTuple):
    count: int
    exp_avg: Any
    exp_inf: Any


def scale_by_adamax(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
                    ) -> GradientTransformation:
    """AdaMax as torch: ``u = max(b2*u, |g| + eps)``, direction ``m / ((1 - b1^t) * u)``."""
    op = "scale_by_adamax"
    b1, b2 = _betas(op, betas)
    eps = check_hparam(op, "eps", eps)

    def init(params):
        return ScaleByAdamaxState(0, _zeros(params), _zeros(params))

    def update(grads, state, params=None):
        check_state(op, state, ScaleByAdamaxState)
        _check(op, state.exp_avg, grads)
        t = state.count + 1
        bc1 = 1.0 - b1 ** t

        def leaf(g, m, u):
            xp = module_of(g)
            m = m * b1 + g * (1.0 - b1)
            u = xp.maximum(u * b2, xp.abs(g) + eps)
            return m / u / bc1, m, u

        u, m, inf = map_leaves(leaf, 3, grads, state.exp_avg, state.exp_inf, op=op)
        return u, ScaleByAdamaxState(t, m, inf)

    return GradientTransformation(init, update)


# ------------------------------------------------------------------- RMSprop, AdaGrad, AdaDelta
class ScaleByRmsState(NamedTuple):
    square_avg: Any
    grad_avg: Any  # None unless centered


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False
                 ) -> GradientTransformation:
    """RMSprop's direction as torch: ``g / (sqrt(s) + eps)`` with ``s = alpha*s + (1-alpha)*g^2``;
    centered: ``g / (sqrt(s - a^2) + eps)`` with ``a = alpha*a + (1-alpha)*g``."""
    op = "scale_by_rms"
    alpha = check_hparam(op, "alpha", alpha, high=1.0)
    eps = check_hparam(op, "eps", eps)

    def init(params):
        return ScaleByRmsState(_zeros(params), _zeros(params) if centered else None)

    def update(grads, state, params=None):
        check_state(op, state, ScaleByRmsState)
        _check(op, state.square_avg, grads)

        def leaf(g, s, a=None):
            xp = module_of(g)
            s = s * alpha + (g * g) * (1.0 - alpha)
            if a is None:
                return g / (xp.sqrt(s) + eps), s, None
            a = a * alpha + g * (1.0 - alpha)
            return g / (xp.sqrt(s - a * a) + eps), s, a

        if centered:
            u, s, a = map_leaves(leaf, 3, grads, state.square_avg, state.grad_avg, op=op)
        else:
            u, s, _ = map_leaves(leaf, 3, grads, state.square_avg, op=op)
            a = None
        return u, ScaleByRmsState(s, a)

    return GradientTransformation(init, update)


class ScaleByAdagradState(NamedTuple):
    sum: Any


def scale_by_adagrad(initial_accumulator_value: float = 0.0, eps: float = 1e-10
                     ) -> GradientTransformation:
    """AdaGrad's direction as torch: ``g / (sqrt(sum of g^2) + eps)``."""
    op = "scale_by_adagrad"
    init_acc = check_hparam(op, "initial_accumulator_value", initial_accumulator_value)
    eps = check_hparam(op, "eps", eps)

    def init(params):
        return ScaleByAdagradState(_zeros(params, init_acc))

    def update(grads, state, params=None):
        check_state(op, state, ScaleByAdagradState)
        _check(op, state.sum, grads)

        def leaf(g, acc):
            acc = acc + g * g
            return g / (module_of(g).sqrt(acc) + eps), acc

        u, acc = map_leaves(leaf, 2, grads, state.sum, op=op)
        return u, ScaleByAdagradState(acc)

    return GradientTransformation(init, update)


class ScaleByAdadeltaState(NamedTuple):
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """AdaDelta's step as torch: ``delta = sqrt(acc_delta + eps) / sqrt(s + eps) * g``, with
    ``s`` and ``acc_delta`` running averages (factor ``rho``) of ``g^2`` and ``delta^2``."""
    op = "scale_by_adadelta"
    rho = check_hparam(op, "rho", rho, high=1.0)
    eps = check_hparam(op, "eps", eps)

    def init(params):
        return ScaleByAdadeltaState(_zeros(params), _zeros(params))

    def update(grads, state, params=None):
        check_state(op, state, ScaleByAdadeltaState)
        _check(op, state.square_avg, grads)

        def leaf(g, s, d2):
            xp = module_of(g)
            s = s * rho + (g * g) * (1.0 - rho)
            delta = xp.sqrt(d2 + eps) / xp.sqrt(s + eps) * g
            d2 = d2 * rho + (delta * delta) * (1.0 - rho)
            return delta, s, d2

        u, s, d2 = map_leaves(leaf, 3, grads, state.square_avg, state.acc_delta, op=op)
        return u, ScaleByAdadeltaState(s, d2)

    return GradientTransformation(init, update)
