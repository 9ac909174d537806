"""The layer protocol and the Sequential container.

A layer is an object with two methods and no hidden state:

* ``init(key, x_example) -> (params, state)``: parameters and state (BatchNorm running
  statistics) as nested dicts with torch-style leaf names; shapes are inferred from the
  example input, so ``Dense(120)`` needs no input size.
* ``apply(params, state, x, *, train=False, key=None) -> (y, new_state)``.

Containers name their children (``conv1``, ``conv2``, ``dense1`` ... or a ``name=`` given
to the layer) and keep only children that have parameters in the params tree, so a
flattened key reads ``conv1.weight``. The same layer object used twice shares its
parameters and counts once, as in PyTorch and Keras.

Every ``apply`` checks its params against what the layer's configuration and its input
imply (``param_shapes(x)``: keys and shapes, no arrays made), so the weights of another
configuration (another head, layer size or input size) fail with
:class:`~gpudl.errors.ParamShapeError` naming the leaf path (``dense2.weight``, prefixed
by each container on the way out), the expected and the given shape. It costs about a
microsecond per layer (``check_params``); tests/nn/test_param_shapes.py checks that
init makes exactly these shapes for every parametrised layer.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> model = nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(2)])
    >>> params, state = model.init(gd.random.key(0), gd.ops.zeros((1, 3)))
    >>> sorted(params)
    ['dense1', 'dense2']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of
from gpudl.errors import ArgumentTypeError, ConfigError, ParamShapeError, TreeMismatchError, TreeTypeError
from gpudl.nn.arguments import LayerArgumentError, check_name, layer_label, positional_limit
from gpudl.tree import tree_leaves, tree_map


def array_device(x) -> str:
    """Device of an array, looking through ``gd.grad`` tracing (params may be traced)."""
    return device_of(unbox_all(x))


def float_dtype(x) -> np.dtype:
    """Parameter dtype inferred from an example: its float dtype, else float32 (int inputs)."""
    dt = np.dtype(x.dtype)
    return dt if dt.kind == "f" else np.dtype(np.float32)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


class Layer:
    """Base class: override ``init`` (if the layer has parameters) and ``apply``."""

    #: prefix used when a container names this layer (``dense`` -> ``dense1``)
    base_name: str | None = None
    #: set False on layers whose parameters must not be trained (frozen embeddings)
    trainable: bool = True

    def __init__(self, name: str | None = None):
        self.name = check_name(self, name)

    # -- protocol ----------------------------------------------------------------
    def init(self, key, x) -> tuple[dict, dict]:
        return {}, {}

    def init_and_apply(self, key, x) -> tuple[dict, dict, Any]:
        """``init`` plus the eval-mode output on ``x``: containers build each child's example
        from the previous child's output, so they call this once per child instead of
        ``init`` followed by ``apply`` (which would run nested children's forwards again)."""
        params, state = self.init(key, x)
        y, _ = self.apply(params, state, x, train=False)
        return params, state, y

    def apply(self, params: dict, state: dict, x, *, train: bool = False, key=None):
        raise NotImplementedError(f"{type(self).__name__}.apply")

    # -- conveniences -------------------------------------------------------------
    def __call__(self, *inputs):
        """On symbolic inputs (``nn.Input``), build a graph node for ``nn.Model``."""
        from gpudl.nn.graph import call_symbolic

        return call_symbolic(self, inputs)

    def prefix(self) -> str:
        return self.base_name or _snake(type(self).__name__)

    def trainable_mask(self, params: dict) -> Any:
        """A tree of booleans shaped like ``params``: False for frozen leaves."""
        return tree_map(lambda _: bool(self.trainable), params)

    def macs(self, x, y, params: dict) -> int:
        """Multiply-accumulates of one forward pass on ``x`` (0 unless overridden)."""
        return 0

    def summary(self, x_example, key=None, print_fn=print) -> None:
        """Print a table: layer, output shape, parameter count, MACs; totals at the end."""
        from gpudl.nn.summary import summary_table

        print_fn(summary_table(self, x_example, key))

    def summary_dict(self, x_example, key=None) -> dict:
        """The data of :meth:`summary` as a dict (rows and totals)."""
        from gpudl.nn.summary import summary_data

        return summary_data(self, x_example, key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or ''})"


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


def has_params(layer: Layer) -> bool:
    """Whether ``layer`` owns parameters (decides if it gets an entry in the params tree)."""
    return getattr(layer, "_has_params", type(layer).init is not Layer.init)


def name_children(layers: Sequence[Layer]) -> list[str]:
    """Unique names: ``name=`` if given, else prefix + running count; reused objects keep theirs."""
    names: list[str] = []
    by_id: dict[int, str] = {}
    counts: dict[str, int] = {}
    taken = {layer.name for layer in layers if layer.name}
    for layer in layers:
        if id(layer) in by_id:
            names.append(by_id[id(layer)])
            continue
        if layer.name:
            name = layer.name
        else:
            prefix = layer.prefix()
            while True:
                counts[prefix] = counts.get(prefix, 0) + 1
                name = f"{prefix}{counts[prefix]}"
                if name not in taken:
                    break
        if name in by_id.values():
            raise ConfigError(f"two different layers are both named {name!r}; give one of "
                              "them another name= (layer names must be unique in a container)")
        by_id[id(layer)] = name
        names.append(name)
    return names


def check_children(params: dict, names: Sequence[str], layers: Sequence[Layer], owner: str,
                   state: Any = None):
    """The container-level params check: missing and extra child names, both listed (and
    ``params``/``state`` must be dicts, as init returns them)."""
    check_tree(params, "params", owner)
    check_tree(state, "state", owner)
    expected = {n for n, layer in zip(names, layers, strict=True) if has_params(layer)}
    missing = sorted(n for n in expected if n not in params)
    extra = sorted(k for k in params if k not in set(names))
    if missing or extra:
        raise TreeMismatchError(
            f"{owner}: the params tree does not match the model: missing keys {missing}, "
            f"extra keys {extra}. Use the params returned by model.init for this model."
        )


def init_child(name: str, layer: Layer, key, x, params: dict, state: dict, seen: set) -> Any:
    """Initialise a container's child into ``params``/``state`` and return its eval output;
    a layer already seen (shared weights) is only run with the params it already has."""
    if name in seen:
        return layer.apply(params.get(name, {}), state.get(name, {}), x, train=False)[0]
    seen.add(name)
    p, s, y = layer.init_and_apply(key, x)
    if has_params(layer):
        params[name] = p
    if s:
        state[name] = s
    return y


def split_keys(key, n: int) -> list:
    if key is None:
        return [None] * n
    return list(gdr.split(key, n)) if n > 1 else [key]


_SEQUENTIAL_HINT = ("torch's nn.Sequential(a, b, c) takes the layers as separate arguments; "
                    "gpudl takes one list: nn.Sequential([a, b, c], name=...)")


class Sequential(Layer):
    """Layers applied one after another; each child's output is the next one's input.

    Example:
        >>> import gpudl as gd
        >>> from gpudl import nn
        >>> net = nn.Sequential([nn.Dense(8), nn.Tanh(), nn.Dense(1)])
        >>> p, s = net.init(gd.random.key(1), gd.ops.zeros((2, 4)))
        >>> net.apply(p, s, gd.ops.ones((2, 4)))[0].shape
        (2, 1)
    """

    base_name = "sequential"

    @positional_limit(1, lambda label, args: _SEQUENTIAL_HINT)
    def __init__(self, layers: Sequence[Layer], *, name: str | None = None):
        super().__init__(name)
        if isinstance(layers, Layer):
            raise LayerArgumentError(f"nn.Sequential: layers must be a list of layers, got a "
                                     f"single {type(layers).__name__}. {_SEQUENTIAL_HINT}")
        self.layers = list(layers)
        if not self.layers:
            raise LayerArgumentError("nn.Sequential: got an empty list of layers; give at least "
                                     "one layer, e.g. nn.Sequential([nn.Identity()]) for a "
                                     "pass-through")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ArgumentTypeError(
                    f"nn.Sequential: item {i} is a {type(layer).__name__}, not a layer; wrap "
                    "functions with nn.Lambda(fn)"
                )
        self.names = name_children(self.layers)
        self._has_params = any(has_params(layer) for layer in self.layers)

    def init(self, key, x):
        params, state, _ = self.init_and_apply(key, x)
        return params, state

    def init_and_apply(self, key, x):
        params: dict = {}
        state: dict = {}
        seen: set[str] = set()
        keys = split_keys(key, len(self.layers))
        for name, layer, k in zip(self.names, self.layers, keys, strict=True):
            x = init_child(name, layer, k, x, params, state, seen)
        return params, state, x

    def apply(self, params, state, x, *, train=False, key=None):
        check_children(params, self.names, self.layers, "nn.Sequential", state)
        new_state = dict(state)
        keys = split_keys(key, len(self.layers))
        for name, layer, k in zip(self.names, self.layers, keys, strict=True):
            try:
                x, s = layer.apply(params.get(name, {}), new_state.get(name, {}), x,
                                   train=train, key=k)
            except ParamShapeError as err:  # zero cost unless raised: name the leaf's path
                err.within(name)
                raise
            if s:
                new_state[name] = s
        return x, new_state

    def trainable_mask(self, params):
        return {
            name: layer.trainable_mask(params[name])
            for name, layer in dict(zip(self.names, self.layers, strict=True)).items()
            if name in params
        }

    def children(self) -> list[tuple[str, Layer]]:
        return list(zip(self.names, self.layers, strict=True))


def count_params(tree: Any) -> int:
    """Number of scalars in a params tree."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in tree_leaves(tree)))
