"""``F.sequence_cross_entropy`` on the fused softmax-cross-entropy primitive: the (N, T, V)
logits as N*T rows, masked tokens as ignored ones, one label check. References: a per-token
float64 loop (tests/functional/test_losses.py has the mask/ignore_index one) and torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl.errors import DTypeError


def naive(logits, labels, keep):
    """Per-token -log softmax(logits)[label], 0 where not kept."""
    out = np.zeros(labels.shape)
    for idx in np.ndindex(labels.shape):
        if keep[idx]:
            row = logits[idx]
            top = max(row)
            lse = top + math.log(sum(math.exp(v - top) for v in row))
            out[idx] = lse - row[labels[idx]]
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_values_and_gradient_against_the_loop(rng, reduction):
    logits = rng.standard_normal((2, 3, 5)) * 2
    labels = rng.integers(0, 5, (2, 3))
    mask = np.array([[1, 0, 1], [1, 1, 0]])
    per = naive(logits, labels, mask.astype(bool))
    want = {"mean": per.sum() / mask.sum(), "sum": per.sum(), "none": per}[reduction]
    got = F.sequence_cross_entropy(logits, labels, mask=mask, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    gd.testing.check_grad(lambda z: F.sequence_cross_entropy(z, labels, mask=mask,
                                                             reduction=reduction), logits)


def test_no_real_token_gives_zero_and_a_zero_gradient(rng):
    logits = rng.standard_normal((1, 2, 3))
    labels = np.array([[1, 2]])
    loss, grad = gd.value_and_grad(
        lambda z: F.sequence_cross_entropy(z, labels, mask=np.zeros((1, 2))))(logits)
    assert float(loss) == 0.0 and not grad.any()
    loss = F.sequence_cross_entropy(logits, np.array([[-1, -1]]), ignore_index=-1)
    assert float(loss) == 0.0


def test_float32_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((4, 6, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (4, 6))
    labels[0, :2] = -100
    loss, grad = gd.value_and_grad(
        lambda z: F.sequence_cross_entropy(z, labels, ignore_index=-100))(logits)
    tz = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz.reshape(-1, 7), torch.tensor(labels).reshape(-1))
    (tg,) = torch.autograd.grad(tl, [tz])
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-6)
    np.testing.assert_allclose(grad, tg.numpy(), rtol=1e-5, atol=1e-7)


def test_half_precision_logits_are_refused():
    with pytest.raises(DTypeError, match=r"sequence_cross_entropy: logits must be float32 or "
                                         r"float64, got float16; cast with"):
        F.sequence_cross_entropy(np.zeros((1, 2, 3), np.float16), np.zeros((1, 2), int))


@pytest.mark.gpu
def test_gpu_matches_cpu(rng):
    logits = rng.standard_normal((2, 3, 4))
    labels, mask = rng.integers(0, 4, (2, 3)), np.array([[1, 1, 0], [1, 0, 0]])

    def run(*a):
        return gd.value_and_grad(lambda z: F.sequence_cross_entropy(z, a[1], mask=a[2]))(a[0])

    want = run(logits, labels, mask)
    got = run(*gd.to_device((logits, labels, mask), "cuda"))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(gd.to_numpy(a), b, rtol=1e-12)
