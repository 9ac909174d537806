"""Every public function of gpudl.models, gpudl.inspect and gpudl.data that takes a PRNG key
also takes an int seed (``gd.random.as_key``): seed ``s`` gives exactly what
``gd.random.key(s)`` gives, and a float seed raises ArgumentTypeError naming the function.

Layers' ``init``/``apply`` and ``F.dropout`` are covered in tests/nn; this module covers the
functions and methods outside the layer protocol.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import gpudl as gd
from gpudl import inspect as gdi
from gpudl import nn, optim
from gpudl.backend import to_numpy
from gpudl.data import transforms
from gpudl.data.loader import DataLoader
from gpudl.data.text import bucket_batches
from gpudl.errors import ArgumentTypeError
from gpudl.models import autoencoders as ae
from gpudl.models import decoding, gan, linear, word2vec
from gpudl.models.sequence import CharLM
from gpudl.models.transformer import GPT, TransformerClassifier

SEED = 7
RNG = np.random.default_rng(0)
X01 = RNG.random((4, 6), dtype=np.float32)  # data in [0, 1) for the autoencoders
IMGS = RNG.random((3, 1, 5, 5), dtype=np.float32)
IDS = np.array([[1, 2, 3], [3, 1, 4]], dtype=np.int64)
LATENT = 3


def _k0():
    return gd.random.key(0)


# ----------------------------------------------------------------------------- tiny setups
@functools.cache
def _ae():
    m = ae.undercomplete_ae(6, code_dim=2)
    return m, m.init(_k0(), X01)[0]


@functools.cache
def _dropout_ae():
    m = ae.Autoencoder(nn.Sequential([nn.Dense(3), nn.Dropout(0.5)]), nn.Sequential([nn.Dense(6)]))
    return m, m.init(_k0(), X01)[0]


@functools.cache
def _vae():
    m = ae.vae(6, latent_dim=2, hidden=(4,))
    return m, m.init(_k0(), X01)[0]


@functools.cache
def _gan():
    g = gan.mlp_generator(2, hidden=(4,), output=None)
    d = gan.mlp_discriminator((4,))
    x = RNG.normal(size=(4, 2)).astype(np.float32)
    go, do = optim.sgd(0.1), optim.sgd(0.1)
    st = gan.gan_init(_k0(), g, d, go, do, x[:1], latent_dim=LATENT)
    return g, d, go, do, st, x


@functools.cache
def _charlm():
    lm = CharLM(5, embed_dim=4, hidden=6, num_layers=2, dropout=0.5)
    return lm, lm.init(_k0(), IDS)[0]


@functools.cache
def _gpt():
    m = GPT(5, d_model=8, num_heads=2, num_layers=1, max_len=8)
    return m, m.init(_k0(), IDS)[0]


@functools.cache
def _clf():
    m = TransformerClassifier(vocab_size=5, num_classes=2, d_model=8, num_heads=2, dropout=0.5)
    return m, m.init(_k0(), IDS)[0]


def _score(x):  # a nonlinear 2-class score, so SmoothGrad's noise shows in the gradient
    return gd.ops.concatenate([gd.ops.sum(x ** 2, axis=1, keepdims=True),
                               gd.ops.sum(x ** 3, axis=1, keepdims=True)], axis=1)


_LP = np.log(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))


def _step(tokens, state):
    return _LP[tokens % 2], state


def _ae_fit(k):
    m, p = _ae()
    return ae.fit_unsupervised(lambda q, xb, kk: ae.ae_loss(m, q, xb), p, X01, k,
                               optim.sgd(0.1), steps=2, batch_size=2)


def _gan_train_step(k):
    g, d, go, do, st, x = _gan()
    return gan.gan_train_step(g, d, go, do, st, x, k, latent_dim=LATENT)


def _loader(k):
    loader = DataLoader((IMGS, np.arange(3)), batch_size=2, shuffle=True, key=k, device="cpu",
                        prefetch=0, transform=transforms.augment((transforms.random_flip, {})))
    return list(loader)


# (where, run(key)) — `where` is the name the float-seed error must carry.
CASES = {
    "smoothgrad": ("inspect.smoothgrad",
                   lambda k: gdi.smoothgrad(_score, X01[:2].astype(np.float64), k, target=1,
                                            n_samples=2)),
    "filter_normalized_direction": ("inspect.filter_normalized_direction",
                                    lambda k: gdi.filter_normalized_direction(k, _ae()[1])),
    "landscape_2d": ("inspect.landscape_2d",
                     lambda k: gdi.landscape_2d(lambda p: (p ** 2).sum(), np.ones((2, 2)), k,
                                                alphas=[0.0, 1.0], betas=[0.5])),
    "corrupt": ("models.autoencoders.corrupt", lambda k: ae.corrupt(k, X01)),
    "denoising_ae_loss": ("models.autoencoders.denoising_ae_loss",
                          lambda k: ae.denoising_ae_loss(*_ae(), X01, k)),
    "Autoencoder.forward": ("Autoencoder.forward",
                            lambda k: _dropout_ae()[0].forward(_dropout_ae()[1], {}, X01,
                                                               train=True, key=k)),
    "fit_unsupervised": ("models.autoencoders.fit_unsupervised", _ae_fit),
    "greedy_pretrain": ("models.autoencoders.greedy_pretrain",
                        lambda k: ae.greedy_pretrain(k, X01, [3], steps=1, batch_size=2)),
    "VAE.sample": ("VAE.sample", lambda k: _vae()[0].sample(_vae()[1], k, 2)),
    "VAE.reparameterize": ("VAE.reparameterize",
                           lambda k: ae.VAE.reparameterize(k, np.zeros((2, 2), np.float32),
                                                           np.zeros((2, 2), np.float32))),
    "vae_loss": ("models.autoencoders.vae_loss", lambda k: ae.vae_loss(*_vae(), X01, k)),
    "sample_token": ("models.decoding.sample_token",
                     lambda k: decoding.sample_token(np.tile(_LP, (8, 1)), 1.0, k, top_k=2)),
    "sample_decode": ("models.decoding.sample_decode",
                      lambda k: decoding.sample_decode(_step, np.array([0, 1]), None, 4, 1.0, k)),
    "latent": ("models.gan.latent", lambda k: gan.latent(k, 2, LATENT)),
    "gan_init": ("models.gan.gan_init",
                 lambda k: gan.gan_init(k, *_gan()[:4], _gan()[5][:1], latent_dim=LATENT)),
    "generate": ("models.gan.generate",
                 lambda k: gan.generate(_gan()[0], _gan()[4].gen_params, k, 2, LATENT)),
    "gan_train_step": ("models.gan.gan_train_step", _gan_train_step),
    "skipgram_pairs": ("models.word2vec.skipgram_pairs",
                       lambda k: word2vec.skipgram_pairs(np.arange(8) % 5, 3, k,
                                                         dynamic_window=True)),
    "sample_negatives": ("models.word2vec.sample_negatives",
                         lambda k: word2vec.sample_negatives(k, np.full(5, 0.2), (3, 2),
                                                             device="cpu")),
    "CharLM.sample": ("CharLM.sample", lambda k: _charlm()[0].sample(_charlm()[1], IDS, 3, key=k)),
    "CharLM.forward": ("CharLM.forward",
                       lambda k: _charlm()[0].forward(_charlm()[1], IDS, train=True, key=k)),
    "GPT.generate": ("GPT.generate",
                     lambda k: _gpt()[0].generate(_gpt()[1], IDS, 3, key=k, top_k=3)),
    "TransformerClassifier.features": (
        "TransformerClassifier.features",
        lambda k: _clf()[0].features(_clf()[1], IDS, train=True, key=k)),
    "fit_full_batch": ("models.linear.fit_full_batch",
                       lambda k: linear.fit_full_batch(linear.xor_net(), X01[:, :2],
                                                       X01[:, 2:3].round(), linear.logistic_loss,
                                                       optim.sgd(0.1), 2, key=k)),
    "perceptron": ("models.linear.perceptron",
                   lambda k: linear.perceptron(X01[:, :2] - 0.5, np.array([0, 1, 1, 0]),
                                               epochs=2, key=k)),
    "train_xor": ("models.linear.train_xor", lambda k: linear.train_xor(k, steps=2)[1:]),
    "random_flip": ("data.random_flip", lambda k: transforms.random_flip(np.tile(IMGS, (4, 1, 1, 1)), k)),
    "random_shift": ("data.random_shift", lambda k: transforms.random_shift(IMGS, k, 1)),
    "random_crop": ("data.random_crop", lambda k: transforms.random_crop(IMGS, k, 4, 1)),
    "random_rotate": ("data.random_rotate", lambda k: transforms.random_rotate(IMGS, k, 30.0)),
    "gaussian_noise": ("data.gaussian_noise", lambda k: transforms.gaussian_noise(IMGS, k)),
    "color_jitter": ("data.color_jitter", lambda k: transforms.color_jitter(IMGS, k)),
    "augment": ("data.augment",
                lambda k: transforms.augment((transforms.random_flip, {}),
                                             (transforms.gaussian_noise, {}))((IMGS, None), k)),
    "bucket_batches": ("data.bucket_batches",
                       lambda k: bucket_batches([[1], [2, 3], [4, 5, 6], [7], [8, 9]], 1, k)),
    "DataLoader": ("DataLoader", _loader),
}


def _leaves(obj):
    """Everything a result holds, in a fixed order: dict keys, arrays as NumPy, scalars."""
    if isinstance(obj, dict):
        for name in sorted(obj):
            yield name
            yield from _leaves(obj[name])
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from _leaves(item)
    elif hasattr(obj, "shape"):
        yield np.asarray(to_numpy(gd.stop_gradient(obj)))
    else:
        yield obj


def _assert_same(a, b):
    la, lb = list(_leaves(a)), list(_leaves(b))
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("name", sorted(CASES))
def test_int_seed_is_the_key_of_that_seed(name):
    _, run = CASES[name]
    by_seed = run(SEED)
    _assert_same(by_seed, run(gd.random.key(SEED)))
    with pytest.raises(AssertionError):  # the key is used: another seed, another result
        _assert_same(by_seed, run(SEED + 1))


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_seed_raises_naming_the_function(name):
    where, run = CASES[name]
    with pytest.raises(ArgumentTypeError, match=re.escape(where)):
        run(1.5)


def test_none_keeps_its_meaning():
    # where None is accepted it means what it did: a fixed default key, or no shuffling
    _assert_same(_loader(None), _loader(0))
    fit = CASES["fit_full_batch"][1]
    _assert_same(fit(None), fit(0))
    _assert_same(linear.train_xor(None, steps=2)[1:], linear.train_xor(0, steps=2)[1:])
    seqs = [[1], [2, 3], [4, 5, 6], [7], [8, 9]]
    assert [c[2].tolist() for c in bucket_batches(seqs, 2)] == [[0, 3], [1, 4], [2]]
    assert decoding.sample_token(_LP, 0.0).tolist() == [2, 0]
    assert decoding.sample_decode(_step, np.array([0, 1]), None, 2, 0.0).tolist() == [[2, 2], [0, 2]]
