"""The one training step: gradient of an objective, optimizer update, new trees.

Every trainer in gpudl runs :class:`TrainStep`: ``gd.fit`` (through :class:`StepRunner`),
the linear models' gradient descent, the autoencoder recipes, each player of a GAN, and
``gpudl bench``, which times the very :class:`StepRunner` step that ``fit`` runs (keys,
model state and frozen parameters included).

Inside ``fit`` the parameters and the optimizer state are updated in place when that is
invisible (*donation*): for the fused optimizers (``optim.sgd``, ``optim.adam``,
``optim.adamw`` as the aliases build them, see :mod:`gpudl.optim.fused`),
:class:`StepRunner` copies the trees once into flat buffers it owns
(:class:`~gpudl.optim.flat.FlatTrees`), and each step then updates every leaf at once in
those buffers, as ``torch.optim`` updates its parameters. It never writes an array it
was given (the caller's ``params``: copied first) or one it has handed out (reading
``runner.params``/``runner.opt_state`` hands them out: the next step writes new buffers,
so the trees a NaN watch, a callback or a checkpoint holds never change), nor trees the
objective kept (it gets a tree of its own each step; if the views have more holders
afterwards, that step writes new buffers). The numbers are those of the pure step: same bits.

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

import signal
import threading
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple

import numpy as np

from gpudl import random as gdr
from gpudl.autodiff import value_and_grad
from gpudl.optim.base import apply_updates, scale_updates
from gpudl.optim.flat import FlatTrees
from gpudl.optim.fused import fused_rule
from gpudl.train.host_memory import keep_freed_host_memory
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
    ``apply_updates``. ``loss`` is the loss at the *old* parameters. The one exception is
    a :class:`StepRunner` lending the step its own buffers (see the module docstring):
    then the same numbers are computed in place.

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
        lent = _LENT.get()
        if lent is not None and lent.lends(params, opt_state, self.optimizer):
            return self._in_place(lent, state, key, batch, lr_scale)
        (loss, (aux, new_state)), grads = self._value_and_grad(params, state, key, batch)
        params, opt_state = self.update(params, opt_state, grads, lr_scale)
        return StepResult(params, new_state, opt_state, loss, aux)

    def update(self, params, opt_state, grads, lr_scale: float = 1.0) -> tuple[Any, Any]:
        """``(new params, new opt_state)``: ``optimizer.update``, the updates scaled by
        ``lr_scale``, ``apply_updates`` (pure)."""
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return apply_updates(params, scale_updates(updates, lr_scale)), opt_state

    def donates(self) -> bool:
        """Whether :class:`StepRunner` may lend this step its buffers: the optimizer is a
        fused alias and ``__call__`` is this class's (a subclass's own step is left alone)."""
        return (type(self).__call__ is TrainStep.__call__
                and fused_rule(self.optimizer) is not None)

    def _in_place(self, lent: _Lent, state, key, batch, lr_scale: float) -> StepResult:
        flat = lent.flat
        # The objective gets a tree of its own (new containers, the same views): if it
        # keeps any part of it, unshared() sees the views' extra holders.
        params = flat.fresh_params()
        (loss, (aux, new_state)), grads = self._value_and_grad(params, state, key, batch)
        if not flat.load_grads(grads):  # grads of another dtype...: the pure update
            params, opt_state = self.update(params, flat.opt_state, grads, lr_scale)
            return StepResult(params, new_state, opt_state, loss, aux)
        del params, grads  # gathered: a gradient that is a parameter's own array is copied
        if not flat.unshared() or _fp_errors_may_raise():
            # The objective kept (a view of) the trees, its outputs view them, or the
            # update may raise half-way: update new buffers; holders of the old ones keep
            # them unchanged.
            flat = flat.copy()
        lent.hold_interrupts()  # released by the runner once it holds the new trees
        flat.apply(lr_scale)
        lent.used = flat
        return StepResult(flat.params, new_state, flat.opt_state, loss, aux)


class _Lent:
    """What a :class:`StepRunner` lends the step it calls: buffers only it holds (a
    :class:`~gpudl.optim.flat.FlatTrees`), and a hold on Ctrl-C from the start of the
    in-place update until the runner has the new trees and step count (an update
    interrupted half-way would leave trees of no step at all)."""

    def __init__(self, flat: FlatTrees) -> None:
        self.flat, self.used = flat, None
        self._held: list[int] | None = None
        self._previous: Any = None

    def lends(self, params, opt_state, optimizer) -> bool:
        return (params is self.flat.params and opt_state is self.flat.opt_state
                and fused_rule(optimizer) is self.flat.rule)

    def hold_interrupts(self) -> None:
        # Only Python's own SIGINT handler, and only in the main thread (signal handlers
        # live there); elsewhere nothing changes.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            held: list[int] = []
            self._previous = signal.signal(signal.SIGINT,
                                           lambda signum, frame: held.append(signum))
            self._held = held

    def release(self, raise_held: bool = True) -> None:
        """Restore the SIGINT handler; raise the KeyboardInterrupt that was held, if any."""
        held, self._held = self._held, None
        if held is None:
            return
        signal.signal(signal.SIGINT, self._previous)
        if held and raise_held:
            raise KeyboardInterrupt


_LENT: ContextVar[_Lent | None] = ContextVar("gpudl_lent_buffers", default=None)


def _fp_errors_may_raise() -> bool:
    """Whether a floating-point warning in a NumPy update would raise (np.seterr 'raise' or
    'call', or a warnings filter turning RuntimeWarning into an error)."""
    if any(mode in ("raise", "call") for mode in np.geterr().values()):
        return True
    return any(f[0] == "error" and issubclass(RuntimeWarning, f[2]) for f in warnings.filters)


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
    that raises leaves the previous ones (and ``step``) as they were. With a fused
    optimizer the runner lends the step buffers it owns, which the step updates in place
    (see the module docstring); Ctrl-C during that update is held until the update and
    the step count are done, so an interrupted run still holds the trees of a whole step.
    """

    def __init__(self, step_fn: TrainStep, params, state, opt_state, step_key) -> None:
        keep_freed_host_memory()  # steps reuse freed heap instead of faulting it in again
        self.step_fn = step_fn
        self._flat: FlatTrees | None = None  # the buffers self owns and has not handed out
        self.params, self.state, self.opt_state = params, state, opt_state
        self.step_key, self.step, self.lr_scale = step_key, 0, 1.0

    # Reading the trees hands them out: they are never written in place afterwards.
    @property
    def params(self):
        self._flat = None
        return self._params

    @params.setter
    def params(self, value) -> None:
        self._flat, self._params = None, value

    @property
    def opt_state(self):
        self._flat = None
        return self._opt_state

    @opt_state.setter
    def opt_state(self, value) -> None:
        self._flat, self._opt_state = None, value

    def train_step(self, x, y) -> tuple[Any, Any]:
        """One step on the batch ``(x, y)``; returns ``(loss, outputs)``."""
        return self.run_batch((x, y))

    def run_batch(self, batch) -> tuple[Any, Any]:
        """One step on ``batch`` (whatever the step's objective takes); returns
        ``(loss, aux)``."""
        key = gdr.fold_in(self.step_key, self.step)
        step_fn = self.step_fn
        flat = None
        if isinstance(step_fn, TrainStep) and step_fn.donates():
            flat = self._flat or FlatTrees.adopt(step_fn.optimizer, self._params,
                                                 self._opt_state)
        if flat is None:
            r = step_fn(self._params, self.state, self._opt_state, key, batch,
                        lr_scale=self.lr_scale)
            self._params, self.state, self._opt_state = r.params, r.state, r.opt_state
            self._flat = None
            self.step += 1
            return r.loss, r.aux
        lent = _Lent(flat)
        token = _LENT.set(lent)
        try:
            r = step_fn(flat.params, self.state, flat.opt_state, key, batch,
                        lr_scale=self.lr_scale)
            self._params, self.state, self._opt_state = r.params, r.state, r.opt_state
            self._flat = lent.used  # None when the step ran pure
            self.step += 1
        except BaseException:
            lent.release(raise_held=False)
            raise
        finally:
            _LENT.reset(token)
        lent.release()
        return r.loss, r.aux


__all__ = ["StepResult", "TrainStep", "supervised_objective", "respect_frozen",
           "frozen_optimizer", "supervised_step", "run_keys", "StepRunner"]
