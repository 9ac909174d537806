"""Recurrent layers: RNN (Elman), LSTM, GRU — multi-layer, bidirectional, torch layouts.

Parameters use torch's names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ``..._reverse``) and shapes, so a torch ``state_dict`` loads directly.
Default init as torch: uniform(-1/sqrt(hidden), 1/sqrt(hidden)) for every tensor.

``bias``: True (torch's two biases per gate, ``bias_ih_l0`` and ``bias_hh_l0``), False
(none) or ``"single"``: one bias per gate, ``bias_l0`` (G*H,), Keras's and the course's
count (SimpleRNN(32) on 32 features: 32*32 + 32*32 + 32 = 2,080 parameters); it is added
where torch adds ``bias_ih`` (torch's ``bias_hh`` = 0), so a torch model with ``bias_hh``
zero maps onto it. ``nn.GRU(reset_after=False)`` is the course's (Keras
``reset_after=False``) GRU, ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``, run as a
composite of gpudl ops; the default torch form uses the fused kernel.

Input: (T, N, I), or (N, T, I) with ``batch_first=True``. ``apply`` takes either the
array, or a dict ``{"x": x, "lengths": (N,) ints, "h0": ..., "c0": ...}`` for
variable-length sequences and explicit initial states (each optional). Output:
all steps (T, N, D*H) by default; ``return_sequences=False`` gives the last valid step
(N, D*H); ``return_state=True`` returns ``(output, h_n)`` or ``(output, (h_n, c_n))``
with h_n (L*D, N, H) as torch.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> lstm = nn.LSTM(16, num_layers=2, bidirectional=True, batch_first=True)
    >>> p, s = lstm.init(gd.random.key(0), gd.ops.zeros((4, 7, 3)))
    >>> lstm.apply(p, s, gd.ops.zeros((4, 7, 3)))[0].shape
    (4, 7, 32)
"""

from __future__ import annotations

import math

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    layer_label,
    positional_limit,
)
from gpudl.nn.base import Layer, check_params

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _torch_order_hint(label: str, args: tuple) -> str:
    hidden = args[1] if len(args) > 1 else "hidden_size"
    return (f"{label} takes (hidden_size, *, num_layers=1, bidirectional=False, ...) and infers "
            f"input_size from the input; for torch's {label[3:]}(input_size, hidden_size) = "
            f"{label[3:]}{tuple(args[:2])!r} write {label}({hidden}) and pass num_layers, "
            "batch_first, ... by keyword.")


def check_bias(layer: Layer, bias) -> str:
    """``bias`` True / False / "single" as 'double' (torch's b_ih + b_hh), 'none', 'single'."""
    if bias == "single":
        return "single"
    hint = ("Use True (torch's bias_ih and bias_hh), 'single' (one bias per gate, as Keras) "
            "or False.")
    return "double" if check_bool(layer, "bias", bias, hint=hint) else "none"


def check_reset_after(layer: Layer, reset_after: bool) -> bool:
    """GRU layers and cells only: False selects the reset-before (Keras/course) form."""
    reset_after = check_bool(layer, "reset_after", reset_after)
    if layer.kind != "gru" and not reset_after:
        raise LayerArgumentError(f"{layer_label(layer)}: reset_after applies to nn.GRU and "
                                 "nn.GRUCell only; remove the argument")
    return reset_after


def bias_names(mode: str, sfx: str = "") -> list[str]:
    """Parameter names of the biases for a bias mode ('double', 'single', 'none')."""
    return {"double": [f"bias_ih{sfx}", f"bias_hh{sfx}"], "single": [f"bias{sfx}"],
            "none": []}[mode]


def check_nonlinearity(layer: Layer, nonlinearity: str | None) -> str | None:
    """RNN layers and cells take 'tanh' or 'relu'; LSTM/GRU have fixed gate functions."""
    label = layer_label(layer)
    if layer.kind != "rnn":
        if nonlinearity is not None:
            raise LayerArgumentError(
                f"{label}: got nonlinearity={nonlinearity!r}, but an {layer.kind.upper()} has "
                "fixed gate functions (sigmoid gates, tanh candidate) as torch's, so it would "
                f"be ignored. Remove the argument; nonlinearity applies to nn.RNN/nn.RNNCell "
                "only.")
        return None
    nonlinearity = "tanh" if nonlinearity is None else nonlinearity
    return check_choice(layer, "nonlinearity", nonlinearity, ("tanh", "relu"))


class _Recurrent(Layer):
    kind = "rnn"

    @positional_limit(1, _torch_order_hint)
    def __init__(self, hidden_size: int, *, num_layers: int = 1, bidirectional: bool = False,
                 batch_first: bool = False, dropout: float = 0.0, bias: bool | str = True,
                 return_sequences: bool = True, return_state: bool = False,
                 nonlinearity: str | None = None, reset_after: bool = True,
                 name: str | None = None):
        super().__init__(name)
        self.hidden = check_int(self, "hidden_size", hidden_size)
        self.num_layers = check_int(self, "num_layers", num_layers)
        self.bidirectional = check_bool(self, "bidirectional", bidirectional)
        self.batch_first = check_bool(self, "batch_first", batch_first)
        self.dropout = check_float(self, "dropout", dropout, 0.0, 1.0, high_open=True, hint=(
            "It is the drop probability between stacked layers (torch's dropout)."))
        self.bias_mode = check_bias(self, bias)
        self.use_bias = self.bias_mode != "none"
        self.reset_after = check_reset_after(self, reset_after)
        self.return_sequences = check_bool(self, "return_sequences", return_sequences)
        self.return_state = check_bool(self, "return_state", return_state)
        self.nonlinearity = check_nonlinearity(self, nonlinearity)

    def prefix(self) -> str:
        return self.kind

    def _suffixes(self) -> list[str]:
        dirs = ["", "_reverse"] if self.bidirectional else [""]
        return [f"_l{layer}{d}" for layer in range(self.num_layers) for d in dirs]

    def _names(self) -> list[str]:
        names = []
        for sfx in self._suffixes():
            names += [f"weight_ih{sfx}", f"weight_hh{sfx}", *bias_names(self.bias_mode, sfx)]
        return names

    def _shapes(self, n_in: int) -> dict:
        """Every param's shape for input size ``n_in``, in :meth:`_names` order."""
        g, h, d = _GATES[self.kind], self.hidden, 2 if self.bidirectional else 1
        shapes = {}
        for sfx in self._suffixes():
            shapes[f"weight_ih{sfx}"] = (g * h, n_in if sfx.startswith("_l0") else d * h)
            shapes[f"weight_hh{sfx}"] = (g * h, h)
            for b in bias_names(self.bias_mode, sfx):
                shapes[b] = (g * h,)
        return shapes

    def param_shapes(self, x) -> dict:
        """torch's shapes: weight_ih_l{k} (G*H, I or D*H), weight_hh_l{k} (G*H, H), biases."""
        x = x["x"] if isinstance(x, dict) else x
        return self._shapes(x.shape[-1])

    def init(self, key, x):
        x = x["x"] if isinstance(x, dict) else x
        if x.ndim != 3:
            layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ShapeError(f"nn.{type(self).__name__}: expects a 3-D input {layout}, got "
                             f"shape {tuple(x.shape)}")
        bound = 1.0 / math.sqrt(self.hidden)
        init = inits.uniform(-bound, bound)
        shapes = self._shapes(x.shape[-1])
        keys = gdr.split(key, len(shapes))
        params = {}
        for (name, shape), k in zip(shapes.items(), keys):
            params[name] = init(k, shape, dtype=x.dtype, device=device_of(x))
        return params, {}

    def apply(self, params, state, x, *, train=False, key=None):
        inputs = x if isinstance(x, dict) else {"x": x}
        unknown = set(inputs) - {"x", "lengths", "h0", "c0"}
        if unknown:
            raise ConfigError(f"nn.{type(self).__name__}: unknown input keys {sorted(unknown)}; "
                              "use x, lengths, h0, c0")
        check_params(params, self._shapes(inputs["x"].shape[-1]), self, inputs["x"])
        seq, lengths = inputs["x"], inputs.get("lengths")
        h0, c0 = inputs.get("h0"), inputs.get("c0")
        d = 2 if self.bidirectional else 1
        if self.batch_first:
            seq = ops.swapaxes(seq, 0, 1)  # work in (T, N, I)
        self._check_initial_states(h0, c0, d, seq.shape[1] if len(seq.shape) == 3 else None)
        keys = gdr.split(key, self.num_layers) if (key is not None and self.dropout and train) \
            else [None] * self.num_layers
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            outs = []
            for di in range(d):
                sfx = f"_l{layer}" + ("_reverse" if di else "")
                w = {k: params[f"{k}{sfx}"] for k in ("weight_ih", "weight_hh",
                                                       *bias_names(self.bias_mode))}
                idx = layer * d + di
                hi = None if h0 is None else h0[idx]
                y, final = self._run_one(seq, hi, None if c0 is None else c0[idx], w, lengths,
                                         bool(di))
                outs.append(y)
                if self.kind == "lstm":
                    finals_h.append(final[0])
                    finals_c.append(final[1])
                else:
                    finals_h.append(final)
            seq = outs[0] if d == 1 else ops.concatenate(outs, axis=-1)
            if self.dropout and train and layer < self.num_layers - 1:
                seq = F.dropout(seq, self.dropout, keys[layer], train=True)
        out = seq
        if not self.return_sequences:
            out = self._last_step(seq, lengths)
        elif self.batch_first:
            out = ops.swapaxes(seq, 0, 1)
        if not self.return_state:
            return out, state
        h_n = ops.concatenate(finals_h, axis=0)
        if self.kind == "lstm":
            return (out, (h_n, ops.concatenate(finals_c, axis=0))), state
        return (out, h_n), state

    def _check_initial_states(self, h0, c0, d: int, n: int | None) -> None:
        """torch's rule: h0 (and an LSTM's c0) of shape (num_layers * num_directions, N,
        hidden); extra layers were dropped silently and too few failed with a bare
        IndexError, and a GRU or RNN ignored a c0."""
        name = f"nn.{type(self).__name__}"
        if c0 is not None and self.kind != "lstm":
            raise ConfigError(f"{name}: c0 was given, but only an LSTM has a cell state; pass "
                              "h0 alone")
        want = (self.num_layers * d, *(() if n is None else (n,)), self.hidden)
        for label, s0 in (("h0", h0), ("c0", c0)):
            if s0 is not None and tuple(s0.shape) != want:
                raise ShapeError(
                    f"{name}: {label} must be (num_layers * num_directions, N, hidden) = "
                    f"{want} for num_layers={self.num_layers}, "
                    f"bidirectional={self.bidirectional}, got {tuple(s0.shape)}")

    def _run_one(self, seq, h0, c0, w, lengths, reverse):
        if self.kind == "lstm":
            return F.lstm(seq, h0, c0, w, lengths=lengths, reverse=reverse)
        if self.kind == "gru":
            return F.gru(seq, h0, w, lengths=lengths, reverse=reverse,
                         reset_after=self.reset_after)
        return F.rnn(seq, h0, w, lengths=lengths, reverse=reverse, nonlinearity=self.nonlinearity)

    def _last_step(self, seq, lengths):
        """(T, N, D*H) -> (N, D*H): the forward half at each sequence's last valid step and,
        when bidirectional, the reverse half at step 0 (where the reverse pass ends)."""
        t_len, n = seq.shape[0], seq.shape[1]
        if lengths is None:
            last = ops.getitem(seq, t_len - 1)
        else:
            lens = unbox_all(lengths)
            xp = module_of(lens)
            idx = xp.maximum(lens - 1, 0)
            last = ops.getitem(seq, (idx, xp.arange(n)))
        if not self.bidirectional:
            return last
        h = self.hidden
        return ops.concatenate([last[:, :h], ops.getitem(seq, 0)[:, h:]], axis=-1)


class RNN(_Recurrent):
    """Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or relu)."""

    kind = "rnn"


class LSTM(_Recurrent):
    """LSTM with torch's gate order (i, f, g, o) and parameter names."""

    kind = "lstm"


class GRU(_Recurrent):
    """GRU with torch's gate order (r, z, n) and parameter names."""

    kind = "gru"
