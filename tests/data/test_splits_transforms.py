"""Splits, k-fold, standardisation with training statistics, and augmentations."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.data import DataLoader, Standardizer, augment, kfold, train_val_test_split
from gpudl.data import transforms as T


def test_train_val_test_split_sizes_disjoint_covering_aligned():
    x = np.arange(50)
    y = x * 2
    (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(x, y, val=0.2, test=0.1, seed=3)
    assert (len(xtr), len(xva), len(xte)) == (35, 10, 5)
    parts = [set(xtr), set(xva), set(xte)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(range(50))
    for a, b in ((xtr, ytr), (xva, yva), (xte, yte)):
        np.testing.assert_array_equal(b, a * 2)
    again = train_val_test_split(x, y, val=0.2, test=0.1, seed=3)
    np.testing.assert_array_equal(again[0][0], xtr)
    other = train_val_test_split(x, y, val=0.2, test=0.1, seed=4)
    assert not np.array_equal(other[0][0], xtr)
    assert not np.array_equal(np.sort(xva), np.arange(35, 45))  # shuffled, not a tail cut
    plain = train_val_test_split(x, val=0.2, test=0.1, shuffle=False)
    np.testing.assert_array_equal(plain[0][0], np.arange(15, 50))


def test_split_errors():
    with pytest.raises(ValueError, match="share their first dim"):
        train_val_test_split(np.arange(5), np.arange(4))
    with pytest.raises(ValueError, match="fraction"):
        train_val_test_split(np.arange(5), val=1.5)
    with pytest.raises(ValueError, match="no training rows"):
        train_val_test_split(np.arange(4), val=0.5, test=0.5 - 1e-9)


def test_split_fractions_round_up_so_no_requested_part_is_empty():
    # as scikit-learn's train_test_split: ceil, so 0.1 of 5 rows is one row, not round(0.5) = 0
    train, val, test = train_val_test_split(np.arange(5), val=0.1, test=0.1, seed=0)
    assert (len(train[0]), len(val[0]), len(test[0])) == (3, 1, 1)
    train, val, test = train_val_test_split(np.arange(25), val=0.1, test=0.3)  # 2.5 and 7.5
    assert (len(train[0]), len(val[0]), len(test[0])) == (14, 3, 8)
    # the fraction as written: 0.07 * 100 is 7.000000000000001 in floats, still 7 rows
    train, val, test = train_val_test_split(np.arange(100), val=0.07, test=np.float32(0.2))
    assert (len(train[0]), len(val[0]), len(test[0])) == (73, 7, 20)
    train, val, test = train_val_test_split(np.arange(3), val=0, test=0.0)  # 0: no such part
    assert (len(train[0]), len(val[0]), len(test[0])) == (3, 0, 0)
    with pytest.raises(gd.errors.ConfigError, match=r"val=0.1 and test=0.1 of n=2 rows take 1 and "
                                                    r"1 rows .*leave no training rows"):
        train_val_test_split(np.arange(2), val=0.1, test=0.1)


def test_split_argument_errors_are_named():
    from gpudl.errors import ArgumentTypeError, ConfigError, ShapeError

    with pytest.raises(ConfigError, match=r"train_val_test_split: no arrays given.*"
                                          r"train_val_test_split\(x, y"):
        train_val_test_split()
    with pytest.raises(ShapeError, match=r"lengths \[5, 4\]"):
        train_val_test_split(np.arange(5), np.arange(4))
    with pytest.raises(ShapeError, match="array 1 is a scalar"):
        train_val_test_split(np.arange(5), np.float32(1.0))
    with pytest.raises(ArgumentTypeError, match="array 0 is NoneType"):
        train_val_test_split(None)
    with pytest.raises(ArgumentTypeError, match="array 0 is dict"):
        train_val_test_split({"x": np.arange(5)})
    for bad in ("0.1", None, True, -0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"test must be a fraction of the rows in \[0, 1\)"):
            train_val_test_split(np.arange(10), test=bad)


def test_kfold_folds_are_disjoint_covering_and_balanced():
    folds = list(kfold(23, k=5, seed=0))
    assert len(folds) == 5
    vals = [set(v.tolist()) for _, v in folds]
    assert set().union(*vals) == set(range(23))
    assert sum(len(v) for v in vals) == 23  # disjoint
    assert sorted(len(v) for v in vals) == [4, 4, 5, 5, 5]  # 23 = 3 * 5 + 2 * 4
    for tr, va in folds:
        assert set(tr.tolist()) | set(va.tolist()) == set(range(23))
        assert not set(tr.tolist()) & set(va.tolist())
    with pytest.raises(ValueError, match="k must be"):
        list(kfold(3, k=5))
    for n, k in ((23.0, 5), (23, 2.5), (23, True), (np.arange(5), 2)):  # bare errors before
        with pytest.raises(ValueError, match="must be an int"):
            list(kfold(n, k=k))
    assert len(list(kfold(np.int64(10), k=np.int32(2)))) == 2


def test_standardizer_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(200, 4))
    test = rng.normal(10.0, 5.0, size=(50, 4))
    s = Standardizer().fit(train)
    z = s.transform(test)
    mean, std = train.mean(0), train.std(0)
    np.testing.assert_allclose(z, (test - mean) / std, rtol=1e-5, atol=1e-5)
    assert z.dtype == np.float32
    zt = s.transform(train)
    np.testing.assert_allclose(zt.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(zt.std(0), 1, atol=1e-4)
    assert np.abs(z.mean(0)).min() > 1.0  # the test set is NOT re-centred on itself
    np.testing.assert_allclose(s.inverse_transform(z), test, rtol=1e-4, atol=1e-4)
    imgs = rng.normal(size=(10, 3, 4, 4))
    per_channel = Standardizer(axis=(0, 2, 3)).fit(imgs)
    assert per_channel.mean.shape == (1, 3, 1, 1)


def test_standardizer_before_fit_raises_a_named_error():
    from gpudl.errors import ConfigError

    x = np.ones((3, 2))
    for method in ("transform", "inverse_transform"):
        with pytest.raises(ConfigError, match=rf"Standardizer.{method}: .*not fitted.*call "
                                              r"fit\(x_train\) first"):
            getattr(Standardizer(), method)(x)


def _imgs(n=32, c=2, h=6, w=7, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)


def test_random_flip_flips_exactly_the_chosen_images():
    x = _imgs()
    out = T.random_flip(x, gd.random.key(0), p=0.5)
    flipped = np.array([np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert np.all(flipped ^ kept) and 0 < flipped.sum() < len(x)
    np.testing.assert_array_equal(T.random_flip(x, gd.random.key(0), p=0.5), out)
    np.testing.assert_array_equal(T.random_flip(x, gd.random.key(0), p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(T.random_flip(x, gd.random.key(0), p=0.0), x)
    assert np.array_equal(x, _imgs())  # the input is not modified


def _shifted(img, dy, dx):
    """Reference: img moved by (dy, dx) with zeros coming in (naive loops)."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = img[:, si, sj]
    return out


def test_random_shift_keeps_shape_and_is_a_zero_filled_shift():
    x = _imgs(8)
    out = T.random_shift(x, gd.random.key(1), max_shift=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    for o, xi in zip(out, x):
        assert any(np.array_equal(o, _shifted(xi, dy, dx))
                   for dy in range(-2, 3) for dx in range(-2, 3))
    np.testing.assert_array_equal(T.random_shift(x, gd.random.key(1), max_shift=0), x)


def test_random_crop_shapes_and_windows():
    x = _imgs(8, h=6, w=6)
    out = T.random_crop(x, gd.random.key(2), size=4, padding=1)
    assert out.shape == (8, 2, 4, 4)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o, p in zip(out, padded):
        assert any(np.array_equal(o, p[:, t:t + 4, l:l + 4]) for t in range(5) for l in range(5))
    np.testing.assert_array_equal(T.random_crop(x, gd.random.key(2), size=6), x)
    with pytest.raises(ValueError, match="exceeds"):
        T.random_crop(x, gd.random.key(2), size=9, padding=1)


def test_random_rotate_keeps_shape_and_zero_degrees_is_identity():
    x = _imgs(6, h=9, w=9)
    out = T.random_rotate(x, gd.random.key(3), max_degrees=30)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out[:, :, 4, 4], x[:, :, 4, 4])  # the centre stays put
    assert not np.array_equal(out, x)
    np.testing.assert_array_equal(T.random_rotate(x, gd.random.key(3), max_degrees=0), x)


def test_gaussian_noise_has_the_requested_std():
    x = np.zeros((64, 1, 16, 16), np.float32)
    out = T.gaussian_noise(x, gd.random.key(4), std=0.3)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert abs(out.std() - 0.3) < 0.01 and abs(out.mean()) < 0.01


def test_color_jitter_brightness_and_contrast():
    x = _imgs(16)
    b = T.color_jitter(x, gd.random.key(5), brightness=0.2, contrast=0.0)
    shift = (b - x).reshape(16, -1)
    np.testing.assert_allclose(shift, shift[:, :1].repeat(shift.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(shift[:, 0]) <= 0.2) and np.ptp(shift[:, 0]) > 0
    c = T.color_jitter(x, gd.random.key(5), brightness=0.0, contrast=0.5)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(c.mean(axis=(1, 2, 3), keepdims=True), m, atol=1e-6)
    ratio = ((c - m) / (x - m)).reshape(16, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(ratio.shape[1], 1), rtol=1e-3)
    assert np.all((ratio[:, 0] >= 0.5 - 1e-6) & (ratio[:, 0] <= 1.5 + 1e-6))


def test_augment_composes_steps_for_a_loader():
    x = _imgs(16, h=6, w=6)
    y = np.arange(16)
    tf = augment((T.random_flip, {"p": 1.0}), (T.random_crop, {"size": 4, "padding": 0}))
    out = tf((x, y), gd.random.key(0))
    assert out[0].shape == (16, 2, 4, 4) and out[1] is y
    kw = dict(batch_size=8, shuffle=True, key=gd.random.key(9), device="cpu", transform=tf)
    a = [b[0] for b in DataLoader((x, y), **kw)]
    b = [b[0] for b in DataLoader((x, y), **kw)]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)  # reproducible augmentation


def test_image_transforms_refuse_an_unbatched_image():
    from gpudl.errors import ShapeError

    steps = [(T.random_flip, {}), (T.random_shift, {}), (T.random_crop, {"size": 4}),
             (T.random_rotate, {}), (T.color_jitter, {})]
    for fn, kwargs in steps:
        # one (C, H, W) image used to be read as C one-channel images (random_flip flipped
        # a random subset of its channels)
        with pytest.raises(ShapeError, match=rf"data.{fn.__name__}: x must be a batch of images "
                                             r"\(N, C, H, W\), got shape \(3, 4, 5\).*x\[None\]"):
            fn(np.zeros((3, 4, 5), np.float32), 2, **kwargs)
        with pytest.raises(ShapeError, match=r"got shape \(4, 5\) \(2-D\)"):
            fn(np.zeros((4, 5), np.float32), 2, **kwargs)
        assert fn(_imgs(2, h=5, w=5), 2, **kwargs).shape[:2] == (2, 2)  # x[None] form works
    one = _imgs(1, c=3)
    np.testing.assert_array_equal(T.random_flip(one, 0, p=1.0), one[..., ::-1])


def test_image_transform_size_arguments_are_checked():
    from gpudl.errors import ConfigError

    x = _imgs(4, h=6, w=6)
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match=r"data.random_crop: size .* must be an int >= 1"):
            T.random_crop(x, 0, size=bad)
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match=r"data.random_crop: padding .* must be an int >= 0"):
            T.random_crop(x, 0, size=4, padding=bad)
    for bad in (-1, 0.5):
        with pytest.raises(ConfigError, match=r"data.random_shift: max_shift .* >= 0"):
            T.random_shift(x, 0, max_shift=bad)
    for bad in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ConfigError, match=r"data.random_flip: p .* in \[0, 1\]"):
            T.random_flip(x, 0, p=bad)
    assert T.random_crop(x[:0], 0, size=4, padding=1).shape == (0, 2, 4, 4)
