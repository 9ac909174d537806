"""Linear models: least squares (closed form and gradient descent), polynomial features,
ridge and lasso, logistic and softmax regression, the perceptron, and the XOR 2-2-1 net.

Fitted parameters use the ``nn.Dense`` layout, ``{"weight": (k, d), "bias": (k,)}``, so a
closed-form fit plugs straight into ``nn.Dense(k).apply(params, {}, x)``. Targets ``y``
may be (n,) or (n, k); predictions are (n, k). Inputs may be NumPy or CuPy arrays; the
closed forms keep their dtype (pass float64 for exact comparisons).

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 3.0], [4.0, 1.0]])
    >>> y = x @ np.array([1.0, -2.0]) + 3.0
    >>> p = linear_regression(x, y)
    >>> np.round(p["weight"], 6).tolist(), round(float(p["bias"][0]), 6)
    ([[1.0, -2.0]], 3.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpudl import functional as F
from gpudl import nn, ops, optim
from gpudl import random as gdr
from gpudl.backend import get_array_module
from gpudl.errors import ConfigError, ShapeError
from gpudl.train.step import TrainStep, supervised_step


# ----------------------------------------------------------------------- helpers
def _prep(x, y, op: str):
    """x as (n, d) and y as (n, k), float, on one device."""
    xp = get_array_module(x, y)
    x, y = xp.asarray(x), xp.asarray(y)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    y = y.astype(x.dtype)
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ShapeError(f"{op}: x must be (n, d) or (n,) and y (n,) or (n, k) with the same n, "
                         f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
    return x, y, xp


def _center(x, y, fit_intercept: bool):
    """Centred data and the means (zeros without an intercept): the intercept is not penalised."""
    if not fit_intercept:
        return x, y, x[:1] * 0, y[:1] * 0
    xm, ym = x.mean(axis=0, keepdims=True), y.mean(axis=0, keepdims=True)  # (1, d), (1, k)
    return x - xm, y - ym, xm, ym


def _dense_params(w, xm, ym):
    """w (d, k) on centred data -> Dense params with bias = ȳ - x̄ w."""
    return {"weight": ops.transpose(w), "bias": (ym - ops.matmul(xm, w))[0]}


def linear_predict(params: dict, x):
    """``x @ W.T + b`` for Dense-layout params: (n, d) -> (n, k)."""
    x = x[:, None] if x.ndim == 1 else x
    return ops.matmul(x, ops.transpose(params["weight"])) + params["bias"]


# ----------------------------------------------------------- least squares, ridge
def linear_regression(x, y, fit_intercept: bool = True, method: str = "solve") -> dict:
    """Ordinary least squares in closed form: minimise ``||y - X w - b||^2``.

    ``method="solve"``: the normal equations ``(XᵀX) w = Xᵀy`` (on centred data when
    fitting an intercept) via ``ops.linalg.solve``; needs XᵀX invertible (n >= d, no
    collinear columns). ``method="pinv"``: ``w = X⁺ y`` via the pseudo-inverse, which also
    gives the minimum-norm solution of rank-deficient problems (as ``np.linalg.lstsq``).
    """
    if method not in ("solve", "pinv"):
        raise ConfigError(f"linear_regression: method must be 'solve' or 'pinv', got {method!r}")
    x, y, _ = _prep(x, y, "linear_regression")
    xc, yc, xm, ym = _center(x, y, fit_intercept)
    if method == "solve":
        w = ops.linalg.solve(ops.matmul(xc.T, xc), ops.matmul(xc.T, yc))  # (d, k)
    else:
        w = ops.matmul(ops.linalg.pinv(xc), yc)
    return _dense_params(w, xm, ym)


def ridge(x, y, lam: float, fit_intercept: bool = True) -> dict:
    """Ridge regression in closed form: minimise ``||y - X w - b||^2 + lam ||w||^2``.

    ``w = (XᵀX + lam I)⁻¹ Xᵀy`` on centred data, so the bias is not shrunk (scikit-learn's
    ``Ridge(alpha=lam)``). ``lam = 0`` is least squares.

    Example:
        >>> import numpy as np
        >>> p = ridge(np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 3.0]), lam=2.0)
        >>> round(float(p["weight"][0, 0]), 6)   # sum(xc*yc) / (sum(xc^2) + 2) = 2 / 4
        0.5
    """
    if lam < 0:
        raise ConfigError(f"ridge: lam must be >= 0, got {lam}")
    x, y, xp = _prep(x, y, "ridge")
    xc, yc, xm, ym = _center(x, y, fit_intercept)
    a = ops.matmul(xc.T, xc) + lam * xp.eye(x.shape[1], dtype=x.dtype)
    return _dense_params(ops.linalg.solve(a, ops.matmul(xc.T, yc)), xm, ym)


def linear_regression_gd(x, y, lr: float = 0.1, steps: int = 1000, fit_intercept: bool = True,
                         l2: float = 0.0) -> tuple[dict, list[float]]:
    """Least squares by full-batch gradient descent on ``mean((X Wᵀ + b - y)^2) + l2 ||W||^2``.

    Starts from zeros (the problem is convex, so the start does not matter); converges to
    the closed form when ``lr < 1 / λ_max(XᵀX / n)`` (standardise the features first).
    Returns the params and the loss before each step.
    """
    x, y, xp = _prep(x, y, "linear_regression_gd")
    params = {"weight": xp.zeros((y.shape[1], x.shape[1]), x.dtype)}
    if fit_intercept:
        params["bias"] = xp.zeros((y.shape[1],), x.dtype)

    def objective(p, state, key, batch):
        pred = ops.matmul(x, ops.transpose(p["weight"]))
        if fit_intercept:
            pred = pred + p["bias"]
        return ops.mean((pred - y) ** 2) + l2 * ops.sum(p["weight"] ** 2), (None, state)

    params, _, losses = _descend(TrainStep(objective, optim.sgd(lr)), params, {}, None, steps)
    if not fit_intercept:
        params["bias"] = xp.zeros((y.shape[1],), x.dtype)
    return params, losses


def _descend(step: TrainStep, params, state, batch, steps: int):
    """``steps`` full-batch steps of ``step``; returns the trees and the loss before each."""
    opt_state, losses = step.optimizer.init(params), []
    for _ in range(steps):
        params, state, opt_state, loss, _ = step(params, state, opt_state, None, batch)
        losses.append(float(loss))
    return params, state, losses


def polynomial_features(x, degree: int, include_bias: bool = False):
    """Powers of each feature: (n,) or (n, d) -> (n, d * degree), columns grouped by power
    ``[x, x^2, ..., x^degree]`` (no cross terms), with a leading ones column on request.
    Differentiable (built from ops).

    Example:
        >>> import numpy as np
        >>> polynomial_features(np.array([2.0, 3.0]), 3).tolist()
        [[2.0, 4.0, 8.0], [3.0, 9.0, 27.0]]
    """
    if int(degree) < 1:
        raise ConfigError(f"polynomial_features: degree must be >= 1, got {degree}")
    x = ops.reshape(x, (x.shape[0], 1)) if x.ndim == 1 else x
    cols = [x ** p for p in range(1, int(degree) + 1)]
    if include_bias:
        cols.insert(0, ops.ones_like(x[:, :1]))
    return ops.concatenate(cols, axis=1)


# ------------------------------------------------------------------------- lasso
def soft_threshold(z, t):
    """``sign(z) * max(|z| - t, 0)``: the proximal operator of ``t ||.||_1`` (exact zeros)."""
    xp = get_array_module(z)
    return xp.sign(z) * xp.maximum(xp.abs(z) - t, 0)


def lasso_lambda_max(x, y, fit_intercept: bool = True) -> float:
    """The smallest ``lam`` for which the lasso solution is all zeros: ``max |Xcᵀ yc| / n``."""
    x, y, _ = _prep(x, y, "lasso_lambda_max")
    xc, yc, _, _ = _center(x, y, fit_intercept)
    return float(abs(xc.T @ yc).max()) / x.shape[0]


def lasso(x, y, lam: float, method: str = "coordinate", steps: int = 1000, tol: float = 1e-10,
          fit_intercept: bool = True) -> dict:
    """Lasso: minimise ``(1 / 2n) ||y - X w - b||^2 + lam ||w||_1`` (scikit-learn's ``Lasso``).

    ``method="coordinate"``: cyclic coordinate descent; each coordinate is the soft-threshold
    ``w_j = S(x_jᵀ r_j / n, lam) / (x_jᵀ x_j / n)`` of its partial residual ``r_j``.
    ``method="ista"``: proximal gradient descent, a gradient step on the smooth part with
    step ``1/L`` (``L = σ_max(X)^2 / n``) then ``soft_threshold``. Both give exact zeros;
    plain subgradient descent on ``|w|`` does not (it oscillates around zero), which is why
    neither is used here. ``lam >= lasso_lambda_max(x, y)`` gives ``w = 0``. Stops after
    ``steps`` sweeps or when no weight moves more than ``tol``.
    """
    if method not in ("coordinate", "ista"):
        raise ConfigError(f"lasso: method must be 'coordinate' or 'ista', got {method!r}")
    if lam < 0:
        raise ConfigError(f"lasso: lam must be >= 0, got {lam}")
    x, y, xp = _prep(x, y, "lasso")
    xc, yc, xm, ym = _center(x, y, fit_intercept)
    n, d = xc.shape
    w = xp.zeros((d, yc.shape[1]), x.dtype)  # (d, k)
    if method == "coordinate":
        sq = (xc ** 2).sum(axis=0) / n  # (d,)
        r = yc.copy()  # residual y - X w
        for _ in range(steps):
            delta = 0.0
            for j in range(d):
                if sq[j] == 0:
                    continue  # a constant column carries no information
                old = w[j].copy()
                rho = xc[:, j] @ (r + xc[:, j:j + 1] * old) / n  # (k,)
                w[j] = soft_threshold(rho, lam) / sq[j]
                r -= xc[:, j:j + 1] * (w[j] - old)
                delta = max(delta, float(abs(w[j] - old).max()))
            if delta <= tol:
                break
    else:
        lipschitz = float(xp.linalg.norm(xc, 2)) ** 2 / n
        t = 1.0 / max(lipschitz, 1e-30)
        for _ in range(steps):
            grad = xc.T @ (xc @ w - yc) / n
            new = soft_threshold(w - t * grad, t * lam)
            moved = float(abs(new - w).max())
            w = new
            if moved <= tol:
                break
    return _dense_params(w, xm, ym)


# ------------------------------------------------------- logistic / softmax regression
def logistic_regression() -> nn.Sequential:
    """Logistic regression as a model: flatten -> Dense(1), one logit per example (N, 1).

    Train with :func:`logistic_loss` (binary cross-entropy on the logit, stable softplus
    form); ``sigmoid(logit)`` is P(y = 1 | x).
    """
    return nn.Sequential([nn.Flatten(), nn.Dense(1)])


def logistic_loss(logits, labels):
    """Mean binary cross-entropy of (N, 1) or (N,) logits against 0/1 labels (N,)."""
    z = ops.reshape(logits, (logits.shape[0],))
    return F.binary_cross_entropy_with_logits(z, ops.astype(labels, z.dtype))


def binary_accuracy(labels, logits) -> float:
    """Fraction of ``(logit > 0) == label``; truth first, as every gpudl metric and ``fit``.

    Example:
        >>> binary_accuracy(np.array([1, 0, 1]), np.array([2.0, -1.0, -0.5]))
        0.6666666666666666
    """
    xp = get_array_module(logits)
    pred = (xp.asarray(logits).reshape(-1) > 0).astype(np.int64)
    return float((pred == xp.asarray(labels).reshape(-1)).mean())


def softmax_regression(num_classes: int) -> nn.Sequential:
    """Softmax (multinomial logistic) regression: flatten -> Dense(classes), logits (N, C).

    Train with ``loss="cross_entropy"`` (``F.softmax_cross_entropy``, fused log-softmax).

    Example:
        >>> import gpudl as gd
        >>> net = softmax_regression(3)
        >>> p, _ = net.init(gd.random.key(0), gd.ops.zeros((1, 1, 8, 8)))
        >>> p["1"]["weight"].shape
        (3, 64)
    """
    return nn.Sequential([nn.Flatten(), nn.Dense(num_classes)])


def fit_full_batch(model, x, y, loss: Callable, optimizer, steps: int, key=None,
                   params=None) -> tuple[dict, dict, list[float]]:
    """Full-batch training for tiny problems (XOR, 2-D blobs): ``steps`` optimizer steps of
    ``fit``'s step (:func:`gpudl.train.step.supervised_step`), without dropout keys.

    ``key`` (init, when ``params`` is None) is a key or an int seed (``gd.random.as_key``);
    None means ``gd.random.key(0)``. Returns ``(params, state, losses)``; ``losses[i]`` is
    the loss before step i.
    """
    key = gdr.key(0) if key is None else gdr.as_key(key, "models.linear.fit_full_batch")
    state: dict[str, Any]
    if params is None:
        params, state = model.init(key, x)
    else:
        state = {}
    step = supervised_step(model, loss, optimizer, params)
    return _descend(step, params, state, (x, y), steps)


# ------------------------------------------------------------------------- perceptron
def perceptron_update(w, b, x_i, y_i, lr: float = 1.0):
    """One step of Rosenblatt's rule with labels ±1: on a mistake (``y (w·x + b) <= 0``)
    ``w += lr y x`` and ``b += lr y``; otherwise nothing. Returns ``(w, b, mistake)``.

    Example:
        >>> import numpy as np
        >>> w, b, m = perceptron_update(np.zeros(2), 0.0, np.array([1.0, 2.0]), -1)
        >>> w.tolist(), b, m
        ([-1.0, -2.0], -1.0, True)
    """
    if float(y_i) not in (-1.0, 1.0):
        raise ConfigError(f"perceptron_update: y_i must be -1 or +1, got {y_i}")
    if float(y_i * ((w * x_i).sum() + b)) <= 0:
        return w + lr * y_i * x_i, b + lr * y_i, True
    return w, b, False


def perceptron(x, y, lr: float = 1.0, epochs: int = 100,
               key=None) -> tuple[dict, list[int]]:
    """Train a perceptron with the classic rule, one example at a time, until an epoch makes
    no mistake (guaranteed on linearly separable data, Novikoff) or ``epochs`` run out.

    ``y`` holds 0/1 (or ±1) labels; 0 is treated as -1. ``key`` (a key or an int seed, as
    ``gd.random.as_key``) shuffles each epoch (None: data order). Returns Dense-layout
    params and the mistakes per epoch.
    """
    key = None if key is None else gdr.as_key(key, "models.linear.perceptron")
    x, y2, xp = _prep(x, y, "perceptron")
    labels = xp.where(y2[:, 0] > 0, 1.0, -1.0).astype(x.dtype)
    w, b = xp.zeros(x.shape[1], x.dtype), x.dtype.type(0)
    history: list[int] = []
    for epoch in range(epochs):
        order = (np.arange(len(labels)) if key is None else
                 np.asarray(gdr.permutation(gdr.fold_in(key, epoch), len(labels), device="cpu")))
        mistakes = 0
        for i in order:
            w, b, m = perceptron_update(w, b, x[i], labels[i], lr)
            mistakes += int(m)
        history.append(mistakes)
        if mistakes == 0:
            break
    return {"weight": w[None, :], "bias": xp.asarray([b], dtype=x.dtype)}, history


def perceptron_predict(params: dict, x):
    """0/1 labels: 1 where ``w·x + b > 0`` (the side the rule counts as correct for +1)."""
    return (linear_predict(params, x)[:, 0] > 0).astype(np.int64)


# ------------------------------------------------------------------------------ XOR
def xor_net(activation: str = "sigmoid") -> nn.Sequential:
    """The 2-2-1 network that solves XOR: Dense(2) -> activation -> Dense(1) (a logit).

    One hidden unit can compute OR and the other NAND; the output ANDs them. No single
    linear layer can (XOR is not linearly separable).
    """
    return nn.Sequential([nn.Dense(2), nn.Activation(activation), nn.Dense(1)])


def train_xor(key=None, steps: int = 1000, lr: float = 0.1, activation: str = "sigmoid"):
    """Train :func:`xor_net` on the four XOR points with Adam and :func:`logistic_loss`.

    Returns ``(model, params, losses)``. ``key`` is a key or an int seed
    (``gd.random.as_key``); None means ``gd.random.key(0)``. A 2-2-1 sigmoid net has local
    minima; the default key converges (tested), other keys may need more steps or a restart.
    """
    key = gdr.key(0) if key is None else gdr.as_key(key, "models.linear.train_xor")
    from gpudl.data.generated import xor

    x, y = xor()
    model = xor_net(activation)
    params, _, losses = fit_full_batch(model, x, y, logistic_loss, optim.adam(lr), steps,
                                       key=key)
    return model, params, losses
