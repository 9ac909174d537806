"""GAN recipes: network shapes and parameter counts, the pure train step (both nets move,
each loss moves the right way), conditioning on labels, and a 2-D mixture toy the MLP GAN learns."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.models import gan
from gpudl.nn import count_params
from gpudl.tree import tree_leaves, tree_map

LATENT = 4


def _ring(rng, n, k=4, radius=2.0, std=0.1):
    ang = 2 * np.pi * np.arange(k) / k
    modes = np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1)
    return (modes[rng.integers(0, k, n)] + std * rng.normal(size=(n, 2))).astype(np.float32), modes


def _toy_pair():
    g = gan.mlp_generator(2, hidden=(16,), output=None)
    d = gan.mlp_discriminator((16,))
    return g, d


def _changed(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(tree_leaves(a), tree_leaves(b), strict=True))


# ----------------------------------------------------------------------------- shapes
def test_mlp_gan_shapes_and_param_count_by_hand():
    g = gan.mlp_generator((1, 28, 28), hidden=(32, 64))
    d = gan.mlp_discriminator((64, 32))
    z = np.zeros((3, 10), np.float32)
    gp, gs = g.init(gd.random.key(0), z)
    x, _ = g.apply(gp, gs, z)
    assert x.shape == (3, 1, 28, 28) and float(np.abs(x).max()) <= 1.0  # tanh output
    # 10->32->64->784
    assert count_params(gp) == (10 * 32 + 32) + (32 * 64 + 64) + (64 * 784 + 784)
    dp, ds = d.init(gd.random.key(1), x)
    assert d.apply(dp, ds, x)[0].shape == (3, 1)
    assert count_params(dp) == (784 * 64 + 64) + (64 * 32 + 32) + (32 * 1 + 1)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_dcgan_shapes(size, channels):
    g = gan.dcgan_generator(size, channels, base=8)
    d = gan.dcgan_discriminator(size, base=8)
    z = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    gp, gs = g.init(gd.random.key(0), z)
    x, _ = g.apply(gp, gs, z)
    assert x.shape == (2, channels, size, size) and float(np.abs(x).max()) <= 1.0
    dp, ds = d.init(gd.random.key(1), x)
    assert d.apply(dp, ds, x)[0].shape == (2, 1)
    assert gs and ds and all("running_mean" in v for v in (*gs.values(), *ds.values()))  # BN state


def test_dcgan_param_count_by_hand_28():
    g = gan.dcgan_generator(28, 1, base=8)
    gp, _ = g.init(gd.random.key(0), np.zeros((1, 16), np.float32))
    # Dense 16 -> 16*7*7, BN1d(784), deconv 16->8 (4x4), BN2d(8), deconv 8->1 (4x4)
    assert count_params(gp) == ((16 * 784 + 784) + 2 * 784 + (16 * 8 * 16 + 8) + 2 * 8
                                + (8 * 1 * 16 + 1))
    d = gan.dcgan_discriminator(28, base=8)
    dp, _ = d.init(gd.random.key(0), np.zeros((1, 1, 28, 28), np.float32))
    # conv 1->8 (4x4), conv 8->16 (4x4), BN2d(16), dense 16*7*7 -> 1
    assert count_params(dp) == (8 * 16 + 8) + (16 * 8 * 16 + 16) + 2 * 16 + (784 + 1)


# ----------------------------------------------------------------------------- train step
def test_one_train_step_changes_both_nets_and_is_pure():
    g, d = _toy_pair()
    go, do = optim.adam(1e-2), optim.adam(1e-2)
    x, _ = _ring(np.random.default_rng(0), 32)
    st = gan.gan_init(gd.random.key(0), g, d, go, do, x[:1], latent_dim=LATENT)
    snapshot = tree_map(np.copy, (st.gen_params, st.disc_params))
    st2, metrics = gan.gan_train_step(g, d, go, do, st, x, gd.random.key(1), latent_dim=LATENT)
    assert _changed(st.gen_params, st2.gen_params) and _changed(st.disc_params, st2.disc_params)
    for a, b in zip(tree_leaves(snapshot), tree_leaves((st.gen_params, st.disc_params)),
                    strict=True):
        np.testing.assert_array_equal(a, b)  # the old state is untouched
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in metrics.values())
    # same key, same result: the step is a pure function of its inputs
    st3, m3 = gan.gan_train_step(g, d, go, do, st, x, gd.random.key(1), latent_dim=LATENT)
    assert m3 == metrics and not _changed(st2.gen_params, st3.gen_params)


def test_discriminator_step_is_the_gradient_of_the_gan_loss():
    g, d = _toy_pair()
    x, _ = _ring(np.random.default_rng(1), 16)
    go, do = optim.set_to_zero(), optim.sgd(0.5)
    st = gan.gan_init(gd.random.key(0), g, d, go, do, x[:1], latent_dim=LATENT)
    key = gd.random.key(4)
    st2, m = gan.gan_train_step(g, d, go, do, st, x, key, latent_dim=LATENT)
    # reference: reproduce the step's fake batch (the discriminator is player 0, its key
    # fold_in(key, 0) split in four: z first) and take the gradient of
    # -mean log D(x) - mean log(1 - D(G(z))) written with NumPy-level ops
    kz1 = gd.random.split(gd.random.fold_in(key, 0), 4)[0]
    fake = g.apply(st.gen_params, {}, gan.latent(kz1, 16, LATENT, like=x))[0]

    def ref_loss(p):
        r = d.apply(p, {}, x)[0]
        f = d.apply(p, {}, fake)[0]
        sig = gd.ops.sigmoid
        return -gd.ops.mean(gd.ops.log(sig(r))) - gd.ops.mean(gd.ops.log(1.0 - sig(f)))

    loss, grads = gd.value_and_grad(ref_loss)(st.disc_params)
    np.testing.assert_allclose(m["d_loss"], float(loss), rtol=1e-5)
    expected = tree_map(lambda w, gr: w - 0.5 * gr, st.disc_params, grads)
    for a, b in zip(tree_leaves(st2.disc_params), tree_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not _changed(st.gen_params, st2.gen_params)  # set_to_zero froze the generator


def test_discriminator_learns_to_separate_real_from_fake():
    g, d = _toy_pair()
    rng = np.random.default_rng(2)
    go, do = optim.set_to_zero(), optim.adam(2e-2)  # generator frozen
    st = gan.gan_init(gd.random.key(0), g, d, go, do, _ring(rng, 1)[0], latent_dim=LATENT)
    history = []
    for i in range(45):
        st, m = gan.gan_train_step(g, d, go, do, st, _ring(rng, 64)[0],
                                   gd.random.fold_in(gd.random.key(1), i), latent_dim=LATENT)
        history.append(m)
    first, last = history[0], np.mean([h["d_loss"] for h in history[-5:]])
    assert last < 0.25 * first["d_loss"]  # ~1.48 -> ~0.1
    assert history[-1]["d_real"] > 0.8 > 0.2 > history[-1]["d_fake"]


def test_generator_step_raises_discriminator_score_of_fakes():
    g, d = _toy_pair()
    rng = np.random.default_rng(3)
    x = _ring(rng, 64)[0]
    # first a discriminator that tells the (untrained) fakes apart
    go0, do0 = optim.set_to_zero(), optim.adam(2e-2)
    st = gan.gan_init(gd.random.key(0), g, d, go0, do0, x[:1], latent_dim=LATENT)
    for i in range(45):
        st, _ = gan.gan_train_step(g, d, go0, do0, st, x, gd.random.fold_in(gd.random.key(1), i),
                                   latent_dim=LATENT)
    # then freeze it and train only the generator with the non-saturating loss
    go, do = optim.adam(1e-2), optim.set_to_zero()
    st = st._replace(gen_opt_state=go.init(st.gen_params), disc_opt_state=do.init(st.disc_params))
    hist = []
    for i in range(30):
        st, m = gan.gan_train_step(g, d, go, do, st, x, gd.random.fold_in(gd.random.key(2), i),
                                   latent_dim=LATENT)
        hist.append(m)
    assert hist[-1]["g_loss"] < 0.5 * hist[0]["g_loss"]
    assert hist[-1]["d_fake"] > hist[0]["d_fake"] + 0.2


def test_dcgan_train_step_updates_batchnorm_state():
    g, d = gan.dcgan_generator(28, 1, base=4), gan.dcgan_discriminator(28, base=4)
    go, do = optim.adam(2e-4, betas=(0.5, 0.999)), optim.adam(2e-4, betas=(0.5, 0.999))
    x = np.random.default_rng(4).uniform(-1, 1, size=(4, 1, 28, 28)).astype(np.float32)
    st = gan.gan_init(gd.random.key(0), g, d, go, do, x[:1], latent_dim=8)
    st2, m = gan.gan_train_step(g, d, go, do, st, x, gd.random.key(1), latent_dim=8)
    assert _changed(st.gen_state, st2.gen_state) and _changed(st.disc_state, st2.disc_state)
    assert _changed(st.gen_params, st2.gen_params) and _changed(st.disc_params, st2.disc_params)
    assert gan.generate(g, st2.gen_params, gd.random.key(2), 3, 8, gen_state=st2.gen_state
                        ).shape == (3, 1, 28, 28)


# ----------------------------------------------------------------------------- conditional
@pytest.mark.parametrize("embed_dim", [None, 3])
def test_conditional_gan_uses_labels(embed_dim):
    g = gan.cgan_generator(5, (1, 4, 4), hidden=(8,), embed_dim=embed_dim)
    d = gan.cgan_discriminator(5, hidden=(8,), embed_dim=embed_dim)
    z = np.random.default_rng(5).normal(size=(3, LATENT)).astype(np.float32)
    y = np.array([0, 1, 4])
    gp, gs = g.init(gd.random.key(0), (z, y))
    out, _ = g.apply(gp, gs, (z, y))
    assert out.shape == (3, 1, 4, 4)
    out2, _ = g.apply(gp, gs, (z, np.array([2, 1, 0])))
    assert not np.allclose(out[0], out2[0]) and not np.allclose(out[2], out2[2])
    np.testing.assert_array_equal(out[1], out2[1])  # same label, same z: same sample
    dp, ds = d.init(gd.random.key(1), (out, y))
    s1 = d.apply(dp, ds, (out, y))[0]
    s2 = d.apply(dp, ds, (out, np.array([3, 1, 2])))[0]
    assert s1.shape == (3, 1) and s1[0, 0] != s2[0, 0] and s1[1, 0] == s2[1, 0]
    if embed_dim is None:  # one-hot: the first Dense sees [z, one_hot(y)]; the whole net by hand
        q = gp["net"]
        w1 = q["0"]["weight"]
        assert w1.shape == (8, LATENT + 5)
        h = z @ w1[:, :LATENT].T + w1[:, LATENT + y].T + q["0"]["bias"]  # column pick = one-hot
        h = np.where(h > 0, h, 0.2 * h)
        ref = np.tanh(h @ q["2"]["weight"].T + q["2"]["bias"]).reshape(3, 1, 4, 4)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    else:
        assert gp["embedding"]["weight"].shape == (5, embed_dim)


def test_conditional_train_step_trains_the_label_embedding():
    g = gan.cgan_generator(3, 2, hidden=(8,), embed_dim=2, output=None)
    d = gan.cgan_discriminator(3, hidden=(8,), embed_dim=2)
    rng = np.random.default_rng(6)
    x, _ = _ring(rng, 12, k=3)
    y = rng.integers(0, 3, 12)
    go, do = optim.adam(1e-2), optim.adam(1e-2)
    st = gan.gan_init(gd.random.key(0), g, d, go, do, x[:2], LATENT, labels_example=y[:2])
    st2, m = gan.gan_train_step(g, d, go, do, st, x, gd.random.key(1), latent_dim=LATENT,
                                labels=y)
    assert _changed(st.gen_params["embedding"], st2.gen_params["embedding"])
    assert _changed(st.disc_params["embedding"], st2.disc_params["embedding"])
    with pytest.raises(TypeError, match="labels"):
        g.apply(st2.gen_params, {}, np.zeros((2, LATENT), np.float32))


@pytest.mark.gpu
def test_gan_train_step_on_gpu_matches_cpu():
    g, d = _toy_pair()
    go, do = optim.sgd(0.1), optim.sgd(0.1)
    x, _ = _ring(np.random.default_rng(7), 16)
    st = gan.gan_init(gd.random.key(0), g, d, go, do, x[:1], latent_dim=LATENT)
    _, m_cpu = gan.gan_train_step(g, d, go, do, st, x, gd.random.key(1), latent_dim=LATENT)
    with gd.device("cuda"):
        st_gpu = gd.to_device(st, "cuda")
        st2, m_gpu = gan.gan_train_step(g, d, go, do, st_gpu, gd.to_device(x, "cuda"),
                                        gd.random.key(1), latent_dim=LATENT)
    assert gd.get_array_module(st2.gen_params["0"]["weight"]).__name__ == "cupy"
    for k in m_cpu:
        np.testing.assert_allclose(m_gpu[k], m_cpu[k], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- 2-D mixture
def _mode_stats(samples, modes):
    dist = np.linalg.norm(samples[:, None, :] - modes[None], axis=2)  # (n, K)
    nearest, d = dist.argmin(1), dist.min(1)
    return d.mean(), len(set(nearest[d < 0.5].tolist())), (d < 0.5).mean()


def test_gan_on_2d_mixture_moves_samples_to_the_modes():
    rng = np.random.default_rng(0)
    _, modes = _ring(rng, 1)
    g = gan.mlp_generator(2, hidden=(64, 64), output=None)
    d = gan.mlp_discriminator((64, 64))
    go, do = optim.adam(1e-3, betas=(0.5, 0.999)), optim.adam(1e-3, betas=(0.5, 0.999))
    st = gan.gan_init(gd.random.key(0), g, d, go, do, _ring(rng, 2)[0], latent_dim=LATENT)
    before = _mode_stats(gan.generate(g, st.gen_params, gd.random.key(99), 1000, LATENT), modes)
    for i in range(800):
        st, _ = gan.gan_train_step(g, d, go, do, st, _ring(rng, 128)[0],
                                   gd.random.fold_in(gd.random.key(1), i), latent_dim=LATENT)
    dist, covered, near = _mode_stats(
        gan.generate(g, st.gen_params, gd.random.key(99), 1000, LATENT), modes)
    # untrained: samples sit near the origin, ~1.9 from every mode, none within 0.5
    assert before[0] > 1.5 and before[2] < 0.05
    assert dist < 0.4 and near > 0.7 and covered >= 3
