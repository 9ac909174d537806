"""``History``: per-epoch metrics of a ``fit`` run, the trained params, and a plot.

Example:
    >>> h = History()
    >>> h.append({"loss": 1.0, "val_loss": 1.2}); h.append({"loss": 0.5, "val_loss": 0.9})
    >>> h.history["loss"]
    [1.0, 0.5]
"""

from __future__ import annotations

from typing import Any

from gpudl.errors import ConfigError, MissingKeyError


class History:
    """Metrics per epoch (``history["loss"]``, ``history["val_accuracy"]``...) plus results.

    After ``fit``: ``params``, ``state`` and ``opt_state`` hold the trained values (after
    ``step`` optimizer steps in all), ``epoch`` lists the epoch index (0-based, as the
    callbacks see it) of each entry, and ``epochs_run`` counts the epochs recorded. A
    resumed run's History continues the checkpoint's: the same lists, the same numbers.

    ``stop_reason`` says why training ended: ``None`` (every epoch ran), ``"callback"``
    (a callback such as EarlyStopping set ``trainer.stop``; also ``stopped_early``),
    ``"interrupted"`` (Ctrl-C: the trees are those after the last completed step, the
    interrupted epoch is not in the lists; ``on_train_end`` still runs, so
    ``EarlyStopping(restore_best=True)`` still hands back its best weights), or, on the
    History attached to an exception as ``exc.gpudl_history``, ``"non_finite"`` (the
    last finite trees) or ``"error"`` (the trees of the last completed step).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.epoch_times: list[float] = []
        self.params: Any = None
        self.state: Any = None
        self.opt_state: Any = None
        self.step = 0
        self.stop_reason: str | None = None

    @property
    def stopped_early(self) -> bool:
        """True when a callback stopped training before the last epoch."""
        return self.stop_reason == "callback"

    def append(self, logs: dict[str, float], seconds: float | None = None,
               epoch: int | None = None) -> None:
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        if epoch is None:
            epoch = self.epoch[-1] + 1 if self.epoch else 0
        self.epoch.append(int(epoch))
        if seconds is not None:
            self.epoch_times.append(float(seconds))

    def state_dict(self) -> dict[str, Any]:
        """The lists (JSON values), as a checkpoint stores them."""
        return {"history": {k: list(v) for k, v in self.history.items()},
                "epoch": list(self.epoch), "epoch_times": list(self.epoch_times)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: [float(x) for x in v] for k, v in state["history"].items()}
        self.epoch = [int(e) for e in state["epoch"]]
        self.epoch_times = [float(t) for t in state["epoch_times"]]

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
            raise ConfigError("History.plot: nothing to plot; the history is empty")
        missing = [n for n in names if n not in self.history]
        if missing:
            raise MissingKeyError(f"History.plot: {missing} not in the history {sorted(self.history)}")
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(4.5 * len(names), 3.5))
        axes = fig.subplots(1, len(names), squeeze=False)
        # Epoch numbers as the progress lines print them (1-based), true after a resume.
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names):
            ax.plot(epochs[-len(self.history[name]):], self.history[name], "o-",
                    label=f"train {name}")
            if f"val_{name}" in self.history:
                val = self.history[f"val_{name}"]
                ax.plot(epochs[-len(val):], val, "s--", label=f"validation {name}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs_run}, last={last})"
