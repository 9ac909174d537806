"""Reduce the learning rate when a metric stops improving (torch's ``ReduceLROnPlateau``).

Design: a small object with pure functions, no hidden state. ``init(lr)`` gives a
:class:`PlateauState` (Python numbers only, so it checkpoints like any state);
``step(state, metric)`` returns the next state; ``state.lr`` is the learning rate to use
and ``state.scale = lr / initial lr``. Call ``step`` once per epoch (or per validation),
as torch's ``scheduler.step(val_loss)``.

To apply it, build the optimizer with the initial lr and scale its updates:
``updates = optim.scale_updates(updates, plateau_state.scale)`` (every optimizer here is
linear in its learning rate, so this equals using ``state.lr``). ``gpudl.train``'s
``ReduceLROnPlateau`` callback does the same for ``fit``.

Example:
    >>> sched = reduce_on_plateau(factor=0.5, patience=1)
    >>> state = sched.init(0.1)
    >>> for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95]:
    ...     state = sched.step(state, loss)
    >>> state.lr, state.scale
    (0.025, 0.25)
"""

from __future__ import annotations

import math
from typing import NamedTuple

from gpudl.errors import ConfigError
from gpudl.optim.base import check_hparam

_EPS = 1e-8  # torch: a reduction smaller than this is ignored


class PlateauState(NamedTuple):
    lr: float
    initial_lr: float
    best: float
    num_bad_epochs: int
    cooldown_counter: int
    last_epoch: int

    @property
    def scale(self) -> float:
        """``lr / initial_lr``: the factor to multiply the optimizer's updates by."""
        return self.lr / self.initial_lr if self.initial_lr else 0.0


class ReduceOnPlateau:
    """See :func:`reduce_on_plateau`."""

    def __init__(self, factor: float, patience: int, threshold: float, mode: str,
                 threshold_mode: str, cooldown: int, min_lr: float, eps: float):
        op = "reduce_on_plateau"
        self.factor = check_hparam(op, "factor", factor, high=1.0, high_open=True)
        if int(patience) != patience or patience < 0:
            raise ConfigError(f"{op}: patience must be an integer >= 0, got {patience}")
        if int(cooldown) != cooldown or cooldown < 0:
            raise ConfigError(f"{op}: cooldown must be an integer >= 0, got {cooldown}")
        if mode not in ("min", "max"):
            raise ConfigError(f"{op}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"{op}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.threshold = check_hparam(op, "threshold", threshold)
        self.mode, self.threshold_mode = mode, threshold_mode
        self.min_lr = check_hparam(op, "min_lr", min_lr)
        self.eps = check_hparam(op, "eps", eps)

    def init(self, lr: float) -> PlateauState:
        lr = check_hparam("reduce_on_plateau.init", "lr", lr)
        best = math.inf if self.mode == "min" else -math.inf
        return PlateauState(lr, lr, best, 0, 0, 0)

    def is_better(self, value: float, best: float) -> bool:
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if rel else best - self.threshold)
        return value > (best * (1.0 + self.threshold) if rel else best + self.threshold)

    def step(self, state: PlateauState, metric: float) -> PlateauState:
        """The state after one more epoch whose monitored value is ``metric``."""
        value = float(metric)  # a 0-d CuPy array is read here, once per epoch
        lr, best, bad, cool = state.lr, state.best, state.num_bad_epochs, state.cooldown_counter
        if self.is_better(value, best):
            best, bad = value, 0
        else:
            bad += 1
        if cool > 0:  # in cooldown: bad epochs do not count
            cool -= 1
            bad = 0
        if bad > self.patience:
            new_lr = max(lr * self.factor, self.min_lr)
            if lr - new_lr > self.eps:
                lr = new_lr
            cool, bad = self.cooldown, 0
        return PlateauState(lr, state.initial_lr, best, bad, cool, state.last_epoch + 1)


def reduce_on_plateau(factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                      mode: str = "min", threshold_mode: str = "rel", cooldown: int = 0,
                      min_lr: float = 0.0, eps: float = 1e-8) -> ReduceOnPlateau:
    """torch's ``ReduceLROnPlateau`` as pure ``init(lr)`` / ``step(state, metric)``.

    A value improves on ``best`` when it is below ``best * (1 - threshold)`` (mode
    ``"min"``, ``threshold_mode="rel"``; ``"abs"``: below ``best - threshold``; ``"max"``
    mirrors both). After more than ``patience`` epochs without improvement the lr becomes
    ``max(lr * factor, min_lr)``, then ``cooldown`` epochs are ignored. Example: module
    docstring.
    """
    return ReduceOnPlateau(factor, patience, threshold, mode, threshold_mode, cooldown,
                           min_lr, eps)
