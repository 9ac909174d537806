"""Dropout: inverted scaling, keep rate, determinism per key, gradients, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ArgumentTypeError
from gpudl.functional.dropout import dropout


def test_inverted_dropout_scales_survivors(device, xp):
    x = xp.ones((200, 100), dtype=np.float32)
    y = dropout(x, 0.3, gd.random.key(1))
    assert y.dtype == np.float32 and y.shape == x.shape
    vals = gd.to_numpy(y)
    assert set(np.unique(vals).tolist()) <= {0.0, np.float32(1 / 0.7)}
    kept = (vals != 0).mean()
    assert abs(kept - 0.7) < 0.01  # 20000 draws: 5 sigma is ~0.016
    assert abs(vals.mean() - 1.0) < 0.02  # same expectation as no dropout


def test_same_key_same_mask_and_grad_uses_mask():
    x = np.arange(1.0, 13.0).reshape(3, 4)
    key = gd.random.key(7)
    a, b = dropout(x, 0.5, key), dropout(x, 0.5, key)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, dropout(x, 0.5, gd.random.split(key)[0]))
    g = gd.grad(lambda v: dropout(v, 0.5, key).sum())(x)
    np.testing.assert_array_equal(g, np.where(a != 0, 2.0, 0.0))


def test_eval_and_zero_rate_return_input():
    x = np.ones(3)
    assert dropout(x, 0.5, None, train=False) is x
    assert dropout(x, 0.0, None) is x


def test_errors():
    with pytest.raises(ValueError, match="needs a random key"):
        dropout(np.ones(3), 0.5, None)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
            dropout(np.ones(3), bad, gd.random.key(0))


def test_an_int_seed_is_the_key_of_that_seed():
    x = np.ones((10, 10))
    np.testing.assert_array_equal(dropout(x, 0.5, 9), dropout(x, 0.5, gd.random.key(9)))
    with pytest.raises(ArgumentTypeError, match=r"F.dropout: key must be a key .* or an int "
                                                r"seed, got str '0'"):
        dropout(x, 0.5, "0")
    with pytest.raises(ArgumentTypeError, match="got float 1.0"):
        dropout(x, 0.5, 1.0)
