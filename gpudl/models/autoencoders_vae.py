"""The variational autoencoder (Kingma & Welling): a Gaussian encoder with ``mu`` and
``logvar`` heads, the reparameterised sample, and the negative ELBO as its loss.

Re-exported by :mod:`gpudl.models.autoencoders` (``ae.VAE``, ``ae.vae``, ``ae.vae_loss``).

Example:
    >>> import numpy as np, gpudl as gd
    >>> m = vae(16, latent_dim=2, hidden=(8,))
    >>> x = np.full((3, 16), 0.5, np.float32)
    >>> p, s = m.init(gd.random.key(0), x)
    >>> loss, parts = vae_loss(m, p, x, gd.random.key(1))
    >>> sorted(parts), m.sample(p, gd.random.key(2), 4).shape
    (['kl', 'reconstruction'], (4, 16))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.backend import module_of
from gpudl.models.autoencoders_base import Shape, _activate, _dims, _sub, reconstruction_loss
from gpudl.nn.activations import Activation
from gpudl.nn.base import Layer, Sequential, array_device
from gpudl.nn.core import Dense, Flatten, Reshape


class VAE(Layer):
    """Variational autoencoder (Kingma & Welling): encoder body -> ``mu``, ``logvar`` heads.

    ``apply(params, state, x, key=k)`` samples ``z = mu + exp(logvar / 2) * eps``; without a
    key it decodes ``z = mu``. :func:`vae_loss` is the negative ELBO.
    """

    base_name = "vae"

    def __init__(self, encoder: Layer, decoder: Layer, latent_dim: int,
                 output: str | None = "sigmoid", name: str | None = None):
        super().__init__(name)
        self.encoder, self.decoder, self.output = encoder, decoder, output
        self.latent_dim = int(latent_dim)
        self.mu_head, self.logvar_head = Dense(self.latent_dim), Dense(self.latent_dim)

    def init(self, key, x):
        ke, km, kl, kd = gdr.split(key, 4)
        pe, se = self.encoder.init(ke, x)
        h, _ = self.encoder.apply(pe, se, x)
        pm, _ = self.mu_head.init(km, h)
        pl, _ = self.logvar_head.init(kl, h)
        z = ops.zeros((1, self.latent_dim), dtype=unbox_all(h).dtype, device=array_device(h))
        pd, sd = self.decoder.init(kd, z)
        state = {n: s for n, s in (("encoder", se), ("decoder", sd)) if s}
        return {"encoder": pe, "mu": pm, "logvar": pl, "decoder": pd}, state

    def encode(self, params, x, state=None):
        """``(mu, logvar)``, each (N, latent_dim)."""
        h = self.encoder.apply(params["encoder"], _sub(state, "encoder"), x)[0]
        return (self.mu_head.apply(params["mu"], {}, h)[0],
                self.logvar_head.apply(params["logvar"], {}, h)[0])

    @staticmethod
    def reparameterize(key, mu, logvar):
        """``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` from ``key`` (a key or an int
        seed, as ``gd.random.as_key``): differentiable in ``mu`` and ``logvar``, the
        randomness is an input."""
        key = gdr.as_key(key, "VAE.reparameterize")
        raw = unbox_all(mu)
        eps = gdr.normal(key, raw.shape, dtype=raw.dtype, device=array_device(mu))
        return mu + ops.exp(0.5 * logvar) * eps

    def decode_logits(self, params, z, state=None):
        return self.decoder.apply(params["decoder"], _sub(state, "decoder"), z)[0]

    def decode(self, params, z, state=None):
        return _activate(self.decode_logits(params, z, state), self.output)

    def apply(self, params, state, x, *, train=False, key=None):
        mu, logvar = self.encode(params, x, state)
        z = mu if key is None else self.reparameterize(key, mu, logvar)
        return self.decode(params, z, state), state

    def sample(self, params, key, n: int, state=None, dtype=np.float32):
        """``n`` samples ``decode(z)``, ``z ~ N(0, I)``: (n, *output shape).

        ``key`` is a key or an int seed (``gd.random.as_key``).
        """
        key = gdr.as_key(key, "VAE.sample")
        z = gdr.normal(key, (int(n), self.latent_dim), dtype=dtype,
                       device=array_device(params["mu"]["weight"]))
        return self.decode(params, z, state)

    def interpolate(self, params, z1, z2, steps: int = 8, state=None):
        """Decode ``steps`` points on the line from ``z1`` to ``z2`` (each (latent,) or
        (1, latent)), endpoints included: (steps, *output shape)."""
        z1 = ops.reshape(z1, (1, self.latent_dim))
        z2 = ops.reshape(z2, (1, self.latent_dim))
        raw = unbox_all(z1)
        t = module_of(raw).linspace(0.0, 1.0, int(steps), dtype=raw.dtype)[:, None]  # (steps, 1)
        return self.decode(params, z1 * (1.0 - t) + z2 * t, state)

    def children(self) -> list[tuple[str, Layer]]:
        return [("encoder", self.encoder), ("mu", self.mu_head), ("logvar", self.logvar_head),
                ("decoder", self.decoder)]


def vae(input_shape: Shape = (1, 28, 28), latent_dim: int = 2, hidden: Sequence[int] = (256,),
        activation: str = "relu", output: str | None = "sigmoid") -> VAE:
    """MLP VAE: ``D -> hidden... -> (mu, logvar) in R^latent -> ...hidden -> D``.

    Example:
        >>> import gpudl as gd
        >>> m = vae(64, latent_dim=2, hidden=(32,))
        >>> p, _ = m.init(gd.random.key(0), gd.ops.zeros((1, 64)))
        >>> gd.nn.count_params(p)
        4420
    """
    d, shape = _dims(input_shape)
    enc: list[Layer] = [Flatten()] if shape else []
    for s in hidden:
        enc += [Dense(s), Activation(activation)]
    dec: list[Layer] = []
    for s in reversed(hidden):
        dec += [Dense(s), Activation(activation)]
    dec.append(Dense(d))
    if shape:
        dec.append(Reshape(shape))
    return VAE(Sequential(enc), Sequential(dec), latent_dim, output)


def vae_loss(model: VAE, params, x, key, kind: str = "bce", beta: float = 1.0, state=None):
    """Negative ELBO per example, batch mean: reconstruction (summed over features) +
    ``beta * KL(q(z|x) || N(0, I))``. Returns ``(loss, {"reconstruction", "kl"})`` for
    ``value_and_grad(..., has_aux=True)``; ``beta != 1`` is the beta-VAE. ``key`` is a key
    or an int seed (``gd.random.as_key``)."""
    key = gdr.as_key(key, "models.autoencoders.vae_loss")
    mu, logvar = model.encode(params, x, state)
    z = model.reparameterize(key, mu, logvar)
    rec = reconstruction_loss(model.decode_logits(params, z, state), x, kind, model.output)
    kl = F.gaussian_kl(mu, logvar)
    return rec + beta * kl, {"reconstruction": rec, "kl": kl}


def vae_loss_fn(model: VAE, kind: str = "bce", beta: float = 1.0):
    """The VAE's custom step for ``gd.fit``: ``loss_fn(params, state, batch, key)`` is
    :func:`vae_loss` on the batch's images (``x``, or the first item of ``(x, labels)``)
    with the step's key, and logs ``reconstruction`` and ``kl`` beside the loss.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> m = vae(16, latent_dim=2, hidden=(8,))
        >>> x = np.random.default_rng(0).random((32, 16), dtype=np.float32)
        >>> h = gd.fit(m, x, loss_fn=vae_loss_fn(m), optimizer=gd.optim.adam(1e-2),
        ...            epochs=2, batch_size=16, verbose=0)
        >>> sorted(h.history)
        ['kl', 'loss', 'reconstruction']
    """

    def loss_fn(params, state, batch, key):
        x = batch[0] if isinstance(batch, tuple | list) else batch
        loss, parts = vae_loss(model, params, x, key, kind, beta, state)
        return loss, (state, parts)

    return loss_fn
