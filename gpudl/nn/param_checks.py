"""Checks of a leaf layer's params and state against what its configuration implies.

Every ``apply`` checks its params against the keys and shapes that the layer's
configuration and its input imply (``param_shapes(x)``: no arrays made), so the weights of
another configuration fail with :class:`~gpudl.errors.ParamShapeError` naming the leaf
path. ``gpudl.nn.base`` re-exports these for the layer modules.

Example:
    >>> import numpy as np
    >>> from gpudl import nn
    >>> check_params({"weight": np.zeros((2, 3))}, {"weight": (2, 3)}, nn.Dense(2))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpudl.errors import ParamShapeError, TreeMismatchError, TreeTypeError
from gpudl.nn.arguments import layer_label

Layer = Any  # gpudl.nn.base.Layer (which imports this module)


def _owner(layer: Layer) -> str:
    return f"{layer_label(layer)}{' ' + repr(layer.name) if layer.name else ''}"


def check_tree(value: Any, what: str, owner: str) -> None:
    """``params``/``state`` must be the dicts ``init`` returned (not None, not an array)."""
    if not isinstance(value, dict):
        raise TreeTypeError(
            f"{owner}: {what} must be the dict returned by init, got "
            f"{type(value).__name__}. Call params, state = model.init(key, x_example) first "
            "and pass both: y, state = model.apply(params, state, x).")


def require_params(params: dict, keys: Sequence[str], layer: Layer) -> None:
    """Raise TreeMismatchError naming missing and extra keys of a leaf layer's params."""
    check_tree(params, "params", _owner(layer))
    missing = [k for k in keys if k not in params]
    extra = [k for k in params if k not in keys]
    if missing or extra:
        raise TreeMismatchError(
            f"{_owner(layer)}: the params "
            f"do not match the layer: missing keys {missing}, extra keys {extra}. Use the "
            "params returned by model.init (or gd.load of a checkpoint of this model)."
        )


def check_params(params: dict, expected: dict, layer: Layer, x: Any = None) -> None:
    """A leaf layer's params against the keys and shapes its configuration and its input
    imply: ``expected`` maps each key to a shape tuple (or to a nested dict of them).

    No second init and no arrays: one dict-keys comparison per level and one tuple
    comparison per leaf, so it runs on every ``apply``. A wrong key raises
    TreeMismatchError (missing and extra keys), a wrong shape :class:`ParamShapeError`
    naming the leaf path, the expected and the given shape; containers prefix their
    child's name to the path on the way out.
    """
    if not isinstance(params, dict) or params.keys() != expected.keys():
        require_params(params, list(expected), layer)
    for name, shape in expected.items():
        leaf = params[name]
        if type(shape) is dict:
            try:
                check_params(leaf, shape, layer, x)
            except ParamShapeError as err:
                err.within(name)
                raise
        elif getattr(leaf, "shape", None) != shape:
            _leaf_mismatch(name, shape, leaf, layer, x)


def _leaf_mismatch(name: str, shape: tuple, leaf: Any, layer: Layer, x: Any) -> None:
    got = getattr(leaf, "shape", None)
    if got is None:
        raise TreeTypeError(f"{_owner(layer)}: parameter '{name}' must be an array of shape "
                            f"{shape}, got {type(leaf).__name__}. Use the params returned by "
                            "model.init.")
    if tuple(got) == shape:
        return
    seen = getattr(x, "shape", None)
    detail = "" if seen is None else f" for an input of shape {tuple(seen)}"
    raise ParamShapeError(name, shape, tuple(got), _owner(layer), detail)
