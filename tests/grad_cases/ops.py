"""Gradient-check cases for the primitives of gpudl/ops (float64, away from kinks).

Each case returns ``(f, args)``; tests/test_registry.py runs ``check_grad(f, *args)``.
Inputs include broadcasting pairs and non-contiguous views (transposes, strided slices)
wherever the op accepts them. Functions close over static arguments (axes, indices).
"""

import numpy as np

from gpudl import ops


def _r(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _pos(seed, *shape):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


def _away(seed, *shape, gap=0.2):
    """Values with |x| >= gap (away from the kink of abs/sign at 0)."""
    x = _r(seed, *shape)
    return np.where(x >= 0, x + gap, x - gap)


def _distinct(seed, *shape):
    """A shuffled grid of values spaced 0.1 apart: no ties for max/min/clip kinks."""
    n = int(np.prod(shape))
    return (
        np.random.default_rng(seed)
        .permutation(np.arange(n) * 0.1 - n * 0.05 + 0.025)
        .reshape(shape)
    )


def _spd(seed, n):
    a = _r(seed, n, n)
    return a @ a.T + n * np.eye(n)


def case(f, *args):
    return lambda: (f, args)


CASES = {
    # ---------------------------------------------------------------- elementwise
    "add": [
        case(ops.add, _r(0, 3, 4), _r(1, 4)),  # broadcast (4,) -> (3, 4)
        case(lambda a, b: a + b, _r(2, 4, 3).T, _r(3, 3, 1)),
    ],
    "subtract": [
        case(ops.subtract, _r(0, 2, 3), _r(1, 2, 1)),
        case(lambda a: 1.5 - a, _r(2, 3, 2).T),
    ],
    "multiply": [
        case(ops.multiply, _r(0, 3, 1, 2), _r(1, 4, 2)),
        case(lambda a, b: a * b, _r(2, 6)[::2], _r(3, 3)),
    ],
    "divide": [case(ops.divide, _r(0, 3, 4), _pos(1, 4)), case(lambda a: 2.0 / a, _pos(2, 4, 3).T)],
    "negative": [case(ops.negative, _r(0, 3, 2).T)],
    "power": [
        case(ops.power, _pos(0, 3, 4), _r(1, 4)),  # both args, broadcast
        case(lambda a: a**3, _r(2, 5)),
        case(lambda t: 2.0**t, _r(3, 4)),
    ],
    "exp": [case(ops.exp, _r(0, 4, 3).T)],
    "expm1": [case(ops.expm1, _r(0, 5))],
    "log": [case(ops.log, _pos(0, 3, 4).T)],
    "log1p": [case(ops.log1p, _pos(0, 5))],
    "sqrt": [case(ops.sqrt, _pos(0, 4, 2)[::2])],
    "sin": [case(ops.sin, _r(0, 3, 3))],
    "cos": [case(ops.cos, _r(0, 3, 3).T)],
    "tanh": [case(ops.tanh, _r(0, 2, 5))],
    "sigmoid": [case(ops.sigmoid, _r(0, 5, 2).T * 3)],
    "abs": [case(ops.abs, _away(0, 3, 4).T)],
    "maximum": [
        case(ops.maximum, _distinct(0, 3, 4), _distinct(1, 4) + 0.05),
        case(lambda a: ops.maximum(a, 0.0), _away(2, 6)),
    ],
    "minimum": [case(ops.minimum, _distinct(0, 3, 4).T, _distinct(1, 3) + 0.05)],
    "clip": [
        case(lambda a: ops.clip(a, -0.52, 0.43), _distinct(0, 4, 5)),
        case(lambda a: ops.clip(a, None, 0.13), _distinct(1, 3, 4).T),
    ],
    "where": [
        case(lambda a, b: ops.where(a > 0, a, b), _away(0, 3, 4), _r(1, 4)),
        case(lambda a: ops.where(a < 0, 0.0, a * a), _away(2, 4, 3).T),
    ],
    # longdouble keeps finite differences exact enough (a float32 round trip would not)
    "astype": [
        case(lambda a: ops.astype(ops.astype(a, np.longdouble) * 2.0, np.float64), _r(0, 3))
    ],
    # ---------------------------------------------------------------- reductions
    "sum": [
        case(lambda a: ops.sum(a, axis=0), _r(0, 3, 4).T),
        case(lambda a: ops.sum(a, axis=(0, 2), keepdims=True), _r(1, 2, 3, 4)),
        case(ops.sum, _r(2, 5)),
    ],
    "max": [
        case(lambda a: ops.max(a, axis=1), _distinct(0, 3, 4).T),
        case(ops.max, _distinct(1, 2, 3)),
        case(lambda a: ops.max(a, axis=(0, 2), keepdims=True), _distinct(2, 2, 3, 2)),
    ],
    "min": [
        case(lambda a: ops.min(a, axis=0), _distinct(0, 4, 3)),
        case(lambda a: ops.min(a, axis=-1, keepdims=True), _distinct(1, 3, 2, 4)),
    ],
    "logsumexp": [
        case(lambda a: ops.logsumexp(a, axis=1), _r(0, 4, 5).T),
        case(ops.logsumexp, _r(1, 3, 2)),
        case(lambda a: ops.logsumexp(a, axis=(0, 1), keepdims=True), _r(2, 2, 3, 2)),
    ],
    "cumsum": [case(lambda a: ops.cumsum(a, axis=1), _r(0, 3, 4).T), case(ops.cumsum, _r(1, 2, 3))],
    # ---------------------------------------------------------------- shape
    "reshape": [
        case(lambda a: ops.reshape(a, (2, 6)), _r(0, 4, 3).T),
        case(lambda a: ops.reshape(a, -1), _r(1, 2, 3)),
    ],
    "transpose": [
        case(lambda a: ops.transpose(a, (2, 0, 1)), _r(0, 2, 3, 4)),
        case(lambda a: a.T, _r(1, 3, 5)[:, ::2]),
    ],
    "broadcast_to": [
        case(lambda a: ops.broadcast_to(a, (2, 3, 4)), _r(0, 3, 1)),
        case(lambda a: ops.broadcast_to(a, (3, 4)), _r(1, 4, 1).T[0]),
    ],
    "concatenate": [
        case(lambda a, b: ops.concatenate([a, b], axis=1), _r(0, 2, 3), _r(1, 3, 2).T),
        case(lambda a, b, c: ops.concatenate([a, b, c]), _r(2, 2), _r(3, 3), _r(4, 1)),
    ],
    "pad": [
        case(lambda a: ops.pad(a, ((1, 0), (2, 3))), _r(0, 3, 2).T),
        case(lambda a: ops.pad(a, 1, constant_values=0.5), _r(1, 2, 2, 2)),
    ],
    # ---------------------------------------------------------------- indexing
    "getitem": [
        case(lambda a: a[1:, ::2], _r(0, 4, 5)),
        case(lambda a: a[np.array([0, 2, 0, 0])], _r(1, 3, 2)),  # repeats accumulate
        case(lambda a: a[a > 0.1], _r(2, 4, 3).T),  # boolean mask
        case(lambda a: a[:, np.array([[1, 1], [0, 2]])], _r(3, 2, 3)),
        case(lambda a: a[np.array([0, 1, 1]), np.array([2, 0, 0])], _r(4, 2, 3)),
        case(lambda a: a[..., None, 1], _r(5, 2, 3)),
    ],
    "index_add": [
        case(lambda v: ops.scatter_add(v, np.array([1, 0, 1, 3]), (4, 2)), _r(0, 4, 2)),
        case(lambda v: ops.segment_sum(v, np.array([2, 2, 0]), 3), _r(1, 2, 3).T),
        # second order: the vjp of getitem is index_add, of index_add is getitem
        case(lambda v: ops.scatter_add(v * v, (slice(1, 3),), (4,)), _r(2, 2)),
    ],
    # ---------------------------------------------------------------- linalg
    "matmul": [
        case(ops.matmul, _r(0, 3, 4), _r(1, 5, 4).T),
        case(ops.matmul, _r(2, 5, 2, 3), _r(3, 3, 4)),  # batched, broadcast b
        case(ops.matmul, _r(4, 3), _r(5, 2, 3, 4)),  # 1-D a
        case(ops.matmul, _r(6, 2, 1, 3, 4), _r(7, 3, 4, 2)),
    ],  # batch dims broadcast
    "einsum": [
        case(lambda a, b: ops.einsum("ij,jk->ik", a, b), _r(0, 3, 4), _r(1, 5, 4).T),
        case(lambda a, b: ops.einsum("bij,bkj->bik", a, b), _r(2, 2, 3, 4), _r(3, 2, 5, 4)),
        case(lambda a, b: ops.einsum("ij,j", a, b), _r(4, 3, 4), _r(5, 4)),  # implicit
        case(lambda a, b: ops.einsum("...ij,...j->...i", a, b), _r(6, 2, 3, 4), _r(7, 1, 4)),
        case(
            lambda a, b: ops.einsum("ij,kl->i", a, b), _r(8, 2, 3), _r(9, 4, 5)
        ),  # sums only in one operand
        case(
            lambda a, b, c: ops.einsum("ij,jk,k->i", a, b, c), _r(10, 2, 3), _r(11, 3, 4), _r(12, 4)
        ),
    ],
    "norm2": [
        case(ops.norm, _r(0, 3, 4).T),
        case(lambda a: ops.norm(a, axis=1, keepdims=True), _r(1, 4, 3)),
        case(lambda a: ops.norm(a, ord="fro", axis=(1, 2)), _r(2, 2, 3, 4)),
    ],
    "solve": [
        case(ops.solve, _spd(0, 3).T + 0.3 * _r(9, 3, 3), _r(1, 3)),  # vector b
        case(ops.solve, _spd(2, 3), _r(3, 4, 3).T),  # matrix b, non-contiguous
        case(ops.solve, np.stack([_spd(4, 3), _spd(5, 3)]), _r(6, 3, 2)),
    ],  # batch broadcast
    "inv": [
        case(ops.inv, _spd(0, 3) + 0.5 * _r(1, 3, 3)),
        case(ops.inv, np.stack([_spd(2, 2), _spd(3, 2)]).transpose(0, 2, 1)),
    ],
    "det": [
        case(ops.det, _spd(0, 3) * 0.3 + 0.2 * _r(1, 3, 3)),
        case(ops.det, np.stack([_spd(2, 2), _spd(3, 2)]) * 0.5),
    ],
}
