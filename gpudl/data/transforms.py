"""Transforms: standardisation with training statistics, and image augmentation.

Augmentations act on a NumPy batch (N, C, H, W) with an explicit key (or an int seed, as
``gd.random.as_key``), so they are reproducible; :func:`augment` composes them for a
DataLoader's ``transform=``.

Example:
    >>> import numpy as np, gpudl as gd
    >>> s = Standardizer().fit(np.array([[1.0], [3.0]]))
    >>> s.transform(np.array([[3.0]])).tolist()
    [[1.0]]
"""

from __future__ import annotations

import numpy as np

from gpudl import random as gdr
from gpudl.backend import to_numpy
from gpudl.data.loader import check_int
from gpudl.errors import ConfigError, ShapeError


class Standardizer:
    """``(x - mean) / std`` with statistics from the training set only (per feature/channel)."""

    def __init__(self, axis=0, eps: float = 1e-8):
        self.axis, self.eps = axis, eps
        self.mean = self.std = None

    def fit(self, x) -> Standardizer:
        x = np.asarray(to_numpy(x), dtype=np.float64)
        self.mean = x.mean(axis=self.axis, keepdims=True)
        self.std = x.std(axis=self.axis, keepdims=True)
        return self

    def _check_fitted(self, who: str) -> None:
        if self.mean is None:
            raise ConfigError(
                f"Standardizer.{who}: this Standardizer has no statistics yet (it was not "
                f"fitted); call fit(x_train) first, e.g. Standardizer().fit(x_train).{who}(x)")

    def transform(self, x):
        self._check_fitted("transform")
        return ((np.asarray(to_numpy(x)) - self.mean) / (self.std + self.eps)).astype(np.float32)

    def inverse_transform(self, x):
        self._check_fitted("inverse_transform")
        return np.asarray(to_numpy(x)) * (self.std + self.eps) + self.mean


def _check_batch(who: str, x) -> tuple[int, int, int, int]:
    """The (N, C, H, W) shape of ``x``; any other rank is a ShapeError, because a single
    (C, H, W) image would otherwise be read as a batch of C one-channel images."""
    shape = np.shape(x)
    if len(shape) != 4:
        fix = ("it looks like one (C, H, W) image: pass x[None] for a batch of one"
               if len(shape) == 3 else "pass images as (N, C, H, W), e.g. x.reshape(N, 1, H, W)"
               " for (N, H, W) grey images")
        raise ShapeError(f"data.{who}: x must be a batch of images (N, C, H, W), got shape "
                         f"{tuple(shape)} ({len(shape)}-D); {fix}")
    return shape


def _u(key, shape):
    return to_numpy(gdr.uniform(key, shape, dtype=np.float64, device="cpu"))


def random_flip(x: np.ndarray, key, p: float = 0.5) -> np.ndarray:
    """Flip each image left-right with probability ``p``.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    _check_batch("random_flip", x)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 0.0 <= p <= 1.0:
        raise ConfigError(f"data.random_flip: p (the probability of flipping an image) must be "
                          f"a number in [0, 1], got {type(p).__name__} {p!r}; e.g. p=0.5")
    key = gdr.as_key(key, "data.random_flip")
    flip = _u(key, (x.shape[0],)) < p
    out = x.copy()
    out[flip] = x[flip][..., ::-1]
    return out


def random_shift(x: np.ndarray, key, max_shift: int = 2) -> np.ndarray:
    """Shift each image by up to ``max_shift`` pixels in H and W, filling with zeros.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    n, _, h, w = _check_batch("random_shift", x)
    max_shift = check_int("data.random_shift", "max_shift", max_shift, 0,
                          "the largest shift in pixels", 2)
    key = gdr.as_key(key, "data.random_shift")
    shifts = to_numpy(gdr.randint(key, (n, 2), -max_shift, max_shift + 1, device="cpu"))
    padded = np.pad(x, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = padded[i, :, max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
    return out


def random_crop(x: np.ndarray, key, size: int, padding: int = 0) -> np.ndarray:
    """Random ``size`` x ``size`` crops after zero ``padding`` (CIFAR: size 32, padding 4).

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    n, c, h, w = _check_batch("random_crop", x)
    size = check_int("data.random_crop", "size", size, 1, "the crop's height and width", 32)
    padding = check_int("data.random_crop", "padding", padding, 0,
                        "zero pixels added on each side before cropping", 4)
    key = gdr.as_key(key, "data.random_crop")
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    hp, wp = h + 2 * padding, w + 2 * padding
    if size > min(hp, wp):
        raise ConfigError(f"data.random_crop: size {size} exceeds the padded image {hp}x{wp} "
                          f"({h}x{w} plus padding={padding} on each side); use size <= "
                          f"{min(hp, wp)} or more padding")
    if n == 0:
        return np.empty((0, c, size, size), dtype=x.dtype)
    k1, k2 = gdr.split(key)
    top = to_numpy(gdr.randint(k1, (n,), 0, hp - size + 1, device="cpu"))
    left = to_numpy(gdr.randint(k2, (n,), 0, wp - size + 1, device="cpu"))
    return np.stack([padded[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(top, left))])


def random_rotate(x: np.ndarray, key, max_degrees: float = 15.0) -> np.ndarray:
    """Rotate each image by a random angle (nearest-neighbour sampling, zeros outside).

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    n, _, h, w = _check_batch("random_rotate", x)
    key = gdr.as_key(key, "data.random_rotate")
    angles = np.deg2rad((_u(key, (n,)) * 2 - 1) * max_degrees)
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    out = np.zeros_like(x)
    for i, a in enumerate(angles):
        sy = np.rint(np.cos(a) * yy - np.sin(a) * xx + (h - 1) / 2).astype(int)
        sx = np.rint(np.sin(a) * yy + np.cos(a) * xx + (w - 1) / 2).astype(int)
        ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        out[i][:, ok] = x[i][:, sy[ok], sx[ok]]
    return out


def gaussian_noise(x: np.ndarray, key, std: float = 0.1) -> np.ndarray:
    """Add N(0, std^2) noise (denoising autoencoders); elementwise, so any shape.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "data.gaussian_noise")
    noise = to_numpy(gdr.normal(key, x.shape, dtype=np.float32, device="cpu"))
    return (x + std * noise).astype(x.dtype)


def color_jitter(x: np.ndarray, key, brightness: float = 0.2, contrast: float = 0.2) -> np.ndarray:
    """Random brightness (additive) and contrast (scale around the image mean) per image.

    ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    n = _check_batch("color_jitter", x)[0]
    key = gdr.as_key(key, "data.color_jitter")
    k1, k2 = gdr.split(key)
    b = (_u(k1, (n, 1, 1, 1)) * 2 - 1) * brightness
    c = 1 + (_u(k2, (n, 1, 1, 1)) * 2 - 1) * contrast
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return ((x - mean) * c + mean + b).astype(x.dtype)


def augment(*steps):
    """Compose ``(fn, kwargs)`` steps into a DataLoader transform on ``(x, y)`` batches.

    Example: ``DataLoader(data, 64, transform=augment((random_flip, {}), (random_crop,
    {"size": 32, "padding": 4})))``. The transform's ``key`` may be an int seed too.
    """

    def transform(batch, key):
        key = gdr.as_key(key, "data.augment")
        x, *rest = batch
        keys = gdr.split(key, max(len(steps), 2))
        for (fn, kwargs), k in zip(steps, keys):
            x = fn(np.asarray(x), k, **kwargs)
        return (x, *rest)

    return transform
