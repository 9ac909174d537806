"""PyTorch parity (CPU, float64): losses, forward values and gradients.

Deliberate gpudl differences are not tested as mismatches: kl_div's default reduction is
'batchmean' (torch: 'mean'), and nll/sequence cross-entropy with every target ignored
return 0 (torch: NaN); reductions are always passed explicitly here.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudl import functional as F

torch = pytest.importorskip("torch")
from parity_helpers import check, rand  # noqa: E402

TF = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")


def labels(shape, c, seed=0, ignore=None, n_ignored=0):
    y = np.random.default_rng(seed).integers(0, c, size=shape)
    if ignore is not None:
        flat = y.reshape(-1)
        flat[:n_ignored] = ignore  # a view: marks the first positions as ignored
    return y


REDUCTIONS = ["mean", "sum", "none"]


# ----------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
def test_softmax_cross_entropy(reduction, smoothing, ignore_index):
    x = rand(6, 5, seed=1) * 2
    y = labels((6,), 5, seed=2, ignore=ignore_index, n_ignored=2 if ignore_index is not None else 0)
    tkw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore_index is not None:
        tkw["ignore_index"] = ignore_index
    check(lambda x: F.softmax_cross_entropy(x, y, reduction, ignore_index, smoothing),
          lambda x: TF.cross_entropy(x, torch.tensor(y), **tkw), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 4, 3, 2)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_spatial(reduction, shape, smoothing):
    x = rand(*shape, seed=3)
    y = labels((shape[0], *shape[2:]), shape[1], seed=4, ignore=-100, n_ignored=1)
    check(lambda x: F.softmax_cross_entropy(x, y, reduction, -100, smoothing),
          lambda x: TF.cross_entropy(x, torch.tensor(y), reduction=reduction,
                                     label_smoothing=smoothing), x)


def test_softmax_cross_entropy_single_sample():
    x = rand(5, seed=5)
    y = np.array(3)
    check(lambda x: F.softmax_cross_entropy(x, y), lambda x: TF.cross_entropy(x, torch.tensor(y)), x)


# ----------------------------------------------------------------------------- nll
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 1])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_nll_loss(reduction, weighted, ignore_index, shape):
    lp = np.log(np.random.default_rng(6).dirichlet(np.ones(shape[1]), size=(shape[0], *shape[2:])))
    lp = np.moveaxis(lp, -1, 1).copy()  # (N, C, ...)
    y = labels((shape[0], *shape[2:]), shape[1], seed=7)
    w = np.random.default_rng(8).uniform(0.5, 2.0, shape[1])
    tkw = dict(reduction=reduction)
    if ignore_index is not None:
        tkw["ignore_index"] = ignore_index
    if not weighted:
        w = None
    tw = None if w is None else torch.tensor(w)  # torch gives no gradient for class weights
    check(lambda lp: F.nll_loss(lp, y, w, reduction, ignore_index),
          lambda lp: TF.nll_loss(lp, torch.tensor(y), tw, **tkw), lp)


def test_sequence_cross_entropy_matches_masked_cross_entropy():
    x, y = rand(2, 5, 4, seed=9), labels((2, 5), 4, seed=10)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    y_t = np.where(mask, y, -100)
    check(lambda x: F.sequence_cross_entropy(x, y, mask=mask),
          lambda x: TF.cross_entropy(x.reshape(-1, 4), torch.tensor(y_t.reshape(-1))), x)


# ----------------------------------------------------------------------------- binary
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(reduction, weighted):
    rng = np.random.default_rng(11)
    p, t = rng.uniform(0.05, 0.95, (4, 3)), rng.uniform(0, 1, (4, 3))
    w = rng.uniform(0.5, 2, (4, 3)) if weighted else None
    tw = None if w is None else torch.tensor(w)
    check(lambda p, t: F.binary_cross_entropy(p, t, w, reduction),
          lambda p, t: TF.binary_cross_entropy(p, t, tw, reduction=reduction), p, t)


def test_binary_cross_entropy_saturated_probabilities():
    # p in {0, 1}: torch clamps each log at -100
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.3])
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    out = F.binary_cross_entropy(p, t, reduction="none")
    ref = TF.binary_cross_entropy(torch.tensor(p), torch.tensor(t), reduction="none")
    np.testing.assert_allclose(out, ref.numpy(), rtol=RTOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, "vector"])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_with_logits(reduction, pos_weight, weighted):
    rng = np.random.default_rng(12)
    x, t = rng.standard_normal((4, 3)) * 3, rng.uniform(0, 1, (4, 3))
    pw = None if pos_weight is None else rng.uniform(0.5, 3, (3,))
    w = rng.uniform(0.5, 2, (4, 3)) if weighted else None
    tpw = None if pw is None else torch.tensor(pw)
    tw = None if w is None else torch.tensor(w)
    check(lambda x, t: F.binary_cross_entropy_with_logits(x, t, w, pw, reduction),
          lambda x, t: TF.binary_cross_entropy_with_logits(x, t, tw, reduction=reduction,
                                                           pos_weight=tpw), x, t)


def test_binary_cross_entropy_with_logits_large_logits():
    x = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    t = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    check(lambda x: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
          lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor(t), reduction="none"), x)


# ----------------------------------------------------------------------------- regression
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_l1(reduction):
    a, b = rand(3, 4, seed=13), rand(3, 4, seed=14)
    check(lambda a, b: F.mse_loss(a, b, reduction), lambda a, b: TF.mse_loss(a, b, reduction=reduction),
          a, b)
    check(lambda a, b: F.l1_loss(a, b, reduction), lambda a, b: TF.l1_loss(a, b, reduction=reduction),
          a, b)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber(reduction, delta):
    a, b = rand(4, 5, seed=15) * 2, rand(4, 5, seed=16)
    check(lambda a, b: F.huber_loss(a, b, reduction, delta),
          lambda a, b: TF.huber_loss(a, b, reduction=reduction, delta=delta), a, b)


# ----------------------------------------------------------------------------- divergences
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    rng = np.random.default_rng(17)
    inp = np.log(rng.dirichlet(np.ones(5), size=4))
    tgt = rng.dirichlet(np.ones(5), size=4)
    if log_target:
        tgt = np.log(tgt)
    check(lambda i, t: F.kl_div(i, t, reduction, log_target),
          lambda i, t: TF.kl_div(i, t, reduction=reduction, log_target=log_target), inp, tgt)


def test_kl_div_zero_target_entries():
    rng = np.random.default_rng(18)
    inp = np.log(rng.dirichlet(np.ones(4), size=3))
    tgt = rng.dirichlet(np.ones(4), size=3)
    tgt[:, 0] = 0.0
    tgt /= tgt.sum(1, keepdims=True)
    check(lambda i: F.kl_div(i, tgt, "sum"),
          lambda i: TF.kl_div(i, torch.tensor(tgt), reduction="sum"), inp)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("var_shape", [(4, 3), (4, 1), (4,)])
def test_gaussian_nll_loss(reduction, full, var_shape):
    rng = np.random.default_rng(19)
    mu, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    var = rng.uniform(0.2, 2.0, var_shape)
    check(lambda mu, y, var: F.gaussian_nll_loss(mu, y, var, full, 1e-6, reduction),
          lambda mu, y, var: TF.gaussian_nll_loss(mu, y, var, full=full, eps=1e-6,
                                                  reduction=reduction), mu, y, var)


def test_gaussian_nll_loss_clamped_variance():
    # variances below eps are clamped in the forward pass, gradient passed through (torch)
    mu, y = rand(5, seed=20), rand(5, seed=21)
    var = np.array([1e-9, 0.5, 1e-4, 2.0, 0.0])
    check(lambda mu, var: F.gaussian_nll_loss(mu, y, var, eps=1e-3, reduction="sum"),
          lambda mu, var: TF.gaussian_nll_loss(mu, torch.tensor(y), var, eps=1e-3, reduction="sum"),
          mu, var, rtol=1e-9)


def test_softmax_cross_entropy_all_ignored_mean_is_nan_as_torch():
    x, y = rand(3, 4, seed=22), np.full(3, -100)
    out = float(F.softmax_cross_entropy(x, y, ignore_index=-100))
    ref = float(TF.cross_entropy(torch.tensor(x), torch.tensor(y)))
    assert np.isnan(ref) and np.isnan(out)
