"""Progress display: a tqdm bar on a terminal or in Jupyter, plain lines otherwise (or with
TQDM_DISABLE)."""

from __future__ import annotations

import os
import sys


def _tqdm_disabled() -> bool:
    # tqdm's own convention: TQDM_DISABLE=1 (any value but empty/0/false) turns bars off.
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def _use_bar(verbose: int) -> bool:
    if verbose < 1 or _tqdm_disabled():
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return sys.stderr.isatty() or _in_notebook()


def _in_notebook() -> bool:
    """True inside a Jupyter kernel, whose stderr is not a terminal but renders a text bar."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # IPython missing or broken: no notebook
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _fmt(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())


class Progress:
    """One epoch's progress: ``update(logs)`` per step, ``close(logs, seconds)`` at the end."""

    def __init__(self, epoch: int, epochs: int, steps: int, verbose: int = 1):
        self.epoch, self.epochs, self.verbose = epoch, epochs, verbose
        self.bar = None
        if _use_bar(verbose):
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=True,
                            dynamic_ncols=True, file=sys.stderr)

    @property
    def shows_logs(self) -> bool:
        """Whether :meth:`update` displays its logs (callers skip computing them if not)."""
        return self.bar is not None

    def update(self, logs: dict[str, float] | None = None) -> None:
        """One step done; ``logs`` (if given) replace the bar's figures."""
        if self.bar is not None:
            if logs is not None:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self.bar.update(1)

    def close(self, logs: dict[str, float], seconds: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self.bar.close()
            print(f"epoch {self.epoch}/{self.epochs}: {_fmt(logs)}  ({seconds:.1f} s)",
                  file=sys.stderr)
        elif self.verbose >= 1:
            print(f"epoch {self.epoch}/{self.epochs}: {_fmt(logs)}  ({seconds:.1f} s)", flush=True)
