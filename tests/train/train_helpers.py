"""Helpers (not a test module) for the training tests: a tiny optimizer, gd.ops losses.

They depend only on the core (ops, autodiff), so the fit/callback/checkpoint tests run
whatever state gpudl.optim and gpudl.functional are in.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from gpudl import nn, ops
from gpudl.data import blobs
from gpudl.nn import initializers as inits
from gpudl.nn.normalization import Dropout
from gpudl.tree import tree_map

MomentumState = namedtuple("MomentumState", "count velocity")


class MomentumSGD:
    """Heavy-ball SGD: state holds a Python int and a velocity tree (like optim.sgd)."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.9):
        self.lr, self.momentum = lr, momentum

    def init(self, params):
        return MomentumState(0, tree_map(lambda p: p * 0, params))

    def update(self, grads, state, params=None):
        v = tree_map(lambda v, g: self.momentum * v + g, state.velocity, grads)
        return tree_map(lambda v: -self.lr * v, v), MomentumState(state.count + 1, v)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy from core ops (logits stay small in these tests)."""
    lse = ops.log(ops.sum(ops.exp(logits), axis=1))
    picked = ops.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return ops.mean(lse - picked)


def mse(out, target):
    return ops.mean((out - target) ** 2)


def np_cross_entropy(logits, labels) -> float:
    z = np.asarray(logits, np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float((lse - z[np.arange(len(labels)), labels]).mean())


def _blob_data():
    x, y = blobs(96, centers=3, dim=2, std=0.6, seed=1)
    return (x[:64], y[:64]), (x[64:], y[64:])


def _mlp():
    return lambda dropout=0.0: nn.Sequential(
        [nn.Dense(16), nn.ReLU()] + ([Dropout(dropout)] if dropout else []) + [nn.Dense(3)])


def zero_dense():
    """Dense(1) starting at w = b = 0: predictions move monotonically toward the target."""
    return nn.Sequential([nn.Dense(1, weight_init=inits.zeros(), bias_init=inits.zeros())])


def rising_val_data():
    """Train target +1, validation target -1: val loss rises every epoch from w = b = 0."""
    x = np.ones((8, 1), np.float32)
    return (x, np.ones((8, 1), np.float32)), (x, -np.ones((8, 1), np.float32))
