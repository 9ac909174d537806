"""One-step recurrent cells as layers: LSTMCell, GRUCell, RNNCell (torch names and init).

Thin wrappers over ``F.lstm_cell`` / ``F.gru_cell`` / ``F.rnn_cell`` for hand-written loops
(seq2seq decoders, attention decoders). Parameters as torch's cells: ``weight_ih``
(G*H, I), ``weight_hh`` (G*H, H), ``bias_ih`` and ``bias_hh`` (G*H,), with G = 4 (LSTM,
gates i, f, g, o), 3 (GRU, gates r, z, n) or 1 (Elman), all initialised
uniform(-1/sqrt(H), 1/sqrt(H)) as torch. The input size I is inferred from the example.
``bias="single"`` stores one ``bias`` (G*H,) instead (Keras's count; used as ``bias_ih``
with ``bias_hh`` = 0), ``bias=False`` none. ``nn.GRUCell(reset_after=False)`` is the
course's / Keras's reset-before GRU (``F.gru_cell(..., reset_after=False)``).

``apply`` takes ``x`` (N, I) alone (zero initial state), torch's pair ``(x, h)`` /
``(x, (h, c))``, or a dict ``{"x": x, "h": h, "c": c}``. It returns ``h`` (N, H), or
``(h, c)`` for the LSTM cell, as torch.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> cell = nn.LSTMCell(8)
    >>> x = gd.ops.zeros((4, 3))
    >>> p, s = cell.init(gd.random.key(0), x)
    >>> sorted((k, v.shape) for k, v in p.items())[:2]
    [('bias_hh', (32,)), ('bias_ih', (32,))]
    >>> (h, c), s = cell.apply(p, s, x)
    >>> h.shape, c.shape
    ((4, 8), (4, 8))
"""

from __future__ import annotations

import math

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import check_int, layer_label, positional_limit
from gpudl.nn.base import Layer, array_device, check_params, float_dtype
from gpudl.nn.recurrent import (
    _GATES,
    _torch_order_hint,
    bias_names,
    check_bias,
    check_nonlinearity,
    check_reset_after,
)


class _Cell(Layer):
    kind = "rnn"

    @positional_limit(1, _torch_order_hint)
    def __init__(self, hidden_size: int, *, bias: bool | str = True,
                 nonlinearity: str | None = None, reset_after: bool = True,
                 name: str | None = None):
        super().__init__(name)
        self.hidden = check_int(self, "hidden_size", hidden_size)
        self.bias_mode = check_bias(self, bias)
        self.use_bias = self.bias_mode != "none"
        self.nonlinearity = check_nonlinearity(self, nonlinearity)
        self.reset_after = check_reset_after(self, reset_after)

    def prefix(self) -> str:
        return f"{self.kind}_cell"

    def _names(self) -> list[str]:
        return ["weight_ih", "weight_hh", *bias_names(self.bias_mode)]

    def _parts(self, inputs):
        """(x, h, c) from x, (x, h), (x, (h, c)) or {"x", "h", "c"} (missing states: None)."""
        label = layer_label(self)
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"x", "h", "c"}
            if unknown or "x" not in inputs:
                raise ConfigError(f"{label}: input dict keys must be x (required), h, c; got "
                                 f"{sorted(inputs)}")
            x, h, c = inputs["x"], inputs.get("h"), inputs.get("c")
        elif isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise ConfigError(f"{label}: a tuple input must be (x, state) as torch's cell "
                                 f"call, got {len(inputs)} items")
            x, state = inputs
            h, c = state, None
            if self.kind == "lstm" and state is not None:
                if not isinstance(state, (tuple, list)) or len(state) != 2:
                    raise ConfigError(f"{label}: the state must be the pair (h, c), as torch's "
                                     f"LSTMCell(x, (h, c)); got {type(state).__name__}")
                h, c = state
        else:
            x, h, c = inputs, None, None
        if self.kind != "lstm" and c is not None:
            raise ConfigError(f"{label}: has no cell state c (only nn.LSTMCell does); pass "
                              "(x, h) or {'x': x, 'h': h}")
        if x.ndim != 2:
            raise ShapeError(f"{label}: expects x of shape (N, input_size), got shape "
                             f"{tuple(x.shape)}; loop over time steps yourself, or use the "
                             "sequence layer nn.LSTM/nn.GRU/nn.RNN")
        return x, h, c

    def _shapes(self, x) -> dict:
        g, h = _GATES[self.kind], self.hidden
        shapes = {"weight_ih": (g * h, x.shape[1]), "weight_hh": (g * h, h)}
        for b in bias_names(self.bias_mode):
            shapes[b] = (g * h,)
        return shapes

    def param_shapes(self, x) -> dict:
        """weight_ih (G*H, I), weight_hh (G*H, H), biases (G*H,), as torch's cells."""
        return self._shapes(self._parts(x)[0])

    def init(self, key, x):
        x, _, _ = self._parts(x)
        bound = 1.0 / math.sqrt(self.hidden)
        init = inits.uniform(-bound, bound)
        shapes = self._shapes(x)
        names = self._names()
        dtype, dev = float_dtype(x), array_device(x)
        return {n: init(k, shapes[n], dtype=dtype, device=dev)
                for n, k in zip(names, gdr.split(key, len(names)), strict=True)}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        x, h, c = self._parts(x)
        check_params(params, self._shapes(x), self, x)
        zeros = ops.zeros((x.shape[0], self.hidden), dtype=float_dtype(x),
                          device=array_device(x))
        h = zeros if h is None else h
        w = (params["weight_ih"], params["weight_hh"], params.get("bias_ih", params.get("bias")),
             params.get("bias_hh"))
        if self.kind == "lstm":
            return F.lstm_cell(x, h, zeros if c is None else c, *w), state
        if self.kind == "gru":
            return F.gru_cell(x, h, *w, reset_after=self.reset_after), state
        return F.rnn_cell(x, h, *w, nonlinearity=self.nonlinearity), state

    def macs(self, x, y, params):
        g_h, n_in = params["weight_ih"].shape
        x = self._parts(x)[0]
        return int(x.shape[0]) * int(g_h) * (int(n_in) + self.hidden)


class LSTMCell(_Cell):
    """One LSTM step (torch.nn.LSTMCell): ``(x, (h, c)) -> (h', c')``; gates i, f, g, o."""

    kind = "lstm"


class GRUCell(_Cell):
    """One GRU step (torch.nn.GRUCell): ``(x, h) -> h'``; gates r, z, n."""

    kind = "gru"


class RNNCell(_Cell):
    """One Elman step (torch.nn.RNNCell): ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``,
    ``nonlinearity`` 'tanh' (default) or 'relu'."""

    kind = "rnn"
