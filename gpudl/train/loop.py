"""``fit`` / ``evaluate`` / ``predict``: the training loop over init/apply models.

Everything is explicit: parameters, state and optimizer state are trees that ``fit``
returns in the History; the RNG key of step ``s`` is ``fold_in(key, s)``, and shuffling
folds in the epoch, so a resumed run reproduces an uninterrupted one exactly. A step
that raises leaves the previous parameters untouched (nothing is updated in place). The
step itself is :mod:`gpudl.train.step`'s, shared with ``gpudl bench`` and the recipes.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn, optim
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = (x.sum(1) > 0).astype("int64")
    >>> h = gd.fit(nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(2)]), (x, y),
    ...            loss="cross_entropy", optimizer=optim.adam(1e-2), epochs=2, verbose=0)
    >>> len(h.history["loss"])
    2
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.backend import get_device, synchronize, to_numpy
from gpudl.data.loader import ArrayDataset, DataLoader
from gpudl.functional.labels import host_label_bounds, labels_within
from gpudl.train.callbacks import Callback
from gpudl.train.checkpoint import load_checkpoint, save_checkpoint
from gpudl.train.history import History
from gpudl.train.metric_state import MetricTracker, StreamingMetric, make_metric
from gpudl.train.oom import reraise_if_oom
from gpudl.train.progress import Progress
from gpudl.train.step import StepRunner, TrainStep, run_keys, supervised_objective, supervised_step

# loss name -> its function in gpudl.functional
_LOSSES = {
    "cross_entropy": "softmax_cross_entropy",
    "softmax_cross_entropy": "softmax_cross_entropy",
    "mse": "mse_loss",
    "l1": "l1_loss",
    "huber": "huber_loss",
    "bce_with_logits": "binary_cross_entropy_with_logits",
    "binary_cross_entropy": "binary_cross_entropy",
}


def resolve_loss(loss: str | Callable) -> Callable:
    """A loss function ``(outputs, targets) -> scalar`` from a name or a callable."""
    if callable(loss):
        return loss
    if loss not in _LOSSES:
        raise ValueError(f"fit: unknown loss {loss!r}; expected one of {sorted(_LOSSES)} or a "
                         "function (outputs, targets) -> scalar")
    from gpudl import functional as F

    return getattr(F, _LOSSES[loss])


def resolve_metric(metric: str | Callable) -> StreamingMetric:
    """A fresh streaming metric from a name or a function ``(y_true, y_pred) -> scalar``.

    Names: ``accuracy``, ``topK`` (``top5``...), ``mse``, ``rmse``, ``mae``, ``r2``,
    ``precision``, ``recall``, ``f1`` (macro). Named metrics sum sufficient statistics on
    the device and give the whole epoch's value; functions are averaged over batches,
    weighted by batch size.

    Example:
        >>> resolve_metric("top3").name
        'top3'
    """
    return make_metric(metric)


def _metric_tracker(metrics: Sequence[str | Callable] | str, loss: bool) -> MetricTracker:
    if isinstance(metrics, str) or callable(metrics):  # metrics="accuracy" means one metric
        metrics = [metrics]
    return MetricTracker([resolve_metric(m) for m in metrics], loss=loss)


# The progress bar's figures are refreshed every this many steps (each read is a host sync).
_PROGRESS_EVERY = 20


def _loader(data: Any, batch_size: int, shuffle: bool, key, device: str | None) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, key=key, device=device)


def _known_labels(loader: DataLoader):
    """Context in which label checks trust the bounds of the loader's host labels.

    Every batch's targets are rows of ``dataset[1]`` when the loader has no transform, so
    one min/max on the host stands for the per-step device check of integer labels (which
    would cost a device-to-host sync every GPU step).
    """
    ds = loader.dataset
    plain = loader.transform is None and isinstance(ds, ArrayDataset) and len(ds.arrays) == 2
    return labels_within(host_label_bounds(ds.arrays[1]) if plain else None)


class Trainer(StepRunner):
    """The state of one ``fit`` run (what callbacks see and may change).

    ``key`` is the run's root key (saved in checkpoints); step ``s`` uses
    ``fold_in(step_key, s)`` where ``step_key`` is derived from it. ``train_step(x, y)`` is
    :meth:`StepRunner.train_step` over ``train_step_fn`` (by default
    :func:`~gpudl.train.step.supervised_step`'s step), the one ``gpudl bench`` times.
    """

    def __init__(self, model, loss_fn, optimizer, params, state, opt_state, key, config,
                 step_key=None, train_step_fn: TrainStep | None = None):
        if train_step_fn is None:
            train_step_fn = TrainStep(supervised_objective(model, loss_fn), optimizer)
        super().__init__(train_step_fn, params, state, opt_state,
                         key if step_key is None else step_key)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.key, self.config = key, config
        self.epoch, self.stop = 0, False
        self.history = History()

    def save_checkpoint(self, path: str, epoch: int | None = None) -> None:
        save_checkpoint(path, params=self.params, state=self.state, opt_state=self.opt_state,
                        epoch=self.epoch if epoch is None else epoch, step=self.step,
                        key=self.key, config={**self.config, "lr_scale": self.lr_scale})


def fit(model, train_data, loss: str | Callable, optimizer, epochs: int = 1, *,
        validation_data: Any = None, metrics: Sequence[str | Callable] = (),
        callbacks: Sequence[Callback] = (), key=None, params=None, state=None,
        batch_size: int = 32, shuffle: bool = True, verbose: int = 1,
        resume_from: str | None = None, device: str | None = None) -> History:
    """Train ``model`` and return a :class:`History` holding metrics and the trained trees.

    ``train_data``/``validation_data``: a DataLoader or a tuple ``(x, y)`` of arrays.
    ``metrics``: names (see :func:`resolve_metric`) or functions ``(y_true, y_pred) ->
    scalar``; they are summed on the device and read once per epoch (and per progress-bar
    refresh), so a GPU run never waits for the host between steps.
    ``params``/``state`` default to ``model.init`` on the first batch. ``resume_from`` loads
    a checkpoint written by ModelCheckpoint and continues from the epoch after it, with
    the checkpoint's RNG key (so shuffling and dropout continue exactly as in an
    uninterrupted run) and learning-rate scale.
    """
    resumed = None
    if resume_from is not None:  # the saved key decides the data order and dropout masks
        resumed = load_checkpoint(resume_from, params_like=None)
        if resumed["key"] is not None:
            key = resumed["key"]
    key = gdr.key(0) if key is None else key
    init_key, data_key, step_key = run_keys(key)
    loader = _loader(train_data, batch_size, shuffle, data_key, device)
    loss_fn = resolve_loss(loss)
    tracker = _metric_tracker(metrics, loss=True)
    if params is None:
        if len(loader.dataset) == 0:
            raise ValueError("fit: the training data is empty")
        # Same transform as training: a crop changes the input shape the model sees.
        x0 = next(iter(DataLoader(loader.dataset, batch_size=min(2, len(loader.dataset)),
                                  device=device or get_device(), prefetch=0,
                                  transform=loader.transform)))[0]
        params, init_state = model.init(init_key, x0)
        state = init_state if state is None else state
    state = {} if state is None else state
    step_fn = supervised_step(model, loss_fn, optimizer, params)
    opt_state = step_fn.optimizer.init(params)
    config = {"epochs": epochs, "batch_size": loader.batch_size, "device": device or get_device()}
    trainer = Trainer(model, loss_fn, step_fn.optimizer, params, state, opt_state, key, config,
                      step_key=step_key, train_step_fn=step_fn)
    start_epoch = 0
    if resume_from is not None:
        ck = load_checkpoint(resume_from, params_like=params, state_like=state,
                             opt_state_like=opt_state, device=device)
        trainer.params, trainer.state = ck["params"], ck["state"]
        trainer.opt_state, trainer.step, start_epoch = ck["opt_state"], ck["step"], ck["epoch"] + 1
        trainer.lr_scale = float(ck["config"].get("lr_scale", 1.0))
    loader.epoch = start_epoch
    for cb in callbacks:
        cb.on_train_begin(trainer)
    for epoch in range(start_epoch, epochs):
        trainer.epoch = epoch
        t0 = time.perf_counter()
        progress = Progress(epoch + 1, epochs, len(loader), verbose)
        # Loss and metric sums stay on the device: a float() per step would be a host sync
        # per step on the GPU. They are read when the bar is redrawn and once per epoch.
        tracker.reset()
        with _known_labels(loader):
            for i, (x, y) in enumerate(loader):
                try:
                    loss_value, out = trainer.train_step(x, y)
                except Exception as exc:
                    reraise_if_oom(exc, loader.batch_size)
                    raise
                tracker.update(out, y, int(x.shape[0]), loss=loss_value)
                show = progress.shows_logs and (i % _PROGRESS_EVERY == 0 or i + 1 == len(loader))
                progress.update(tracker.read() if show else None)
        logs = tracker.read()
        if validation_data is not None:
            val = evaluate(model, trainer.params, trainer.state, validation_data, loss=loss_fn,
                           metrics=metrics, batch_size=loader.batch_size, device=device)
            logs.update({f"val_{k}": v for k, v in val.items()})
        synchronize()
        seconds = time.perf_counter() - t0
        for cb in callbacks:
            cb.on_epoch_end(trainer, epoch, logs)
        trainer.history.append(logs, seconds)
        progress.close(logs, seconds)
        if trainer.stop:
            trainer.history.stopped_early = True
            break
    for cb in callbacks:
        cb.on_train_end(trainer)
    h = trainer.history
    h.params, h.state, h.opt_state = trainer.params, trainer.state, trainer.opt_state
    return h


def evaluate(model, params, state, data, loss: str | Callable | None = None,
             metrics: Sequence[str | Callable] = (), batch_size: int = 256,
             device: str | None = None) -> dict[str, float]:
    """Loss and metrics over ``data`` in eval mode (``train=False``), as Python floats.

    The loss is the batch-size-weighted mean of the per-batch losses; named metrics are
    those of all of ``data`` at once. Everything is summed on the device and copied to
    the host once, at the end.
    """
    loader = _loader(data, batch_size, False, None, device)
    loss_fn = resolve_loss(loss) if loss is not None else None
    tracker = _metric_tracker(metrics, loss=loss_fn is not None)
    with _known_labels(loader):
        for x, y in loader:
            try:
                out, _ = model.apply(params, state, x, train=False)
            except Exception as exc:
                reraise_if_oom(exc, loader.batch_size, where="evaluate")
                raise
            # sums kept on the device until the end: no host sync per batch
            tracker.update(out, y, int(x.shape[0]),
                           loss=loss_fn(out, y) if loss_fn is not None else None)
    return tracker.read()


def predict(model, params, state, x, batch_size: int = 256, device: str | None = None):
    """Model outputs for ``x`` in eval mode, batch by batch, concatenated (NumPy)."""
    loader = DataLoader((to_numpy(x),), batch_size=batch_size, device=device, prefetch=0)
    outs = [to_numpy(model.apply(params, state, xb, train=False)[0]) for (xb,) in loader]
    return np.concatenate(outs, axis=0)
