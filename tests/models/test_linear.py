"""Linear models against independent float64 references: np.linalg.lstsq, the augmented
normal equations, the lasso's optimality (KKT) conditions, scikit-learn where installed,
hand-worked perceptron updates and a hand-set XOR solution."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.errors import ShapeError
from gpudl.models import linear as L

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _regression(n=60, d=4, k=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d,) if k is None else (d, k))
    return x, x @ w + 0.7 + 0.1 * rng.normal(size=(n,) if k is None else (n, k))


def _lstsq(x, y, intercept=True):
    a = np.c_[x, np.ones(len(x))] if intercept else x
    theta = np.linalg.lstsq(a, y, rcond=None)[0]
    theta = theta.reshape(a.shape[1], -1)  # (d [+1], k)
    return (theta[:-1], theta[-1]) if intercept else (theta, np.zeros(theta.shape[1]))


# --------------------------------------------------------------- least squares
@pytest.mark.parametrize("method", ["solve", "pinv"])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("intercept", [True, False])
def test_closed_form_equals_lstsq(method, k, intercept):
    x, y = _regression(k=k)
    p = L.linear_regression(x, y, fit_intercept=intercept, method=method)
    w, b = _lstsq(x, y, intercept)
    np.testing.assert_allclose(p["weight"], w.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p["bias"], b, rtol=1e-10, atol=1e-12)
    assert p["weight"].shape == (1 if k is None else k, 4)


def test_closed_forms_on_every_device(device):
    x, y = _regression()
    for fit in (L.linear_regression, lambda a, b: L.ridge(a, b, 2.0),
                lambda a, b: L.lasso(a, b, 0.05)):
        ref = fit(x, y)
        got = fit(gd.asarray(x, dtype=np.float64, device=device),
                  gd.asarray(y, dtype=np.float64, device=device))
        assert gd.get_array_module(got["weight"]) is gd.backend.xp_for(device)
        np.testing.assert_allclose(gd.to_numpy(got["weight"]), ref["weight"], rtol=1e-8)
        np.testing.assert_allclose(gd.to_numpy(got["bias"]), ref["bias"], rtol=1e-8)


def test_pinv_gives_lstsq_minimum_norm_on_rank_deficient_data():
    x, y = _regression()
    x = np.c_[x, x[:, :1]]  # a repeated column: XᵀX is singular
    p = L.linear_regression(x, y, fit_intercept=False, method="pinv")
    np.testing.assert_allclose(p["weight"][0], np.linalg.lstsq(x, y, rcond=None)[0],
                               rtol=1e-8, atol=1e-10)


def test_closed_form_params_plug_into_dense():
    x, y = _regression(k=2)
    p = L.linear_regression(x, y)
    out, _ = nn.Dense(2).apply(p, {}, x)
    np.testing.assert_allclose(out, L.linear_predict(p, x), rtol=1e-12)
    np.testing.assert_allclose(out, x @ p["weight"].T + p["bias"], rtol=1e-12)


def test_gradient_descent_converges_to_closed_form():
    x, y = _regression()
    p, losses = L.linear_regression_gd(x, y, lr=0.2, steps=300)
    ref = L.linear_regression(x, y)
    np.testing.assert_allclose(p["weight"], ref["weight"], atol=1e-6)
    np.testing.assert_allclose(p["bias"], ref["bias"], atol=1e-6)
    assert all(b <= a + 1e-15 for a, b in zip(losses, losses[1:]))  # monotone for small lr


def test_polynomial_features_and_polynomial_regression():
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    f = L.polynomial_features(x, 3, include_bias=True)
    np.testing.assert_array_equal(f, np.c_[np.ones(2), x, x ** 2, x ** 3])
    # gd.data.polynomial: y = 1 - 2x + 0.5x^2 + noise; the closed form recovers the coefficients
    xs, ys = gd.data.polynomial(n=400, noise=0.01, seed=0)
    p = L.linear_regression(L.polynomial_features(xs.astype(np.float64), 2), ys.astype(np.float64))
    np.testing.assert_allclose(p["weight"][0], [-2.0, 0.5], atol=5e-3)
    np.testing.assert_allclose(p["bias"], [1.0], atol=5e-3)


def test_shape_errors():
    with pytest.raises(ShapeError, match="same n"):
        L.linear_regression(np.ones((5, 2)), np.ones(4))
    with pytest.raises(ValueError, match="method"):
        L.linear_regression(np.ones((5, 2)), np.ones(5), method="qr")


# ------------------------------------------------------------------------ ridge
def test_ridge_closed_form_formula():
    x, y = _regression()
    lam = 3.0
    p = L.ridge(x, y, lam)
    # Independent route: augmented design [X 1], penalty diag(1, .., 1, 0) (bias not shrunk).
    a = np.c_[x, np.ones(len(x))]
    pen = np.diag([1.0] * x.shape[1] + [0.0])
    theta = np.linalg.solve(a.T @ a + lam * pen, a.T @ y)
    np.testing.assert_allclose(p["weight"][0], theta[:-1], rtol=1e-10)
    np.testing.assert_allclose(p["bias"], [theta[-1]], rtol=1e-10)
    # no intercept: the textbook (XᵀX + lam I)^-1 Xᵀy
    p0 = L.ridge(x, y, lam, fit_intercept=False)
    np.testing.assert_allclose(p0["weight"][0],
                               np.linalg.solve(x.T @ x + lam * np.eye(4), x.T @ y), rtol=1e-10)


def test_ridge_limits_and_shrinkage():
    x, y = _regression()
    ols = L.linear_regression(x, y)
    np.testing.assert_allclose(L.ridge(x, y, 0.0)["weight"], ols["weight"], rtol=1e-10)
    norms = [np.linalg.norm(L.ridge(x, y, lam)["weight"]) for lam in (0.1, 1.0, 10.0, 100.0)]
    assert all(b < a for a, b in zip(norms, norms[1:]))
    # ridge = GD on mean squared error + (lam / n) ||w||^2
    lam = 5.0
    p, _ = L.linear_regression_gd(x, y, lr=0.2, steps=400, l2=lam / len(x))
    np.testing.assert_allclose(p["weight"], L.ridge(x, y, lam)["weight"], atol=1e-6)


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
def test_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge

    x, y = _regression()
    ref = Ridge(alpha=2.5).fit(x, y)
    p = L.ridge(x, y, 2.5)
    np.testing.assert_allclose(p["weight"][0], ref.coef_, rtol=1e-8)
    np.testing.assert_allclose(p["bias"][0], ref.intercept_, rtol=1e-8)


# ------------------------------------------------------------------------ lasso
def _sparse_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 8))
    w = np.array([3.0, -2.0, 0, 0, 1.5, 0, 0, 0])
    return x, x @ w + 1.0 + 0.1 * rng.normal(size=80)


def _kkt_violation(x, y, p, lam):
    """Lasso optimality: x_jᵀ r / n = lam sign(w_j) where w_j != 0, |x_jᵀ r / n| <= lam else."""
    w, b = p["weight"][0], p["bias"][0]
    c = x.T @ (y - x @ w - b) / len(x)
    nz = w != 0
    return max(np.abs(c[nz] - lam * np.sign(w[nz])).max(initial=0.0),
               (np.abs(c[~nz]) - lam).max(initial=0.0), abs(float((y - x @ w - b).mean())))


@pytest.mark.parametrize("method", ["coordinate", "ista"])
def test_lasso_satisfies_kkt_and_zeroes_irrelevant_features(method):
    x, y = _sparse_problem()
    lam = 0.1
    p = L.lasso(x, y, lam, method=method, steps=5000, tol=1e-13)
    assert _kkt_violation(x, y, p, lam) < 1e-8
    w = p["weight"][0]
    assert np.count_nonzero(w[[2, 3, 5, 6, 7]] == 0.0) >= 3  # exact zeros, not just small
    assert np.all(w[[0, 1, 4]] != 0)


@pytest.mark.parametrize("method", ["coordinate", "ista"])
def test_lasso_large_lambda_gives_exact_zeros(method):
    x, y = _sparse_problem()
    lam_max = L.lasso_lambda_max(x, y)
    np.testing.assert_allclose(lam_max, np.abs((x - x.mean(0)).T @ (y - y.mean())).max() / 80)
    p = L.lasso(x, y, lam_max * 1.001, method=method)
    assert np.all(p["weight"] == 0.0)
    np.testing.assert_allclose(p["bias"], [y.mean()])
    below = L.lasso(x, y, lam_max * 0.9, method=method)
    assert np.count_nonzero(below["weight"]) >= 1


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
def test_lasso_matches_sklearn():
    from sklearn.linear_model import Lasso

    x, y = _sparse_problem(1)
    ref = Lasso(alpha=0.2, tol=1e-12, max_iter=100_000).fit(x, y)
    for method in ("coordinate", "ista"):
        p = L.lasso(x, y, 0.2, method=method, steps=5000, tol=1e-13)
        np.testing.assert_allclose(p["weight"][0], ref.coef_, atol=1e-7)
        np.testing.assert_allclose(p["bias"][0], ref.intercept_, atol=1e-7)


def test_soft_threshold():
    np.testing.assert_array_equal(L.soft_threshold(np.array([-3.0, -0.5, 0.0, 0.5, 2.0]), 1.0),
                                  [-2.0, 0.0, 0.0, 0.0, 1.0])


# ------------------------------------------------- logistic and softmax regression
def test_logistic_loss_is_binary_cross_entropy():
    z = np.array([[-2.0], [0.5], [3.0]])
    t = np.array([0, 1, 0])
    p = 1 / (1 + np.exp(-z[:, 0]))
    ref = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(float(L.logistic_loss(z, t)), ref, rtol=1e-12)
    assert L.binary_accuracy(t, z) == pytest.approx(2 / 3)


def test_logistic_regression_separates_blobs():
    x, y = gd.data.blobs(n=400, centers=2, std=1.0, seed=3)
    xtr, ytr, xte, yte = x[:300], y[:300], x[300:], y[300:]
    net = L.logistic_regression()
    params, state, losses = L.fit_full_batch(net, xtr, ytr, L.logistic_loss, optim.adam(0.1),
                                             steps=150, key=gd.random.key(0))
    assert losses[-1] < 0.5 * losses[0]
    out, _ = net.apply(params, state, xte)
    assert L.binary_accuracy(yte, out) > 0.95
    # the probability is sigmoid(w·x + b): check on one point by hand
    w, b = params["1"]["weight"][0], params["1"]["bias"][0]
    np.testing.assert_allclose(out[0, 0], xte[0] @ w + b, rtol=1e-5)


def test_softmax_regression_on_blobs():
    x, y = gd.data.blobs(n=600, centers=3, std=0.7, seed=0)
    net = L.softmax_regression(3)
    params, state, _ = L.fit_full_batch(net, x[:450], y[:450],
                                        gd.functional.softmax_cross_entropy, optim.adam(0.1),
                                        steps=150)
    out, _ = net.apply(params, state, x[450:])
    assert gd.metrics.accuracy(y[450:], out) > 0.95


def test_linear_models_cannot_learn_xor():
    x, y = gd.data.xor()
    net = L.logistic_regression()
    params, state, _ = L.fit_full_batch(net, x, y, L.logistic_loss, optim.adam(0.1), steps=200)
    assert L.binary_accuracy(y, net.apply(params, state, x)[0]) <= 0.75


# --------------------------------------------------------------------- perceptron
def test_perceptron_update_rule_by_hand():
    w, b = np.zeros(2), 0.0
    w, b, m = L.perceptron_update(w, b, np.array([1.0, 2.0]), 1, lr=0.5)  # 0 <= 0: mistake
    assert m and w.tolist() == [0.5, 1.0] and b == 0.5
    w, b, m = L.perceptron_update(w, b, np.array([2.0, 0.0]), 1, lr=0.5)  # 1.5 > 0: correct
    assert not m and w.tolist() == [0.5, 1.0] and b == 0.5
    w, b, m = L.perceptron_update(w, b, np.array([1.0, 1.0]), -1, lr=0.5)  # -(2.0) <= 0
    assert m and w.tolist() == [0.0, 0.5] and b == 0.0
    with pytest.raises(ValueError, match="-1 or \\+1"):
        L.perceptron_update(w, b, np.ones(2), 0)


def test_perceptron_replays_the_rule():
    x = np.array([[2.0, 1.0], [-1.0, -1.5], [1.0, -1.0], [-2.0, 0.5]])
    y = np.array([1, 0, 1, 0])
    p, history = L.perceptron(x, y, lr=1.0, epochs=1)
    w, b = np.zeros(2), 0.0  # the rule, written out: ±1 labels, mistake when y z <= 0
    for xi, yi in zip(x, 2 * y - 1):
        if yi * (w @ xi + b) <= 0:
            w, b = w + yi * xi, b + yi
    np.testing.assert_array_equal(p["weight"][0], w)
    np.testing.assert_array_equal(p["bias"], [b])


@pytest.mark.parametrize("shuffle", [False, True])
def test_perceptron_converges_on_separable_data(shuffle):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(200, 2))
    score = x @ np.array([1.0, -2.0]) + 0.3
    keep = np.abs(score) > 0.1  # a margin: Novikoff's bound is finite
    x, y = x[keep], (score[keep] > 0).astype(np.int64)
    p, history = L.perceptron(x, y, epochs=1000, key=gd.random.key(0) if shuffle else None)
    assert history[-1] == 0 and len(history) < 1000
    np.testing.assert_array_equal(L.perceptron_predict(p, x), y)


def test_perceptron_never_converges_on_xor():
    x, y = gd.data.xor()
    _, history = L.perceptron(x, y, epochs=50)
    assert len(history) == 50 and min(history) > 0


# ---------------------------------------------------------------------------- XOR
def test_xor_net_with_hand_set_weights():
    net = L.xor_net()
    x, y = gd.data.xor()
    params, state = net.init(gd.random.key(0), x)
    assert gd.nn.count_params(params) == 2 * 2 + 2 + 2 + 1  # the 2-2-1 network: 9 weights
    params = {"0": {"weight": np.array([[20.0, 20.0], [-20.0, -20.0]], np.float32),
                         "bias": np.array([-10.0, 30.0], np.float32)},   # OR, NAND
              "2": {"weight": np.array([[20.0, 20.0]], np.float32),
                         "bias": np.array([-30.0], np.float32)}}         # AND
    out, _ = net.apply(params, state, x)
    np.testing.assert_array_equal((out[:, 0] > 0).astype(np.int64), y)


def test_xor_2_2_1_learns_xor():
    model, params, losses = L.train_xor()
    x, y = gd.data.xor()
    out, _ = model.apply(params, {}, x)
    assert L.binary_accuracy(y, out) == 1.0
    assert losses[-1] < 0.01
