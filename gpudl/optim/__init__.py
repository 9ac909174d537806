"""Optimizers as pure gradient transformations (optax's design, torch's update rules).

``opt.init(params) -> state``; ``opt.update(grads, state, params) -> (updates, state)``;
``optim.apply_updates(params, updates)`` adds them (updates already include ``-lr``).
Compose pieces with :func:`chain`; learning rates are floats or schedules ``step -> lr``.

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> params = {"w": np.array([1.0, -1.0])}
    >>> opt = optim.chain(optim.clip_by_global_norm(1.0),
    ...                   optim.adamw(optim.warmup(optim.cosine_annealing(1e-2, 100), 10)))
    >>> state = opt.init(params)
    >>> updates, state = opt.update({"w": np.array([0.3, -0.2])}, state, params)
    >>> params = optim.apply_updates(params, updates)
"""

from gpudl.optim import schedules
from gpudl.optim.alias import adadelta, adagrad, adam, adamax, adamw, rmsprop, sgd
from gpudl.optim.base import (
    EmptyState,
    GradientTransformation,
    ScheduleState,
    apply_updates,
    chain,
    identity,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    scale_updates,
    set_to_zero,
)
from gpudl.optim.clipping import clip, clip_by_global_norm, global_norm
from gpudl.optim.decay import add_decayed_weights, add_l1, weight_decay_mask
from gpudl.optim.masking import freeze, masked, multi_transform, scale_by_group
from gpudl.optim.plateau import PlateauState, ReduceOnPlateau, reduce_on_plateau
from gpudl.optim.schedules import (
    constant,
    cosine_annealing,
    exponential_decay,
    join_schedules,
    linear_decay,
    one_cycle,
    polynomial_decay,
    power_decay,
    step_decay,
    warmup,
)
from gpudl.optim.transforms import (
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_adamax,
    scale_by_rms,
    trace,
)

__all__ = [
    "GradientTransformation", "EmptyState", "ScheduleState", "chain", "apply_updates",
    "identity", "set_to_zero", "scale", "scale_by_learning_rate", "scale_by_schedule",
    "scale_updates",
    "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax",
    "trace", "scale_by_adam", "scale_by_adamax", "scale_by_rms", "scale_by_adagrad",
    "scale_by_adadelta",
    "clip", "clip_by_global_norm", "global_norm",
    "add_decayed_weights", "add_l1", "weight_decay_mask",
    "masked", "freeze", "multi_transform", "scale_by_group",
    "schedules", "constant", "step_decay", "exponential_decay", "power_decay",
    "polynomial_decay", "linear_decay", "cosine_annealing", "join_schedules", "warmup",
    "one_cycle", "reduce_on_plateau", "ReduceOnPlateau", "PlateauState",
]
