"""``F.linear`` (and ``nn.Dense``) on the ``linear_rows`` primitive: against naive loops
and torch, gradients in float64 (``GRAD_CASES``, run by tests/test_registry.py), the
rows taken as a view of a >2-D input, the composite paths (no bias, mixed dtypes), CPU
against the device, and the shape errors."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl.functional.linear import linear_rows


def _loops(x, w, b):
    """(..., in) x (out, in) (+ b) by explicit sums over the features, per row."""
    rows = x.reshape(-1, x.shape[-1])
    y = np.array([[sum(r[c] * w[o, c] for c in range(w.shape[1])) + (0.0 if b is None else b[o])
                   for o in range(w.shape[0])] for r in rows])
    return y.reshape(*x.shape[:-1], w.shape[0])


def _case_3d():
    r = np.random.default_rng(0)  # a non-contiguous (2, 3, 4) input: the reshape copies
    return F.linear, (r.standard_normal((2, 3, 8))[..., ::2], r.standard_normal((5, 4)),
                      r.standard_normal(5))


def _case_1d():
    r = np.random.default_rng(1)  # one example (in,) -> (out,)
    return F.linear, (r.standard_normal(4), r.standard_normal((3, 4)), r.standard_normal(3))


GRAD_CASES = {"linear_rows": [_case_3d, _case_1d]}  # float64, F.linear's own paths


def test_linear_matches_the_formula_and_has_gradients(device, xp):
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), rng.normal(size=4)
    got = F.linear(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    np.testing.assert_allclose(gd.to_numpy(got), x @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(gd.to_numpy(F.linear(xp.asarray(x), xp.asarray(w))), x @ w.T)
    gd.testing.check_grad(F.linear, xp.asarray(x), xp.asarray(w), xp.asarray(b))


@pytest.mark.parametrize("shape", [(4,), (2, 4), (2, 3, 4), (2, 1, 3, 4)])
def test_linear_matches_loops_on_any_leading_dims(shape):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal(shape), rng.standard_normal((3, 4)), rng.standard_normal(3)
    np.testing.assert_allclose(F.linear(x, w, b), _loops(x, w, b), rtol=1e-12)
    np.testing.assert_allclose(F.linear(x, w), _loops(x, w, None), rtol=1e-12)  # no bias
    assert F.linear(x, w, b).shape == (*shape[:-1], 3)


def test_linear_float32_bits_as_the_plain_product():
    # the fused forward is x @ w.T, then + b: the same bits as NumPy's own two steps
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s, dtype=np.float32) for s in ((16, 24), (8, 24), (8,)))
    y = F.linear(x, w, b)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x @ w.T + b)


def test_linear_gradients_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    g = rng.standard_normal((2, 3, 5))
    y, back = gd.vjp(F.linear, x, w, b)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    want = torch.autograd.grad(ty, (tx, tw, tb), torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    for got, ref in zip(back(g), want, strict=True):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-12, atol=1e-14)


def test_linear_takes_the_rows_as_a_view(monkeypatch):
    # a contiguous (..., in) input: the GEMM reads x's own memory, no (rows, in) copy
    x, w, b = np.ones((2, 3, 4)), np.ones((5, 4)), np.zeros(5)
    seen, matmul = [], np.matmul

    def spy(a, bb, *args, **kwargs):
        seen.append((a.shape, np.shares_memory(a, x)))
        return matmul(a, bb, *args, **kwargs)

    monkeypatch.setattr(np, "matmul", spy)
    F.linear(x, w, b)
    assert seen == [((6, 4), True)]


def test_linear_composite_paths_agree():
    rng = np.random.default_rng(5)
    x32, w64, b64 = (rng.standard_normal((2, 3, 4)).astype(np.float32),
                     rng.standard_normal((5, 4)), rng.standard_normal(5))
    # mixed dtypes: the composite of gd.ops, NumPy's promotion
    np.testing.assert_allclose(F.linear(x32, w64, b64), x32.astype(np.float64) @ w64.T + b64,
                               rtol=1e-12)
    grads = gd.grad(lambda x, w: gd.ops.sum(F.linear(x, w) ** 2), argnums=(0, 1))(
        x32.astype(np.float64), w64)  # no bias: the composite's gradient
    y = x32.astype(np.float64) @ w64.T
    np.testing.assert_allclose(grads[1], np.einsum("nlo,nli->oi", 2 * y, x32.astype(np.float64)),
                               rtol=1e-12)
    np.testing.assert_allclose(grads[0], 2 * y @ w64, rtol=1e-12)
    assert linear_rows(np.ones((1, 2)), np.ones((3, 2)), np.full(3, -3.0), relu=True).max() == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_on_device_matches_cpu(device, xp, dtype):
    rng = np.random.default_rng(6)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 4), (5, 4), (5,)))

    def run(x, w, b):  # linear_relu: nn.Sequential's Dense + ReLU (the vjp's where on CuPy)
        return (gd.ops.sum(F.linear(x, w, b) ** 2) + gd.ops.sum(F.linear(x[0, 0], w, b) ** 3)
                + gd.ops.sum(F.linear_relu(x, w, b) ** 3))

    want = gd.value_and_grad(run, argnums=(0, 1, 2))(x, w, b)
    got = gd.value_and_grad(run, argnums=(0, 1, 2))(*(xp.asarray(a) for a in (x, w, b)))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for g, r in zip(gd.tree.tree_leaves(got), gd.tree.tree_leaves(want), strict=True):
        np.testing.assert_allclose(gd.to_numpy(g), r, rtol=tol, atol=tol)


def test_linear_bad_shapes_name_the_sizes():
    with pytest.raises(gd.ShapeError, match="input has 2 features"):
        F.linear(np.ones((1, 2)), np.ones((4, 3)))
    with pytest.raises(gd.ShapeError, match="bias must have shape"):
        F.linear(np.ones((1, 3)), np.ones((4, 3)), np.ones(3))
    with pytest.raises(gd.ShapeError, match="weight must be 2-D"):
        F.linear(np.ones((1, 3)), np.ones(3))
    with pytest.raises(gd.ShapeError, match=r"at least 1 dim .*reshape it to \(1, 3\)"):
        F.linear(np.float64(1.0), np.ones((4, 3)))
