"""``History``: per-epoch metrics of a ``fit`` run, the trained params, and a plot.

Example:
    >>> h = History()
    >>> h.append({"loss": 1.0, "val_loss": 1.2}); h.append({"loss": 0.5, "val_loss": 0.9})
    >>> h.history["loss"]
    [1.0, 0.5]
"""

from __future__ import annotations

from typing import Any


class History:
    """Metrics per epoch (``history["loss"]``, ``history["val_accuracy"]``...) plus results.

    After ``fit``: ``params``, ``state`` and ``opt_state`` hold the trained values, and
    ``epochs_run`` counts the epochs done (early stopping may end sooner).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch_times: list[float] = []
        self.params: Any = None
        self.state: Any = None
        self.opt_state: Any = None
        self.stopped_early = False

    def append(self, logs: dict[str, float], seconds: float | None = None) -> None:
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        if seconds is not None:
            self.epoch_times.append(float(seconds))

    @property
    def epochs_run(self) -> int:
        return max((len(v) for v in self.history.values()), default=0)

    def __getitem__(self, name: str) -> list[float]:
        return self.history[name]

    def plot(self, metrics: list[str] | None = None):
        """A matplotlib Figure: one panel per metric, train and validation curves together.

        The figure is built without pyplot, so it leaves pyplot's global state and backend
        alone (works headless; a notebook displays the returned Figure once).
        """
        from matplotlib.figure import Figure

        skip = ("lr", "lr_scale")
        names = metrics or [k for k in self.history if not k.startswith("val_") and k not in skip]
        if not names:
            raise ValueError("History.plot: nothing to plot; the history is empty")
        missing = [n for n in names if n not in self.history]
        if missing:
            raise KeyError(f"History.plot: {missing} not in the history {sorted(self.history)}")
        fig = Figure(figsize=(4.5 * len(names), 3.5))
        axes = fig.subplots(1, len(names), squeeze=False)
        for ax, name in zip(axes[0], names):
            epochs = range(1, len(self.history[name]) + 1)
            ax.plot(epochs, self.history[name], "o-", label=f"train {name}")
            if f"val_{name}" in self.history:
                val = self.history[f"val_{name}"]
                ax.plot(range(1, len(val) + 1), val, "s--", label=f"validation {name}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs_run}, last={last})"
