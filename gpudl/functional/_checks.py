"""Argument checks shared by the kernel-backed ops: float operands and integer pairs.

Every message names the op, the argument, what was expected, what was given and a fix.
:func:`check_float_operands` is the one float-dtype check: each op passes the wording of
its own message (``KERNEL_DTYPES`` for convolution and pooling, ``CELL_DTYPES`` for the
recurrent cells, a custom one for the logits of the cross-entropy).

Example:
    >>> check_float_operands("F.op", {"x": np.ones(2, np.float32), "b": None})
    dtype('float32')
    >>> int_pair(3, "stride", "F.op"), int_pair((1, 2), "stride", "F.op")
    ((3, 3), (1, 2))
    >>> try:
    ...     check_not_apply_output("F.op", (np.ones(2), {}))
    ... except TypeError as e:
    ...     print(str(e)[:54])
    F.op got model.apply's (outputs, state) tuple as its i
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gpudl.autodiff import unbox_all
from gpudl.backend import check_same_device
from gpudl.errors import ArgumentTypeError, DTypeError, ShapeError


class DTypeWording(NamedTuple):
    """Message templates (``str.format`` with ``op``, ``name``, ``dtype``) of a float check.

    ``float16``: the message for float16 operands, or None to use ``unsupported`` for them
    too. ``operands``: the plural noun of the mismatch message ("all operands need one dtype").
    """

    unsupported: str
    float16: str | None = None
    operands: str = "operands"


KERNEL_DTYPES = DTypeWording(
    unsupported="{op}: {name} has dtype {dtype}; expected float32 or float64. Cast it with "
                ".astype('float32').",
    float16="{op}: {name} is float16, which the convolution and pooling kernels do not "
            "support; cast it with .astype('float32')",
)
CELL_DTYPES = DTypeWording(
    unsupported="{op}: {name} has dtype {dtype}; recurrent cells take float32 or float64 "
                "(float16 is not supported). Cast it with .astype('float32').",
    operands="arguments",
)


def check_float_operands(op: str, named: dict[str, Any],
                         wording: DTypeWording = KERNEL_DTYPES) -> np.dtype:
    """Same device, float32 or float64, one dtype for every non-None operand. Returns it."""
    present = {k: v for k, v in named.items() if v is not None}
    check_same_device([unbox_all(v) for v in present.values()], op)
    dtype, first = None, None
    for name, v in present.items():
        raw = unbox_all(v)
        dt = np.dtype(raw.dtype if hasattr(raw, "dtype") else np.asarray(raw).dtype)
        if dt == np.float16 and wording.float16 is not None:
            raise DTypeError(wording.float16.format(op=op, name=name, dtype=dt))
        if dt not in (np.float32, np.float64):
            raise DTypeError(wording.unsupported.format(op=op, name=name, dtype=dt))
        if dtype is None:
            dtype, first = dt, name
        elif dt != dtype:
            raise DTypeError(f"{op}: {name} has dtype {dt} but {first} has {dtype}; all "
                             f"{wording.operands} need one dtype. Cast with "
                             f".astype({dtype.name!r}).")
    return dtype


def is_int(v) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def int_pair(v, name: str, op: str) -> tuple[int, int]:
    """An int or a pair of ints -> (a, b)."""
    if is_int(v):
        return int(v), int(v)
    if isinstance(v, tuple | list) and len(v) == 2 and all(is_int(a) for a in v):
        return int(v[0]), int(v[1])
    raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")


def positive_pair(v, name: str, op: str) -> tuple[int, int]:
    """:func:`int_pair`, each entry >= 1."""
    p = int_pair(v, name, op)
    if min(p) < 1:
        raise ShapeError(f"{op}: {name} must be >= 1, got {v!r}")
    return p


def check_broadcasts_to(op: str, name: str, value: Any, shape: tuple) -> None:
    """``value`` (a weight) may broadcast to ``shape``, never enlarge it: an (N,) weight for
    (N, 1) outputs would silently give an (N, N) loss. None passes."""
    if value is None:
        return
    got = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    try:
        fits = np.broadcast_shapes(shape, got) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"{op}: {name} has shape {got}, which does not broadcast to the "
                         f"input's shape {tuple(shape)} without changing it; give {name} the "
                         "input's shape, or one that broadcasts to it (one value per class on "
                         "the last axis)")


def check_not_apply_output(op: str, value: Any, name: str = "input") -> None:
    """A loss's prediction must not be ``model.apply``'s ``(outputs, state)`` pair: that
    mistake otherwise surfaces as a shape or dtype error far from its cause. One isinstance
    test on the common path."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        raise ArgumentTypeError(
            f"{op} got model.apply's (outputs, state) tuple as its {name}; use "
            f"`y, state = model.apply(...)` and pass y")
