"""Autoencoders: undercomplete, stacked (greedy pretraining), denoising, sparse, k-sparse,
contractive, convolutional, and the variational autoencoder.

Every model is an ``nn.Layer`` (``init``/``apply``) whose params are
``{"encoder": ..., "decoder": ...}`` (the VAE adds ``"mu"`` and ``"logvar"`` heads). The
decoder ends in *logits*; ``output`` names the activation that turns them into the
reconstruction (``"sigmoid"`` for data in [0, 1], ``None`` for a linear output), so BCE can
use the stable logits form. Losses are per-example sums over features averaged over the
batch (the VAE's ELBO convention), and each returns a scalar for ``gd.value_and_grad``.

This module defines the regularised variants (denoising, sparse, k-sparse, contractive) and
is the family's public face: ``from gpudl.models import autoencoders as ae`` reaches every
name in ``__all__``. The others are defined in ``autoencoders_base`` (the container,
builders and reconstruction losses), ``autoencoders_vae`` (the VAE) and
``autoencoders_training`` (the training loops); their private helpers stay there.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl.models import autoencoders as ae
    >>> model = ae.undercomplete_ae(64, code_dim=8)
    >>> x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    >>> params, state = model.init(gd.random.key(0), x)
    >>> model.apply(params, state, x)[0].shape
    (5, 64)
    >>> float(ae.ae_loss(model, params, x)) > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all
from gpudl.errors import ConfigError, ShapeError
from gpudl.models.autoencoders_base import (
    Autoencoder,
    Shape,
    _mlp_halves,
    ae_loss,
    conv_ae,
    reconstruction_loss,
    stacked_ae,
    undercomplete_ae,
)
from gpudl.models.autoencoders_training import (
    fit_unsupervised,
    greedy_pretrain,
    make_train_step,
)
from gpudl.models.autoencoders_vae import VAE, vae, vae_loss, vae_loss_fn
from gpudl.nn.activations import Activation
from gpudl.nn.base import Layer, Sequential, array_device
from gpudl.nn.core import Dense, Flatten


# -- denoising
def corrupt(key, x, noise: str = "mask", level: float = 0.3):
    """Corrupt a batch for a denoising AE: ``"mask"`` zeroes each entry with probability
    ``level`` (masking noise); ``"gaussian"`` adds ``level * N(0, 1)``.
    ``key`` is a key or an int seed (``gd.random.as_key``).

    Example:
        >>> import numpy as np, gpudl as gd
        >>> xc = corrupt(gd.random.key(0), np.ones((100, 100)), "mask", 0.25)
        >>> round(float((xc == 0).mean()), 2)
        0.25
    """
    key = gdr.as_key(key, "models.autoencoders.corrupt")
    raw = unbox_all(x)
    dev = array_device(x)
    if noise == "mask":
        if not 0.0 <= level < 1.0:
            raise ConfigError(f"corrupt: masking level must be in [0, 1), got {level}")
        keep = gdr.bernoulli(key, 1.0 - level, raw.shape, device=dev)
        return x * keep.astype(raw.dtype)
    if noise == "gaussian":
        return x + level * gdr.normal(key, raw.shape, dtype=raw.dtype, device=dev)
    raise ConfigError(f"corrupt: noise must be 'mask' or 'gaussian', got {noise!r}")


def denoising_ae_loss(model: Autoencoder, params, x, key, noise: str = "mask",
                      level: float = 0.3, kind: str = "bce", state=None):
    """Reconstruct the clean ``x`` from ``corrupt(key, x)`` (a fresh key per step; a key or
    an int seed, as ``gd.random.as_key``)."""
    key = gdr.as_key(key, "models.autoencoders.denoising_ae_loss")
    return ae_loss(model, params, corrupt(key, x, noise, level), kind, state, target=x)


# -- sparse
def sparse_ae_loss(model: Autoencoder, params, x, penalty: str = "kl", rho: float = 0.05,
                   beta: float = 3.0, kind: str = "bce", state=None):
    """Reconstruction + ``beta`` * sparsity penalty on the code.

    ``"kl"``: ``sum_j KL(rho || rho_hat_j)`` with ``rho_hat`` the mean activation of each code
    unit over the batch (needs a code in (0, 1), e.g. a sigmoid); ``"l1"``: the mean over
    examples of ``sum_j |h_j|``.
    """
    h, logits, _ = model.forward(params, state, x)
    rec = reconstruction_loss(logits, x, kind, model.output)
    if penalty == "kl":
        return rec + beta * F.sparsity_kl(rho, ops.mean(h, axis=0))
    if penalty == "l1":
        return rec + beta * ops.sum(ops.abs(h)) / float(h.shape[0])
    raise ConfigError(f"sparse_ae_loss: penalty must be 'kl' or 'l1', got {penalty!r}")


# -- k-sparse
def k_sparse(h, k: int):
    """Keep the ``k`` largest entries of each row of ``h`` (N, H), zero the rest.

    The kept set is chosen on the values (no gradient through the choice); the gradient
    flows through the kept units only (Makhzani & Frey, 2013). On ties the lower index
    is kept: exactly ``k`` units survive per row.

    Example:
        >>> import numpy as np
        >>> k_sparse(np.array([[0.1, 3.0, -1.0, 2.0]]), 2).tolist()
        [[0.0, 3.0, -0.0, 2.0]]
    """
    raw = unbox_all(h)
    if raw.ndim != 2:
        raise ShapeError(f"k_sparse: h must be (N, H), got shape {tuple(raw.shape)}")
    k = int(k)
    if not 1 <= k:
        raise ConfigError(f"k_sparse: k must be >= 1, got {k}")
    if k >= raw.shape[1]:
        return h
    # gd.ops' top_k_mask (not argpartition) so that an ONNX export computes the choice
    return h * ops.astype(ops.top_k_mask(h, k, axis=1), raw.dtype)


class KSparse(Layer):
    """Layer form of :func:`k_sparse` (put it after the code layer)."""

    def __init__(self, k: int, name: str | None = None):
        super().__init__(name)
        self.k = int(k)

    def apply(self, params, state, x, *, train=False, key=None):
        return k_sparse(x, self.k), state


def k_sparse_ae(input_shape: Shape = (1, 28, 28), code_dim: int = 64, k: int = 10, hidden: Sequence[int] = (),
                activation: str | None = "relu", output: str | None = "sigmoid") -> Autoencoder:
    """Autoencoder whose linear code keeps only its ``k`` largest units per example."""
    enc, dec = _mlp_halves(input_shape, (*hidden, code_dim), activation, None)
    return Autoencoder(Sequential([*enc.layers, KSparse(k)]), dec, output)


# -- contractive
def contractive_ae(input_shape: Shape = (1, 28, 28), code_dim: int = 32,
                   output: str | None = "sigmoid") -> Autoencoder:
    """One-layer sigmoid encoder (so the Jacobian penalty has a closed form) and a dense decoder."""
    enc, dec = _mlp_halves(input_shape, (code_dim,), None, "sigmoid")
    return Autoencoder(enc, dec, output)


def _sigmoid_dense_weight(model: Autoencoder, params):
    """The encoder weight if the encoder is [Flatten], Dense, Sigmoid; else None."""
    enc = model.encoder
    if not isinstance(enc, Sequential):
        return None
    layers = [layer for layer in enc.layers if not isinstance(layer, Flatten)]
    if (len(layers) == 2 and isinstance(layers[0], Dense)
            and isinstance(layers[1], Activation) and layers[1].prefix() == "sigmoid"):
        name = enc.names[enc.layers.index(layers[0])]
        return params["encoder"][name]["weight"]
    return None


def contractive_ae_loss(model: Autoencoder, params, x, lam: float = 0.1, kind: str = "bce",
                        closed_form: bool | None = None, state=None):
    """Reconstruction + ``lam * ||d h / d x||_F^2`` (mean over examples), Rifai et al. 2011.

    ``closed_form=None`` uses ``F.contractive_penalty_sigmoid`` when the encoder is a single
    Dense + Sigmoid, else the generic Jacobian (one backward pass per code unit, trained
    through with grad-of-grad).
    """
    h, logits, _ = model.forward(params, state, x)
    rec = reconstruction_loss(logits, x, kind, model.output)
    w = _sigmoid_dense_weight(model, params)
    if closed_form and w is None:
        raise ConfigError("contractive_ae_loss: closed_form=True needs an encoder made of one "
                         "Dense layer and a Sigmoid (see contractive_ae)")
    if w is not None and closed_form is not False:
        return rec + lam * F.contractive_penalty_sigmoid(h, w)
    shape = tuple(x.shape)

    def encode_flat(v):  # contractive_penalty wants (N, D) -> (N, H)
        return model.encode(params, ops.reshape(v, shape), state)

    return rec + lam * F.contractive_penalty(encode_flat, ops.reshape(x, (shape[0], -1)))


__all__ = [
    "Autoencoder", "VAE", "KSparse", "undercomplete_ae", "stacked_ae", "k_sparse_ae",
    "contractive_ae", "conv_ae", "vae", "reconstruction_loss", "ae_loss", "corrupt",
    "denoising_ae_loss", "sparse_ae_loss", "k_sparse", "contractive_ae_loss", "vae_loss",
    "vae_loss_fn", "make_train_step", "fit_unsupervised", "greedy_pretrain",
]
