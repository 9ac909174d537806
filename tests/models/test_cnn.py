"""The course's CNNs: parameter counts (torchvision's where the layouts match, hand counts
otherwise), output shapes, block semantics against naive NumPy, one training step on the
small variants, and short trainings: ResNet-18 on generated gratings, a small VGG on digits,
ResNet-20 overfitting a CIFAR-size batch (the full VGG run on digits is slow)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import nn, optim
from gpudl.errors import ConfigError, ShapeError
from gpudl.models import cnn, get_model, resnet

# torchvision's published counts (torchvision.models.*().parameters(), 1000 classes)
TORCHVISION_COUNTS = {"alexnet": 61_100_840, "vgg11": 132_863_336, "vgg16": 138_357_544,
                      "resnet18": 11_689_512}


@pytest.fixture
def shapes_only(monkeypatch):
    """Zero-filled 'random' weights: counts and shapes depend on shapes only, and skipping the
    Philox draws saves ~10 s on the 100M-parameter VGGs."""
    def zeros(k, shape=(), dtype=np.float32, minval=0.0, maxval=1.0, device=None):
        return gd.backend.xp_for(device or gd.get_device()).zeros(shape, dtype=dtype)

    monkeypatch.setattr(gd.random, "uniform", zeros)


def _init(net, shape, key=0):
    x = gd.ops.zeros(shape)
    params, state = net.init(gd.random.key(key), x)
    return params, state, net.apply(params, state, x)[0]


# ------------------------------------------------------------------ hand counts
def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def googlenet_hand_count(in_ch=3, classes=1000):
    stem = conv(in_ch, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    cin, blocks = 192, 0
    for _, c1, (c2a, c2b), (c3a, c3b), c4 in cnn.GOOGLENET_BLOCKS:
        blocks += (conv(cin, c1, 1) + conv(cin, c2a, 1) + conv(c2a, c2b, 3)
                   + conv(cin, c3a, 1) + conv(c3a, c3b, 5) + conv(cin, c4, 1))
        cin = c1 + c2b + c3b + c4
    assert cin == 1024
    return stem + blocks + 1024 * classes + classes


def alexnet_original_hand_count(classes=1000):
    # Krizhevsky 2012, one GPU: 224 -> 55 -> pool 27 -> 27 -> pool 13 -> 13 -> pool 6.
    convs = (conv(3, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3)
             + conv(384, 256, 3))
    return convs + (256 * 6 * 6 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * classes


def nin_hand_count(in_ch=3, classes=10):
    def block(cin, c, k):
        return conv(cin, c, k) + 2 * conv(c, c, 1)
    return block(in_ch, 96, 11) + block(96, 256, 5) + block(256, 384, 3) + block(384, classes, 3)


def cifar_resnet_hand_count(n=3, classes=10):
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias; running stats are state)
    total, cin = conv(3, 16, 3, bias=False) + bn(16), 16
    for c in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, c, 3, False) + bn(c) + conv(c, c, 3, False) + bn(c)
            if cin != c:  # the projection shortcut
                total += conv(cin, c, 1, False) + bn(c)
            cin = c
    return total + 64 * classes + classes


# ------------------------------------------------------------------ counts + shapes
COUNT_CASES = [
    ("alexnet", lambda: cnn.alexnet(), (1, 3, 224, 224), TORCHVISION_COUNTS["alexnet"], 1000),
    ("alexnet_original", lambda: cnn.alexnet(variant="original"), (1, 3, 224, 224),
     alexnet_original_hand_count(), 1000),
    ("vgg11", lambda: cnn.vgg11(), (1, 3, 224, 224), TORCHVISION_COUNTS["vgg11"], 1000),
    pytest.param("vgg16", lambda: cnn.vgg16(), (1, 3, 224, 224), TORCHVISION_COUNTS["vgg16"],
                 1000, marks=pytest.mark.slow),
    # Global-average-pool heads: the count does not depend on the input size.
    ("resnet18", lambda: resnet.resnet18(), (1, 3, 32, 32), TORCHVISION_COUNTS["resnet18"], 1000),
    ("googlenet", lambda: cnn.googlenet(), (1, 3, 32, 32), googlenet_hand_count(), 1000),
    ("nin", lambda: cnn.nin(), (1, 3, 96, 96), nin_hand_count(), 10),
    ("nin_1ch", lambda: cnn.nin(), (1, 1, 96, 96), 1_992_166, 10),  # 1 channel, d2l's Fashion-MNIST setting
    ("resnet20", lambda: resnet.resnet20(), (1, 3, 32, 32), cifar_resnet_hand_count(), 10),
    ("lenet5", lambda: cnn.lenet5(), (1, 1, 28, 28), 61_706, 10),
]


@pytest.mark.parametrize("name,build,shape,expected,classes", COUNT_CASES)
def test_param_count_and_output_shape(shapes_only, name, build, shape, expected, classes):
    params, _, y = _init(build(), shape)
    assert gd.nn.count_params(params) == expected
    assert y.shape == (shape[0], classes)


def test_vgg16_count_by_formula_at_32(shapes_only):
    # VGG-16's convs and 2nd/3rd dense layers at a 1x1 final map; at 224 the first dense
    # layer sees 7x7 = 49 times the features: the difference is 48 * 512 * 4096 weights.
    params, _, y = _init(cnn.vgg16(), (1, 3, 32, 32))
    assert gd.nn.count_params(params) + 48 * 512 * 4096 == TORCHVISION_COUNTS["vgg16"]


def test_resnet20_hand_count_matches_paper_size():
    # He et al.: ResNet-20 has 0.27M parameters (option A, no projections); the two
    # projection shortcuts (1x1 conv + BN) add 16*32 + 64 + 32*64 + 128 = 2,752.
    assert cifar_resnet_hand_count() == 272_474
    assert 0.265e6 < 272_474 - 2_752 < 0.275e6


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision is not installed")
@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_counts_equal_torchvision(name):
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_COUNTS[name]


@pytest.mark.parametrize("build,shape,classes", [
    (lambda: cnn.alexnet(10, small=True, hidden=32), (2, 3, 32, 32), 10),
    (lambda: cnn.vgg11(10, width=1 / 16, hidden=16), (2, 3, 32, 32), 10),
    (lambda: cnn.vgg16(10, width=1 / 16, hidden=16, batch_norm=True), (2, 3, 32, 32), 10),
    (lambda: cnn.nin(7, small=True, width=1 / 16), (2, 3, 32, 32), 7),
    (lambda: cnn.googlenet(10, small=True, width=1 / 16), (2, 3, 32, 32), 10),
    (lambda: resnet.resnet18(5, width=4), (2, 3, 64, 64), 5),
    (lambda: resnet.cifar_resnet(8, 10, width=4), (2, 3, 32, 32), 10),
    (lambda: cnn.alexnet(4, input_size=96, hidden=16), (1, 1, 96, 96), 4),
    (lambda: cnn.alexnet(10, small=True, hidden=32, variant="original"), (2, 3, 32, 32), 10),
])
def test_small_variants_output_shape(build, shape, classes):
    _, _, y = _init(build(), shape)
    assert y.shape == (shape[0], classes)
    assert np.isfinite(gd.to_numpy(y)).all()


# ------------------------------------------------------------------ block semantics
def _conv1x1(x, w, b=None, stride=1):
    """Naive 1x1 conv in float64: (N, C, H, W) x (O, C, 1, 1)."""
    y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x[:, :, ::stride, ::stride])
    return y if b is None else y + b[None, :, None, None]


def test_inception_concatenates_four_branches():
    blk = cnn.inception(3, (2, 4), (1, 2), 5)
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 5))
    params, state = blk.init(gd.random.key(0), x)
    y, _ = blk.apply(params, state, x)
    assert y.shape == (2, 3 + 4 + 2 + 5, 5, 5)
    p1 = params["branch1"]["0"]
    np.testing.assert_allclose(y[:, :3], np.maximum(_conv1x1(x, p1["weight"], p1["bias"]), 0),
                               rtol=1e-10, atol=1e-12)
    # branch 4: 3x3 max pool (stride 1, pad 1 with -inf) then 1x1 conv
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    pooled = np.max([padded[:, :, i:i + 5, j:j + 5] for i in range(3) for j in range(3)], axis=0)
    p4 = params["branch4"]["1"]
    np.testing.assert_allclose(y[:, 9:], np.maximum(_conv1x1(pooled, p4["weight"], p4["bias"]), 0),
                               rtol=1e-10, atol=1e-12)


def test_basic_block_identity_shortcut():
    blk = resnet.basic_block(4)
    x = np.random.default_rng(1).normal(size=(2, 4, 6, 6))
    params, state = blk.init(gd.random.key(0), x)
    assert sorted(params) == ["bn1", "bn2", "conv1", "conv2"]  # no downsample: shape kept
    # A zero last BN (gamma = beta = 0) silences the body: the block is relu(x).
    params["bn2"] = {"weight": np.zeros(4), "bias": np.zeros(4)}
    y, _ = blk.apply(params, state, x, train=True)
    np.testing.assert_allclose(y, np.maximum(x, 0), rtol=0, atol=0)


def test_basic_block_projection_shortcut():
    blk = resnet.basic_block(6, stride=2, in_channels=3)
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8))
    params, state = blk.init(gd.random.key(0), x)
    assert sorted(params) == ["bn1", "bn2", "conv1", "conv2", "downsample"]  # torchvision's
    assert params["downsample"]["0"]["weight"].shape == (6, 3, 1, 1)
    params["bn2"] = {"weight": np.zeros(6), "bias": np.zeros(6)}
    y, _ = blk.apply(params, state, x, train=False)  # running stats: mean 0, var 1
    w = params["downsample"]["0"]["weight"]
    expected = np.maximum(_conv1x1(x, w, stride=2) / np.sqrt(1 + 1e-5), 0)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    assert y.shape == (2, 6, 4, 4)


def test_basic_block_channel_change_needs_projection():
    with pytest.raises(ShapeError, match="downsample"):
        resnet.basic_block(8).init(gd.random.key(0), gd.ops.zeros((1, 4, 4, 4)))
    p, _ = resnet.basic_block(8, in_channels=4).init(gd.random.key(0), gd.ops.zeros((1, 4, 4, 4)))
    assert "downsample" in p


def test_vgg_and_nin_blocks():
    b = cnn.vgg_block(3, 5)
    p, s, y = _init(b, (1, 2, 8, 8))
    assert y.shape == (1, 5, 4, 4) and len(p) == 3
    nb = cnn.nin_block(7, 3, stride=2, padding=1)
    p, s, y = _init(nb, (1, 2, 8, 8))
    assert y.shape == (1, 7, 4, 4)
    assert [p[k]["weight"].shape[2:] for k in sorted(p)] == [(3, 3), (1, 1), (1, 1)]


def test_bad_inputs_raise_clear_errors():
    net = cnn.alexnet()
    with pytest.raises(ShapeError, match="small=True"):
        net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="too small"):
        cnn.alexnet(input_size=40)
    with pytest.raises(ValueError, match="6n"):
        resnet.cifar_resnet(21)


def test_registry_builds_the_cnns():
    for name in ("alexnet", "vgg11", "vgg16", "nin", "googlenet", "resnet18", "resnet20"):
        assert isinstance(get_model(name), nn.Sequential)


def test_cifar_resnet_same_on_every_device(device):
    net = resnet.cifar_resnet(8, 10, width=4)
    x = np.random.default_rng(3).normal(size=(4, 3, 32, 32)).astype(np.float32)
    with gd.device("cpu"):
        params, state = net.init(gd.random.key(0), x)
        ref, _ = net.apply(params, state, x, train=True)
    out, new_state = net.apply(gd.to_device(params, device), gd.to_device(state, device),
                               gd.asarray(x, device=device), train=True)
    assert gd.get_array_module(out) is gd.backend.xp_for(device)
    np.testing.assert_allclose(gd.to_numpy(out), gd.to_numpy(ref), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ one training step
@pytest.mark.parametrize("name,build", [
    ("cifar_resnet", lambda: resnet.cifar_resnet(8, 10, width=4)),
    ("alexnet_small", lambda: cnn.alexnet(10, small=True, hidden=32)),
    ("vgg11_small", lambda: cnn.vgg11(10, width=1 / 16, hidden=32)),
    ("nin_small", lambda: cnn.nin(10, small=True, width=1 / 16)),
    ("googlenet_small", lambda: cnn.googlenet(10, small=True, width=1 / 16)),
])
def test_one_sgd_step_decreases_the_loss(name, build):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=8)
    net = build()
    params, state = net.init(gd.random.key(1), x)
    key = gd.random.key(2)  # the same dropout masks before and after the step

    def loss_fn(p):
        out, _ = net.apply(p, state, x, train=True, key=key)
        return F.softmax_cross_entropy(out, y)

    loss0, grads = gd.value_and_grad(loss_fn)(params)
    opt = optim.sgd(0.05)
    updates, _ = opt.update(grads, opt.init(params), params)
    loss1 = loss_fn(optim.apply_updates(params, updates))
    assert float(loss1) < float(loss0)


# ------------------------------------------------------------------ training recipes
def _gratings(rng, n, size=16):
    """Noisy sine gratings, (n, 1, size, size); class k has its stripes at k * 45 degrees.
    Period and phase are random, so only the orientation tells the classes apart."""
    labels = rng.integers(0, 4, n)
    angle = labels * np.pi / 4
    period, phase = rng.uniform(3, 6, n), rng.uniform(0, 2 * np.pi, n)
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    proj = np.cos(angle)[:, None, None] * c + np.sin(angle)[:, None, None] * r  # (n, S, S)
    img = np.sin(2 * np.pi * proj / period[:, None, None] + phase[:, None, None])
    return (img + 0.5 * rng.normal(size=img.shape))[:, None].astype(np.float32), labels


def test_resnet18_learns_oriented_gratings():
    # ResNet-18's full layout (7x7/2 stem, max pool, four stages of two basic blocks) at
    # width 4 on 16x16 images; fresh batches each step, accuracy on held-out images in
    # eval mode, so the BatchNorm running statistics the training steps kept are used.
    rng = np.random.default_rng(0)
    x_test, y_test = _gratings(np.random.default_rng(100), 200)
    net = resnet.resnet18(4, width=4)
    params, state = net.init(gd.random.key(0), x_test[:2])
    opt = optim.adam(1e-2)
    opt_state = opt.init(params)

    def loss_fn(p, s, xb, yb):
        out, s = net.apply(p, s, xb, train=True)
        return F.softmax_cross_entropy(out, yb), s

    losses = []
    for _ in range(50):
        xb, yb = _gratings(rng, 32)
        (loss, state), grads = gd.value_and_grad(loss_fn, has_aux=True)(params, state, xb, yb)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optim.apply_updates(params, updates)
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    logits, _ = net.apply(params, state, x_test, train=False)
    accuracy = float((np.argmax(gd.to_numpy(logits), axis=1) == y_test).mean())
    assert accuracy > 0.7  # chance is 0.25


def test_small_vgg_on_digits_learns():
    # A two-block VGG (one conv per block, dropout in the head) for a few epochs: the
    # default-suite version of the slow run below.
    x, y = gd.data.digits()
    (xtr, ytr), _, (xte, yte) = gd.data.train_val_test_split(x, y, val=0.1, test=0.2, seed=0)
    net = cnn.vgg(((1, 8), (1, 16)), num_classes=10, hidden=64, dropout=0.2)  # 8 -> 4 -> 2
    h = gd.fit(net, (xtr, ytr), loss="cross_entropy", optimizer=optim.adam(5e-3), epochs=6,
               batch_size=32, key=gd.random.key(0), verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    acc = gd.train.evaluate(net, h.params, h.state, (xte, yte), metrics=["accuracy"])
    assert acc["accuracy"] > 0.8  # chance is 0.1


@pytest.mark.slow
def test_small_vgg_on_digits_reaches_95_percent():
    x, y = gd.data.digits()
    (xtr, ytr), (xva, yva), (xte, yte) = gd.data.train_val_test_split(x, y, val=0.1, test=0.2,
                                                                      seed=0)
    net = cnn.vgg(((2, 16), (2, 32)), num_classes=10, hidden=64, dropout=0.2)  # 8 -> 4 -> 2
    h = gd.fit(net, (xtr, ytr), loss="cross_entropy", optimizer=optim.adam(2e-3), epochs=15,
               batch_size=32, key=gd.random.key(0), verbose=0)
    acc = gd.train.evaluate(net, h.params, h.state, (xte, yte), metrics=["accuracy"])
    assert acc["accuracy"] > 0.95


def test_cifar_resnet20_overfits_a_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    net = resnet.resnet20()
    params, state = net.init(gd.random.key(0), x)
    opt = optim.sgd(0.1, momentum=0.9)
    opt_state = opt.init(params)

    def loss_fn(p, s):
        out, s = net.apply(p, s, x, train=True)
        return F.softmax_cross_entropy(out, y), s

    losses = []
    for _ in range(8):
        (loss, state), grads = gd.value_and_grad(loss_fn, has_aux=True)(params, state)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optim.apply_updates(params, updates)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_alexnet_original_widths_and_count():
    assert alexnet_original_hand_count() == 62_378_344  # the docstring's figure
    net = cnn.alexnet(variant="original")
    widths = [layer.out_channels for layer in net["features"] if isinstance(layer, nn.Conv2d)]
    assert widths == [96, 256, 384, 384, 256]
    default = [layer.out_channels for layer in cnn.alexnet()["features"]
               if isinstance(layer, nn.Conv2d)]
    assert default == [64, 192, 384, 256, 256]
    with pytest.raises(ConfigError, match="variant must be one of"):
        cnn.alexnet(variant="caffe")


@pytest.mark.parametrize("recipe,kwargs", [
    ("vgg11", {"width": -1, "hidden": 8}), ("vgg11", {"width": 0}),  # 1-channel nets before
    ("nin", {"small": True, "width": -1}), ("googlenet", {"small": True, "width": 0.0}),
    ("vgg11", {"width": "1/4"})])
def test_width_must_be_a_positive_multiplier(recipe, kwargs):
    with pytest.raises(gd.errors.LayerArgumentError, match=r"models\.\w+: width must be"):
        get_model(recipe, **kwargs)
