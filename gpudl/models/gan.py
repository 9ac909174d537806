"""Generative adversarial networks: MLP GAN, DCGAN, conditional GAN, and their training.

Generators and discriminators are ordinary ``nn`` layers: a generator maps latent codes
``z`` (N, latent_dim) to samples, a discriminator maps samples to one logit each (N, 1).
A conditional pair takes ``(x, labels)`` tuples (:class:`Conditional`). Training
(:mod:`gpudl.models.gan_training`, re-exported here): ``gd.fit`` on a :class:`GAN` with its
``losses()`` (progress bar, callbacks, checkpoints, exact resume), or one step at a time
with :func:`gan_train_step` on a :class:`GANState` of plain trees (Goodfellow et al.'s
alternating updates, non-saturating generator loss by default).

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import optim
    >>> from gpudl.models import gan
    >>> g, d = gan.mlp_generator(2, hidden=(16,), output=None), gan.mlp_discriminator((16,))
    >>> g_opt, d_opt = optim.adam(1e-3), optim.adam(1e-3)
    >>> x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    >>> st = gan.gan_init(gd.random.key(0), g, d, g_opt, d_opt, x[:1], latent_dim=4)
    >>> st, m = gan.gan_train_step(g, d, g_opt, d_opt, st, x, gd.random.key(1), latent_dim=4)
    >>> sorted(m)
    ['d_fake', 'd_loss', 'd_real', 'g_loss']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.errors import ArgumentTypeError, ShapeError
from gpudl.models.gan_training import GAN, GANState, gan_init, gan_train_step, generate, latent
from gpudl.nn.activations import Activation
from gpudl.nn.base import Layer, Sequential, array_device
from gpudl.nn.conv import Conv2d, ConvTranspose2d
from gpudl.nn.core import Dense, Flatten, Reshape
from gpudl.nn.normalization import BatchNorm1d, BatchNorm2d, Dropout, Embedding

Shape = int | Sequence[int]


def _leaky(slope: float) -> Layer:
    return Activation("leaky_relu", negative_slope=slope)


def _out_act(output: str | None) -> list[Layer]:
    return [] if output is None or output in ("linear", "identity") else [Activation(output)]


# ----------------------------------------------------------------------------- MLP GAN
def mlp_generator(out_shape: Shape = (1, 28, 28), hidden: Sequence[int] = (128, 256), slope: float = 0.2,
                  batch_norm: bool = False, output: str | None = "tanh") -> Sequential:
    """``z -> [Dense, (BN), LeakyReLU] x len(hidden) -> Dense(prod(out_shape)) -> output``.

    ``output="tanh"`` for data scaled to [-1, 1] (the usual choice), ``"sigmoid"`` for
    [0, 1], ``None`` for unbounded data (2-D toys). An ``out_shape`` tuple such as
    ``(1, 28, 28)`` reshapes each sample.
    """
    shape = (int(out_shape),) if isinstance(out_shape, int | np.integer) else tuple(out_shape)
    layers: list[Layer] = []
    for h in hidden:
        layers += [Dense(h)] + ([BatchNorm1d()] if batch_norm else []) + [_leaky(slope)]
    layers.append(Dense(int(math.prod(shape))))
    layers += _out_act(output)
    if len(shape) > 1:
        layers.append(Reshape(shape))
    return Sequential(layers)


def mlp_discriminator(hidden: Sequence[int] = (256, 128), slope: float = 0.2,
                      dropout: float = 0.0) -> Sequential:
    """``x -> Flatten -> [Dense, LeakyReLU, (Dropout)] x len(hidden) -> Dense(1)`` (a logit)."""
    layers: list[Layer] = [Flatten()]
    for h in hidden:
        layers += [Dense(h), _leaky(slope)] + ([Dropout(dropout)] if dropout else [])
    layers.append(Dense(1))
    return Sequential(layers)


# ----------------------------------------------------------------------------- DCGAN
def _stages(image_size: int) -> tuple[int, int]:
    if image_size == 28:
        return 7, 2  # 7 -> 14 -> 28
    if image_size == 32:
        return 4, 3  # 4 -> 8 -> 16 -> 32
    raise ShapeError(f"DCGAN: image_size must be 28 or 32, got {image_size}")


def dcgan_generator(image_size: int = 28, channels: int = 1, base: int = 64,
                    batch_norm: bool = True) -> Sequential:
    """Radford et al.'s generator: Dense -> (C, s, s) -> ConvTranspose2d(4, stride 2, pad 1)
    stages that double H and W, BatchNorm + ReLU between, tanh out.

    28x28: 7 -> 14 -> 28; 32x32: 4 -> 8 -> 16 -> 32. ``base`` is the width of the last
    hidden stage; earlier stages double it.
    """
    start, n_up = _stages(image_size)
    c = base * 2 ** (n_up - 1)

    def bn(rank: int) -> list[Layer]:
        return ([BatchNorm2d()] if rank == 4 else [BatchNorm1d()]) if batch_norm else []

    layers: list[Layer] = [Dense(c * start * start), *bn(2), Activation("relu"),
                           Reshape((c, start, start))]
    for _ in range(n_up - 1):
        c //= 2
        layers += [ConvTranspose2d(c, 4, stride=2, padding=1), *bn(4), Activation("relu")]
    layers += [ConvTranspose2d(channels, 4, stride=2, padding=1), Activation("tanh")]
    return Sequential(layers)


def dcgan_discriminator(image_size: int = 28, base: int = 64, slope: float = 0.2,
                        batch_norm: bool = True) -> Sequential:
    """Strided Conv2d(4, stride 2, pad 1) stages that halve H and W, LeakyReLU(0.2), BatchNorm
    after the first stage; flattened into one logit. 28: 28 -> 14 -> 7; 32: 32 -> 16 -> 8 -> 4.
    """
    _, n_down = _stages(image_size)
    layers: list[Layer] = [Conv2d(base, 4, stride=2, padding=1), _leaky(slope)]
    for i in range(1, n_down):
        layers += [Conv2d(base * 2 ** i, 4, stride=2, padding=1)]
        layers += ([BatchNorm2d()] if batch_norm else []) + [_leaky(slope)]
    layers += [Flatten(), Dense(1)]
    return Sequential(layers)


# ----------------------------------------------------------------------------- conditional
class Conditional(Layer):
    """Make ``net`` conditional: it is applied to ``concat(flatten(x), code(labels))``.

    The label code is ``one_hot(labels, num_classes)`` or, with ``embed_dim``, a learned
    ``Embedding(num_classes, embed_dim)`` (params ``{"net": ..., "embedding": ...}``).
    Inputs are ``(x, labels)`` tuples: ``(z, y)`` for a generator, ``(images, y)`` for a
    discriminator (Mirza & Osindero, 2014).
    """

    base_name = "conditional"

    def __init__(self, net: Layer, num_classes: int, embed_dim: int | None = None,
                 name: str | None = None):
        super().__init__(name)
        self.net, self.num_classes = net, int(num_classes)
        self.embedding = Embedding(num_classes, embed_dim) if embed_dim else None

    def _joined(self, params, inputs):
        x, labels = self._split(inputs)
        raw = unbox_all(x)
        if self.embedding is None:
            code = ops.one_hot(labels, self.num_classes, dtype=raw.dtype)
            if array_device(x) != array_device(code):
                from gpudl.backend import asarray

                code = asarray(code, device=array_device(x))
        else:
            code, _ = self.embedding.apply(params["embedding"], {}, labels)
            code = ops.astype(code, raw.dtype) if code.dtype != raw.dtype else code
        return ops.concatenate([ops.reshape(x, (raw.shape[0], -1)), code], axis=1)

    def _split(self, inputs):
        if not isinstance(inputs, tuple | list) or len(inputs) != 2:
            raise ArgumentTypeError(f"Conditional: input must be an (x, labels) pair, got "
                            f"{type(inputs).__name__}")
        x, labels = inputs
        if tuple(unbox_all(labels).shape) != (x.shape[0],):
            raise ShapeError(f"Conditional: labels must have shape ({x.shape[0]},), got "
                             f"{tuple(unbox_all(labels).shape)}")
        return x, labels

    def init(self, key, inputs):
        ke, kn = gdr.split(key)
        params: dict = {}
        if self.embedding is not None:
            x, labels = self._split(inputs)
            params["embedding"], _ = self.embedding.init(ke, labels)
            params["embedding"]["weight"] = params["embedding"]["weight"].astype(
                unbox_all(x).dtype)
        params["net"], state = self.net.init(kn, self._joined(params, inputs))
        return params, ({"net": state} if state else {})

    def apply(self, params, state, inputs, *, train=False, key=None):
        y, s = self.net.apply(params["net"], (state or {}).get("net", {}),
                              self._joined(params, inputs), train=train, key=key)
        return y, ({"net": s} if s else {})


def cgan_generator(num_classes: int = 10, out_shape: Shape = (1, 28, 28),
                   hidden: Sequence[int] = (128, 256), embed_dim: int | None = None,
                   output: str | None = "tanh") -> Conditional:
    """Conditional MLP generator: ``(z, labels) -> sample``."""
    return Conditional(mlp_generator(out_shape, hidden, output=output), num_classes, embed_dim)


def cgan_discriminator(num_classes: int = 10, hidden: Sequence[int] = (256, 128),
                       embed_dim: int | None = None, dropout: float = 0.0) -> Conditional:
    """Conditional MLP discriminator: ``(x, labels) -> logit``."""
    return Conditional(mlp_discriminator(hidden, dropout=dropout), num_classes, embed_dim)


__all__ = [
    "mlp_generator", "mlp_discriminator", "dcgan_generator", "dcgan_discriminator",
    "Conditional", "cgan_generator", "cgan_discriminator", "GANState", "GAN", "latent",
    "gan_init", "generate", "gan_train_step",
]
