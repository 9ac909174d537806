"""Shape-only init: ``model.init_shapes(x)``, the params and state trees of ``model.init(key,
x)`` as :class:`ShapeDtype` leaves (shape, dtype), with no random number drawn.

For summaries, parameter counts and memory estimates of large models (VGG-16's 138M
parameters take ~1 s to draw on one core; its shapes take milliseconds). How it works:
``init`` runs as usual, on the CPU, inside :func:`shape_mode`:

* ``gd.random.no_draw()``: every sampler returns zeros of the right shape and dtype after
  its usual argument checks (lazily allocated pages: untouched, they cost nothing), so every
  initializer and every layer's own ``init`` code runs unchanged;
* the forward passes that ``init`` makes to learn each child's input shape skip the costly
  layers: a ``Dense`` or ``Conv2d`` (whose class does not override ``apply``) returns zeros
  of its output shape, computed with the same geometry code (and errors) as its forward
  pass (:data:`OUTPUT_RULES`); every other layer runs for real, on those zeros;
* numpy's floating-point warnings are off (zeros where weights would be can divide by 0).

Shapes, dtypes and tree structure therefore equal those of a real ``init`` (the tests check
it for the course's recipes); values are never looked at. The example may be arrays or
:class:`ShapeDtype` leaves (no input is allocated then); arrays on the GPU are read back.
Layers may be used from other threads meanwhile: the skipping is active only in the thread
inside :func:`shape_mode`.

Example:
    >>> import numpy as np
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.Conv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.Dense(10)])
    >>> params, state = net.init_shapes(ShapeDtype((1, 3, 32, 32), np.float32))
    >>> params["0"]["weight"], params["3"]["weight"].shape
    (ShapeDtype(shape=(8, 3, 3, 3), dtype=float32), (10, 7200))
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpudl import random as gdr
from gpudl.backend import to_numpy
from gpudl.functional.conv_checks import check_conv_geometry, conv_output_hw
from gpudl.nn.base import Layer
from gpudl.nn.conv import Conv2d
from gpudl.nn.core import Dense
from gpudl.tree import tree_map


class ShapeDtype:
    """An array's shape and dtype, without the array: the leaves of ``init_shapes``.

    Has ``shape``, ``dtype``, ``ndim``, ``size`` and ``nbytes`` as an array does, so
    ``count_params`` and shape checks work on it. Equal when shape and dtype are.

    Example:
        >>> s = ShapeDtype((3, 4), "float32")
        >>> s.size, s.nbytes, s == ShapeDtype.like(np.zeros((3, 4), np.float32))
        (12, 48, True)
    """

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...] | int, dtype: Any = np.float32):
        dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
        self.shape = tuple(int(d) for d in dims)
        self.dtype = np.dtype(dtype)

    @classmethod
    def like(cls, array: Any) -> ShapeDtype:
        """The shape and dtype of an array (or of anything with ``.shape`` and ``.dtype``)."""
        return cls(tuple(array.shape), array.dtype)

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ShapeDtype) and self.shape == other.shape
                and self.dtype == other.dtype)

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"ShapeDtype(shape={self.shape}, dtype={self.dtype})"


def shape_tree(tree: Any) -> Any:
    """A tree of arrays as the same tree of :class:`ShapeDtype` leaves."""
    return tree_map(ShapeDtype.like, tree)


def example_arrays(x_example: Any) -> Any:
    """The example as CPU arrays: ShapeDtype leaves become zeros (lazily allocated), GPU
    arrays are read back, other leaves are kept."""
    def leaf(v):
        if isinstance(v, ShapeDtype):
            return np.zeros(v.shape, v.dtype)
        return to_numpy(v) if hasattr(v, "shape") else v

    return tree_map(leaf, x_example)


# ----------------------------------------------------------------------------- output rules
def _param_shapes_match(layer: Layer, params: Any, x) -> bool:
    if not isinstance(params, dict):
        return False
    got = {k: tuple(getattr(v, "shape", ())) for k, v in params.items()}
    return got == layer.param_shapes(x)


def _floats_alike(x, params: dict) -> bool:
    """x and every param are arrays of one float dtype (the case whose output dtype is x's)."""
    dt = getattr(x, "dtype", None)
    return (isinstance(x, np.ndarray) and dt.kind == "f"
            and all(isinstance(v, np.ndarray) and v.dtype == dt for v in params.values()))


def _dense_output(layer: Dense, params: Any, x) -> Any:
    if getattr(x, "ndim", 0) < 1 or not _param_shapes_match(layer, params, x):
        return None
    if not _floats_alike(x, params):
        return None
    return np.zeros((*x.shape[:-1], layer.features), x.dtype)  # (..., out)


def _conv2d_output(layer: Conv2d, params: Any, x) -> Any:
    if getattr(x, "ndim", 0) != 4 or not _param_shapes_match(layer, params, x):
        return None
    if not _floats_alike(x, params):
        return None
    w, b = params["weight"], params.get("bias")
    try:  # the geometry F.conv2d computes (and checks) for these arguments
        geo = check_conv_geometry("F.conv2d", x.shape, w.shape, None if b is None else b.shape,
                                  layer.stride, layer.padding, layer.dilation, layer.groups)
    except Exception:  # the real forward pass raises its own error
        return None
    ho, wo = conv_output_hw(x.shape[2], x.shape[3], w.shape[2:], geo["stride"],
                            geo["padding"], geo["dilation"])
    return np.zeros((x.shape[0], w.shape[0], ho, wo), x.dtype)  # (N, O, Ho, Wo)


#: Layer class -> fn(layer, params, x) giving zeros of the layer's output (or None: run it).
#: Used for layers whose class's ``apply`` is that class's own (not overridden).
OUTPUT_RULES: dict[type, Callable[[Any, Any, Any], Any]] = {
    Dense: _dense_output,
    Conv2d: _conv2d_output,
}


def _rule_for(layer: Layer) -> Callable | None:
    for cls, rule in OUTPUT_RULES.items():
        if isinstance(layer, cls) and type(layer).apply is cls.apply:
            return rule
    return None


# ----------------------------------------------------------------------------- the layers
def sub_layers(layer: Layer) -> list[tuple[str, Layer]]:
    """A layer's sub-layers with their names: ``children()``, else its attributes holding
    layers (``head``, ``layers.0``, ...)."""
    children = getattr(layer, "children", None)
    if callable(children):
        return list(children())
    found: list[tuple[str, Layer]] = []
    for attr, value in vars(layer).items():
        if isinstance(value, Layer):
            found.append((attr, value))
        elif isinstance(value, (list, tuple)):
            found += [(f"{attr}.{i}", v) for i, v in enumerate(value) if isinstance(v, Layer)]
        elif isinstance(value, dict):
            found += [(f"{attr}.{k}", v) for k, v in value.items() if isinstance(v, Layer)]
    return found


def all_layers(model: Layer) -> tuple[dict[int, Layer], dict[tuple[int, int], str]]:
    """Every reachable layer by id, and each (parent id, child id) -> the child's name."""
    layers: dict[int, Layer] = {}
    names: dict[tuple[int, int], str] = {}
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in layers:
            continue
        layers[id(layer)] = layer
        for name, child in sub_layers(layer):
            names.setdefault((id(layer), id(child)), name)
            stack.append(child)
    return layers, names


# ----------------------------------------------------------------------------- shape mode
_LOCAL = threading.local()  # .depth: shape mode on in this thread
_LOCK = threading.Lock()
_INSTALLED: dict[int, list] = {}  # id(layer) -> [count, layer, apply attribute before]


def _active() -> bool:
    return getattr(_LOCAL, "depth", 0) > 0


def _skipping_apply(layer: Layer, rule: Callable, original: Callable) -> Callable:
    def apply(params, state, x, *, train=False, key=None):
        if _active():
            y = rule(layer, params, x)
            if y is not None:
                return y, state
        return original(params, state, x, train=train, key=key)

    return apply


def _install(layers: list[Layer]) -> list[Layer]:
    """Put the skipping ``apply`` on the layers that have a rule (counted, so overlapping
    shape modes in several threads install it once and remove it last)."""
    done = []
    with _LOCK:
        for layer in layers:
            rule = _rule_for(layer)
            if rule is None:
                continue
            entry = _INSTALLED.get(id(layer))
            if entry is None:
                before = vars(layer).get("apply")
                layer.apply = _skipping_apply(layer, rule, layer.apply)
                entry = _INSTALLED[id(layer)] = [0, layer, before]
            entry[0] += 1
            done.append(layer)
    return done


def _uninstall(layers: list[Layer]) -> None:
    with _LOCK:
        for layer in layers:
            entry = _INSTALLED[id(layer)]
            entry[0] -= 1
            if entry[0] == 0:
                del _INSTALLED[id(layer)]
                if entry[2] is None:
                    del layer.apply
                else:
                    layer.apply = entry[2]


@contextlib.contextmanager
def shape_mode(model: Layer) -> Iterator[None]:
    """Within this block (in this thread): no random draws, and the forward passes of the
    model's Dense/Conv2d layers return zeros of their output shape (see the module doc)."""
    installed = _install(list(all_layers(model)[0].values()))
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        with gdr.no_draw(), np.errstate(all="ignore"):
            yield
    finally:
        _LOCAL.depth -= 1
        _uninstall(installed)


def init_shapes(model: Layer, x_example: Any, key: Any = None) -> tuple[Any, Any]:
    """``(params, state)`` of ``model.init(key, x_example)`` as :class:`ShapeDtype` trees,
    without drawing numbers or running the costly forward passes (see the module doc).

    Example:
        >>> from gpudl import nn
        >>> from gpudl.nn.base import count_params
        >>> params, _ = init_shapes(nn.Dense(3), ShapeDtype((2, 5), np.float32))
        >>> params["weight"], count_params(params)
        (ShapeDtype(shape=(3, 5), dtype=float32), 18)
    """
    x = example_arrays(x_example)
    with shape_mode(model):
        params, state = model.init(gdr.key(0) if key is None else key, x)
    return shape_tree(params), shape_tree(state)
