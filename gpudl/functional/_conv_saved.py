"""The forward's columns kept for backward-weight (CPU): :data:`SAVED`.

conv2d's forward unrolls x into columns (``_conv_cpu.py``); backward-weight needs the same
columns. When the forward runs for a gradient with respect to w (``conv.py`` decides), it
keeps them here, keyed by the output array y that the primitive returns, and the vjp,
which receives that y as ``out``, takes them back. So the columns live as long as the
tape node that holds y, or until the vjp takes them (once; a second vjp call, as
``gd.vjp``'s function allows, recomputes them). At most :data:`SAVED_COLS_BUDGET` bytes are
kept at a time over all layers and threads; beyond it a layer's columns are recomputed.

Example:
    >>> import numpy as np
    >>> saved = SavedColumns(budget=1 << 20)
    >>> y, cols = np.zeros(3), np.ones((2, 4))
    >>> saved.keep(y, cols), saved.live_bytes
    (True, 64)
    >>> saved.take(y) is cols, saved.take(y), saved.live_bytes
    (True, None, 0)
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

# Total bytes of forward columns kept alive for backward-weight (all layers, all threads).
# Beyond it a layer's columns are recomputed in the backward pass instead. ResNet-20 at
# batch 128 keeps about 0.3 GB (kernel-row columns: 3x its convs' inputs).
SAVED_COLS_BUDGET = 1 << 30


class SavedColumns:
    """Forward columns kept for backward-weight, keyed by the forward's output array.

    The conv2d primitive's vjp receives that output (``out``), so the columns live exactly
    as long as the tape node that holds it, or until the vjp takes them (once: a second
    vjp call recomputes). ``budget`` bytes at most are kept at a time, over all layers.
    """

    def __init__(self, budget: int | None = None) -> None:
        self._budget = budget
        self._entries: dict[int, tuple[weakref.ref, np.ndarray]] = {}
        # Reentrant: a y collected by the cycle GC while this thread holds the lock runs its
        # weakref callback (_release) right there.
        self._lock = threading.RLock()
        self.live_bytes = 0

    @property
    def budget(self) -> int:
        return SAVED_COLS_BUDGET if self._budget is None else self._budget

    def has_room(self, nbytes: int) -> bool:
        return self.live_bytes + nbytes <= self.budget

    def keep(self, y, cols) -> bool:
        """Keep ``cols`` for ``y``; False (nothing kept) when the budget has no room."""
        key = id(y)
        with self._lock:
            if not self.has_room(cols.nbytes):
                return False
            self._drop(key)
            # The callback runs when y is freed (before its id can be reused).
            self._entries[key] = (weakref.ref(y, lambda _, key=key: self._release(key)), cols)
            self.live_bytes += cols.nbytes
        return True

    def take(self, y):
        """The columns kept for ``y`` (then forgotten), or None."""
        with self._lock:
            entry = self._entries.get(id(y))
            if entry is None or entry[0]() is not y:
                return None
            self._drop(id(y))
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)

    def _release(self, key: int) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.live_bytes -= entry[1].nbytes


SAVED = SavedColumns()
