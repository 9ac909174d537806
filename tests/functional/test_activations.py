"""Activations against per-element float64 references written with ``math`` (torch formulas)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ShapeError
from gpudl.functional import activations as A
from gpudl.testing import check_grad


def elementwise(f, x):
    return np.vectorize(f, otypes=[np.float64])(np.asarray(x, dtype=np.float64))


def host(a):
    return gd.to_numpy(a)


XS = np.array([-25.0, -3.0, -1.0, -0.3, 0.0, 0.2, 0.9, 2.5, 30.0])

REFERENCES = {
    "sigmoid": (lambda x: A.sigmoid(x), lambda v: 1.0 / (1.0 + math.exp(-v))),
    "tanh": (lambda x: A.tanh(x), math.tanh),
    "relu": (A.relu, lambda v: v if v > 0 else 0.0),
    "hardtanh": (lambda x: A.hardtanh(x, -2.0, 1.5), lambda v: min(max(v, -2.0), 1.5)),
    "leaky_relu": (A.leaky_relu, lambda v: v if v > 0 else 0.01 * v),
    "leaky_relu_0.2": (lambda x: A.leaky_relu(x, 0.2), lambda v: v if v > 0 else 0.2 * v),
    "elu": (lambda x: A.elu(x, 0.7), lambda v: v if v > 0 else 0.7 * (math.exp(v) - 1)),
    "selu": (
        A.selu,
        lambda v: 1.0507009873554805 * (v if v > 0 else 1.6732632423543772 * (math.exp(v) - 1)),
    ),
    "gelu": (A.gelu, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    "gelu_tanh": (
        lambda x: A.gelu(x, approximate="tanh"),
        lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
    ),
    "silu": (A.silu, lambda v: v / (1 + math.exp(-v))),
    "softplus": (A.softplus, lambda v: v if v > 20 else math.log1p(math.exp(v))),
    "softplus_beta": (
        lambda x: A.softplus(x, beta=2.0, threshold=10.0),
        lambda v: v if 2 * v > 10 else math.log1p(math.exp(2 * v)) / 2,
    ),
    "step": (A.step, lambda v: 1.0 if v >= 0 else 0.0),
    "identity": (A.identity, lambda v: v),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_forward_matches_reference(name, device, xp):
    fn, ref = REFERENCES[name]
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        out = fn(xp.asarray(XS, dtype=dtype))
        assert out.dtype == dtype, name
        np.testing.assert_allclose(host(out), elementwise(ref, XS), rtol=tol, atol=tol)


def test_erf_against_math_erf(device, xp):
    x = np.concatenate([np.linspace(-7, 7, 20001), [1e-300, -1e-9, 0.999999, 1.0, 6.0, 40.0]])
    got = host(A.erf(xp.asarray(x)))
    ref = elementwise(math.erf, x)
    np.testing.assert_allclose(got, ref, rtol=2e-15, atol=5e-16)
    assert np.isnan(host(A.erf(xp.asarray([np.nan])))).all()
    assert host(A.erf(xp.asarray([np.inf, -np.inf]))).tolist() == [1.0, -1.0]
    x32 = xp.asarray(x, dtype=np.float32)
    np.testing.assert_allclose(host(A.erf(x32)), elementwise(math.erf, host(x32)), atol=3e-7)


def test_erf_derivative_is_gaussian():
    x = np.array([-2.0, -0.4, 0.0, 0.7, 3.0])
    g = gd.grad(lambda v: A.erf(v).sum())(x)
    np.testing.assert_allclose(g, 2 / math.sqrt(math.pi) * np.exp(-x * x), rtol=1e-14)


def test_relu_derivative_is_zero_at_zero():
    g = gd.grad(lambda v: A.relu(v).sum())(np.array([-1.0, 0.0, 1.0]))
    assert g.tolist() == [0.0, 0.0, 1.0]


def test_step_has_no_gradient():
    g = gd.grad(lambda v: (A.step(v) * v).sum())(np.array([-1.0, 2.0]))
    assert g.tolist() == [0.0, 1.0]  # only through the explicit v factor


def test_softplus_is_stable_and_its_gradient_is_sigmoid():
    x = np.array([-1000.0, -50.0, 0.0, 19.0, 21.0, 1000.0])
    out = A.softplus(x)
    assert np.isfinite(out).all() and out[0] == 0.0 and out[-1] == 1000.0
    g = gd.grad(lambda v: A.softplus(v).sum())(x)
    expect = [(0.0 if v < -700 else 1.0 / (1.0 + math.exp(-v))) if v <= 20 else 1.0 for v in x]
    np.testing.assert_allclose(g, expect, rtol=1e-12, atol=1e-15)


def test_prelu_per_channel_and_shared(device, xp, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    w = np.array([0.1, 0.25, -0.5])
    out = host(A.prelu(xp.asarray(x), xp.asarray(w)))
    ref = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        v = x[idx]
        ref[idx] = v if v > 0 else w[idx[1]] * v
    np.testing.assert_allclose(out, ref)
    shared = host(A.prelu(xp.asarray(x), xp.asarray([0.3])))
    np.testing.assert_allclose(shared, np.where(x > 0, x, 0.3 * x))
    check_grad(A.prelu, x + 0.05 * np.sign(x), w)


def test_prelu_wrong_weight_shape_is_clear():
    with pytest.raises(ShapeError, match="3 slopes.*4 channels"):
        A.prelu(np.ones((2, 4)), np.ones(3))


def _softmax_ref(x, axis, t=1.0):
    x = np.moveaxis(np.asarray(x, dtype=np.float64) / t, axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        e = [math.exp(v - max(row)) for v in row]
        out[idx] = [v / sum(e) for v in e]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax(axis, device, xp, rng):
    x = rng.standard_normal((3, 4, 5)) * 3
    ref = _softmax_ref(x, axis)
    np.testing.assert_allclose(host(A.softmax(xp.asarray(x), axis=axis)), ref, rtol=1e-12)
    np.testing.assert_allclose(
        host(A.log_softmax(xp.asarray(x), axis=axis)), np.log(ref), rtol=1e-12
    )
    np.testing.assert_allclose(
        host(A.softmax(xp.asarray(x), axis=axis, temperature=2.5)),
        _softmax_ref(x, axis, 2.5),
        rtol=1e-12,
    )


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1000.0, 1000.0, -1000.0], [1e30, 0.0, 0.0]], dtype=np.float32)
    p = A.softmax(x)
    lp = A.log_softmax(x)
    assert np.isfinite(p).all() and np.isfinite(lp[0]).all()
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(lp[0, :2], [-math.log(2)] * 2, rtol=1e-6)


def test_softmax_family_gradients():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5))
    check_grad(lambda v: A.softmax(v, axis=0), x, mode="full")
    check_grad(lambda v: A.log_softmax(v, temperature=0.7), x, mode="full")
    # grad of grad: the Hessian-vector product of logsumexp via log_softmax's vjp
    hvp = gd.grad(lambda v: (gd.grad(lambda u: -A.log_softmax(u)[:, 0].sum())(v) ** 2).sum())
    check_grad(lambda v: gd.grad(lambda u: -A.log_softmax(u)[:, 0].sum())(v), x)
    assert np.isfinite(hvp(x)).all()


def test_composite_gradients():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3))
    x = np.where(np.abs(x) < 0.05, 0.1, x)
    for fn in (
        A.elu,
        A.selu,
        A.silu,
        A.gelu,
        lambda v: A.gelu(v, "tanh"),
        lambda v: A.leaky_relu(v, 0.3),
        lambda v: A.hardtanh(v, -0.8, 0.9),
    ):
        check_grad(fn, x)


def test_maxout(device, xp, rng):
    x = rng.standard_normal((2, 6, 3))
    out = host(A.maxout(xp.asarray(x), 3, axis=1))
    ref = np.empty((2, 2, 3))
    for n, j, k in np.ndindex(ref.shape):
        ref[n, j, k] = max(x[n, 3 * j + p, k] for p in range(3))
    np.testing.assert_allclose(out, ref)
    check_grad(lambda v: A.maxout(v, 2), rng.standard_normal((3, 4)))
    with pytest.raises(ShapeError, match="multiple of num_pieces=4"):
        A.maxout(np.ones((2, 6)), 4)


def test_get_activation():
    assert A.get_activation("relu") is A.relu
    assert A.get_activation("Leaky-ReLU") is A.leaky_relu
    assert A.get_activation("swish") is A.silu
    with pytest.raises(ValueError, match="unknown activation 'rellu'.*relu.*sigmoid"):
        A.get_activation("rellu")


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        A.gelu(np.ones(2), approximate="fast")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        A.softmax(np.ones(2), temperature=0.0)
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        A.softmax(np.ones((2, 2)), axis=3)
