"""Tests of gpudl.autodiff: grad / value_and_grad / vjp / stop_gradient and the tape.

References are closed forms or finite differences in float64, never gpudl itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import gpudl as gd
from gpudl.autodiff import PRIMITIVES, Primitive, Traced
from gpudl.errors import GradientError
from gpudl.testing import check_grad

ops = gd.ops


# ----------------------------------------------------------------------------- grad basics
def test_grad_argnums_int_and_tuple(rng):
    x, y = rng.standard_normal(3), rng.standard_normal(3)

    def f(x, y):
        return (x * y + x * x * y).sum()

    # df/dx = y + 2xy, df/dy = x + x^2
    np.testing.assert_allclose(gd.grad(f)(x, y), y + 2 * x * y, rtol=1e-12)
    np.testing.assert_allclose(gd.grad(f, argnums=1)(x, y), x + x * x, rtol=1e-12)
    np.testing.assert_allclose(gd.grad(f, argnums=-1)(x, y), x + x * x, rtol=1e-12)
    gx, gy = gd.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, y + 2 * x * y, rtol=1e-12)
    np.testing.assert_allclose(gy, x + x * x, rtol=1e-12)
    (only,) = gd.grad(f, argnums=(1,))(x, y)  # a tuple argnums always gives a tuple
    np.testing.assert_allclose(only, x + x * x, rtol=1e-12)


def test_value_and_grad_value_is_plain(rng):
    x = rng.standard_normal(4)
    value, g = gd.value_and_grad(lambda x: (ops.exp(x)).sum())(x)
    assert type(value) is not Traced and type(g) is np.ndarray
    np.testing.assert_allclose(value, np.exp(x).sum(), rtol=1e-12)
    np.testing.assert_allclose(g, np.exp(x), rtol=1e-12)


def test_has_aux_returns_plain_aux(rng):
    x = rng.standard_normal(3)

    def f(x):
        y = ops.sin(x)
        return y.sum(), {"y": y, "n": 3}

    (value, aux), g = gd.value_and_grad(f, has_aux=True)(x)
    assert type(aux["y"]) is np.ndarray and aux["n"] == 3
    np.testing.assert_allclose(aux["y"], np.sin(x))
    np.testing.assert_allclose(value, np.sin(x).sum())
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-12)
    g2, aux2 = gd.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g2, np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(aux2["y"], np.sin(x))


def test_grad_of_nested_dict_params(rng):
    x = rng.standard_normal((5, 3))
    params = {
        "fc1": {"weight": rng.standard_normal((4, 3)), "bias": rng.standard_normal(4)},
        "scale": [rng.standard_normal(()), (rng.standard_normal(4),)],
    }

    def loss(p, x):
        r = x @ p["fc1"]["weight"].T + p["fc1"]["bias"]  # (5, 4)
        r = r * p["scale"][1][0] * p["scale"][0]
        return (r * r).sum()

    g = gd.grad(loss)(params, x)
    assert gd.tree.tree_structure(g) == gd.tree.tree_structure(params)
    # Independent reference: r = s0 * s1 * (x W^T + b); loss = sum r^2.
    W, b = params["fc1"]["weight"], params["fc1"]["bias"]
    s0, s1 = params["scale"][0], params["scale"][1][0]
    z = x @ W.T + b
    r = z * s1 * s0
    dz = 2 * r * s1 * s0
    np.testing.assert_allclose(g["fc1"]["weight"], dz.T @ x, rtol=1e-10)
    np.testing.assert_allclose(g["fc1"]["bias"], dz.sum(0), rtol=1e-10)
    np.testing.assert_allclose(g["scale"][0], (2 * r * z * s1).sum(), rtol=1e-10)
    np.testing.assert_allclose(g["scale"][1][0], (2 * r * z * s0).sum(0), rtol=1e-10)


def test_float32_grads_keep_dtype_and_are_writeable():
    x = np.ones((2, 3), dtype=np.float32)
    g = gd.grad(lambda x: (x * 2.0).sum())(x)
    assert g.dtype == np.float32 and g.shape == (2, 3)
    g += 1  # a broadcast view would be read-only; users update grads in place
    np.testing.assert_allclose(g, 3.0)


def test_unused_argument_gets_zeros(rng):
    x, y = rng.standard_normal(2), rng.standard_normal(3)
    gx, gy = gd.grad(lambda x, y: x.sum(), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gy, np.zeros(3))
    np.testing.assert_array_equal(gx, np.ones(2))
    np.testing.assert_array_equal(gd.grad(lambda x: 2.0)(x), np.zeros(2))


def test_python_float_argument():
    assert float(gd.grad(lambda x: x * x * 3.0)(2.0)) == pytest.approx(12.0)


# ----------------------------------------------------------------------------- vjp
def test_vjp_with_pytree_output(rng):
    x = rng.standard_normal(3)

    def f(x):
        return {"a": x * 2.0, "b": (ops.sin(x), x.sum())}

    out, f_vjp = gd.vjp(f, x)
    np.testing.assert_allclose(out["a"], 2 * x)
    np.testing.assert_allclose(out["b"][0], np.sin(x))
    ca, cb, cs = rng.standard_normal(3), rng.standard_normal(3), np.array(0.7)
    (gx,) = f_vjp({"a": ca, "b": (cb, cs)})
    np.testing.assert_allclose(gx, 2 * ca + np.cos(x) * cb + 0.7, rtol=1e-12)
    # dict cotangents are matched by key, not position
    (gx2,) = f_vjp({"b": (cb, cs), "a": ca})
    np.testing.assert_allclose(gx2, gx)


def test_vjp_multiple_primals_and_aux(rng):
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    out, f_vjp, aux = gd.vjp(lambda x, y: (x * y, {"sum": (x + y).sum()}), x, y, has_aux=True)
    np.testing.assert_allclose(aux["sum"], (x + y).sum())
    c = rng.standard_normal(3)
    gx, gy = f_vjp(c)
    np.testing.assert_allclose(gx, c * y)
    np.testing.assert_allclose(gy, c * x)


# ----------------------------------------------------------------------------- stop_gradient
def test_stop_gradient(rng):
    x = rng.standard_normal(3)
    g = gd.grad(lambda x: (x * gd.stop_gradient(x)).sum())(x)
    np.testing.assert_allclose(g, x)  # d/dx x*c = c = x
    tree = gd.stop_gradient({"a": x, "b": [x]})
    assert type(tree["a"]) is np.ndarray and type(tree["b"][0]) is np.ndarray
    np.testing.assert_array_equal(gd.grad(lambda x: gd.stop_gradient(x).sum())(x), 0.0)


# ----------------------------------------------------------------------------- higher order
def test_second_and_third_derivative_of_tanh():
    xs = np.linspace(-2.0, 2.0, 9)
    d1 = gd.grad(lambda x: ops.tanh(x).sum())
    d2 = gd.grad(lambda x: d1(x).sum())
    d3 = gd.grad(lambda x: d2(x).sum())
    t = np.tanh(xs)
    s = 1 - t * t  # sech^2
    np.testing.assert_allclose(d1(xs), s, rtol=1e-12)
    np.testing.assert_allclose(d2(xs), -2 * t * s, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(d3(xs), -2 * s * (1 - 3 * t * t), rtol=1e-10, atol=1e-14)
    # scalar form from the docstring
    assert float(gd.grad(gd.grad(ops.tanh))(np.array(0.5))) == pytest.approx(
        -2 * np.tanh(0.5) * (1 - np.tanh(0.5) ** 2), rel=1e-12
    )


def test_nested_grad_no_perturbation_confusion():
    # d/dx [x * d/dy (x * y)] = d/dx x^2 = 2x: the inner grad must not differentiate x.
    def f(x):
        inner = gd.grad(lambda y: (x * y).sum())(np.array(1.0))
        return x * inner

    assert float(gd.grad(f)(np.array(3.0))) == pytest.approx(6.0)


def _mlp_loss(p, x, y):
    h = ops.tanh(x @ p["w1"].T + p["b1"])  # (N, H)
    pred = (h @ p["w2"].T + p["b2"])[:, 0]  # (N,)
    return ((pred - y) ** 2).sum() / y.shape[0]


def test_hessian_vector_product_of_mlp_matches_finite_differences(rng):
    x, y = rng.standard_normal((6, 3)), rng.standard_normal(6)
    p = {
        "w1": rng.standard_normal((4, 3)),
        "b1": rng.standard_normal(4),
        "w2": rng.standard_normal((1, 4)),
        "b2": rng.standard_normal(1),
    }
    v = {k: rng.standard_normal(a.shape) for k, a in p.items()}
    loss_grad = gd.grad(_mlp_loss)

    def grad_dot_v(p):
        g = loss_grad(p, x, y)
        return sum((g[k] * v[k]).sum() for k in p)

    hvp = gd.grad(grad_dot_v)(p)
    eps = 1e-5
    plus = loss_grad({k: p[k] + eps * v[k] for k in p}, x, y)
    minus = loss_grad({k: p[k] - eps * v[k] for k in p}, x, y)
    for k in p:
        assert hvp[k].shape == p[k].shape and hvp[k].dtype == np.float64
        np.testing.assert_allclose(hvp[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_long_chain_has_no_recursion_error():
    def f(x):
        for _ in range(10_000):
            x = x * 1.0001 + 0.0
        return x.sum()

    g = gd.grad(f)(np.ones(2))
    np.testing.assert_allclose(g, 1.0001**10_000, rtol=1e-9)


# ----------------------------------------------------------------------------- primitives
def _split_impl(x):
    return x * 2.0, np.sin(x)


def _split_vjp(gs, outs, x):
    g_double, g_sin = gs
    return (g_double * 2.0 + g_sin * ops.cos(x),)


split2 = Primitive("test_split2", _split_impl, _split_vjp, multiple_results=True, register=False)


def test_multi_output_primitive(rng):
    assert "test_split2" not in PRIMITIVES
    x = rng.standard_normal(4)
    a, b = split2(x)  # untraced: the plain tuple
    np.testing.assert_allclose(a, 2 * x)
    g = gd.grad(lambda x: (split2(x)[0] * split2(x)[1]).sum())(x)
    np.testing.assert_allclose(g, 2 * np.sin(x) + 2 * x * np.cos(x), rtol=1e-12)
    # only one output used: the other's cotangent is filled with zeros
    np.testing.assert_allclose(gd.grad(lambda x: split2(x)[1].sum())(x), np.cos(x))
    check_grad(split2, x)
    check_grad(lambda x: split2(x)[0], x)


def test_deferred_vjp_entries_skip_constant_inputs(rng):
    calls = {"x": 0, "y": 0}

    def vjp(g, out, x, y):
        def dx():
            calls["x"] += 1
            return g * y

        def dy():
            calls["y"] += 1
            return g * x

        return dx, dy

    mul = Primitive("test_counted_mul", np.multiply, vjp, register=False)
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    np.testing.assert_allclose(gd.grad(lambda x: mul(x, y).sum())(x), y)
    assert calls == {"x": 1, "y": 0}
    gd.grad(lambda x, y: mul(x, y).sum(), argnums=(0, 1))(x, y)
    assert calls == {"x": 2, "y": 1}


def test_untraced_fast_path_returns_plain_numpy(rng):
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    for got, want in [
        (ops.add(a, b), a + b),
        (ops.matmul(a, b), a @ b),
        (ops.tanh(a), np.tanh(a)),
        (split2(a)[1], np.sin(a)),
    ]:
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, want)


def test_numpy_ufunc_on_traced_value_is_differentiated(rng):
    x = rng.standard_normal(3)
    g = gd.grad(lambda x: np.tanh(x).sum() + np.multiply(x, 2.0).sum())(x)
    np.testing.assert_allclose(g, 1 - np.tanh(x) ** 2 + 2.0, rtol=1e-12)


def test_np_asarray_of_traced_value_raises_clear_error():
    def f(x):
        return np.asarray(x).sum()

    with pytest.raises(TypeError, match="cannot be turned into a NumPy array"):
        gd.grad(f)(np.ones(2))


# ----------------------------------------------------------------------------- errors
def test_grad_wrt_int_array_raises():
    with pytest.raises(GradientError, match="int64.*floating-point"):
        gd.grad(lambda x: x.sum())(np.arange(3))
    with pytest.raises(GradientError, match=r"argument 0\.b"):
        gd.grad(lambda p: p["a"].sum())({"a": np.ones(2), "b": np.arange(2)})


def test_non_scalar_output_without_cotangent_raises():
    with pytest.raises(GradientError, match=r"shape \(3,\).*scalar.*gd\.vjp"):
        gd.grad(lambda x: x * 2.0)(np.ones(3))


def test_tuple_output_without_has_aux_raises():
    with pytest.raises(GradientError, match="has_aux=True"):
        gd.grad(lambda x: (x.sum(), x))(np.ones(3))


@pytest.mark.parametrize(
    "ret", [lambda x: x.sum(), lambda x: (x.sum(), 1, 2), lambda x: [x.sum()]]
)
def test_has_aux_with_wrong_return_raises(ret):
    with pytest.raises(GradientError, match=r"has_aux=True.*pair \(value, aux\)"):
        gd.grad(ret, has_aux=True)(np.ones(3))
    with pytest.raises(GradientError, match="has_aux=True"):
        gd.vjp(ret, np.ones(3), has_aux=True)


def test_vjp_cotangent_mismatch_raises():
    _, f_vjp = gd.vjp(lambda x: x * 2.0, np.ones(3))
    with pytest.raises(GradientError, match=r"cotangent shape \(2,\).*output shape \(3,\)"):
        f_vjp(np.ones(2))
    _, g_vjp = gd.vjp(lambda x: {"a": x, "b": x}, np.ones(3))
    with pytest.raises(GradientError, match=r"missing.*\['b'\]"):
        g_vjp({"a": np.ones(3)})


def test_bad_argnums_raises():
    with pytest.raises(GradientError, match="argnums=2"):
        gd.grad(lambda x: x.sum(), argnums=2)(np.ones(2))


def test_vjp_rule_with_wrong_arity_or_shape_raises():
    bad_arity = Primitive("test_bad_arity", np.add, lambda g, out, x, y: (g,), register=False)
    with pytest.raises(GradientError, match="'test_bad_arity' returned 1 cotangents for 2"):
        gd.grad(lambda x: bad_arity(x, x).sum())(np.ones(2))
    bad_shape = Primitive(
        "test_bad_shape", np.negative, lambda g, out, x: (np.ones(5),), register=False
    )
    with pytest.raises(GradientError, match=r"'test_bad_shape'.*\(5,\).*\(2,\)"):
        gd.grad(lambda x: bad_shape(x).sum())(np.ones(2))


# ----------------------------------------------------------------------------- broadcasting
_BINARY = {
    "add": (ops.add, lambda x, y: (np.ones_like(x + y), np.ones_like(x + y))),
    "multiply": (ops.multiply, lambda x, y: (y + 0 * x, x + 0 * y)),
    "divide": (ops.divide, lambda x, y: (1 / y + 0 * x, -x / y**2)),
    "maximum": (ops.maximum, lambda x, y: ((x >= y) + 0.0 * y, (x < y) + 0.0 * x)),
}


def _unbroadcast(g, shape):
    """Naive reference: sum g over every broadcast axis of an input of ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(0)
    for i, n in enumerate(shape):
        if n == 1:
            g = g.sum(i, keepdims=True)
    return g


@settings(max_examples=25, deadline=None)
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    name=st.sampled_from(sorted(_BINARY)),
    seed=st.integers(0, 2**16),
)
def test_broadcast_grads_property(shapes, name, seed):
    op, local_grads = _BINARY[name]
    xs, ys = shapes.input_shapes
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, xs)
    y = rng.uniform(-2, 2, ys)
    if name == "divide":  # keep away from the pole
        y = np.sign(y + 1e-12) * (0.5 + np.abs(y))
    c = rng.standard_normal(shapes.result_shape)
    gx, gy = gd.grad(lambda x, y: (op(x, y) * c).sum(), argnums=(0, 1))(x, y)
    assert np.shape(gx) == xs and np.shape(gy) == ys
    dx, dy = local_grads(x, y)
    np.testing.assert_allclose(gx, _unbroadcast(c * dx, xs), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gy, _unbroadcast(c * dy, ys), rtol=1e-10, atol=1e-12)
    check_grad(op, x, y)


def test_broadcast_mismatch_names_the_op_and_shapes():
    with pytest.raises(gd.ShapeError, match=r"add: operand shapes \[\(3,\), \(4,\)\]"):
        gd.ops.add(np.ones(3), np.ones(4))
