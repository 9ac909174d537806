"""1-D pooling (gpudl/functional/pooling1d.py): values, arg-max indices and gradients vs
torch.nn.functional in float64 (skipped without torch), a naive loop, the layers, errors
naming the 1-D op, and on the ``cuda`` device the 2-D kernels through the (N, C, 1, L) view."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import nn
from gpudl.errors import DTypeError, ShapeError
from gpudl.testing import check_grad

# (kernel_size, stride, padding): default stride, overlapping windows, padding, a remainder
CASES = [(2, None, 0), (3, 2, 1), (3, 1, 1), (4, 3, 2), ((3,), (2,), (1,))]


def _x(shape=(2, 3, 11), seed=0):
    """Distinct values (no ties), float64."""
    return np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape) / 7.0


def _torch_args(k, s, p):
    return k, (k if s is None else s), p


@pytest.mark.parametrize("k, s, p", CASES)
def test_max_and_avg_match_torch_values_indices_and_gradients(k, s, p):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = _x()
    g = np.random.default_rng(1).standard_normal(F.max_pool1d(x, k, s, p).shape)
    xt = torch.tensor(x, requires_grad=True)

    y, idx = F.max_pool1d_with_indices(x, k, s, p)
    yt, idxt = tf.max_pool1d(xt, *_torch_args(k, s, p), return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, idxt.numpy())
    (dxt,) = torch.autograd.grad(yt, xt, torch.tensor(g))
    dx = gd.vjp(lambda v: F.max_pool1d(v, k, s, p), x)[1](g)[0]
    np.testing.assert_array_equal(dx, dxt.numpy())

    for cip in (True, False):
        y = F.avg_pool1d(x, k, s, p, count_include_pad=cip)
        yt = tf.avg_pool1d(xt, *_torch_args(k, s, p), count_include_pad=cip)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13, atol=1e-15)
        (dxt,) = torch.autograd.grad(yt, xt, torch.tensor(g))
        dx = gd.vjp(lambda v, cip=cip: F.avg_pool1d(v, k, s, p, count_include_pad=cip),
                    x)[1](g)[0]
        np.testing.assert_allclose(dx, dxt.numpy(), rtol=1e-13, atol=1e-15)


def test_against_a_naive_loop_and_gradient_check_on_a_view():
    x = _x((2, 2, 9))
    k, s, p = 3, 2, 1
    padded = np.pad(x, ((0, 0), (0, 0), (p, p)), constant_values=-np.inf)
    lo = (9 + 2 * p - k) // s + 1
    ref = np.stack([padded[..., i * s:i * s + k].max(axis=-1) for i in range(lo)], axis=-1)
    np.testing.assert_array_equal(F.max_pool1d(x, k, s, p), ref)
    zeros = np.pad(x, ((0, 0), (0, 0), (p, p)))
    ref = np.stack([zeros[..., i * s:i * s + k].sum(axis=-1) / k for i in range(lo)], axis=-1)
    np.testing.assert_allclose(F.avg_pool1d(x, k, s, p), ref, rtol=1e-14)
    view = _x((2, 2, 18))[..., ::2]  # non-contiguous
    check_grad(lambda v: F.max_pool1d(v, 3, 2, 1), view)
    check_grad(lambda v: F.avg_pool1d(v, 3, 2, 1, count_include_pad=False), view)


def test_global_pools():
    x = _x((2, 3, 5))
    np.testing.assert_array_equal(F.global_max_pool1d(x), x.max(axis=2))
    np.testing.assert_allclose(F.global_avg_pool1d(x, keepdims=True), x.mean(axis=2,
                                                                              keepdims=True))


def test_layers_run_the_functional_ops():
    x = _x()
    for layer, expected in [
        (nn.MaxPool1d(3, 2, 1), F.max_pool1d(x, 3, 2, 1)),
        (nn.MaxPool1d(2), F.max_pool1d(x, 2)),
        (nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
         F.avg_pool1d(x, 3, 2, 1, count_include_pad=False)),
        (nn.GlobalAvgPool1d(), x.mean(axis=2)),
        (nn.GlobalMaxPool1d(), x.max(axis=2)),
    ]:
        p, s = layer.init(0, x)
        assert p == {} and s == {}
        np.testing.assert_allclose(layer.apply(p, s, x)[0], expected, rtol=1e-14)
    net = nn.Sequential([nn.Conv1d(4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                         nn.GlobalAvgPool1d(), nn.Dense(2)])
    p, s = net.init(0, x)
    assert net.apply(p, s, x)[0].shape == (2, 2) and sorted(p) == ["0", "4"]


def test_errors_name_the_1d_op():
    x = _x()
    with pytest.raises(ShapeError, match=r"F.max_pool1d: x must be 3-D \(N, C, L\).*x\[None\]"):
        F.max_pool1d(x[0], 2)
    with pytest.raises(ShapeError, match=r"F.avg_pool1d: kernel_size must be an int >= 1"):
        F.avg_pool1d(x, (2, 2))
    with pytest.raises(ShapeError, match="stride must be an int >= 1"):
        F.max_pool1d(x, 2, 0)
    with pytest.raises(ShapeError, match="padding must be at most half the kernel size 2"):
        F.max_pool1d(x, 2, padding=2)
    with pytest.raises(ShapeError, match="window of 12 is longer than the padded input"):
        F.avg_pool1d(x, 12)
    with pytest.raises(DTypeError, match="F.max_pool1d: x has dtype int64"):
        F.max_pool1d(np.ones((1, 1, 4), dtype=np.int64), 2)
    with pytest.raises(ShapeError, match=r"F.global_max_pool1d: x must be 3-D"):
        F.global_max_pool1d(np.ones((1, 1, 2, 2)))
    with pytest.raises(nn.LayerArgumentError, match="nn.MaxPool1d: kernel_size must be an int"):
        nn.MaxPool1d((2, 2))
    with pytest.raises(nn.LayerArgumentError, match="count_include_pad must be True or False"):
        nn.AvgPool1d(2, count_include_pad=1)
    with pytest.raises(ShapeError, match=r"nn.AvgPool1d: expects a 3-D input \(N, C, L\)"):
        nn.AvgPool1d(2).apply({}, {}, np.ones((1, 1, 4, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_matches_cpu(device, dtype):
    x = _x((2, 3, 37)).astype(dtype)
    g = np.random.default_rng(3).standard_normal((2, 3, 19)).astype(dtype)
    xd, gd_ = gd.to_device((x, g), device)
    tol = {"rtol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12}
    for f in (lambda v: F.max_pool1d(v, 3, 2, 1),
              lambda v: F.avg_pool1d(v, 3, 2, 1, count_include_pad=False)):
        np.testing.assert_allclose(gd.to_numpy(f(xd)), f(x), **tol)
        dx = gd.vjp(f, xd)[1](gd_)[0]
        np.testing.assert_allclose(gd.to_numpy(dx), gd.vjp(f, x)[1](g)[0], **tol)
