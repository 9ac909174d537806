"""gpudl.ops linear algebra and einsum: values against NumPy, gradients, shape errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ShapeError
from gpudl.testing import check_grad

ops = gd.ops
to_np = gd.to_numpy


def _naive_matmul(a, b):
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = sum(a[i, k] * b[k, j] for k in range(a.shape[1]))
    return out


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (4, 2)),
        ((5, 3, 4), (4, 2)),
        ((4,), (4, 2)),
        ((3, 4), (4,)),
        ((4,), (4,)),
        ((2, 1, 3, 4), (5, 4, 2)),
    ],
)
def test_matmul_shapes_values_and_dtype(sa, sb, device, xp, rng):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    out = ops.matmul(xp.asarray(a, dtype=xp.float32), xp.asarray(b, dtype=xp.float32))
    assert np.shape(out) == np.matmul(a, b).shape and out.dtype == np.float32
    np.testing.assert_allclose(to_np(out), np.matmul(a, b), rtol=1e-4, atol=1e-5)


def test_matmul_against_naive_loops_and_gradients(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    np.testing.assert_allclose(ops.matmul(a, b), _naive_matmul(a, b), rtol=1e-12)
    ga, gb = gd.grad(lambda u, v: ops.sum(u @ v), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga, np.ones((3, 2)) @ b.T)
    np.testing.assert_allclose(gb, a.T @ np.ones((3, 2)))


def test_matmul_errors_name_both_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4, 5\).*\(3\).*\(4\)"):
        ops.matmul(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ShapeError, match=r"batch dims \(2,\) and \(3,\)"):
        ops.matmul(np.zeros((2, 3, 4)), np.zeros((3, 4, 5)))
    with pytest.raises(ShapeError, match="at least 1-D"):
        ops.matmul(np.zeros(()), np.zeros(3))
    with pytest.raises(ShapeError, match="at most 2 dims"):
        ops.dot(np.zeros((2, 2, 2)), np.zeros(2))


def test_dot_outer(device, xp, rng):
    a, b = rng.standard_normal(4), rng.standard_normal(3)
    np.testing.assert_allclose(to_np(ops.outer(xp.asarray(a), xp.asarray(b))), np.outer(a, b))
    np.testing.assert_allclose(float(ops.dot(xp.asarray(a), xp.asarray(a))), a @ a)
    m = rng.standard_normal((3, 4))
    np.testing.assert_allclose(to_np(ops.dot(xp.asarray(m), xp.asarray(a))), m @ a)
    np.testing.assert_allclose(to_np(ops.dot(2.0, xp.asarray(a))), 2 * a)


@pytest.mark.parametrize(
    "ord,axis",
    [
        (None, None),
        (2, None),
        (1, None),
        (np.inf, None),
        (-np.inf, None),
        (3, None),
        (None, 1),
        (1, 0),
        (2, -1),
        (np.inf, 1),
    ],
)
def test_vector_norms_match_numpy(ord, axis, device, xp, rng):
    host = rng.standard_normal((3, 4)) if axis is not None else rng.standard_normal(5)
    out = ops.norm(xp.asarray(host), ord=ord, axis=axis)
    np.testing.assert_allclose(to_np(out), np.linalg.norm(host, ord=ord, axis=axis), rtol=1e-12)


@pytest.mark.parametrize("ord", [None, "fro", 1, -1, np.inf, -np.inf])
def test_matrix_norms_match_numpy(ord, device, xp, rng):
    host = rng.standard_normal((3, 4))
    np.testing.assert_allclose(
        to_np(ops.norm(xp.asarray(host), ord=ord)), np.linalg.norm(host, ord=ord), rtol=1e-12
    )
    batch = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(
        to_np(ops.norm(xp.asarray(batch), ord=ord, axis=(1, 2), keepdims=True)),
        np.linalg.norm(batch, ord=ord, axis=(1, 2), keepdims=True),
        rtol=1e-12,
    )


def test_norm_gradients():
    x = np.array([[3.0, -4.0], [0.5, 2.0]])
    np.testing.assert_allclose(gd.grad(ops.norm)(x), x / np.linalg.norm(x))
    np.testing.assert_allclose(gd.grad(lambda v: ops.norm(v, 1))(np.array([1.0, -2.0])), [1, -1])
    # L2 gradient at 0 is 0, not NaN (weight penalties on zero-initialised biases)
    np.testing.assert_array_equal(gd.grad(ops.norm)(np.zeros(3)), np.zeros(3))
    check_grad(lambda v: ops.norm(v, ord=3), np.array([0.5, -1.2, 2.0]))
    with pytest.raises(ValueError, match="spectral"):
        ops.norm(x, ord=2)


def test_solve_inv_det_match_numpy(device, xp, rng):
    a = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    b, bm = rng.standard_normal(3), rng.standard_normal((3, 2))
    A = xp.asarray(a)
    np.testing.assert_allclose(
        to_np(ops.solve(A, xp.asarray(b))), np.linalg.solve(a, b), rtol=1e-10
    )
    np.testing.assert_allclose(
        to_np(ops.solve(A, xp.asarray(bm))), np.linalg.solve(a, bm), rtol=1e-10
    )
    batch = np.stack([a, a.T])
    np.testing.assert_allclose(
        to_np(ops.solve(xp.asarray(batch), xp.asarray(b))),
        np.stack([np.linalg.solve(a, b), np.linalg.solve(a.T, b)]),
        rtol=1e-10,
    )
    np.testing.assert_allclose(to_np(ops.inv(A)), np.linalg.inv(a), rtol=1e-10)
    np.testing.assert_allclose(float(ops.det(A)), np.linalg.det(a), rtol=1e-10)
    # float32 in, float32 out
    assert (
        ops.solve(xp.asarray(a, dtype=xp.float32), xp.asarray(b, dtype=xp.float32)).dtype
        == np.float32
    )


def test_solve_gradients_and_errors(rng):
    a = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    b = rng.standard_normal(3)
    ga, gb = gd.grad(lambda m, v: ops.sum(ops.solve(m, v)), argnums=(0, 1))(a, b)
    x = np.linalg.solve(a, b)
    lam = np.linalg.solve(a.T, np.ones(3))
    np.testing.assert_allclose(gb, lam, rtol=1e-10)
    np.testing.assert_allclose(ga, -np.outer(lam, x), rtol=1e-10)
    check_grad(lambda m: ops.sum(ops.inv(m) ** 2), a)
    with pytest.raises(ShapeError, match="square"):
        ops.solve(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ShapeError, match="do not fit"):
        ops.solve(np.eye(3), np.zeros(2))
    with pytest.raises(ShapeError, match="square"):
        ops.inv(np.zeros((2, 3)))


def test_forward_only_decompositions(device, xp, rng):
    x = rng.standard_normal((5, 3))
    X = xp.asarray(x)
    u, s, vt = ops.svd(X, full_matrices=False)
    np.testing.assert_allclose(to_np(u * s @ vt), x, atol=1e-10)
    assert ops.svd(X)[0].shape == (5, 5)
    np.testing.assert_allclose(
        to_np(ops.svd(X, compute_uv=False)), np.linalg.svd(x, compute_uv=False)
    )
    np.testing.assert_allclose(to_np(ops.pinv(X)), np.linalg.pinv(x), atol=1e-10)
    w, v = ops.eigh(xp.asarray(x.T @ x))
    np.testing.assert_allclose(to_np(w), np.linalg.eigvalsh(x.T @ x), rtol=1e-10)
    y = rng.standard_normal(5)
    np.testing.assert_allclose(
        to_np(ops.lstsq(X, xp.asarray(y))[0]), np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-8
    )


EINSUM = [
    ("ij,jk->ik", [(3, 4), (4, 2)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("i,i", [(4,), (4,)]),
    ("i,j->ij", [(3,), (2,)]),
    ("ij,j", [(3, 4), (4,)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("ij,kl->ik", [(2, 3), (4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
]


@pytest.mark.parametrize("spec,shapes", EINSUM, ids=[e[0] for e in EINSUM])
def test_einsum_matches_numpy(spec, shapes, device, xp, rng):
    hosts = [rng.standard_normal(s) for s in shapes]
    out = ops.einsum(spec, *[xp.asarray(h, dtype=xp.float32) for h in hosts])
    ref = np.einsum(spec, *hosts)
    assert np.shape(out) == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(to_np(out), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec,shapes",
    [e for e in EINSUM if "ii" not in e[0]],
    ids=[e[0] for e in EINSUM if "ii" not in e[0]],
)
def test_einsum_gradients(spec, shapes, rng):
    hosts = [rng.standard_normal(s) for s in shapes]
    check_grad(lambda *a: ops.einsum(spec, *a), *hosts)


def test_einsum_grad_of_grad_and_errors(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    check_grad(lambda u: gd.grad(lambda v: ops.sum(ops.einsum("ij,j->i", v, b) ** 2))(u), a)
    with pytest.raises(ShapeError, match="letter 'j' has size 4"):
        ops.einsum("ij,jk->ik", np.zeros((3, 4)), np.zeros((5, 2)))
    with pytest.raises(ShapeError, match="2 operands"):
        ops.einsum("ij,jk->ik", np.zeros((3, 4)))
    with pytest.raises(ShapeError, match="3 letters"):
        ops.einsum("ijk->i", np.zeros((3, 4)))
    with pytest.raises(NotImplementedError, match="diagonal"):
        gd.grad(lambda m: ops.einsum("ii", m))(np.eye(2))


@pytest.mark.parametrize("op", ["pinv", "svd", "eigh", "lstsq"])
def test_forward_only_linalg_refuses_traced_inputs(op):
    a = np.eye(3) + 0.1
    fn = {
        "pinv": lambda m: gd.ops.linalg.pinv(m).sum(),
        "svd": lambda m: gd.ops.linalg.svd(m)[1].sum(),
        "eigh": lambda m: gd.ops.linalg.eigh(m)[0].sum(),
        "lstsq": lambda m: gd.ops.linalg.lstsq(m, np.ones(3))[0].sum(),
    }[op]
    with pytest.raises(gd.GradientError, match=f"ops.{op} is forward-only"):
        gd.grad(fn)(a)
    fn(a)  # plain arrays still work
    gd.grad(lambda m: (m * gd.ops.linalg.pinv(gd.stop_gradient(m))).sum())(a)
