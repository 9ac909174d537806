"""One check of integer class labels, shared by every loss that takes them.

The composite losses (``nll_loss``, ``sequence_cross_entropy``) and the fused
``F.softmax_cross_entropy`` call these helpers, so one mistake raises one named error
whichever path a user takes (all three derive from :class:`~gpudl.errors.LabelError`):

* :class:`~gpudl.errors.LabelDTypeError` (a ``DTypeError``): the labels are not integers;
* :class:`~gpudl.errors.LabelShapeError` (a ``ShapeError``): the labels' shape is not the
  input's shape without its class axis;
* :class:`~gpudl.errors.LabelRangeError` (an ``IndexError`` and a ``ValueError``): a label
  outside ``[0, C)`` that is not ``ignore_index``.

The range check runs every training step, on the GPU too: on the happy path it costs ONE
device-to-host copy (the labels' min and max, and the ignored count when there is an
``ignore_index``, computed on the device: a min/max pass, no boolean masks). Only a
failing check pays for more transfers, to write a precise message. Inside
:func:`labels_within` - which ``gd.fit``/``gd.evaluate`` enter after checking their
``(x, y)`` labels once on the host - a check that the known bounds already settle costs
nothing, so GPU training steps never wait for it.

Example:
    >>> import numpy as np
    >>> check_label_range(np.array([0, 2, -100]), 3, "demo", ignore_index=-100)  # n_valid
    2
    >>> try:
    ...     check_label_range(np.array([0, 3]), 3, "demo")
    ... except IndexError as e:  # also a ValueError
    ...     print(type(e).__name__, str(e)[:41])
    LabelRangeError demo: labels must lie in [0, 3) for C = 3
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from gpudl.autodiff import unbox_all
from gpudl.backend import module_of
from gpudl.errors import ConfigError, LabelDTypeError, LabelRangeError, LabelShapeError
from gpudl.functional._checks import is_int


def _what(arg: str) -> str:
    # "labels" reads as is; another argument name says which one holds the labels.
    return "labels" if arg == "labels" else f"{arg} labels"


def check_label_dtype(labels: Any, op: str, arg: str = "labels") -> None:
    """Raise :class:`LabelDTypeError` unless ``labels`` is an integer array.

    Example:
        >>> check_label_dtype(np.array([0, 1]), "demo")
    """
    dtype = getattr(unbox_all(labels), "dtype", None)
    if dtype is None or np.dtype(dtype).kind not in "iu":
        got = f"dtype {dtype}" if dtype is not None else f"a {type(labels).__name__}"
        raise LabelDTypeError(
            f"{op}: {_what(arg)} must be integer (an integer array of class indices), got "
            f"{got}; cast hard labels with labels.astype('int64'), and for one-hot or soft "
            f"(probability) targets use a loss on probabilities or log_softmax instead"
        )


def check_label_shape(
    labels_shape: Sequence[int],
    input_shape: Sequence[int],
    op: str,
    *,
    class_axis: int = 1,
    input_name: str = "logits",
    arg: str = "labels",
) -> int:
    """Labels must have the input's shape without its class axis; returns C (the classes).

    Example:
        >>> check_label_shape((4, 7), (4, 10, 7), "demo")
        10
    """
    input_shape, labels_shape = tuple(input_shape), tuple(labels_shape)
    axis = class_axis % len(input_shape)
    expected = input_shape[:axis] + input_shape[axis + 1:]
    if labels_shape != expected:
        raise LabelShapeError(
            f"{op}: {_what(arg)} must have shape {expected}, the shape of {input_name} "
            f"without its class axis {axis}; got {input_name} {input_shape} and {arg} "
            f"{labels_shape}. Give one class index per position (for one-hot targets pass "
            f"their argmax over the class axis)"
        )
    return input_shape[axis]


# Bounds [lo, hi] that every label checked in this context is known to lie within.
_KNOWN_BOUNDS: ContextVar[tuple[int, int] | None] = ContextVar("gpudl_label_bounds",
                                                                default=None)


def host_label_bounds(labels: Any) -> tuple[int, int] | None:
    """``(min, max)`` of a non-empty NumPy integer array (host data only), else None.

    Example:
        >>> host_label_bounds(np.array([3, 0, 2])), host_label_bounds(np.zeros(2))
        ((0, 3), None)
    """
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or not labels.size:
        return None
    return int(labels.min()), int(labels.max())


@contextmanager
def labels_within(bounds: tuple[int, int] | None) -> Iterator[None]:
    """Promise that every label checked inside lies in ``[lo, hi]`` (``bounds``; None: no
    promise). The caller must have checked it, e.g. with :func:`host_label_bounds` on the
    host array every batch is drawn from. :func:`check_label_range` then skips its
    device-to-host copy whenever the bounds settle the check (inside ``[0, C)``, and
    ``ignore_index`` outside them); otherwise it checks as usual.

    Example:
        >>> with labels_within((0, 2)):
        ...     check_label_range(np.array([1, 2]), 3, "demo")
        2
    """
    token = _KNOWN_BOUNDS.set(bounds)
    try:
        yield
    finally:
        _KNOWN_BOUNDS.reset(token)


def check_label_range(
    labels: Any, num_classes: int, op: str, *, ignore_index: int | None = None,
    arg: str = "labels",
) -> int:
    """Every label in ``[0, num_classes)`` or equal to ``ignore_index``; returns how many
    labels are not ignored (``n_valid``). One device-to-host copy on the GPU, none where
    :func:`labels_within` bounds settle it.

    Example:
        >>> check_label_range(np.array([[1, 0], [2, 1]], np.uint8), 3, "demo")
        4
    """
    if ignore_index is not None and not is_int(ignore_index):
        # a float never equals an integer label: nothing would be ignored
        raise ConfigError(f"{op}: ignore_index must be None or an integer label (torch uses "
                          f"-100), got {ignore_index!r}")
    labels = unbox_all(labels)
    known = _KNOWN_BOUNDS.get()
    if known is not None and 0 <= known[0] and known[1] < num_classes and (
            ignore_index is None or not known[0] <= ignore_index <= known[1]):
        return int(labels.size)  # all in range, none ignored: nothing to count
    if not labels.size:
        return 0
    lo, hi, n_ignored = _bounds(labels, ignore_index)
    if lo < 0 or hi >= num_classes:
        labels = labels.astype(np.int64, copy=False)
        xp = module_of(labels)
        ignored = labels == ignore_index if ignore_index is not None else xp.zeros(
            labels.shape, dtype=bool)
        bad = ((labels < 0) | (labels >= num_classes)) & ~ignored
        n_bad = int(bad.sum())
        raise _range_error(labels, bad, ignored, n_bad, num_classes, op, ignore_index, arg)
    return int(labels.size) - n_ignored


def _bounds(labels, ignore_index: int | None) -> tuple[int, int, int]:
    """``(min, max, n_ignored)`` of the labels that are not ``ignore_index`` (0 stands in
    for the ignored ones: always a valid class), computed on the labels' device and read
    in ONE copy: one min/max pass, plus one comparison where ``ignore_index`` is given."""
    xp = module_of(labels)
    if ignore_index is None:
        if xp is np:  # host memory: read the two numbers directly
            return int(labels.min()), int(labels.max()), 0
        lo, hi = xp.stack([labels.min(), labels.max()]).tolist()
        return int(lo), int(hi), 0
    # CuPy (NEP 50) raises OverflowError comparing e.g. uint8 labels with -100 or with a C
    # above 255, where NumPy just answers False: compare in int64 on both devices.
    labels = labels.astype(np.int64, copy=False)
    ignored = labels == ignore_index
    kept = xp.where(ignored, 0, labels)
    lo, hi, n = xp.stack([kept.min(), kept.max(), ignored.sum()]).tolist()
    return int(lo), int(hi), int(n)


def _range_error(labels, bad, ignored, n_bad, num_classes, op, ignore_index, arg):
    """The detailed message; extra transfers are fine here, the step is failing anyway."""
    xp = module_of(labels)
    kept, values = labels[~ignored], labels[bad]
    lo, hi, bad_lo, bad_hi = (
        int(v) for v in xp.stack([kept.min(), kept.max(), values.min(), values.max()]).tolist()
    )
    first = int(xp.argmax(bad.ravel()))
    allowed = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
    left_out = "" if ignore_index is None else " (ignored labels left out)"
    return LabelRangeError(
        f"{op}: {_what(arg)} must lie in [0, {num_classes}) for C = {num_classes} classes"
        f"{allowed}; got range [{lo}, {hi}]{left_out}, with {n_bad} label(s) outside, "
        f"ranging over [{bad_lo}, {bad_hi}] (first at flat position {first}). Fix the label "
        f"encoding (0-based class indices) or the number of output units, or pass "
        f"ignore_index= for padding labels."
    )


def check_labels(
    labels: Any,
    input_shape: Sequence[int],
    op: str,
    *,
    class_axis: int = 1,
    ignore_index: int | None = None,
    input_name: str = "logits",
    arg: str = "labels",
) -> tuple[Any, int]:
    """Dtype, shape and range of ``labels`` for an input of ``input_shape`` (in that order).

    Returns ``(plain labels array, n_valid)``; ``n_valid`` counts the labels that are not
    ``ignore_index``.

    Example:
        >>> raw, n_valid = check_labels(np.array([2, -1]), (2, 3), "demo", ignore_index=-1)
        >>> raw.tolist(), n_valid
        ([2, -1], 1)
    """
    raw = unbox_all(labels)
    check_label_dtype(raw, op, arg)
    c = check_label_shape(raw.shape, input_shape, op, class_axis=class_axis,
                          input_name=input_name, arg=arg)
    return raw, check_label_range(raw, c, op, ignore_index=ignore_index, arg=arg)


# Helpers for other modules and for nn: nothing here is an F.<name> function.
__all__: list[str] = []
