"""nn.Sequential draws its children's keys only when one of them reads a key: layers whose
``apply`` is marked ``ignores_key`` (Dense, convs, pools, BatchNorm, activations, ...)
cost no Philox call; a child that reads its key (Dropout, a user's layer, an overridden
``apply``) gets ``split(key, n)[i]`` exactly as before."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn import base


class KeyEcho(nn.Layer):
    """A user layer (unmarked): returns the key it was given."""

    def apply(self, params, state, x, *, train=False, key=None):
        return key, state


def test_key_free_children_draw_no_keys(monkeypatch):
    net = nn.Sequential([nn.Flatten(), nn.Dense(5), nn.ReLU(), nn.BatchNorm1d(), nn.Dense(2)])
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    params, state = net.init(gd.random.key(0), x)
    want, _ = net.apply(params, state, x, train=True, key=gd.random.key(1))

    def no_split(*args, **kwargs):
        raise AssertionError("split called for key-free children")

    monkeypatch.setattr(base.gdr, "split", no_split)
    got, _ = net.apply(params, state, x, train=True, key=gd.random.key(1))
    assert np.array_equal(got, want)


def test_a_child_that_reads_its_key_gets_the_same_key_as_before():
    k = gd.random.key(3)
    net = nn.Sequential([nn.Dense(3), nn.ReLU(), KeyEcho()])
    params, state = net.init(gd.random.key(0), np.ones((2, 4), np.float32))
    got, _ = net.apply(params, state, np.ones((2, 4), np.float32), key=k)
    np.testing.assert_array_equal(got, gd.random.split(k, 3)[2])
    drop = nn.Sequential([nn.Dense(8), nn.Dropout(0.5)])
    params, state = drop.init(gd.random.key(0), np.ones((2, 4), np.float32))
    y, _ = drop.apply(params, state, np.ones((2, 4), np.float32), train=True, key=k)
    h, _ = drop.layers[0].apply(params["0"], {}, np.ones((2, 4), np.float32))
    want, _ = drop.layers[1].apply({}, {}, h, train=True, key=gd.random.split(k, 2)[1])
    assert np.array_equal(y, want)


def test_overridden_or_wrapped_apply_counts_as_reading_the_key():
    class NoisyDense(nn.Dense):
        def apply(self, params, state, x, *, train=False, key=None):
            y, s = super().apply(params, state, x)
            return (y if key is None else y + gd.random.normal(key, y.shape, dtype=y.dtype)), s

    assert not base.reads_key(nn.Dense(2)) and not base.reads_key(nn.ReLU())
    assert base.reads_key(NoisyDense(2)) and base.reads_key(nn.Dropout(0.1))
    net = nn.Sequential([NoisyDense(2)])
    params, state = net.init(gd.random.key(0), np.ones((1, 3)))
    y1, _ = net.apply(params, state, np.ones((1, 3)), key=gd.random.key(5))
    y2, _ = net.apply(params, state, np.ones((1, 3)), key=gd.random.key(6))
    assert not np.array_equal(y1, y2)  # it received a key
    dense = nn.Dense(2)
    dense.apply = lambda *a, **kw: pytest.fail("unreachable")  # noqa: ARG005
    assert base.reads_key(dense)
