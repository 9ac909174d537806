"""nn.Sequential: layers applied one after another, children keyed as torch keys them.

Naming rule (the same as torch's ``nn.Sequential``, so whole-model state dicts match):
children are keyed by position, ``"0"``, ``"1"``, ... -- parameterless layers (ReLU, pools,
Flatten, Dropout) take their index too, they just own no keys -- so a flattened key reads
``0.weight``, ``3.bias``. A layer given ``name=`` keeps that name at its position, and a
dict (torch's ``OrderedDict`` form) keys the children by its keys:
``nn.Sequential({"conv1": nn.Conv2d(8, 3), "relu": nn.ReLU()})``. The same layer object
used twice shares its parameters under the first name.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(2)])
    >>> params, state = net.init(gd.random.key(0), gd.ops.zeros((1, 3)))
    >>> sorted(params), sorted(params["0"])
    (['0', '2'], ['bias', 'weight'])
    >>> named = nn.Sequential({"fc": nn.Dense(2), "act": nn.ReLU()})
    >>> sorted(named.init(0, gd.ops.zeros((1, 3)))[0])
    ['fc']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gpudl.errors import (
    ArgumentTypeError,
    ConfigError,
    IndexRangeError,
    MissingKeyError,
)
from gpudl.nn.arguments import LayerArgumentError, positional_limit
from gpudl.nn.base import (
    Layer,
    apply_child,
    check_children,
    check_tree,
    has_params,
    init_child,
    split_keys,
)


def position_names(layers: Sequence[Layer], given: Sequence[str] | None = None) -> list[str]:
    """torch's child keys: the given names, else ``name=`` if set, else the position
    (``"0"``, ``"1"``, ...); a reused layer object keeps its first name (shared weights)."""
    names: list[str] = []
    by_id: dict[int, str] = {}
    for i, layer in enumerate(layers):
        if id(layer) in by_id:
            names.append(by_id[id(layer)])
            continue
        name = given[i] if given is not None else (layer.name or str(i))
        if not isinstance(name, str) or not name or "." in name:
            raise LayerArgumentError(
                f"nn.Sequential: child names must be non-empty strs without '.', got {name!r} "
                f"for item {i} (a '.' would split the flattened state-dict key)")
        if name in by_id.values():
            raise ConfigError(
                f"nn.Sequential: two different layers are both named {name!r} (item {i}); "
                "unnamed children are keyed by their position, so a name= that is another "
                "child's index clashes with it: give one of them another name")
        by_id[id(layer)] = name
        names.append(name)
    return names


_SEQUENTIAL_HINT = ("torch's nn.Sequential(a, b, c) takes the layers as separate arguments; "
                    "gpudl takes one list: nn.Sequential([a, b, c], name=...)")


class Sequential(Layer):
    """Layers applied one after another; each child's output is the next one's input.

    ``layers`` is a list (children keyed ``"0"``, ``"1"``, ... by position, or by a layer's
    ``name=``) or a dict of name -> layer (torch's ``OrderedDict`` form); see the module
    docstring. Indexing works as torch's ``nn.Sequential``: ``net[i]`` is the i-th layer
    (``net["conv1"]`` the child of that key), ``len(net)`` and ``for layer in net`` go over the layers, and
    ``net[a:b]`` is a Sequential of those layers *under their names in* ``net``, so the
    trained params and state split by the same keys: ``net[a:b].select(params)``.

    Example:
        >>> import gpudl as gd
        >>> from gpudl import nn
        >>> net = nn.Sequential([nn.Dense(8), nn.Tanh(), nn.Dense(1)])
        >>> p, s = net.init(gd.random.key(1), gd.ops.zeros((2, 4)))
        >>> net.apply(p, s, gd.ops.ones((2, 4)))[0].shape
        (2, 1)
        >>> head = net[1:]
        >>> head.names, sorted(head.select(p))
        (['1', '2'], ['2'])
    """

    base_name = "sequential"

    @positional_limit(1, lambda label, args: _SEQUENTIAL_HINT)
    def __init__(self, layers: Sequence[Layer] | Mapping[str, Layer], *,
                 name: str | None = None):
        super().__init__(name)
        given = None
        if isinstance(layers, Mapping):
            given = list(layers.keys())
            layers = list(layers.values())
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
        self.names = position_names(self.layers, given)
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
        layers, names = self.layers, self.names
        keys = split_keys(key, len(layers), layers)
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _dense_then_relu(layers[i], layers[i + 1]):
                # one linear_rows(relu=True) node: the values and gradients of the two
                # layers, the ReLU in place in the product's output (neither has state)
                x = apply_child(names[i], _DenseRelu(layers[i]), params, new_state, x,
                                train=train)
                i += 2
                continue
            x = apply_child(names[i], layers[i], params, new_state, x, train=train,
                            key=keys[i])
            i += 1
        return x, new_state

    def trainable_mask(self, params):
        return {
            name: layer.trainable_mask(params[name])
            for name, layer in dict(zip(self.names, self.layers, strict=True)).items()
            if name in params
        }

    def children(self) -> list[tuple[str, Layer]]:
        return list(zip(self.names, self.layers, strict=True))

    # -- torch's container protocol ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice | str) -> Any:
        """``net[i]``: the i-th layer; ``net["name"]``: the child of that name; ``net[a:b]``:
        a Sequential of those children keeping their names (see :meth:`select`)."""
        n = len(self.layers)
        if isinstance(index, slice):
            picked = range(n)[index]
            if not picked:
                raise IndexRangeError(
                    f"nn.Sequential: the slice [{_slice_text(index)}] selects no layer of a "
                    f"Sequential of {n}; a Sequential needs at least one layer")
            sub = Sequential.__new__(Sequential)
            Layer.__init__(sub)
            sub.layers = [self.layers[i] for i in picked]
            sub.names = [self.names[i] for i in picked]
            sub._has_params = any(has_params(layer) for layer in sub.layers)
            return sub
        if isinstance(index, str):
            if index not in self.names:
                raise MissingKeyError(f"nn.Sequential: no child named {index!r}; the children "
                                      f"are {self.names}")
            return self.layers[self.names.index(index)]
        if isinstance(index, int | np.integer) and not isinstance(index, bool):
            if not -n <= int(index) < n:
                raise IndexRangeError(f"nn.Sequential: index {int(index)} is out of range for "
                                      f"a Sequential of {n} layers ({self.names})")
            return self.layers[int(index)]
        raise ArgumentTypeError(f"nn.Sequential: index with an int, a slice or a child's name, "
                                f"got {type(index).__name__} {index!r}")

    def select(self, tree: dict) -> dict:
        """The entries of a params or state tree (of a larger Sequential) that belong to this
        one's children: what ``apply`` takes after slicing.

        ``first, rest = net[:k], net[k:]``; then ``first.apply(first.select(params),
        first.select(state), x)`` followed by ``rest`` gives ``net.apply(params, state, x)``
        (with a key, the halves split it differently than the whole model does). The new
        states of the two halves merge back with ``{**state, **s1, **s2}``.

        Example:
            >>> import gpudl as gd
            >>> from gpudl import nn
            >>> net = nn.Sequential([nn.Dense(3), nn.BatchNorm1d(), nn.Dense(1)])
            >>> p, s = net.init(0, gd.ops.zeros((4, 2)))
            >>> sorted(net[:2].select(p)), sorted(net[:2].select(s)), sorted(net[2:].select(p))
            (['0', '1'], ['1'], ['2'])
        """
        check_tree(tree, "tree", "nn.Sequential.select")
        return {name: tree[name] for name in dict.fromkeys(self.names) if name in tree}


def _slice_text(index: slice) -> str:
    parts = ["" if v is None else str(v) for v in (index.start, index.stop, index.step)]
    return ":".join(parts if index.step is not None else parts[:2])


def _dense_then_relu(layer: Layer, after: Layer) -> bool:
    """A plain Dense, then a plain ReLU, neither with an ``apply`` of its own set on the
    object (nn.summary records layers by wrapping theirs: those run one by one)."""
    fuses = getattr(layer, "fuses_relu", None)
    plain = getattr(after, "is_plain_relu", None)
    return (fuses is not None and plain is not None and fuses() and plain()
            and "apply" not in vars(layer) and "apply" not in vars(after))


class _DenseRelu:
    """A Dense seen through ``apply_then_relu`` (for :func:`apply_child`'s error naming)."""

    def __init__(self, dense):
        self.dense = dense

    def apply(self, params, state, x, *, train=False, key=None):
        return self.dense.apply_then_relu(params, state, x)
