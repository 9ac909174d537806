"""gpudl.random bit-exactness: golden outputs, and every body equal to the specification.

``gd.random`` promises that a (key, shape, dtype, arguments) tuple gives the same bits in
every gpudl version and on CPU and GPU. These hashes were recorded from the original
(pre-optimisation) implementation; every later speed-up (chunked NumPy generation, the
fused ``kernels/philox.cu`` kernel) must reproduce them exactly. If one of these tests
fails, the change broke reproducibility of users' seeded runs: fix the code, never the
hashes (a deliberate format change would need a new, versioned stream).

Each case is run for three keys; the GPU test runs the very same cases on CuPy arrays
and checks the very same hashes. The second half checks the NumPy body and the CUDA kernel
against the readable specification (gpudl.random._philox) and each other.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

import gpudl as gd
from gpudl import cuda
from gpudl import random as gdr
from gpudl.random import _cpu as random_cpu
from gpudl.random import _cpu_normal as random_normal
from gpudl.random import _cuda as random_cuda
from gpudl.random import _philox as spec

MASK32 = 0xFFFFFFFF

# name -> fn(r, k, d): r is gpudl.random, k a key, d the device.
CASES = {
    # uniform: every float dtype, odd sizes, sizes that cross internal chunk boundaries
    "uniform_f32_scalar": lambda r, k, d: r.uniform(k, (), device=d),
    "uniform_f32_1": lambda r, k, d: r.uniform(k, (1,), device=d),
    "uniform_f32_3x5x7": lambda r, k, d: r.uniform(k, (3, 5, 7), device=d),
    "uniform_f32_1001": lambda r, k, d: r.uniform(k, (1001,), device=d),
    "uniform_f32_262147": lambda r, k, d: r.uniform(k, (262_147,), device=d),
    "uniform_f32_1048583": lambda r, k, d: r.uniform(k, (1_048_583,), device=d),
    "uniform_f32_range": lambda r, k, d: r.uniform(k, (4099,), np.float32, -3.0, 7.5, device=d),
    "uniform_f32_clamped": lambda r, k, d: r.uniform(k, (100_003,), np.float32, 1000.0, 1000.0625,
                                                     device=d),
    "uniform_f64_5": lambda r, k, d: r.uniform(k, (5,), np.float64, device=d),
    "uniform_f64_1001": lambda r, k, d: r.uniform(k, (1001,), np.float64, -2.0, 5.0, device=d),
    "uniform_f64_524291": lambda r, k, d: r.uniform(k, (524_291,), np.float64, device=d),
    "uniform_f16_1001": lambda r, k, d: r.uniform(k, (1001,), np.float16, device=d),
    "uniform_f16_70001": lambda r, k, d: r.uniform(k, (70_001,), np.float16, -1.0, 1.0, device=d),
    # normal
    "normal_f32_scalar": lambda r, k, d: r.normal(k, (), device=d),
    "normal_f32_7": lambda r, k, d: r.normal(k, (7,), device=d),
    "normal_f32_1001": lambda r, k, d: r.normal(k, (1001,), device=d),
    "normal_f32_262147": lambda r, k, d: r.normal(k, (262_147,), device=d),
    "normal_f32_1000003": lambda r, k, d: r.normal(k, (1_000_003,), device=d),
    "normal_f32_mean_std": lambda r, k, d: r.normal(k, (2049,), np.float32, -2.0, 0.5, device=d),
    "normal_f64_1": lambda r, k, d: r.normal(k, (1,), np.float64, device=d),
    "normal_f64_3x333": lambda r, k, d: r.normal(k, (3, 333), np.float64, device=d),
    "normal_f64_524289": lambda r, k, d: r.normal(k, (524_289,), np.float64, 1.0, 3.0, device=d),
    "normal_f16_1001": lambda r, k, d: r.normal(k, (1001,), np.float16, device=d),
    # truncated normal (rejection rounds use fold_in keys)
    "truncated_f32": lambda r, k, d: r.truncated_normal(k, (10_001,), -1.0, 0.5, device=d),
    "truncated_f64": lambda r, k, d: r.truncated_normal(k, (5, 7), -2.0, 2.0, np.float64,
                                                        device=d),
    "truncated_f32_tail": lambda r, k, d: r.truncated_normal(k, (500,), 3.0, 4.0, device=d),
    "truncated_f16": lambda r, k, d: r.truncated_normal(k, (1001,), dtype=np.float16, device=d),
    # discrete
    "bernoulli_scalar_p": lambda r, k, d: r.bernoulli(k, 0.37, (1001,), device=d),
    "bernoulli_array_p": lambda r, k, d: r.bernoulli(k, np.array([0.1, 0.5, 0.9]), (1000, 3),
                                                     device=d),
    "bernoulli_262147": lambda r, k, d: r.bernoulli(k, 0.5, (262_147,), device=d),
    "randint_small": lambda r, k, d: r.randint(k, (1001,), -7, 1000, device=d),
    "randint_int32": lambda r, k, d: r.randint(k, (4, 5), 0, 2**31 - 1, dtype=np.int32, device=d),
    "randint_wide": lambda r, k, d: r.randint(k, (1001,), -(2**62), 2**62, device=d),
    "randint_full_u64": lambda r, k, d: r.randint(k, (101,), 0, 2**64, dtype=np.uint64, device=d),
    "randint_u8": lambda r, k, d: r.randint(k, (10_007,), 0, 255, dtype=np.uint8, device=d),
    "permutation_int": lambda r, k, d: r.permutation(k, 10_001, device=d),
    "permutation_array": lambda r, k, d: r.permutation(
        k, np.arange(30, dtype=np.float64).reshape(10, 3), device=d),
    "choice_no_replace": lambda r, k, d: r.choice(k, 500, (200,), replace=False, device=d),
    "choice_array": lambda r, k, d: r.choice(k, np.array([2.5, 3.5, 4.5]), (50,), device=d),
    # keys (always NumPy, whatever the device)
    "split_1000": lambda r, k, d: r.split(k, 1000),
    "split_2": lambda r, k, d: r.split(k),
    "fold_in": lambda r, k, d: np.stack([r.fold_in(k, i) for i in (0, 1, 2**32 + 5, 2**64 - 1)]),
}


# sha256 (first 16 hex digits) of "dtype|shape|" + the C-order bytes, for KEYS[0..2].
GOLDEN = {
    "uniform_f32_scalar": ('b029f3f9360fdbd2', '11894a200e12f81b', 'e32dbd38b4160f86'),
    "uniform_f32_1": ('d2b15809bf09ac36', '7b9817ff4e29f370', '7a83261336358b33'),
    "uniform_f32_3x5x7": ('b2ff21cc9b1d35a9', '6112c6c59a2f80f2', 'fbd296e590f31c89'),
    "uniform_f32_1001": ('286743e957d65b89', '0c916b8b0a509ab4', 'e91a7860effe4054'),
    "uniform_f32_262147": ('ee7fb3fe3aa663bc', 'e1759f0bdb66f57d', 'ac592a1a323c48bc'),
    "uniform_f32_1048583": ('a816684a654078ae', '9c0d72cf5bbdcb6b', '39e817c14be5db10'),
    "uniform_f32_range": ('28d73b1a3d90f75d', 'd661e968a37dd79e', '132d62f3f2637e2e'),
    "uniform_f32_clamped": ('b1ace7e71038c7f7', '169edd6807c531a5', '632f9e255c326342'),
    "uniform_f64_5": ('9e63b913df29f1dc', '0d6afd3dfba9a197', '1ff7948eb49585e6'),
    "uniform_f64_1001": ('9eab3f98d297cc31', '89f540fe007d7cbd', 'ccc7c956c7ad3711'),
    "uniform_f64_524291": ('0912ec32e2d49de1', '4b5551c86eef274c', '9e4ee8f5e8f978cf'),
    "uniform_f16_1001": ('e027df84c4e69061', '5d07296fda292797', 'c8ad2abe80576d75'),
    "uniform_f16_70001": ('ee5ae235c7934011', 'b4acc430151f3f11', '26073868856de2a7'),
    "normal_f32_scalar": ('c5b386f026cb3fdf', '87d1a33442057dbd', '149044459f9560d6'),
    "normal_f32_7": ('dcb6b0502784e350', '69a37157532f1175', 'b60aac6f75b8c4e3'),
    "normal_f32_1001": ('6cc964f65ebd8b73', 'd35f0df5de37197c', '61218798123c38f3'),
    "normal_f32_262147": ('bd0e6ac6717273e4', '92f6fd2f66400b86', 'df1c5f48acedcbc7'),
    "normal_f32_1000003": ('df6ad5b679010ea1', 'e5921b87d6bafce1', '6756eb8ea0944936'),
    "normal_f32_mean_std": ('36f7a0e6c0ef076c', '54bc64d15baf1a1b', '1c6d85f0b121ae76'),
    "normal_f64_1": ('539aefe3025ee62f', 'cc4ed7d2822cc134', 'a18df2e81dc4a5a4'),
    "normal_f64_3x333": ('41bc2843b80bfac0', '22a2567691be6eab', '0cd56ba58eba3d25'),
    "normal_f64_524289": ('cd802e1ae5fc1dde', '66239b00c706dd90', 'a8d739e37c1ec3d1'),
    "normal_f16_1001": ('374fc84bd50ddf31', 'd276f0e9c87c951e', '188d3ee8151e6b8b'),
    "truncated_f32": ('f208911c69f3cecb', '4765b681ec88045d', 'cf6d353abc9e1037'),
    "truncated_f64": ('5721439d78ec625e', 'c7607d79d87b69a4', '148155873678872b'),
    "truncated_f32_tail": ('321d474961fc84f6', '259ec053821e4be1', '77f4b263e988cadf'),
    "truncated_f16": ('712149723871ff90', 'e3e5372712e1a215', '224249d84a69fe01'),
    "bernoulli_scalar_p": ('dd5957c0599e79c8', 'c3f7ae1ce4620e8f', '64f54a6e979e30ad'),
    "bernoulli_array_p": ('062e4e9e48d1fa23', '2a3e9729fc30077c', 'b4075811aba2e979'),
    "bernoulli_262147": ('531ebfc532fe8b28', '88b6f2b40f59e55e', '0f9f5c15f80e69ff'),
    "randint_small": ('5ed5abe781c763f7', '62984f017fc804b2', '48b27fa2f7d1ed72'),
    "randint_int32": ('ded881566cf89a8b', '1a538538af29e8fa', '95c94594bc808d64'),
    "randint_wide": ('5b1a2463742cb360', '56bda9870b26df4e', '38e287b711ec9d27'),
    "randint_full_u64": ('deaa422098639b32', '604c37fb37cf06c5', 'c666169a500ca1c6'),
    "randint_u8": ('6535d97d54a70331', 'f7d0c1aab0272bc2', '561f08913ad36794'),
    "permutation_int": ('b557cdd00e4a837c', '0e4a0998d23e22bc', 'e70d7fc6027e4e29'),
    "permutation_array": ('57e7afdcc9836d43', '5f50ff7a988b0756', '52832e16d984f827'),
    "choice_no_replace": ('738942e3d8487e63', '0bd7ee6d738dc006', 'affe633f82c3707d'),
    "choice_array": ('978b1fac5f84de25', 'b6e46d83e132fce9', '326ae9b76d82af2e'),
    "split_1000": ('b00ec9f0cab1a325', '121567aba8959f5b', '6e59ce8d7f6434c8'),
    "split_2": ('ed32887a24cbfce9', '474855419a33de38', 'be5b7a703094e52d'),
    "fold_in": ('aa1e0b4b5531b057', 'ae2387bd85df61f1', '3196ac7b28fbf79d'),
}


def keys():
    return [gdr.key(0), gdr.key(2**40 + 5), gdr.split(gdr.key(123), 3)[2]]


def digest(a) -> str:
    a = np.asarray(a)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes(order="C"))
    return h.hexdigest()[:16]


def test_every_case_has_a_golden_hash():
    assert set(CASES) == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_bits_match_golden(name):
    got = tuple(digest(CASES[name](gdr, k, "cpu")) for k in keys())
    assert got == GOLDEN[name], f"{name}: seeded output changed (key index " \
        f"{[i for i, (g, e) in enumerate(zip(got, GOLDEN[name])) if g != e]})"


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_bits_match_golden(name):
    outs = [CASES[name](gdr, k, "cuda") for k in keys()]
    if name.startswith(("uniform", "normal", "truncated", "bernoulli", "randint", "permutation",
                        "choice")):
        assert all(gd.backend.device_of(o) == "cuda" for o in outs)
    got = tuple(digest(gd.to_numpy(o)) for o in outs)
    assert got == GOLDEN[name]


# ----------------------------------------------------------------------------- bodies == spec
# The NumPy body (gpudl.random._cpu) and the CUDA kernel (kernels/philox.cu) must equal the
# readable specification (gpudl.random._philox) bit for bit, at every size, chunk boundary
# and grid-stride wrap, and on the edge words of the exact-op math.
BODY_KEYS = [(0, 0), (1, 0), (MASK32, MASK32), (0x243F6A88, 0x85A308D3)]
KINDS = ["words32", "words64", "unit16", "unit32", "unit64", "normal16", "normal32", "normal64"]


def _dt(kind: str) -> np.dtype:
    return np.dtype(f"float{kind[-2:]}")


def spec_output(kind: str, words, n: int, xp=np):
    if kind == "words32":
        return spec.words32_reference(words, n, xp)
    if kind == "words64":
        return spec.words64_reference(words, n, xp)
    if kind.startswith("unit"):
        return spec.unit_reference(words, n, _dt(kind), xp)
    return spec.cast(spec.standard_normal64_reference(words, n, xp), _dt(kind))


def numpy_body(kind: str, words, n: int):
    stream = random_cpu.NumpyStream(words)
    if kind == "words32":
        return stream.words32(n)
    if kind == "words64":
        return stream.words64(n)
    if kind.startswith("unit"):
        return stream.unit(n, _dt(kind))
    return stream.normal(n, _dt(kind))


def assert_same_bits(got, ref, what):
    got, ref = gd.to_numpy(got), gd.to_numpy(ref)
    assert got.shape == ref.shape, what
    if got.dtype.kind == "u":  # words: uint32 from the bodies, uint64 from the spec
        np.testing.assert_array_equal(got.astype(np.uint64), ref, err_msg=what)
        return
    assert got.dtype == ref.dtype, what
    bits = np.dtype(f"u{got.dtype.itemsize}")
    np.testing.assert_array_equal(got.view(bits), ref.view(bits), err_msg=what)


@pytest.mark.parametrize("chunk", [3, 64, random_cpu.CHUNK])
def test_numpy_body_matches_spec_across_chunks(monkeypatch, chunk):
    monkeypatch.setattr(random_cpu, "CHUNK", chunk)
    # Element counts around multiples of the chunk for 4 words/block and 2 words/block.
    sizes = {0, 1, 2, 3, 4, 5, 7, 9, 31, 1001}
    sizes |= {m * chunk + d for m in (2, 4, 8) for d in (-1, 0, 1)}
    for words in BODY_KEYS:
        for n in sorted(s for s in sizes if s >= 0):
            for kind in KINDS:
                assert_same_bits(numpy_body(kind, words, n), spec_output(kind, words, n),
                                 f"{kind} key={words} n={n} chunk={chunk}")


def _edge_words() -> tuple[np.ndarray, np.ndarray]:
    """(v1, v2) pairs (53-bit) at the branch points of log and sin/cos, plus random ones."""
    sm = int(np.float64(spec.SQRT_HALF).view(np.uint64)) & ((1 << 52) - 1)
    x = [1, 2, 3, 2**53, 2**52, 2**52 + 1, 2**53 - 1]  # x = v1 + 1 in [1, 2**53]
    for shift in (0, 1, 22, 40, 51):  # x's mantissa at and around the sqrt(2) split
        x += [((1 << 52) + sm + d) >> shift for d in (-1, 0, 1)]
    v2 = [0, 1, 2**53 - 1]
    for q in range(4):  # quadrant starts, f = 1/2 and neighbours
        for f in (0, 2**50):
            v2 += [q * 2**51 + f + d for d in (-1, 0, 1) if 0 <= q * 2**51 + f + d < 2**53]
    rng = np.random.default_rng(5)
    x += rng.integers(1, 2**53, 50).tolist()
    v2 += rng.integers(0, 2**53, 50).tolist()
    v1 = np.array([a - 1 for a in x for _ in v2], dtype=np.uint64)
    return v1, np.array(v2 * len(x), dtype=np.uint64)


def test_numpy_box_muller_bodies_match_spec_on_edge_words():
    v1, v2 = _edge_words()
    ref = np.stack(spec.box_muller_reference(v1, v2, np))  # (2, w) float64
    w = v1.size
    dst = np.empty((2, w), np.float64)
    random_normal.exact_box_muller(np.stack([v1, v2]), random_cpu.Scratch(w), dst)
    assert_same_bits(dst, ref, "exact_box_muller float64")
    # The fast float32 body: unflagged draws round like the reference, flagged ones are the
    # reference's (as NumpyStream.normal recomputes them).
    sc = random_cpu.Scratch(w)
    dst = np.empty((2, w), np.float32)
    flagged = random_normal.fast_box_muller(np.stack([v1, v2]), sc, dst)
    assert np.isin(np.flatnonzero((ref == 0).any(axis=0)), flagged).all(), "zeros not flagged"
    dst[:, flagged] = ref[:, flagged].astype(np.float32)
    assert_same_bits(dst, ref.astype(np.float32), "fast_box_muller float32")


def test_fast_box_muller_error_is_far_below_its_flagging_bound(rng):
    # The flagging is sound while |fast / reference - 1| < REL_BOUND: measure the margin on
    # random words and on the edge words (log near 1, angles near every table point).
    v1, v2 = _edge_words()
    table = np.arange(4097, dtype=np.uint64) << np.uint64(41)  # exact table angles, +-1..3
    near = np.concatenate([np.clip(table.astype(np.int64) + d, 0, 2**53 - 1)
                           for d in (-3, -1, 1, 3, 2**40 - 1, -(2**40))]).astype(np.uint64)
    v1 = np.concatenate([v1, rng.integers(0, 2**53, 200_000, dtype=np.uint64),
                         np.full(near.size, 2**53 - 7, np.uint64)])
    v2 = np.concatenate([v2, rng.integers(0, 2**53, 200_000, dtype=np.uint64), near])
    ref = np.stack(spec.box_muller_reference(v1, v2, np))
    w = v1.size
    sc = random_cpu.Scratch(w)
    random_normal.fast_box_muller(np.stack([v1, v2]), sc, np.empty((2, w), np.float32))
    fast = sc.extra["rot"]  # the float64 draws before rounding: r cos + i r sin
    fast = np.stack([fast.real, fast.imag])
    nz = ref != 0
    rel = np.abs(fast[nz] / ref[nz] - 1)
    assert rel.max() < random_normal.REL_BOUND / 16, rel.max()


def test_normal_float32_recomputes_flagged_draws_from_the_spec(monkeypatch):
    # Flag every draw: the whole float32/float16 output comes from the reference path
    # (block indices, mean/std and the float16 cast of the recomputation).
    monkeypatch.setattr(random_normal, "_CHECK_MAX", np.array(2**28, np.uint64))
    words = BODY_KEYS[3]
    for dt in (np.float32, np.float16):
        got = random_cpu.NumpyStream(words).normal(2051, np.dtype(dt), std=dt(0.5), mean=dt(-2))
        ref = spec.cast(spec.standard_normal64_reference(words, 2051, np), np.dtype(dt))
        assert_same_bits(got, (ref * dt(0.5)) + dt(-2), f"all flagged {np.dtype(dt)}")


def test_normal_float32_uses_the_exact_body_when_log_is_inaccurate(monkeypatch):
    monkeypatch.setattr(random_normal, "_LOG_OK", [False])
    monkeypatch.setattr(random_normal, "fast_box_muller", None)  # would raise if called
    words = BODY_KEYS[1]
    got = random_cpu.NumpyStream(words).normal(1001, np.dtype(np.float32))
    ref = spec.cast(spec.standard_normal64_reference(words, 1001, np), np.dtype(np.float32))
    assert_same_bits(got, ref, "exact body float32")


def test_log_accuracy_check_passes_here():
    # Where it fails, float32 normals silently take the (slower) exact body: say so here.
    assert random_normal.log_is_accurate()


def test_bernoulli_integer_threshold_matches_float_threshold():
    k = gdr.key(3)
    words = (int(k[0]), int(k[1]))
    ref_words = spec.words32_reference(words, 4099, np).astype(np.float64)
    for p in (0.0, 2.0**-32, 1 / 3, 0.37, 0.5, 1 - 2.0**-32, 1.0):
        got = gdr.bernoulli(k, p, (4099,), device="cpu")
        np.testing.assert_array_equal(got, ref_words < p * 2.0**32, err_msg=f"p={p}")


def test_kernel_constants_are_the_python_doubles():
    # philox.cu writes the spec's coefficients as hex literals; they must be the same doubles.
    src = (cuda.kernel_dir() / "philox.cu").read_text()

    def table(name):
        body = re.search(name + r"\[\d+\] = \{(.*?)\};", src, re.S).group(1)
        return [float.fromhex(t) for t in re.findall(r"-?0x[0-9a-f.]+p[-+]\d+", body)]

    def define(name, kind=float.fromhex):
        return kind(re.search(rf"#define {name} (\S+)", src).group(1).rstrip("u"))

    assert table("philox_atanh_coef") == spec.ATANH_COEF
    assert table("philox_sin_coef") == spec.SIN_COEF
    assert table("philox_cos_coef") == spec.COS_COEF
    assert define("PHILOX_LN2_HI") == spec.LN2_HI and define("PHILOX_LN2_LO") == spec.LN2_LO
    assert define("PHILOX_SQRT_HALF") == spec.SQRT_HALF and define("PHILOX_HALF_PI") == spec.HALF_PI
    hexint = lambda s: int(s, 16)  # noqa: E731
    assert (define("PHILOX_M0", hexint), define("PHILOX_M1", hexint)) == (spec.M0, spec.M1)
    assert (define("PHILOX_W0", hexint), define("PHILOX_W1", hexint)) == (spec.W0, spec.W1)


def test_philox_kernel_is_registered():
    # python -m gpudl.cuda --compile-check compiles every source registered by importing gpudl.
    assert cuda.SOURCES["philox.cu"] is random_cuda.PHILOX
    for name in ("philox_words32", "philox_uniform<float>", "philox_normal<double>"):
        assert name in random_cuda.PHILOX.name_expressions


# ----------------------------------------------------------------------------- GPU == NumPy
GPU_SIZES = [1, 2, 3, 5, 7, 9, 1001, 4097, 65_537, 1_000_003]


def same_on_both(fn):
    assert_same_bits(fn("cuda"), fn("cpu"), "cuda vs cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", GPU_SIZES)
def test_kernel_uniform_equals_numpy_body(dtype, n):
    for k in keys()[:2]:
        for lo, hi in ((0.0, 1.0), (-3.0, 7.5), (1000.0, 1000.0625)):
            same_on_both(lambda d, k=k, lo=lo, hi=hi: gdr.uniform(k, (n,), dtype, lo, hi, device=d))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", GPU_SIZES)
def test_kernel_normal_equals_numpy_body(dtype, n):
    for k in keys()[:2]:
        for mean, std in ((0.0, 1.0), (1.0, 3.0), (-2.0, 0.5)):
            same_on_both(lambda d, k=k, m=mean, s=std: gdr.normal(k, (n,), dtype, m, s, device=d))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_grid_stride_wraps(monkeypatch, kind):
    monkeypatch.setattr(random_cuda, "MAX_GRID", 3)  # 768 threads for thousands of blocks
    cupy = gd.backend.xp_for("cuda")
    for n in (5, 10_007, 40_003):
        k = np.array([7, 9], np.uint32)
        if kind == "words32":
            got = random_cuda.words32((7, 9), n)
        elif kind == "words64":
            got = random_cuda.words64((7, 9), n)
        elif kind.startswith("unit"):
            got = gdr.uniform(k, (n,), _dt(kind), device="cuda")
        else:
            got = gdr.normal(k, (n,), _dt(kind), device="cuda")
        assert_same_bits(got, numpy_body(kind, (7, 9), n), f"{kind} n={n}")
        assert_same_bits(got, spec_output(kind, (7, 9), n, cupy), f"{kind} n={n} (CuPy spec)")


@pytest.mark.gpu
def test_kernel_keeps_float32_subnormals():
    # CuPy compiles with -ftz=true; the kernel rounds float32 in double so subnormal results
    # match NumPy's instead of flushing to zero.
    k = gdr.key(4)
    same_on_both(lambda d: gdr.uniform(k, (10_001,), np.float32, 0.0, 1e-40, device=d))
    same_on_both(lambda d: gdr.normal(k, (10_001,), np.float32, 0.0, 1e-39, device=d))
    same_on_both(lambda d: gdr.normal(k, (10_001,), np.float32, 1e-39, 1e-39, device=d))
    z = gd.to_numpy(gdr.uniform(k, (10_001,), np.float32, 0.0, 1e-40, device="cuda"))
    assert ((z != 0) & (np.abs(z) < np.finfo(np.float32).tiny)).any()  # subnormals present
