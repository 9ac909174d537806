"""The names ``fit`` and ``evaluate`` accept for a loss, a metric and an optimizer: gpudl's,
torch's and Keras', one table per kind (``LOSSES``, ``METRICS``, ``OPTIMIZERS``).

A name is looked up with case, ``_``, ``-`` and a trailing ``loss`` ignored, so Keras' class
names (``"SparseCategoricalCrossentropy"``, ``"Adam"``) and torch's (``"CrossEntropyLoss"``)
work as well as the snake_case names of the tables. An unknown name raises
:class:`~gpudl.errors.TrainingConfigError` with a "did you mean" and the list.

gpudl's models end in a ``Dense`` layer: they output logits, as torch's do. So every
cross-entropy over classes here takes logits, as torch's ``CrossEntropyLoss`` (Keras'
``from_logits=True``), Keras' names included: ``"sparse_categorical_crossentropy"`` is
``F.softmax_cross_entropy``. Those names check the first batch: outputs that are already
probabilities (a final ``Softmax`` layer, Keras' habit) raise, instead of training a
softmax of a softmax. ``"binary_crossentropy"`` is Keras' default and torch's
``binary_cross_entropy`` alike: probabilities (a final ``Sigmoid``); logits raise there,
and ``"bce_with_logits"`` is the stable form for logits.

Example:
    >>> import numpy as np
    >>> loss = resolve_loss("sparse_categorical_crossentropy")
    >>> round(float(loss(np.array([[2.0, 0.0]]), np.array([0]))), 4)
    0.1269
    >>> resolve_metric("acc").name, resolve_optimizer("adam") is not None
    ('acc', True)
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpudl import ops
from gpudl.autodiff import unbox_all
from gpudl.errors import ShapeError, TrainingConfigError
from gpudl.functional import losses as L
from gpudl.functional.activations import log_softmax
from gpudl.functional.cross_entropy import softmax_cross_entropy
from gpudl.train.metric_state import StreamingMetric, make_metric
from gpudl.tree import flatten_with_paths


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def _lookup(table: Mapping[str, Any], name: str) -> Any:
    """``table[name]`` by :func:`_key`, then without a trailing "loss" (``CrossEntropyLoss``)."""
    keys = {_key(k): v for k, v in table.items()}
    k = _key(name)
    if k in keys:
        return keys[k]
    return keys.get(k[:-4]) if k.endswith("loss") and len(k) > 4 else None


def unknown_name(who: str, kind: str, name: Any, known: list[str], fix: str) -> TrainingConfigError:
    """The error for a name not in a table: the closest names and all of them."""
    near = difflib.get_close_matches(_key(str(name)), [_key(k) for k in known], n=1, cutoff=0.6)
    near_name = next((k for k in known if near and _key(k) == near[0]), None)
    hint = f" (did you mean {near_name!r}?)" if near_name else ""
    return TrainingConfigError(f"{who}: unknown {kind} {name!r}{hint}; known names: "
                               f"{', '.join(known)}; or {fix}")


# ------------------------------------------------------------------------------ losses
def categorical_cross_entropy(logits, targets):
    """Cross-entropy of one-hot or probability ``targets`` under ``softmax(logits)``, mean over
    rows: ``-sum(t * log_softmax(z))``; the class axis is 1, as ``F.softmax_cross_entropy``'s.

    Example:
        >>> import numpy as np
        >>> round(float(categorical_cross_entropy(np.array([[2.0, 0.0]]), np.array([[1, 0]]))), 4)
        0.1269
    """
    z, t = unbox_all(logits), unbox_all(targets)
    if tuple(getattr(t, "shape", ())) != tuple(z.shape):
        raise ShapeError(
            f"loss 'categorical_crossentropy': targets must be one-hot rows or probabilities "
            f"shaped like the logits {tuple(z.shape)}, got shape "
            f"{tuple(getattr(t, 'shape', ()))}; for integer labels use "
            "loss='sparse_categorical_crossentropy'")
    axis = 1 if z.ndim > 1 else 0
    t = t.astype(z.dtype, copy=False)
    return -ops.mean(ops.sum(t * log_softmax(logits, axis=axis), axis=axis))


@dataclass(frozen=True)
class LossRow:
    """One row of ``LOSSES``: the function, what it takes, and the checks of the new names."""

    fn: Callable
    outputs: str
    targets: str
    logits_only: bool = False  # Keras names: refuse outputs that are probabilities
    labels_only: bool = False  # integer labels: refuse one-hot targets with a hint
    unit_axis: bool = False    # targets (N,) read as (N, 1) for outputs (N, 1), as Keras


_CE = LossRow(softmax_cross_entropy, "logits (N, C)", "integer labels (N,)")
_SPARSE = LossRow(softmax_cross_entropy, "logits (N, C)", "integer labels (N,)",
                  logits_only=True, labels_only=True)
_BCE = LossRow(L.binary_cross_entropy, "probabilities in [0, 1] (a final Sigmoid)",
               "0/1 (N,) or (N, 1)")
_BCE_LOGITS = LossRow(L.binary_cross_entropy_with_logits, "logits (N,) or (N, 1)",
                      "0/1 (N,) or (N, 1)")
_MSE = LossRow(L.mse_loss, "any shape", "the outputs' shape", unit_axis=True)
_MAE = LossRow(L.l1_loss, "any shape", "the outputs' shape", unit_axis=True)
_HUBER = LossRow(L.huber_loss, "any shape (delta 1)", "the outputs' shape", unit_axis=True)

# name -> row. gpudl's and torch's names, then Keras'.
LOSSES: dict[str, LossRow] = {
    "cross_entropy": _CE,
    "softmax_cross_entropy": _CE,
    "nll": LossRow(L.nll_loss, "log-probabilities (N, C) (a final LogSoftmax)",
                   "integer labels (N,)"),
    "bce_with_logits": _BCE_LOGITS,
    "binary_cross_entropy_with_logits": _BCE_LOGITS,
    "binary_cross_entropy": _BCE,
    "bce": _BCE,
    "mse": _MSE,
    "l1": _MAE,
    "huber": _HUBER,
    "sparse_categorical_crossentropy": _SPARSE,
    "categorical_crossentropy": LossRow(categorical_cross_entropy, "logits (N, C)",
                                        "one-hot or probabilities (N, C)", logits_only=True),
    "binary_crossentropy": _BCE,
    "mean_squared_error": _MSE,
    "mae": _MAE,
    "mean_absolute_error": _MAE,
}


def apply_tuple_error(who: str, outputs: Any, state_paths: list | None = None):
    """The error for ``outputs`` that are ``model.apply``'s whole ``(outputs, state)`` pair,
    else None. ``state_paths``: the model state's leaf paths, when a dict with those
    (and only such a dict) counts as the state; None: any dict does."""
    if not (isinstance(outputs, tuple | list) and len(outputs) == 2
            and isinstance(outputs[1], Mapping)):
        return None
    if state_paths is not None and [p for p, _ in flatten_with_paths(outputs[1])] != state_paths:
        return None
    return TrainingConfigError(
        f"{who}: the loss got model.apply's (outputs, state) tuple; take [0]: "
        "`out, state = model.apply(params, state, x)`, then loss(out, y)")


class NamedLoss:
    """A loss of ``LOSSES`` by its name: the function with the row's checks."""

    def __init__(self, name: str, row: LossRow):
        self.name, self.row, self.__name__ = name, row, name
        self._first = True

    def __repr__(self) -> str:
        return f"<loss {self.name!r}: {self.row.fn.__name__}>"

    def __call__(self, outputs, targets):
        error = apply_tuple_error(f"loss {self.name!r}", outputs)
        if error is not None:
            raise error
        row = self.row
        if row.labels_only:
            self._check_labels(outputs, targets)
        if row.logits_only and self._first:
            self._check_logits(outputs)
        self._first = False
        if row.unit_axis:
            z, t = unbox_all(outputs), unbox_all(targets)
            shape = tuple(getattr(z, "shape", ()))
            if shape[-1:] == (1,) and tuple(getattr(t, "shape", ())) == shape[:-1]:
                targets = t.reshape(shape)  # (N,) for (N, 1): Keras' rule, never (N, N)
        return row.fn(outputs, targets)

    def _check_labels(self, outputs, targets) -> None:
        z, t = unbox_all(outputs), unbox_all(targets)
        shape = tuple(getattr(z, "shape", ()))
        if len(shape) > 1 and tuple(getattr(t, "shape", ())) == shape:
            raise TrainingConfigError(
                f"loss {self.name!r}: the targets {shape} are shaped like the outputs (one-hot "
                "rows?), but this loss takes integer labels (N,); use "
                "loss='categorical_crossentropy' for one-hot targets, or y.argmax(1)")

    def _check_logits(self, outputs) -> None:
        """One host read, on the first batch: rows already summing to 1 are probabilities."""
        z = unbox_all(outputs)
        if getattr(z, "ndim", 0) < 2 or z.shape[1] < 2 or not z.size:
            return
        if float(z.min()) >= 0.0 and float(z.max()) <= 1.0 and \
                float(abs(z.sum(axis=1) - 1.0).max()) < 1e-3:
            raise TrainingConfigError(
                f"loss {self.name!r} takes logits (gpudl's cross-entropies apply the softmax "
                "themselves, as torch's CrossEntropyLoss; Keras' from_logits=True), but the "
                "model's outputs are already probabilities (each row in [0, 1], summing to "
                "1): remove the final Softmax layer; F.softmax(gd.predict(...), axis=1) gives "
                "the probabilities after training")


def resolve_loss(loss: str | Callable, who: str = "fit") -> Callable:
    """A loss function ``(outputs, targets) -> scalar`` from a name of ``LOSSES`` or a
    callable (returned as it is).

    Example:
        >>> resolve_loss("CrossEntropyLoss").row.targets
        'integer labels (N,)'
    """
    if callable(loss):
        return loss
    row = _lookup(LOSSES, loss) if isinstance(loss, str) else None
    if row is None:
        if not isinstance(loss, str):
            raise TrainingConfigError(
                f"{who}: loss must be a name (such as 'cross_entropy') or a function "
                f"(outputs, targets) -> scalar, got {type(loss).__name__}")
        raise unknown_name(who, "loss", loss, list(LOSSES),
                           "a function (outputs, targets) -> scalar")
    return NamedLoss(loss, row)


# ------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class MetricRow:
    """One row of ``METRICS``: the ``make_metric`` name, and whether targets are one-hot."""

    metric: str
    one_hot: bool = False


METRICS: dict[str, MetricRow] = {
    "accuracy": MetricRow("accuracy"),
    "acc": MetricRow("accuracy"),
    "sparse_categorical_accuracy": MetricRow("accuracy"),
    "binary_accuracy": MetricRow("accuracy"),
    "categorical_accuracy": MetricRow("accuracy", one_hot=True),
    "top5": MetricRow("top5"),
    "sparse_top_k_categorical_accuracy": MetricRow("top5"),
    "top_k_categorical_accuracy": MetricRow("top5", one_hot=True),
    "mse": MetricRow("mse"),
    "mean_squared_error": MetricRow("mse"),
    "rmse": MetricRow("rmse"),
    "root_mean_squared_error": MetricRow("rmse"),
    "mae": MetricRow("mae"),
    "mean_absolute_error": MetricRow("mae"),
    "r2": MetricRow("r2"),
    "r2_score": MetricRow("r2"),
    "precision": MetricRow("precision"),
    "recall": MetricRow("recall"),
    "f1": MetricRow("f1"),
    "f1_score": MetricRow("f1"),
}


class NamedMetric(StreamingMetric):
    """A metric of ``METRICS`` logged under the name it was asked by (``"acc"``); one-hot
    targets are turned into labels first where the row says so."""

    def __init__(self, inner: StreamingMetric, name: str, one_hot: bool = False):
        self.inner, self.name, self.one_hot = inner, name, one_hot

    acc = property(lambda self: self.inner.acc)
    count = property(lambda self: self.inner.count)

    def reset(self) -> None:
        self.inner.reset()

    def update(self, outputs, targets, batch_size: int) -> None:
        if self.one_hot:
            z, t = unbox_all(outputs), unbox_all(targets)
            if tuple(getattr(t, "shape", ())) != tuple(z.shape) or z.ndim < 2:
                raise ShapeError(
                    f"metric {self.name!r}: targets must be one-hot rows shaped like the "
                    f"outputs {tuple(z.shape)}, got {tuple(getattr(t, 'shape', ()))}; for "
                    "integer labels use the sparse_ name (or 'accuracy', 'top5')")
            targets = t.argmax(axis=1)
        self.inner.update(outputs, targets, batch_size)

    def result(self, acc):
        return self.inner.result(acc)

    def __copy__(self) -> NamedMetric:  # fresh copies (make_metric) get their own sums
        return NamedMetric(copy.copy(self.inner), self.name, self.one_hot)


def resolve_metric(metric: str | Callable, who: str = "fit") -> StreamingMetric:
    """A fresh streaming metric from a name of ``METRICS`` (or any ``topK``: ``top3``), a
    function ``(y_true, y_pred) -> scalar`` or a streaming metric; a name is logged as
    given (``"acc"`` logs ``acc`` and ``val_acc``, as Keras).

    Names sum sufficient statistics on the device and give the whole epoch's value;
    functions are averaged over batches, weighted by batch size.

    Example:
        >>> resolve_metric("top3").name, resolve_metric("sparse_categorical_accuracy").name
        ('top3', 'sparse_categorical_accuracy')
    """
    if not isinstance(metric, str):
        if not (callable(metric) or isinstance(metric, StreamingMetric)):
            raise TrainingConfigError(
                f"{who}: a metric must be a name (such as 'accuracy') or a function "
                f"(y_true, y_pred) -> scalar, got {type(metric).__name__}")
        return make_metric(metric)
    if re.fullmatch(r"top[1-9]\d*", metric):
        return make_metric(metric)
    row = _lookup(METRICS, metric)
    if row is None:
        raise unknown_name(who, "metric", metric, [*METRICS, "topK (top3, ...)"],
                           "a function (y_true, y_pred) -> scalar")
    inner = make_metric(row.metric)
    return inner if metric == row.metric else NamedMetric(inner, metric, row.one_hot)


# ------------------------------------------------------------------------------ optimizers
def _optim():
    from gpudl import optim

    return optim


# name -> the gpudl.optim function, called with these arguments (its defaults, torch's;
# optim.sgd has no default learning rate: torch's, 1e-3).
OPTIMIZERS: dict[str, tuple[str, dict]] = {
    "sgd": ("sgd", {"lr": 1e-3}),
    "adam": ("adam", {}),
    "adamw": ("adamw", {}),
    "rmsprop": ("rmsprop", {}),
    "adagrad": ("adagrad", {}),
    "adadelta": ("adadelta", {}),
    "adamax": ("adamax", {}),
}


def resolve_optimizer(optimizer: Any, who: str = "fit", label: str = "optimizer") -> Any:
    """An optimizer (``init``/``update``) from a name of ``OPTIMIZERS`` (``"adam"`` is
    ``optim.adam()``, its default learning rate 1e-3), an optimizer (returned as it is),
    or a dict of them (one per player); anything else raises before the first step.

    Example:
        >>> resolve_optimizer("SGD").init({}) is not None
        True
    """
    if isinstance(optimizer, Mapping):
        return {k: resolve_optimizer(v, who, f"{label}[{k!r}]") for k, v in optimizer.items()}
    if isinstance(optimizer, str):
        entry = _lookup(OPTIMIZERS, optimizer)
        if entry is None:
            raise unknown_name(who, label, optimizer, list(OPTIMIZERS),
                               "an optimizer such as gd.optim.adam(1e-3)")
        name, kwargs = entry
        return getattr(_optim(), name)(**kwargs)
    is_class = isinstance(optimizer, type)
    if not is_class and callable(getattr(optimizer, "init", None)) and \
            callable(getattr(optimizer, "update", None)):
        return optimizer
    name = getattr(optimizer, "__name__", type(optimizer).__name__)
    if is_class:
        fix = f"pass an instance: {name}(...)"
    elif callable(optimizer) and getattr(_optim(), name, None) is optimizer:
        fix = f"call it: optim.{name}(1e-3) (or optimizer={name!r})"
    elif type(optimizer).__module__.split(".")[0] == "torch":
        fix = "gpudl's optimizers are gd.optim's (torch's own cannot update NumPy/CuPy trees)"
    else:
        fix = "give one such as gd.optim.adam(1e-3), or a name such as 'adam'"
    kind = type(optimizer).__name__
    what = (f"the class {name}" if is_class else f"the function {name}"
            if callable(optimizer) else f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}")
    raise TrainingConfigError(
        f"{who}: {label} is {what}, not an optimizer (an object with init(params) and "
        f"update(grads, state, params)); {fix}")


__all__ = ["LOSSES", "METRICS", "OPTIMIZERS", "resolve_loss", "resolve_metric",
           "resolve_optimizer", "apply_tuple_error", "categorical_cross_entropy"]
