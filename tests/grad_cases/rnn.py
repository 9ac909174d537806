"""Gradient-check cases for the recurrent primitives (gpudl/functional/rnn_cells.py, rnn.py).

Inputs are float64 and moderate (|pre-activation| ~ 1) so no gate saturates; the
``gates``/``gi`` arrays are sliced views (non-contiguous), which the ops accept.
"""

import numpy as np

from gpudl.functional import recurrent as R


def _rng(seed):
    return np.random.default_rng(seed)


def _lstm_pointwise_case():
    rng = _rng(11)
    gates = rng.standard_normal((3, 24))[:, 2:22]  # (N=3, 4H=20), non-contiguous view
    c = rng.standard_normal((3, 5))
    return R.lstm_pointwise, (gates, c)


def _gru_pointwise_case():
    rng = _rng(12)
    gi = rng.standard_normal((3, 17))[:, 1:16]  # (N=3, 3H=15), non-contiguous view
    gh = rng.standard_normal((3, 15))
    h = rng.standard_normal((3, 5))
    return R.gru_pointwise, (gi, gh, h)


def _unstack_case():
    rng = _rng(13)
    # Only some slices reach the output: the others get zero cotangents.
    return (lambda x: R.unstack(x)[0] * 2.0 + R.unstack(x)[2]), (rng.standard_normal((4, 3, 2)),)


def _lstm_sequence_case():
    rng = _rng(14)
    t, n, i, h = 3, 2, 4, 3
    x = rng.standard_normal((t, n, i))
    params = {"weight_ih": rng.standard_normal((4 * h, i)) * 0.5,
              "weight_hh": rng.standard_normal((4 * h, h)) * 0.5,
              "bias_ih": rng.standard_normal(4 * h) * 0.1,
              "bias_hh": rng.standard_normal(4 * h) * 0.1}
    return (lambda x, p: R.lstm(x, None, None, p, lengths=np.array([3, 2]))), (x, params)


CASES = {
    "lstm_pointwise": [_lstm_pointwise_case],
    "gru_pointwise": [_gru_pointwise_case],
    "rnn_unstack": [_unstack_case, _lstm_sequence_case],
}
