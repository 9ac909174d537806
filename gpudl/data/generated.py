"""Generated datasets: XOR, blobs, moons, spirals, polynomial, sine, adding and copy tasks.

All take a ``seed`` and return NumPy arrays (float32 inputs, int64 class labels).

Example:
    >>> x, y = xor()
    >>> x.shape, y.tolist()
    ((4, 2), [0, 1, 1, 0])
"""

from __future__ import annotations

import numpy as np


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points and their labels."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return x, np.array([0, 1, 1, 0], dtype=np.int64)


def blobs(n: int = 300, centers: int = 3, dim: int = 2, std: float = 0.5, seed: int = 0):
    """Gaussian blobs around ``centers`` random centres in [-5, 5]^dim."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-5, 5, size=(centers, dim))
    y = rng.integers(0, centers, size=n)
    x = c[y] + rng.normal(0, std, size=(n, dim))
    return x.astype(np.float32), y.astype(np.int64)


def moons(n: int = 300, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles (as scikit-learn's make_moons)."""
    rng = np.random.default_rng(seed)
    n_out = n // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1),
                        np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], 1)])
    y = np.r_[np.zeros(n_out), np.ones(n - n_out)]
    x += rng.normal(0, noise, size=x.shape)
    perm = rng.permutation(n)
    return x[perm].astype(np.float32), y[perm].astype(np.int64)


def spirals(n_per_class: int = 200, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved 2-D spirals (CS231n's classic): not linearly separable."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + rng.normal(0, noise, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def polynomial(n: int = 100, coefs=(1.0, -2.0, 0.5), noise: float = 0.1,
               low: float = -2.0, high: float = 2.0, seed: int = 0):
    """``y = sum coefs[k] x^k + noise``; x (n, 1), y (n, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(n, 1))
    y = sum(c * x ** k for k, c in enumerate(coefs)) + rng.normal(0, noise, size=(n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def sine(n: int = 100, length: int = 50, seed: int = 0):
    """Sine waves with random phase and frequency; predict the next value.

    Returns x (n, length, 1) and y (n, length, 1) = x shifted by one step.
    """
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    freq = rng.uniform(0.5, 1.5, size=(n, 1))
    t = np.arange(length + 1)[None, :] * 0.2
    wave = np.sin(freq * t + phase)
    return wave[:, :-1, None].astype(np.float32), wave[:, 1:, None].astype(np.float32)


def adding_task(n: int = 1000, length: int = 50, seed: int = 0):
    """Hochreiter's adding problem: x (n, length, 2) = (value, marker); y (n, 1) = marked sum."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, size=(n, length))
    markers = np.zeros((n, length))
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers[np.arange(n), first] = 1
    markers[np.arange(n), second] = 1
    x = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


def copy_task(n: int = 1000, seq_len: int = 10, delay: int = 20, num_symbols: int = 8,
              seed: int = 0):
    """Copy memory task: remember ``seq_len`` symbols across ``delay`` blanks.

    Tokens: 0 = blank, 1..num_symbols = symbols, num_symbols+1 = "go" marker.
    x, y: int64 (n, seq_len + delay + seq_len); y is blank except the last seq_len steps.
    """
    rng = np.random.default_rng(seed)
    total = 2 * seq_len + delay
    symbols = rng.integers(1, num_symbols + 1, size=(n, seq_len))
    x = np.zeros((n, total), dtype=np.int64)
    y = np.zeros((n, total), dtype=np.int64)
    x[:, :seq_len] = symbols
    x[:, seq_len + delay - 1] = num_symbols + 1
    y[:, -seq_len:] = symbols
    return x, y
