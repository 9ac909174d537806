"""Combinators: Residual (optional projection) and Parallel/Concat (Inception branches).

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> block = nn.Residual(nn.Sequential([nn.Dense(4), nn.ReLU()]), projection=nn.Dense(4))
    >>> p, s = block.init(gd.random.key(0), gd.ops.zeros((2, 3)))
    >>> sorted(p)
    ['body', 'projection']
"""

from __future__ import annotations

from collections.abc import Sequence

from gpudl import ops
from gpudl.errors import ShapeError
from gpudl.nn.base import (
    Layer,
    apply_child,
    check_children,
    has_params,
    init_child,
    name_children,
    split_keys,
)


class _Branches(Layer):
    """Shared machinery: named children applied to the same input."""

    def __init__(self, layers: Sequence[Layer], names: Sequence[str] | None, name: str | None):
        super().__init__(name)
        self.layers = list(layers)
        self.names = list(names) if names is not None else name_children(self.layers)
        self._has_params = any(has_params(layer) for layer in self.layers)

    def init(self, key, x):
        params, state, _ = self.init_and_apply(key, x)
        return params, state

    def init_and_apply(self, key, x):
        params, state, outs = {}, {}, []
        seen: set[str] = set()
        keys = split_keys(key, len(self.layers))
        for nm, layer, k in zip(self.names, self.layers, keys, strict=True):
            outs.append(init_child(nm, layer, k, x, params, state, seen))
        return params, state, self._combine(outs, x)

    def apply(self, params, state, x, *, train=False, key=None):
        outs, new_state = self._outputs(params, state, x, train, key)
        return self._combine(outs, x), new_state

    def _combine(self, outs: list, x):
        """The layer's output from its branches' outputs (and its input, for shortcuts)."""
        raise NotImplementedError

    def _outputs(self, params, state, x, train, key):
        check_children(params, self.names, self.layers, f"nn.{type(self).__name__}", state)
        new_state, outs = dict(state), []
        keys = split_keys(key, len(self.layers), self.layers)
        for nm, layer, k in zip(self.names, self.layers, keys, strict=True):
            outs.append(apply_child(nm, layer, params, new_state, x, train=train, key=k))
        return outs, new_state

    def trainable_mask(self, params):
        return {nm: layer.trainable_mask(params[nm])
                for nm, layer in zip(self.names, self.layers, strict=True) if nm in params}

    def children(self):
        return list(zip(self.names, self.layers, strict=True))


class Residual(_Branches):
    """``y = body(x) + projection(x)`` (projection defaults to the identity)."""

    base_name = "residual"

    def __init__(self, body: Layer, projection: Layer | None = None, name: str | None = None):
        layers = [body] + ([projection] if projection is not None else [])
        names = ["body"] + (["projection"] if projection is not None else [])
        super().__init__(layers, names, name)
        self.has_projection = projection is not None

    def _combine(self, outs, x):
        # Also runs during init, so a body/shortcut shape mismatch fails there.
        shortcut = outs[1] if self.has_projection else x
        if tuple(outs[0].shape) != tuple(shortcut.shape):
            raise ShapeError(
                f"nn.Residual: body output {tuple(outs[0].shape)} and shortcut "
                f"{tuple(shortcut.shape)} differ; give a projection layer to match them"
            )
        return outs[0] + shortcut


class Parallel(_Branches):
    """Apply branches to the same input; returns the list of outputs."""

    base_name = "parallel"

    def __init__(self, branches: Sequence[Layer], name: str | None = None):
        super().__init__(branches, None, name)

    def _combine(self, outs, x):
        return outs


class Concat(_Branches):
    """Inception-style: apply branches to the same input, concatenate along ``axis`` (channels)."""

    base_name = "concat"

    def __init__(self, branches: Sequence[Layer], axis: int = 1, name: str | None = None):
        super().__init__(branches, None, name)
        self.axis = axis

    def _combine(self, outs, x):
        return ops.concatenate(outs, axis=self.axis)
