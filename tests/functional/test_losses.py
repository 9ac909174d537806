"""Losses against float64 references written from torch's documented formulas (loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import ArgumentTypeError, DTypeError, ShapeError
from gpudl.functional import losses as L
from gpudl.functional import regularizers as R
from gpudl.testing import check_grad


def host(a):
    return gd.to_numpy(a)


def reduce_ref(values, reduction):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(reduction, device, xp, rng):
    p, t = rng.standard_normal((4, 3)) * 2, rng.standard_normal((4, 3))
    d = (p - t).ravel()
    refs = {
        "mse": [v * v for v in d],
        "l1": [abs(v) for v in d],
        "huber": [0.5 * v * v if abs(v) < 1.5 else 1.5 * (abs(v) - 0.75) for v in d],
    }
    P, T = xp.asarray(p), xp.asarray(t)
    got = {
        "mse": L.mse_loss(P, T, reduction),
        "l1": L.l1_loss(P, T, reduction),
        "huber": L.huber_loss(P, T, reduction, delta=1.5),
    }
    for name, ref in refs.items():
        expect = reduce_ref(ref, reduction)
        np.testing.assert_allclose(host(got[name]).ravel(), np.ravel(expect), rtol=1e-12)


def test_bce_on_probabilities_clamps_log_like_torch(device, xp):
    p = np.array([0.0, 1e-50, 0.3, 0.999, 1.0])
    t = np.array([1.0, 1.0, 0.0, 1.0, 0.0])
    ref = []
    for pi, ti in zip(p, t, strict=False):
        lp = max(math.log(pi), -100.0) if pi > 0 else -100.0
        l1p = max(math.log(1 - pi), -100.0) if pi < 1 else -100.0
        ref.append(-(ti * lp + (1 - ti) * l1p))
    got = host(L.binary_cross_entropy(xp.asarray(p), xp.asarray(t), reduction="none"))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    g = gd.grad(lambda q: L.binary_cross_entropy(q, t))(p)
    assert np.isfinite(g).all()
    check_grad(
        lambda q: L.binary_cross_entropy(q, np.array([0.2, 1.0, 0.0])), np.array([0.3, 0.6, 0.9])
    )


def test_bce_with_logits_stable_form_and_pos_weight(device, xp, rng):
    x = np.array([-800.0, -3.0, 0.0, 2.0, 900.0])
    t = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    pw = 3.0

    def log_sigmoid(v):  # stable per element
        return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))

    ref = [
        -(pw * ti * log_sigmoid(v) + (1 - ti) * log_sigmoid(-v))
        for v, ti in zip(x, t, strict=False)
    ]
    got = L.binary_cross_entropy_with_logits(
        xp.asarray(x), xp.asarray(t), pos_weight=pw, reduction="none"
    )
    np.testing.assert_allclose(host(got), ref, rtol=1e-12)
    plain = host(L.binary_cross_entropy_with_logits(xp.asarray(x), xp.asarray(t)))
    ref_plain = np.mean(
        [-(ti * log_sigmoid(v) + (1 - ti) * log_sigmoid(-v)) for v, ti in zip(x, t, strict=False)]
    )
    np.testing.assert_allclose(plain, ref_plain, rtol=1e-12)
    xs, ts = rng.standard_normal((3, 4)), rng.uniform(size=(3, 4))
    check_grad(lambda v: L.binary_cross_entropy_with_logits(v, ts, pos_weight=np.full(4, 2.0)), xs)


def _nll_ref(lp, labels, weight=None, ignore_index=None, reduction="mean"):
    lp = np.moveaxis(lp, 1, -1)
    num, den, per = 0.0, 0.0, np.zeros(labels.shape)
    for idx in np.ndindex(labels.shape):
        y = labels[idx]
        if y == ignore_index:
            continue
        w = 1.0 if weight is None else weight[y]
        per[idx] = -w * lp[idx][y]
        num += per[idx]
        den += w
    return {"mean": num / den, "sum": num, "none": per}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(reduction, device, xp, rng):
    lp = np.log(rng.dirichlet(np.ones(5), size=(4,)))  # (4, 5)
    labels = np.array([0, 4, 2, 2])
    got = L.nll_loss(xp.asarray(lp), xp.asarray(labels), reduction=reduction)
    np.testing.assert_allclose(host(got), _nll_ref(lp, labels, reduction=reduction), rtol=1e-12)
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    got = L.nll_loss(
        xp.asarray(lp),
        xp.asarray(labels),
        weight=xp.asarray(w),
        ignore_index=2,
        reduction=reduction,
    )
    np.testing.assert_allclose(host(got), _nll_ref(lp, labels, w, 2, reduction), rtol=1e-12)


def test_nll_loss_spatial_and_grad(rng):
    lp = np.log(rng.dirichlet(np.ones(3), size=(2, 4)))  # (N, d, C)
    lp = np.moveaxis(lp, -1, 1)  # (N, C, d)
    labels = np.array([[0, 1, 2, 1], [2, 2, 0, -100]])
    got = L.nll_loss(lp, labels, ignore_index=-100)
    np.testing.assert_allclose(got, _nll_ref(lp, labels, ignore_index=-100), rtol=1e-12)
    check_grad(lambda v: L.nll_loss(v, labels, ignore_index=-100), lp)


def test_label_errors_are_clear():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*got range \[0, 3\]"):
        L.nll_loss(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(DTypeError, match="integer array of class indices"):
        L.nll_loss(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="ignore_index must be None or an integer label"):
        L.nll_loss(np.zeros((2, 3)), np.array([0, 1]), ignore_index=1.5)  # ignored nothing
    with pytest.raises(ShapeError, match=r"input \(2, 3\) and target \(3,\)"):
        L.nll_loss(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match=r"input has shape \(2, 1\) but target has shape \(2,\)"):
        L.mse_loss(np.zeros((2, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="reduction must be one of"):
        L.l1_loss(np.zeros(2), np.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\].*sigmoid"):
        L.binary_cross_entropy(np.array([1.5]), np.array([1.0]))
    with pytest.raises(ShapeError, match=r"logits must be \(N, T, V\)"):
        L.sequence_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3), dtype=int))


def test_sequence_cross_entropy_with_mask_and_ignore_index(device, xp, rng):
    n, t, v = 2, 4, 5
    logits = rng.standard_normal((n, t, v)) * 2
    labels = rng.integers(0, v, size=(n, t))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    per, count = np.zeros((n, t)), 0
    for i in range(n):
        for j in range(t):
            if mask[i, j]:
                row = logits[i, j]
                lse = max(row) + math.log(sum(math.exp(r - max(row)) for r in row))
                per[i, j] = lse - row[labels[i, j]]
                count += 1
    got = L.sequence_cross_entropy(xp.asarray(logits), xp.asarray(labels), mask=xp.asarray(mask))
    np.testing.assert_allclose(host(got), per.sum() / count, rtol=1e-12)
    none = L.sequence_cross_entropy(
        xp.asarray(logits), xp.asarray(labels), mask=xp.asarray(mask), reduction="none"
    )
    np.testing.assert_allclose(host(none), per, rtol=1e-12)
    padded = np.where(mask == 1, labels, -1)
    by_index = L.sequence_cross_entropy(xp.asarray(logits), xp.asarray(padded), ignore_index=-1)
    np.testing.assert_allclose(host(by_index), per.sum() / count, rtol=1e-12)
    check_grad(lambda z: L.sequence_cross_entropy(z, labels, mask=mask), logits)


def test_kl_div_torch_semantics(device, xp, rng):
    q = rng.dirichlet(np.ones(4), size=3)
    p = rng.dirichlet(np.ones(4), size=3)
    p[0, 1] = 0.0  # a zero target contributes 0, not NaN
    pointwise = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        if p[idx] > 0:
            pointwise[idx] = p[idx] * (math.log(p[idx]) - math.log(q[idx]))
    lq = xp.asarray(np.log(q))
    np.testing.assert_allclose(host(L.kl_div(lq, xp.asarray(p))), pointwise.sum() / 3, rtol=1e-12)
    np.testing.assert_allclose(
        host(L.kl_div(lq, xp.asarray(p), "mean")), pointwise.mean(), rtol=1e-12
    )
    np.testing.assert_allclose(host(L.kl_div(lq, xp.asarray(p), "none")), pointwise, rtol=1e-12)
    np.testing.assert_allclose(
        host(L.kl_div(lq, xp.asarray(np.log(p + (p == 0))), "sum", log_target=True)),
        sum(
            math.exp(a) * (a - b)
            for a, b in zip(np.log(p + (p == 0)).ravel(), np.log(q).ravel(), strict=False)
        ),
        rtol=1e-12,
    )
    check_grad(lambda a, b: L.kl_div(a, b), np.log(q), rng.dirichlet(np.ones(4), size=3))


def test_gaussian_kl_and_nll(device, xp, rng):
    mu, logvar = rng.standard_normal((3, 2)), rng.standard_normal((3, 2)) * 0.5
    per_sample = [
        sum(0.5 * (math.exp(lv) + m * m - 1 - lv) for m, lv in zip(mu[i], logvar[i], strict=False))
        for i in range(3)
    ]
    got = host(L.gaussian_kl(xp.asarray(mu), xp.asarray(logvar)))
    np.testing.assert_allclose(got, np.mean(per_sample), rtol=1e-12)
    check_grad(L.gaussian_kl, mu, logvar)

    x, y = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    var = np.array([[0.5, 2.0], [1e-9, 1.0], [3.0, 0.1]])
    ref = []
    for idx in np.ndindex(x.shape):
        v = max(var[idx], 1e-6)
        ref.append(0.5 * (math.log(v) + (x[idx] - y[idx]) ** 2 / v) + 0.5 * math.log(2 * math.pi))
    got = L.gaussian_nll_loss(xp.asarray(x), xp.asarray(y), xp.asarray(var), full=True)
    np.testing.assert_allclose(host(got), np.mean(ref), rtol=1e-12)
    shared = L.gaussian_nll_loss(
        xp.asarray(x), xp.asarray(y), xp.asarray(var[:, :1]), reduction="sum"
    )
    ref_shared = sum(
        0.5 * (math.log(var[i, 0]) + (x[i, j] - y[i, j]) ** 2 / var[i, 0])
        for i in (0, 2)
        for j in range(2)
    )
    ref_shared += sum(0.5 * (math.log(1e-6) + (x[1, j] - y[1, j]) ** 2 / 1e-6) for j in range(2))
    np.testing.assert_allclose(host(shared), ref_shared, rtol=1e-10)
    check_grad(L.gaussian_nll_loss, x, y, np.abs(var) + 0.5)
    with pytest.raises(ShapeError, match="var has shape"):
        L.gaussian_nll_loss(x, y, np.ones((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        L.gaussian_nll_loss(x, y, -np.ones((3, 2)))


def test_nt_xent_against_loop(device, xp, rng):
    n, tau = 3, 0.3
    z1, z2 = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[pos] / tau) / denom)
    got = L.nt_xent(xp.asarray(z1), xp.asarray(z2), temperature=tau)
    np.testing.assert_allclose(host(got), total / (2 * n), rtol=1e-12)
    check_grad(lambda a, b: L.nt_xent(a, b, 0.5), z1, z2)


def test_gan_losses():
    real, fake = np.array([2.0, -1.0, 0.5]), np.array([-3.0, 0.2, 1.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    d_ref = np.mean([-math.log(sig(r)) for r in real]) + np.mean(
        [-math.log(1 - sig(f)) for f in fake]
    )
    np.testing.assert_allclose(L.gan_discriminator_loss(real, fake), d_ref, rtol=1e-12)
    np.testing.assert_allclose(
        L.gan_generator_loss(fake), np.mean([-math.log(sig(f)) for f in fake]), rtol=1e-12
    )
    np.testing.assert_allclose(
        L.gan_generator_loss(fake, non_saturating=False),
        np.mean([math.log(1 - sig(f)) for f in fake]),
        rtol=1e-12,
    )
    check_grad(L.gan_discriminator_loss, real, fake)


def test_regularizers(rng):
    params = {
        "fc1": {"weight": rng.standard_normal((3, 2)), "bias": rng.standard_normal(3)},
        "fc2": {"weight": rng.standard_normal((1, 3))},
    }
    w2 = sum(float((params[k]["weight"] ** 2).sum()) for k in params)
    # Biases count by default (as optim weight_decay decays them); excluded on request.
    np.testing.assert_allclose(R.l2_penalty(params, exclude_bias=True), w2, rtol=1e-12)
    np.testing.assert_allclose(
        R.l2_penalty(params),
        w2 + float((params["fc1"]["bias"] ** 2).sum()),
        rtol=1e-12,
    )
    w1 = sum(float(np.abs(params[k]["weight"]).sum()) for k in params)
    np.testing.assert_allclose(R.l1_penalty(params, exclude_bias=True), w1, rtol=1e-12)
    g = gd.grad(lambda p: R.l2_penalty(p, exclude_bias=True))(params)
    np.testing.assert_allclose(g["fc1"]["weight"], 2 * params["fc1"]["weight"])
    assert not g["fc1"]["bias"].any()

    rho, rho_hat = 0.05, np.array([0.02, 0.05, 0.4])
    ref = sum(rho * math.log(rho / r) + (1 - rho) * math.log((1 - rho) / (1 - r)) for r in rho_hat)
    np.testing.assert_allclose(R.sparsity_kl(rho, rho_hat), ref, rtol=1e-12)
    check_grad(lambda r: R.sparsity_kl(rho, r), rho_hat)


def test_contractive_penalty_matches_closed_form_and_trains(rng):
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    x = rng.standard_normal((5, 4))

    def encode(params, v):
        return gd.ops.sigmoid(v @ params["w"].T + params["b"])

    params = {"w": w, "b": b}
    # Reference: finite-difference Jacobian per sample, squared Frobenius norm, batch mean.
    ref = 0.0
    for n in range(5):
        jac = np.zeros((3, 4))
        for i in range(4):
            e = np.zeros(4)
            e[i] = 1e-6
            jac[:, i] = (encode(params, x[n] + e) - encode(params, x[n] - e)) / 2e-6
        ref += (jac**2).sum() / 5
    got = R.contractive_penalty(lambda v: encode(params, v), x)
    np.testing.assert_allclose(got, ref, rtol=1e-7)
    closed = R.contractive_penalty_sigmoid(encode(params, x), w)
    np.testing.assert_allclose(closed, ref, rtol=1e-7)
    # grad-of-grad: the penalty's gradient w.r.t. the encoder's parameters
    g_generic = gd.grad(lambda p: R.contractive_penalty(lambda v: encode(p, v), x))(params)
    g_closed = gd.grad(lambda p: R.contractive_penalty_sigmoid(encode(p, x), p["w"]))(params)
    np.testing.assert_allclose(g_generic["w"], g_closed["w"], rtol=1e-10)
    np.testing.assert_allclose(g_generic["b"], g_closed["b"], rtol=1e-10)
    check_grad(lambda p: R.contractive_penalty(lambda v: encode(p, v), x[:2]), params)


@pytest.mark.parametrize("loss, scores", [
    (L.binary_cross_entropy_with_logits, np.array([[-1.2], [0.3], [2.0], [0.0]])),
    (L.binary_cross_entropy, np.array([[0.2], [0.6], [0.9], [0.5]])),
])
def test_binary_losses_take_n_and_n1_labels_without_broadcasting(loss, scores):
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    same = loss(scores, labels[:, None], reduction="none")  # (N, 1) with (N, 1)
    for out, target in ((scores, labels), (scores[:, 0], labels[:, None])):
        got = loss(out, target, reduction="none")
        assert got.shape == out.shape  # never (N, N)
        np.testing.assert_array_equal(got.reshape(-1), same.reshape(-1))  # bitwise the same
    assert float(loss(scores, labels)) == float(loss(scores, labels[:, None]))
    g = gd.grad(lambda s: loss(s, labels))(scores)
    assert g.shape == scores.shape
    with pytest.raises(ShapeError, match=r"target has shape \(3,\)"):
        loss(scores, labels[:3])
    with pytest.raises(ShapeError, match=r"weight has shape \(4,\), which does not broadcast"):
        loss(scores, labels, weight=np.ones(4))  # an (N,) weight on (N, 1) would give (N, N)
    assert loss(scores, labels, weight=np.ones((4, 1)), reduction="none").shape == (4, 1)


def test_pos_weight_may_not_enlarge_the_loss():
    with pytest.raises(ShapeError, match="pos_weight has shape"):
        L.binary_cross_entropy_with_logits(np.zeros((4, 1)), np.zeros(4), pos_weight=np.ones(4))
    out = L.binary_cross_entropy_with_logits(np.zeros((4, 3)), np.zeros((4, 3)),
                                             pos_weight=np.ones(3), reduction="none")
    assert out.shape == (4, 3)  # one weight per class on the last axis still broadcasts


# ------------------------------------------------------------------- model.apply's pair
_PRED = np.full((2, 3), 0.5)
_LABELS = np.array([0, 2])
# Each loss with the prediction argument (name, position) that gets apply's (y, state).
APPLY_PAIR_CASES = {
    "mse_loss": ("input", lambda y: L.mse_loss(y, _PRED)),
    "l1_loss": ("input", lambda y: L.l1_loss(y, _PRED)),
    "huber_loss": ("input", lambda y: L.huber_loss(y, _PRED)),
    "binary_cross_entropy": ("input", lambda y: L.binary_cross_entropy(y, _PRED)),
    "binary_cross_entropy_with_logits": (
        "input", lambda y: L.binary_cross_entropy_with_logits(y, _PRED)),
    "nll_loss": ("input", lambda y: L.nll_loss(y, _LABELS)),
    "sequence_cross_entropy": ("logits", lambda y: L.sequence_cross_entropy(y, _LABELS[None])),
    "kl_div": ("input", lambda y: L.kl_div(y, _PRED)),
    "gaussian_kl": ("mu", lambda y: L.gaussian_kl(y, _PRED)),
    "gaussian_nll_loss": ("input", lambda y: L.gaussian_nll_loss(y, _PRED, _PRED)),
    "nt_xent": ("z2", lambda y: L.nt_xent(_PRED, y)),
    "gan_discriminator_loss": ("fake_logits", lambda y: L.gan_discriminator_loss(_PRED, y)),
    "gan_generator_loss": ("fake_logits", lambda y: L.gan_generator_loss(y)),
}


def test_every_loss_is_covered_by_the_apply_pair_check():
    assert set(APPLY_PAIR_CASES) == set(L.__all__)


@pytest.mark.parametrize("name", sorted(APPLY_PAIR_CASES))
def test_apply_output_pair_given_as_prediction_says_what_happened(name):
    arg, call = APPLY_PAIR_CASES[name]
    model = gd.nn.Sequential([gd.nn.Dense(3), gd.nn.BatchNorm1d(), gd.nn.Sigmoid()])
    params, state = model.init(0, _PRED)
    pair = model.apply(params, state, _PRED)  # (y, {"bn1": running statistics})
    with pytest.raises(ArgumentTypeError, match=rf"F\.{name} got model\.apply's \(outputs, "
                                                rf"state\) tuple as its {arg}; use `y, state = "
                                                r"model\.apply\(\.\.\.\)` and pass y"):
        call(pair)
