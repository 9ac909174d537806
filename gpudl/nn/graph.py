"""Keras-style graphs: ``nn.Input`` placeholders, layers called on them, ``nn.Model``.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> x = nn.Input((4,))
    >>> h = nn.Dense(8)(x)
    >>> y = nn.Add()([nn.Dense(8)(h), h])          # a skip connection
    >>> model = nn.Model(x, nn.Dense(2)(y))
    >>> params, state = model.init(gd.random.key(0))  # example built from Input's shape
    >>> model.apply(params, state, gd.ops.ones((3, 4)))[0].shape
    (3, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpudl import ops
from gpudl.autodiff import postorder
from gpudl.backend import get_device, xp_for
from gpudl.errors import ArgumentTypeError, ConfigError
from gpudl.nn.base import Layer, apply_child, check_children, has_params, name_children, split_keys


class Symbolic:
    """A value in a graph under construction: an Input, or a layer applied to parents."""

    def __init__(self, layer: Layer | None, parents: tuple, shape=None, dtype=None, multi=False):
        self.layer, self.parents = layer, parents
        self.shape, self.dtype, self.multi = shape, dtype, multi

    def __repr__(self) -> str:
        what = "Input" if self.layer is None else type(self.layer).__name__
        return f"Symbolic({what}, shape={self.shape})"


def Input(shape: Sequence[int], dtype: Any = np.float32) -> Symbolic:  # noqa: N802 - Keras name
    """A graph input; ``shape`` excludes the batch dim."""
    return Symbolic(None, (), shape=tuple(shape), dtype=np.dtype(dtype))


def call_symbolic(layer: Layer, inputs: tuple):
    # layer([a, b]) and layer(a, b) both hand the layer a list (merge layers such as Add);
    # layer(a) hands it the single value.
    flat = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) else inputs
    multi = len(flat) != 1 or isinstance(inputs[0], (list, tuple))
    if not flat:
        raise ArgumentTypeError(f"{type(layer).__name__}() called with no inputs; pass nn.Input "
                                "values")
    if not all(isinstance(i, Symbolic) for i in flat):
        raise ArgumentTypeError(
            f"{type(layer).__name__}(...) called on {[type(i).__name__ for i in flat]}: calling a "
            "layer builds a graph from nn.Input values; to compute, use layer.apply(params, "
            "state, x)"
        )
    return Symbolic(layer, tuple(flat), multi=multi)


def _topo(outputs: Sequence[Symbolic]) -> list[Symbolic]:
    return postorder(outputs, lambda node: node.parents)


class Model(Layer):
    """A layer built from a graph of ``nn.Input`` values; multiple inputs/outputs allowed."""

    base_name = "model"

    def __init__(self, inputs, outputs, name: str | None = None):
        super().__init__(name)
        self.single_input = isinstance(inputs, Symbolic)
        self.single_output = isinstance(outputs, Symbolic)
        self.inputs = [inputs] if self.single_input else list(inputs)
        self.outputs = [outputs] if self.single_output else list(outputs)
        self.nodes = _topo(self.outputs)
        missing = [n for n in self.nodes
                   if n.layer is None and all(n is not i for i in self.inputs)]
        if missing:
            raise ConfigError(f"nn.Model: the outputs depend on inputs not listed: {missing}; "
                              "pass every nn.Input they use in inputs=")
        layer_nodes = [n for n in self.nodes if n.layer is not None]
        unique: list[Layer] = []
        for n in layer_nodes:
            if all(n.layer is not u for u in unique):
                unique.append(n.layer)
        self.layers = unique
        self.names = name_children(unique)
        self._name_of = {id(layer): nm for layer, nm in zip(unique, self.names, strict=True)}
        self._has_params = any(has_params(layer) for layer in unique)

    def example_inputs(self, batch: int = 1, device: str | None = None):
        xp = xp_for(device or get_device())
        xs = [xp.zeros((batch, *i.shape), dtype=i.dtype) for i in self.inputs]
        return xs[0] if self.single_input else tuple(xs)

    def _run(self, params, state, x, train, key, initializing, init_key=None):
        if self.single_input and isinstance(x, (list, tuple)):
            xs = list(x)  # a list given to a one-input model: wrong unless it holds one array
            if len(xs) == 1:
                x = xs[0]
        else:
            xs = [x] if self.single_input else list(x)
        if len(xs) != len(self.inputs):
            raise ConfigError(
                f"nn.Model: expected {len(self.inputs)} inputs, got {len(xs)}; pass "
                + ("one array" if self.single_input else f"a tuple of {len(self.inputs)} arrays")
            )
        xs = [x] if self.single_input else xs
        values = {id(i): v for i, v in zip(self.inputs, xs, strict=True)}
        new_state = dict(state)
        layer_nodes = [n for n in self.nodes if n.layer is not None]
        keys = split_keys(key, len(layer_nodes))
        init_keys = dict(zip(self.names, split_keys(init_key, len(self.names)), strict=True))
        initialized: set[str] = set()  # a layer used at several nodes is initialised once
        for node, k in zip(layer_nodes, keys, strict=True):
            name = self._name_of[id(node.layer)]
            args = [values[id(p)] for p in node.parents]
            arg = args if node.multi else args[0]
            if initializing and name not in initialized:
                p, s, y = node.layer.init_and_apply(init_keys[name], arg)
                if has_params(node.layer):
                    params[name] = p
                initialized.add(name)
                if s:
                    new_state[name] = s
            else:
                y = apply_child(name, node.layer, params, new_state, arg, train=train, key=k)
            values[id(node)] = y
        outs = [values[id(o)] for o in self.outputs]
        return (outs[0] if self.single_output else tuple(outs)), new_state

    def init(self, key, x=None):
        x = self.example_inputs() if x is None else x
        params: dict = {}
        _, state = self._run(params, {}, x, False, None, True, init_key=key)
        return params, state

    def apply(self, params, state, x, *, train=False, key=None):
        check_children(params, self.names, self.layers, "nn.Model", state)
        return self._run(params, state, x, train, key, False)

    def trainable_mask(self, params):
        return {nm: layer.trainable_mask(params[nm])
                for layer, nm in zip(self.layers, self.names, strict=True) if nm in params}

    def children(self) -> list[tuple[str, Layer]]:
        return list(zip(self.names, self.layers, strict=True))

    def summary(self, x_example=None, key=None, print_fn=print) -> None:
        super().summary(self.example_inputs() if x_example is None else x_example, key, print_fn)

    def summary_dict(self, x_example=None, key=None) -> dict:
        return super().summary_dict(self.example_inputs() if x_example is None else x_example, key)


# ------------------------------------------------------------------------ merge layers
class Add(Layer):
    """Sum of a list of inputs of one shape (residual connections in graphs)."""

    def apply(self, params, state, xs, *, train=False, key=None):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out, state


class Multiply(Layer):
    """Elementwise product of a list of inputs."""

    def apply(self, params, state, xs, *, train=False, key=None):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out, state


class Concatenate(Layer):
    """Concatenate a list of inputs along ``axis`` (channels: axis=1 for NCHW)."""

    def __init__(self, axis: int = 1, name: str | None = None):
        super().__init__(name)
        self.axis = axis

    def apply(self, params, state, xs, *, train=False, key=None):
        return ops.concatenate(list(xs), axis=self.axis), state
