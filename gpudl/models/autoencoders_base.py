"""The autoencoder container, the dense and convolutional builders, and the
reconstruction losses every variant shares.

``Autoencoder`` params are ``{"encoder": ..., "decoder": ...}``; the decoder ends in
*logits* and ``output`` names the activation that makes them the reconstruction. The
variants (denoising, sparse, k-sparse, contractive) are in
:mod:`gpudl.models.autoencoders`, the VAE in :mod:`gpudl.models.autoencoders_vae`, the
training loops in :mod:`gpudl.models.autoencoders_training`; ``gpudl.models.autoencoders``
(the family's public face) re-exports this module's ``__all__``.

Example:
    >>> import numpy as np, gpudl as gd
    >>> m = conv_ae(1, channels=(4, 8))
    >>> x = np.zeros((2, 1, 8, 8), np.float32)
    >>> p, s = m.init(gd.random.key(0), x)
    >>> m.apply(p, s, x)[0].shape
    (2, 1, 8, 8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.errors import ConfigError
from gpudl.nn.activations import Activation
from gpudl.nn.base import Layer, Sequential
from gpudl.nn.conv import Conv2d, ConvTranspose2d
from gpudl.nn.core import Dense, Flatten, Reshape

__all__ = ["Autoencoder", "ae_loss", "conv_ae", "reconstruction_loss", "stacked_ae",
           "undercomplete_ae"]

Shape = int | Sequence[int]


# ----------------------------------------------------------------------------- containers
def _sub(state, name: str) -> dict:
    return (state or {}).get(name, {})


def _activate(logits, output: str | None):
    if output is None or output in ("linear", "identity"):
        return logits
    return F.get_activation(output)(logits)


class Autoencoder(Layer):
    """An encoder and a decoder; ``apply`` returns the reconstruction ``output(decoder(encoder(x)))``.

    ``encode``/``decode`` are the halves (evaluation mode, ``state`` optional);
    :meth:`forward` returns ``(code, logits, new_state)`` for losses that need the code.
    """

    base_name = "autoencoder"

    def __init__(self, encoder: Layer, decoder: Layer, output: str | None = "sigmoid",
                 name: str | None = None):
        super().__init__(name)
        self.encoder, self.decoder, self.output = encoder, decoder, output

    def init(self, key, x):
        ke, kd = gdr.split(key)
        pe, se = self.encoder.init(ke, x)
        h, _ = self.encoder.apply(pe, se, x)
        pd, sd = self.decoder.init(kd, h)
        state = {n: s for n, s in (("encoder", se), ("decoder", sd)) if s}
        return {"encoder": pe, "decoder": pd}, state

    def forward(self, params, state, x, *, train=False, key=None):
        """``(code, decoder logits, new_state)``; ``key`` (for training-mode noise) is a key
        or an int seed (``gd.random.as_key``)."""
        key = None if key is None else gdr.as_key(key, "Autoencoder.forward")
        ke, kd = (None, None) if key is None else gdr.split(key)
        h, se = self.encoder.apply(params["encoder"], _sub(state, "encoder"), x, train=train, key=ke)
        logits, sd = self.decoder.apply(params["decoder"], _sub(state, "decoder"), h, train=train,
                                        key=kd)
        new_state = {n: s for n, s in (("encoder", se), ("decoder", sd)) if s}
        return h, logits, new_state

    def apply(self, params, state, x, *, train=False, key=None):
        _, logits, new_state = self.forward(params, state, x, train=train, key=key)
        return _activate(logits, self.output), new_state

    def encode(self, params, x, state=None):
        return self.encoder.apply(params["encoder"], _sub(state, "encoder"), x)[0]

    def decode_logits(self, params, h, state=None):
        return self.decoder.apply(params["decoder"], _sub(state, "decoder"), h)[0]

    def decode(self, params, h, state=None):
        return _activate(self.decode_logits(params, h, state), self.output)

    def children(self) -> list[tuple[str, Layer]]:
        return [("encoder", self.encoder), ("decoder", self.decoder)]


def _dims(input_shape: Shape) -> tuple[int, tuple[int, ...] | None]:
    if isinstance(input_shape, int | np.integer):
        return int(input_shape), None
    shape = tuple(int(s) for s in input_shape)
    return int(math.prod(shape)), shape


def _act(name: str | None) -> list[Layer]:
    return [] if name is None or name in ("linear", "identity") else [Activation(name)]


def _mlp_halves(input_shape: Shape, sizes: Sequence[int], activation: str | None,
                code_activation: str | None) -> tuple[Sequential, Sequential]:
    """Encoder Dense(s)+act for each size (the last with ``code_activation``) and its mirror."""
    d, shape = _dims(input_shape)
    if not sizes:
        raise ConfigError("autoencoder: need at least one layer size (the code size)")
    enc: list[Layer] = [Flatten()] if shape else []
    for i, s in enumerate(sizes):
        enc += [Dense(s)] + _act(code_activation if i == len(sizes) - 1 else activation)
    dec: list[Layer] = []
    for s in reversed(sizes[:-1]):
        dec += [Dense(s)] + _act(activation)
    dec.append(Dense(d))
    if shape:
        dec.append(Reshape(shape))
    return Sequential(enc), Sequential(dec)


def undercomplete_ae(input_shape: Shape = (1, 28, 28), code_dim: int = 32, hidden: Sequence[int] = (),
                     activation: str | None = "relu", code_activation: str | None = "same",
                     output: str | None = "sigmoid") -> Autoencoder:
    """Dense autoencoder ``D -> hidden... -> code_dim -> ...hidden -> D``.

    ``input_shape`` is a feature count (inputs (N, D)) or an example shape such as
    ``(1, 8, 8)`` (flattened in, reshaped out). ``code_activation="same"`` uses ``activation``;
    ``None`` gives a linear code (with ``activation=None`` the PCA-like linear AE).

    Example:
        >>> import gpudl as gd
        >>> m = undercomplete_ae((1, 8, 8), code_dim=16, hidden=(32,))
        >>> p, _ = m.init(gd.random.key(0), gd.ops.zeros((2, 1, 8, 8)))
        >>> gd.nn.count_params(p)
        5264
    """
    code_act = activation if code_activation == "same" else code_activation
    enc, dec = _mlp_halves(input_shape, (*hidden, code_dim), activation, code_act)
    return Autoencoder(enc, dec, output)


def stacked_ae(input_shape: Shape = (1, 28, 28), sizes: Sequence[int] = (128, 64, 32),
               activation: str | None = "sigmoid", output: str | None = "sigmoid") -> Autoencoder:
    """Deep symmetric autoencoder; :func:`greedy_pretrain` gives it layer-wise pretrained params.

    Encoder ``dense{i}`` maps to ``sizes[i-1]``; decoder ``dense{i}`` mirrors encoder
    ``dense{L+1-i}``.
    """
    enc, dec = _mlp_halves(input_shape, tuple(sizes), activation, activation)
    return Autoencoder(enc, dec, output)


# ----------------------------------------------------------------------------- losses
def reconstruction_loss(logits, target, kind: str = "bce", output: str | None = "sigmoid"):
    """Per-example summed reconstruction error, averaged over the batch.

    ``"bce"``: binary cross-entropy on the decoder logits (the output is a sigmoid; targets
    in [0, 1]). ``"mse"``: squared error of ``output(logits)`` against the target.
    """
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "mse":
        d = _activate(logits, output) - target
        per = d * d
    else:
        raise ConfigError(f"reconstruction_loss: kind must be 'bce' or 'mse', got {kind!r}")
    n = per.shape[0]
    return ops.sum(per) / float(n)


def ae_loss(model: Autoencoder, params, x, kind: str = "bce", state=None, target=None):
    """Plain reconstruction loss of ``x`` (or of ``target`` from input ``x``)."""
    _, logits, _ = model.forward(params, state, x)
    return reconstruction_loss(logits, x if target is None else target, kind, model.output)


# -- convolutional
def conv_ae(in_channels: int = 1, channels: Sequence[int] = (16, 32), kernel_size: int = 3,
            activation: str = "relu", output: str | None = "sigmoid") -> Autoencoder:
    """Convolutional AE: stride-2 Conv2d per entry of ``channels``, mirrored by ConvTranspose2d.

    Each stage halves H and W exactly (``k=3, p=1, s=2``; transposed with
    ``output_padding=1``), so H and W must be divisible by ``2**len(channels)``
    (8x8 digits and 28x28 MNIST both work with two stages).
    """
    enc: list[Layer] = []
    for c in channels:
        enc += [Conv2d(c, kernel_size, stride=2, padding=kernel_size // 2), Activation(activation)]
    dec: list[Layer] = []
    for c in reversed(channels[:-1]):
        dec += [ConvTranspose2d(c, kernel_size, stride=2, padding=kernel_size // 2,
                                output_padding=1), Activation(activation)]
    dec.append(ConvTranspose2d(in_channels, kernel_size, stride=2, padding=kernel_size // 2,
                               output_padding=1))
    return Autoencoder(Sequential(enc), Sequential(dec), output)

