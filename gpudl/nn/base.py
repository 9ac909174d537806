"""The layer protocol and the Sequential container.

A layer is an object with two methods and no hidden state:

* ``init(key, x_example) -> (params, state)``: parameters and state (BatchNorm running
  statistics) as nested dicts with torch-style leaf names; shapes are inferred from the
  example input, so ``Dense(120)`` needs no input size.
* ``apply(params, state, x, *, train=False, key=None) -> (y, new_state)``.

Where a key is expected, an int seed works too (``model.init(0, x)``, ``apply(...,
key=0)``): every layer class's ``init`` and ``apply`` turn it into ``gd.random.key(seed)``
on entry (``gd.random.as_key``), user-defined subclasses included.

Containers key their children and keep only children that have parameters in the params
tree: ``Sequential`` by position as torch does (``0``, ``1``, ... or a ``name=`` given to
the layer; gpudl/nn/sequential.py), so a flattened key reads ``0.weight``; ``Parallel``,
``Concat`` and ``Model`` by prefix and count (``conv1``, ``dense2``) or ``name=``. The same
layer object used twice shares its parameters and counts once, as in PyTorch and Keras.

Every ``apply`` checks its params against what the layer's configuration and its input
imply (``param_shapes(x)``: keys and shapes, no arrays made), so the weights of another
configuration (another head, layer size or input size) fail with
:class:`~gpudl.errors.ParamShapeError` naming the leaf path (``2.weight``, prefixed
by each container on the way out), the expected and the given shape. It costs about a
microsecond per layer (``check_params``, in gpudl/nn/param_checks.py);
tests/nn/test_param_shapes.py checks that init makes exactly these shapes for every
parametrised layer.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> model = nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(2)])
    >>> params, state = model.init(gd.random.key(0), gd.ops.zeros((1, 3)))
    >>> sorted(params)
    ['0', '2']
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of
from gpudl.errors import (
    ConfigError,
    ParamShapeError,
    TreeMismatchError,
)
from gpudl.nn.arguments import check_name, layer_label
from gpudl.nn.param_checks import (  # noqa: F401 - re-exported for the layer modules
    check_params,
    check_tree,
    require_params,
)
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


def _seeded(method, keyword: bool):
    """``method`` (a layer's init, key first, or apply, ``key=``) taking an int seed as a key."""
    if keyword:
        @functools.wraps(method)
        def apply(self, *args, **kwargs):
            k = kwargs.get("key")
            if k is not None and type(k) is not np.ndarray:  # the common cases cost one test
                kwargs["key"] = gdr.as_key(k, f"{layer_label(self)}.apply")
            return method(self, *args, **kwargs)

        return apply

    @functools.wraps(method)
    def init(self, *args, **kwargs):
        if args and args[0] is not None and type(args[0]) is not np.ndarray:
            args = (gdr.as_key(args[0], f"{layer_label(self)}.{method.__name__}"), *args[1:])
        return method(self, *args, **kwargs)

    return init


def ignores_key(apply):
    """Mark a layer's ``apply`` as never reading its ``key`` (containers then skip drawing
    child keys when no child reads one; a subclass that overrides ``apply`` is unmarked)."""
    apply.ignores_key = True
    return apply


def reads_key(layer: Any) -> bool:
    """Whether ``layer.apply`` may read its key: unmarked ones (user layers, an ``apply``
    set on the object, as nn.summary's recorder) count as reading it."""
    return not getattr(layer.apply, "ignores_key", False)


class Layer:
    """Base class: override ``init`` (if the layer has parameters) and ``apply``."""

    def __init_subclass__(cls, **kwargs):
        """Let every subclass's ``init``/``apply`` take an int seed where a key goes."""
        super().__init_subclass__(**kwargs)
        for name in ("init", "init_and_apply", "apply"):
            method = cls.__dict__.get(name)
            if inspect.isfunction(method) and not getattr(method, "_takes_seed", False):
                wrapped = _seeded(method, keyword=name == "apply")
                wrapped._takes_seed = True
                setattr(cls, name, wrapped)

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

    def init_shapes(self, x_example, key=None) -> tuple[Any, Any]:
        """``init``'s ``(params, state)`` as trees of ``ShapeDtype`` (shape, dtype) leaves,
        without drawing a number: for summaries and parameter counts. ``x_example`` may hold
        arrays or ``ShapeDtype`` leaves. See gpudl/nn/shapes.py.

        Example:
            >>> from gpudl import nn
            >>> from gpudl.nn.shapes import ShapeDtype
            >>> p, _ = nn.Dense(3).init_shapes(ShapeDtype((2, 5), np.float32))
            >>> p["weight"]
            ShapeDtype(shape=(3, 5), dtype=float32)
        """
        from gpudl.nn.shapes import init_shapes

        return init_shapes(self, x_example, key)

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

    def load_state_dict(self, state_dict: dict, strict: bool = True, x_example=None,
                        device: str | None = None):
        """``(params, state)`` from a torch-style flat dict (torch's ``model.state_dict()``,
        ``gd.state_dict``, ``gd.load``), no template needed: BatchNorm's buffers go to
        ``state``, the rest to ``params``. ``strict`` raises StateDictKeyError naming missing
        and unexpected keys; ``x_example`` also checks every key and shape. See
        gpudl/nn/state_dict.py."""
        from gpudl.nn.state_dict import load_state_dict

        return load_state_dict(self, state_dict, strict, x_example, device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or ''})"


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


def apply_child(name: str, layer: Layer, params: dict, new_state: dict, x, *, train: bool,
                key=None) -> Any:
    """Run a container's child on ``x``, store its new state in ``new_state`` and return its
    output; a ParamShapeError on the way out gets the child's name prefixed to its path."""
    try:
        y, s = layer.apply(params.get(name, {}), new_state.get(name, {}), x, train=train, key=key)
    except ParamShapeError as err:  # zero cost unless raised: name the leaf's path
        err.within(name)
        raise
    if s:
        new_state[name] = s
    return y


def split_keys(key, n: int, layers=None) -> list:
    """``n`` child keys from ``key`` (the i-th for the i-th child), or Nones where there is
    no key or none of ``layers`` reads one (see :func:`reads_key`)."""
    if key is None or (layers is not None and not any(map(reads_key, layers))):
        return [None] * n
    return list(gdr.split(key, n)) if n > 1 else [key]


def count_params(tree: Any) -> int:
    """Number of scalars in a params tree."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in tree_leaves(tree)))


# Sequential lives in its own module; re-exported here for `from gpudl.nn.base import Sequential`.
from gpudl.nn.sequential import Sequential  # noqa: E402,F401
