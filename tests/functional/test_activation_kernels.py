"""The fused activations' two bodies: NumPy twins and kernels/activation.cu.

* the twins' forwards give the bits of the composites they replaced (kept here, written
  as they were), in float16/32/64, over wide ranges and the special values;
* the twins' backwards against torch's float32 autograd and a float64 ``math`` derivative;
* each activation on ``device`` (the ``cuda`` one: a GPU, or the CPU kernel emulator under
  ``GPUDL_EMULATE_GPU=1``) against the twins, forward and backward, float32/float64 (and
  float16/integers through their casts), on a size that crosses a 256-thread block;
* ``GRAD_CASES`` (run by tests/test_registry.py): float64 check_grad of every fused
  primitive on a non-contiguous input, and of its gradient (the vjp's gd.ops path).
The registry-driven value, layer and gradient checks of every activation are in
test_activations.py; torch float64 parity in tests/torch_parity/test_parity_functional.py.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpudl as gd
import gpudl.ops.elementwise as E
from gpudl import functional as F
from gpudl import ops
from gpudl.functional import _activation_kernels as K
from gpudl.functional import _activation_twins as T
from gpudl.functional.activations import SELU_ALPHA, SELU_SCALE
from gpudl.ops.elementwise import Scratch

# op -> (public function of x, the kernel's (p0, p1))
OPS = {
    "sigmoid": (F.sigmoid, ()),
    "tanh": (F.tanh, ()),
    "relu": (F.relu, ()),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), (0.2,)),
    "elu": (lambda x: F.elu(x, 0.7), (0.7, 1.0)),
    "selu": (F.selu, (SELU_ALPHA, SELU_SCALE)),
    "hardtanh": (lambda x: F.hardtanh(x, -2.0, 1.5), (-2.0, 1.5)),
    "silu": (F.silu, ()),
    "gelu": (F.gelu, ()),
    "gelu_tanh": (lambda x: F.gelu(x, "tanh"), ()),
}
KERNEL_OP = {"selu": "elu"}  # SELU is the ELU kernel with its constants
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, -50.0, 50.0, -100.0, 1.0, -1.0, 1.5, -2.0, 6.0]


def _x(n: int, dtype, seed: int = 0, scale: float = 3.0):
    """n values: the special ones (kinks, tails, inf, NaN) then normal(0, scale) draws."""
    rng = np.random.default_rng(seed)
    body = rng.standard_normal(max(n - len(SPECIAL), 0)) * scale
    return np.concatenate([SPECIAL, body])[:n].astype(dtype)


def _same_bits(a, b):
    """Equal values, NaN where NaN (zeros of either sign are equal, as np.array_equal)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ the replaced composites
def _old_clenshaw(u, coefs):
    b1 = b2 = 0.0
    for c in coefs[:0:-1]:
        b1, b2 = 2.0 * u * b1 - b2 + c, b1
    return u * b1 - b2 + coefs[0]


def _old_erf(x):
    a = np.abs(x)
    out = np.array(np.sign(x), dtype=x.dtype)
    small = a < 1.0
    s = a[small]
    out[small] = (x[small] * _old_clenshaw(2.0 * s * s - 1.0, T._ERF_SMALL)).astype(x.dtype)
    mid = (a >= 1.0) & (a < 6.0)
    m = a[mid]
    t = 2.0 / (2.0 + m)
    u = (2.0 * t - (T._T_HI + T._T_LO)) / (T._T_HI - T._T_LO)
    erfc = t * np.exp(-m * m + _old_clenshaw(u, T._ERFC_LARGE))
    out[mid] = (np.sign(x[mid]) * (1.0 - erfc)).astype(x.dtype)
    return out


def _old_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _old_elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


OLD_FORWARD = {
    "sigmoid": _old_sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, x * 0.2),
    "elu": lambda x: _old_elu(x, 0.7),
    "selu": lambda x: SELU_SCALE * _old_elu(x, SELU_ALPHA),
    "hardtanh": lambda x: np.where((x > -2.0) & (x < 1.5), x, np.clip(x, -2.0, 1.5)),
    "silu": lambda x: x * _old_sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + _old_erf(x * (1.0 / math.sqrt(2.0)))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(
        math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_twins_give_the_bits_of_the_replaced_composites(dtype):
    # float32 erf (so GELU) uses shorter fits: checked against math.erf below instead
    x = np.concatenate([_x(4000, dtype), np.linspace(-8, 8, 1601).astype(dtype)])
    with np.errstate(all="ignore"):
        for name, (f, _) in OPS.items():
            if not (dtype == np.float32 and name == "gelu"):
                _same_bits(f(x), OLD_FORWARD[name](x))
        if dtype != np.float32:
            _same_bits(T.erf_twin(x), _old_erf(x))


# The block tests run with blocks of 64K elements (E.BLOCK is larger): arrays of a few
# blocks stay small enough for math.erf and long double references.
BLOCK = 1 << 16


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(E, "BLOCK", BLOCK)


def test_float32_erf_is_as_accurate_as_before(small_blocks):
    # within 1.9 ulp of math.erf over [-7, 7] and the tiny values, as the float32
    # evaluation of the full fits it replaced (1.8 ulp); twice 70k elements: blocks too
    x = np.concatenate([np.linspace(-7, 7, 70001), np.geomspace(1e-38, 1, 2000),
                        np.random.default_rng(12).standard_normal(70000)]).astype(np.float32)
    ulp = np.spacing(np.abs(np.vectorize(math.erf)(x.astype(np.float64))).astype(np.float32))
    ref = np.vectorize(math.erf)(x.astype(np.float64))
    err = np.abs(T.erf_twin(x).astype(np.float64) - ref) / ulp
    assert err.max() < 1.9 and np.abs(T.erf_twin(x) - _old_erf(x)).max() < 2e-7
    assert x.size > 2 * BLOCK  # erf_twin ran in blocks: the same bits as in one go
    one_go = T.erf_body(x, out=np.empty_like(x), sc=Scratch(x.size, x.dtype, like=x))
    assert np.array_equal(one_go, T.erf_twin(x))


@pytest.mark.parametrize("dtype, max_ulp", [(np.float32, 3.5), (np.float64, 2.5)])
def test_sigmoid_fast_form_is_as_accurate_as_the_two_branch_form(dtype, max_ulp, small_blocks):
    # finite x >= -88: float32 1 / (2 + expm1(-x)), float64 1 / (1 + exp(-x)) (the
    # two-branch form's bits for x >= 0); all within max_ulp of the long-double sigmoid
    # (NumPy's float32 exp alone is ~3 ulp)
    x = np.concatenate([np.linspace(-88, 30, 140001), _x(5000, dtype)[13:]]).astype(dtype)
    fast, old = ops.sigmoid(x), _old_sigmoid(x)
    assert not np.array_equal(fast, old)  # the fast form ran
    if dtype == np.float64:
        assert np.array_equal(fast[x >= 0], old[x >= 0])
    else:  # float32: expm1's form, not exp's
        e = np.negative(x)
        np.testing.assert_array_equal(fast, np.float32(1) / (np.float32(2) + np.expm1(e)))
    ref = 1 / (1 + np.exp(-x.astype(np.longdouble)))
    ulp = np.spacing(ref.astype(dtype)).astype(np.longdouble)
    for y in (fast, old):
        assert (np.abs(y - ref) / ulp).max() < max_ulp
    # blocks holding an x below -88.7 (or -inf, NaN in float64) take the two-branch form;
    # the others not
    mixed = np.concatenate([x[:BLOCK], np.array([-100.0, -np.inf, np.nan], dtype), x[BLOCK:]])
    got = F.sigmoid(mixed)
    assert np.array_equal(got[:BLOCK], fast[:BLOCK])
    assert np.array_equal(got[BLOCK:2 * BLOCK], _old_sigmoid(mixed[BLOCK:2 * BLOCK]), equal_nan=True)
    assert got[BLOCK] > 0 and got[BLOCK + 1] == 0  # sigmoid(-100) is not 0 (a subnormal in float32)
    # a block with -inf or NaN but nothing below -88.7 keeps the float32 fast form (exact
    # there: 0 and NaN), without a warning
    if dtype == np.float32:
        edge = np.array([-np.inf, np.nan, -88.5, 0.0, 88.5, np.inf], dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = F.sigmoid(edge)
        assert got[0] == 0 and np.isnan(got[1]) and 0 < got[2] < 1e-38
        assert got[3] == 0.5 and got[4] == 1 and got[5] == 1


def test_tails_keep_their_precision():
    x = np.array([-50.0, -100.0, -700.0, 50.0])
    ref = np.array([1 / (1 + math.exp(50)), 1 / (1 + math.exp(100)), math.exp(-700), 1.0])
    np.testing.assert_allclose(F.sigmoid(x), ref, rtol=1e-15)
    s32 = F.sigmoid(x.astype(np.float32)[:2])
    assert s32[0] > 0 and abs(s32[0] / ref[0] - 1) < 1e-6  # sigmoid(-50) is not 0 in float32
    np.testing.assert_allclose(F.silu(x[:1]), -50 * ref[:1], rtol=1e-15)


def test_select_helpers_are_exact():
    rng = np.random.default_rng(3)
    for dtype in (np.float16, np.float32, np.float64):
        a, b = (np.concatenate([_x(300, dtype, s), np.array([np.nan, -0.0], dtype)])
                for s in (1, 2))
        mask = rng.random(a.shape) < 0.5
        sc = Scratch(a.size, dtype)
        ref = np.where(mask, a, b)
        assert a.dtype == dtype and ref.dtype == dtype
        assert np.array_equal(T.select(mask, a, b.copy(), sc).view(np.uint8), ref.view(np.uint8))
        ref = np.where(mask, dtype(-0.5), b)
        assert np.array_equal(T.select(mask, -0.5, b.copy(), sc).view(np.uint8), ref.view(np.uint8))
        keep, ref = T.keep_where(mask, a, np.empty_like(a)), np.where(mask, a, dtype(0))
        assert np.array_equal(keep.view(np.uint8), ref.view(np.uint8))
        scal = T.scalar_select(mask, 1.0, 0.3, np.empty_like(a))
        ref = np.where(mask, dtype(1), dtype(0.3))
        assert np.array_equal(scal.view(np.uint8), ref.view(np.uint8))


def test_relu_into_gives_np_maximum_bits(monkeypatch):
    """The zero-block relu (relu_twin and linear_rows' fused relu) against np.maximum(x, 0):
    several zero blocks and a ragged last one, in place, and the fallbacks (non-contiguous,
    an integer array)."""
    monkeypatch.setattr(E, "ZERO_BLOCK", 64)
    monkeypatch.setattr(E, "_ZEROS", {})
    for dtype in (np.float16, np.float32, np.float64):
        x = np.concatenate([_x(300, dtype, 5), np.array([np.nan, -0.0, 0.0, np.inf, -np.inf],
                                                        dtype)]).reshape(5, 61)
        want = np.maximum(x, 0).view(np.uint8)
        assert np.array_equal(E.relu_into(x, np.empty_like(x)).view(np.uint8), want)
        assert np.array_equal(T.relu_twin(x).view(np.uint8), want)
        inplace = x.copy()
        assert E.relu_into(inplace, inplace) is inplace
        assert np.array_equal(inplace.view(np.uint8), want)
        strided = x[:, ::2]
        assert np.array_equal(T.relu_twin(strided), np.maximum(strided, 0), equal_nan=True)
    ints = np.arange(-3, 3)
    assert T.relu_twin(ints).dtype == ints.dtype and T.relu_twin(ints).tolist() == [0] * 4 + [1, 2]


def test_relu_family_gradients_ignore_dead_non_finite_cotangents():
    # where(x > 0, g, 0) semantics: a dead unit's inf/NaN cotangent gives 0 (as torch), not NaN
    g = np.array([np.inf, np.nan, np.inf, 2.0])
    dx = gd.vjp(F.relu, np.array([-1.0, -2.0, 0.0, 3.0]))[1](g)[0]
    assert dx.tolist() == [0.0, 0.0, 0.0, 2.0]
    dx = gd.vjp(lambda v: F.hardtanh(v, -0.5, 0.5), np.array([-1.0, 0.7, 0.5, 0.1]))[1](g)[0]
    assert dx.tolist() == [0.0, 0.0, 0.0, 2.0]


# ------------------------------------------------------------------ backward references
def _derivative(name, v):
    """f'(v) from the textbook formulas, in float64 (math module)."""
    s = 1 / (1 + math.exp(-v)) if v > -700 else 0.0
    return {
        "sigmoid": s * (1 - s),
        "tanh": 1 - math.tanh(v) ** 2,
        "relu": 1.0 if v > 0 else 0.0,
        "leaky_relu": 1.0 if v > 0 else 0.2,
        "elu": 1.0 if v > 0 else 0.7 * math.exp(v),
        "selu": SELU_SCALE * (1.0 if v > 0 else SELU_ALPHA * math.exp(v)),
        "hardtanh": 1.0 if -2.0 < v < 1.5 else 0.0,
        "silu": s * (1 + v * (1 - s)),
        "gelu": 0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi),
        "gelu_tanh": _gelu_tanh_derivative(v),
    }[name]


def _gelu_tanh_derivative(v):
    k, c = math.sqrt(2 / math.pi), 0.044715
    t = math.tanh(k * (v + c * v**3))
    return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * c * v * v)


@pytest.mark.parametrize("name", list(OPS))
def test_backward_against_float64_derivatives(name):
    f = OPS[name][0]
    x64 = _x(400, np.float64, seed=4)[5:]  # finite values only
    g64 = np.random.default_rng(5).standard_normal(x64.shape)
    ref = g64 * np.array([_derivative(name, v) for v in x64])
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        dx = gd.vjp(f, x64.astype(dtype))[1](g64.astype(dtype))[0]
        assert dx.dtype == dtype
        # atol: float32's 1 + erf(x/sqrt 2) cancels in GELU's lower tail (torch's too)
        np.testing.assert_allclose(dx, ref, rtol=tol, atol=5 * tol)


@pytest.mark.parametrize("name", list(OPS))
def test_float32_against_torch(name):
    torch = pytest.importorskip("torch")
    tf = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
          "leaky_relu": lambda v: torch.nn.functional.leaky_relu(v, 0.2),
          "elu": lambda v: torch.nn.functional.elu(v, 0.7), "selu": torch.selu,
          "hardtanh": lambda v: torch.nn.functional.hardtanh(v, -2.0, 1.5),
          "silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
          "gelu_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh")}[name]
    x = _x(300, np.float32, seed=6)[5:]
    g = np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tf(tx)
    (tdx,) = torch.autograd.grad(ty, tx, torch.from_numpy(g))
    y, f_vjp = gd.vjp(OPS[name][0], x)
    # atol: 1 + erf(x/sqrt 2) cancels in float32 in GELU's lower tail, on both sides
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(f_vjp(g)[0], tdx.numpy(), rtol=1e-5, atol=3e-6)


# ------------------------------------------------------------------ devices
def _tol(dtype):
    if dtype == np.float16:
        return dict(rtol=2e-3, atol=1e-3)
    # float32 atol: the tails of (1 + erf) and (1 + tanh) cancel; CUDA and NumPy round them
    # apart by ~3e-6 (1 ulp of 1 is 6e-8)
    return dict(rtol=1e-5, atol=5e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_matches_twin(device, dtype):
    """Every activation's forward and backward on `device` vs the twins on the CPU."""
    x = _x(300, dtype, seed=8)  # crosses a 256-thread block
    g = np.random.default_rng(9).standard_normal(x.shape).astype(dtype)
    xd, gdv = gd.to_device((x, g), device)
    for name, (f, _) in OPS.items():
        with np.errstate(all="ignore"):
            y, f_vjp = gd.vjp(f, xd)
            dx = f_vjp(gdv)[0]
            y_ref, ref_vjp = gd.vjp(f, x)
            dx_ref = ref_vjp(g)[0]
        assert gd.backend.device_of(y) == device and y.dtype == dx.dtype == dtype, name
        np.testing.assert_allclose(gd.to_numpy(y), y_ref, **_tol(dtype), err_msg=name)
        np.testing.assert_allclose(gd.to_numpy(dx), dx_ref, **_tol(dtype), err_msg=name)


def test_device_other_dtypes_and_shapes(device, xp):
    """float16 (computed in float32), integers (float64; relu stays integer), 0-d, empty."""
    x16 = _x(40, np.float16, seed=10)[5:]
    for name in ("sigmoid", "gelu"):
        f = OPS[name][0]
        with np.errstate(all="ignore"):
            got = f(xp.asarray(x16))
        assert got.dtype == np.float16
        np.testing.assert_allclose(gd.to_numpy(got), f(x16.astype(np.float32)), **_tol(np.float16))
    dx16 = gd.vjp(F.silu, xp.asarray(x16))[1](xp.ones(x16.shape, np.float16))[0]
    assert dx16.dtype == np.float16
    ints = np.array([[-3, 0, 2]])
    assert gd.to_numpy(F.relu(xp.asarray(ints))).tolist() == [[0, 0, 2]]
    assert gd.to_numpy(F.leaky_relu(xp.asarray(ints), 0.5)).tolist() == [[-1.5, 0.0, 2.0]]
    assert float(gd.to_numpy(F.elu(xp.asarray(-1.0)))) == pytest.approx(math.expm1(-1.0))
    for f, _ in OPS.values():
        empty = f(xp.zeros((0, 3), np.float32))
        assert empty.shape == (0, 3) and empty.dtype == np.float32
        assert gd.vjp(f, xp.zeros((2, 0)))[1](xp.zeros((2, 0)))[0].shape == (2, 0)


def test_kernel_ops_cover_every_fused_activation():
    assert set(K.KERNEL_OPS) == {KERNEL_OP.get(n, n) for n in OPS}
    assert set(K.FORWARD_TWINS) == set(K.BACKWARD_TWINS) == set(K.KERNEL_OPS)


# ------------------------------------------------------------------ gradient cases
def _grad_x(seed, shape=(4, 10), kinks=(0.0, -2.0, 1.5)):
    """A float64 non-contiguous view whose values stay >= 0.05 from every kink."""
    x = np.random.default_rng(seed).uniform(-3, 3, shape)
    for k in kinks:
        x = np.where(np.abs(x - k) < 0.05, k + 0.1, x)
    return x[:, ::2]


def _second_order(f):
    """x -> d/dx sum(f(x)^2 * w): differentiating it runs the vjp's gd.ops path."""
    w = np.linspace(0.5, 1.5, 5)
    return lambda x: gd.grad(lambda v: ops.sum(f(v) * f(v) * w))(x)


GRAD_CASES = {
    name: [lambda f=f, i=i: (f, (_grad_x(20 + i),)),
           lambda f=f, i=i: (_second_order(f), (_grad_x(40 + i),))]
    for i, (name, f) in enumerate([
        ("leaky_relu", lambda x: F.leaky_relu(x, 0.2)),
        ("elu", lambda x: F.elu(x, 0.7) + F.selu(x)),
        ("hardtanh", lambda x: F.hardtanh(x, -2.0, 1.5)),
        ("silu", F.silu),
        ("gelu", lambda x: F.gelu(x) + F.gelu(x, "tanh")),
        ("relu", F.relu),
        ("sigmoid", F.sigmoid),
        ("tanh", F.tanh),
    ])
}
