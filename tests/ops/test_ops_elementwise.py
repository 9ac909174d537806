"""gpudl.ops elementwise ops: forward values against NumPy float64, dtypes, gradients."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.testing import check_grad

ops = gd.ops
to_np = gd.to_numpy


UNARY = [
    ("exp", np.exp, None),
    ("log", np.log, "pos"),
    ("log1p", np.log1p, "pos"),
    ("expm1", np.expm1, None),
    ("sqrt", np.sqrt, "pos"),
    ("sin", np.sin, None),
    ("cos", np.cos, None),
    ("tanh", np.tanh, None),
    ("abs", np.abs, None),
    ("sign", np.sign, None),
    ("negative", np.negative, None),
    ("square", np.square, None),
    ("sigmoid", lambda v: 1.0 / (1.0 + np.exp(-v)), None),
    ("reciprocal", lambda v: 1.0 / v, "pos"),
]


@pytest.mark.parametrize("name,ref,domain", UNARY, ids=[u[0] for u in UNARY])
def test_unary_forward_and_float32(name, ref, domain, device, xp, rng):
    host = rng.uniform(0.1, 3.0, (3, 4)) if domain == "pos" else rng.standard_normal((3, 4)) * 2
    out = getattr(ops, name)(xp.asarray(host.astype(np.float32)))
    assert out.dtype == np.float32, f"{name} upcast float32 to {out.dtype}"
    np.testing.assert_allclose(to_np(out), ref(host), rtol=1e-5, atol=1e-6)


BINARY = [
    ("add", np.add),
    ("subtract", np.subtract),
    ("multiply", np.multiply),
    ("divide", np.divide),
    ("maximum", np.maximum),
    ("minimum", np.minimum),
    ("power", np.power),
]


@pytest.mark.parametrize("name,ref", BINARY, ids=[b[0] for b in BINARY])
def test_binary_broadcast_forward(name, ref, device, xp, rng):
    a = rng.uniform(0.5, 2.0, (2, 1, 4))
    b = rng.uniform(0.5, 2.0, (3, 1))
    out = getattr(ops, name)(xp.asarray(a, dtype=xp.float32), xp.asarray(b, dtype=xp.float32))
    assert out.shape == (2, 3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(to_np(out), ref(a, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "op",
    [
        lambda x: x * 2.0,
        lambda x: x + 1,
        lambda x: 1.0 / x,
        lambda x: x**2,
        lambda x: 2.0**x,
        lambda x: ops.maximum(x, 0.0),
        lambda x: ops.where(x > 1, x, 0.0),
        lambda x: ops.where(x > 1, 0, x),
        lambda x: ops.clip(x, 0.5, 1.5),
        lambda x: ops.pad(x, 1, constant_values=2.5),
        lambda x: ops.tril(x),
        lambda x: ops.mean(x),
        lambda x: ops.var(x, axis=0, ddof=1),
        lambda x: ops.logsumexp(x, axis=1),
        lambda x: ops.norm(x),
        lambda x: ops.norm(x, ord=1, axis=0),
        lambda x: ops.cumsum(x, 0),
    ],
    ids=lambda f: "",
)
def test_python_scalars_keep_float32(op, device, xp):
    x = xp.asarray(np.array([[0.5, 1.5], [2.0, 1.25]], dtype=np.float32))
    assert op(x).dtype == np.float32
    g = gd.grad(lambda v: ops.sum(op(v)))(x)
    assert g.dtype == np.float32 and g.shape == x.shape


def test_where_condition_gets_no_gradient_and_branches_do(device, xp):
    x = xp.asarray([1.0, -2.0, 3.0])
    y = xp.asarray([10.0, 20.0, 30.0])
    gx, gy = gd.grad(lambda a, b: ops.sum(ops.where(a > 0, a * a, b)), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(to_np(gx), [2.0, 0.0, 6.0])
    np.testing.assert_allclose(to_np(gy), [0.0, 1.0, 0.0])


def test_where_scalar_branches_match_numpy():
    cond = np.array([True, False, True])
    np.testing.assert_array_equal(ops.where(cond, 1.0, 2.0), np.where(cond, 1.0, 2.0))


def test_maximum_ties_send_gradient_to_first_argument():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0])
    gx, gy = gd.grad(lambda a, b: ops.sum(ops.maximum(a, b)), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gx, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(gy, [0.0, 1.0, 0.0])


def test_clip_forward_gradient_and_errors(device, xp):
    x = xp.asarray([-2.0, -0.5, 0.5, 3.0])
    np.testing.assert_allclose(to_np(ops.clip(x, -1, 1)), [-1.0, -0.5, 0.5, 1.0])
    np.testing.assert_allclose(to_np(ops.clip(x, None, 0)), [-2.0, -0.5, 0.0, 0.0])
    np.testing.assert_allclose(to_np(ops.clip(x, min=0)), [0.0, 0.0, 0.5, 3.0])
    g = gd.grad(lambda v: ops.sum(ops.clip(v, -1, 1) * 3.0))(x)
    np.testing.assert_allclose(to_np(g), [0.0, 3.0, 3.0, 0.0])
    with pytest.raises(ValueError, match="a_min, a_max"):
        ops.clip(x)


def test_power_gradients_both_arguments():
    x, y = np.array([0.5, 2.0, 3.0]), np.array([2.0, -1.0, 0.5])
    gx, gy = gd.grad(lambda a, b: ops.sum(a**b), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, y * x ** (y - 1))
    np.testing.assert_allclose(gy, x**y * np.log(x))
    # a Python base: d/dt 2^t = 2^t log 2
    np.testing.assert_allclose(gd.grad(lambda t: ops.sum(2.0**t))(x), 2.0**x * np.log(2.0))


def test_power_gradient_wrt_exponent_is_zero_for_nonpositive_base():
    g = gd.grad(lambda b: ops.sum(np.array([0.0, -2.0]) ** b))(np.array([2.0, 2.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_comparisons_are_not_differentiable_but_usable_in_grad():
    def f(x):
        mask = x > 0
        assert not isinstance(mask, gd.autodiff.Traced)
        return ops.sum(x * mask)

    np.testing.assert_array_equal(gd.grad(f)(np.array([-1.0, 2.0])), [0.0, 1.0])


def test_numpy_ufuncs_on_traced_values_route_to_ops():
    x = np.array([0.3, -0.7])
    g = gd.grad(lambda v: np.sum(np.tanh(v) * np.exp(v)))(x)
    t = np.tanh(x)
    np.testing.assert_allclose(g, (1 - t * t) * np.exp(x) + t * np.exp(x))


def test_astype_round_trip_gradient_dtype():
    x = np.array([1.0, 2.0], dtype=np.float32)
    g = gd.grad(lambda v: ops.sum(ops.astype(v, np.float64) ** 2))(x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * x)


def test_sigmoid_is_stable_for_large_inputs():
    out = ops.sigmoid(np.array([-1000.0, 1000.0], dtype=np.float32))
    np.testing.assert_array_equal(out, [0.0, 1.0])


def test_grad_of_grad_of_elementwise_composite():
    # f = sin(x) * exp(x): f'' = 2 cos(x) exp(x)
    x = np.array([0.3, -1.2, 2.0])
    d2 = gd.grad(lambda v: ops.sum(gd.grad(lambda u: ops.sum(ops.sin(u) * ops.exp(u)))(v)))(x)
    np.testing.assert_allclose(d2, 2 * np.cos(x) * np.exp(x), rtol=1e-12)
    check_grad(lambda v: gd.grad(lambda u: ops.sum(ops.tanh(u) ** 3))(v), x)
