"""``Trainer``: the state of one ``fit`` run, its checkpoints, and a resume from one.

A checkpoint written by :meth:`Trainer.save_checkpoint` holds the trees, the step, the
RNG key, the learning-rate scale, the History and every callback's ``state_dict()``, so
a run resumed from it continues exactly as the uninterrupted run: the same batches, the
same dropout masks, the same early-stopping and plateau counters, the same History.
Saves requested while callbacks run at the end of an epoch are written once all of them
have run and the epoch is in the History, so the file holds the whole end-of-epoch state.

A saved callback state goes back to the callback of the same class and the same
``monitor``/``mode``/``path`` (the n-th such callback to the n-th saved one); a callback
with no saved state starts fresh.
"""

from __future__ import annotations

import copy
from typing import Any

from gpudl.train.checkpoint import Checkpoint, rebuild, save_checkpoint
from gpudl.train.history import History
from gpudl.train.step import StepRunner, TrainStep, supervised_objective
from gpudl.tree import flatten_with_paths


def _identity(callback: Any) -> dict[str, str]:
    return {k: str(getattr(callback, k)) for k in ("monitor", "mode", "path")
            if hasattr(callback, k)}


class Trainer(StepRunner):
    """The state of one ``fit`` run (what callbacks see and may change).

    ``key`` is the run's root key (saved in checkpoints); step ``s`` uses
    ``fold_in(step_key, s)`` where ``step_key`` is derived from it. ``train_step(x, y)`` is
    :meth:`StepRunner.train_step` over ``train_step_fn`` (by default
    :func:`~gpudl.train.step.supervised_step`'s step), the one ``gpudl bench`` times;
    ``run_batch(batch)`` runs a custom step's (:mod:`gpudl.train.custom`). For several
    players, ``params``, ``state``, ``opt_state`` and ``optimizer`` are dicts per player.
    """

    def __init__(self, model, loss_fn, optimizer, params, state, opt_state, key, config,
                 step_key=None, train_step_fn: TrainStep | None = None, callbacks=()):
        if train_step_fn is None:
            train_step_fn = TrainStep(supervised_objective(model, loss_fn), optimizer)
        super().__init__(train_step_fn, params, state, opt_state,
                         key if step_key is None else step_key)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.key, self.config, self.callbacks = key, config, list(callbacks)
        self.epoch, self.stop = 0, False
        # this process' rank among the data-parallel ranks (fit sets them; only rank 0 writes)
        self.rank, self.world_size = 0, 1
        self.history = History()
        self._pending: list[tuple[str, int | None]] | None = None

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str, epoch: int | None = None) -> None:
        """Write a checkpoint of the run (deferred to the end of the epoch's callbacks
        when called from ``on_epoch_end``)."""
        if self._pending is not None:
            self._pending.append((str(path), epoch))
            return
        if self.rank != 0:  # the ranks hold the same trees: one file, rank 0's
            return
        save_checkpoint(path, params=self.params, state=self.state, opt_state=self.opt_state,
                        epoch=self.epoch if epoch is None else epoch, step=self.step,
                        key=self.key, config={**self.config, "lr_scale": self.lr_scale},
                        history=self.history.state_dict(), stopped=self.stop,
                        callbacks=[{"class": type(cb).__qualname__, "identity": _identity(cb),
                                    "state": cb.state_dict()} for cb in self.callbacks])

    def begin_epoch_end(self) -> None:
        self._pending = []

    def cancel_epoch_end(self) -> None:
        """Drop the saves asked for in an epoch end that did not complete."""
        self._pending = None

    def finish_epoch_end(self) -> None:
        """Write the checkpoints the callbacks asked for during this epoch's end."""
        pending, self._pending = self._pending or [], None
        for path, epoch in pending:
            self.save_checkpoint(path, epoch)

    # ------------------------------------------------------------------ resume
    def restore(self, ck: Checkpoint, device: str | None) -> int:
        """Take the trees, step, scale and History of ``ck``; return the next epoch."""
        self.params = ck.tree("params", self.params, device)
        self.state = ck.tree("state", self.state, device)
        self.opt_state = ck.tree("opt_state", self.opt_state, device)
        self.step, self.stop = ck.step, ck.stopped
        self.lr_scale = float(ck.config.get("lr_scale", 1.0))
        if ck.history is not None:
            self.history.load_state_dict(ck.history)
        return ck.epoch + 1

    def restore_callbacks(self, ck: Checkpoint, device: str | None) -> None:
        """Give each callback its saved state (call after ``on_train_begin``)."""
        entries, used = ck.callback_entries(), set()
        for cb in self.callbacks:
            for j, entry in enumerate(entries):
                if j in used or entry["class"] != type(cb).__qualname__ \
                        or entry["identity"] != _identity(cb):
                    continue
                used.add(j)
                state = dict(entry["state"])
                for name, (arrays, paths) in entry["trees"].items():
                    state[name] = self._rebuild(arrays, paths, name, device)
                cb.load_state_dict(state)
                break

    def _rebuild(self, arrays, paths, name, device):
        # A callback's tree is a copy of params or state (EarlyStopping's best): take the
        # structure of whichever has the same paths; else dicts and lists from the paths.
        for like in (self.params, self.state, self.opt_state):
            if [p for p, _ in flatten_with_paths(like)] == paths:
                return rebuild(arrays, paths, like, name, device)
        return rebuild(arrays, paths, None, name, device)

    # ------------------------------------------------------------------ results
    def result(self, stop_reason: str | None = None, trees: tuple | None = None) -> History:
        """The History with the trees (``trees`` = ``(params, state, opt_state, step)``,
        default the current ones). With ``stop_reason`` "error"/"non_finite", a copy for
        an exception, the run's own History left alone."""
        h = self.history if stop_reason not in ("error", "non_finite") else copy.copy(
            self.history)
        h.params, h.state, h.opt_state, h.step = trees or (
            self.params, self.state, self.opt_state, self.step)
        h.stop_reason = stop_reason
        return h
