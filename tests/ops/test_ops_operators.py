"""Operators, methods and NumPy calls on traced values; grad-of-grad through composites;
coverage of tests/grad_cases/ops.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import gpudl as gd
from gpudl.autodiff import PRIMITIVES
from gpudl.testing import check_grad

ops = gd.ops


def test_operators_and_methods_on_traced_values(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))

    def f(x):
        y = (2.0 - x) * x / 3.0 + x**2 - (-x) + abs(x) @ b
        z = y.T.reshape(-1).reshape(4, 3).transpose(1, 0).sum(axis=0)
        return z.mean() + x.max() + x.std() + x.var(ddof=1) + x[1:, ::2].sum() + x.cumsum(1).sum()

    # reference: the same expression on plain NumPy arrays, differentiated numerically
    check_grad(f, a)
    out = f(a)
    y = (2.0 - a) * a / 3.0 + a**2 + a + np.abs(a) @ b
    ref = (
        y.T.reshape(4, 3).T.sum(0).mean()
        + a.max()
        + a.std()
        + a.var(ddof=1)
        + a[1:, ::2].sum()
        + a.cumsum(1).sum()
    )
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_traced_properties_and_misc_methods():
    def f(x):
        assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
        assert x.mT.shape == (3, 2)
        rows = [r for r in x]
        return (
            (rows[0] * rows[1]).sum()
            + x.flatten().dot(x.ravel())
            + x.clip(0, 1).sum()
            + x.astype(np.longdouble).astype(np.float64).sum()
            + x.squeeze().sum()
            + x.swapaxes(0, 1).repeat(2, axis=0).sum()
            + x.take([0, 0], axis=1).sum()
            + x.copy().sum()
        )

    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
    check_grad(f, x)


def test_numpy_array_functions_on_traced_values():
    def f(x):
        y = np.concatenate([x, np.ones((1, 3))], axis=0)  # (3, 3)
        z = np.stack([y, y.T]).sum(0)
        parts = np.split(z, 3, axis=1)
        return (
            np.linalg.norm(parts[0])
            + np.einsum("ij,ij->", z, z)
            + np.where(z > 0, z, 0.0).sum()
            + np.clip(z, -0.9, 0.8).sum()
            + np.transpose(z).sum()
            + np.reshape(z, -1)[0]
            + np.expand_dims(z, 0).sum()
            + np.mean(np.tile(z, 2))
            + np.pad(z, 1).sum()
        )

    check_grad(f, np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]))


def test_numpy_function_without_gpudl_twin_fails_clearly():
    with pytest.raises(TypeError, match="cannot be turned into a NumPy array"):
        gd.grad(lambda x: np.sort(x).sum())(np.array([2.0, 1.0]))


def test_mixed_operand_order_with_numpy_arrays():
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = gd.grad(lambda x: ((w @ x) + (w - x) * (w / (x + 3.0))).sum())(np.ones((2, 2)))
    x = np.ones((2, 2))
    ref = w.T @ np.ones((2, 2)) + (-(w / (x + 3)) + (w - x) * (-w / (x + 3) ** 2))
    np.testing.assert_allclose(g, ref, rtol=1e-12)


def test_contractive_jacobian_penalty_grad_of_grad(rng):
    # h = sigmoid(W x + b); penalty = ||dh/dx||_F^2 computed with gd.vjp rows, then its
    # gradient w.r.t. W: the contractive autoencoder's regulariser (needs grad of grad).
    x = rng.standard_normal(3)
    b = rng.standard_normal(2)

    def penalty(W):
        rows = []
        for i in range(2):
            e = np.zeros(2)
            e[i] = 1.0
            rows.append(gd.vjp(lambda v: ops.sigmoid(W @ v + b), x)[1](e)[0])
        jac = ops.stack(rows)
        return ops.sum(jac * jac)

    W = rng.standard_normal((2, 3))
    h = 1 / (1 + np.exp(-(W @ x + b)))
    closed = np.sum((h * (1 - h)) ** 2 * np.sum(W * W, axis=1))
    np.testing.assert_allclose(penalty(W), closed, rtol=1e-12)
    check_grad(penalty, W)


def test_saliency_gradient_wrt_input():
    W = np.array([[1.0, -2.0, 0.5]])
    g = gd.grad(lambda x: ops.sum(ops.tanh(ops.matmul(x, W.T))))(np.array([[0.1, 0.2, 0.3]]))
    t = np.tanh(np.array([[0.1, 0.2, 0.3]]) @ W.T)
    np.testing.assert_allclose(g, (1 - t**2) @ W, rtol=1e-12)


def test_every_ops_primitive_has_a_grad_case():
    path = Path(__file__).resolve().parents[1] / "grad_cases" / "ops.py"
    spec = importlib.util.spec_from_file_location("_ops_grad_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ours = {
        n
        for n, p in PRIMITIVES.items()
        if getattr(p.impl, "__module__", "").startswith("gpudl.ops")
    }
    assert ours, "no gpudl.ops primitive found"
    assert not sorted(ours - set(module.CASES))
    for _name, cases in module.CASES.items():
        for case in cases:
            check_grad(*(lambda f, a: (f, *a))(*case()))
