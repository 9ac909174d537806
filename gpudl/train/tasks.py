"""The two kinds of run ``fit`` knows: supervised (``loss(outputs, targets)`` on ``(x, y)``
batches) and custom (a ``loss_fn`` of the whole step, :mod:`gpudl.train.custom`).

A task makes the step, runs it on one batch and adds the batch to the epoch's logs,
evaluates the validation data, and names what it logs (for the callback checks). The
epoch loop (:mod:`gpudl.train.loop`) is the same for both.

Example:
    >>> task = SupervisedTask(None, "mse", ["mae"])
    >>> task.names(has_validation=True)
    ['loss', 'mae', 'val_loss', 'val_mae']
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gpudl import random as gdr
from gpudl.errors import TrainingConfigError
from gpudl.functional import losses as L
from gpudl.train.custom import (
    PlayerStep,
    custom_step,
    evaluate_custom,
    fresh_logs,
    init_opt_state,
    probe,
)
from gpudl.train.metric_state import MetricTracker, StreamingMetric
from gpudl.train.names import apply_tuple_error, resolve_loss, resolve_metric
from gpudl.train.oom import reraise_if_oom
from gpudl.train.step import supervised_step
from gpudl.tree import flatten_with_paths


def as_metric_list(metrics: Any, who: str = "fit") -> list:
    """``metrics="accuracy"`` (or one function) means one metric; None means none (as Keras).

    Example:
        >>> as_metric_list(None), as_metric_list("acc")
        ([], ['acc'])
    """
    if metrics is None:
        return []
    if isinstance(metrics, str) or callable(metrics) or isinstance(metrics, StreamingMetric):
        return [metrics]
    if not isinstance(metrics, Iterable) or isinstance(metrics, Mapping):
        raise TrainingConfigError(
            f"{who}: metrics must be a list of metric names or functions (y_true, y_pred) -> "
            f"scalar, or None, got {type(metrics).__name__}; write metrics=['accuracy']")
    return list(metrics)


def metric_tracker(metrics: Sequence[str | Callable] | str | None, loss: bool,
                   loss_fn: Callable | None = None, who: str = "fit") -> MetricTracker:
    tracker = MetricTracker([resolve_metric(m, who) for m in as_metric_list(metrics, who)],
                            loss=loss, who=who)
    threshold = binary_threshold(loss_fn)
    for metric in tracker.metrics:
        # A named binary loss says what one output column holds (logits or probabilities),
        # so accuracy thresholds there instead of guessing from the values.
        if threshold is not None and getattr(metric, "threshold", False) is None:
            metric.threshold = threshold
    return tracker


def binary_threshold(loss_fn: Callable | None) -> float | None:
    """0 for the named logits losses (``"bce_with_logits"``), 0.5 for the probability ones
    (``"bce"``), None for the rest (accuracy then reads scores by its documented rule).

    Example:
        >>> binary_threshold(resolve_loss("bce_with_logits")), binary_threshold(None)
        (0.0, None)
    """
    fn = getattr(getattr(loss_fn, "row", None), "fn", None)
    return {L.binary_cross_entropy_with_logits: 0.0, L.binary_cross_entropy: 0.5}.get(fn)


def init_input(batch: Any) -> Any:
    """What ``model.init`` gets from a custom step's batch: the batch itself (an array, a
    dict, a graph) or the first item of a tuple ``(x, y, ...)``."""
    return batch[0] if isinstance(batch, tuple | list) else batch


def init_trees(model, batches, init_key, params, state, device, custom: bool = False):
    """``params``/``state`` as given, or ``model.init`` on the first batch's ``x``: of the
    ``(x, y)`` pair of a supervised run, :func:`init_input` of a custom step's batch."""
    if params is None:
        if isinstance(model, Mapping) or not callable(getattr(model, "init", None)):
            raise TrainingConfigError(
                f"fit: params= is needed: the model ({type(model).__name__}) has no init "
                "that fit could call on the data (a dict of models, such as a GAN's "
                "generator and discriminator, needs its initial params, and state, given; or "
                "train one layer holding both, e.g. gpudl.models.gan.GAN)")
        # Same transform as training: a crop changes the input shape the model sees.
        first = batches.first(device)
        params, init_state = model.init(init_key, init_input(first) if custom else pair(first)[0])
        state = init_state if state is None else state
    if state is None and isinstance(model, Mapping):
        state = {k: {} for k in model}
    return params, {} if state is None else state


class SupervisedLoss:
    """A user's ``loss(outputs, targets)`` in a supervised run, refusing outputs that are
    ``model.apply``'s whole ``(outputs, state)`` pair (a dict shaped like the model state
    beside the outputs: a model whose apply returned another apply's tuple as its output)."""

    def __init__(self, fn: Callable, who: str = "fit", state: Any = None):
        self.fn, self.who = fn, who
        self.__name__ = getattr(fn, "__name__", "loss")
        self.watch(state)

    def watch(self, state: Any) -> None:
        """Take the model state whose structure marks a state in the outputs."""
        self.state_paths = [p for p, _ in flatten_with_paths({} if state is None else state)]

    def __call__(self, outputs, targets):
        if apply_tuple_error(self.who, outputs, self.state_paths) is not None:
            raise TrainingConfigError(
                f"{self.who}: the loss got model.apply's (outputs, state) tuple as the "
                "model's outputs: the model's apply returned another apply's pair whole; "
                "take [0] there (`out, state = inner.apply(...)`, return out, state)")
        return self.fn(outputs, targets)


def supervised_loss(loss: str | Callable, who: str = "fit", state: Any = None) -> Callable:
    """The loss of a supervised run: a named one (:func:`resolve_loss`, which checks its
    arguments itself) or the user's function in a :class:`SupervisedLoss`."""
    fn = resolve_loss(loss, who)
    return fn if isinstance(loss, str) else SupervisedLoss(fn, who, state)


def evaluate_supervised(model, params, state, batches, loss_fn, metrics,
                        comm=None, who: str = "fit") -> dict[str, float]:
    """Loss and metrics of ``model`` (eval mode) over ``batches`` of ``(x, y)`` (with
    ``comm``: over every rank's shard of them together); ``who`` names the function called
    (``"evaluate"``, or ``"fit"`` for its validation data) in the errors."""
    tracker = metric_tracker(metrics, loss=loss_fn is not None, loss_fn=loss_fn, who=who)
    with batches.known_labels():
        for batch in batches:
            x, y = pair(batch, "evaluate", "the data")
            try:
                out, _ = model.apply(params, state, x, train=False)
            except Exception as exc:
                reraise_if_oom(exc, batches.batch_size, where="evaluate")
                raise
            # sums kept on the device until the end: no host sync per batch
            tracker.update(out, y, batches.rows(batch),
                           loss=loss_fn(out, y) if loss_fn is not None else None)
    return tracker.read() if comm is None else tracker.read(comm)


def pair(batch: Any, who: str = "fit", what: str = "the data") -> tuple[Any, Any]:
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    got = (f"a {type(batch).__name__} of {len(batch)} items"
           if isinstance(batch, tuple | list | dict) else f"a {type(batch).__name__}")
    fix = ("pass validation_data=(x_val, y_val)" if what == "validation_data" else
           "train on other batches (x alone, dicts, graphs) with loss_fn=... (see "
           "gpudl.train.custom)")
    raise TrainingConfigError(
        f"{who}(loss=...): a loss(outputs, targets) needs (x, y) batches, but {what} gives "
        f"{got}; {fix}")


class SupervisedTask:
    """``model.apply`` then ``loss(outputs, targets)`` on ``(x, y)`` batches."""

    def __init__(self, model, loss, metrics):
        self.model, self.loss_fn, self.metrics = model, supervised_loss(loss), metrics
        self.tracker = metric_tracker(metrics, loss=True, loss_fn=self.loss_fn)

    def names(self, has_validation: bool) -> list[str]:
        names = [m.name for m in self.tracker.metrics]
        return names + [f"val_{n}" for n in names] if has_validation else names

    def make_step(self, params, optimizer):
        return supervised_step(self.model, self.loss_fn, optimizer, params)

    def start(self, trainer, batches, val_batches, device) -> None:
        self.trainer, self.device = trainer, device
        pair(batches.first(device))
        if val_batches is not None:
            pair(val_batches.first(device), "fit", "validation_data")
        if isinstance(self.loss_fn, SupervisedLoss):
            self.loss_fn.watch(trainer.state)

    def step(self, batch, rows: int):
        x, y = pair(batch)
        loss, out = self.trainer.train_step(x, y)
        self.tracker.update(out, y, rows, loss=loss)
        return loss, loss

    def validate(self, val_batches, comm=None) -> dict[str, float]:
        t = self.trainer
        return evaluate_supervised(t.model, t.params, t.state, val_batches, self.loss_fn,
                                   self.metrics, comm)

    def labels(self, batches):
        return batches.known_labels()


class CustomTask:
    """A ``loss_fn`` of the whole step (one function, or one per player)."""

    def __init__(self, model, loss_fn, metrics):
        self.model, self.loss_fn = model, loss_fn
        self.metrics = [resolve_metric(m) for m in as_metric_list(metrics)]

    def make_step(self, params, optimizer):
        return custom_step(self.model, self.loss_fn, optimizer, params)

    def start(self, trainer, batches, val_batches, device) -> None:
        """Check every loss on the first batch (before the first step) and set up the logs."""
        self.trainer = trainer
        step = trainer.step_fn
        self.multi = isinstance(step, PlayerStep)
        self.tracker = probe(step.loss_fns, self.multi, trainer.params, trainer.state,
                             batches.first(device), gdr.fold_in(trainer.step_key, trainer.step),
                             self.metrics)
        self.val_logs = fresh_logs(self.tracker) if val_batches is not None else None
        # the same key every epoch: validation values move with the params only
        self.val_key = gdr.fold_in(trainer.key, 1)

    def names(self, has_validation: bool) -> list[str]:
        names = [m.name for m in self.tracker.metrics]
        return names + [f"val_{n}" for n in names] if has_validation else names

    def step(self, batch, rows: int):
        """One step; ``(the loss the NaN watch checks, the loss callbacks see)``."""
        loss, aux = self.trainer.run_batch(batch)
        if not self.multi:
            self.tracker.add({None: loss}, {None: aux}, rows)
            return loss, loss
        self.tracker.add(loss, aux, rows)
        # non-finite if any player's is
        return functools.reduce(operator.add, loss.values()), loss

    def validate(self, val_batches, comm=None) -> dict[str, float]:
        t = self.trainer
        return evaluate_custom(t.step_fn.loss_fns, self.multi, t.params, t.state, val_batches,
                               self.val_logs, self.val_key, comm)

    def labels(self, batches):
        # Nothing says which leaves of a custom batch are labels: every check runs.
        return contextlib.nullcontext()


def make_task(model, loss, loss_fn, metrics):
    """The task of a ``fit`` call (exactly one of ``loss``/``loss_fn``)."""
    if (loss is None) == (loss_fn is None):
        raise TrainingConfigError(
            "fit: give exactly one of loss= (a loss(outputs, targets) on (x, y) batches) and "
            "loss_fn= (a function (params, state, batch, key) of the whole step), got "
            + ("both" if loss is not None else "neither"))
    return SupervisedTask(model, loss, metrics) if loss_fn is None else \
        CustomTask(model, loss_fn, metrics)


__all__ = ["SupervisedTask", "CustomTask", "make_task", "init_trees", "init_opt_state",
           "resolve_loss", "resolve_metric", "supervised_loss"]
