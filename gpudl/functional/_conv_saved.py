"""The forward's columns kept for backward-weight (CPU): :data:`SAVED`, and :data:`POOL`.

conv2d's forward unrolls x into columns (``_conv_cpu.py``); backward-weight needs the same
columns. When the forward runs for a gradient with respect to w (``conv.py`` decides), it
keeps them here, keyed by the output array y that the primitive returns, and the vjp,
which receives that y as ``out``, takes them back. So the columns live as long as the
tape node that holds y, or until the vjp takes them (once; a second vjp call, as
``gd.vjp``'s function allows, recomputes them). At most :data:`SAVED_COLS_BUDGET` bytes are
kept at a time over all layers and threads; beyond it a layer's columns are recomputed.

The column buffers themselves are recycled through :data:`POOL` (:class:`BufferPool`):
once backward-weight has used a layer's columns (or a forward that keeps none is done with
them) the buffer goes back to the pool, and the next unroll of that shape takes it. A
training step then reuses the same few tens of MiB of columns every step instead of
allocating them afresh: blocks that large, freed together at the end of a step, are what
glibc hands back to the OS and faults in again page by page (measured, ResNet-20 batch 32:
~15,000 minor faults, ~60 MB, per step without the pool).

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
# Beyond it a layer's columns are recomputed in the backward pass instead, in cache-sized
# pieces (``_conv_cpu.CACHE_COLS_BYTES``). Kept columns pay while they are few enough to
# stay in the last-level cache until the backward reads them; many more are read back
# from DRAM, which costs more than unrolling them again in cache. Measured (2-core EPYC,
# 32 MiB L3 shared, float32): LeNet-5 at batch 128 keeps its 4.4 MB, 2 % faster than
# recomputing; ResNet-20 at batch 32 (76 MB of columns) was 6 % slower keeping all of
# them than none, and within 0.5 % of none with this budget.
SAVED_COLS_BUDGET = 8 << 20


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

# Bytes of free column buffers the pool holds at most (all shapes); a buffer given back
# beyond it is simply freed. ResNet-20 at batch 128 unrolls ~0.3 GB per step.
POOL_BUDGET = 512 << 20


class BufferPool:
    """Free C-contiguous buffers by (shape, dtype), for the CPU bodies' columns.

    ``take`` returns a buffer of that shape with arbitrary contents (the unrolls write every
    entry); ``give`` hands one back once nothing refers to it any more (the caller's
    promise: only buffers that never left the conv bodies are given). At most ``budget``
    bytes are held.

    Example:
        >>> import numpy as np
        >>> pool = BufferPool(budget=1 << 20)
        >>> a = pool.take((2, 3), np.float32)
        >>> pool.give(a), pool.take((2, 3), np.float32) is a, pool.free_bytes
        (True, True, 0)
    """

    def __init__(self, budget: int | None = None) -> None:
        self._budget = budget
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.free_bytes = 0

    @property
    def budget(self) -> int:
        return POOL_BUDGET if self._budget is None else self._budget

    def take(self, shape, dtype) -> np.ndarray:
        """A buffer of ``shape`` and ``dtype`` (uninitialised), from the pool when it has one."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            bufs = self._free.get(key)
            if bufs:
                buf = bufs.pop()
                self.free_bytes -= buf.nbytes
                return buf
        return np.empty(key[0], dtype=key[1])

    def give(self, buf: np.ndarray) -> bool:
        """Return ``buf`` for reuse; False (not kept) when it is a view or over the budget."""
        if not (isinstance(buf, np.ndarray) and buf.flags.owndata and buf.flags.c_contiguous):
            return False
        with self._lock:
            if self.free_bytes + buf.nbytes > self.budget:
                return False
            self._free.setdefault((buf.shape, buf.dtype), []).append(buf)
            self.free_bytes += buf.nbytes
        return True

    def clear(self) -> None:
        """Free every pooled buffer."""
        with self._lock:
            self._free.clear()
            self.free_bytes = 0


POOL = BufferPool()
