"""Gradient-check cases for the primitives of gpudl/functional/activations.py
(relu, softplus, erf, softmax, log_softmax), float64, away from kinks.

Inputs include a non-contiguous view where the op accepts any layout.
"""

import numpy as np

from gpudl.functional import activations as A


def _rng(seed):
    return np.random.default_rng(seed)


def _away_from_zero(x, margin=0.05):
    return np.where(np.abs(x) < margin, margin * np.sign(x + 1e-12) + x, x)


CASES = {
    "relu": [
        lambda: (A.relu, (_away_from_zero(_rng(1).standard_normal((4, 6))[:, ::2]),)),
        # second order: d/dx of sum(relu(x)^2)'s gradient goes through the vjp's where
        lambda: (lambda x: A.relu(x) * A.relu(x), (_away_from_zero(_rng(2).standard_normal(7)),)),
    ],
    "softplus": [
        lambda: (A.softplus, (_rng(3).standard_normal((3, 5)) * 4.0,)),
        lambda: (
            lambda x: A.softplus(x, beta=2.0, threshold=5.0),
            (np.array([-30.0, -1.0, 0.3, 1.7, 2.0 + 0.4, 9.0]),),
        ),
    ],
    "erf": [
        lambda: (A.erf, (np.linspace(-5.5, 5.5, 23) + 0.013,)),
        lambda: (lambda x: A.gelu(x), (_rng(4).standard_normal((2, 5)),)),
    ],
    "softmax": [
        lambda: (lambda x: A.softmax(x, axis=-1), (_rng(5).standard_normal((3, 4)),)),
        lambda: (
            lambda x: A.softmax(x, axis=0, temperature=0.5),
            (_rng(6).standard_normal((5, 6))[:, 1:5],),
        ),
    ],
    "log_softmax": [
        lambda: (lambda x: A.log_softmax(x, axis=1), (_rng(7).standard_normal((2, 5, 3)),)),
        lambda: (lambda x: A.log_softmax(x * 30.0), (_rng(8).standard_normal((3, 4)),)),
    ],
}
