"""The one training step: gradient of an objective, optimizer update, new trees.

Every trainer in gpudl runs :class:`TrainStep`: ``gd.fit`` (through :class:`StepRunner`),
the linear models' gradient descent, the autoencoder recipes, each player of a GAN, and
``gpudl bench``, which times the very :class:`StepRunner` step that ``fit`` runs (keys,
model state and frozen parameters included).

An *objective* is a pure function ``objective(params, state, key, batch) -> (loss, (aux,
new_state))``: ``params`` is differentiated; ``state`` (BatchNorm statistics), ``key``
(dropout, sampling) and ``batch`` (data, or anything held fixed, such as the other GAN
player's parameters) are not. :func:`supervised_objective` is ``fit``'s: ``model.apply``
in training mode, then ``loss_fn(outputs, targets)``, with the outputs as ``aux``.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn, optim
    >>> model = nn.Dense(2)
    >>> x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    >>> params, state = model.init(gd.random.key(0), x)
    >>> step = supervised_step(model, gd.functional.softmax_cross_entropy, optim.sgd(0.1),
    ...                        params)
    >>> r = step(params, state, step.optimizer.init(params), None, (x, y))
    >>> r.aux.shape, bool(np.any(r.params["weight"] != params["weight"]))
    ((4, 2), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gpudl import random as gdr
from gpudl.autodiff import value_and_grad
from gpudl.optim.base import apply_updates, scale_updates
from gpudl.tree import tree_leaves, tree_map

Objective = Callable[[Any, Any, Any, Any], tuple[Any, tuple[Any, Any]]]


class StepResult(NamedTuple):
    """What one step returns: the new trees, the loss before the update, and ``aux``."""

    params: Any
    state: Any
    opt_state: Any
    loss: Any
    aux: Any


class TrainStep:
    """``step(params, state, opt_state, key, batch, *, lr_scale=1.0) -> StepResult``.

    One step of gradient-based training, pure (nothing is updated in place): the loss and
    gradient of ``objective`` at ``params``, ``optimizer.update``, the updates scaled by
    ``lr_scale`` (a reduce-on-plateau factor; 1.0 leaves them untouched), and
    ``apply_updates``. ``loss`` is the loss at the *old* parameters.

    Example:
        >>> import numpy as np
        >>> from gpudl import optim
        >>> def objective(p, state, key, batch):
        ...     return ((p["w"] - batch) ** 2).sum(), (None, state)
        >>> step = TrainStep(objective, optim.sgd(0.25))
        >>> p = {"w": np.zeros(2)}
        >>> r = step(p, {}, step.optimizer.init(p), None, np.array([1.0, 2.0]))
        >>> float(r.loss), r.params["w"].tolist()
        (5.0, [0.5, 1.0])
    """

    def __init__(self, objective: Objective, optimizer) -> None:
        self.objective, self.optimizer = objective, optimizer
        self._value_and_grad = value_and_grad(objective, has_aux=True)

    def __call__(self, params, state, opt_state, key, batch, *,
                 lr_scale: float = 1.0) -> StepResult:
        (loss, (aux, new_state)), grads = self._value_and_grad(params, state, key, batch)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        updates = scale_updates(updates, lr_scale)
        return StepResult(apply_updates(params, updates), new_state, opt_state, loss, aux)


def supervised_objective(model, loss_fn: Callable) -> Objective:
    """``fit``'s objective: ``batch = (x, y)``, ``model.apply(params, state, x, train=True,
    key=key)``, then ``loss_fn(outputs, y)``; ``aux`` is the outputs."""

    def objective(params, state, key, batch):
        x, y = batch
        out, new_state = model.apply(params, state, x, train=True, key=key)
        return loss_fn(out, y), (out, new_state)

    return objective


def respect_frozen(model, params, optimizer):
    """``optimizer`` wrapped so the leaves ``model.trainable_mask(params)`` marks frozen get
    no update and no optimizer state (unchanged when every leaf trains, or the model has
    no mask)."""
    mask_fn = getattr(model, "trainable_mask", None)
    return optimizer if mask_fn is None else frozen_optimizer(mask_fn(params), optimizer)


def frozen_optimizer(trainable, optimizer):
    """``optimizer`` wrapped so the leaves False in ``trainable`` (a tree of booleans shaped
    like the params) get no update and no optimizer state; unchanged when all train."""
    if all(tree_leaves(trainable)):
        return optimizer
    from gpudl import optim

    return optim.freeze(tree_map(lambda t: not t, trainable), optimizer)


def supervised_step(model, loss_fn: Callable, optimizer, params) -> TrainStep:
    """The step ``fit`` runs: :func:`supervised_objective` with :func:`respect_frozen`'s
    optimizer (``params`` decides the frozen mask; init the state with ``step.optimizer``)."""
    return TrainStep(supervised_objective(model, loss_fn), respect_frozen(model, params, optimizer))


def run_keys(key) -> tuple[Any, Any, Any]:
    """``fit``'s split of a run's root key: ``(init_key, data_key, step_key)``."""
    init_key, data_key, step_key = gdr.split(key, 3)
    return init_key, data_key, step_key


class StepRunner:
    """Carries params, state and optimizer state through successive steps of ``step``.

    Step ``s`` uses the key ``fold_in(step_key, s)``, so a run resumed at step ``s``
    continues exactly. The trees are replaced only after a whole step succeeded: a step
    that raises leaves the previous ones (and ``step``) as they were.
    """

    def __init__(self, step_fn: TrainStep, params, state, opt_state, step_key) -> None:
        self.step_fn = step_fn
        self.params, self.state, self.opt_state = params, state, opt_state
        self.step_key, self.step, self.lr_scale = step_key, 0, 1.0

    def train_step(self, x, y) -> tuple[Any, Any]:
        """One step on the batch ``(x, y)``; returns ``(loss, outputs)``."""
        return self.run_batch((x, y))

    def run_batch(self, batch) -> tuple[Any, Any]:
        """One step on ``batch`` (whatever the step's objective takes); returns
        ``(loss, aux)``."""
        key = gdr.fold_in(self.step_key, self.step)
        r = self.step_fn(self.params, self.state, self.opt_state, key, batch,
                         lr_scale=self.lr_scale)
        self.params, self.state, self.opt_state = r.params, r.state, r.opt_state
        self.step += 1
        return r.loss, r.aux


__all__ = ["StepResult", "TrainStep", "supervised_objective", "respect_frozen",
           "frozen_optimizer", "supervised_step", "run_keys", "StepRunner"]
