"""Schedules give their formula's values; reduce-on-plateau follows torch's semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpudl import optim
from gpudl.optim import schedules


def values(schedule, steps):
    return [schedule(t) for t in steps]


def test_constant():
    assert values(optim.constant(0.3), [0, 1, 1000]) == [0.3, 0.3, 0.3]


def test_step_decay():
    s = optim.step_decay(0.1, step_size=3, gamma=0.5)
    np.testing.assert_allclose(values(s, [0, 2, 3, 5, 6, 9]), [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])


def test_exponential_per_step_and_per_decay_steps():
    np.testing.assert_allclose(values(optim.exponential_decay(2.0, 0.9), [0, 1, 2, 10]),
                               [2.0, 1.8, 1.62, 2.0 * 0.9 ** 10])
    s = optim.exponential_decay(1.0, decay_rate=0.1, decay_steps=4)
    np.testing.assert_allclose(values(s, [0, 2, 4, 8]), [1.0, 0.1 ** 0.5, 0.1, 0.01])
    s = optim.exponential_decay(1.0, decay_rate=0.1, decay_steps=4, staircase=True)
    np.testing.assert_allclose(values(s, [0, 3, 4, 7, 8]), [1.0, 1.0, 0.1, 0.1, 0.01])


def test_power_decay():
    # the course's lr0 / (1 + t/s), and lr0 (1 + t/s)^-c
    np.testing.assert_allclose(values(optim.power_decay(0.5, s=4), [0, 4, 12]), [0.5, 0.25, 0.125])
    np.testing.assert_allclose(values(optim.power_decay(1.0, s=2, c=0.5), [0, 2, 6]),
                               [1.0, 2 ** -0.5, 0.5])


def test_polynomial_and_linear_decay():
    s = optim.polynomial_decay(1.0, 0.1, total_steps=10, power=2.0)
    np.testing.assert_allclose(values(s, [0, 5, 10, 20]), [1.0, 0.9 * 0.25 + 0.1, 0.1, 0.1])
    s = optim.linear_decay(1.0, 0.0, total_steps=4)
    np.testing.assert_allclose(values(s, [0, 1, 2, 3, 4, 7]), [1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


def test_cosine_annealing_torch_formula():
    s = optim.cosine_annealing(1.0, t_max=10, eta_min=0.2)
    expect = [0.2 + 0.8 * (1 + math.cos(math.pi * t / 10)) / 2 for t in (0, 3, 5, 10)]
    np.testing.assert_allclose(values(s, [0, 3, 5, 10]), expect)
    np.testing.assert_allclose(values(s, [0, 5, 10]), [1.0, 0.6, 0.2])


def test_warmup_then_schedule():
    s = optim.warmup(optim.step_decay(0.8, 2, 0.5), warmup_steps=4)
    np.testing.assert_allclose(values(s, range(9)),
                               [0.0, 0.2, 0.4, 0.6, 0.8, 0.8, 0.4, 0.4, 0.2])
    s = optim.warmup(0.5, warmup_steps=2, start_value=0.1)
    np.testing.assert_allclose(values(s, range(4)), [0.1, 0.3, 0.5, 0.5])


def test_join_schedules_restarts_each_piece():
    s = optim.join_schedules([optim.constant(1.0), optim.linear_decay(0.5, 0.0, 2),
                              optim.constant(0.01)], [2, 5])
    np.testing.assert_allclose(values(s, range(7)), [1.0, 1.0, 0.5, 0.25, 0.0, 0.01, 0.01])


def test_one_cycle_torch_formula():
    s = optim.one_cycle(100, max_lr=1.0)  # pct_start .3, div 25, final_div 1e4
    initial, low = 1.0 / 25, 1.0 / 25 / 1e4
    cos_anneal = lambda a, b, pct: b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)  # noqa: E731
    expect = {0: initial, 10: cos_anneal(initial, 1.0, 10 / 29), 29: 1.0,
              64: cos_anneal(1.0, low, 35 / 70), 99: low}
    np.testing.assert_allclose(values(s, expect), list(expect.values()), rtol=1e-12)
    lin = optim.one_cycle(10, max_lr=1.0, anneal_strategy="linear", pct_start=0.5)
    # phase 1 ends at step 4 (0.5*10 - 1), phase 2 at 9
    np.testing.assert_allclose(values(lin, [0, 2, 4, 9]),
                               [0.04, 0.04 + 0.96 * 0.5, 1.0, 0.04 / 1e4])
    three = optim.one_cycle(10, max_lr=1.0, three_phase=True, anneal_strategy="linear",
                            pct_start=0.3)
    # phases end at 2, 4, 9: up to max, back to initial, down to min
    np.testing.assert_allclose(values(three, [0, 2, 4, 9]), [0.04, 1.0, 0.04, 0.04 / 1e4])
    with pytest.raises(ValueError, match="beyond total_steps"):
        s(101)


def test_schedule_drives_the_optimizer_step_count():
    opt = optim.sgd(optim.step_decay(1.0, 1, 0.5))
    params = {"w": np.zeros(1)}
    state = opt.init(params)
    got = []
    for _ in range(4):
        updates, state = opt.update({"w": np.ones(1)}, state, params)
        got.append(-float(updates["w"][0]))
    assert got == [1.0, 0.5, 0.25, 0.125]


def test_adagrad_lr_decay_composes_with_a_schedule():
    opt = optim.adagrad(optim.constant(1.0), lr_decay=1.0, eps=0.0)
    params = {"w": np.zeros(1)}
    state = opt.init(params)
    u1, state = opt.update({"w": np.ones(1)}, state, params)
    u2, state = opt.update({"w": np.ones(1)}, state, params)
    # clr = 1 / (1 + t*1); directions 1/sqrt(1), 1/sqrt(2)
    np.testing.assert_allclose([u1["w"][0], u2["w"][0]], [-1.0, -0.5 / math.sqrt(2)])


@pytest.mark.parametrize("make,arg", [
    (lambda: optim.step_decay(0.1, 0), "step_size"),
    (lambda: optim.exponential_decay(0.1), "exactly one"),
    (lambda: optim.power_decay(0.1, s=0.0), "s must"),
    (lambda: optim.cosine_annealing(-1.0, 10), "init_value"),
    (lambda: optim.one_cycle(10, 1.0, anneal_strategy="cubic"), "anneal_strategy"),
    (lambda: optim.join_schedules([optim.constant(1.0)], [3]), "one more schedule"),
    (lambda: optim.reduce_on_plateau(factor=1.0), "factor"),
    (lambda: optim.reduce_on_plateau(mode="up"), "mode"),
])
def test_bad_schedule_arguments(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_schedules_module_is_exported():
    assert optim.schedules is schedules and schedules.one_cycle is optim.one_cycle


# ----------------------------------------------------------------------------- reduce on plateau
PLATEAU_METRICS = [10.0, 9.5, 9.2, 9.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]


def test_reduce_on_plateau_rel_threshold_patience_cooldown_min_lr():
    # Traced by hand with torch's rules: improvement needs value < best * (1 - 0.1); after
    # more than 2 bad epochs the lr halves, 1 cooldown epoch follows; the floor is 0.02.
    sched = optim.reduce_on_plateau(factor=0.5, patience=2, threshold=0.1, cooldown=1,
                                    min_lr=0.02)
    state = sched.init(0.1)
    lrs = []
    for m in PLATEAU_METRICS:
        state = sched.step(state, m)
        lrs.append(state.lr)
    expected = [0.1] * 3 + [0.05] * 4 + [0.025] * 4 + [0.02] * 5
    np.testing.assert_allclose(lrs, expected)
    assert state.best == 8.0 and state.last_epoch == len(PLATEAU_METRICS)
    assert state.scale == pytest.approx(0.2)


def test_reduce_on_plateau_max_mode_and_abs_threshold():
    sched = optim.reduce_on_plateau(factor=0.1, patience=0, mode="max", threshold=0.5,
                                    threshold_mode="abs")
    state = sched.init(1.0)
    lrs = []
    for acc in [0.5, 0.9, 1.1, 1.5, 1.7]:
        state = sched.step(state, acc)
        lrs.append(state.lr)
    # 0.5: better than -inf. 0.9: not > 1.0 -> reduce (patience 0). 1.1: > 1.0, new best.
    # 1.5: not > 1.6 -> reduce. 1.7: > 1.6, new best.
    np.testing.assert_allclose(lrs, [1.0, 0.1, 0.1, 0.01, 0.01])
    assert state.best == 1.7


def test_reduce_on_plateau_is_pure():
    sched = optim.reduce_on_plateau(patience=0)
    s0 = sched.init(1.0)
    s1 = sched.step(s0, 1.0)
    s2 = sched.step(s1, 2.0)
    assert s0.lr == 1.0 and s1.lr == 1.0 and s2.lr == pytest.approx(0.1)
    assert sched.step(s1, 2.0) == s2  # same input, same output


def test_plateau_scale_applies_to_updates():
    sched = optim.reduce_on_plateau(factor=0.5, patience=0)
    state = sched.step(sched.step(sched.init(0.2), 1.0), 1.0)
    opt = optim.sgd(0.2)
    params = {"w": np.zeros(1)}
    updates, _ = opt.update({"w": np.ones(1)}, opt.init(params), params)
    scaled = optim.scale_updates(updates, state.scale)
    np.testing.assert_allclose(scaled["w"], [-state.lr])


def test_reduce_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    w = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([w], lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        topt, factor=0.5, patience=2, threshold=0.1, cooldown=1, min_lr=0.02)
    sched = optim.reduce_on_plateau(factor=0.5, patience=2, threshold=0.1, cooldown=1,
                                    min_lr=0.02)
    state = sched.init(0.1)
    for m in PLATEAU_METRICS:
        tsched.step(m)
        state = sched.step(state, m)
        assert state.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    sch = torch.optim.lr_scheduler

    def torch_lrs(make, steps, lr=1.0):
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=lr, momentum=0.9)
        s = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out

    n = 30
    pairs = [
        (lambda o: sch.StepLR(o, 7, 0.3), optim.step_decay(1.0, 7, 0.3)),
        (lambda o: sch.ExponentialLR(o, 0.9), optim.exponential_decay(1.0, 0.9)),
        (lambda o: sch.CosineAnnealingLR(o, 20, eta_min=0.1), optim.cosine_annealing(1.0, 20, 0.1)),
        (lambda o: sch.PolynomialLR(o, total_iters=20, power=2.0),
         optim.polynomial_decay(1.0, 0.0, 20, 2.0)),
        (lambda o: sch.OneCycleLR(o, max_lr=1.0, total_steps=n), optim.one_cycle(n, 1.0)),
        (lambda o: sch.OneCycleLR(o, max_lr=1.0, total_steps=n, three_phase=True,
                                  anneal_strategy="linear"),
         optim.one_cycle(n, 1.0, three_phase=True, anneal_strategy="linear")),
    ]
    for make, ours in pairs:
        np.testing.assert_allclose(values(ours, range(n)), torch_lrs(make, n), rtol=1e-9,
                                   atol=1e-12)
