"""F.softmax_cross_entropy: the NumPy twin vs a naive float64 loop, gradients (incl. grad of
grad; ``GRAD_CASES``, run by tests/test_registry.py), and on the ``cuda`` device (a GPU, or
the CPU kernel emulator under ``GPUDL_EMULATE_GPU=1``) the kernels vs the twin. The argument
errors are in test_cross_entropy_checks.py."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError
from gpudl.functional import _cross_entropy_kernels as CEK
from gpudl.functional import cross_entropy as CE
from gpudl.functional.cross_entropy import softmax_cross_entropy
from gpudl.testing import check_grad

SHAPES = [(1, 1), (7, 3), (256, 10), (33, 1000)]
# (ignore_index, label_smoothing); ignore_index=1 is a real class ignored (torch allows it).
OPTIONS = [(None, 0.0), (-100, 0.0), (None, 0.1), (1, 0.25)]
REDUCTIONS = ["mean", "sum", "none"]


# ----------------------------------------------------------------------------- reference
def reference(logits, labels, reduction="mean", ignore_index=None, eps=0.0):
    """Naive float64 loop: (loss, d loss.sum() / d logits) for (N, C) or (N, C, d...) logits."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim == 1:
        x, y = x[None], y.reshape(1)
    xr = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    yr = y.reshape(-1)
    n, c = xr.shape
    losses, grads, n_valid = np.zeros(n), np.zeros((n, c)), 0
    for i in range(n):
        if ignore_index is not None and yr[i] == ignore_index:
            continue
        n_valid += 1
        row = xr[i]
        m = max(row)
        lse = m + np.log(sum(np.exp(v - m) for v in row))
        target = np.full(c, eps / c)
        target[yr[i]] += 1.0 - eps
        losses[i] = -sum(target[k] * (row[k] - lse) for k in range(c))
        grads[i] = np.array([np.exp(row[k] - lse) for k in range(c)]) - target
    if reduction == "none":
        loss = losses.reshape(y.shape if np.ndim(labels) else ())
    elif reduction == "sum":
        loss = losses.sum()
    else:
        loss = losses.sum() / n_valid if n_valid else np.nan
        grads = grads / n_valid if n_valid else grads
    grads = np.moveaxis(grads.reshape(*x.shape[:1], *x.shape[2:], c), -1, 1).reshape(
        np.shape(logits))
    return loss, grads


def make_inputs(shape, ignore_index, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    c = shape[1] if len(shape) > 1 else shape[0]
    y = rng.integers(0, c, size=(shape[0], *shape[2:]) if len(shape) > 1 else ())
    if ignore_index is not None and y.ndim:
        y.reshape(-1)[::3] = ignore_index  # every third row ignored
    return x, y


def loss_and_grad(x, y, **kw):
    def total(logits):
        return gd.ops.sum(softmax_cross_entropy(logits, y, **kw))

    return softmax_cross_entropy(x, y, **kw), gd.grad(total)(x)


# ----------------------------------------------------------------------------- twin vs reference
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index,eps", OPTIONS)
def test_twin_matches_reference(shape, reduction, ignore_index, eps):
    x, y = make_inputs(shape, ignore_index, seed=shape[1])
    kw = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=eps)
    loss, grad = loss_and_grad(x, y, **kw)
    ref_loss, ref_grad = reference(x, y, reduction, ignore_index, eps)
    assert np.shape(loss) == np.shape(ref_loss) and loss.dtype == np.float64
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_twin_float32(reduction):
    x, y = make_inputs((33, 1000), -100, dtype=np.float32)
    loss, grad = loss_and_grad(x, y, reduction=reduction, ignore_index=-100, label_smoothing=0.1)
    ref_loss, ref_grad = reference(x, y, reduction, -100, 0.1)
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_twin_lse_and_unit_gradient():
    x, y = make_inputs((7, 3), -100)
    loss, lse, dlogits = CEK.twin_forward(x, y, ignore_index=-100, eps=0.1, with_grad=True,
                                         grad_scale=0.5)
    ref_lse = np.array([np.log(np.exp(row).sum()) for row in x])
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-13)
    _, ref_grad = reference(x, y, "sum", -100, 0.1)
    np.testing.assert_allclose(dlogits, 0.5 * ref_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss, reference(x, y, "none", -100, 0.1)[0], rtol=1e-12)


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 4, 3, 2), (5,)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extra_dims_torch_layout(shape, reduction):
    x, y = make_inputs(shape, None, seed=len(shape))
    loss, grad = loss_and_grad(x, y, reduction=reduction, label_smoothing=0.05)
    ref_loss, ref_grad = reference(x, y, reduction, None, 0.05)
    assert np.shape(loss) == np.shape(ref_loss)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


def test_large_logits_are_stable():
    x = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 5e3]], dtype=np.float32)
    loss = softmax_cross_entropy(x, np.array([1, 0]), reduction="none")
    np.testing.assert_allclose(loss, [1e4, np.log(3.0)], rtol=1e-6)


def test_mean_over_non_ignored_rows_and_all_ignored():
    x, y = make_inputs((6, 4), None)
    y[[1, 4]] = -1
    got = softmax_cross_entropy(x, y, ignore_index=-1)
    rows = softmax_cross_entropy(x, y, ignore_index=-1, reduction="none")
    np.testing.assert_allclose(got, rows.sum() / 4, rtol=1e-14)
    y_all = np.full(6, -1)
    assert np.isnan(softmax_cross_entropy(x, y_all, ignore_index=-1))  # 0/0, as torch
    g = gd.grad(lambda v: softmax_cross_entropy(v, y_all, ignore_index=-1))(x)
    assert not g.any()


def test_empty_batch():
    x, y = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    assert softmax_cross_entropy(x, y, reduction="none").shape == (0,)
    assert float(softmax_cross_entropy(x, y, reduction="sum")) == 0.0
    assert np.isnan(softmax_cross_entropy(x, y))
    assert gd.grad(lambda v: softmax_cross_entropy(v, y, reduction="sum"))(x).shape == (0, 4)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index,eps", OPTIONS)
def test_check_grad(reduction, ignore_index, eps):
    x, y = make_inputs((6, 5), ignore_index, seed=7)
    check_grad(lambda v: softmax_cross_entropy(v, y, reduction=reduction,
                                               ignore_index=ignore_index, label_smoothing=eps), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_check_grad_extra_dims_and_views(reduction):
    x, y = make_inputs((2, 4, 3), -100, seed=3)
    check_grad(lambda v: softmax_cross_entropy(v, y, reduction=reduction, ignore_index=-100), x)
    view = np.random.default_rng(1).standard_normal((5, 8))[:, ::2]  # non-contiguous (5, 4)
    labels = np.array([0, 3, 1, 2, 3])
    check_grad(lambda v: softmax_cross_entropy(v, labels, reduction=reduction), view,
               mode="full")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_grad_of_grad_hvp(reduction, eps):
    """Hessian-vector product (grad of grad) vs central differences of the gradient."""
    x, y = make_inputs((5, 4), -100, seed=11)
    v = np.random.default_rng(2).standard_normal(x.shape)
    kw = dict(reduction=reduction, ignore_index=-100, label_smoothing=eps)

    def f(logits):
        return gd.ops.sum(softmax_cross_entropy(logits, y, **kw))

    hvp = gd.grad(lambda z: gd.ops.sum(gd.grad(f)(z) * v))(x)
    h = 1e-5
    numeric = (gd.grad(f)(x + h * v) - gd.grad(f)(x - h * v)) / (2 * h)
    np.testing.assert_allclose(hvp, numeric, rtol=1e-6, atol=1e-9)
    check_grad(lambda z: gd.grad(f)(z), x)


def test_grad_through_upstream_cotangent():
    """d/dw of grad_x(w * L(x)) = grad_x L(x): the vjp's g is traced, the logits are not."""
    x, y = make_inputs((4, 3), None, seed=5)
    for reduction in REDUCTIONS:
        def inner(w, red=reduction):
            return gd.grad(lambda z: gd.ops.sum(w * softmax_cross_entropy(z, y, reduction=red)))(x)

        d = gd.grad(lambda w: gd.ops.sum(inner(w)))(np.array(2.0))
        _, ref_grad = reference(x, y, reduction)
        np.testing.assert_allclose(d, ref_grad.sum(), atol=1e-12)
        check_grad(inner, np.array(1.5))


def test_second_backward_and_unfused_path(device, xp, monkeypatch):
    x_host, y_host = make_inputs((6, 5), -100, seed=9)
    x, y = gd.to_device((x_host, y_host), device)
    out, f_vjp = gd.vjp(lambda v: softmax_cross_entropy(v, y, ignore_index=-100), x)
    first = gd.to_numpy(f_vjp(xp.asarray(2.0))[0])  # takes over the saved buffer
    second = gd.to_numpy(f_vjp(xp.asarray(2.0))[0])  # recomputes from lse
    ref = 2.0 * reference(x_host, y_host, "mean", -100)[1]
    np.testing.assert_allclose(first, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(second, first, rtol=1e-12, atol=1e-15)
    monkeypatch.setattr(CE, "FUSED_REDUCED_BACKWARD", False)
    g = gd.grad(lambda v: softmax_cross_entropy(v, y, ignore_index=-100))(x)
    np.testing.assert_allclose(gd.to_numpy(g), first / 2.0, rtol=1e-12, atol=1e-15)


def test_saves_gradient_only_under_grad():
    x, y = make_inputs((3, 4), None)
    _, saved = CE._sce(x, y, reduction="mean", ignore_index=None, label_smoothing=0.0,
                       save_grad=False)
    assert saved.dlogits is None and saved.lse.shape == (3,)
    seen = {}
    real = CE._sce.impl

    def spy(*a, **kw):
        out = real(*a, **kw)
        seen["saved"] = out[1].dlogits is not None
        return out

    CE._sce.impl = spy
    try:
        softmax_cross_entropy(x, y)
        assert seen["saved"] is False
        gd.grad(lambda v: softmax_cross_entropy(v, y))(x)
        assert seen["saved"] is True
    finally:
        CE._sce.impl = real


# ----------------------------------------------------------------------------- gradient cases
# Collected by tests/test_registry.py: float64 logits of order 1 (no saturated softmax);
# labels are integer args, not differentiated. One case per reduction, plus ignore_index +
# label smoothing, torch's (N, C, d) layout and a non-contiguous view.
def _case(shape, labels, seed, view=False, **kw):
    def make():
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape)
        if view:  # (N, 2C) -> every other column: a non-contiguous (N, C) view
            x = rng.standard_normal((shape[0], 2 * shape[1]))[:, ::2]
        return (lambda logits, y: softmax_cross_entropy(logits, y, **kw)), (x, np.array(labels))

    return make


GRAD_CASES = {
    "softmax_cross_entropy": [
        _case((4, 5), [0, 4, 2, 1], 1),
        _case((4, 5), [0, 4, 2, 1], 2, reduction="sum"),
        _case((4, 5), [0, 4, 2, 1], 3, reduction="none"),
        _case((5, 3), [0, -100, 2, 1, -100], 4, ignore_index=-100, label_smoothing=0.2),
        _case((3, 4), [3, 0, 1], 5, view=True, reduction="none", label_smoothing=0.1),
        _case((2, 3, 4), [[0, 2, 1, 1], [2, 2, 0, 1]], 6),  # (N, C, d) torch layout
    ],
}


# ----------------------------------------------------------------------------- views
def test_non_contiguous_logits_accepted():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((10, 6)).astype(np.float32)
    view = big.T  # (6, 10) Fortran-ordered
    y = rng.integers(0, 10, size=6)
    np.testing.assert_allclose(softmax_cross_entropy(view, y),
                               softmax_cross_entropy(np.ascontiguousarray(view), y), rtol=1e-6)


# ----------------------------------------------------------------------------- devices
GPU_SHAPES = SHAPES + [(5, 255), (3, 257), (4, 2049), (2, 4099)]  # every block size, C % 4 != 0


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index,eps", [(None, 0.0), (-100, 0.1)])
def test_device_matches_twin(device, dtype, reduction, ignore_index, eps):
    """On cuda: the kernels (fused and recompute backward) vs the NumPy twin."""
    kw = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=eps)
    for shape in GPU_SHAPES:
        x, y = make_inputs(shape, ignore_index, seed=shape[1], dtype=dtype)
        ref_loss, ref_grad = loss_and_grad(x, y, **kw)
        loss, grad = loss_and_grad(*gd.to_device((x, y), device), **kw)
        assert loss.dtype == dtype and grad.dtype == dtype
        np.testing.assert_allclose(gd.to_numpy(loss), ref_loss, **_tol(dtype))
        np.testing.assert_allclose(gd.to_numpy(grad), ref_grad, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_grad_checks_and_errors(device, dtype):
    x, y = gd.to_device(make_inputs((6, 8), -100, seed=4), device)
    check_grad(lambda v: softmax_cross_entropy(v, y, ignore_index=-100, label_smoothing=0.1), x)
    check_grad(lambda v: softmax_cross_entropy(v, y, reduction="none", ignore_index=-100), x)
    bad = y.copy()
    bad[1] = 8
    with pytest.raises(IndexError, match=r"\[0, 8\)"):
        softmax_cross_entropy(x.astype(dtype), bad)
    with pytest.raises(DTypeError, match="float32 or float64"):
        softmax_cross_entropy(x.astype("float16"), y)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_direct_and_misaligned_rows(dtype):
    """cuda_forward/cuda_backward vs twin_forward, incl. row pointers not 16-byte aligned."""
    cupy = gd.backend.xp_for("cuda")
    rng = np.random.default_rng(0)
    for n, c in [(1, 1), (3, 4), (9, 8), (5, 1000), (2, 4100)]:
        flat = cupy.asarray(rng.standard_normal(n * c + 1).astype(dtype))
        for x in (flat[:-1].reshape(n, c), flat[1:].reshape(n, c)):  # aligned, then offset
            assert x.flags.c_contiguous
            y = cupy.asarray(rng.integers(0, c, size=n))
            for eps in (0.0, 0.2):
                got = CEK.cuda_forward(x, y, eps=eps, with_grad=True, grad_scale=0.5)
                ref = CEK.twin_forward(x, y, eps=eps, with_grad=True, grad_scale=0.5)
                for a, b in zip(got, ref, strict=True):
                    np.testing.assert_allclose(a.get(), b.get(), **_tol(dtype))
                g = cupy.asarray(rng.standard_normal(n).astype(dtype))
                back = CEK.cuda_backward(x, y, got[1], g, eps=eps, scale=1.0)
                ref_back = CEK.twin_grad(x, y, ref[1], g, ignore_index=None, eps=eps)
                np.testing.assert_allclose(back.get(), ref_back.get(), **_tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    dict(reduction="none"), dict(reduction="sum", ignore_index=2),
    dict(reduction="mean", label_smoothing=0.1),
    dict(reduction="none", label_smoothing=0.2, ignore_index=0),
], ids=str)
def test_gpu_upstream_gradients(options, dtype):
    """A non-unit upstream gradient: the backward kernel with a per-row g ('none') or the
    fused gradient scaled by g (reductions), with ignored rows and smoothing."""
    rng = np.random.default_rng(1)
    x = (3.0 * rng.standard_normal((6, 36))).astype(dtype)
    y = np.array([0, 2, 35, 2, 7, 0])
    r = rng.standard_normal(6 if options["reduction"] == "none" else ()).astype(dtype)

    def weighted(v, y, r):
        return gd.ops.sum(softmax_cross_entropy(v, y, **options) * r)

    want = gd.value_and_grad(weighted)(x, y, r)
    got = gd.value_and_grad(weighted)(*gd.to_device((x, y, r), "cuda"))
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(gd.to_numpy(a), b, **_tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_extreme_logits(dtype):
    """Rows with -inf, huge and NaN logits match the twin (a NaN row stays NaN)."""
    x = (3.0 * np.random.default_rng(1).standard_normal((4, 8))).astype(dtype)
    x[1, :3], x[2], x[3, 5] = -np.inf, [1e30, 0, 0, 0, 0, 0, 0, -1e30], np.nan
    y = np.array([3, 4, 0, 1])
    want = softmax_cross_entropy(x, y, reduction="none")
    got = gd.to_numpy(softmax_cross_entropy(*gd.to_device((x, y), "cuda"), reduction="none"))
    np.testing.assert_allclose(got, want, **_tol(dtype))
    assert np.isnan(got[3])


@pytest.mark.gpu
@pytest.mark.gpu_hardware  # 2^28 logits: hours on the CPU emulator
@pytest.mark.slow
def test_kernel_large_vocabulary():
    cupy = gd.backend.xp_for("cuda")
    cupy.random.seed(0)
    x = cupy.random.standard_normal((8192, 32768), dtype=cupy.float32) * 4
    y = cupy.random.randint(0, 32768, size=8192)
    got = CEK.cuda_forward(x, y, eps=0.1, with_grad=True, grad_scale=1.0 / 8192)
    ref = CEK.twin_forward(x, y, eps=0.1, with_grad=True, grad_scale=1.0 / 8192)  # on CuPy
    for a, b in zip(got, ref, strict=True):
        cupy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)


def test_fused_gradient_skips_the_scale_only_for_the_unit_seed(monkeypatch):
    """The loss itself gets g == 1 (the seed, passed on unchanged by add); a scaled loss
    must still scale the saved gradient."""
    from gpudl import autodiff

    seen = []
    real = autodiff.is_unit_cotangent
    monkeypatch.setattr(
        "gpudl.functional.cross_entropy.is_unit_cotangent", lambda g: seen.append(real(g)) or real(g)
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
    ref = gd.grad(lambda v: softmax_cross_entropy(v, y))(x)
    got = gd.grad(lambda v: softmax_cross_entropy(v, y) + 0.0 * v.sum())(x)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    scaled = gd.grad(lambda v: 3.0 * softmax_cross_entropy(v, y))(x)
    np.testing.assert_allclose(scaled, 3.0 * ref, rtol=1e-12)
    assert seen == [True, True, False]
    assert not autodiff._UNIT_SEEDS  # nothing left registered after the grad calls
