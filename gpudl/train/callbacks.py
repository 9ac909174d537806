"""Callbacks for ``fit``: EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, CSVLogger.

A callback gets ``on_epoch_end(trainer, epoch, logs)`` after every epoch (logs hold
``loss``, ``val_loss`` and the metrics) and may set ``trainer.stop = True``. The trainer
exposes ``params``, ``state``, ``opt_state``, ``lr_scale`` and ``history``.

Example:
    >>> stopper = EarlyStopping(monitor="val_loss", patience=3, restore_best=True)
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any


class Callback:
    def on_train_begin(self, trainer: Any) -> None:
        pass

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _mode(monitor: str, mode: str) -> str:
    if mode == "auto":
        # Higher is better for these (accuracy, top-k, AUC, F1/precision/recall, R^2).
        higher = ("acc", "auc", "f1", "r2", "top", "precision", "recall")
        return "max" if any(s in monitor for s in higher) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"callback: mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _value(logs: dict, monitor: str, who: str) -> float:
    if monitor not in logs:
        raise KeyError(f"{who}: monitored metric {monitor!r} is not in the logs {sorted(logs)}; "
                       "pass validation_data for val_* metrics")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.mode, self.restore_best = _mode(monitor, mode), restore_best
        self.on_train_begin(None)

    def on_train_begin(self, trainer):
        # Fresh counters for each fit (as Keras): a reused callback must not stop at once.
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_params, self.best_state = -1, 0, None, None

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


class ModelCheckpoint(Callback):
    """Save a full checkpoint each epoch, or only when ``monitor`` improves (``best_only``).

    ``path`` may contain ``{epoch}``. Files are written atomically.
    """

    def __init__(self, path: str, monitor: str = "val_loss", best_only: bool = True,
                 mode: str = "auto"):
        self.path, self.monitor, self.best_only = path, monitor, best_only
        self.mode = _mode(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []

    def on_epoch_end(self, trainer, epoch, logs):
        if self.best_only:
            value = _value(logs, self.monitor, "ModelCheckpoint")
            if not _better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        path = self.path.format(epoch=epoch)
        trainer.save_checkpoint(path, epoch=epoch)
        self.saved.append(path)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    It scales every update by ``trainer.lr_scale`` (the optimizer itself is untouched), with
    torch's relative threshold (``threshold=1e-4``), ``cooldown`` and ``min_scale``.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, cooldown: int = 0, min_scale: float = 0.0,
                 mode: str = "auto"):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.monitor, self.factor, self.patience = monitor, factor, int(patience)
        self.threshold, self.cooldown, self.min_scale = threshold, int(cooldown), min_scale
        self.mode = _mode(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_left = 0

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


class CSVLogger(Callback):
    """Write one row per epoch (epoch and all logs) to a CSV file, header first.

    The columns are fixed by the first epoch's logs; ``append=True`` adds to an existing
    file (e.g. when resuming) without repeating its header.
    """

    def __init__(self, path: str, append: bool = False):
        self.path, self.append = path, append
        self._fields: list[str] | None = None
        if append and os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, newline="") as f:
                self._fields = next(csv.reader(f), None)

    def on_epoch_end(self, trainer, epoch, logs):
        new_file = self._fields is None
        if new_file:
            self._fields = ["epoch", *logs.keys()]
        with open(self.path, "w" if new_file and not self.append else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **logs})
