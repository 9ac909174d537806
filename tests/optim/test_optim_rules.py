"""Each optimizer against its torch update rule: hand-written numbers, a scalar float64
reference written here (not the library's code), torch itself when installed, and
convergence on a convex quadratic."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import optim
from gpudl.backend import module_of

P0 = [1.0, -2.0, 0.5]
GRADS = [[0.5, -1.0, 2.0], [-0.3, 0.4, 1.0]]  # the gradient at step 1 and step 2


def run(opt, p0, grads, dtype=np.float64):
    """Apply ``opt`` with the given per-step gradients; returns the params after each step."""
    params = {"w": np.array(p0, dtype)}
    state = opt.init(params)
    out = []
    for g in grads:
        updates, state = opt.update({"w": np.array(g, dtype)}, state, params)
        params = optim.apply_updates(params, updates)
        out.append(params["w"].copy())
    return out


# ----------------------------------------------------------------------------- numbers by hand
def test_sgd_two_steps_by_hand():
    g = [[0.5, -1.0], [-0.3, 0.4]]
    p1, p2 = run(optim.sgd(0.1), [1.0, -2.0], g)
    np.testing.assert_allclose(p1, [0.95, -1.9], rtol=1e-12)
    np.testing.assert_allclose(p2, [0.98, -1.94], rtol=1e-12)


def test_sgd_momentum_two_steps_by_hand():
    # buf1 = g1 = [0.5, -1]; buf2 = 0.9*buf1 + g2 = [0.15, -0.5]
    p1, p2 = run(optim.sgd(0.1, momentum=0.9), [1.0, -2.0], [[0.5, -1.0], [-0.3, 0.4]])
    np.testing.assert_allclose(p1, [0.95, -1.9], rtol=1e-12)
    np.testing.assert_allclose(p2, [0.935, -1.85], rtol=1e-12)


def test_sgd_nesterov_two_steps_by_hand():
    # step: g + 0.9*buf -> [0.95, -1.9] then [-0.165, -0.05]
    p1, p2 = run(optim.sgd(0.1, momentum=0.9, nesterov=True), [1.0, -2.0],
                 [[0.5, -1.0], [-0.3, 0.4]])
    np.testing.assert_allclose(p1, [0.905, -1.81], rtol=1e-12)
    np.testing.assert_allclose(p2, [0.9215, -1.805], rtol=1e-12)


def test_sgd_weight_decay_is_l2_on_the_gradient():
    # g = g + 0.1 p: [0.6, -1.2] at p0; [-0.206, 0.212] at p1 = [0.94, -1.88]
    p1, p2 = run(optim.sgd(0.1, weight_decay=0.1), [1.0, -2.0], [[0.5, -1.0], [-0.3, 0.4]])
    np.testing.assert_allclose(p1, [0.94, -1.88], rtol=1e-12)
    np.testing.assert_allclose(p2, [0.9606, -1.9012], rtol=1e-12)


def test_sgd_dampening_first_step_is_the_gradient():
    # torch: buf1 = g1 (no dampening on the first step); buf2 = 0.9 buf1 + 0.5 g2
    p1, p2 = run(optim.sgd(1.0, momentum=0.9, dampening=0.5), [0.0], [[1.0], [2.0]])
    np.testing.assert_allclose(p1, [-1.0])
    np.testing.assert_allclose(p2, [-1.0 - (0.9 + 1.0)])


def test_adam_first_step_is_lr_times_sign():
    (p1,) = run(optim.adam(0.1), P0, GRADS[:1])
    np.testing.assert_allclose(p1, np.array(P0) - 0.1 * np.sign(GRADS[0]), rtol=1e-7)


def test_adam_second_step_by_hand():
    # element 0: m2 = 0.09*0.5 + 0.1*(-0.3) = 0.015; v2 = 0.000999*0.25 + 0.001*0.09
    m_hat = 0.015 / (1 - 0.9 ** 2)
    v_hat = (0.000999 * 0.25 + 0.001 * 0.09) / (1 - 0.999 ** 2)
    expected = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8) - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    p1, p2 = run(optim.adam(0.1), P0, GRADS)
    assert p2[0] == pytest.approx(expected, rel=1e-12)
    assert m_hat / math.sqrt(v_hat) == pytest.approx(0.19149, rel=1e-4)


# ----------------------------------------------------------------------------- scalar references
# Written from torch.optim's documented algorithms, one float at a time.
def ref_sgd(p, gs, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
    buf, out = None, []
    for g in gs:
        g = g + weight_decay * p
        if momentum:
            buf = g if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return out


def ref_adam(p, gs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False):
    b1, b2 = betas
    m = v = vmax = 0.0
    out = []
    for t, g in enumerate(gs, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = max(vmax, v)
        denom = math.sqrt(vmax if amsgrad else v) / math.sqrt(1 - b2 ** t) + eps
        p = p - lr / (1 - b1 ** t) * m / denom
        out.append(p)
    return out


def ref_adamw(p, gs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    return ref_adam(p, gs, lr, betas, eps, weight_decay, amsgrad, decoupled=True)


def ref_adamax(p, gs, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    m = u = 0.0
    out = []
    for t, g in enumerate(gs, start=1):
        g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        u = max(b2 * u, abs(g) + eps)
        p = p - lr / (1 - b1 ** t) * m / u
        out.append(p)
    return out


def ref_adagrad(p, gs, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                eps=1e-10):
    acc, out = initial_accumulator_value, []
    for t, g in enumerate(gs, start=1):
        g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = acc + g * g
        p = p - clr * g / (math.sqrt(acc) + eps)
        out.append(p)
    return out


def ref_rmsprop(p, gs, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    s = a = buf = 0.0
    out = []
    for g in gs:
        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        if centered:
            a = alpha * a + (1 - alpha) * g
            avg = math.sqrt(s - a * a) + eps
        else:
            avg = math.sqrt(s) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
        out.append(p)
    return out


def ref_adadelta(p, gs, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    s = acc = 0.0
    out = []
    for g in gs:
        g = g + weight_decay * p
        s = rho * s + (1 - rho) * g * g
        delta = math.sqrt(acc + eps) / math.sqrt(s + eps) * g
        acc = rho * acc + (1 - rho) * delta * delta
        p = p - lr * delta
        out.append(p)
    return out


CASES = [
    ("sgd", dict(lr=0.1), ref_sgd),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.05), ref_sgd),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05), ref_sgd),
    ("sgd", dict(lr=0.1, momentum=0.5, dampening=0.3), ref_sgd),
    ("adam", dict(lr=0.1), ref_adam),
    ("adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1), ref_adam),
    ("adam", dict(lr=0.1, amsgrad=True), ref_adam),
    ("adamw", dict(lr=0.1), ref_adamw),
    ("adamw", dict(lr=0.1, weight_decay=0.3, amsgrad=True), ref_adamw),
    ("adamax", dict(lr=0.1), ref_adamax),
    ("adamax", dict(lr=0.1, weight_decay=0.1, betas=(0.5, 0.7)), ref_adamax),
    ("adagrad", dict(lr=0.1), ref_adagrad),
    ("adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, initial_accumulator_value=0.2),
     ref_adagrad),
    ("rmsprop", dict(lr=0.01), ref_rmsprop),
    ("rmsprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1), ref_rmsprop),
    ("rmsprop", dict(lr=0.01, alpha=0.9, momentum=0.5), ref_rmsprop),
    ("adadelta", dict(), ref_adadelta),
    ("adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1), ref_adadelta),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw, _ in CASES]


@pytest.mark.parametrize("name,kwargs,ref", CASES, ids=IDS)
def test_two_steps_match_the_scalar_reference(name, kwargs, ref):
    got = run(getattr(optim, name)(**kwargs), P0, GRADS)
    for i, p0 in enumerate(P0):
        expected = ref(p0, [g[i] for g in GRADS], **kwargs)
        np.testing.assert_allclose([got[0][i], got[1][i]], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,kwargs,ref", CASES, ids=IDS)
def test_float32_params_stay_float32(name, kwargs, ref):
    opt = getattr(optim, name)(**kwargs)
    params = {"w": np.array(P0, np.float32)}
    state = opt.init(params)
    updates, state = opt.update({"w": np.array(GRADS[0], np.float32)}, state, params)
    assert updates["w"].dtype == np.float32
    assert all(leaf.dtype == np.float32 for leaf in gd.tree.tree_leaves(state)
               if hasattr(leaf, "dtype"))
    expected = ref(P0[0], [GRADS[0][0]], **kwargs)[0]
    new = optim.apply_updates(params, updates)["w"]
    assert new.dtype == np.float32
    assert new[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name,kwargs,ref", CASES, ids=IDS)
def test_against_torch_five_steps(name, kwargs, ref):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(5)]
    tname = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax",
             "adagrad": "Adagrad", "rmsprop": "RMSprop", "adadelta": "Adadelta"}[name]
    tp = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, tname)([tp], **kwargs)
    params = {"w": p0.copy()}
    opt = getattr(optim, name)(**kwargs)
    state = opt.init(params)
    for g in grads:
        tp.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        updates, state = opt.update({"w": g}, state, params)
        params = optim.apply_updates(params, updates)
        np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the two Nesterovs
def test_nesterov_equals_the_look_ahead_form_shifted_by_mu_v():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4)) + 3 * np.eye(4)
    b = rng.normal(size=4)

    def grad(w):
        return a.T @ (a @ w - b)

    lr, mu = 0.01, 0.9
    w, v = np.zeros(4), np.zeros(4)  # the course: v <- mu v - lr grad(w + mu v); w <- w + v
    params = {"w": w.copy()}  # w' = w + mu v = w at the start (v = 0)
    opt = optim.sgd(lr, momentum=mu, nesterov=True)
    state = opt.init(params)
    for _ in range(20):
        v = mu * v - lr * grad(w + mu * v)
        w = w + v
        updates, state = opt.update({"w": grad(params["w"])}, state, params)
        params = optim.apply_updates(params, updates)
        np.testing.assert_allclose(params["w"], w + mu * v, rtol=1e-10, atol=1e-12)


def test_adamw_decay_differs_from_adam_l2():
    # Zero gradient: Adam's L2 term is normalised by sqrt(v) (a full lr-sized step), while
    # AdamW shrinks the weight by exactly lr*wd*p.
    p = [2.0]
    (w_adamw,) = run(optim.adamw(0.1, weight_decay=0.5), p, [[0.0]])
    (w_adam,) = run(optim.adam(0.1, weight_decay=0.5), p, [[0.0]])
    np.testing.assert_allclose(w_adamw, [2.0 * (1 - 0.1 * 0.5)])
    np.testing.assert_allclose(w_adam, [2.0 - 0.1], rtol=1e-7)


# ----------------------------------------------------------------------------- convergence
A = np.array([[2.0, 0.3, 0.0], [0.3, 1.5, 0.2], [0.0, 0.2, 1.0]])  # condition number ~2.6
B = np.array([1.0, -2.0, 0.5])


def quad_loss(w):
    r = A @ w - B
    return 0.5 * float(r @ r)


CONVERGE = [
    (optim.sgd(0.3), 200),
    (optim.sgd(0.1, momentum=0.9), 300),
    (optim.sgd(0.1, momentum=0.9, nesterov=True), 300),
    (optim.adam(0.05), 300),
    (optim.adamw(0.05, weight_decay=0.0), 300),
    (optim.adamax(0.05), 300),
    (optim.adagrad(0.5), 200),
    (optim.rmsprop(0.01), 300),
    (optim.rmsprop(0.005, momentum=0.9, centered=True), 300),
    # Near the optimum AdaDelta's step tends to lr * g (plain GD), so lr < 2 / lambda_max.
    (optim.adadelta(lr=0.4, eps=1e-3), 300),
]


@pytest.mark.parametrize("opt,steps", CONVERGE, ids=[
    "sgd", "momentum", "nesterov", "adam", "adamw", "adamax", "adagrad", "rmsprop",
    "rmsprop-centered-momentum", "adadelta"])
def test_reaches_the_minimum_of_a_convex_quadratic(opt, steps):
    params = {"w": np.zeros(3)}
    state = opt.init(params)
    for _ in range(steps):
        grads = {"w": A.T @ (A @ params["w"] - B)}
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    assert quad_loss(params["w"]) < 1e-3


def test_trains_with_gpudl_grad_and_a_schedule():
    def loss(p, x, y):
        pred = gd.ops.matmul(x, p["weight"]) + p["bias"]
        return gd.ops.mean((pred - y) ** 2)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
    params = {"weight": np.zeros((3, 1), np.float32), "bias": np.zeros(1, np.float32)}
    opt = optim.adam(optim.warmup(optim.cosine_annealing(0.1, 300, eta_min=1e-3), 10))
    state = opt.init(params)
    for _ in range(310):
        grads = gd.grad(loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    assert params["weight"].dtype == np.float32
    assert float(loss(params, x, y)) < 1e-3


# ----------------------------------------------------------------------------- device, errors
def test_updates_run_on_the_params_device(device, xp):
    params = {"fc": {"weight": gd.asarray(np.ones((2, 3))), "bias": gd.asarray(np.zeros(2))}}
    grads = gd.tree.tree_map(lambda p: p * 0.5 + 1.0, params)
    opt = optim.chain(optim.clip_by_global_norm(1.0),
                      optim.adamw(optim.cosine_annealing(1e-2, 10),
                                  decay_mask=optim.weight_decay_mask))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    new = optim.apply_updates(params, updates)
    for leaf in gd.tree.tree_leaves((updates, state, new)):
        if hasattr(leaf, "dtype"):
            assert module_of(leaf) is xp
            assert leaf.dtype == np.float32


@pytest.mark.parametrize("make,arg", [
    (lambda: optim.sgd(-0.1), "lr"),
    (lambda: optim.sgd(0.1, momentum=-0.5), "momentum"),
    (lambda: optim.adam(betas=(0.9, 1.5)), "betas[1]"),
    (lambda: optim.adam(eps=-1.0), "eps"),
    (lambda: optim.adamw(weight_decay=-1.0), "weight_decay"),
    (lambda: optim.rmsprop(alpha=2.0), "alpha"),
    (lambda: optim.adagrad(lr_decay=-1.0), "lr_decay"),
    (lambda: optim.adadelta(rho=1.5), "rho"),
    (lambda: optim.clip_by_global_norm(0.0), "max_norm"),
    (lambda: optim.clip(-1.0), "max_delta"),
])
def test_bad_hyperparameters_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=re_escape(arg)):
        make()


def re_escape(s):
    import re

    return re.escape(s)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        optim.sgd(0.1, nesterov=True)


def test_negative_scheduled_lr_is_rejected_at_the_step():
    opt = optim.sgd(lambda step: -1.0)
    p = {"w": np.zeros(1)}
    with pytest.raises(ValueError, match="lr schedule gave -1.0 at step 0"):
        opt.update(p, opt.init(p), p)
