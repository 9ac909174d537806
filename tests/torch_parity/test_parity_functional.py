"""PyTorch parity (CPU, float64): activations, normalization, attention, embedding.

Forward values and gradients (gd.grad of sum(out * cot) against torch.autograd.grad).
gpudl attention masks are boolean True = keep, the same sign as the boolean ``attn_mask``
of torch's F.scaled_dot_product_attention.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpudl import functional as F

torch = pytest.importorskip("torch")
from parity_helpers import check, rand  # noqa: E402

TF = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12


def away_from_zero(*shape, seed=0, scale=3.0):
    """Random values with |x| >= 0.05: no evaluation at a kink."""
    x = rand(*shape, seed=seed) * scale
    return np.where(np.abs(x) < 0.05, 0.1, x)


# ----------------------------------------------------------------------------- activations
ACTIVATIONS = {
    "relu": (F.relu, TF.relu),
    "leaky_relu_default": (F.leaky_relu, TF.leaky_relu),
    "leaky_relu_0.2": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "elu": (F.elu, TF.elu),
    "elu_0.5": (lambda x: F.elu(x, 0.5), lambda x: TF.elu(x, 0.5)),
    "selu": (F.selu, TF.selu),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "softplus": (F.softplus, TF.softplus),
    "softplus_beta2": (lambda x: F.softplus(x, 2.0), lambda x: TF.softplus(x, 2.0)),
    "softplus_beta_thr": (lambda x: F.softplus(x, 0.5, 1.0),
                          lambda x: TF.softplus(x, beta=0.5, threshold=1.0)),
    "hardtanh": (F.hardtanh, TF.hardtanh),
    "hardtanh_range": (lambda x: F.hardtanh(x, -2.0, 0.5), lambda x: TF.hardtanh(x, -2.0, 0.5)),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "softmax": (F.softmax, lambda x: TF.softmax(x, dim=-1)),
    "softmax_axis1": (lambda x: F.softmax(x, axis=1), lambda x: TF.softmax(x, dim=1)),
    "softmax_temp": (lambda x: F.softmax(x, temperature=2.5), lambda x: TF.softmax(x / 2.5, -1)),
    "log_softmax": (F.log_softmax, lambda x: TF.log_softmax(x, dim=-1)),
    "log_softmax_axis0": (lambda x: F.log_softmax(x, axis=0), lambda x: TF.log_softmax(x, dim=0)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation(name):
    f, tf = ACTIVATIONS[name]
    x = away_from_zero(3, 4, 5, seed=1)
    # keep clear of hardtanh's and softplus' threshold kinks
    x = np.where(np.abs(np.abs(x) - 1.0) < 0.05, 1.3, x)
    x = np.where(np.abs(x - 0.5) < 0.05, 0.7, x)
    x = np.where(np.abs(x + 2.0) < 0.05, -2.3, x)
    check(f, tf, x)


def test_gelu_wide_range():
    # the exact GELU goes through gpudl's own erf: check it over its piecewise ranges
    x = np.concatenate([np.linspace(-9, 9, 181), [-6.0, -1.0, 1.0, 6.0, 1e-8, -1e-8]])
    check(F.gelu, TF.gelu, x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 4), (2, 3, 5)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_prelu(shape, per_channel):
    x = away_from_zero(*shape, seed=2)
    w = np.array([0.25]) if not per_channel else np.linspace(0.1, 0.6, shape[1])
    check(F.prelu, TF.prelu, x, w)


KINKS = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu),
    "elu": (F.elu, TF.elu),
    "softplus_threshold": (lambda x: F.softplus(x, 1.0, 1.0), lambda x: TF.softplus(x, 1.0, 1.0)),
    "hardtanh": (F.hardtanh, TF.hardtanh),
    "hardtanh_range": (lambda x: F.hardtanh(x, -2.0, 2.0), lambda x: TF.hardtanh(x, -2.0, 2.0)),
}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_activation_gradient_at_kinks(name):
    # torch's subgradient conventions at the kinks: relu'(0) = 0, leaky_relu'(0) = slope,
    # hardtanh' = 0 at the bounds (unlike clamp, which passes the gradient there)
    f, tf = KINKS[name]
    check(f, tf, np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5, -0.5]))


def test_hardtanh_inside_and_outside_bounds():
    # away from the bounds the two agree: the mismatch above is only at x == min/max
    check(lambda x: F.hardtanh(x, -2.0, 2.0), lambda x: TF.hardtanh(x, -2.0, 2.0),
          np.array([-3.0, -1.0, 0.0, 1.5, 2.5]))


def test_prelu_gradient_at_zero():
    check(F.prelu, TF.prelu, np.array([[0.0, -1.0], [1.0, 0.0]]), np.array([0.3]))


def test_l1_huber_gradient_at_kinks():
    d = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5])
    y = np.zeros_like(d)
    check(lambda d: F.l1_loss(d, y), lambda d: TF.l1_loss(d, torch.tensor(y)), d)
    check(lambda d: F.huber_loss(d, y), lambda d: TF.huber_loss(d, torch.tensor(y)), d)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_local_response_norm(size):
    x = rand(2, 5, 3, 2, seed=40)
    check(lambda x: F.local_response_norm(x, size, alpha=0.5, beta=0.75, k=2.0),
          lambda x: TF.local_response_norm(x, size, alpha=0.5, beta=0.75, k=2.0), x)


def test_softmax_large_logits():
    x = np.array([[1000.0, 1000.0, -1000.0], [0.0, 50.0, 700.0]])
    check(F.softmax, lambda x: TF.softmax(x, -1), x)
    check(F.log_softmax, lambda x: TF.log_softmax(x, -1), x)


# ----------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 2)])
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batch_norm_train_updates_running_stats(shape, momentum):
    x = rand(*shape, seed=3) * 2 + 1
    g, b = rand(3, seed=4), rand(3, seed=5)
    rm, rv = rand(3, seed=6), np.random.default_rng(7).uniform(0.5, 2, 3)
    check(lambda x, g, b: F.batch_norm(x, g, b, rm, rv, True, momentum, 1e-5)[0],
          lambda x, g, b: TF.batch_norm(x, torch.tensor(rm), torch.tensor(rv), g, b, True,
                                        momentum, 1e-5), x, g, b)
    _, (new_m, new_v) = F.batch_norm(x, g, b, rm, rv, True, momentum, 1e-5)
    trm, trv = torch.tensor(rm), torch.tensor(rv)  # torch updates these in place
    TF.batch_norm(torch.tensor(x), trm, trv, torch.tensor(g), torch.tensor(b), True, momentum)
    np.testing.assert_allclose(new_m, trm.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(new_v, trv.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(6, 3), (3, 3, 4, 2)])
def test_batch_norm_eval(shape):
    x = rand(*shape, seed=8)
    rm, rv = rand(3, seed=9), np.random.default_rng(10).uniform(0.5, 2, 3)
    trm, trv = torch.tensor(rm), torch.tensor(rv)  # torch has no gradient for running stats
    check(lambda x, g, b: F.batch_norm(x, g, b, rm, rv, False, eps=1e-3)[0],
          lambda x, g, b: TF.batch_norm(x, trm, trv, g, b, False, eps=1e-3),
          x, rand(3, seed=11), rand(3, seed=12))
    _, (m, v) = F.batch_norm(x, None, None, rm, rv, False)
    np.testing.assert_array_equal(m, rm)  # eval leaves the running statistics alone
    np.testing.assert_array_equal(v, rv)


def test_batch_norm_no_affine_no_running_stats():
    check(lambda x: F.batch_norm(x, None, None, None, None, True)[0],
          lambda x: TF.batch_norm(x, None, None, training=True), rand(5, 2, 3, seed=13))


# ----------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize("norm_shape", [(6,), (4, 6)])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_layer_norm(norm_shape, eps):
    x = rand(2, 3, 4, 6, seed=14) * 3 + 1
    g, b = rand(*norm_shape, seed=15), rand(*norm_shape, seed=16)
    check(lambda x, g, b: F.layer_norm(x, g, b, eps),
          lambda x, g, b: TF.layer_norm(x, norm_shape, g, b, eps), x, g, b)


def test_layer_norm_no_affine():
    check(lambda x: F.layer_norm(x, None, None, normalized_shape=(3, 5)),
          lambda x: TF.layer_norm(x, (3, 5)), rand(2, 3, 5, seed=17))


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("lq,lk", [(4, 4), (3, 5), (5, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa(lq, lk, causal):
    q, k, v = rand(2, 3, lq, 4, seed=18), rand(2, 3, lk, 4, seed=19), rand(2, 3, lk, 5, seed=20)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=causal), q, k, v)


@pytest.mark.parametrize("mask_shape", [(4, 5), (2, 1, 4, 5), (2, 3, 4, 5), (2, 1, 1, 5)])
def test_sdpa_boolean_mask(mask_shape):
    q, k, v = rand(2, 3, 4, 6, seed=21), rand(2, 3, 5, 6, seed=22), rand(2, 3, 5, 2, seed=23)
    mask = np.random.default_rng(24).uniform(size=mask_shape) < 0.7
    mask[..., 0] = True  # no fully masked row (torch gives NaN there, gpudl zeros)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=mask),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(mask)),
          q, k, v)


def test_sdpa_scale_and_mask_with_causal():
    q, k, v = rand(1, 4, 3, seed=25), rand(1, 4, 3, seed=26), rand(1, 4, 3, seed=27)
    mask = np.array([[True, False, True, True]] * 4)
    causal = np.tril(np.ones((4, 4), dtype=bool))
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=mask, causal=True,
                                                         scale=0.3),
          lambda q, k, v: TF.scaled_dot_product_attention(
              q, k, v, attn_mask=torch.tensor(mask & causal), scale=0.3), q, k, v)


def test_sdpa_default_scale_is_inverse_sqrt_dim():
    q, k, v = rand(2, 3, 7, seed=28), rand(2, 4, 7, seed=29), rand(2, 4, 2, seed=30)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
          lambda q, k, v: TF.softmax(q @ k.transpose(-1, -2) / math.sqrt(7), -1) @ v, q, k, v)


# ----------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("padding_idx", [None, 0, 3])
def test_embedding(padding_idx):
    idx = np.array([[0, 3, 1, 3], [2, 2, 0, 4]])
    w = rand(5, 3, seed=31)
    check(lambda w: F.embedding(w, idx, padding_idx=padding_idx),
          lambda w: TF.embedding(torch.tensor(idx), w, padding_idx=padding_idx), w)


def test_linear():
    check(F.linear, TF.linear, rand(2, 3, 4, seed=32), rand(5, 4, seed=33), rand(5, seed=34))
    check(lambda x, w: F.linear(x, w), lambda x, w: TF.linear(x, w),
          rand(3, 4, seed=35), rand(2, 4, seed=36))
