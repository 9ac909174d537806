"""gpudl.ops indexing: gathers and their scatter-add gradients, one_hot, segment_sum."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError

ops = gd.ops
to_np = gd.to_numpy


def _naive_scatter(shape, index, values):
    out = np.zeros(shape)
    for i, v in zip(index, values, strict=False):
        out[i] += v
    return out


@pytest.mark.parametrize(
    "index",
    [
        (slice(1, None), slice(None, None, 2)),
        (1,),
        (Ellipsis, None, 0),
        (-1, slice(None, None, -1)),
        (np.array([0, 2, 2]),),
        ([1, 0],),
        (slice(None), np.array([[0, 3], [3, 3]])),
        (np.array([0, 1]), np.array([3, 3])),
    ],
    ids=str,
)
def test_getitem_matches_numpy(index, device, xp, rng):
    host = rng.standard_normal((3, 4))
    out = ops.getitem(xp.asarray(host, dtype=xp.float32), index)
    np.testing.assert_allclose(to_np(out), host[index], rtol=1e-6)
    assert out.dtype == np.float32


def test_repeated_indices_accumulate_gradients(device, xp, rng):
    host = rng.standard_normal((4, 2))
    idx = np.array([3, 0, 3, 3, 1])
    w = rng.standard_normal((5, 2))
    g = gd.grad(lambda v: ops.sum(v[xp.asarray(idx)] * xp.asarray(w)))(xp.asarray(host))
    np.testing.assert_allclose(to_np(g), _naive_scatter((4, 2), idx, w), rtol=1e-12)
    # a NumPy index on a device array (and a list) work as well
    g2 = gd.grad(lambda v: ops.sum(ops.take(v, list(idx), axis=0) * xp.asarray(w)))(
        xp.asarray(host)
    )
    np.testing.assert_allclose(to_np(g2), to_np(g), rtol=1e-12)


def test_scatter_add_with_repeats_matches_naive(device, xp, rng):
    values = rng.standard_normal((6, 3))
    idx = np.array([0, 4, 0, 0, 2, 4])
    out = ops.scatter_add(xp.asarray(values), xp.asarray(idx), (5, 3))
    np.testing.assert_allclose(to_np(out), _naive_scatter((5, 3), idx, values), rtol=1e-12)
    seg = ops.segment_sum(xp.asarray(values), xp.asarray(idx), 5)
    np.testing.assert_allclose(to_np(seg), to_np(out))
    # the vjp of a scatter-add is a gather
    w = rng.standard_normal((5, 3))
    g = gd.grad(lambda v: ops.sum(ops.segment_sum(v, xp.asarray(idx), 5) * xp.asarray(w)))(
        xp.asarray(values)
    )
    np.testing.assert_allclose(to_np(g), w[idx])


def test_boolean_mask_gradient(device, xp, rng):
    host = rng.standard_normal((3, 4))
    mask = host > 0.2
    x = xp.asarray(host)
    np.testing.assert_allclose(to_np(x[xp.asarray(mask)]), host[mask])
    g = gd.grad(lambda v: ops.sum(v[v > 0.2] ** 2))(x)
    np.testing.assert_allclose(to_np(g), np.where(mask, 2 * host, 0.0))
    g_rows = gd.grad(lambda v: ops.sum(v[xp.asarray([True, False, True])]))(x)
    np.testing.assert_allclose(to_np(g_rows), [[1] * 4, [0] * 4, [1] * 4])


def test_take_and_take_along_axis(device, xp, rng):
    host = rng.standard_normal((3, 4))
    x = xp.asarray(host)
    np.testing.assert_allclose(to_np(ops.take(x, xp.asarray([5, 0]))), np.take(host, [5, 0]))
    np.testing.assert_allclose(to_np(ops.take(x, xp.asarray([2, 2]), axis=1)), host[:, [2, 2]])
    idx = np.array([[0], [3], [1]])
    np.testing.assert_allclose(
        to_np(ops.take_along_axis(x, xp.asarray(idx), 1)), np.take_along_axis(host, idx, 1)
    )
    g = gd.grad(lambda v: ops.sum(ops.take_along_axis(v, xp.asarray(idx), 1)))(x)
    ref = np.zeros((3, 4))
    ref[np.arange(3), idx[:, 0]] = 1
    np.testing.assert_allclose(to_np(g), ref)


def test_one_hot(device, xp):
    out = ops.one_hot(xp.asarray([[2, 0], [1, 1]]), 3)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(to_np(out), np.eye(3)[[[2, 0], [1, 1]]])
    assert ops.one_hot([1], 2, dtype=np.float64).dtype == np.float64


def test_one_hot_errors():
    with pytest.raises(IndexError, match=r"\[0, 3\).*\[0, 3\]"):
        ops.one_hot(np.array([0, 3]), 3)
    with pytest.raises(IndexError, match=r"range \[-1, 0\]"):
        ops.one_hot(np.array([-1, 0]), 3)
    with pytest.raises(DTypeError, match="integers"):
        ops.one_hot(np.array([0.0, 1.0]), 3)
    for n in (2.5, True, 0):  # int(2.5) made 3 columns
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            ops.one_hot(np.array([0, 1]), n)
    with pytest.raises(IndexError, match="segment_ids"):
        ops.segment_sum(np.ones((2, 1)), np.array([0, 2]), 2)
