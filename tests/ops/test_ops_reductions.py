"""gpudl.ops reductions: values against NumPy float64, NumPy signatures, gradients."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ShapeError
from gpudl.testing import check_grad

ops = gd.ops
to_np = gd.to_numpy

AXES = [None, 0, 1, -1, (0, 2), (2, 0)]


@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var", "std"])
def test_reductions_match_numpy(name, axis, keepdims, device, xp, rng):
    host = rng.standard_normal((2, 3, 4))
    out = getattr(ops, name)(xp.asarray(host, dtype=xp.float32), axis=axis, keepdims=keepdims)
    ref = getattr(np, name)(host, axis=axis, keepdims=keepdims)
    assert np.shape(out) == ref.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(to_np(out), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ddof", [0, 1])
def test_var_std_ddof(ddof, device, xp, rng):
    host = rng.standard_normal((5, 3))
    x = xp.asarray(host)
    np.testing.assert_allclose(to_np(ops.var(x, axis=0, ddof=ddof)), np.var(host, 0, ddof=ddof))
    np.testing.assert_allclose(to_np(ops.std(x, ddof=ddof)), np.std(host, ddof=ddof))
    # d var / dx_i = 2 (x_i - mean) / (n - ddof)
    g = gd.grad(lambda v: ops.var(v, ddof=ddof))(x)
    np.testing.assert_allclose(to_np(g), 2 * (host - host.mean()) / (host.size - ddof), rtol=1e-10)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's "mean of empty slice" etc.
def test_empty_slices_and_ddof_past_the_count_give_nan_as_numpy(device, xp):
    # a divisor of 0 is NaN (inf for a nonzero sum), as NumPy and torch; it was a made-up 0
    empty, one, two = np.zeros((0, 3)), np.array([3.0]), np.array([[3.0, 4.0], [5.0, 9.0]])
    cases = [("mean", empty, {"axis": 0}), ("var", empty, {"axis": 0}),
             ("var", one, {"ddof": 1}), ("std", two[:1], {"axis": 0, "ddof": 1}),
             ("var", two, {"axis": 0, "ddof": 3}), ("mean", empty, {})]
    for name, host, kwargs in cases:
        got = to_np(getattr(ops, name)(xp.asarray(host), **kwargs))
        np.testing.assert_array_equal(got, getattr(np, name)(host, **kwargs), err_msg=name)
        assert not np.isfinite(got).any(), (name, kwargs)


def test_logsumexp_of_an_empty_axis_is_minus_inf_as_torch(device, xp):
    # an empty sum is 0 and its log -inf; np.max of nothing raised a bare ValueError
    got = to_np(ops.logsumexp(xp.zeros((0, 3)), axis=0))
    assert got.shape == (3,) and (got == -np.inf).all()
    assert to_np(ops.logsumexp(xp.zeros((2, 0)), axis=1, keepdims=True)).shape == (2, 1)
    assert float(ops.logsumexp(xp.zeros((0, 3)))) == -np.inf


def test_max_gradient_goes_to_argmax_and_ties_share(device, xp):
    x = xp.asarray([[1.0, 5.0, 2.0], [3.0, 3.0, 0.0]])
    g = gd.grad(lambda v: ops.sum(ops.max(v, axis=1) * xp.asarray([1.0, 4.0])))(x)
    np.testing.assert_allclose(to_np(g), [[0, 1, 0], [2, 2, 0]])
    g = gd.grad(lambda v: ops.min(v))(x)
    np.testing.assert_allclose(to_np(g), [[0, 0, 0], [0, 0, 1]])


def test_logsumexp_is_stable_and_matches_reference(device, xp, rng):
    host = rng.standard_normal((3, 4)) * 3
    ref = np.log(np.exp(host).sum(axis=1))
    np.testing.assert_allclose(to_np(ops.logsumexp(xp.asarray(host), axis=1)), ref, rtol=1e-12)
    big = xp.asarray([[1000.0, 1000.0], [-np.inf, -np.inf]], dtype=xp.float32)
    out = to_np(ops.logsumexp(big, axis=1))
    np.testing.assert_allclose(out[0], 1000.0 + np.log(2.0), rtol=1e-6)
    assert out[1] == -np.inf
    # gradient is the softmax
    g = gd.grad(lambda v: ops.sum(ops.logsumexp(v, axis=1)))(xp.asarray(host))
    e = np.exp(host - host.max(1, keepdims=True))
    np.testing.assert_allclose(to_np(g), e / e.sum(1, keepdims=True), rtol=1e-10)


def test_argmax_argmin_no_grad_and_keepdims(device, xp, rng):
    host = rng.standard_normal((3, 5))
    x = xp.asarray(host)
    np.testing.assert_array_equal(to_np(ops.argmax(x, axis=1)), host.argmax(1))
    np.testing.assert_array_equal(to_np(ops.argmin(x)), host.argmin())
    assert ops.argmax(x, axis=0, keepdims=True).shape == (1, 5)

    def f(v):
        i = ops.argmax(v, axis=1)
        assert not isinstance(i, gd.autodiff.Traced)
        return ops.sum(v)

    gd.grad(f)(x)


def test_cumsum_forward_and_gradient(device, xp, rng):
    host = rng.standard_normal((3, 4))
    x = xp.asarray(host)
    np.testing.assert_allclose(to_np(ops.cumsum(x, axis=1)), np.cumsum(host, 1))
    np.testing.assert_allclose(to_np(ops.cumsum(x)), np.cumsum(host))
    w = rng.standard_normal((3, 4))
    g = gd.grad(lambda v: ops.sum(ops.cumsum(v, axis=1) * xp.asarray(w)))(x)
    # d/dx_j sum_i w_i cumsum_i = sum_{i >= j} w_i
    np.testing.assert_allclose(to_np(g), np.cumsum(w[:, ::-1], 1)[:, ::-1], rtol=1e-12)


def test_numpy_functions_on_traced_values_dispatch():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = gd.grad(lambda v: np.sum(np.mean(v, axis=0) ** 2) + np.max(v))(x)
    np.testing.assert_allclose(g, [[2.0, 3.0], [2.0, 4.0]])
    assert gd.grad(lambda v: v.sum(axis=None, keepdims=False))(x).shape == (2, 2)
    assert np.shape(gd.grad(lambda v: (np.shape(v) == (2, 2)) * v.sum())(x)) == (2, 2)


def test_reduction_errors():
    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        ops.sum(np.ones((2, 3)), axis=2)
    with pytest.raises(TypeError, match="out="):
        ops.sum(np.ones(2), out=np.zeros(()))
    for name in ("sum", "mean", "max"):  # a 0-d array has no axis (a bare ZeroDivisionError)
        with pytest.raises(ShapeError, match="out of range for a 0-d array"):
            getattr(ops, name)(np.array(2.0), axis=-1)
    assert float(ops.mean(np.array(2.0), axis=())) == 2.0
    for axis in (True, (0, False), 1.0):  # True summed over axis 1, as NumPy does not
        with pytest.raises(TypeError, match="axis must be None, an int or a tuple of ints"):
            ops.sum(np.ones((2, 3)), axis=axis)


def test_grad_of_grad_of_std():
    x = np.array([0.3, -1.0, 2.0, 0.7])
    check_grad(lambda v: gd.grad(lambda u: ops.std(u, ddof=1))(v), x)
    check_grad(lambda v: gd.grad(lambda u: ops.logsumexp(u * u))(v), x)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_top_k_mask_against_a_naive_loop_with_ties(axis, device, xp, rng):
    host = rng.integers(0, 4, (5, 6)).astype(np.float64)  # many ties
    k = 3
    got = to_np(ops.top_k_mask(xp.asarray(host), k, axis=axis))
    moved = np.moveaxis(host, axis, -1)
    want = np.zeros(moved.shape, bool)
    for i in range(moved.shape[0]):
        row = list(moved[i])
        # the k largest, the lower index first among equals (ONNX TopK's rule)
        for j in sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]:
            want[i, j] = True
    np.testing.assert_array_equal(got, np.moveaxis(want, -1, axis))
    assert got.sum(axis=axis).tolist() == [k] * host.shape[1 - (axis % 2)]


@pytest.mark.parametrize("k", [0, 7, -1])
def test_top_k_mask_refuses_k_outside_the_axis(k):
    from gpudl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"top_k_mask: k must be in \[1, 6\]"):
        ops.top_k_mask(np.zeros((2, 6)), k)
