"""Learning-rate schedules: pure functions ``step -> lr`` (``step`` = 0 for the first update).

Pass one as ``lr`` to any optimizer: ``optim.adam(optim.cosine_annealing(1e-3, 1000))``.
The optimizer state counts the steps. Formulas follow ``torch.optim.lr_scheduler`` with
the scheduler stepped once per optimizer step (torch's ``last_epoch`` is ``step`` here).

For reduce-on-plateau, driven by a metric rather than the step count, see ``plateau.py``.

Example:
    >>> s = step_decay(0.1, step_size=10, gamma=0.5)
    >>> [s(0), s(9), s(10), s(25)]
    [0.1, 0.1, 0.05, 0.025]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from gpudl.errors import ConfigError
from gpudl.optim.base import check_hparam

Schedule = Callable[[int], float]


def _step(op: str, step: int) -> int:
    if step < 0:
        raise ConfigError(f"{op}: step must be >= 0, got {step}")
    return int(step)


def _count(op: str, name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ConfigError(f"{op}: {name} must be an integer >= {low}, got {value}")
    return int(value)


def constant(value: float) -> Schedule:
    """``lr(t) = value``.

    Example:
        >>> constant(0.1)(1000)
        0.1
    """
    value = check_hparam("constant", "value", value)
    return lambda step: value


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr(t) = init * gamma ** (t // step_size)`` (torch ``StepLR``).

    Example: see the module docstring.
    """
    op = "step_decay"
    init_value = check_hparam(op, "init_value", init_value)
    step_size = _count(op, "step_size", step_size)
    gamma = check_hparam(op, "gamma", gamma)
    return lambda step: init_value * gamma ** (_step(op, step) // step_size)


def exponential_decay(init_value: float, gamma: float | None = None, *,
                      decay_rate: float | None = None, decay_steps: int = 1,
                      staircase: bool = False) -> Schedule:
    """``lr(t) = init * gamma ** t`` (torch ``ExponentialLR``), or
    ``init * decay_rate ** (t / decay_steps)`` (floored exponent with ``staircase``).

    Example:
        >>> exponential_decay(1.0, 0.5)(3), exponential_decay(1.0, decay_rate=0.5, decay_steps=2)(3)
        (0.125, 0.3535533905932738)
    """
    op = "exponential_decay"
    init_value = check_hparam(op, "init_value", init_value)
    if (gamma is None) == (decay_rate is None):
        raise ConfigError(f"{op}: give exactly one of gamma (per step) or decay_rate "
                         f"(per decay_steps)")
    rate = check_hparam(op, "gamma" if gamma is not None else "decay_rate",
                        gamma if gamma is not None else decay_rate)
    steps = 1 if gamma is not None else _count(op, "decay_steps", decay_steps)

    def schedule(step: int) -> float:
        t = _step(op, step) / steps
        return init_value * rate ** (math.floor(t) if staircase else t)

    return schedule


def power_decay(init_value: float, s: float, c: float = 1.0) -> Schedule:
    """``lr(t) = init * (1 + t/s) ** -c``; ``c = 1`` is the course's ``lr0 / (1 + t/s)``.

    Example:
        >>> power_decay(1.0, s=10)(10), power_decay(1.0, s=10, c=2.0)(10)
        (0.5, 0.25)
    """
    op = "power_decay"
    init_value = check_hparam(op, "init_value", init_value)
    s = check_hparam(op, "s", s, low_open=True)
    c = check_hparam(op, "c", c)
    return lambda step: init_value * (1.0 + _step(op, step) / s) ** -c


def polynomial_decay(init_value: float, end_value: float, total_steps: int,
                     power: float = 1.0) -> Schedule:
    """``lr(t) = (init - end) * (1 - min(t, N)/N) ** power + end`` (torch ``PolynomialLR``
    with an end value); ``end`` after ``N = total_steps`` steps.

    Example:
        >>> polynomial_decay(1.0, 0.0, 4, power=2.0)(2)
        0.25
    """
    op = "polynomial_decay"
    init_value = check_hparam(op, "init_value", init_value)
    end_value = check_hparam(op, "end_value", end_value)
    n = _count(op, "total_steps", total_steps)
    power = check_hparam(op, "power", power)
    return lambda step: ((init_value - end_value) * (1.0 - min(_step(op, step), n) / n) ** power
                         + end_value)


def linear_decay(init_value: float, end_value: float, total_steps: int) -> Schedule:
    """Straight line from ``init`` to ``end`` over ``total_steps``, then ``end``
    (torch ``LinearLR`` with ``start_factor=1``, ``end_factor=end/init``).

    Example:
        >>> linear_decay(1.0, 0.5, 4)(2), linear_decay(1.0, 0.5, 4)(100)
        (0.75, 0.5)
    """
    return polynomial_decay(init_value, end_value, total_steps, 1.0)


def cosine_annealing(init_value: float, t_max: int, eta_min: float = 0.0) -> Schedule:
    """``lr(t) = eta_min + (init - eta_min) * (1 + cos(pi * t / t_max)) / 2`` (torch
    ``CosineAnnealingLR``'s closed form; like torch it rises again after ``t_max``: hold the
    end value with ``join_schedules`` if that is not wanted).

    Example:
        >>> cosine_annealing(1.0, 10, eta_min=0.1)(5)
        0.55
    """
    op = "cosine_annealing"
    init_value = check_hparam(op, "init_value", init_value)
    t_max = _count(op, "t_max", t_max)
    eta_min = check_hparam(op, "eta_min", eta_min)
    return lambda step: (eta_min + (init_value - eta_min)
                         * (1.0 + math.cos(math.pi * _step(op, step) / t_max)) / 2.0)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``schedules[0]`` until ``boundaries[0]``, then ``schedules[1](t - boundaries[0])``, ...
    (each schedule restarts from 0 at its boundary, as optax's ``join_schedules``).

    Example:
        >>> s = join_schedules([constant(1.0), step_decay(0.5, 1, 0.5)], [3])
        >>> [s(t) for t in range(6)]
        [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    """
    op = "join_schedules"
    schedules, boundaries = list(schedules), [int(b) for b in boundaries]
    if len(schedules) != len(boundaries) + 1:
        raise ConfigError(f"{op}: need one more schedule than boundaries, got {len(schedules)} "
                         f"schedules and {len(boundaries)} boundaries")
    if any(b < 0 for b in boundaries) or boundaries != sorted(boundaries):
        raise ConfigError(f"{op}: boundaries must be >= 0 and increasing, got {boundaries}")

    def schedule(step: int) -> float:
        step = _step(op, step)
        start = 0
        for sched, boundary in zip(schedules, boundaries, strict=False):
            if step < boundary:
                return sched(step - start)
            start = boundary
        return schedules[-1](step - start)

    return schedule


def warmup(schedule: Schedule | float, warmup_steps: int, start_value: float = 0.0) -> Schedule:
    """Linear warm-up from ``start_value`` (at step 0) to ``schedule(0)`` (at ``warmup_steps``),
    then ``schedule(t - warmup_steps)``.

    Example:
        >>> s = warmup(cosine_annealing(1.0, 100), warmup_steps=4)
        >>> [s(t) for t in range(5)]
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    op = "warmup"
    after = schedule if callable(schedule) else constant(schedule)
    n = _count(op, "warmup_steps", warmup_steps)
    start_value = check_hparam(op, "start_value", start_value)
    peak = float(after(0))
    ramp = lambda step: start_value + (peak - start_value) * step / n  # noqa: E731
    return join_schedules([ramp, after], [n])


def one_cycle(total_steps: int, max_lr: float, pct_start: float = 0.3,
              anneal_strategy: str = "cos", div_factor: float = 25.0,
              final_div_factor: float = 1e4, three_phase: bool = False) -> Schedule:
    """torch's ``OneCycleLR`` learning rate: from ``max_lr / div_factor`` up to ``max_lr``
    over ``pct_start * total_steps`` steps, then down to ``initial / final_div_factor``
    (cosine or linear anneal; ``three_phase`` goes back to ``initial`` first). Like torch it
    rejects a step beyond ``total_steps``. (torch also cycles momentum; this is the lr only.)

    Example:
        >>> s = one_cycle(100, max_lr=1.0)
        >>> round(s(0), 6), round(s(29), 6), round(s(99), 10)
        (0.04, 1.0, 4e-06)
    """
    op = "one_cycle"
    total = _count(op, "total_steps", total_steps)
    max_lr = check_hparam(op, "max_lr", max_lr)
    pct_start = check_hparam(op, "pct_start", pct_start, high=1.0)
    div_factor = check_hparam(op, "div_factor", div_factor, low_open=True)
    final_div_factor = check_hparam(op, "final_div_factor", final_div_factor, low_open=True)
    if anneal_strategy not in ("cos", "linear"):
        raise ConfigError(f"{op}: anneal_strategy must be 'cos' or 'linear', "
                         f"got {anneal_strategy!r}")
    initial = max_lr / div_factor
    min_lr = initial / final_div_factor
    if three_phase:
        phases = [(pct_start * total - 1, initial, max_lr),
                  (2 * pct_start * total - 2, max_lr, initial),
                  (total - 1, initial, min_lr)]
    else:
        phases = [(pct_start * total - 1, initial, max_lr), (total - 1, max_lr, min_lr)]

    def anneal(start: float, end: float, pct: float) -> float:
        if anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)
        return (end - start) * pct + start

    def schedule(step: int) -> float:
        step = _step(op, step)
        if step > total:
            raise ConfigError(f"{op}: step {step} is beyond total_steps={total}; make "
                             f"total_steps = epochs * steps_per_epoch")
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                span = end_step - start_step  # 0 when a phase is empty (tiny total_steps)
                return anneal(start, end, (step - start_step) / span if span else 1.0)
            start_step = end_step
        raise AssertionError("unreachable")

    return schedule
