"""Dropout: inverted scaling, keep rate, determinism per key, gradients, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ArgumentTypeError, DTypeError
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


def test_integer_input_is_refused():
    # 1/(1 - rate) scaling needs floats: an int array would silently truncate it
    with pytest.raises(DTypeError, match=r"F.dropout: x has dtype int64; .* Cast it with"):
        dropout(np.ones(3, dtype=np.int64), 0.3, gd.random.key(0))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_fused_apply_gives_the_composites_bits_on_every_device(device, xp, dtype):
    """(x * keep) * scale in one pass == x * (keep * scale) (the former composite), and the
    device's mask and values == the CPU's, bit for bit; the gradient is keep * scale * g."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(290) * 100, [0.0, -0.0, np.inf, -np.inf, np.nan,
                                                         -3e38, 65000.0, 1e-40, -1e-45, 7.0]])
    with np.errstate(over="ignore"):  # -3e38 is -inf in float16
        x = x.astype(dtype)
    key, rate = gd.random.key(5), 0.3
    keep = gd.random.bernoulli(key, 1 - rate, x.shape, device="cpu")
    with np.errstate(all="ignore"):
        old = x * (keep.astype(dtype) * dtype(1 / (1 - rate)))
        got = gd.to_numpy(dropout(xp.asarray(x), rate, key))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(np.uint8), old.view(np.uint8))
    g = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(all="ignore"):
        dx = gd.vjp(lambda v: dropout(v, rate, key), xp.asarray(x))[1](xp.asarray(g))[0]
        np.testing.assert_array_equal(gd.to_numpy(dx), g * (keep.astype(dtype) * dtype(1 / 0.7)))


def _noncontiguous(seed):
    return np.random.default_rng(seed).standard_normal((6, 8))[:, ::2]


GRAD_CASES = {  # run by tests/test_registry.py: float64, first and second order
    "dropout": [
        lambda: (lambda v: dropout(v, 0.4, gd.random.key(3)), (_noncontiguous(0),)),
        lambda: (lambda v: gd.grad(lambda u: (dropout(u, 0.4, 3) ** 2).sum())(v),
                 (_noncontiguous(1),)),
    ],
}
