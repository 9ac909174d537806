"""Checks of layer constructor arguments, so a torch- or Keras-order call fails loudly.

gpudl's layers infer input sizes from the example input (``nn.Dense(120)``,
``nn.LSTM(64)``), so the positional order differs from torch's (``Linear(in, out)``,
``LSTM(input_size, hidden_size)``). A torch-order call would otherwise be accepted with
shifted meanings (``nn.Linear(4, 10)`` as 4 outputs with ``bias=10``). Constructors
therefore take few positional arguments (the rest are keyword-only, see
:func:`positional_limit`) and check each argument's type and range here, raising
:class:`LayerArgumentError` with the layer, the argument, expected vs got and the fix.

Example:
    >>> from gpudl import nn
    >>> try:
    ...     nn.Linear(4, 10)
    ... except nn.LayerArgumentError as e:
    ...     print(str(e).splitlines()[0])
    nn.Dense takes 1 positional argument (features), got 2: (4, 10).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable
from typing import Any

from gpudl.errors import LayerArgumentError  # noqa: F401 - raised here, re-exported for nn


def layer_label(layer: Any) -> str:
    """``nn.Dense`` for a layer instance or class (used at the start of every message)."""
    cls = layer if isinstance(layer, type) else type(layer)
    return f"nn.{cls.__name__}"


def positional_limit(n: int, hint: Callable[[str, tuple], str] | None = None, *,
                     label: str | None = None):
    """Decorate ``__init__`` so more than ``n`` positional arguments raise LayerArgumentError.

    The decorated ``__init__`` declares its later arguments keyword-only; this wrapper
    turns Python's bare "takes 2 positional arguments" into a message that shows the
    call and, through ``hint(label, args)``, the likely torch-order mistake and its fix.
    ``inspect.signature`` still shows the real signature (``functools.wraps``). With
    ``label`` (e.g. ``"nn.initializers.normal"``) it decorates a plain function instead.
    """

    def decorate(fn):
        skip = 0 if label else 1  # a method's self is not counted
        params = list(inspect.signature(fn).parameters.values())[skip:skip + n]
        names = ", ".join(p.name for p in params)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            given = args[skip:]
            if len(given) > n:
                where = label or _call_label(args[0])
                if n == 0:
                    takes = "no positional arguments"
                else:
                    takes = f"{n} positional argument{'' if n == 1 else 's'} ({names})"
                msg = f"{where} takes {takes}, got {len(given)}: {given!r}."
                extra = hint(where, given) if hint is not None else (
                    f"Pass the others by keyword (see help({where}))")
                raise LayerArgumentError(f"{msg}\n{extra}")
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _str_hint(value: Any) -> str:
    """A str where a number belongs is usually a name given in the old positional slot."""
    if isinstance(value, str):
        return f"If {value!r} is meant as the layer's name, pass it by keyword: name={value!r}."
    return ""


def _call_label(obj: Any) -> str:
    if isinstance(obj, str):  # a function's label, e.g. "nn.initializers.normal"
        return obj
    return getattr(obj, "_label", None) or layer_label(obj)


def check_name(owner: Any, name: Any) -> str | None:
    """A layer name must be a str (or None): a number there is a shifted positional call."""
    if name is None or isinstance(name, str):
        return name
    raise LayerArgumentError(
        f"{_call_label(owner)}: name must be a str or None, got {name!r} "
        f"({type(name).__name__}). The name is keyword-only: {_call_label(owner)}(..., "
        "name='...'); a number here usually means a hyper-parameter was passed in the "
        "wrong position."
    )


def check_int(owner: Any, arg: str, value: Any, minimum: int | None = 1,
              hint: str = "") -> int:
    """An integer (bools and floats rejected) that is ``>= minimum``."""
    hint = hint or _str_hint(value)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (minimum is not None and int(value) < minimum):
        expected = "an int" + ("" if minimum is None else f" >= {minimum}")
        raise LayerArgumentError(
            f"{_call_label(owner)}: {arg} must be {expected}, got {value!r} "
            f"({type(value).__name__}).{' ' + hint if hint else ''}"
        )
    return int(value)


def check_ints(owner: Any, arg: str, value: Any, minimum: int = 1) -> Any:
    """An int or a tuple/list of ints (kernel sizes, strides), each ``>= minimum``."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        check_int(owner, arg, item, minimum)
    return value


def check_float(owner: Any, arg: str, value: Any, low: float | None = None,
                high: float | None = None, low_open: bool = False, high_open: bool = False,
                hint: str = "") -> float:
    """A real number (bools rejected) in the given range."""
    hint = hint or _str_hint(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LayerArgumentError(
            f"{_call_label(owner)}: {arg} must be a number, got {value!r} "
            f"({type(value).__name__}).{' ' + hint if hint else ''}"
        )
    v = float(value)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high or v != v:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}" \
                   f"{')' if high_open or high is None else ']'}"
        raise LayerArgumentError(
            f"{_call_label(owner)}: {arg} must be in {interval}, got {value!r}."
            f"{' ' + hint if hint else ''}"
        )
    return v


def check_bool(owner: Any, arg: str, value: Any, hint: str = "") -> bool:
    """A bool (NumPy bools too); numbers are rejected, they are shifted positional calls."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise LayerArgumentError(
        f"{_call_label(owner)}: {arg} must be True or False, got {value!r} "
        f"({type(value).__name__}).{' ' + hint if hint else ''}"
    )


def check_choice(owner: Any, arg: str, value: Any, choices: tuple, hint: str = "") -> Any:
    if value not in choices:
        raise LayerArgumentError(
            f"{_call_label(owner)}: {arg} must be one of {list(choices)}, got {value!r}."
            f"{' ' + hint if hint else ''}"
        )
    return value
