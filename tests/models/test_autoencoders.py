"""Autoencoder recipes: shapes, parameter counts, losses against float64 NumPy references,
gradients (reparameterisation, k-sparse, contractive grad-of-grad) and short training runs."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.models import autoencoders as ae
from gpudl.nn import count_params
from gpudl.testing import check_grad


@pytest.fixture(scope="module")
def digits():
    x, _ = gd.data.digits()  # (1797, 1, 8, 8) in [0, 1]
    return x.astype(np.float32)


def _np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _np_bce_logits(logits, t):  # per-example sum, batch mean
    per = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
    return per.reshape(len(t), -1).sum(1).mean()


# ----------------------------------------------------------------------------- shapes/params
def test_undercomplete_shapes_and_param_count_by_hand():
    m = ae.undercomplete_ae((1, 8, 8), code_dim=16, hidden=(32,))
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    p, s = m.init(gd.random.key(0), x)
    shapes = {(half, name): (v["weight"].shape, v["bias"].shape)
              for half in p for name, v in p[half].items()}
    assert shapes == {
        ("encoder", "1"): ((32, 64), (32,)), ("encoder", "3"): ((16, 32), (16,)),
        ("decoder", "0"): ((32, 16), (32,)), ("decoder", "2"): ((64, 32), (64,)),
    }
    # 64*32+32 + 32*16+16 (encoder) + 16*32+32 + 32*64+64 (decoder)
    assert count_params(p) == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 32 + 32) + (32 * 64 + 64)
    y, _ = m.apply(p, s, x)
    assert y.shape == (5, 1, 8, 8) and float(y.min()) > 0 and float(y.max()) < 1
    assert m.encode(p, x).shape == (5, 16)
    # the forward pass by hand
    h = x.reshape(5, 64)
    for name in ("1", "3"):
        h = np.maximum(h @ p["encoder"][name]["weight"].T + p["encoder"][name]["bias"], 0)
    h = np.maximum(h @ p["decoder"]["0"]["weight"].T + p["decoder"]["0"]["bias"], 0)
    ref = _np_sigmoid(h @ p["decoder"]["2"]["weight"].T + p["decoder"]["2"]["bias"])
    np.testing.assert_allclose(y.reshape(5, 64), ref, rtol=1e-5, atol=1e-6)


def test_vae_shapes_and_param_count_by_hand():
    m = ae.vae(64, latent_dim=2, hidden=(32,))
    p, s = m.init(gd.random.key(0), np.zeros((1, 64), np.float32))
    assert sorted(p) == ["decoder", "encoder", "logvar", "mu"]
    # enc 64->32, heads 32->2 twice, dec 2->32->64
    assert count_params(p) == (64 * 32 + 32) + 2 * (32 * 2 + 2) + (2 * 32 + 32) + (32 * 64 + 64)
    x = np.random.default_rng(1).random((6, 64), dtype=np.float32)
    mu, logvar = m.encode(p, x)
    assert mu.shape == logvar.shape == (6, 2)
    assert m.apply(p, s, x)[0].shape == (6, 64)
    assert m.apply(p, s, x, key=gd.random.key(3))[0].shape == (6, 64)


def test_vae_sample_and_interpolate():
    m = ae.vae((1, 8, 8), latent_dim=3, hidden=(16,))
    p, _ = m.init(gd.random.key(0), np.zeros((1, 1, 8, 8), np.float32))
    smp = m.sample(p, gd.random.key(1), 5)
    assert smp.shape == (5, 1, 8, 8) and smp.dtype == np.float32
    np.testing.assert_array_equal(smp, m.sample(p, gd.random.key(1), 5))  # same key, same draw
    z1, z2 = np.zeros(3, np.float32), np.array([1.0, -2.0, 0.5], np.float32)
    path = m.interpolate(p, z1, z2, steps=7)
    assert path.shape == (7, 1, 8, 8)
    np.testing.assert_allclose(path[0], m.decode(p, z1[None])[0], rtol=1e-6)
    np.testing.assert_allclose(path[-1], m.decode(p, z2[None])[0], rtol=1e-6)
    np.testing.assert_allclose(path[3], m.decode(p, (0.5 * (z1 + z2))[None])[0], rtol=1e-5)


def test_conv_ae_shapes_and_param_count_by_hand():
    m = ae.conv_ae(in_channels=1, channels=(16, 32))
    for hw in (8, 28):
        x = np.zeros((2, 1, hw, hw), np.float32)
        p, s = m.init(gd.random.key(0), x)
        assert m.apply(p, s, x)[0].shape == x.shape
        assert m.encode(p, x).shape == (2, 32, hw // 4, hw // 4)
    # conv 1->16, conv 16->32, deconv 32->16, deconv 16->1 (3x3 kernels, with biases)
    assert count_params(p) == (16 * 9 + 16) + (32 * 16 * 9 + 32) + (32 * 16 * 9 + 16) + (16 * 9 + 1)


# ----------------------------------------------------------------------------- VAE loss/grad
def _tiny_vae64():
    m = ae.vae(6, latent_dim=2, hidden=(5,), activation="tanh")
    p, _ = m.init(gd.random.key(0), np.zeros((1, 6)))  # float64 params
    x = np.random.default_rng(0).random((4, 6))
    return m, p, x


def test_vae_loss_matches_numpy_reference():
    m, p, x = _tiny_vae64()
    key = gd.random.key(7)
    loss, aux = ae.vae_loss(m, p, x, key)

    def dense(v, q):
        return v @ q["weight"].T + q["bias"]

    h = np.tanh(dense(x, p["encoder"]["0"]))
    mu, logvar = dense(h, p["mu"]), dense(h, p["logvar"])
    eps = gd.random.normal(key, mu.shape, dtype=np.float64)
    z = mu + np.exp(0.5 * logvar) * eps
    logits = dense(np.tanh(dense(z, p["decoder"]["0"])), p["decoder"]["2"])
    rec = _np_bce_logits(logits, x)
    kl = (-0.5 * (1 + logvar - mu ** 2 - np.exp(logvar))).sum(1).mean()
    np.testing.assert_allclose(float(aux["reconstruction"]), rec, rtol=1e-10)
    np.testing.assert_allclose(float(aux["kl"]), kl, rtol=1e-10)
    np.testing.assert_allclose(float(loss), rec + kl, rtol=1e-10)


def test_vae_loss_gradient_check_float64():
    m, p, x = _tiny_vae64()
    key = gd.random.key(11)  # fixed key: eps is a constant input, the loss is smooth in params
    check_grad(lambda q: ae.vae_loss(m, q, x, key)[0], p)
    check_grad(lambda q: ae.vae_loss(m, q, x, key, kind="mse", beta=0.5)[0], p)


def test_reparameterisation_gradient_flows_to_mu_and_logvar():
    rng = np.random.default_rng(2)
    mu, logvar, c = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    key = gd.random.key(5)
    eps = gd.random.normal(key, (3, 4), dtype=np.float64)
    g_mu, g_lv = gd.grad(lambda a, b: gd.ops.sum(ae.VAE.reparameterize(key, a, b) * c),
                         argnums=(0, 1))(mu, logvar)
    np.testing.assert_allclose(g_mu, c, rtol=1e-12)  # dz/dmu = 1
    np.testing.assert_allclose(g_lv, c * 0.5 * np.exp(0.5 * logvar) * eps, rtol=1e-12)
    # and through the whole loss: both heads get a non-zero gradient
    m, p, x = _tiny_vae64()
    grads = gd.grad(lambda q: ae.vae_loss(m, q, x, key)[0])(p)
    assert np.abs(grads["mu"]["weight"]).sum() > 0 and np.abs(grads["logvar"]["weight"]).sum() > 0
    # the reconstruction term alone also reaches logvar (only through the sampled z)
    g_rec = gd.grad(lambda q: ae.vae_loss(m, q, x, key)[1]["reconstruction"])(p)
    assert np.abs(g_rec["logvar"]["weight"]).sum() > 0


# ----------------------------------------------------------------------------- k-sparse
def test_k_sparse_keeps_exactly_k_and_blocks_gradient_to_dropped_units():
    rng = np.random.default_rng(3)
    h, c, k = rng.normal(size=(6, 10)), rng.normal(size=(6, 10)), 3
    out = ae.k_sparse(h, k)
    assert ((out != 0).sum(axis=1) == k).all()
    kth = np.sort(h, axis=1)[:, -k][:, None]  # reference: the k largest per row
    ref_mask = h >= kth
    np.testing.assert_array_equal(out, np.where(ref_mask, h, 0.0))
    g = gd.grad(lambda v: gd.ops.sum(ae.k_sparse(v, k) * c))(h)
    np.testing.assert_array_equal(g, np.where(ref_mask, c, 0.0))
    # in the model: the code has k non-zeros per row and dropped units' pre-activations
    # get no gradient
    m = ae.k_sparse_ae(12, code_dim=8, k=2)
    x = rng.random((5, 12))
    p, _ = m.init(gd.random.key(0), x)
    code = m.encode(p, x)
    assert ((code != 0).sum(axis=1) == 2).all()
    pre = x @ p["encoder"]["0"]["weight"].T + p["encoder"]["0"]["bias"]

    def loss_from_pre(v):
        return ae.reconstruction_loss(m.decode_logits(p, ae.k_sparse(v, 2)), x)

    g = gd.grad(loss_from_pre)(pre)
    assert (g[code == 0] == 0).all() and (np.abs(g[code != 0]) > 0).all()


# ----------------------------------------------------------------------------- contractive
def test_contractive_closed_form_equals_generic_jacobian():
    m = ae.contractive_ae(6, code_dim=4)
    x = np.random.default_rng(4).random((5, 6))
    p, _ = m.init(gd.random.key(1), x)
    closed = ae.contractive_ae_loss(m, p, x, lam=1.0, closed_form=True)
    generic = ae.contractive_ae_loss(m, p, x, lam=1.0, closed_form=False)
    rec = ae.ae_loss(m, p, x)
    # naive reference: J = diag(h (1 - h)) W for each example
    w, b = p["encoder"]["0"]["weight"], p["encoder"]["0"]["bias"]
    ref = 0.0
    for xi in x:
        hi = _np_sigmoid(w @ xi + b)
        ref += (((hi * (1 - hi))[:, None] * w) ** 2).sum()
    np.testing.assert_allclose(float(closed) - float(rec), ref / len(x), rtol=1e-10)
    np.testing.assert_allclose(float(generic), float(closed), rtol=1e-10)
    g1 = gd.grad(lambda q: ae.contractive_ae_loss(m, q, x, closed_form=True))(p)
    g2 = gd.grad(lambda q: ae.contractive_ae_loss(m, q, x, closed_form=False))(p)
    for half in g1:
        for name in g1[half]:
            for leaf in g1[half][name]:
                np.testing.assert_allclose(g1[half][name][leaf], g2[half][name][leaf],
                                           rtol=1e-9, atol=1e-12)
    # the generic penalty trains through the Jacobian (grad-of-grad): check it numerically
    check_grad(lambda q: ae.contractive_ae_loss(m, q, x, closed_form=False), p)


def test_contractive_generic_path_for_deeper_encoder():
    m = ae.undercomplete_ae(5, code_dim=3, hidden=(4,), activation="tanh")
    x = np.random.default_rng(5).random((3, 5))
    p, _ = m.init(gd.random.key(2), x)
    with pytest.raises(ValueError, match="closed_form=True"):
        ae.contractive_ae_loss(m, p, x, closed_form=True)
    pen = float(ae.contractive_ae_loss(m, p, x, lam=1.0)) - float(ae.ae_loss(m, p, x))
    # reference Jacobian by central differences
    ref, eps = 0.0, 1e-6
    for xi in x:
        jac = np.stack([(m.encode(p, (xi + eps * e)[None]) - m.encode(p, (xi - eps * e)[None]))[0]
                        / (2 * eps) for e in np.eye(5)], axis=1)
        ref += (jac ** 2).sum()
    np.testing.assert_allclose(pen, ref / len(x), rtol=1e-6)


# ----------------------------------------------------------------------------- denoising/sparse
def test_denoising_corruption_rate_and_determinism():
    x = np.ones((200, 64), np.float32)
    xc = ae.corrupt(gd.random.key(0), x, "mask", 0.3)
    assert abs(float((xc == 0).mean()) - 0.3) < 0.02  # 12,800 draws: sd ~ 0.004
    assert set(np.unique(xc).tolist()) <= {0.0, 1.0} and xc.dtype == np.float32
    np.testing.assert_array_equal(xc, ae.corrupt(gd.random.key(0), x, "mask", 0.3))
    assert (xc != ae.corrupt(gd.random.key(1), x, "mask", 0.3)).any()
    noise = ae.corrupt(gd.random.key(2), x, "gaussian", 0.5) - x
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 0.5) < 0.02
    with pytest.raises(ValueError, match="noise"):
        ae.corrupt(gd.random.key(0), x, "salt", 0.1)


def test_denoising_loss_reconstructs_clean_target():
    m = ae.undercomplete_ae(8, code_dim=3)
    x = np.random.default_rng(6).random((4, 8))
    p, _ = m.init(gd.random.key(0), x)
    key = gd.random.key(9)
    xc = ae.corrupt(key, x, "mask", 0.5)
    expected = ae.reconstruction_loss(m.forward(p, None, xc)[1], x)
    np.testing.assert_allclose(float(ae.denoising_ae_loss(m, p, x, key, level=0.5)),
                               float(expected), rtol=1e-12)


@pytest.mark.parametrize("penalty", ["kl", "l1"])
def test_sparse_penalty_matches_reference(penalty):
    m = ae.undercomplete_ae(8, code_dim=5, activation="sigmoid")
    x = np.random.default_rng(7).random((6, 8))
    p, _ = m.init(gd.random.key(0), x)
    pen = (float(ae.sparse_ae_loss(m, p, x, penalty=penalty, rho=0.1, beta=2.0))
           - float(ae.ae_loss(m, p, x)))
    h = m.encode(p, x)
    if penalty == "kl":
        r = h.mean(0)
        ref = (0.1 * np.log(0.1 / r) + 0.9 * np.log(0.9 / (1 - r))).sum()
    else:
        ref = np.abs(h).sum(1).mean()
    np.testing.assert_allclose(pen, 2.0 * ref, rtol=1e-9)


# ----------------------------------------------------------------------------- training
def _held_out_drop(model, loss, digits, steps=60, lr=3e-3, seed=0):
    xtr, xte = digits[:1500], digits[1500:]
    p, _ = model.init(gd.random.key(seed), xtr[:2])
    before = float(loss(p, xte, gd.random.key(100)))
    p, losses = ae.fit_unsupervised(loss, p, xtr, gd.random.key(seed + 1), optim.adam(lr),
                                    steps=steps, batch_size=64)
    return before, float(loss(p, xte, gd.random.key(100))), losses


def test_autoencoder_training_reduces_reconstruction_loss(digits):
    m = ae.undercomplete_ae((1, 8, 8), code_dim=16, hidden=(32,))
    before, after, _ = _held_out_drop(m, lambda p, xb, k: ae.ae_loss(m, p, xb), digits)
    assert after < 0.7 * before  # ~44.6 -> ~27 nats per image


def test_vae_training_reduces_negative_elbo(digits):
    m = ae.vae((1, 8, 8), latent_dim=4, hidden=(64,))
    before, after, _ = _held_out_drop(m, lambda p, xb, k: ae.vae_loss(m, p, xb, k)[0], digits)
    assert after < 0.75 * before


@pytest.mark.parametrize("variant", ["denoising", "sparse_kl", "sparse_l1", "k_sparse",
                                     "contractive", "conv"])
def test_variant_training_reduces_its_loss(variant, digits):
    losses_by_variant = {
        "denoising": (ae.undercomplete_ae((1, 8, 8), 16),
                      lambda m: lambda p, xb, k: ae.denoising_ae_loss(m, p, xb, k)),
        "sparse_kl": (ae.undercomplete_ae((1, 8, 8), 32, activation="sigmoid"),
                      lambda m: lambda p, xb, k: ae.sparse_ae_loss(m, p, xb, "kl")),
        "sparse_l1": (ae.undercomplete_ae((1, 8, 8), 32, activation="sigmoid"),
                      lambda m: lambda p, xb, k: ae.sparse_ae_loss(m, p, xb, "l1", beta=0.1)),
        "k_sparse": (ae.k_sparse_ae((1, 8, 8), 32, k=5),
                     lambda m: lambda p, xb, k: ae.ae_loss(m, p, xb)),
        "contractive": (ae.contractive_ae((1, 8, 8), 16),
                        lambda m: lambda p, xb, k: ae.contractive_ae_loss(m, p, xb, lam=0.1)),
        "conv": (ae.conv_ae(1, (8, 16)), lambda m: lambda p, xb, k: ae.ae_loss(m, p, xb)),
    }
    m, make = losses_by_variant[variant]
    before, after, _ = _held_out_drop(m, make(m), digits, steps=40)
    assert after < 0.85 * before


def test_sparse_kl_training_drives_mean_activation_to_target(digits):
    m = ae.undercomplete_ae((1, 8, 8), 32, activation="sigmoid")
    p, _ = m.init(gd.random.key(0), digits[:2])
    start = float(m.encode(p, digits).mean())
    p, _ = ae.fit_unsupervised(lambda q, xb, k: ae.sparse_ae_loss(m, q, xb, "kl", rho=0.05),
                               p, digits, gd.random.key(1), optim.adam(1e-2), steps=80)
    end = float(m.encode(p, digits).mean())
    assert start > 0.3 and end < 0.15  # from ~0.5 towards rho = 0.05


def test_greedy_pretrain_gives_stacked_params_that_reconstruct(digits):
    sizes = (32, 16)
    m = ae.stacked_ae((1, 8, 8), sizes)
    p_init, _ = m.init(gd.random.key(0), digits[:2])
    p = ae.greedy_pretrain(gd.random.key(1), digits[:1000], sizes, steps=60)
    assert gd.tree.tree_map(lambda a: a.shape, p) == gd.tree.tree_map(lambda a: a.shape, p_init)
    x = digits[1000:]
    assert float(ae.ae_loss(m, p, x)) < 0.85 * float(ae.ae_loss(m, p_init, x))
    # the encoder's first layer is the first shallow AE's: its codes are sigmoid units
    assert m.encode(p, x).shape == (len(x), 16)


def test_make_train_step_is_pure_and_descends():
    m = ae.undercomplete_ae(4, code_dim=2)
    x = np.random.default_rng(8).random((8, 4)).astype(np.float32)
    p, _ = m.init(gd.random.key(0), x)
    opt = optim.sgd(0.1)
    step = ae.make_train_step(lambda q, xb: ae.ae_loss(m, q, xb), opt)
    w0 = p["encoder"]["0"]["weight"].copy()
    grads = gd.grad(lambda q: ae.ae_loss(m, q, x))(p)
    p2, _, loss = step(p, opt.init(p), x)
    np.testing.assert_array_equal(p["encoder"]["0"]["weight"], w0)  # input untouched
    np.testing.assert_allclose(p2["encoder"]["0"]["weight"],
                               w0 - 0.1 * grads["encoder"]["0"]["weight"], rtol=1e-6)
    assert float(ae.ae_loss(m, p2, x)) < float(loss)


@pytest.mark.gpu
def test_vae_loss_on_gpu_matches_cpu():
    m, p, x = _tiny_vae64()
    key = gd.random.key(3)
    cpu = float(ae.vae_loss(m, p, x, key)[0])
    with gd.device("cuda"):
        gpu = float(ae.vae_loss(m, gd.to_device(p, "cuda"), gd.to_device(x, "cuda"), key)[0])
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9)


def test_conv_and_k_sparse_training_on_device(device, digits):
    x = gd.asarray(digits[:256], device=device)
    for m in (ae.conv_ae(1, (8, 16)), ae.k_sparse_ae((1, 8, 8), 16, k=4)):
        p, _ = m.init(gd.random.key(0), x[:2])
        before = float(ae.ae_loss(m, p, x))
        p, _ = ae.fit_unsupervised(lambda q, xb, k, m=m: ae.ae_loss(m, q, xb), p, x,
                                   gd.random.key(1), optim.adam(3e-3), steps=20)
        assert all(gd.get_array_module(leaf) is gd.get_array_module(x)
                   for leaf in gd.tree.tree_leaves(p))  # trained where the data lives
        assert float(ae.ae_loss(m, p, x)) < before


# ----------------------------------------------------------------------------- ELBO target
def test_vae_on_digits_reaches_target_elbo(digits):
    m = ae.vae((1, 8, 8), latent_dim=8, hidden=(128,))
    xtr, xte = digits[:1500], digits[1500:]
    p, _ = m.init(gd.random.key(0), xtr[:2])
    p, _ = ae.fit_unsupervised(lambda q, xb, k: ae.vae_loss(m, q, xb, k)[0], p, xtr,
                               gd.random.key(1), optim.adam(3e-3), steps=600, batch_size=128)
    # Held-out ELBO (nats per image, BCE on the 17 grey levels). The data's own entropy
    # bounds the BCE at ~13.7; an untrained model sits near -45; 600 steps reach about -24.
    elbos = [-float(ae.vae_loss(m, p, xte, gd.random.key(200 + i))[0]) for i in range(5)]
    assert np.mean(elbos) > -26.0
    # A decoder that ignores z does best by outputting the held-out images' pixel means;
    # their BCE bounds from below the -ELBO of any VAE whose latent code carries nothing.
    mean = np.clip(xte.mean(axis=0), 1e-6, 1 - 1e-6)
    independent = -(xte * np.log(mean) + (1 - xte) * np.log(1 - mean)).reshape(len(xte), -1)
    assert -np.mean(elbos) < independent.sum(axis=1).mean()
    _, aux = ae.vae_loss(m, p, xte, gd.random.key(0))
    assert float(aux["kl"]) > 1.0  # the latent code is used (no posterior collapse)
