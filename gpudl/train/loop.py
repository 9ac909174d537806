"""``fit`` / ``evaluate`` / ``predict``: the training loop over init/apply models.

Everything is explicit: parameters, state and optimizer state are trees that ``fit``
returns in the History; the RNG key of step ``s`` is ``fold_in(key, s)``, and shuffling
folds in the epoch, so a resumed run reproduces an uninterrupted one exactly. A step
that raises leaves the previous parameters untouched (fit updates in place only the
buffers it owns and has not handed out; never the caller's arrays). The
step itself is :mod:`gpudl.train.step`'s, shared with ``gpudl bench`` and the recipes.

A run users can trust: arguments and callbacks are checked before the first step
(:mod:`gpudl.train.fit_checks`); NaN/Inf stops the run at the next report, keeping the
last finite trees (:mod:`gpudl.train.finite`); Ctrl-C returns the History so far; any
other exception carries it as ``exc.gpudl_history``; checkpoints hold the History and
the callbacks' states, so a resume is exact (:mod:`gpudl.train.trainer`).

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

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.backend import get_device, synchronize, to_numpy
from gpudl.data.loader import DataLoader
from gpudl.distributed import average_gradients
from gpudl.errors import NonFiniteError, TrainingConfigError
from gpudl.train import parallel
from gpudl.train.batches import FullBatch, make_batches, split_validation
from gpudl.train.callbacks import Callback
from gpudl.train.checkpoint import Checkpoint
from gpudl.train.custom import evaluate_custom, loss_fns, probe
from gpudl.train.finite import REPORT_EVERY, FiniteWatch
from gpudl.train.fit_checks import (
    as_key,
    check_callbacks,
    check_callbacks_arg,
    check_positive_int,
    check_predict_input,
    check_verbose,
    require_batches,
)
from gpudl.train.history import History
from gpudl.train.host_memory import keep_freed_host_memory
from gpudl.train.names import resolve_optimizer
from gpudl.train.oom import reraise_if_oom
from gpudl.train.progress import Progress
from gpudl.train.step import run_keys
from gpudl.train.tasks import (
    as_metric_list,
    evaluate_supervised,
    init_opt_state,
    init_trees,
    make_task,
    resolve_loss,
    resolve_metric,
    supervised_loss,
)
from gpudl.train.trainer import Trainer

__all__ = ["fit", "evaluate", "predict", "resolve_loss", "resolve_metric", "Trainer"]

# The progress bar's figures are refreshed every this many steps (each read is a host sync).
_PROGRESS_EVERY = 20


def fit(model, train_data, loss: str | Callable | None = None, optimizer=None, epochs: int = 1,
        *, loss_fn: Callable | dict | None = None, validation_data: Any = None,
        validation_split: float | None = None,
        metrics: Sequence[str | Callable] | None = (), callbacks: Sequence[Callback] = (),
        key=None,
        params=None, state=None, batch_size: int | None = None, shuffle: bool | None = None,
        verbose: int = 1,
        resume_from: str | None = None, device: str | None = None,
        distributed: Any = "auto", sync_state: bool = False) -> History:
    """Train ``model`` and return a :class:`History` holding metrics and the trained trees.

    ``train_data``/``validation_data``: a tuple ``(x, y)`` of arrays, a DataLoader, or (see
    :mod:`gpudl.train.batches`) one array ``x``, a dict or any tree of arrays sharing their
    first dim, or a :class:`~gpudl.train.batches.FullBatch` (one batch per epoch: a graph).
    ``validation_split`` (Keras'): the last fraction of the rows of ``train_data`` (arrays,
    taken before shuffling) is the validation data, the first ``floor(n * (1 - split))``
    rows train; ``0``/None: none. It needs arrays (split a DataLoader's data first with
    ``gd.data.train_val_test_split``) and no ``validation_data``.

    ``loss``: a function ``(outputs, targets) -> scalar`` of ``model.apply``'s outputs on
    ``(x, y)`` batches, or a name (:mod:`gpudl.train.names`; case, ``_`` and ``-`` are
    ignored, so Keras' and torch's class names work too):

    ==========================================  ===================================  ==============
    ``loss=``                                   gpudl function (its input)           targets
    ==========================================  ===================================  ==============
    cross_entropy, softmax_cross_entropy,       F.softmax_cross_entropy (logits)     integer labels
    sparse_categorical_crossentropy
    categorical_crossentropy                    soft-target cross-entropy (logits)   one-hot/probs
    nll                                         F.nll_loss (log-probabilities)       integer labels
    bce_with_logits                             F.binary_cross_entropy_with_logits   0/1
    binary_crossentropy, binary_cross_entropy   F.binary_cross_entropy (probs)       0/1
    mse, mean_squared_error                     F.mse_loss                           outputs' shape
    mae, mean_absolute_error, l1                F.l1_loss                            outputs' shape
    huber                                       F.huber_loss (delta 1)               outputs' shape
    ==========================================  ===================================  ==============

    gpudl's models output logits, so the cross-entropies over classes take logits, Keras'
    names too (torch's CrossEntropyLoss; Keras' ``from_logits=True``); the Keras names
    raise on a first batch of probabilities (a final Softmax). ``metrics`` (None: none):
    ``accuracy`` (``acc``, ``sparse_categorical_accuracy``, ``binary_accuracy``;
    ``categorical_accuracy`` for one-hot targets), ``topK`` (``top5``;
    ``sparse_top_k_categorical_accuracy``, and ``top_k_categorical_accuracy`` for one-hot
    targets: k=5), ``mse``, ``rmse``, ``mae``,
    ``r2`` (and their long Keras names), ``precision``, ``recall``, ``f1`` (macro), each
    logged under the name given; or functions ``(y_true, y_pred) -> scalar``. Named
    metrics are summed on the device and read once per epoch (and per progress-bar
    refresh), so a GPU run never waits for the host between steps. ``optimizer``: an
    optimizer (``optim.adam(1e-3)``) or a name, ``"sgd"``, ``"adam"``, ``"adamw"``,
    ``"rmsprop"``, ``"adagrad"``, ``"adadelta"``, ``"adamax"``: ``optim.<name>()`` with its
    default learning rate, torch's (``"adam"`` 1e-3, ``"rmsprop"`` 1e-2, ``"sgd"`` 1e-3).
    ``batch_size`` (default 32) and ``shuffle`` (default True) batch array data; a
    DataLoader batches and shuffles as it was built, and a ``batch_size`` or ``shuffle``
    given that differs from the loader's is an error rather than ignored.
    ``key``: a ``gd.random.key`` or an int seed (``key=0`` is ``gd.random.key(0)``, the
    default). ``params``/``state`` default to ``model.init`` on the first batch's
    ``x`` (with ``loss_fn``: the batch, or its first item if it is a tuple).
    ``resume_from`` loads a checkpoint written by ModelCheckpoint and continues from the
    epoch after it, with the checkpoint's RNG key (so shuffling and dropout continue
    exactly as in an uninterrupted run), learning-rate scale, History and callback
    states.

    Several processes (data parallelism, :mod:`gpudl.train.parallel`): started with
    ``gpudl launch -n N script.py``, ``distributed="auto"`` trains on N ranks: each
    takes its shard of every epoch (``batch_size`` is per rank, as torch's DDP), the
    gradients are averaged before the optimizer, the logs are those of all ranks, and only
    rank 0 prints and writes checkpoints. ``distributed=None`` keeps one process; with
    one rank the run is exactly the one-process run. BatchNorm statistics are per rank;
    ``sync_state=True`` averages the model state over the ranks after every epoch.

    Custom training steps (:mod:`gpudl.train.custom`), instead of ``loss``:
    ``loss_fn(params, state, batch, key)`` returning the scalar loss or ``(loss,
    (new_state, aux))``, for losses that need a key (VAE), a mask (GCN), teacher forcing
    (seq2seq) or anything else of the batch as the data yields it. ``aux`` is None or a
    dict: its scalar entries are logged by name, ``y_true``/``y_pred`` feed ``metrics``.
    A ``loss_fn`` with a ``train`` keyword gets ``train=False`` on ``validation_data``.
    Several players (a GAN): ``loss_fn={"discriminator": d_loss, "generator": g_loss}``
    with ``optimizer={"discriminator": ..., "generator": ...}``; each trains its own
    ``params[name]``, in the order of ``loss_fn``, and logs ``<name>_loss``. Progress bar,
    callbacks, checkpoints and exact resume work the same.

    On Linux, ``fit``, ``evaluate`` and ``predict`` ask glibc's malloc to keep freed host
    memory for reuse (once per process; ``GPUDL_KEEP_HOST_MEMORY=0`` or glibc's own
    ``MALLOC_*_`` settings leave it alone), so each step's temporaries are not faulted in
    afresh: :mod:`gpudl.train.host_memory`.

    Every argument and callback configuration is checked before the first step
    (:class:`~gpudl.errors.TrainingConfigError`, :class:`~gpudl.errors.EmptyDataError`;
    a ``loss_fn`` runs once on the first batch: :class:`~gpudl.errors.LossFunctionError`);
    a loss handed ``model.apply``'s whole ``(outputs, state)`` tuple says to take ``[0]``.
    Ctrl-C stops training and returns the History (``stop_reason="interrupted"``) with
    the trees of the last completed step. A NaN or Inf in the loss or the trees raises
    :class:`~gpudl.errors.NonFiniteError` at the next report (see
    :mod:`gpudl.train.finite`). Any exception that escapes carries
    ``exc.gpudl_history``: the History so far, with the trees of the last completed step
    (the last finite ones for a NonFiniteError).

    Example (a custom step: the key draws the noise of a denoising objective):
        >>> import numpy as np, gpudl as gd
        >>> from gpudl import nn, optim
        >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        >>> net = nn.Dense(4)
        >>> def denoise(params, state, batch, key):
        ...     noisy = batch + 0.1 * gd.random.normal(key, batch.shape)
        ...     out, state = net.apply(params, state, noisy, train=True)
        ...     mse = ((out - batch) ** 2).mean()
        ...     return mse, (state, {"mse": mse})
        >>> h = gd.fit(net, x, loss_fn=denoise, optimizer=optim.adam(1e-2), epochs=2,
        ...            verbose=0)
        >>> sorted(h.history)
        ['loss', 'mse']
    """
    check_positive_int("fit", "epochs", epochs)
    keep_freed_host_memory()  # each step's temporaries reused, not faulted in afresh
    batch_size, shuffle = _batching(train_data, batch_size, shuffle)
    if optimizer is None:
        raise TrainingConfigError("fit: optimizer= is required (e.g. gd.optim.adam(1e-3) or "
                                  "'adam'; a dict of them, one per player, with a dict loss_fn)")
    optimizer = resolve_optimizer(optimizer)
    if validation_split is not None and validation_split != 0:
        if validation_data is not None:
            raise TrainingConfigError(
                "fit: give validation_data or validation_split, not both (validation_split "
                "takes the last rows of train_data as the validation data)")
        train_data, validation_data = split_validation(train_data, validation_split)
    task = make_task(model, loss, loss_fn, metrics)
    verbose, callbacks = check_verbose(verbose), check_callbacks_arg(callbacks)
    comm = parallel.resolve(distributed)  # None: one process, the loop below unchanged
    if not isinstance(sync_state, bool):
        raise TrainingConfigError(f"fit: sync_state must be True or False, got {sync_state!r}")
    rank = 0 if comm is None else comm.rank
    verbose = verbose if rank == 0 else 0  # one progress display, rank 0's
    ck = None
    if resume_from is not None:  # rank 0 reads the file, every rank gets its contents
        ck = Checkpoint(resume_from, who="fit(resume_from=...)") if comm is None else \
            parallel.on_rank0(comm, Checkpoint, resume_from, "fit(resume_from=...)")
    if ck is not None and ck.key is not None:  # the saved key decides data order and dropout
        key = ck.key
    key = as_key(key)
    init_key, data_key, step_key = run_keys(key)
    batches = make_batches(train_data, batch_size, shuffle, data_key, device,
                           what="the training data")
    if comm is not None:  # the same permutation on every rank, each its rows
        batches = parallel.shard(batches, comm, True, "the training data")
    require_batches(batches, "fit", "the training data")
    val_batches = None
    if validation_data is not None:
        val_batches = make_batches(validation_data, batches.batch_size, False, None, device,
                                   what="validation_data")
        require_batches(val_batches, "fit", "validation_data")
        if comm is not None:
            val_batches = parallel.shard(val_batches, comm, False, "validation_data")
    has_val = val_batches is not None
    if loss_fn is None:  # the names are known before init; a loss_fn's after its first call
        check_callbacks(callbacks, set(task.names(has_val)), has_val)
    params, state = init_trees(model, batches, init_key, params, state, device,
                               custom=loss_fn is not None)
    if comm is not None:  # gradients averaged over the ranks before every update
        optimizer = average_gradients(optimizer, comm)
        step_key = gdr.fold_in(step_key, rank)  # each rank its own dropout masks
    step_fn = task.make_step(params, optimizer)
    opt_state = init_opt_state(step_fn, params)
    config = {"epochs": epochs, "batch_size": batches.batch_size,
              "device": device or get_device()}
    if comm is not None:
        config["ranks"] = comm.size
    trainer = Trainer(model, task.loss_fn, step_fn.optimizer, params, state, opt_state, key,
                      config, step_key=step_key, train_step_fn=step_fn, callbacks=callbacks)
    start_epoch = 0 if ck is None else trainer.restore(ck, device)
    if comm is not None:  # rank 0's trees everywhere (and the same model checked)
        trainer.rank, trainer.world_size = comm.rank, comm.size
        trainer.params = comm.broadcast(trainer.params, who="fit", what="the params")
        trainer.state = comm.broadcast(trainer.state, who="fit", what="the model state")
    if start_epoch > epochs:
        raise TrainingConfigError(
            f"fit: resume_from={resume_from!r} holds epoch {start_epoch} already, more "
            f"than epochs={epochs}; pass epochs >= {start_epoch} (the total, not the "
            "epochs still to run)")
    task.start(trainer, batches, val_batches, device)
    if loss_fn is not None:
        check_callbacks(callbacks, set(task.names(has_val)), has_val)
    batches.epoch = start_epoch
    for cb in callbacks:
        if hasattr(cb, "set_rank"):  # before anything a callback writes
            cb.set_rank(trainer.rank, trainer.world_size)
        cb.on_train_begin(trainer)
    if ck is not None:
        trainer.restore_callbacks(ck, device)
    run = _Run(trainer, task, batches, val_batches, epochs, verbose, comm, sync_state)
    try:
        stop_reason = run.run(start_epoch)
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        trainer.cancel_epoch_end()
        run.close_display()
        if rank == 0:
            print(f"fit: interrupted (Ctrl-C) in epoch {trainer.epoch + 1}/{epochs}; returning "
                  f"the History with the trees after step {trainer.step} (the interrupted "
                  "epoch is not in it)", file=sys.stderr, flush=True)
    except Exception as exc:
        non_finite = isinstance(exc, NonFiniteError)
        history = trainer.result("non_finite" if non_finite else "error",
                                 run.watch.good if non_finite else None)
        with contextlib.suppress(AttributeError):  # exceptions that take no attributes
            exc.gpudl_history = history
        raise
    for cb in callbacks:
        cb.on_train_end(trainer)
    return trainer.result(stop_reason)


class _Run:
    """The epochs of one ``fit`` call (steps, reports, validation, callbacks)."""

    def __init__(self, trainer: Trainer, task, batches, val_batches, epochs: int, verbose: int,
                 comm=None, sync_state: bool = False):
        self.trainer, self.task, self.epochs, self.verbose = trainer, task, epochs, verbose
        self.batches, self.val_batches = batches, val_batches
        self.comm, self.sync_state = comm, sync_state  # comm None: one process
        self.watch = FiniteWatch(trainer)
        self.progress: Progress | None = None

    def close_display(self) -> None:
        """Close an open progress bar (after an interrupted epoch)."""
        if self.progress is not None and self.progress.bar is not None:
            self.progress.bar.close()

    def run(self, start_epoch: int) -> str | None:
        """Run the epochs; return the stop reason (None: all ran; "callback")."""
        trainer = self.trainer
        for epoch in range(start_epoch, self.epochs):
            if trainer.stop:  # resumed from a run that a callback had stopped
                break
            trainer.epoch = epoch
            t0 = time.perf_counter()
            self.train_epoch(epoch)
            if self.sync_state and self.comm is not None:
                trainer.state = parallel.average_float_leaves(self.comm, trainer.state)
            tracker = self.task.tracker  # with comm: every rank's examples together
            logs = tracker.read() if self.comm is None else tracker.read(self.comm)
            if self.val_batches is not None:
                val = self.task.validate(self.val_batches) if self.comm is None else \
                    self.task.validate(self.val_batches, self.comm)
                logs.update({f"val_{k}": v for k, v in val.items()})
            synchronize()
            self.end_epoch(epoch, logs, time.perf_counter() - t0)
        return "callback" if trainer.stop else None

    def train_epoch(self, epoch: int) -> None:
        task, batches = self.task, self.batches
        progress = self.progress = Progress(epoch + 1, self.epochs, len(batches), self.verbose)
        # Loss and metric sums stay on the device: a float() per step would be a host sync
        # per step on the GPU. They are read when the bar is redrawn and once per epoch.
        task.tracker.reset()
        on_batch = [cb.on_batch_end for cb in self.trainer.callbacks  # the ones that use it
                    if getattr(type(cb), "on_batch_end", Callback.on_batch_end)
                    is not Callback.on_batch_end]
        with task.labels(batches):
            for i, batch in enumerate(batches):
                try:
                    loss_value, losses = task.step(batch, batches.rows(batch))
                except Exception as exc:
                    reraise_if_oom(exc, batches.batch_size)
                    raise
                for f in on_batch:
                    f(self.trainer, i, losses)
                self.watch.record(loss_value, epoch, i)
                last = i + 1 == len(batches)
                if last or (i + 1) % REPORT_EVERY == 0:  # no NaN/Inf past a report
                    self.watch.check(epoch, self.epochs)
                show = progress.shows_logs and (i % _PROGRESS_EVERY == 0 or last)
                progress.update(task.tracker.read() if show else None)

    def end_epoch(self, epoch: int, logs: dict, seconds: float) -> None:
        trainer = self.trainer
        trainer.begin_epoch_end()  # checkpoints asked for now are written at the end
        for cb in trainer.callbacks:
            cb.on_epoch_end(trainer, epoch, logs)
        trainer.history.append(logs, seconds, epoch)
        self.progress.close(logs, seconds)
        trainer.finish_epoch_end()


def _batching(data: Any, batch_size: int | None, shuffle: bool | None) -> tuple[int, bool]:
    """fit's ``(batch_size, shuffle)``: the defaults 32 and True for arrays; for a DataLoader
    the loader's own, and a value given that differs from them is an error (a loader built
    with batch_size=23 would otherwise train on 23 while fit(batch_size=4) was asked)."""
    if shuffle is not None and not isinstance(shuffle, bool | np.bool_):
        raise TrainingConfigError(f"fit: shuffle must be True or False, got {shuffle!r}")
    if isinstance(data, DataLoader):
        for name, given, own in (("batch_size", batch_size, data.batch_size),
                                 ("shuffle", shuffle, data.shuffle)):
            if given is not None and given != own:
                raise TrainingConfigError(
                    f"fit: {name}={given!r}, but the DataLoader given as the data was built "
                    f"with {name}={own!r} and batches as it was built; set {name} on the "
                    "DataLoader, or leave fit's unset")
        return data.batch_size, bool(data.shuffle)
    batch_size = 32 if batch_size is None else batch_size
    if not isinstance(data, FullBatch):
        check_positive_int("fit", "batch_size", batch_size)
    return batch_size, True if shuffle is None else bool(shuffle)


def evaluate(model, params, state, data, loss: str | Callable | None = None,
             metrics: Sequence[str | Callable] | None = (), batch_size: int = 256,
             device: str | None = None, *, loss_fn: Callable | dict | None = None,
             key=None) -> dict[str, float]:
    """Loss and metrics over ``data`` in eval mode (``train=False``), as Python floats.

    The loss is the batch-size-weighted mean of the per-batch losses; named metrics are
    those of all of ``data`` at once. Everything is summed on the device and copied to
    the host once, at the end. With ``loss_fn`` (a custom step's, see :func:`fit`) the
    values are those ``fit`` logs for ``validation_data``: every loss (``train=False``
    when it takes ``train``), its logged aux entries and ``metrics`` on its ``y_true``/
    ``y_pred``; batch ``i`` gets the key ``fold_in(key, i)`` (``key`` a
    ``gd.random.key`` or an int seed, default ``gd.random.key(0)``). ``loss`` and
    ``metrics`` take the names of :func:`fit`.
    """
    keep_freed_host_memory()
    batches = make_batches(data, batch_size, False, None, device, "evaluate")
    require_batches(batches, "evaluate", "the data")
    if loss_fn is None:
        loss_fn_ = supervised_loss(loss, "evaluate", state) if loss is not None else None
        return evaluate_supervised(model, params, state, batches, loss_fn_, metrics,
                                   who="evaluate")
    fns, multi = loss_fns(loss_fn)
    key = as_key(key, "evaluate")
    logs = probe(fns, multi, params, state, batches.first(device), key,
                 [resolve_metric(m, "evaluate") for m in as_metric_list(metrics, "evaluate")])
    return evaluate_custom(fns, multi, params, state, batches, logs, key)


def predict(model, params, state, x, batch_size: int = 256, device: str | None = None):
    """Model outputs for ``x`` in eval mode, batch by batch, concatenated (NumPy).

    ``x`` is one array of inputs (N, ...), the ``x`` of a ``(x, y)`` pair; a pair, a dict or
    a DataLoader raises :class:`~gpudl.errors.ArgumentTypeError`.
    """
    check_predict_input(x)
    keep_freed_host_memory()
    loader = DataLoader((to_numpy(x),), batch_size=batch_size, device=device, prefetch=0)
    require_batches(loader, "predict", "x")
    outs = [to_numpy(model.apply(params, state, xb, train=False)[0]) for (xb,) in loader]
    return np.concatenate(outs, axis=0)
