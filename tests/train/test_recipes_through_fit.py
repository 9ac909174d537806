"""Every course model through ``gd.fit``: the VAE (a key per step), the GAN (two players,
two optimizers), the masked GCN (one graph, one batch per epoch) and seq2seq (teacher
forcing) train with a callback and a checkpoint, and a run resumed from an epoch's
checkpoint equals the uninterrupted run bitwise (trees, History, callback counters).
Tiny sizes: each run is a few steps."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.models import autoencoders as ae
from gpudl.models import gan
from gpudl.models.gnn import GCN, node_loss_fn
from gpudl.models.sequence import Seq2Seq, seq2seq_loss_fn
from gpudl.train import Callback, CSVLogger, EarlyStopping, FullBatch, ModelCheckpoint, ReduceLROnPlateau
from gpudl.tree import tree_leaves


def _same(a, b) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(gd.to_numpy(p), gd.to_numpy(q))
                                      for p, q in zip(la, lb))


class _EpochCount(Callback):
    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs += 1


def _resumes_bitwise(tmp_path, run, make_callbacks, epochs=3, cut=0):
    """The straight run, and a run stopped after epoch ``cut`` (a checkpoint per epoch)
    then resumed from that checkpoint with fresh callbacks: the same run, bitwise."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight_cbs = make_callbacks(tmp_path / "a")
    straight = run(epochs, straight_cbs)
    every = str(tmp_path / "b" / "every-{epoch}.npz")
    run(cut + 1, make_callbacks(tmp_path / "b") + [ModelCheckpoint(every, best_only=False)])
    resumed_cbs = make_callbacks(tmp_path / "b")
    count = _EpochCount()
    resumed = run(epochs, resumed_cbs + [count], resume_from=every.format(epoch=cut))
    assert count.epochs == epochs - cut - 1  # it did resume: only the epochs after the cut
    assert resumed.history == straight.history and resumed.epoch == straight.epoch
    assert resumed.step == straight.step and resumed.stop_reason == straight.stop_reason
    for name in ("params", "state", "opt_state"):
        assert _same(getattr(resumed, name), getattr(straight, name)), name
    for s_cb, r_cb in zip(straight_cbs, resumed_cbs):
        assert r_cb.state_dict().keys() == s_cb.state_dict().keys()
    return straight, straight_cbs, resumed_cbs


def test_vae_trains_through_fit_and_resumes_bitwise(tmp_path):
    x = np.random.default_rng(0).random((48, 16), dtype=np.float32)
    m = ae.vae(16, latent_dim=2, hidden=(8,))

    def run(epochs, callbacks, **kw):
        return gd.fit(m, x, loss_fn=ae.vae_loss_fn(m), optimizer=optim.adam(1e-2),
                      epochs=epochs, batch_size=16, key=gd.random.key(3), verbose=0,
                      callbacks=callbacks, **kw)

    h, (stopper,), (again,) = _resumes_bitwise(
        tmp_path, run, lambda folder: [EarlyStopping("loss", patience=5)])
    assert sorted(h.history) == ["kl", "loss", "reconstruction"]
    assert h.history["loss"][-1] < h.history["loss"][0]
    np.testing.assert_allclose(h.history["loss"], np.add(h.history["reconstruction"],
                                                         h.history["kl"]), rtol=1e-5)
    assert (again.best, again.wait) == (stopper.best, stopper.wait)


def test_gan_trains_through_fit_with_two_optimizers_and_resumes_bitwise(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 2)).astype(np.float32)
    model = gan.GAN(gan.mlp_generator(2, hidden=(8,), batch_norm=True, output=None),
                    gan.mlp_discriminator((8,), dropout=0.2), latent_dim=4)

    def run(epochs, callbacks, **kw):
        return gd.fit(model, x, loss_fn=model.losses(), epochs=epochs, batch_size=16,
                      optimizer={"discriminator": optim.adam(1e-2),
                                 "generator": optim.adam(1e-2, betas=(0.5, 0.999))},
                      key=gd.random.key(4), verbose=0, callbacks=callbacks, **kw)

    h, _, _ = _resumes_bitwise(tmp_path, run, lambda folder: [CSVLogger(folder / "log.csv")])
    assert sorted(h.history) == ["d_fake", "d_real", "discriminator_loss", "generator_loss"]
    assert sorted(h.params) == sorted(h.state) == sorted(h.opt_state) == \
        ["discriminator", "generator"]
    assert len(h.state["generator"]) == 1  # BatchNorm running statistics, carried and saved
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 4  # the resumed file continues
    samples = gan.generate(model.generator, h.params["generator"], gd.random.key(9), 5, 4,
                           gen_state=h.state["generator"])
    assert samples.shape == (5, 2)


def test_gan_train_step_is_fits_step():
    """The single-step helper and fit run the same PlayerStep: one batch, equal bitwise."""
    x = np.random.default_rng(2).normal(size=(16, 2)).astype(np.float32)
    g, d = gan.mlp_generator(2, hidden=(8,), output=None), gan.mlp_discriminator((8,))
    go, do = optim.adam(1e-2), optim.sgd(0.1, momentum=0.9)
    st = gan.gan_init(gd.random.key(0), g, d, go, do, x[:2], latent_dim=4)
    params, state, _ = st.trees()
    h = gd.fit(gan.GAN(g, d, 4), x, loss_fn=gan.GAN(g, d, 4).losses(), params=params,
               state=state, optimizer={"discriminator": do, "generator": go}, batch_size=16,
               shuffle=False, key=gd.random.key(5), verbose=0)
    step_key = gd.random.fold_in(gd.train.step.run_keys(gd.random.key(5))[2], 0)
    st2, m = gan.gan_train_step(g, d, go, do, st, x, step_key, latent_dim=4)
    for mine, fits in zip(st2.trees(), (h.params, h.state, h.opt_state)):
        assert all(_same(mine[k], fits[k]) for k in ("generator", "discriminator"))
    assert h.history["discriminator_loss"] == [pytest.approx(m["d_loss"], rel=1e-6)]
    assert h.history["d_real"] == [pytest.approx(m["d_real"], rel=1e-6)]


def _two_triangles():
    edges = np.array([(0, 1), (1, 2), (0, 2), (2, 3), (3, 4), (4, 5), (3, 5)]).T
    labels = np.array([0, 0, 0, 1, 1, 1])
    graph = {"x": np.eye(6, dtype=np.float32), "y": labels,
             "edge_index": np.concatenate([edges, edges[::-1]], axis=1)}
    train = FullBatch({**graph, "mask": np.array([1, 0, 0, 0, 0, 1], bool)})
    val = FullBatch({**graph, "mask": np.array([0, 1, 1, 1, 1, 0], bool)})
    return train, val, labels


def test_masked_gcn_trains_through_fit_on_one_graph_and_resumes_bitwise(tmp_path):
    train, val, labels = _two_triangles()
    net = GCN(hidden=8, num_classes=2, dropout=0.5)

    def run(epochs, callbacks, **kw):
        return gd.fit(net, train, loss_fn=node_loss_fn(net), optimizer=optim.adam(0.05),
                      epochs=epochs, validation_data=val, metrics=["accuracy"],
                      key=gd.random.key(6), verbose=0, callbacks=callbacks, **kw)

    h, _, _ = _resumes_bitwise(
        tmp_path, run, lambda folder: [EarlyStopping("val_accuracy", patience=20)], epochs=6,
        cut=2)
    assert sorted(h.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert h.step == 6  # one step per epoch: the graph is one batch
    longer = run(30, [])
    pred = gd.to_numpy(net.apply(longer.params, longer.state, train.data)[0]).argmax(1)
    assert (pred == labels).mean() >= 5 / 6 and longer.history["val_accuracy"][-1] >= 0.75


def test_seq2seq_trains_through_fit_with_teacher_forcing_and_resumes_bitwise(tmp_path):
    src = np.random.default_rng(3).integers(4, 10, (16, 4))
    data = {"src": src, "tgt": np.concatenate([src[:, ::-1], np.full((16, 1), 3)], axis=1)}
    m = Seq2Seq(10, 10, embed_dim=4, hidden=8)

    def run(epochs, callbacks, **kw):
        return gd.fit(m, data, loss_fn=seq2seq_loss_fn(m), optimizer=optim.adam(1e-2),
                      epochs=epochs, batch_size=8, metrics=["accuracy"],
                      key=gd.random.key(7), verbose=0, callbacks=callbacks, **kw)

    h, _, _ = _resumes_bitwise(
        tmp_path, run, lambda folder: [ReduceLROnPlateau("loss", patience=1, factor=0.5)])
    assert sorted(h.history) == ["accuracy", "loss", "lr_scale"]
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_custom_steps_on_the_device_match_the_cpu(device):
    """The VAE (keys), a masked GCN on a FullBatch graph moved to the device once, and the
    GAN's two players give the CPU's numbers on the device."""
    x = np.random.default_rng(5).random((16, 8), dtype=np.float32)
    m = ae.vae(8, latent_dim=2, hidden=(4,))
    train, _, _ = _two_triangles()
    net = GCN(hidden=4, num_classes=2)
    model = gan.GAN(gan.mlp_generator(8, hidden=(4,), output=None), gan.mlp_discriminator((4,)),
                    latent_dim=3)

    def runs(dev):
        kw = dict(epochs=2, key=gd.random.key(8), verbose=0, device=dev)
        return (gd.fit(m, x, loss_fn=ae.vae_loss_fn(m), optimizer=optim.adam(1e-2),
                       batch_size=8, **kw),
                gd.fit(net, train, loss_fn=node_loss_fn(net), optimizer=optim.adam(0.05),
                       metrics=["accuracy"], **kw),
                gd.fit(model, x, loss_fn=model.losses(), batch_size=8, **kw,
                       optimizer={"discriminator": optim.adam(1e-2), "generator": optim.sgd(0.1)}))

    for on_dev, on_cpu in zip(runs(device), runs("cpu")):
        assert on_dev.history.keys() == on_cpu.history.keys()
        for name in on_cpu.history:
            np.testing.assert_allclose(on_dev.history[name], on_cpu.history[name], rtol=1e-4,
                                       atol=1e-6)
        leaf = tree_leaves(on_dev.params)[0]
        assert gd.get_array_module(leaf) is gd.get_array_module(gd.asarray(0.0, device=device))
