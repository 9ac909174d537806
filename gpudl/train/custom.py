"""Custom training steps: ``gd.fit(..., loss_fn=...)`` for losses that are not
``loss(outputs, targets)``: a VAE's (it needs a key), a masked GCN's, seq2seq with teacher
forcing, and GANs (two players, two optimizers).

The hook is one function of the whole step::

    loss_fn(params, state, batch, key) -> loss
    loss_fn(params, state, batch, key) -> (loss, (new_state, aux))

``params`` is differentiated; ``state`` is the model state (BatchNorm statistics; return
it, or what ``model.apply`` returned, as ``new_state``); ``batch`` is what the data
yields (see :mod:`gpudl.train.batches`: ``x`` for one array, ``(x, y)``, a dict, a
:class:`~gpudl.train.batches.FullBatch` graph); ``key`` is the step's key
(``fold_in(step_key, step)``, so a resumed run draws the same noise). ``aux`` is None or
a dict: its scalar entries are logged each epoch by name (batch-size-weighted means, like
the loss), and ``aux["y_true"]``/``aux["y_pred"]`` feed ``metrics=``. A ``loss_fn`` with a
keyword argument ``train`` is called with ``train=True`` in the steps and ``train=False``
when ``fit`` evaluates ``validation_data`` (switch dropout off there); validation batch
``i`` gets the key ``fold_in(fold_in(key, 1), i)`` of the run's ``key``, the same every
epoch (validation values move with the params only).

Several players (a GAN) are a dict of such functions with a dict of optimizers under the
same keys, which name the top-level entries of ``params``: one :class:`PlayerStep` runs
them in the dict's order, each player's loss differentiated with respect to its own
``params[name]`` only, on the params the players before it have just updated. The
return form is checked on the first batch before the first step
(:class:`~gpudl.errors.LossFunctionError`).

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> def loss_fn(params, state, batch, key):
    ...     err = ((params["w"] - batch) ** 2).mean()
    ...     return err, (state, {"err": err})
    >>> step = LossStep(LossFn(loss_fn), optim.sgd(0.5))
    >>> p = {"w": np.zeros(2)}
    >>> r = step(p, {}, step.optimizer.init(p), None, np.array([1.0, 3.0]))
    >>> float(r.loss), r.params["w"].tolist(), float(r.aux["err"])
    (5.0, [0.5, 1.5], 5.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.errors import LossFunctionError, TrainingConfigError
from gpudl.train.metric_state import BatchMean, MetricTracker, make_metric
from gpudl.train.step import StepResult, TrainStep, frozen_optimizer, respect_frozen
from gpudl.tree import flatten_with_paths, tree_map

_FORM = ("the scalar loss, or (loss, (new_state, aux)) with new_state the model state (the "
         "state it was given, or the one model.apply returned) and aux None or a dict (its "
         "scalar entries are logged, y_true/y_pred feed metrics=)")


def _takes_train(fn: Callable) -> bool:
    try:
        return "train" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _is_scalar(value: Any) -> bool:
    raw = unbox_all(value)
    if isinstance(raw, bool):
        return False
    if isinstance(raw, int | float):
        return True
    shape = getattr(raw, "shape", None)
    return shape is not None and int(getattr(raw, "size", 2)) == 1


def _shapes(tree: Any) -> dict[str, tuple]:
    return {p: tuple(getattr(leaf, "shape", ())) for p, leaf in flatten_with_paths(tree)}


class LossFn:
    """A user's ``loss_fn`` with its return form checked: calling it gives
    ``(loss, new_state, aux)`` (a scalar return: the state unchanged, no aux)."""

    def __init__(self, fn: Callable, who: str = "loss_fn"):
        if not callable(fn):
            raise TrainingConfigError(
                f"fit: {who} must be a function (params, state, batch, key) -> loss or "
                f"(loss, (new_state, aux)), got {type(fn).__name__}")
        self.fn, self.who, self.takes_train = fn, who, _takes_train(fn)

    def __call__(self, params, state, batch, key, train: bool = True):
        out = (self.fn(params, state, batch, key, train=train) if self.takes_train
               else self.fn(params, state, batch, key))
        if isinstance(out, tuple | list):
            if len(out) != 2 or not isinstance(out[1], tuple | list) or len(out[1]) != 2:
                raise self._form_error(out)
            loss, (new_state, aux) = out
        else:
            loss, new_state, aux = out, state, None
        if not _is_scalar(loss):
            shape = getattr(unbox_all(loss), "shape", None)
            got = f"a loss of shape {tuple(shape)}" if shape is not None else \
                f"a {type(unbox_all(loss)).__name__} as the loss"
            raise LossFunctionError(
                f"fit: {self.who} returned {got}; the loss must be a scalar (size-1 array): "
                "reduce it with .mean() or .sum()")
        return loss, new_state, aux

    def _form_error(self, out) -> LossFunctionError:
        got = f"a {type(out).__name__} of length {len(out)}"
        hint = ""
        if len(out) == 2 and isinstance(out[1], tuple | list):
            got = f"(loss, a {type(out[1]).__name__} of length {len(out[1])})"
        elif len(out) == 2:
            got = f"(loss, {type(out[1]).__name__})"
            hint = ("; a (loss, aux) pair reads as a loss with no state: write "
                    "`return loss, (state, aux)`")
        return LossFunctionError(f"fit: {self.who} returned {got}; it must return {_FORM}{hint}")

    def check(self, state, new_state, aux, metrics: bool) -> None:
        """The checks of the first batch: the new state has the state's structure, and
        ``aux`` holds ``y_true``/``y_pred`` when ``metrics`` are asked for."""
        if (new_state is None) != (state is None) or _shapes(new_state) != _shapes(state):
            raise LossFunctionError(
                f"fit: {self.who} returned a new state whose structure differs from the state "
                f"it was given (leaves {sorted(_shapes(state))[:6]}, returned "
                f"{sorted(_shapes(new_state))[:6]}); the order is (loss, (new_state, aux)): "
                "return the state you were given when the model has none")
        if metrics and not (isinstance(aux, Mapping) and {"y_true", "y_pred"} <= set(aux)):
            got = (f"a dict with {sorted(aux)}" if isinstance(aux, Mapping)
                   else f"a {type(aux).__name__}")
            raise LossFunctionError(
                f"fit: metrics= needs {self.who} to return aux as a dict with 'y_true' and "
                f"'y_pred' (the targets and the model's predictions the metrics compare), got "
                f"{got}")


def logged_aux(aux: Any) -> list[str]:
    """The names of the entries of ``aux`` that ``fit`` logs (its scalars)."""
    if not isinstance(aux, Mapping):
        return []
    return [k for k, v in aux.items() if k not in ("y_true", "y_pred") and _is_scalar(v)]


def custom_objective(loss_fn: LossFn):
    """The :class:`TrainStep` objective ``(params, state, key, batch) -> (loss, (aux,
    new_state))`` of a checked ``loss_fn``."""

    def objective(params, state, key, batch):
        loss, new_state, aux = loss_fn(params, state, batch, key, train=True)
        return loss, (aux, new_state)

    return objective


class LossStep(TrainStep):
    """The :class:`TrainStep` of one custom ``loss_fn`` (``loss_fns``: ``{None: it}``)."""

    def __init__(self, loss_fn: LossFn, optimizer) -> None:
        self.loss_fns = {None: loss_fn}
        super().__init__(custom_objective(loss_fn), optimizer)


class PlayerStep:
    """``step(params, state, opt_state, key, batch, *, lr_scale=1.0) -> StepResult`` for
    several players (a GAN's generator and discriminator), as :class:`TrainStep` for one.

    ``params`` and ``opt_state`` are dicts keyed by player (``opt_state`` has the
    players only); ``state`` is passed whole to every loss. Players step in the order of
    ``loss_fns``: player ``j`` (named ``k``) takes the gradient of ``loss_fns[k](params,
    state, batch, fold_in(key, j))`` with respect to ``params[k]`` alone (the others are
    data), updates it with ``optimizers[k]``, and hands the new params and state on.
    ``loss``/``aux`` of the result are dicts keyed by player.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> from gpudl import optim
        >>> pull = lambda p, s, b, k: ((p["a"] - p["b"]) ** 2).sum()
        >>> step = PlayerStep({"a": pull}, {"a": optim.sgd(0.25)})
        >>> p = {"a": np.array([2.0]), "b": np.array([0.0])}
        >>> r = step(p, {}, step.init(p), gd.random.key(0), None)
        >>> r.params["a"].tolist(), r.params["b"].tolist(), float(r.loss["a"])
        ([1.0], [0.0], 4.0)
    """

    def __init__(self, loss_fns: Mapping[str, Callable], optimizers: Mapping[str, Any]):
        if set(loss_fns) != set(optimizers):
            raise TrainingConfigError(
                f"fit: loss_fn and optimizer must name the same players, got loss_fn "
                f"{list(loss_fns)} and optimizer {list(optimizers)}")
        self.loss_fns = {k: fn if isinstance(fn, LossFn) else LossFn(fn, f"loss_fn[{k!r}]")
                         for k, fn in loss_fns.items()}
        self.optimizer = {k: optimizers[k] for k in self.loss_fns}
        self.steps = {k: TrainStep(self._objective(k), self.optimizer[k]) for k in self.loss_fns}

    def _objective(self, name: str):
        loss_fn = self.loss_fns[name]

        def objective(own, state, key, batch_and_params):
            batch, params = batch_and_params
            loss, new_state, aux = loss_fn({**params, name: own}, state, batch, key)
            return loss, (aux, new_state)

        return objective

    def init(self, params) -> dict:
        """The players' optimizer states: ``{name: optimizer.init(params[name])}``."""
        return {k: opt.init(params[k]) for k, opt in self.optimizer.items()}

    def __call__(self, params, state, opt_state, key, batch, *,
                 lr_scale: float = 1.0) -> StepResult:
        params, opt_state = dict(params), dict(opt_state)
        losses, auxes = {}, {}
        for j, (name, step) in enumerate(self.steps.items()):
            r = step(params[name], state, opt_state[name], gdr.fold_in(key, j), (batch, params),
                     lr_scale=lr_scale)
            params[name], state, opt_state[name] = r.params, r.state, r.opt_state
            losses[name], auxes[name] = r.loss, r.aux
        return StepResult(params, state, opt_state, losses, auxes)


def _trainable(model, params, name: str):
    if isinstance(model, Mapping):
        mask_fn = getattr(model.get(name), "trainable_mask", None)
        return mask_fn(params[name]) if mask_fn is not None else tree_map(lambda _: True,
                                                                            params[name])
    mask_fn = getattr(model, "trainable_mask", None)
    mask = mask_fn(params) if mask_fn is not None else None
    if not isinstance(mask, Mapping) or name not in mask:
        return tree_map(lambda _: True, params[name])
    return mask[name]


def custom_step(model, loss_fn, optimizer, params):
    """The step ``fit(loss_fn=...)`` runs: a :class:`TrainStep` over one function, or a
    :class:`PlayerStep` over a dict of them; frozen leaves (``model.trainable_mask``) get
    no update."""
    if not isinstance(loss_fn, Mapping):
        if isinstance(optimizer, Mapping):
            raise TrainingConfigError(
                "fit: optimizer is a dict (one per player) but loss_fn is one function; give "
                "loss_fn as a dict with the same keys, {name: loss_fn}")
        return LossStep(LossFn(loss_fn), respect_frozen(model, params, optimizer))
    if not isinstance(optimizer, Mapping):
        raise TrainingConfigError(
            f"fit: loss_fn is a dict of players {list(loss_fn)}; optimizer must be a dict "
            "with the same keys, one optimizer per player")
    if set(loss_fn) != set(optimizer):
        raise TrainingConfigError(
            f"fit: loss_fn and optimizer must name the same players, got loss_fn "
            f"{list(loss_fn)} and optimizer {list(optimizer)}")
    missing = [k for k in loss_fn if not isinstance(params, Mapping) or k not in params]
    if missing:
        have = list(params) if isinstance(params, Mapping) else type(params).__name__
        raise TrainingConfigError(
            f"fit: the players {missing} of loss_fn are not entries of params ({have}); each "
            "player trains params[name]")
    if not loss_fn:
        raise TrainingConfigError("fit: loss_fn is an empty dict; give one loss per player")
    return PlayerStep(loss_fn, {k: frozen_optimizer(_trainable(model, params, k), optimizer[k])
                                for k in loss_fn})


def init_opt_state(step, params):
    """The optimizer state of ``step`` (a TrainStep or a PlayerStep) at ``params``."""
    return step.init(params) if isinstance(step, PlayerStep) else step.optimizer.init(params)


class StepLogs(MetricTracker):
    """The logs of one pass of a custom-step run: each player's loss (``loss``, or
    ``<player>_loss``), the scalar entries of ``aux`` by name, and ``metrics`` on
    ``aux["y_true"]``/``aux["y_pred"]``; summed on the device, read in one transfer."""

    def __init__(self, loss_names: dict, aux_names: list[tuple[Any, str]], metrics: Sequence,
                 metric_player: Any = None):
        self.loss_means = {p: BatchMean(n) for p, n in loss_names.items()}
        self.aux_means = [(p, k, BatchMean(k)) for p, k in aux_names]
        self.scored, self.metric_player = list(metrics), metric_player
        super().__init__([*self.loss_means.values(), *(m for *_, m in self.aux_means),
                          *self.scored])

    def add(self, losses: dict, auxes: dict, rows: int) -> None:
        for p, mean in self.loss_means.items():
            mean.add(losses[p], rows)
        for p, k, mean in self.aux_means:
            aux = auxes[p]
            if not isinstance(aux, Mapping) or k not in aux:
                raise LossFunctionError(
                    f"fit: the aux of {'loss_fn' if p is None else f'loss_fn[{p!r}]'} held "
                    f"{k!r} on the first batch but not now; return the same entries every step")
            mean.add(aux[k], rows)
        if self.scored:
            aux = auxes[self.metric_player]
            for m in self.scored:
                m.update(unbox_all(aux["y_pred"]), aux["y_true"], rows)


def probe(fns: Mapping, multi: bool, params, state, batch, key, metrics: Sequence) -> StepLogs:
    """Call every loss of ``fns`` (``step.loss_fns``) once on ``batch`` (no gradient, no
    update) to check its return form and learn the names it logs; returns a fresh
    :class:`StepLogs` for them."""
    loss_names = {p: "loss" if p is None else f"{p}_loss" for p in fns}
    aux_names, metric_player = [], None
    for j, (p, fn) in enumerate(fns.items()):
        loss, new_state, aux = fn(params, state, batch, gdr.fold_in(key, j) if multi else key)
        fn.check(state, new_state, aux, metrics=bool(metrics) and not multi)
        if metric_player is None and isinstance(aux, Mapping) and {"y_true", "y_pred"} <= set(aux):
            metric_player = p
        aux_names += [(p, k) for k in logged_aux(aux)]
        state = new_state
    if metrics and multi and metric_player is None:
        raise LossFunctionError(
            "fit: metrics= needs one of the players' loss_fn to return aux as a dict with "
            "'y_true' and 'y_pred'; none does")
    scored = [make_metric(m) for m in metrics]
    names = [*loss_names.values(), *(k for _, k in aux_names), *(m.name for m in scored)]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise LossFunctionError(
            f"fit: the logged names {clash} appear more than once ({names}); rename the aux "
            "entries (each player's loss is logged as <player>_loss, one function's as loss)")
    return StepLogs(loss_names, aux_names, scored, metric_player)


def fresh_logs(logs: StepLogs) -> StepLogs:
    """A second :class:`StepLogs` with the same names (for the validation pass)."""
    return StepLogs({p: m.name for p, m in logs.loss_means.items()},
                    [(p, k) for p, k, _ in logs.aux_means],
                    [make_metric(m) for m in logs.scored], logs.metric_player)


def evaluate_custom(fns: Mapping, multi: bool, params, state, batches, logs: StepLogs,
                    key, comm=None) -> dict[str, float]:
    """Every loss of ``fns`` on every batch of ``batches`` with ``train=False`` (no
    update; batch ``i`` keyed ``fold_in(key, i)``): ``{name: value}`` (with ``comm``: of
    every rank's shard together)."""
    logs.reset()
    for i, batch in enumerate(batches):
        k = gdr.fold_in(key, i)
        losses, auxes = {}, {}
        for j, (p, fn) in enumerate(fns.items()):
            loss, _, aux = fn(params, state, batch, gdr.fold_in(k, j) if multi else k,
                              train=False)
            losses[p], auxes[p] = loss, aux
        logs.add(losses, auxes, batches.rows(batch))
    return logs.read() if comm is None else logs.read(comm)


def loss_fns(loss_fn) -> tuple[dict, bool]:
    """``({player: LossFn}, multi)`` for ``loss_fn`` (one function: the player None)."""
    if isinstance(loss_fn, Mapping):
        return {k: LossFn(f, f"loss_fn[{k!r}]") for k, f in loss_fn.items()}, True
    return {None: LossFn(loss_fn)}, False


__all__ = ["LossFn", "LossStep", "PlayerStep", "custom_step"]
