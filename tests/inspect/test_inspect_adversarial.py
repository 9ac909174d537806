"""FGSM and activation maximization: they move the loss / activation the right way."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import inspect, ops
from gpudl.functional import softmax_cross_entropy


def _classifier(xp):
    rng = np.random.default_rng(0)
    w = xp.asarray(rng.standard_normal((3, 8)).astype(np.float32))
    b = xp.asarray(rng.standard_normal(3).astype(np.float32))
    return lambda x: x @ w.T + b


def test_fgsm_raises_the_loss_within_eps_and_range(device, xp):
    model = _classifier(xp)
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.uniform(0, 1, (16, 8)).astype(np.float32))
    y = xp.asarray(rng.integers(0, 3, 16))
    loss = lambda x: softmax_cross_entropy(model(x), y)  # noqa: E731
    eps = 0.05
    adv = inspect.fgsm(loss, x, eps)
    assert adv.dtype == x.dtype and gd.get_array_module(adv) is xp
    assert float(loss(adv)) > float(loss(x))
    diff = gd.to_numpy(adv) - gd.to_numpy(x)
    assert np.abs(diff).max() <= eps + 1e-6
    a = gd.to_numpy(adv)
    assert a.min() >= 0.0 and a.max() <= 1.0
    # Unclipped elements moved by exactly eps, in the gradient's sign.
    g = gd.to_numpy(gd.grad(loss)(x))
    inside = (gd.to_numpy(x) + eps * np.sign(g) >= 0) & (gd.to_numpy(x) + eps * np.sign(g) <= 1)
    np.testing.assert_allclose(diff[inside], eps * np.sign(g)[inside], atol=1e-6)
    # Targeted steps down the loss.
    assert float(loss(inspect.fgsm(loss, x, eps, targeted=True))) < float(loss(x))


def test_fgsm_clipping_and_no_clip():
    x = np.array([0.98, 0.02, 0.5])
    loss = lambda x: (x * np.array([1.0, -1.0, 1.0])).sum()  # noqa: E731  sign(grad) = (+, -, +)
    np.testing.assert_allclose(inspect.fgsm(loss, x, 0.1), [1.0, 0.0, 0.6])
    np.testing.assert_allclose(inspect.fgsm(loss, x, 0.1, clip=None), [1.08, -0.08, 0.6])
    np.testing.assert_allclose(inspect.fgsm(loss, x, 0.0), x)
    with pytest.raises(ValueError, match="eps"):
        inspect.fgsm(loss, x, -0.1)


def test_activation_maximization_increases_the_unit(device, xp):
    rng = np.random.default_rng(2)
    w1 = xp.asarray(rng.standard_normal((5, 4)))
    w2 = xp.asarray(rng.standard_normal((3, 5)))
    unit = lambda x: (ops.tanh(x @ w1.T) @ w2.T)[0, 1]  # noqa: E731
    x0 = xp.asarray(0.01 * rng.standard_normal((1, 4)))
    x, values = inspect.activation_maximization(unit, x0, steps=30, lr=0.2, l2=1e-3)
    assert values.shape == (31,) and values[-1] > values[0] + 0.1
    assert np.isclose(values[-1], float(unit(x)))
    assert gd.get_array_module(x) is xp and x.shape == x0.shape


def test_activation_maximization_l2_gives_the_closed_form():
    # maximise w.x - l2 |x|^2: the optimum is x* = w / (2 l2).
    w = np.array([1.0, -2.0, 0.5])
    x, _ = inspect.activation_maximization(lambda x: (x * w).sum(), np.zeros(3), steps=300,
                                           lr=0.1, l2=0.5)
    np.testing.assert_allclose(x, w, atol=1e-8)
    clipped, _ = inspect.activation_maximization(lambda x: (x * w).sum(), np.zeros(3),
                                                 steps=50, lr=0.5, l2=0.0, clip=(-1, 1))
    np.testing.assert_allclose(clipped, [1.0, -1.0, 1.0])
