"""``fit`` / ``evaluate`` / ``predict``: the training loop over init/apply models.

Everything is explicit: parameters, state and optimizer state are trees that ``fit``
returns in the History; the RNG key of step ``s`` is ``fold_in(key, s)``, and shuffling
folds in the epoch, so a resumed run reproduces an uninterrupted one exactly. A step
that raises leaves the previous parameters untouched (nothing is updated in place).

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
from gpudl.autodiff import value_and_grad
from gpudl.backend import get_device, synchronize, to_numpy
from gpudl.data.loader import ArrayDataset, DataLoader
from gpudl.functional.labels import host_label_bounds, labels_within
from gpudl.optim.base import apply_updates, scale_updates
from gpudl.train.callbacks import Callback
from gpudl.train.checkpoint import load_checkpoint, save_checkpoint
from gpudl.train.history import History
from gpudl.train.metric_state import MetricTracker, StreamingMetric, make_metric
from gpudl.train.oom import reraise_if_oom
from gpudl.train.progress import Progress
from gpudl.tree import tree_leaves, tree_map

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
    """A fresh streaming metric from a name or a function ``(outputs, targets) -> scalar``.

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


class Trainer:
    """The state of one ``fit`` run (what callbacks see and may change).

    ``key`` is the run's root key (saved in checkpoints); step ``s`` uses
    ``fold_in(step_key, s)`` where ``step_key`` is derived from it.
    """

    def __init__(self, model, loss_fn, optimizer, params, state, opt_state, key, config,
                 step_key=None):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.params, self.state, self.opt_state = params, state, opt_state
        self.key, self.config = key, config
        self.step_key = key if step_key is None else step_key
        self.step, self.epoch, self.stop, self.lr_scale = 0, 0, False, 1.0
        self.history = History()

        def objective(p, s, x, y, k):
            out, new_state = model.apply(p, s, x, train=True, key=k)
            return loss_fn(out, y), (out, new_state)

        self._value_and_grad = value_and_grad(objective, has_aux=True)

    def train_step(self, x, y):
        step_key = gdr.fold_in(self.step_key, self.step)
        (loss, (out, new_state)), grads = self._value_and_grad(
            self.params, self.state, x, y, step_key)
        updates, opt_state = self.optimizer.update(grads, self.opt_state, self.params)
        updates = scale_updates(updates, self.lr_scale)
        new_params = apply_updates(self.params, updates)
        # Assign only after every piece succeeded: a failing step leaves params untouched.
        self.params, self.state, self.opt_state = new_params, new_state, opt_state
        self.step += 1
        return loss, out

    def save_checkpoint(self, path: str, epoch: int | None = None) -> None:
        save_checkpoint(path, params=self.params, state=self.state, opt_state=self.opt_state,
                        epoch=self.epoch if epoch is None else epoch, step=self.step,
                        key=self.key, config={**self.config, "lr_scale": self.lr_scale})


def _respect_frozen(model, params, optimizer):
    """Wrap ``optimizer`` so parameters the model marks frozen get no update and no state."""
    mask_fn = getattr(model, "trainable_mask", None)
    if mask_fn is None:
        return optimizer
    trainable = mask_fn(params)
    if all(tree_leaves(trainable)):
        return optimizer
    from gpudl import optim

    return optim.freeze(tree_map(lambda t: not t, trainable), optimizer)


def fit(model, train_data, loss: str | Callable, optimizer, epochs: int = 1, *,
        validation_data: Any = None, metrics: Sequence[str | Callable] = (),
        callbacks: Sequence[Callback] = (), key=None, params=None, state=None,
        batch_size: int = 32, shuffle: bool = True, verbose: int = 1,
        resume_from: str | None = None, device: str | None = None) -> History:
    """Train ``model`` and return a :class:`History` holding metrics and the trained trees.

    ``train_data``/``validation_data``: a DataLoader or a tuple ``(x, y)`` of arrays.
    ``metrics``: names (see :func:`resolve_metric`) or functions ``(outputs, targets) ->
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
    init_key, data_key, step_key = gdr.split(key, 3)
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
    optimizer = _respect_frozen(model, params, optimizer)
    opt_state = optimizer.init(params)
    config = {"epochs": epochs, "batch_size": loader.batch_size, "device": device or get_device()}
    trainer = Trainer(model, loss_fn, optimizer, params, state, opt_state, key, config,
                      step_key=step_key)
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
