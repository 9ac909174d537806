"""``fit``'s watch over NaN and Inf: the run stops at the first report that is not finite.

Each step's loss stays on the device until the next report (every ``REPORT_EVERY``
steps and at the end of every epoch); there, those losses and one float64 sum per float
leaf of the params and model state (a NaN or Inf anywhere makes its sum non-finite) are
copied to the host together, in one transfer. Between reports nothing waits for the
device. A finite report makes the current trees the *last finite* ones (a reference:
trees once handed out are never updated in place); a non-finite one raises
:class:`~gpudl.errors.NonFiniteError` naming the first step whose loss was not finite,
or the leaves that turned non-finite.

Example:
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> t = SimpleNamespace(params={"w": np.ones(2)}, state={}, opt_state=(), step=1)
    >>> watch = FiniteWatch(t)
    >>> watch.record(np.float64(0.5), epoch=0, batch=0)
    >>> watch.check(epoch=0, epochs=1)          # finite: nothing happens
    >>> t.params, t.step = {"w": np.array([1.0, np.nan])}, 2
    >>> watch.record(np.float64(0.4), epoch=0, batch=1)
    >>> watch.check(epoch=0, epochs=1)
    Traceback (most recent call last):
    ...
    gpudl.errors.NonFiniteError: fit: training diverged in epoch 1/1: after step 2 ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.backend import device_of, module_of, to_numpy
from gpudl.errors import NonFiniteError
from gpudl.tree import flatten_with_paths

# Steps between two reports (the progress bar redraws at the same pace).
REPORT_EVERY = 20


def _float_leaves(tree: Any) -> list[tuple[str, Any]]:
    return [(p, leaf) for p, leaf in flatten_with_paths(tree)
            if np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype)).kind in "fc"]


def _host(values: list) -> np.ndarray:
    """float64 host copies of scalars living on one device (one transfer for CuPy ones)."""
    on_gpu = [v for v in values if device_of(v) == "cuda"]
    if on_gpu:
        xp = module_of(on_gpu[0])
        gpu = iter(to_numpy(xp.stack([xp.asarray(v, dtype=xp.float64) for v in on_gpu])))
        return np.array([next(gpu) if device_of(v) == "cuda" else float(np.asarray(v))
                         for v in values], np.float64)
    return np.array([np.asarray(v, np.float64) for v in values], np.float64)


class FiniteWatch:
    """Keeps the last finite ``(params, state, opt_state, step)`` of a ``fit`` run."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.window: list[tuple[int, int, int, Any]] = []  # (step, epoch, batch, loss)
        self.good = self._snapshot()
        self.start_step = trainer.step

    def _snapshot(self) -> tuple[Any, Any, Any, int]:
        t = self.trainer
        return t.params, t.state, t.opt_state, t.step

    def record(self, loss: Any, epoch: int, batch: int) -> None:
        """The loss of the step just done (kept on the device until the next report)."""
        self.window.append((self.trainer.step, epoch, batch, loss))

    def check(self, epoch: int, epochs: int) -> None:
        """One report: raise :class:`NonFiniteError` unless everything is finite."""
        t = self.trainer
        leaves = _float_leaves(t.params) + _float_leaves(t.state)
        sums = [leaf.sum(dtype=module_of(leaf).float64) if hasattr(leaf, "sum") else leaf
                for _, leaf in leaves]
        host = _host([loss for *_, loss in self.window] + sums)
        if np.isfinite(host).all():
            self.good, self.window = self._snapshot(), []
            return
        raise self._error(host, leaves, epoch, epochs)

    def _error(self, host: np.ndarray, leaves: list, epoch: int, epochs: int) -> NonFiniteError:
        losses, sums = host[:len(self.window)], host[len(self.window):]
        first = next((i for i, v in enumerate(losses) if not np.isfinite(v)), None)
        if first is not None:
            step, ep, batch, _ = self.window[first]
            what = (f"the loss of step {step} (batch {batch + 1} of epoch {ep + 1}) is "
                    f"{losses[first]}")
        else:
            step = self.trainer.step
            bad = [p or "<root>" for (p, _), v in zip(leaves, sums) if not np.isfinite(v)]
            what = (f"after step {step} these leaves hold NaN/Inf: {bad[:8]} (the losses "
                    "were finite: an update or a state update produced them)")
        good = (f"after step {self.good[3]}" if self.good[3] > self.start_step else
                "the ones training started from: no report had passed yet")
        err = NonFiniteError(
            f"fit: training diverged in epoch {epoch + 1}/{epochs}: {what}. Training "
            f"stopped; err.gpudl_history holds the History so far and the last finite "
            f"params, state and optimizer state ({good}); no checkpoint "
            "was written with non-finite values. Usual causes: a learning rate too high "
            "(lower it or clip gradients), NaN/Inf in the data, log or division at 0 in "
            "a custom loss; run the failing step under gd.debug_nans() to name the op.")
        err.epoch, err.step = epoch, step
        return err
