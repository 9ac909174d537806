"""Callbacks for ``fit``: EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, CSVLogger.

A callback gets ``on_epoch_end(trainer, epoch, logs)`` after every epoch (logs hold
``loss``, ``val_loss`` and the metrics) and may set ``trainer.stop = True``;
``on_batch_end(trainer, batch, loss)`` after every step. The trainer
exposes ``params``, ``state``, ``opt_state``, ``lr_scale`` and ``history``.

``fit`` checks every callback's configuration before the first step
(:meth:`Callback.check_config`): a monitored metric that nothing produces, ``val_*`` without
validation data, a checkpoint path template with unknown fields. A checkpoint holds each
callback's :meth:`Callback.state_dict`, so a resumed run continues their counters exactly.

Example:
    >>> stopper = EarlyStopping(monitor="val_loss", patience=3, restore_best=True)
"""

from __future__ import annotations

import csv
import difflib
import math
import numbers
import os
import string
from pathlib import Path
from typing import Any

from gpudl.errors import TrainingConfigError


class Callback:
    """Base class: override the hooks you need.

    ``adds_logs``: the log entries this callback's ``on_epoch_end`` adds, so monitors of
    the callbacks after it can be checked before training (``None``: unknown, which skips
    those checks). ``state_dict``/``load_state_dict``: what a checkpoint saves and a
    resumed run restores (JSON values, or trees of arrays).
    """

    adds_logs: tuple[str, ...] | None = None

    def set_rank(self, rank: int, world_size: int) -> None:
        """Called by ``fit`` before ``on_train_begin``: this process' rank among
        ``world_size`` data-parallel ranks (0 of 1 in a one-process run). Every rank runs
        the callbacks with the same logs; a callback that writes files should write on
        rank 0 only."""

    def on_train_begin(self, trainer: Any) -> None:
        pass

    def on_batch_end(self, trainer: Any, batch: int, loss: Any) -> None:
        """After each step: ``batch`` its index in the epoch, ``loss`` its loss as an array
        on the device (a dict per player for several). Reading it (``float(loss)``) waits
        for the device: keep it, and read many at once."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass

    def check_config(self, available: set[str] | None, has_validation: bool) -> None:
        """Raise :class:`TrainingConfigError` if this callback cannot work in this run.

        ``available``: the log names its ``on_epoch_end`` will see (None when unknown).
        """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _check_count(who: str, name: str, value: Any) -> int:
    """``value`` as an int >= 0 (a number of epochs), else a TrainingConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        hint = (f" (as an int: {name}={int(value)})" if isinstance(value, float) and
                value.is_integer() and value >= 0 else "")
        raise TrainingConfigError(f"{who}: {name} must be an int >= 0 (a number of epochs), "
                                  f"got {value!r}{hint}")
    return int(value)


def _check_real(who: str, name: str, value: Any, ok: Any, expected: str) -> float:
    """``value`` as a finite float for which ``ok(value)`` holds, else a TrainingConfigError
    saying ``expected``."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or not ok(float(value)):
        raise TrainingConfigError(f"{who}: {name} must be {expected}, got {value!r}")
    return float(value)


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _mode(monitor: str, mode: str, who: str = "callback") -> str:
    if mode == "auto":
        # Higher is better for these (accuracy, top-k, AUC, F1/precision/recall, R^2).
        higher = ("acc", "auc", "f1", "r2", "top", "precision", "recall")
        return "max" if any(s in monitor for s in higher) else "min"
    if mode not in ("min", "max"):
        raise TrainingConfigError(f"{who}: mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _unknown_name(who: str, what: str, name: str, available: set[str],
                  has_validation: bool) -> TrainingConfigError:
    hint = ""
    if name.startswith("val_") and not has_validation:
        hint = "; val_* metrics need validation_data=(x, y) in fit"
    else:
        close = difflib.get_close_matches(name, sorted(available), n=1, cutoff=0.5) or \
            [n for n in sorted(available) if n.startswith(name)][:1]
        hint = f"; did you mean {close[0]!r}?" if close else ""
    return TrainingConfigError(
        f"{who}: {what} {name!r} is not produced by this run, which logs "
        f"{sorted(available)}{hint}")


def _check_monitor(who: str, monitor: str, available: set[str] | None,
                   has_validation: bool) -> None:
    if available is not None and monitor not in available:
        raise _unknown_name(who, "monitored metric", monitor, available, has_validation)


def _value(logs: dict, monitor: str, who: str) -> float:
    if monitor not in logs:
        raise _unknown_name(who, "monitored metric", monitor, set(logs), "val_loss" in logs)
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best."""

    adds_logs = ()

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True):
        self.monitor, self.patience = monitor, _check_count("EarlyStopping", "patience", patience)
        self.min_delta = _check_real("EarlyStopping", "min_delta", min_delta, lambda v: v >= 0,
                                     "a number >= 0 (the least change that counts as better)")
        self.mode = _mode(monitor, mode, "EarlyStopping")
        self.restore_best = restore_best
        self.on_train_begin(None)

    def on_train_begin(self, trainer):
        # Fresh counters for each fit (as Keras): a reused callback must not stop at once.
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_params, self.best_state = -1, 0, None, None

    def check_config(self, available, has_validation):
        _check_monitor("EarlyStopping", self.monitor, available, has_validation)

    def on_epoch_end(self, trainer, epoch, logs):
        value = _value(logs, self.monitor, "EarlyStopping")
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:  # arrays are immutable in gpudl's style: keeping refs is enough
                self.best_params, self.best_state = trainer.params, trainer.state
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop = True

    def on_train_end(self, trainer):
        if self.restore_best and self.best_params is not None:
            trainer.params, trainer.state = self.best_params, self.best_state

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_params": self.best_params, "best_state": self.best_state}

    def load_state_dict(self, state):
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_params, self.best_state = state["best_params"], state["best_state"]


CHECKPOINT_SUFFIXES = (".npz", ".safetensors")


class ModelCheckpoint(Callback):
    """Save a full checkpoint each epoch, or only when ``monitor`` improves (``best_only``).

    ``path`` may hold the fields ``{epoch}``, ``{step}`` and any logged metric
    (``"ck-{epoch:03d}-{val_loss:.3f}.npz"``); its suffix picks the format (``.npz`` or
    ``.safetensors``). Files are written atomically, after every callback has run for the
    epoch, and never with non-finite weights.
    """

    adds_logs = ()

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss",
                 best_only: bool = True, mode: str = "auto"):
        self.path, self.monitor, self.best_only = str(path), monitor, best_only
        self.mode = _mode(monitor, mode, "ModelCheckpoint")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []
        suffix = Path(self.path).suffix.lower()
        if suffix not in CHECKPOINT_SUFFIXES:
            raise TrainingConfigError(
                f"ModelCheckpoint: path {self.path!r} must end in .npz or .safetensors (the "
                f"suffix decides the format), got {suffix or 'no suffix'!r}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None]
        except ValueError as exc:
            raise TrainingConfigError(
                f"ModelCheckpoint: path {self.path!r} is not a valid template ({exc}); "
                "write literal braces as {{ and }}") from exc
        bad = [f for f in fields if not f.isidentifier()]
        if bad:
            raise TrainingConfigError(
                f"ModelCheckpoint: path {self.path!r} has fields {bad}; use named fields: "
                "{epoch}, {step} or a logged metric such as {val_loss}")
        self.fields = fields

    def on_train_begin(self, trainer):
        # Fresh for each fit, as EarlyStopping: a callback reused for the next run (the next
        # fold) kept the last run's best and never saved again (resume restores it after)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved = []

    def check_config(self, available, has_validation):
        if self.best_only:
            _check_monitor("ModelCheckpoint", self.monitor, available, has_validation)
        known = {"epoch", "step"} | (available or set())
        for field in self.fields:
            if available is not None and field not in known:
                raise _unknown_name(f"ModelCheckpoint({self.path!r})", "path field", field,
                                    known, has_validation)
        try:
            self.path.format(**{f: (0 if f in ("epoch", "step") else 0.0) for f in self.fields})
        except (ValueError, TypeError) as exc:
            raise TrainingConfigError(
                f"ModelCheckpoint: path {self.path!r} cannot be formatted ({exc}); epoch and "
                "step are ints ({epoch:03d}), metrics floats ({val_loss:.3f})") from exc

    def on_epoch_end(self, trainer, epoch, logs):
        if self.best_only:
            value = _value(logs, self.monitor, "ModelCheckpoint")
            if not _better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        path = self.path.format(**{**logs, "epoch": epoch, "step": trainer.step})
        self.saved.append(path)
        trainer.save_checkpoint(path, epoch=epoch)  # written once the epoch is recorded

    def state_dict(self):
        return {"best": self.best, "saved": list(self.saved)}

    def load_state_dict(self, state):
        self.best, self.saved = state["best"], list(state["saved"])


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    It scales every update by ``trainer.lr_scale`` (the optimizer itself is untouched), with
    torch's relative threshold (``threshold=1e-4``), ``cooldown`` and ``min_scale``. The
    scale is logged as ``lr_scale``.
    """

    adds_logs = ("lr_scale",)

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, cooldown: int = 0, min_scale: float = 0.0,
                 mode: str = "auto"):
        who = "ReduceLROnPlateau"
        self.monitor, self.patience = monitor, _check_count(who, "patience", patience)
        self.factor = _check_real(who, "factor", factor, lambda v: 0.0 < v < 1.0,
                                  "a number in (0, 1) (the learning rate is multiplied by it)")
        self.threshold = _check_real(who, "threshold", threshold, lambda v: v >= 0,
                                     "a number >= 0 (torch's relative threshold, e.g. 1e-4)")
        self.cooldown = _check_count(who, "cooldown", cooldown)
        self.min_scale = _check_real(who, "min_scale", min_scale, lambda v: v >= 0,
                                     "a number >= 0 (the lowest learning-rate scale)")
        self.mode = _mode(monitor, mode, who)
        self.on_train_begin(None)

    def on_train_begin(self, trainer):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_left = 0

    def check_config(self, available, has_validation):
        _check_monitor("ReduceLROnPlateau", self.monitor, available, has_validation)

    def on_epoch_end(self, trainer, epoch, logs):
        value = _value(logs, self.monitor, "ReduceLROnPlateau")
        # torch's rel threshold: better than best * (1 -/+ threshold)
        if self.mode == "min":
            improved = value < self.best * (1 - self.threshold)
        else:
            improved = value > self.best * (1 + self.threshold)
        if improved:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.wait > self.patience:
            trainer.lr_scale = max(trainer.lr_scale * self.factor, self.min_scale)
            self.cooldown_left, self.wait = self.cooldown, 0
        logs["lr_scale"] = trainer.lr_scale

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]
        self.cooldown_left = state["cooldown_left"]


class CSVLogger(Callback):
    """Write one row per epoch (epoch and all logs) to a CSV file, header first.

    The columns are fixed by the first epoch's logs; ``append=True`` adds to an existing
    file without repeating its header. A resumed run continues the file from the
    checkpoint's epoch (rows written after the checkpoint are dropped).
    """

    adds_logs = ()

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path, self.append = str(path), append
        self._fields: list[str] | None = None
        self.rows = 0
        self.writes = True  # False on the data-parallel ranks but 0 (they count rows only)
        if append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, newline="") as f:
                lines = list(csv.reader(f))
            self._fields, self.rows = lines[0], len(lines) - 1

    def check_config(self, available, has_validation):
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise TrainingConfigError(
                f"CSVLogger: the folder of {self.path!r} does not exist; create it first")

    def set_rank(self, rank, world_size):
        self.writes = rank == 0

    def on_epoch_end(self, trainer, epoch, logs):
        new_file = self._fields is None
        if new_file:
            self._fields = ["epoch", *logs.keys()]
        if not self.writes:
            self.rows += 1
            return
        with open(self.path, "w" if new_file and not self.append else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **logs})
        self.rows += 1

    def state_dict(self):
        return {"fields": self._fields, "rows": self.rows}

    def load_state_dict(self, state):
        self._fields, self.rows = state["fields"], state["rows"]
        if self._fields is None or not self.writes or not os.path.exists(self.path):
            return
        with open(self.path, newline="") as f:
            lines = list(csv.reader(f))
        with open(self.path, "w", newline="") as f:  # header + the checkpoint's rows
            csv.writer(f).writerows(lines[:1 + self.rows])
