"""gpudl.random: Philox known answers, stream layout, statistics, errors, CPU == GPU bits.

Bit-exactness against golden hashes and between the NumPy body, the CUDA kernel and the
specification (gpudl.random._philox) is tested in tests/test_random_golden.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gpudl as gd
from gpudl import random as gdr
from gpudl.errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError
from gpudl.random import _philox as spec

MASK = 0xFFFFFFFF


# ----------------------------------------------------------------------------- references
def philox_ref(counter, key, rounds=10):
    """Scalar Philox4x32 straight from Random123's philox.h, in Python ints."""
    c = list(counter)
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c[3] ^ k1) & MASK,
             p0 & MASK]
    return c


def words_ref(key, n_blocks):
    """Block i = philox((i, 0, 0, 0), key); returns (4, n_blocks) Python ints."""
    blocks = [philox_ref((i, 0, 0, 0), key) for i in range(n_blocks)]
    return [[b[w] for b in blocks] for w in range(4)]


def key_ints(k):
    return int(k[0]), int(k[1])


def normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def ks_stat(samples, cdf):
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    f = np.array([cdf(v) for v in x])
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


# ----------------------------------------------------------------------------- Philox
@pytest.mark.parametrize("counter, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    # Random123 kat_vectors for philox4x32_10: as Python ints and as uint64 arrays.
    assert tuple(int(w) for w in gdr.philox4x32(counter, key)) == expected
    arrays = tuple(np.full(3, c, dtype=np.uint64) for c in counter)
    for w, e in zip(gdr.philox4x32(arrays, key), expected, strict=True):
        assert w.dtype == np.uint64 and (w == e).all()
    assert tuple(philox_ref(counter, key)) == expected


def test_philox_vectorised_matches_scalar_reference(rng):
    ctr = rng.integers(0, 2**32, size=(4, 50), dtype=np.uint64)
    key = (0x12345678, 0x9ABCDEF0)
    got = gdr.philox4x32(tuple(ctr), key)
    for i in range(50):
        assert [int(w[i]) for w in got] == philox_ref([int(c) for c in ctr[:, i]], key)


def test_uniform_stream_layout_matches_reference():
    # Pins the stream format: element j comes from word j // n_blocks of block j % n_blocks.
    k = gdr.key(7)
    n = 10
    ref = words_ref(key_ints(k), 3)
    expected = [(ref[j // 3][j % 3] >> 8) * 2.0**-24 for j in range(n)]
    np.testing.assert_array_equal(gdr.uniform(k, (n,)), np.array(expected, np.float32))
    # float64: top 53 bits of (w0 << 32 | w1) and (w2 << 32 | w3).
    ref = words_ref(key_ints(k), 2)
    w64 = [(ref[0][i] << 32 | ref[1][i]) for i in range(2)] + \
          [(ref[2][i] << 32 | ref[3][i]) for i in range(2)]
    np.testing.assert_array_equal(gdr.uniform(k, (4,), dtype=np.float64),
                                  [(w >> 11) * 2.0**-53 for w in w64])


def test_normal_matches_box_muller_reference():
    k = gdr.key(3)
    ref = words_ref(key_ints(k), 4)
    z0, z1 = [], []
    for i in range(4):
        u1 = (((ref[0][i] << 32 | ref[1][i]) >> 11) + 1) * 2.0**-53
        u2 = ((ref[2][i] << 32 | ref[3][i]) >> 11) * 2.0**-53
        r = math.sqrt(-2.0 * math.log(u1))
        z0.append(r * math.cos(2 * math.pi * u2))
        z1.append(r * math.sin(2 * math.pi * u2))
    got = gdr.normal(k, (8,), dtype=np.float64)
    np.testing.assert_allclose(got, z0 + z1, rtol=1e-13, atol=1e-14)


# ----------------------------------------------------------------------------- exact math helpers
def test_log_helper_matches_numpy(rng):
    x = np.concatenate([rng.random(20000), np.exp(rng.uniform(-37, 0, 20000)),
                        1 - rng.random(200) * 1e-9, rng.uniform(1, 1e300, 200),
                        [2.0**-53, 0.5, math.sqrt(0.5), np.nextafter(math.sqrt(0.5), 0), 2.0]])
    ref = np.log(x)
    got = spec.log_reference(x, np)
    nz = ref != 0
    assert np.max(np.abs(got[nz] - ref[nz]) / np.abs(ref[nz])) < 1e-14
    assert spec.log_reference(np.array([1.0]), np)[0] == 0.0


def test_sin_cos_helpers_match_numpy(rng):
    x = rng.uniform(0, math.pi / 4, 20000)
    s, c = spec.sin_cos_poly(x)
    assert np.max(np.abs(s - np.sin(x)) / np.sin(x)) < 1e-14
    assert np.max(np.abs(c - np.cos(x)) / np.cos(x)) < 1e-14
    u = np.concatenate([rng.random(20000), np.arange(16) / 16])
    s, c = spec.sincos_2pi_reference(u, np)
    ref_s, ref_c = np.sin(2 * np.pi * u), np.cos(2 * np.pi * u)
    # np's argument 2*pi*u is itself rounded (abs error ~1e-15), so compare relatively only
    # away from zeros and absolutely everywhere.
    for got, ref in ((s, ref_s), (c, ref_c)):
        assert np.max(np.abs(got - ref)) < 2e-15
        big = np.abs(ref) > 0.1
        assert np.max(np.abs(got[big] - ref[big]) / np.abs(ref[big])) < 1e-14
    quarter = spec.sincos_2pi_reference(np.array([0.0, 0.25, 0.5, 0.75]), np)
    np.testing.assert_array_equal(quarter[0], [0.0, 1.0, 0.0, -1.0])
    np.testing.assert_array_equal(quarter[1], [1.0, 0.0, -1.0, 0.0])


# ----------------------------------------------------------------------------- keys
def test_key_is_small_cpu_uint32():
    k = gdr.key(0)
    assert isinstance(k, np.ndarray) and k.shape == (2,) and k.dtype == np.uint32
    assert gdr.key(2**40 + 5).tolist() == [5, 2**8]
    assert gdr.key(2**64 - 1).tolist() == [MASK, MASK]
    assert gdr.key(np.int64(3)).tolist() == [3, 0]


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**64, 2**70])
def test_key_refuses_seeds_that_would_wrap(seed):
    # key(2**64) used to equal key(0) and key(-1) key(2**64 - 1): another seed's numbers
    with pytest.raises(ConfigError, match=r"must be in \[0, 2\*\*64\), got"):
        gdr.key(seed)
    with pytest.raises(ValueError):  # the builtin meaning is kept
        gdr.key(seed)


@pytest.mark.parametrize("seed", [1.5, "0", None, True, np.float64(1.0)])
def test_key_rejects_non_integer_seed(seed):
    with pytest.raises(TypeError, match="seed"):
        gdr.key(seed)


def test_as_key_turns_int_seeds_into_keys_and_passes_keys_through():
    k = gdr.key(5)
    assert gdr.as_key(k) is k
    for seed in (0, 5, np.int64(5), np.uint32(5), 2**64 - 1):
        assert gdr.as_key(seed).tolist() == gdr.key(seed).tolist()
    assert "as_key" in gdr.__all__


@pytest.mark.parametrize("bad, error, match", [
    (1.5, ArgumentTypeError, "got float 1.5"), (True, ArgumentTypeError, "got bool True"),
    (np.float64(1.0), ArgumentTypeError, "got float64"), (None, ArgumentTypeError, "NoneType"),
    ("0", ArgumentTypeError, "got str '0'"),
    (np.zeros(2, np.int64), ArgumentTypeError, "shape \\(2,\\), dtype int64"),
    (-1, ConfigError, r"must be in \[0, 2\*\*64\), got -1"), (2**64, ConfigError, "2\\*\\*64"),
])
def test_as_key_refuses_what_key_refuses_naming_the_caller(bad, error, match):
    with pytest.raises(error, match=f"F.op: .*{match}"):
        gdr.as_key(bad, "F.op")


def test_split_shapes_unpacking_and_distinct_children():
    k = gdr.key(0)
    k1, k2 = gdr.split(k)
    assert k1.shape == (2,) and k1.dtype == np.uint32
    kids = gdr.split(k, 1000)
    assert kids.shape == (1000, 2) and kids.dtype == np.uint32
    assert len({tuple(r) for r in kids.tolist()} | {tuple(k.tolist())}) == 1001
    np.testing.assert_array_equal(gdr.split(k, 1000)[:2], gdr.split(k))  # deterministic
    assert len(list(gdr.split(k, 3))) == 3 and gdr.split(k, 0).shape == (0, 2)
    # Children of different parents differ, and a child's children differ from siblings.
    assert not (gdr.split(gdr.key(1), 1000) == kids).all(axis=1).any()
    grand = gdr.split(k1, 1000)
    assert not ((grand[:, None, :] == kids[None, :, :]).all(axis=2)).any()


def test_split_few_keys_in_python_gives_the_vectorised_bits():
    """split of up to _SPLIT_IN_PYTHON keys runs Philox on Python ints: the same keys as the
    NumPy form (which a 1000-key split takes), for every count and for keys of high words."""
    assert gdr._SPLIT_IN_PYTHON >= 2
    for k in (gdr.key(0), gdr.key(2**63 + 12345), np.array([2**32 - 1, 7], np.uint32)):
        many = gdr.split(k, 1000)
        for n in range(gdr._SPLIT_IN_PYTHON + 3):
            few = gdr.split(k, n)
            assert few.dtype == np.uint32 and few.shape == (n, 2)
            np.testing.assert_array_equal(few, many[:n])


def test_split_streams_are_uncorrelated():
    k1, k2 = gdr.split(gdr.key(42))
    n = 200_000
    a, b = gdr.uniform(k1, (n,), dtype=np.float64), gdr.uniform(k2, (n,), dtype=np.float64)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)
    za, zb = gdr.normal(k1, (n,), dtype=np.float64), gdr.normal(k2, (n,), dtype=np.float64)
    assert abs(np.corrcoef(za, zb)[0, 1]) < 5 / math.sqrt(n)
    # Many sibling streams: the first draws across 5000 children look uniform too.
    first = np.array([gdr.uniform(c, (1,), dtype=np.float64)[0] for c in gdr.split(k1, 5000)])
    assert ks_stat(first, lambda v: v) < 1.63 / math.sqrt(5000)


def test_fold_in_is_deterministic_and_distinct():
    k = gdr.key(0)
    folded = np.stack([gdr.fold_in(k, i) for i in range(1000)])
    assert len({tuple(r) for r in folded.tolist()}) == 1000
    np.testing.assert_array_equal(gdr.fold_in(k, 5), gdr.fold_in(k, 5))
    assert not (gdr.fold_in(gdr.key(1), 5) == gdr.fold_in(k, 5)).all()
    assert gdr.fold_in(k, 2**64 + 3).tolist() == gdr.fold_in(k, 3).tolist()


# ----------------------------------------------------------------------------- determinism
GENERATORS = {
    "uniform": lambda k: gdr.uniform(k, (5, 7)),
    "normal": lambda k: gdr.normal(k, (5, 7)),
    "truncated_normal": lambda k: gdr.truncated_normal(k, (5, 7), -1.0, 1.5),
    "bernoulli": lambda k: gdr.bernoulli(k, 0.5, (5, 7)),
    "randint": lambda k: gdr.randint(k, (5, 7), -100, 100),
    "permutation": lambda k: gdr.permutation(k, 35),
    "choice": lambda k: gdr.choice(k, 100, (5, 7)),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_key_same_numbers_different_keys_differ(name):
    gen = GENERATORS[name]
    a, b = gen(gdr.key(11)), gen(gdr.key(11))
    assert isinstance(a, np.ndarray)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gen(gdr.key(12)))
    k1, k2 = gdr.split(gdr.key(11))
    assert not np.array_equal(gen(k1), gen(k2))


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_uniform_moments_range_and_grid(dtype):
    n = 200_000
    u = gdr.uniform(gdr.key(1), (n,), dtype=dtype)
    assert u.dtype == dtype and u.shape == (n,)
    assert u.min() >= 0 and u.max() < 1
    u64 = u.astype(np.float64)
    assert abs(u64.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u64.var() - 1 / 12) < 0.002
    bits = np.finfo(dtype).nmant + 1
    scaled = u64 * 2.0**bits
    assert (scaled == np.floor(scaled)).all()  # exactly on the 2**-bits grid
    v = gdr.uniform(gdr.key(1), (1000,), dtype=dtype, minval=-3.0, maxval=-2.0)
    assert (v >= -3).all() and (v < -2).all()


def test_uniform_half_open_even_when_rounding_hits_maxval():
    # minval + u * width rounds up to maxval for u close to 1 when |minval| >> width.
    v = gdr.uniform(gdr.key(0), (100_000,), minval=1000.0, maxval=1000.0625)
    assert v.max() < np.float32(1000.0625) and v.min() >= 1000.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_moments_and_ks(dtype):
    n = 200_000
    z = gdr.normal(gdr.key(2), (n,), dtype=dtype)
    assert z.dtype == dtype
    z64 = z.astype(np.float64)
    assert abs(z64.mean()) < 5 / math.sqrt(n)
    assert abs(z64.std() - 1) < 5 / math.sqrt(2 * n)
    assert abs(np.mean(z64**3)) < 0.03 and abs(np.mean(z64**4) - 3) < 0.06
    assert ks_stat(z64[:20_000], normal_cdf) < 1.63 / math.sqrt(20_000)  # 1% level
    # float32 is the rounded float64 draw: one stream, two precisions.
    np.testing.assert_array_equal(z, gdr.normal(gdr.key(2), (n,), np.float64).astype(dtype))
    w = gdr.normal(gdr.key(2), (50_000,), dtype=dtype, mean=3.0, std=0.5).astype(np.float64)
    assert abs(w.mean() - 3) < 0.02 and abs(w.std() - 0.5) < 0.01


def test_truncated_normal_bounds_and_ks():
    lo, hi = -0.5, 2.0
    z = gdr.truncated_normal(gdr.key(4), (20_000,), lo, hi, dtype=np.float64)
    assert z.min() >= lo and z.max() <= hi
    mass = normal_cdf(hi) - normal_cdf(lo)
    assert ks_stat(z, lambda v: (normal_cdf(v) - normal_cdf(lo)) / mass) < 1.63 / math.sqrt(20_000)
    tail = gdr.truncated_normal(gdr.key(4), (500,), 3.0, 4.0)  # acceptance ~0.13%
    assert tail.dtype == np.float32 and tail.min() >= 3.0 and tail.max() <= 4.0
    with pytest.raises(ValueError, match="mass"):
        gdr.truncated_normal(gdr.key(0), (3,), 8.0, 9.0)
    with pytest.raises(ValueError, match="lower < upper"):
        gdr.truncated_normal(gdr.key(0), (3,), 1.0, 1.0)


def test_bernoulli_rates_edges_and_broadcast():
    n = 200_000
    b = gdr.bernoulli(gdr.key(5), 0.3, (n,))
    assert b.dtype == np.bool_ and abs(b.mean() - 0.3) < 5 * math.sqrt(0.21 / n)
    assert not gdr.bernoulli(gdr.key(5), 0.0, (1000,)).any()
    assert gdr.bernoulli(gdr.key(5), 1.0, (1000,)).all()
    p = np.array([0.1, 0.5, 0.9])
    m = gdr.bernoulli(gdr.key(6), p, (50_000, 3)).mean(axis=0)
    np.testing.assert_allclose(m, p, atol=0.01)
    assert gdr.bernoulli(gdr.key(6), p).shape == (3,)  # shape defaults to p's


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), np.array([0.5, 2.0])])
def test_bernoulli_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        gdr.bernoulli(gdr.key(0), p, (2,))


def test_bernoulli_shape_mismatch():
    with pytest.raises(ShapeError, match="broadcast"):
        gdr.bernoulli(gdr.key(0), np.array([0.1, 0.2]), (3,))


def test_randint_range_and_uniform_counts():
    n, low, high = 100_000, -3, 7
    r = gdr.randint(gdr.key(8), (n,), low, high)
    assert r.dtype == np.int64 and r.min() == low and r.max() == high - 1
    counts = np.bincount(r - low, minlength=high - low)
    expected = n / (high - low)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # 99.9% quantile of chi-square with 9 degrees of freedom
    r32 = gdr.randint(gdr.key(8), (4, 5), 0, 2**31 - 1, dtype=np.int32)
    assert r32.dtype == np.int32 and r32.shape == (4, 5) and (r32 >= 0).all()
    big = gdr.randint(gdr.key(8), (10_000,), -(2**63), 2**63 - 1)  # wrap-around arithmetic
    assert (big < 0).any() and (big > 0).any()
    assert gdr.randint(gdr.key(8), (3,), 5, 6).tolist() == [5, 5, 5]
    full = gdr.randint(gdr.key(8), (100,), 0, 2**64, dtype=np.uint64)  # the whole range
    assert full.dtype == np.uint64 and len(set(full.tolist())) == 100


def test_randint_errors():
    with pytest.raises(ValueError, match="low < high"):
        gdr.randint(gdr.key(0), (3,), 5, 5)
    with pytest.raises(ValueError, match="does not fit"):
        gdr.randint(gdr.key(0), (3,), 0, 300, dtype=np.uint8)
    with pytest.raises(DTypeError):
        gdr.randint(gdr.key(0), (3,), 0, 3, dtype=np.float32)
    with pytest.raises(TypeError, match="low"):
        gdr.randint(gdr.key(0), (3,), 0.5, 3)


def test_permutation_of_int_and_array():
    p = gdr.permutation(gdr.key(9), 1000)
    assert sorted(p.tolist()) == list(range(1000)) and not (p == np.arange(1000)).all()
    x = np.arange(30, dtype=np.float64).reshape(10, 3)
    px = gdr.permutation(gdr.key(9), x)
    assert px.dtype == np.float64 and px.shape == (10, 3)
    np.testing.assert_array_equal(px, x[gdr.permutation(gdr.key(9), 10)])  # rows stay whole
    assert gdr.permutation(gdr.key(9), 0).shape == (0,)
    # Each of the 6 orders of 3 items appears about equally often over many keys.
    orders = [tuple(gdr.permutation(k, 3).tolist()) for k in gdr.split(gdr.key(0), 3000)]
    counts = np.array([orders.count(o) for o in set(orders)])
    assert len(counts) == 6 and counts.min() > 400


def test_choice():
    c = gdr.choice(gdr.key(0), 10, (5, 4))
    assert c.shape == (5, 4) and c.min() >= 0 and c.max() < 10
    c = gdr.choice(gdr.key(0), 10, (10,), replace=False)
    assert sorted(c.tolist()) == list(range(10))
    a = np.array([2.5, 3.5, 4.5])
    assert set(gdr.choice(gdr.key(0), a, (50,)).tolist()) <= {2.5, 3.5, 4.5}
    with pytest.raises(ValueError, match="without replacement"):
        gdr.choice(gdr.key(0), 3, (4,), replace=False)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad_key", [0, np.zeros(2, np.int64), np.zeros(3, np.uint32), "key"])
def test_non_key_argument_is_explained(bad_key):
    with pytest.raises(TypeError, match="gd.random.key"):
        gdr.uniform(bad_key, (3,))


@pytest.mark.parametrize("shape", [-1, (2, -1), 2.5, (2.0,), "ab", None])
def test_bad_shape(shape):
    with pytest.raises(ShapeError, match="shape"):
        gdr.normal(gdr.key(0), shape)


def test_bad_float_dtype_and_bounds():
    with pytest.raises(DTypeError, match="dtype"):
        gdr.uniform(gdr.key(0), (3,), dtype=np.int32)
    with pytest.raises(ValueError, match="minval < maxval"):
        gdr.uniform(gdr.key(0), (3,), minval=1.0, maxval=1.0)
    # a width beyond the dtype gave maxval's neighbour for every draw (or NaN), as NumPy
    # raises "high - low range exceeds valid bounds"
    for dtype, lo, hi in [(np.float32, -3e38, 3e38), (np.float64, -1e308, 1e308),
                          (np.float16, -6e4, 6e4), (np.float64, -np.inf, 0.0),
                          (np.float64, 0.0, np.inf), (np.float32, 0.0, 1e39)]:
        with pytest.raises(ValueError, match=r"maxval - minval must be finite in float"):
            gdr.uniform(gdr.key(0), (3,), dtype=dtype, minval=lo, maxval=hi)
    x = gdr.uniform(gdr.key(0), (1000,), dtype=np.float32, minval=-1e38, maxval=1e38)
    assert x.min() < 0 < x.max() and np.isfinite(x).all()  # the widest that float32 holds


def test_normal_bernoulli_and_choice_refuse_what_they_would_misread():
    # std < 0 (torch refuses it), a NaN or inf mean/std (every draw NaN or inf), p=True
    # (read as 1.0), a 0-d array population (a bare TypeError from len())
    for kwargs in ({"std": -1.0}, {"std": float("nan")}, {"mean": np.inf}, {"mean": True}):
        with pytest.raises(ValueError, match="must be a finite number"):
            gdr.normal(gdr.key(0), (3,), **kwargs)
    z = gdr.normal(gdr.key(0), (3,), mean=np.float32(1.0), std=np.float64(0.0))
    assert z.tolist() == [1.0, 1.0, 1.0]  # NumPy scalars and std = 0 are fine
    with pytest.raises(ValueError, match="'p' must be a probability in"):
        gdr.bernoulli(gdr.key(0), True, (3,))
    with pytest.raises(ValueError, match="a must be an int .* or an array with a first axis"):
        gdr.choice(gdr.key(0), np.array(5.0), (2,))


def test_shapes_scalar_and_empty():
    assert gdr.uniform(gdr.key(0)).shape == () and gdr.normal(gdr.key(0), 4).shape == (4,)
    assert gdr.normal(gdr.key(0), (0, 3)).shape == (0, 3)


# ----------------------------------------------------------------------------- devices
def test_outputs_follow_device(device):
    xp = gd.backend.xp_for(device)
    k = gdr.key(0)
    for out in (gdr.uniform(k, (3,)), gdr.normal(k, (3,)), gdr.randint(k, (3,), 0, 5),
                gdr.bernoulli(k, 0.5, (3,)), gdr.permutation(k, 3)):
        assert gd.backend.module_of(out) is xp
    assert isinstance(gdr.uniform(k, (3,), device="cpu"), np.ndarray)


CROSS_DEVICE = {
    "uniform32": lambda k, d: gdr.uniform(k, (1001,), device=d),
    "uniform64": lambda k, d: gdr.uniform(k, (1001,), np.float64, -2.0, 5.0, device=d),
    "uniform16": lambda k, d: gdr.uniform(k, (1001,), np.float16, device=d),
    "normal32": lambda k, d: gdr.normal(k, (100_001,), device=d),
    "normal64": lambda k, d: gdr.normal(k, (100_001,), np.float64, 1.0, 3.0, device=d),
    "normal16": lambda k, d: gdr.normal(k, (1001,), np.float16, device=d),
    "truncated_normal": lambda k, d: gdr.truncated_normal(k, (10_001,), -1.0, 0.5, device=d),
    "randint": lambda k, d: gdr.randint(k, (1001,), -7, 1000, device=d),
    "randint_wide": lambda k, d: gdr.randint(k, (1001,), -(2**62), 2**62, device=d),
    "bernoulli": lambda k, d: gdr.bernoulli(k, 0.37, (1001,), device=d),
    "permutation": lambda k, d: gdr.permutation(k, 10_001, device=d),
    "choice": lambda k, d: gdr.choice(k, 500, (200,), replace=False, device=d),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CROSS_DEVICE))
def test_cpu_and_gpu_give_identical_bits(name):
    gen = CROSS_DEVICE[name]
    for k in (gdr.key(0), gdr.split(gdr.key(123), 3)[2]):
        cpu, gpu = gen(k, "cpu"), gen(k, "cuda")
        assert gd.backend.device_of(gpu) == "cuda"
        gpu = gd.to_numpy(gpu)
        assert cpu.dtype == gpu.dtype and cpu.shape == gpu.shape
        # Compare bit patterns (distinguishes -0.0 from 0.0 and is exact by construction).
        view = np.dtype(f"u{cpu.dtype.itemsize}") if cpu.dtype != np.bool_ else np.bool_
        np.testing.assert_array_equal(cpu.view(view), gpu.view(view))


def test_no_draw_returns_placeholders_after_the_usual_checks():
    k = gdr.key(0)
    with gdr.no_draw():
        assert gdr.normal(k, (2, 3), np.float64).tolist() == [[0.0] * 3] * 2
        assert gdr.uniform(k, (4,), minval=1.0, maxval=2.0).dtype == np.float32
        assert not gdr.truncated_normal(k, (5,)).any()
        assert gdr.bernoulli(k, 0.5, (3,)).dtype == np.bool_
        assert gdr.randint(k, (3,), 5, 9).tolist() == [5, 5, 5]
        assert gdr.permutation(k, 4).tolist() == [0, 1, 2, 3]
        assert gdr.choice(k, 6, (2,), replace=False).tolist() == [0, 1]
        assert gdr.split(k).tolist() == gdr.split(gdr.key(0)).tolist() != [[0, 0], [0, 0]]
        with pytest.raises(ShapeError):  # arguments are still checked
            gdr.normal(k, (2, -1))
        with pytest.raises(ConfigError):
            gdr.uniform(k, (2,), minval=1.0, maxval=1.0)
        drawn = {}
        worker = threading.Thread(target=lambda: drawn.update(z=gdr.normal(k, (8,))))
        worker.start()
        worker.join()
    assert drawn["z"].any()  # other threads draw as usual
    np.testing.assert_array_equal(gdr.normal(k, (8,)), drawn["z"])  # and so does this one after


def test_random_speed_benchmark_runs(tmp_path):
    # Smoke test of benchmarks/random_speed.py at a tiny size: it runs and its JSON has a
    # positive rate for every implementation it could time (GPU rows only with a GPU), and
    # the model-init timings (a tiny VGG with --tiny).
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rs.json"
    proc = subprocess.run([sys.executable, "benchmarks/random_speed.py", "--tiny",
                           "--json", str(out)], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["what"] for r in report["init"]] == ["init", "init_shapes", "summary_dict"]
    assert all(r["wall_s"] > 0 and r["cpu_s"] >= 0 for r in report["init"])
    assert {(r["dist"], r["dtype"]) for r in rows if r["device"] == "cpu"} == {
        (d, t) for d in ("uniform", "normal") for t in ("float32", "float64")}
    for r in rows:
        assert r["gpudl_per_s"] > 0
        if r["device"] == "cpu":
            assert r["numpy_per_s"] > 0 and r["reference_per_s"] > 0
    assert "gpudl M/s" in proc.stdout
