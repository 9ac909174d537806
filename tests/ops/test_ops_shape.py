"""gpudl.ops shape ops: values against NumPy, gradients, and clear shape errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ShapeError
from gpudl.testing import check_grad

ops = gd.ops
to_np = gd.to_numpy


def _x(xp, rng, *shape):
    host = rng.standard_normal(shape)
    return host, xp.asarray(host, dtype=xp.float32)


@pytest.mark.parametrize(
    "fn,ref",
    [
        (lambda m, a: m.reshape(a, (4, -1)), None),
        (lambda m, a: m.transpose(a, (2, 0, 1)), None),
        (lambda m, a: m.transpose(a), None),
        (lambda m, a: m.swapaxes(a, 0, 2), None),
        (lambda m, a: m.moveaxis(a, 0, -1), None),
        (lambda m, a: m.expand_dims(a, (0, 2)), None),
        (lambda m, a: m.squeeze(m.expand_dims(a, 1), axis=1), None),
        (lambda m, a: m.ravel(a), None),
        (lambda m, a: m.broadcast_to(a[:, :1], (3, 2, 4, 4)), None),
        (lambda m, a: m.flip(a, axis=1), None),
        (lambda m, a: m.flip(a), None),
        (lambda m, a: m.tile(a, (2, 1, 1, 3)), None),
        (lambda m, a: m.tile(a, 2), None),
        (lambda m, a: m.repeat(a, 2, axis=1), None),
        (lambda m, a: m.repeat(a, [1, 0, 2], axis=1), None),
        (lambda m, a: m.repeat(a, 2), None),
        (lambda m, a: m.pad(a, ((0, 1), (2, 0), (1, 1))), None),
        (lambda m, a: m.tril(a[0], 1), None),
        (lambda m, a: m.triu(a[1], -1), None),
    ],
    ids=lambda v: "" if v is None else None,
)
def test_shape_ops_match_numpy(fn, ref, device, xp, rng):
    host, x = _x(xp, rng, 2, 3, 4)
    out = fn(ops, x)
    expected = fn(np, host)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(to_np(out), expected, rtol=1e-6)
    # the gradient of sum(w * op(x)) is the adjoint of op: check it against full differences
    check_grad(lambda v: fn(ops, v), host, mode="full")


def test_flatten_keeps_leading_dims():
    assert ops.flatten(np.zeros((2, 3, 4)), 1).shape == (2, 12)
    assert ops.flatten(np.zeros((2, 3, 4))).shape == (24,)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_stack_split_round_trip(axis, device, xp, rng):
    hosts = [rng.standard_normal((2, 3)) for _ in range(3)]
    xs = [xp.asarray(h) for h in hosts]
    np.testing.assert_allclose(to_np(ops.concatenate(xs, axis=axis)), np.concatenate(hosts, axis))
    np.testing.assert_allclose(to_np(ops.stack(xs, axis=axis)), np.stack(hosts, axis))
    joined = ops.concatenate(xs, axis=axis)
    for piece, ref in zip(
        ops.split(joined, 3, axis=axis),
        np.split(np.concatenate(hosts, axis), 3, axis),
        strict=False,
    ):
        np.testing.assert_allclose(to_np(piece), ref)


def test_split_indices_like_numpy():
    x = np.arange(10.0)
    for got, want in zip(ops.split(x, [2, 5, 20]), np.split(x, [2, 5, 20]), strict=False):
        np.testing.assert_array_equal(got, want)
    # gradients of unused pieces are zero, used pieces one
    g = gd.grad(lambda v: ops.sum(ops.split(v, [3])[1]))(x)
    np.testing.assert_array_equal(g, [0, 0, 0] + [1] * 7)


def test_stack_gradient():
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    ga, gb = gd.grad(
        lambda u, v: ops.sum(ops.stack([u, v], 1) * np.array([[1.0, 2.0]])), argnums=(0, 1)
    )(a, b)
    np.testing.assert_array_equal(ga, [1, 1])
    np.testing.assert_array_equal(gb, [2, 2])


def test_repeat_and_tile_gradients_sum_copies():
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(
        gd.grad(lambda v: ops.sum(ops.repeat(v, [2, 0, 3])))(x), [2, 0, 3]
    )
    np.testing.assert_array_equal(gd.grad(lambda v: ops.sum(ops.tile(v, (2, 2))))(x), [4, 4, 4])


def test_reshape_errors_name_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3\).*6 elements.*\(4, 2\)"):
        ops.reshape(np.zeros((2, 3)), (4, 2))
    with pytest.raises(ShapeError, match="not a multiple"):
        ops.reshape(np.zeros((2, 3)), (4, -1))
    with pytest.raises(ShapeError, match="only one dim may be -1"):
        ops.reshape(np.zeros((2, 3)), (-1, -1))


def test_concatenate_and_stack_errors():
    with pytest.raises(ShapeError, match=r"array 1 has shape \(2, 4\).*\(2, 3\).*axis 0"):
        ops.concatenate([np.zeros((2, 3)), np.zeros((2, 4))], axis=0)
    with pytest.raises(ShapeError, match="array 1 has shape"):
        ops.concatenate([np.zeros((2, 3)), np.zeros(3)])
    with pytest.raises(ShapeError, match="at least one array"):
        ops.concatenate([])
    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        ops.concatenate([np.zeros((2, 3))] * 2, axis=2)
    with pytest.raises(ShapeError, match=r"array 1 has shape \(3,\) but array 0 has shape \(2,\)"):
        ops.stack([np.zeros(2), np.zeros(3)])


def test_other_shape_errors():
    with pytest.raises(ShapeError, match="equal sections"):
        ops.split(np.zeros(5), 2)
    with pytest.raises(ShapeError, match="not of size 1"):
        ops.squeeze(np.zeros((2, 1)), axis=0)
    with pytest.raises(ShapeError, match="not a permutation"):
        ops.transpose(np.zeros((2, 3)), (0, 0))
    with pytest.raises(ShapeError, match="cannot broadcast"):
        ops.broadcast_to(np.zeros(3), (2, 4))
    with pytest.raises(ValueError, match=">= 0"):
        ops.pad(np.zeros(3), -1)
    with pytest.raises(ShapeError, match="repeats"):
        ops.repeat(np.zeros(3), [1, 2])


def test_pad_constant_value_and_gradient(device, xp):
    x = xp.asarray([[1.0, 2.0]], dtype=xp.float32)
    out = ops.pad(x, ((1, 0), (0, 2)), constant_values=-1)
    np.testing.assert_array_equal(to_np(out), [[-1, -1, -1, -1], [1, 2, -1, -1]])
    g = gd.grad(lambda v: ops.sum(ops.pad(v, 2) ** 2))(x)
    np.testing.assert_allclose(to_np(g), [[2.0, 4.0]])
