"""Autoencoders: undercomplete, stacked (greedy pretraining), denoising, sparse, k-sparse,
contractive, convolutional, and the variational autoencoder.

Every model is an ``nn.Layer`` (``init``/``apply``) whose params are
``{"encoder": ..., "decoder": ...}`` (the VAE adds ``"mu"`` and ``"logvar"`` heads). The
decoder ends in *logits*; ``output`` names the activation that turns them into the
reconstruction (``"sigmoid"`` for data in [0, 1], ``None`` for a linear output), so BCE can
use the stable logits form. Losses are per-example sums over features averaged over the
batch (the VAE's ELBO convention), and each returns a scalar for ``gd.value_and_grad``.

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

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import unbox_all, value_and_grad
from gpudl.backend import module_of
from gpudl.errors import ShapeError
from gpudl.nn.base import Layer, Sequential, array_device
from gpudl.nn.conv import Conv2d, ConvTranspose2d
from gpudl.nn.core import Activation, Dense, Flatten, Reshape
from gpudl.optim import adam, apply_updates

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
        """``(code, decoder logits, new_state)``."""
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
        raise ValueError("autoencoder: need at least one layer size (the code size)")
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
        raise ValueError(f"reconstruction_loss: kind must be 'bce' or 'mse', got {kind!r}")
    n = per.shape[0]
    return ops.sum(per) / float(n)


def ae_loss(model: Autoencoder, params, x, kind: str = "bce", state=None, target=None):
    """Plain reconstruction loss of ``x`` (or of ``target`` from input ``x``)."""
    _, logits, _ = model.forward(params, state, x)
    return reconstruction_loss(logits, x if target is None else target, kind, model.output)


# -- denoising
def corrupt(key, x, noise: str = "mask", level: float = 0.3):
    """Corrupt a batch for a denoising AE: ``"mask"`` zeroes each entry with probability
    ``level`` (masking noise); ``"gaussian"`` adds ``level * N(0, 1)``.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> xc = corrupt(gd.random.key(0), np.ones((100, 100)), "mask", 0.25)
        >>> round(float((xc == 0).mean()), 2)
        0.25
    """
    raw = unbox_all(x)
    dev = array_device(x)
    if noise == "mask":
        if not 0.0 <= level < 1.0:
            raise ValueError(f"corrupt: masking level must be in [0, 1), got {level}")
        keep = gdr.bernoulli(key, 1.0 - level, raw.shape, device=dev)
        return x * keep.astype(raw.dtype)
    if noise == "gaussian":
        return x + level * gdr.normal(key, raw.shape, dtype=raw.dtype, device=dev)
    raise ValueError(f"corrupt: noise must be 'mask' or 'gaussian', got {noise!r}")


def denoising_ae_loss(model: Autoencoder, params, x, key, noise: str = "mask",
                      level: float = 0.3, kind: str = "bce", state=None):
    """Reconstruct the clean ``x`` from ``corrupt(key, x)`` (a fresh key per step)."""
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
    raise ValueError(f"sparse_ae_loss: penalty must be 'kl' or 'l1', got {penalty!r}")


# -- k-sparse
def k_sparse(h, k: int):
    """Keep the ``k`` largest entries of each row of ``h`` (N, H), zero the rest.

    The kept set is chosen on the values (no gradient through the choice); the gradient
    flows through the kept units only (Makhzani & Frey, 2013). Ties are broken arbitrarily
    but exactly ``k`` units survive per row.

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
        raise ValueError(f"k_sparse: k must be >= 1, got {k}")
    if k >= raw.shape[1]:
        return h
    xp = module_of(raw)
    top = xp.argpartition(-raw, k - 1, axis=1)[:, :k]  # (N, k) indices of the k largest
    mask = xp.zeros(raw.shape, dtype=raw.dtype)
    mask[xp.arange(raw.shape[0])[:, None], top] = 1
    return h * mask


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
        raise ValueError("contractive_ae_loss: closed_form=True needs an encoder made of one "
                         "Dense layer and a Sigmoid (see contractive_ae)")
    if w is not None and closed_form is not False:
        return rec + lam * F.contractive_penalty_sigmoid(h, w)
    shape = tuple(x.shape)

    def encode_flat(v):  # contractive_penalty wants (N, D) -> (N, H)
        return model.encode(params, ops.reshape(v, shape), state)

    return rec + lam * F.contractive_penalty(encode_flat, ops.reshape(x, (shape[0], -1)))


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


# ----------------------------------------------------------------------------- VAE
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
        """``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` from ``key``: differentiable
        in ``mu`` and ``logvar``, the randomness is an input."""
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
        """``n`` samples ``decode(z)``, ``z ~ N(0, I)``: (n, *output shape)."""
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
    ``value_and_grad(..., has_aux=True)``; ``beta != 1`` is the beta-VAE."""
    mu, logvar = model.encode(params, x, state)
    z = model.reparameterize(key, mu, logvar)
    rec = reconstruction_loss(model.decode_logits(params, z, state), x, kind, model.output)
    kl = F.gaussian_kl(mu, logvar)
    return rec + beta * kl, {"reconstruction": rec, "kl": kl}


# ----------------------------------------------------------------------------- training
def make_train_step(loss_fn: Callable, optimizer, has_aux: bool = False) -> Callable:
    """``step(params, opt_state, *args) -> (params, opt_state, loss[, aux])`` for a loss
    ``loss_fn(params, *args)`` that is not a plain supervised loss (a pure function).

    Example:
        >>> import numpy as np, gpudl as gd
        >>> m = undercomplete_ae(4, code_dim=2)
        >>> x = np.full((3, 4), 0.5, dtype=np.float32)
        >>> p, _ = m.init(gd.random.key(0), x)
        >>> opt = gd.optim.adam(1e-2)
        >>> step = make_train_step(lambda p, xb: ae_loss(m, p, xb), opt)
        >>> p, s, loss = step(p, opt.init(p), x)
    """
    vg = value_and_grad(loss_fn, has_aux=has_aux)

    def step(params, opt_state, *args):
        value, grads = vg(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_updates(params, updates)
        if has_aux:
            loss, aux = value
            return params, opt_state, loss, aux
        return params, opt_state, value

    return step


def fit_unsupervised(loss_fn: Callable, params, x, key, optimizer=None, steps: int = 200,
                     batch_size: int = 64) -> tuple[Any, list[float]]:
    """Minimise ``loss_fn(params, batch, key)`` on random mini-batches of ``x``.

    Returns ``(params, losses)``. Batches are drawn without replacement within each pass.
    """
    optimizer = optimizer or adam(1e-3)
    step = make_train_step(loss_fn, optimizer)
    opt_state = optimizer.init(params)
    n = x.shape[0]
    b = min(int(batch_size), n)
    losses: list[float] = []
    order, pos = None, n
    for t in range(int(steps)):
        kt = gdr.fold_in(key, t)
        if pos + b > n:
            order, pos = gdr.permutation(gdr.fold_in(kt, 1), n, device=array_device(x)), 0
        idx = order[pos:pos + b]
        pos += b
        params, opt_state, loss = step(params, opt_state, x[idx], gdr.fold_in(kt, 2))
        losses.append(float(loss))
    return params, losses


def greedy_pretrain(key, x, sizes: Sequence[int], activation: str = "sigmoid", steps: int = 200,
                    batch_size: int = 64, optimizer_fn: Callable | None = None) -> dict:
    """Greedy layer-wise pretraining (Bengio et al., 2007) for :func:`stacked_ae`.

    Trains one shallow AE per layer on the codes of the layers below, then assembles
    ``{"encoder": ..., "decoder": ...}`` for ``stacked_ae(x.shape[1:], sizes, activation)``
    (fine-tune it afterwards with :func:`ae_loss`). The first layer reconstructs ``x`` with
    BCE (data in [0, 1]); deeper ones reconstruct sigmoid codes with BCE, other activations'
    codes with MSE.
    """
    optimizer_fn = optimizer_fn or (lambda: adam(1e-2))
    h = ops.reshape(x, (x.shape[0], -1))
    enc, dec = {}, {}
    n = len(sizes)
    for i, s in enumerate(sizes):
        out = "sigmoid" if i == 0 else activation
        kind = "bce" if out == "sigmoid" else "mse"
        shallow = undercomplete_ae(int(h.shape[1]), code_dim=s, activation=activation, output=out)
        ki = gdr.fold_in(key, i)
        params, _ = shallow.init(gdr.fold_in(ki, 0), h[:1])

        def loss(p, xb, _k, shallow=shallow, kind=kind):
            return ae_loss(shallow, p, xb, kind)

        params, _ = fit_unsupervised(loss, params, h, gdr.fold_in(ki, 1), optimizer_fn(), steps,
                                     batch_size)
        enc[f"dense{i + 1}"] = params["encoder"]["dense1"]
        dec[f"dense{n - i}"] = params["decoder"]["dense1"]
        h = unbox_all(shallow.encode(params, h))
    return {"encoder": enc, "decoder": dec}


__all__ = [
    "Autoencoder", "VAE", "KSparse", "undercomplete_ae", "stacked_ae", "k_sparse_ae",
    "contractive_ae", "conv_ae", "vae", "reconstruction_loss", "ae_loss", "corrupt",
    "denoising_ae_loss", "sparse_ae_loss", "k_sparse", "contractive_ae_loss", "vae_loss",
    "make_train_step", "fit_unsupervised", "greedy_pretrain",
]
